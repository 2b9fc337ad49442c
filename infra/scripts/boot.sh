#!/usr/bin/env bash
# Prepares an instance for the vLLM endpoint. Run by cloud-init (runcmd) at every boot, as root.
#
# Settings come from /etc/vllm-endpoint/boot.env (written by cloud-init from non-secret config):
#   CACHE_VOLUME_ID, CACHE_MOUNT_POINT, CACHE_WAIT_SECONDS, CACHE_OWNER  - see prepare-cache-volume
#   SSH_USER            - added to the docker group (pulumi-docker connects as this user)
#   DOCKER_DATA_ROOT    - optional: keep Docker's images on the cache volume (survive replacement)
#   PREFETCH_IMAGE      - optional: image reference pulled in the background as soon as Docker is up
#   DEPLOY_TIMELINE_FILE - where each stage's end time is appended ("stage epoch-seconds")
#
# It exits non-zero (and cloud-init reports an error, which fails the deploy's host check) when the
# cache volume cannot be mounted: the container must never start with its caches on the root disk.
set -euo pipefail

env_file=${BOOT_ENV_FILE:-/etc/vllm-endpoint/boot.env}
# shellcheck source=/dev/null
. "$env_file"
: "${CACHE_VOLUME_ID:?missing in $env_file}"
: "${CACHE_MOUNT_POINT:?missing in $env_file}"
: "${SSH_USER:?missing in $env_file}"
: "${DEPLOY_TIMELINE_FILE:=/var/lib/vllm-endpoint/timeline}"
export CACHE_VOLUME_ID CACHE_MOUNT_POINT DEPLOY_TIMELINE_FILE
export CACHE_WAIT_SECONDS="${CACHE_WAIT_SECONDS:-600}"
export CACHE_OWNER="${CACHE_OWNER:-$SSH_USER}"

timeline() {
  printf '%s %s\n' "$1" "${2:-$(date +%s.%N)}" >>"$DEPLOY_TIMELINE_FILE"
}

# A fresh timeline per boot: the gate reports this boot's stages, not an older one's. The SSH user
# owns the folder because the readiness gate (which runs as that user) adds the last stages.
mkdir -p "$(dirname "$DEPLOY_TIMELINE_FILE")"
: >"$DEPLOY_TIMELINE_FILE"
chown "$SSH_USER" "$(dirname "$DEPLOY_TIMELINE_FILE")" "$DEPLOY_TIMELINE_FILE"
read -r uptime_s _ </proc/uptime
timeline instance_booted "$(awk -v now="$(date +%s.%N)" -v up="$uptime_s" 'BEGIN { printf "%.3f", now - up }')"

/usr/local/sbin/vllm-endpoint-prepare-cache-volume

if ! command -v nvidia-ctk >/dev/null 2>&1; then
  echo "vllm-endpoint: nvidia-ctk not found: this AMI lacks the NVIDIA container toolkit" >&2
  exit 1
fi
# Registers the "nvidia" runtime with Docker (the container selects GPUs through it).
nvidia-ctk runtime configure --runtime=docker
if [ -n "${DOCKER_DATA_ROOT:-}" ]; then
  mkdir -p "$DOCKER_DATA_ROOT"
  python3 - "$DOCKER_DATA_ROOT" <<'PY'
import json, pathlib, sys
path = pathlib.Path("/etc/docker/daemon.json")
config = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
config["data-root"] = sys.argv[1]
path.write_text(json.dumps(config, indent=2) + "\n")
PY
fi
usermod -aG docker "$SSH_USER"
systemctl restart docker

for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && break
  sleep 1
done
if ! docker info --format '{{json .Runtimes}}' | grep -q '"nvidia"'; then
  echo "vllm-endpoint: Docker does not list the nvidia runtime after configuration" >&2
  exit 1
fi
timeline docker_ready

if [ -n "${PREFETCH_IMAGE:-}" ]; then
  # In the background, so instance readiness (and the deploy's next steps) do not wait for a
  # multi-GB pull; pulumi-docker's own pull of the same reference joins this one in the daemon.
  (
    for attempt in 1 2 3; do
      if docker pull --quiet "$PREFETCH_IMAGE" >/dev/null; then
        timeline image_present
        exit 0
      fi
      sleep $((attempt * 10))
    done
    echo "vllm-endpoint: background pull of $PREFETCH_IMAGE failed" >&2
  ) </dev/null >>/var/log/vllm-endpoint-prefetch.log 2>&1 &
  disown
fi
