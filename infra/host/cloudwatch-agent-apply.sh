#!/usr/bin/env bash
# Writes the CloudWatch agent's configuration and (re)starts the agent with it: the deploy's step once
# the vLLM container exists (components/vllm_server.py), again whenever the container or its address
# changes. Installs the agent first when the instance has none yet (metrics turned on after its first
# boot). Runs as the SSH user, with sudo for the agent's files (root's, like the agent). Then installs
# the latency percentiles (infra/host/vllm-latency.py, which the agent cannot make from vLLM's histograms):
# the script, the env file its service reads (vLLM's address; cloudwatch-agent.sh retargets it after a
# boot), the service and its timer, and (re)starts the timer.
#
# Parameters (environment):
#   AGENT_SCRIPT        infra/host/cloudwatch-agent.sh on the instance (user-data put it there)
#   BOOT_ENV_FILE       the env file that script reads its parameters from
#   AGENT_CTL           the agent's control script
#   AGENT_CONFIG_FILE   where the agent's JSON configuration goes; AGENT_CONFIG: its text
#   SCRAPE_CONFIG_FILE  where the Prometheus scrape config goes; SCRAPE_CONFIG: its text
#   LATENCY_SCRIPT_FILE, LATENCY_ENV_FILE, LATENCY_SERVICE_FILE, LATENCY_TIMER_FILE  where the latency
#                       percentiles' script, env file, service and timer go; LATENCY_SCRIPT, LATENCY_ENV,
#                       LATENCY_SERVICE, LATENCY_TIMER: their texts
#   LATENCY_TIMER_NAME  the timer's unit name
set -euo pipefail
: "${AGENT_SCRIPT:?is not set}" "${BOOT_ENV_FILE:?is not set}" "${AGENT_CTL:?is not set}" \
  "${AGENT_CONFIG_FILE:?is not set}" "${AGENT_CONFIG:?is not set}" \
  "${SCRAPE_CONFIG_FILE:?is not set}" "${SCRAPE_CONFIG:?is not set}" \
  "${LATENCY_SCRIPT_FILE:?is not set}" "${LATENCY_SCRIPT:?is not set}" \
  "${LATENCY_ENV_FILE:?is not set}" "${LATENCY_ENV:?is not set}" \
  "${LATENCY_SERVICE_FILE:?is not set}" "${LATENCY_SERVICE:?is not set}" \
  "${LATENCY_TIMER_FILE:?is not set}" "${LATENCY_TIMER:?is not set}" "${LATENCY_TIMER_NAME:?is not set}"

# write FILE MODE TEXT: the file as root's, with that mode.
write() {
  sudo mkdir -p -- "$(dirname -- "$1")"
  printf '%s' "$3" | sudo tee -- "$1" >/dev/null
  sudo chmod "$2" -- "$1"
}

sudo env "BOOT_ENV_FILE=$BOOT_ENV_FILE" "$AGENT_SCRIPT" install
write "$SCRAPE_CONFIG_FILE" 0644 "$SCRAPE_CONFIG"
write "$AGENT_CONFIG_FILE" 0644 "$AGENT_CONFIG"
sudo "$AGENT_CTL" -a fetch-config -m ec2 -s -c "file:$AGENT_CONFIG_FILE"
echo "vllm-endpoint: the CloudWatch agent runs with $AGENT_CONFIG_FILE"

write "$LATENCY_SCRIPT_FILE" 0755 "$LATENCY_SCRIPT"
write "$LATENCY_ENV_FILE" 0644 "$LATENCY_ENV"
write "$LATENCY_SERVICE_FILE" 0644 "$LATENCY_SERVICE"
write "$LATENCY_TIMER_FILE" 0644 "$LATENCY_TIMER"
sudo systemctl daemon-reload
sudo systemctl enable "$LATENCY_TIMER_NAME"
sudo systemctl restart "$LATENCY_TIMER_NAME"
echo "vllm-endpoint: latency percentiles every minute ($LATENCY_TIMER_NAME, $LATENCY_SCRIPT_FILE)"
