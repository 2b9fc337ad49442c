#!/usr/bin/env bash
# User data of a vLLM fleet instance (ECS GPU-optimized Amazon Linux 2023 AMI, launched by the fleet's Auto
# Scaling group): joins the ECS cluster, and mounts the model cache volume before the ECS agent starts.
#
# Two modes, one file:
#   (no argument)  cloud-init runs it as user data: once, at the instance's first boot; with a warm pool
#                  (WARM_POOL), at every boot (infra/render/ecs_host.py warm_pool_user_data). It writes its
#                  settings into the agent's /etc/ecs/ecs.config (replacing its own lines of an earlier run:
#                  it may run again after being cut short), installs itself as MOUNT_SCRIPT and the systemd
#                  unit MOUNT_UNIT, and starts that unit (the mount).
#   agent-config   the first of those steps alone (tests; ECS_CONFIG_FILE names another file).
#   docker-config  with DOCKER_DATA_ROOT (cacheImages): sets Docker's data-root in its daemon.json, keeping the
#                  file's other settings (tests; DOCKER_DAEMON_JSON_FILE names another file).
#   mount          the unit runs it at every boot (Type=oneshot, Before=ecs.service, RequiredBy=ecs.service):
#                  waits for the cache volume's device, formats it only when it is blank, mounts it at
#                  CACHE_MOUNT_POINT and creates the folders the task bind-mounts, owned by the task's user.
#
# With DOCKER_DATA_ROOT (a folder of the cache volume) Docker keeps its images there instead of on the root
# disk, so a snapshot of the volume carries them, with the repository digests the ECS agent's prefer-cached
# lookup needs (`docker save`/`load` would drop those). The unit is then also ordered before docker.service and
# required by it: Docker never starts on an unmounted folder. At the first boot Docker already runs when user
# data does: it is restarted once on the volume, before the agent starts.
#
# Why a systemd unit, not cloud-init's bootcmd: the ECS agent bind-mounts a host path as `source:target`, and
# Docker creates a missing source folder on the root disk, so the volume must be mounted before the agent
# places a task, at every boot. `Before=ecs.service` states that order to systemd itself, at first boot and
# at every reboot, whatever cloud-init does; `RequiredBy=ecs.service` keeps the agent from starting when the
# mount fails (the instance never joins the cluster, and no replica caches a model on the root disk). The
# agent's unit is ordered after cloud-final.service, where user data runs: starting it from here would wait on
# itself, so this script only ever starts it with --no-block.
#
# The values below are filled in by infra/render/ecs_host.py (each shell-quoted).
set -euo pipefail

readonly CLUSTER=@@CLUSTER@@
readonly CACHE_DEVICE=@@CACHE_DEVICE@@
readonly CACHE_MOUNT_POINT=@@CACHE_MOUNT_POINT@@
readonly -a CACHE_SUBDIRS=(@@CACHE_SUBDIRS@@)
readonly CACHE_OWNER=@@CACHE_OWNER@@
readonly CACHE_WAIT_SECONDS=@@CACHE_WAIT_SECONDS@@
readonly STOP_TIMEOUT=@@STOP_TIMEOUT@@
readonly MOUNT_SCRIPT=@@MOUNT_SCRIPT@@
readonly MOUNT_UNIT=@@MOUNT_UNIT@@
readonly WARM_POOL=@@WARM_POOL@@
readonly DOCKER_DATA_ROOT=@@DOCKER_DATA_ROOT@@
readonly ECS_CONFIG=${ECS_CONFIG_FILE:-/etc/ecs/ecs.config}
readonly DOCKER_DAEMON_JSON=${DOCKER_DAEMON_JSON_FILE:-/etc/docker/daemon.json}
readonly FS_TYPE=ext4
readonly FS_LABEL=vllm-cache

PROG=$(basename -- "$0")
readonly PROG
log() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root"

# Prints the filesystem type on the device, nothing for a blank device; fails for anything else.
probe_device() {
  local device=$1 out rc=0
  out=$(blkid -p -o export -- "$device") || rc=$?
  case $rc in
    0) ;;
    2)
      # No signature: a new EBS volume reads as zeros. Anything else may be someone's data (a snapshot of
      # another format), and is not formatted.
      cmp -s -n 1048576 -- "$device" /dev/zero \
        || die "${device} has no filesystem signature but is not blank; refusing to format it"
      return 0
      ;;
    *) die "blkid failed on ${device} (exit ${rc})" ;;
  esac
  local type=""
  while IFS='=' read -r key value; do
    [[ $key == TYPE ]] && type=$value
  done <<<"$out"
  [[ $type == "$FS_TYPE" ]] || die "${device} holds '${type:-an unknown signature}', expected ${FS_TYPE} or nothing"
  printf '%s\n' "$type"
}

mount_cache() {
  local waited=0 device fs_type sub
  # The block device mapping's name: on Nitro instances the volume is an NVMe device, and the AMI's udev
  # rules (amazon-ec2-utils) link the mapping's name to it.
  while [[ ! -e $CACHE_DEVICE ]]; do
    ((waited < CACHE_WAIT_SECONDS)) || die "${CACHE_DEVICE} did not appear within ${CACHE_WAIT_SECONDS} s"
    sleep 1
    waited=$((waited + 1))
  done
  device=$(readlink -f -- "$CACHE_DEVICE")
  [[ -b $device ]] || die "${CACHE_DEVICE} resolves to ${device}, which is not a block device"
  fs_type=$(probe_device "$device")
  if [[ -z $fs_type ]]; then
    log "${device} is blank: creating an ${FS_TYPE} filesystem"
    # -m 0: caches only, no blocks held back for root; nodiscard: a new volume has nothing to discard.
    mkfs.ext4 -q -L "$FS_LABEL" -m 0 -E nodiscard -- "$device"
  else
    # A volume restored from a warm cache's snapshot keeps its models and compile cache.
    log "${device} already holds ${fs_type}: keeping it"
  fi
  mkdir -p -- "$CACHE_MOUNT_POINT"
  if ! mountpoint -q -- "$CACHE_MOUNT_POINT"; then
    mount -t "$FS_TYPE" -o noatime -- "$device" "$CACHE_MOUNT_POINT"
  fi
  mountpoint -q -- "$CACHE_MOUNT_POINT" || die "${CACHE_MOUNT_POINT} is not a mount point after mounting"
  # Created only on the mounted volume, owned by the task's user (the agent would create them as root).
  for sub in "${CACHE_SUBDIRS[@]}"; do
    install -d -m 0755 -- "${CACHE_MOUNT_POINT}/${sub}"
    chown -- "$CACHE_OWNER" "${CACHE_MOUNT_POINT}/${sub}"
  done
  if [[ -n $DOCKER_DATA_ROOT ]]; then
    # Docker's own mode for its data root; it fills it at its first start.
    install -d -m 0710 -- "$DOCKER_DATA_ROOT"
  fi
  log "ready: ${device} at ${CACHE_MOUNT_POINT} (${CACHE_SUBDIRS[*]})"
}

# Sets data-root in Docker's daemon.json to DOCKER_DATA_ROOT, keeping the file's other settings (an AMI may
# configure runtimes or logging there), with one rename. Amazon Linux ships python3 (dnf runs on it).
write_docker_config() {
  local tmp
  install -d -m 0755 -- "$(dirname -- "$DOCKER_DAEMON_JSON")"
  tmp=$(mktemp -- "${DOCKER_DAEMON_JSON}.XXXXXX")
  if ! python3 - "$DOCKER_DAEMON_JSON" "$DOCKER_DATA_ROOT" >"$tmp" <<'PY'
import json
import sys

path, root = sys.argv[1], sys.argv[2]
try:
    with open(path) as f:
        config = json.load(f)
except FileNotFoundError:
    config = {}
if not isinstance(config, dict):
    sys.exit(f"{path} does not hold a JSON object")
config["data-root"] = root
json.dump(config, sys.stdout, indent=2)
print()
PY
  then
    rm -f -- "$tmp"
    die "cannot set data-root in ${DOCKER_DAEMON_JSON} (not JSON?); fix or remove it"
  fi
  chmod 0644 -- "$tmp"
  mv -f -- "$tmp" "$DOCKER_DAEMON_JSON"
}

# At the first boot Docker already runs, on the root disk: restart it on the volume (the agent has not started:
# it waits for cloud-final). At later boots it starts after the mount unit, on the volume already.
use_docker_data_root() {
  local current
  systemctl is-active --quiet docker.service || return 0
  current=$(docker info --format '{{.DockerRootDir}}')
  [[ $current == "$DOCKER_DATA_ROOT" ]] && return 0
  log "restarting Docker on the cache volume: ${DOCKER_DATA_ROOT} (was ${current})"
  systemctl restart docker.service
}

# The agent's settings this script owns, one per line.
agent_settings() {
  printf '%s\n' "ECS_CLUSTER=${CLUSTER}" ECS_ENABLE_GPU_SUPPORT=true ECS_ENABLE_SPOT_INSTANCE_DRAINING=true \
    "ECS_CONTAINER_STOP_TIMEOUT=${STOP_TIMEOUT}s" ECS_AWSVPC_BLOCK_IMDS=true ECS_IMAGE_PULL_BEHAVIOR=prefer-cached
  # In the warm pool the agent must not join the cluster: it waits until the instance is in service (1.59+).
  if [[ $WARM_POOL == true ]]; then
    echo ECS_WARM_POOLS_CHECK=true
  fi
}

# Writes agent_settings into ECS_CONFIG, keeping the file's other lines and dropping this script's earlier
# ones, with one rename (a run cut short leaves the old file or the new one, never half of one).
write_agent_config() {
  local settings keys tmp
  settings=$(agent_settings)
  keys=$(sed -n 's/=.*//p' <<<"$settings" | paste -sd'|')
  install -d -m 0755 -- "$(dirname -- "$ECS_CONFIG")"
  tmp=$(mktemp -- "${ECS_CONFIG}.XXXXXX")
  { grep -Ev "^(${keys})=" -- "$ECS_CONFIG" 2>/dev/null || true; printf '%s\n' "$settings"; } >"$tmp"
  chmod 0644 -- "$tmp"
  mv -f -- "$tmp" "$ECS_CONFIG"
}

setup() {
  # The agent reads this file when it starts (after cloud-final, so after this script).
  write_agent_config
  # The units that must not start before the volume is mounted.
  local needed_by=ecs.service
  if [[ -n $DOCKER_DATA_ROOT ]]; then
    write_docker_config
    needed_by="docker.service ecs.service"
  fi
  install -m 0755 -- "$0" "$MOUNT_SCRIPT"
  cat >"/etc/systemd/system/${MOUNT_UNIT}" <<EOF
[Unit]
Description=vllm-endpoint: mount the model cache volume before the ECS agent starts
Before=${needed_by}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=${MOUNT_SCRIPT} mount

[Install]
RequiredBy=${needed_by}
EOF
  local agent_running=false
  # Only if an AMI started the agent before user data ran: stop it until the cache is mounted.
  if systemctl is-active --quiet ecs.service; then
    systemctl stop ecs.service
    agent_running=true
  fi
  systemctl daemon-reload
  systemctl enable "$MOUNT_UNIT"
  systemctl start "$MOUNT_UNIT"
  if [[ -n $DOCKER_DATA_ROOT ]]; then
    use_docker_data_root
  fi
  if [[ $agent_running == true ]]; then
    systemctl start --no-block ecs.service
  fi
}

case ${1:-setup} in
  setup) setup ;;
  mount) mount_cache ;;
  agent-config) write_agent_config ;;
  docker-config)
    [[ -n $DOCKER_DATA_ROOT ]] || die "docker-config: this script keeps Docker's data root as it is (cacheImages off)"
    write_docker_config
    ;;
  *) die "unknown mode '$1' (setup, mount, agent-config or docker-config)" ;;
esac
