#!/usr/bin/env bash
# The AWS host's readiness check, first step: waits until cloud-init finished preparing the VM (boot.sh),
# failing with cloud-init's own report, then checks that what boot.sh set up is there.
# Run over SSH as the SSH user by components/gpu_host.py; infra/render/host_scripts.py renders the command.
#
# Parameters (environment):
#   CACHE_MOUNT  where boot.sh mounted the cache volume
set -euo pipefail
: "${CACHE_MOUNT:?is not set}"

# cloud-init exits 1 (error) or 2 (recoverable error) when a boot stage failed.
if ! cloud-init status --wait >/dev/null; then
  echo "cloud-init reported a failure while preparing the host:" >&2
  cloud-init status --long >&2 || true
  sudo -n tail -n 40 /var/log/cloud-init-output.log >&2 || true
  exit 1
fi
if ! mountpoint -q -- "$CACHE_MOUNT"; then
  echo "the cache volume is not mounted at $CACHE_MOUNT" >&2
  exit 1
fi
docker info >/dev/null
echo "cloud-init finished; the cache volume is mounted at $CACHE_MOUNT; Docker answers"
