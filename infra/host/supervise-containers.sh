#!/usr/bin/env bash
# Starts the endpoint's containers again when they stop and Docker will not start them itself.
#
# Docker restarts a container that crashes or is OOM-killed (restart policy `always`), and starts it
# again when dockerd restarts or the host boots. It never restarts one that was stopped through its
# API: `docker kill` and `docker stop` count as "stopped by hand" until dockerd restarts, so a
# `docker kill` of the proxy leaves the endpoint down. On an instance that runs only this endpoint
# the declared state is "running", and this loop restores it within seconds. To stop the endpoint by
# hand there, stop this service first (`sudo systemctl stop vllm-endpoint-supervisor`).
#
# Run by systemd (the unit infra/host/supervisor.service, Restart=always). It exits when
# Docker's event stream ends (dockerd stopped); systemd starts it again.
#
# Parameters (environment):
#   SUPERVISE_LABEL  the label key every container of the endpoint carries (the owner labels)
#   SWEEP_SECONDS    look for stopped containers at least this often, events or not (default 30)
#   SETTLE_SECONDS   after a container stops, wait this long before looking: a deploy that replaces a
#                    container stops and removes it within this time (default 3)
set -euo pipefail
: "${SUPERVISE_LABEL:?is not set}"
sweep_seconds=${SWEEP_SECONDS:-30}
settle_seconds=${SETTLE_SECONDS:-3}

log() { printf '%s vllm-endpoint-supervisor: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }

# "exited" only: a container in Docker's own restart back-off is "restarting", one being created by a
# deploy is "created", and neither is ours to touch.
start_stopped() {
  local id name
  docker ps --all --quiet --filter "label=$SUPERVISE_LABEL" --filter status=exited |
    while read -r id; do
      name=$(docker inspect --format '{{.Name}}' "$id" 2>/dev/null) || continue  # removed meanwhile
      if docker start "$id" >/dev/null 2>&1; then
        log "started ${name#/} again (it was stopped outside Docker's restart policy)"
      else
        log "could not start ${name#/}: docker start $id failed; retrying in ${sweep_seconds}s"
      fi
    done
}

if ! docker info >/dev/null 2>&1; then
  log "Docker does not answer; exiting (systemd starts this again)"
  exit 1
fi
coproc EVENTS { exec docker events --filter "label=$SUPERVISE_LABEL" --filter event=die --format '{{.ID}}'; }
log "watching containers labelled $SUPERVISE_LABEL"
while :; do
  start_stopped
  if read -r -t "$sweep_seconds" _ <&"${EVENTS[0]}"; then
    sleep "$settle_seconds"
    # One look covers every container that stopped meanwhile: drain what queued up.
    while read -r -t 0.1 _ <&"${EVENTS[0]}"; do :; done
  elif (($? <= 128)); then
    log "Docker's event stream ended (dockerd stopped); exiting (systemd starts this again)"
    start_stopped
    exit 0
  fi
done
