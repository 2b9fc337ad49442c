#!/usr/bin/env bash
# Deploys (or updates) one stack:  scripts/deploy.sh <stack> [more `pulumi up` flags]
# Sets up the program's Python environment (.venv) and the policy pack's (policy/venv, from
# policy/requirements.txt: `setup.sh deploy`), installs the pinned Pulumi CLI when it is missing, and
# runs `pulumi up` with the project's policy pack. Without `pulumi login` (and no PULUMI_BACKEND_URL) the
# state is kept in local files, in ~/.vllm-endpoint/pulumi-state, and says so. target=aws needs AWS
# credentials (AWS_PROFILE or the usual environment variables); target=local needs only Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 <stack> [pulumi up flags]   (stacks: local, dev, shared-gpu, or your own)" >&2; exit 2; }
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

# No backend chosen: a first deploy needs no account. The file backend encrypts the stack's secrets with
# a passphrase; one is made once, kept beside the state (0600), and named so that it is backed up with it.
if [ -z "${PULUMI_BACKEND_URL:-}" ] && ! pulumi whoami --non-interactive >/dev/null 2>&1; then
  state_dir="$HOME/.vllm-endpoint/pulumi-state"
  mkdir -p "$state_dir"
  export PULUMI_BACKEND_URL="file://$state_dir"
  echo "[deploy] not logged in to Pulumi: the stack's state is kept in $state_dir (\`pulumi login\` to keep it elsewhere)"
  if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
    passphrase_file="$state_dir/passphrase"
    if [ ! -s "$passphrase_file" ]; then
      (umask 077 && head -c 32 /dev/urandom | base64 >"$passphrase_file")
    fi
    export PULUMI_CONFIG_PASSPHRASE_FILE="$passphrase_file"
    echo "[deploy] the stack's secrets are encrypted with the passphrase in $passphrase_file: keep it with the state"
  fi
fi

pulumi stack select --create "$stack"
exec pulumi up --stack "$stack" \
  --policy-pack policy --policy-pack-config policy/vllm-endpoint.policy-config.json "$@"
