#!/usr/bin/env bash
# The AWS host's readiness check, first step: waits until cloud-init finished preparing the VM (boot.sh),
# failing with cloud-init's own report, then checks that what boot.sh set up is there.
# Run over SSH as the SSH user by components/gpu_host.py; infra/render/host_scripts.py renders the command.
#
# While cloud-init runs it prints a progress line every PROGRESS_INTERVAL_S (pulumi-command streams it
# into the `pulumi up` display): "[+<s> s] host: cloud-init <status> | boot stages done: <stages>".
#
# Parameters (environment):
#   CACHE_MOUNT           where boot.sh mounted the cache volume
#   TIMELINE_FILE         boot.sh's "stage epoch-seconds" lines (the stages the progress names)
#   PROGRESS_INTERVAL_S   seconds between progress lines
set -euo pipefail
: "${CACHE_MOUNT:?is not set}" "${TIMELINE_FILE:?is not set}" "${PROGRESS_INTERVAL_S:?is not set}"

started_at=$(date +%s)
next_progress=$started_at
# `cloud-init status` (without --wait) answers at once; "running" and "not started" mean: not yet.
while :; do
  status=$(cloud-init status 2>/dev/null | sed -n 's/^status: *//p' || true)
  case $status in
    running | "not started" | "not run") ;;
    *) break ;;
  esac
  now=$(date +%s)
  if ((now >= next_progress)); then
    stages=$(cut -d' ' -f1 -- "$TIMELINE_FILE" 2>/dev/null | paste -sd' ' || true)
    echo "[+$((now - started_at)) s] host: cloud-init $status | boot stages done: ${stages:-none yet}"
    next_progress=$((now + PROGRESS_INTERVAL_S))
  fi
  sleep 2
done
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
