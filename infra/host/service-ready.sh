#!/usr/bin/env bash
# The wait `pulumi up` ends with for a fleet (components/vllm_service.py), run on the deploying machine: exits 0
# once the load balancer answers `GET PROBE_URL` with 200 and the API key, printing the models it lists; exits
# 1 at once when the key is refused (401: the replicas hold another key), and at the deadline with the last
# answer and where to look.
# While it waits it prints a progress line every PROGRESS_INTERVAL_S (pulumi-command streams each line into the
# `pulumi up` display): "[+<s> s of <timeout> s] <what the load balancer answered>".
#
# The API key is the first line of stdin: never in this text, an argument or the environment.
# Parameters (environment):
#   PROBE_URL            the endpoint's model list (…/v1/models) at the load balancer
#   TIMEOUT_S            give up after this many seconds
#   POLL_INTERVAL_S      seconds between probes
#   PROGRESS_INTERVAL_S  seconds between progress lines
#   LOGS_HINT            what to look at when it gives up (the task log group, the ECS service)
#   CA_BUNDLE            a CA file to verify the load balancer's certificate with; empty: the system's
set -euo pipefail
: "${PROBE_URL:?is not set}" "${TIMEOUT_S:?is not set}" "${POLL_INTERVAL_S:?is not set}"
: "${PROGRESS_INTERVAL_S:?is not set}" "${LOGS_HINT:?is not set}" "${CA_BUNDLE?is not set}"

IFS= read -r api_key || true
header="Authorization: Bearer $api_key"
api_key=""
body=$(mktemp)
trap 'rm -f -- "$body"' EXIT
curl_options=(-sS -o "$body" -w '%{http_code}' --max-time 10)
if [[ -n $CA_BUNDLE ]]; then curl_options+=(--cacert "$CA_BUNDLE"); fi

# What a status means while replicas start (the load balancer's own answers come before any replica's).
meaning() {
  case $1 in
    000) echo "no answer (the load balancer's name may not resolve yet, or the network blocks it)" ;;
    502) echo "502: a replica closed the connection (starting or stopping)" ;;
    503) echo "503: no healthy replica yet (instance launch, image pull, model load)" ;;
    504) echo "504: a replica did not answer in time" ;;
    *) echo "$1" ;;
  esac
}

start=$SECONDS
last_progress=-$PROGRESS_INTERVAL_S
code=000
while (( SECONDS - start < TIMEOUT_S )); do
  code=$(curl "${curl_options[@]}" -H @- -- "$PROBE_URL" <<<"$header" 2>/dev/null) || code=${code:-000}
  if [[ $code == 200 ]]; then
    printf 'ready after %d s: %s answered 200 with the key\n' "$((SECONDS - start))" "$PROBE_URL"
    cat -- "$body"
    echo
    exit 0
  fi
  if [[ $code == 401 ]]; then
    echo "the replicas refused the key (401): they hold another key than this deploy's; see $LOGS_HINT" >&2
    exit 1
  fi
  if (( SECONDS - last_progress >= PROGRESS_INTERVAL_S )); then
    printf '[+%d s of %d s] %s: %s\n' "$((SECONDS - start))" "$TIMEOUT_S" "$PROBE_URL" "$(meaning "$code")"
    last_progress=$SECONDS
  fi
  sleep "$POLL_INTERVAL_S"
done
printf 'no replica answered %s within %d s; last answer: %s. See %s\n' "$PROBE_URL" "$TIMEOUT_S" \
  "$(meaning "$code")" "$LOGS_HINT" >&2
exit 1
