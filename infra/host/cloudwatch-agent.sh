#!/usr/bin/env bash
# The Amazon CloudWatch agent on an AWS instance (metrics on): installs it, and at boot points its
# Prometheus scrape at the vLLM container's current address.
#
#   install  installs the agent's package from AWS's download bucket in the instance's region, unless
#            its control script (AGENT_CTL) is already there. Run by `boot` and by the deploy that
#            writes the agent's configuration (infra/host/cloudwatch-agent-apply.sh), one at a time.
#   boot     install, then retarget. boot.sh starts it at every boot when the instance carries the
#            metrics tag (METRICS_TAG).
#   retarget Docker gives containers new addresses when several start at once (a boot starts vLLM and
#            the proxy together, in any order), so the address the deploy wrote may now be the proxy's.
#            Waits for the vLLM container (label VLLM_LABEL) to run, and when its address differs from
#            the scrape config's, rewrites the target and restarts the agent; and points the latency
#            percentiles' env file (LATENCY_ENV_FILE) at it too (its timer reads it at every run). Until
#            the deploy wrote a configuration there is nothing to retarget.
#
# `boot` never fails: without the agent the endpoint serves, only its metrics are missing (and the
# `not-ready` alarm says so). `install` exits 1 when it cannot install, which fails the deploy's step with
# the reason. Its lines start with "vllm-endpoint-cloudwatch-agent:".
#
# Parameters (environment; BOOT_ENV_FILE, when set, is read first):
#   AGENT_CTL, AGENT_CONFIG_FILE, SCRAPE_CONFIG_FILE  the agent's control script and configuration files
#   VLLM_LABEL           label=value of the vLLM container
#   VLLM_PORT            vLLM's port in its container (the scrape target's port)
#   AGENT_PACKAGE_URL    the agent's package: AWS's download bucket in the instance's region, Ubuntu amd64
#   LATENCY_ENV_FILE     the latency percentiles' env file (infra/host/vllm-latency.py's service); by
#                        default vllm-latency.env next to BOOT_ENV_FILE, where the deploy writes it
#   AGENT_RETRY_DELAY, AGENT_WAIT_SECONDS, AGENT_LOCK  tests shorten or move these
set -euo pipefail
if [[ -n ${BOOT_ENV_FILE:-} ]]; then
  # shellcheck source=/dev/null
  source "$BOOT_ENV_FILE"
fi
missing="is not set (boot.env)"
: "${AGENT_CTL:?$missing}" "${AGENT_CONFIG_FILE:?$missing}" "${SCRAPE_CONFIG_FILE:?$missing}" \
  "${VLLM_LABEL:?$missing}" "${VLLM_PORT:?$missing}" "${AGENT_PACKAGE_URL:?$missing}"
retry_delay=${AGENT_RETRY_DELAY:-10}
wait_s=${AGENT_WAIT_SECONDS:-900}
latency_env=${LATENCY_ENV_FILE:-${BOOT_ENV_FILE:+$(dirname -- "$BOOT_ENV_FILE")/vllm-latency.env}}

log() { echo "vllm-endpoint-cloudwatch-agent: $*"; }

install_agent() {
  local url=$AGENT_PACKAGE_URL deb attempt
  # One install at a time (the boot's and a deploy's); the second finds the first one's result.
  exec 9>"${AGENT_LOCK:-/run/vllm-endpoint-cloudwatch-agent.lock}"
  flock 9
  if [[ -x $AGENT_CTL ]]; then return 0; fi
  deb=$(mktemp --suffix=.deb)
  for attempt in 1 2 3 4 5; do
    log "installing the CloudWatch agent from $url (attempt $attempt)"
    if curl -sS -f --max-time 300 --retry 2 -o "$deb" "$url" \
      && DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 install -y "$deb"; then
      rm -f -- "$deb"
      log "installed: $AGENT_CTL"
      return 0
    fi
    sleep $((attempt * retry_delay))
  done
  rm -f -- "$deb"
  log "the CloudWatch agent could not be installed from $url: no metrics until a deploy installs it"
  return 1
}

# The latency percentiles' env file names vLLM's /metrics by address: the same rewrite (no restart, the
# timer's next run reads it). Absent (an instance deployed before it existed): nothing to do.
retarget_latency() {
  local address=$1
  [[ -n $latency_env && -f $latency_env ]] || return 0
  if ! grep -qF -- "//$address:$VLLM_PORT/" "$latency_env"; then
    sed -i -E "s#//[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+:$VLLM_PORT/#//$address:$VLLM_PORT/#" "$latency_env"
    log "latency percentiles now read vLLM at $address:$VLLM_PORT"
  fi
}

retarget() {
  local address="" deadline=$((SECONDS + wait_s))
  [[ -f $SCRAPE_CONFIG_FILE ]] || { log "not configured yet: the deploy writes the configuration"; return 0; }
  while [[ -z $address && $SECONDS -lt $deadline ]]; do
    address=$(docker ps -q --filter "label=$VLLM_LABEL" --filter status=running | head -n 1 \
      | xargs -r docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}') || address=""
    [[ -n $address ]] || sleep 5
  done
  if [[ -z $address ]]; then
    log "no running vLLM container after $wait_s s: the scrape target stays as the deploy wrote it"
    return 0
  fi
  retarget_latency "$address"
  if grep -qF -- "$address:$VLLM_PORT" "$SCRAPE_CONFIG_FILE"; then
    log "vLLM is at $address:$VLLM_PORT, as configured"
    return 0
  fi
  sed -i -E "s/[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+:$VLLM_PORT/$address:$VLLM_PORT/" "$SCRAPE_CONFIG_FILE"
  log "vLLM is now at $address:$VLLM_PORT: scrape target rewritten, agent restarted"
  "$AGENT_CTL" -a fetch-config -m ec2 -s -c "file:$AGENT_CONFIG_FILE"
}

case ${1:-} in
  install) install_agent ;;
  retarget) retarget ;;
  boot) if install_agent; then retarget; fi ;;
  *) echo "usage: $0 install|boot|retarget" >&2; exit 2 ;;
esac
