#!/usr/bin/env bash
# The readiness gate `pulumi up` waits on (components/vllm_server.py), run over SSH on the host: exits 0
# once the probe URL answers 200 with the API key, printing the deploy timeline; exits 1 at once when
# the key is refused or the container stopped or keeps restarting, and at the deadline, with the
# container's state and last log lines.
#
# The API key is the first line of stdin: never in this text, an argument or the environment.
# Parameters (environment):
#   PROBE_URL        `GET` it with the key (the endpoint's /v1/models, reached from the host itself)
#   CONTAINER        the vLLM container's name
#   TIMEOUT_S        give up after this many seconds
#   POLL_INTERVAL_S  seconds between probes
#   MAX_RESTARTS     a container restarted this often exits at start: stop waiting
#   LOG_LINES        how many of the container's last log lines a failure prints
#   TIMELINE_FILE    "stage epoch-seconds" lines; the gate adds container_started and server_ready
#   INSECURE_TLS     true: do not verify the certificate (a self-signed one cannot match 127.0.0.1)
set -euo pipefail
: "${PROBE_URL:?is not set}" "${CONTAINER:?is not set}" "${TIMEOUT_S:?is not set}"
: "${POLL_INTERVAL_S:?is not set}" "${MAX_RESTARTS:?is not set}" "${LOG_LINES:?is not set}"
: "${TIMELINE_FILE:?is not set}" "${INSECURE_TLS:?is not set}"

IFS= read -r api_key || true
header="Authorization: Bearer $api_key"
api_key=""
curl_options=(-sS -o /dev/null -w '%{http_code}' --max-time 10)
if [[ $INSECURE_TLS == true ]]; then curl_options+=(-k); fi

# Prints "stage  epoch  seconds-since-first-stage" for every recorded stage, in time order.
report_timeline() {
  [[ -s $TIMELINE_FILE ]] || return 0
  sort -k2 -n -- "$TIMELINE_FILE" | awk 'NR == 1 { t0 = $2 } { printf "%-22s %s %+9.1f s\n", $1, $2, $2 - t0 }'
}

# Records stage $1 at epoch $2. One entry per stage: a re-deploy replaces the previous container's times.
# A timeline that cannot be written costs the report, never the deploy.
record() {
  [[ -w $(dirname -- "$TIMELINE_FILE") ]] || return 0
  if { grep -v "^$1 " -- "$TIMELINE_FILE" 2>/dev/null || true; printf '%s %s\n' "$1" "$2"; } \
    >"$TIMELINE_FILE.new"; then
    mv -- "$TIMELINE_FILE.new" "$TIMELINE_FILE" || true
  fi
}

fail() {
  echo "vLLM did not become ready: $1" >&2
  local state_format='status={{.State.Status}} exit={{.State.ExitCode}} restarts={{.RestartCount}}'
  echo "--- container $CONTAINER: $(docker inspect --format "$state_format" "$CONTAINER" 2>&1)" >&2
  echo "--- last $LOG_LINES log lines of $CONTAINER:" >&2
  docker logs --tail "$LOG_LINES" "$CONTAINER" >&2 2>&1 || true
  exit 1
}

deadline=$(($(date +%s) + TIMEOUT_S))
while :; do
  # The key goes to curl on stdin (-H @-), never on its command line.
  code=$(printf '%s\n' "$header" | curl "${curl_options[@]}" -H @- "$PROBE_URL" 2>/dev/null) || code=000
  if [[ $code == 200 ]]; then
    started=$(docker inspect --format '{{.State.StartedAt}}' "$CONTAINER" 2>/dev/null || true)
    if [[ -n $started ]]; then record container_started "$(date -d "$started" +%s.%N)"; fi
    record server_ready "$(date +%s.%N)"
    echo "ready: GET $PROBE_URL answered 200"
    report_timeline || true
    exit 0
  fi
  if [[ $code == 401 ]]; then
    fail "the server rejected the API key (401): the container's key is not the stack's apiKey"
  fi
  state=$(docker inspect --format '{{.State.Status}} {{.RestartCount}}' "$CONTAINER" 2>/dev/null) \
    || fail "container $CONTAINER does not exist"
  status=${state% *}
  restarts=${state#* }
  case $status in
    exited | dead) fail "the container stopped (status $status)" ;;
  esac
  if ((restarts >= MAX_RESTARTS)); then
    fail "the container restarted $restarts times (it exits at start)"
  fi
  if (($(date +%s) >= deadline)); then
    fail "no answer from $PROBE_URL within $TIMEOUT_S s (last HTTP status $code)"
  fi
  sleep "$POLL_INTERVAL_S"
done
