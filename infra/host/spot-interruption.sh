#!/usr/bin/env bash
# Stops the endpoint's containers cleanly when EC2 announces a spot interruption.
#
# EC2 publishes a notice at meta-data/spot/instance-action ({"action": "stop", "time": "..."}) two
# minutes before it stops or terminates a spot instance; until then that path answers 404 (an
# on-demand instance only ever gets 404s). Left alone, the shutdown would give the containers
# dockerd's own stop timeout, as late as the OS gets to it. On a notice this script logs it, stops the
# supervisor (it would start the containers again at once), stops every container carrying the stack
# label with `docker stop --time STOP_TIMEOUT_S` (vLLM ends its requests and frees the GPU, nginx
# closes its connections), flushes the disks, and then only watches: a notice is acted on once.
# With the restart policy `always` a container stopped through Docker's API stays down until dockerd
# starts again, i.e. at the next boot when the instance resumes, and then comes back by itself.
#
# Run by systemd (the unit infra/host/spot-interruption.service, Restart=always).
#
# Parameters (environment):
#   SPOT_LABEL              the label key every container of the endpoint carries (the owner labels)
#   STOP_TIMEOUT_S          docker stop's grace period before SIGKILL; it must fit in the notice
#   POLL_SECONDS            look at IMDS this often (default 5, AWS's recommendation)
#   SUPERVISOR_UNIT         the systemd unit to stop first; empty: none (a host without systemd, tests)
#   IMDS_TOKEN_TTL          the IMDSv2 session token's lifetime to ask for, seconds (default 21600, the
#                           most IMDS gives); a new one is fetched a minute before it ends, or on a 401
#   VLLM_ENDPOINT_IMDS_URL  IMDS (tests point it at a stand-in; an instance uses the default)
set -euo pipefail
: "${SPOT_LABEL:?is not set}" "${STOP_TIMEOUT_S:?is not set}"
poll_seconds=${POLL_SECONDS:-5}
supervisor_unit=${SUPERVISOR_UNIT-}
token_ttl=${IMDS_TOKEN_TTL:-21600}
imds_url=${VLLM_ENDPOINT_IMDS_URL:-http://169.254.169.254}

log() { printf '%s vllm-endpoint-spot: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }

token=""
token_renew_at=0
notice=""

new_token() {
  token=$(curl -sS -f --max-time 2 -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: $token_ttl" \
    "$imds_url/latest/api/token") || { token=""; return 1; }
  token_renew_at=$((SECONDS + token_ttl - 60))
}

# Sets `notice` to the interruption notice. Status 1: no notice (404); 2: IMDS did not answer.
# Not run in a subshell: the token it fetches is kept for the next poll.
read_notice() {
  local reply code
  for _ in 1 2; do
    if [[ -z $token ]] || ((SECONDS >= token_renew_at)); then
      new_token || return 2
    fi
    # The token goes to curl on stdin (-H @-), not on its command line.
    reply=$(printf 'X-aws-ec2-metadata-token: %s\n' "$token" | curl -sS --max-time 2 -H @- \
      -w '\n%{http_code}' "$imds_url/latest/meta-data/spot/instance-action") || return 2
    code=${reply##*$'\n'}
    case $code in
      200) notice=${reply%$'\n'*}; return 0 ;;
      404) return 1 ;;
      # The token expired early or IMDS forgot it: once more with a new one.
      401) token="" ;;
      *) return 2 ;;
    esac
  done
  return 2
}

# The string value of key $1 in the JSON object $2 (the notice is flat; the AMI need not have jq).
json_field() {
  local pattern="\"$1\"[[:space:]]*:[[:space:]]*\"([^\"]*)\""
  if [[ $2 =~ $pattern ]]; then printf '%s' "${BASH_REMATCH[1]}"; fi
}

stop_endpoint() {
  local action=$1 listed names=() started=$SECONDS
  if [[ -n $supervisor_unit ]]; then
    systemctl stop "$supervisor_unit" ||
      log "could not stop $supervisor_unit; stopping the containers all the same"
  fi
  listed=$(docker ps --filter "label=$SPOT_LABEL" --format '{{.Names}}') ||
    log "docker ps failed: the containers are left to the shutdown"
  [[ -z $listed ]] || mapfile -t names <<<"$listed"
  if ((${#names[@]})); then
    # One call: the CLI stops the containers in parallel, so the whole takes at most STOP_TIMEOUT_S.
    if docker stop --time "$STOP_TIMEOUT_S" "${names[@]}" >/dev/null; then
      log "stopped ${names[*]} in $((SECONDS - started)) s"
    else
      log "docker stop failed for some of: ${names[*]}"
    fi
  else
    log "no running container carries the label $SPOT_LABEL"
  fi
  sync
  log "disks flushed; the endpoint stays down until EC2's $action (it comes back at the next boot)"
}

log "watching $imds_url for a spot interruption notice every ${poll_seconds}s"
acted_on=""
imds_state=""
while :; do
  status=0
  read_notice || status=$?
  if ((status == 2)); then
    [[ $imds_state == failed ]] || log "IMDS does not answer at $imds_url; trying again every ${poll_seconds}s"
    imds_state=failed
  else
    [[ $imds_state != failed ]] || log "IMDS answers again"
    imds_state=ok
  fi
  if ((status == 0)) && [[ $notice != "$acted_on" ]]; then
    acted_on=$notice
    action=$(json_field action "$notice")
    log "spot interruption notice: action=${action:-unknown} time=$(json_field time "$notice")"
    if [[ $action == hibernate ]]; then
      # Hibernation keeps memory, dockerd included: containers stopped now would stay down after the
      # resume, and there is no two-minute warning to use anyway.
      log "hibernation: the containers are left running and resume with the instance"
    else
      stop_endpoint "${action:-interruption}"
    fi
  fi
  sleep "$poll_seconds"
done
