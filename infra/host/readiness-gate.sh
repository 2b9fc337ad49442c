#!/usr/bin/env bash
# The readiness gate `pulumi up` waits on (components/vllm_server.py), run over SSH on the host: exits 0
# once the probe URL answers 200 with the API key, printing vLLM's KV cache size next to the plan's fit
# estimate and the deploy timeline; exits 1 at once when the key is refused or the container stopped or
# keeps restarting, and at the deadline, with the container's state and last log lines.
# While it waits it prints a progress line every PROGRESS_INTERVAL_S (pulumi-command streams each line
# into the `pulumi up` display): "[+<s> s] <stage> | container <status>, health <h>, restarts <n> |
# probe <http code> [| model cache <size>] | last log: <vLLM's last log line>".
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
#   PROGRESS_INTERVAL_S  seconds between progress lines
#   MODEL_CACHE_DIR  the model's Hugging Face cache folder on the host, whose size the progress shows
#                    while vLLM downloads it; empty for a model that is not downloaded
#   FIT_KV_CACHE_TOKENS, FIT_MAX_CONCURRENCY, FIT_MAX_MODEL_LEN
#                    the plan's fit estimate, printed next to vLLM's own figures; empty without one
set -euo pipefail
: "${PROBE_URL:?is not set}" "${CONTAINER:?is not set}" "${TIMEOUT_S:?is not set}"
: "${POLL_INTERVAL_S:?is not set}" "${MAX_RESTARTS:?is not set}" "${LOG_LINES:?is not set}"
: "${TIMELINE_FILE:?is not set}" "${INSECURE_TLS:?is not set}" "${PROGRESS_INTERVAL_S:?is not set}"
: "${MODEL_CACHE_DIR?is not set}" "${FIT_KV_CACHE_TOKENS?is not set}" "${FIT_MAX_CONCURRENCY?is not set}"
: "${FIT_MAX_MODEL_LEN?is not set}"

IFS= read -r api_key || true
header="Authorization: Bearer $api_key"
api_key=""
# Short: a probe that hangs must not delay the next progress line past PROGRESS_INTERVAL_S + 5 s.
curl_options=(-sS -o /dev/null -w '%{http_code}' --max-time 5)
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

# 1234567 -> 1,234,567
group_digits() {
  sed -E ':a; s/([0-9])([0-9]{3})($|[^0-9])/\1,\2\3/; ta' <<<"$1"
}

human_bytes() {
  awk -v b="$1" 'BEGIN { split("B KB MB GB TB", u); i = 1; while (b >= 1000 && i < 5) { b /= 1000; i++ }
    printf (i == 1 ? "%d %s" : "%.1f %s"), b, u[i] }'
}

# vLLM's last log line, one line of plain text: progress bars end in carriage returns, colours in
# escape sequences. The API key never reaches the log (it is in the environment, not the arguments).
last_log_line() {
  docker logs --tail 20 "$CONTAINER" 2>&1 | tr '\r' '\n' | sed -E 's/\x1b\[[0-9;]*[A-Za-z]//g' \
    | grep -v '^[[:space:]]*$' | tail -n 1 | cut -c 1-200 || true
}

# What vLLM is doing, read from its log since start (the tail bounds the read): the last line that marks
# a known step decides. Nothing matched yet: "vLLM starting".
stage() {
  local line
  line=$(docker logs --tail 2000 "$CONTAINER" 2>&1 | tr '\r' '\n' | grep -E -i \
    'Uvicorn running|Starting vLLM API server|Available routes|KV cache size|Maximum concurrency|CUDA graph|Graph capturing|profiling|warmup|warming up|torch.compile|Compiling a graph|Dynamo bytecode|Loading weights took|Model loading took|Loading safetensors|Loading weights|Starting to load model|Downloading|Initializing a V1 LLM engine|non-default args' \
    | tail -n 1 || true)
  case ${line,,} in
    # First: these lines dump the whole config, which names later steps too.
    *"initializing a v1 llm engine"* | *"non-default args"*) echo "vLLM starting its engine" ;;
    *"uvicorn running"* | *"starting vllm api server"* | *"available routes"*) echo "vLLM starting its API server" ;;
    *"kv cache size"* | *"maximum concurrency"* | *"cuda graph"* | *"graph capturing"*)
      echo "vLLM sizing the KV cache and capturing graphs" ;;
    *profiling* | *warmup* | *"warming up"* | *"torch.compile"* | *"compiling a graph"* | *"dynamo bytecode"*)
      echo "vLLM compiling and warming up the model" ;;
    *"loading weights took"* | *"model loading took"*) echo "vLLM loaded the weights" ;;
    *"loading safetensors"* | *"loading weights"* | *"starting to load model"*) echo "vLLM loading the weights" ;;
    *downloading*) echo "vLLM downloading the model" ;;
    *) echo "vLLM starting" ;;
  esac
}

progress() {
  local status=$1 restarts=$2 health=$3 code=$4 cache=""
  if [[ -n $MODEL_CACHE_DIR && -d $MODEL_CACHE_DIR ]]; then
    cache=" | model cache $(human_bytes "$(du -sb -- "$MODEL_CACHE_DIR" 2>/dev/null | cut -f1)")"
  fi
  local last
  last=$(last_log_line)
  echo "[+$(($(date +%s) - started_at)) s] $(stage) | container $status, health $health, restarts $restarts" \
    "| probe $code$cache | last log: ${last:-(nothing logged yet)}"
}

# vLLM's own KV cache figures (one line from 0.2x on: "<GPU|CPU> KV cache size: N tokens, Maximum
# concurrency for L tokens per request: Cx"; earlier releases split it in two) next to the plan's.
report_capacity() {
  local logs size concurrency vllm estimate
  # vLLM logs them once at start; the tail bounds the read for a container that served for long.
  logs=$(docker logs --tail 10000 "$CONTAINER" 2>&1 | tr '\r' '\n' || true)
  size=$(grep -o -E '([A-Z]+( \+ host)? )?KV cache size: [0-9,]+ tokens' <<<"$logs" | tail -n 1 || true)
  concurrency=$(grep -o -E 'Maximum concurrency for [0-9,]+ tokens per request: [0-9.]+x' <<<"$logs" \
    | tail -n 1 || true)
  vllm="vLLM reports ${size:-no KV cache size}, ${concurrency:-no maximum concurrency}"
  if [[ -n $FIT_KV_CACHE_TOKENS ]]; then
    estimate="the plan's fit estimate: $(group_digits "$FIT_KV_CACHE_TOKENS") tokens, ${FIT_MAX_CONCURRENCY}x for"
    estimate+=" $(group_digits "$FIT_MAX_MODEL_LEN") tokens per request"
  else
    estimate="the plan made no fit estimate (its warnings say why: no GPU described, the CPU, or a quantization it does not model)"
  fi
  echo "capacity: $vllm; $estimate"
}

fail() {
  echo "vLLM did not become ready: $1" >&2
  local state_format='status={{.State.Status}} exit={{.State.ExitCode}} restarts={{.RestartCount}}'
  echo "--- container $CONTAINER: $(docker inspect --format "$state_format" "$CONTAINER" 2>&1)" >&2
  echo "--- last $LOG_LINES log lines of $CONTAINER:" >&2
  docker logs --tail "$LOG_LINES" "$CONTAINER" >&2 2>&1 || true
  exit 1
}

started_at=$(date +%s)
deadline=$((started_at + TIMEOUT_S))
next_progress=$started_at
while :; do
  # The key goes to curl on stdin (-H @-), never on its command line.
  code=$(printf '%s\n' "$header" | curl "${curl_options[@]}" -H @- "$PROBE_URL" 2>/dev/null) || code=000
  if [[ $code == 200 ]]; then
    started=$(docker inspect --format '{{.State.StartedAt}}' "$CONTAINER" 2>/dev/null || true)
    if [[ -n $started ]]; then record container_started "$(date -d "$started" +%s.%N)"; fi
    record server_ready "$(date +%s.%N)"
    echo "ready: GET $PROBE_URL answered 200 after $(($(date +%s) - started_at)) s"
    report_capacity || true
    report_timeline || true
    exit 0
  fi
  if [[ $code == 401 ]]; then
    fail "the server rejected the API key (401): the container's key is not the stack's apiKey"
  fi
  state_format='{{.State.Status}} {{.RestartCount}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}'
  state=$(docker inspect --format "$state_format" "$CONTAINER" 2>/dev/null) \
    || fail "container $CONTAINER does not exist"
  read -r status restarts health <<<"$state"
  case $status in
    exited | dead) fail "the container stopped (status $status)" ;;
  esac
  if ((restarts >= MAX_RESTARTS)); then
    fail "the container restarted $restarts times (it exits at start)"
  fi
  now=$(date +%s)
  if ((now >= deadline)); then
    fail "no answer from $PROBE_URL within $TIMEOUT_S s (last HTTP status $code)"
  fi
  if ((now >= next_progress)); then
    progress "$status" "$restarts" "${health:-none}" "$code"
    next_progress=$((now + PROGRESS_INTERVAL_S))
  fi
  # Wake for the next progress line even when probes are further apart.
  pause=$((next_progress - now))
  sleep $((pause < 1 ? 1 : (pause < POLL_INTERVAL_S ? pause : POLL_INTERVAL_S)))
done
