#!/usr/bin/env bash
# Deploys (or updates) one stack:  scripts/deploy.sh <stack> [more `pulumi up` flags]
# Sets up the program's Python environment (.venv) and the policy pack's (policy/venv, from
# policy/requirements.txt: `setup.sh deploy`), installs the pinned Pulumi CLI when it is missing, and
# runs `pulumi up` with the project's policy pack. Needs `pulumi login` (or PULUMI_BACKEND_URL) and,
# for target=aws, AWS credentials (AWS_PROFILE or the usual environment variables).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 <stack> [pulumi up flags]   (stacks: dev, shared-gpu, or your own)" >&2; exit 2; }
stack=$1
shift

# The CLI release that matches the pinned SDK (requirements.txt: pulumi==...).
PULUMI_VERSION=$(sed -n 's/^pulumi==//p' requirements.txt)

./scripts/setup.sh deploy
if ! command -v pulumi >/dev/null 2>&1; then
  if [ ! -x "$HOME/.pulumi/bin/pulumi" ]; then
    echo "[deploy] installing the Pulumi CLI $PULUMI_VERSION into ~/.pulumi"
    curl -fsSL https://get.pulumi.com | sh -s -- --version "$PULUMI_VERSION" --no-edit-path
  fi
  export PATH="$HOME/.pulumi/bin:$PATH"
fi

pulumi stack select --create "$stack"
exec pulumi up --stack "$stack" \
  --policy-pack policy --policy-pack-config policy/vllm-endpoint.policy-config.json "$@"
