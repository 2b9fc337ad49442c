#!/usr/bin/env bash
# Writes the CloudWatch agent's configuration and (re)starts the agent with it: the deploy's step once
# the vLLM container exists (components/vllm_server.py), again whenever the container or its address
# changes. Installs the agent first when the instance has none yet (metrics turned on after its first
# boot). Runs as the SSH user, with sudo for the agent's files (root's, like the agent).
#
# Parameters (environment):
#   AGENT_SCRIPT        infra/host/cloudwatch-agent.sh on the instance (user-data put it there)
#   BOOT_ENV_FILE       the env file that script reads its parameters from
#   AGENT_CTL           the agent's control script
#   AGENT_CONFIG_FILE   where the agent's JSON configuration goes; AGENT_CONFIG: its text
#   SCRAPE_CONFIG_FILE  where the Prometheus scrape config goes; SCRAPE_CONFIG: its text
set -euo pipefail
: "${AGENT_SCRIPT:?is not set}" "${BOOT_ENV_FILE:?is not set}" "${AGENT_CTL:?is not set}" \
  "${AGENT_CONFIG_FILE:?is not set}" "${AGENT_CONFIG:?is not set}" \
  "${SCRAPE_CONFIG_FILE:?is not set}" "${SCRAPE_CONFIG:?is not set}"

sudo env "BOOT_ENV_FILE=$BOOT_ENV_FILE" "$AGENT_SCRIPT" install
sudo mkdir -p -- "$(dirname -- "$SCRAPE_CONFIG_FILE")" "$(dirname -- "$AGENT_CONFIG_FILE")"
printf '%s' "$SCRAPE_CONFIG" | sudo tee -- "$SCRAPE_CONFIG_FILE" >/dev/null
printf '%s' "$AGENT_CONFIG" | sudo tee -- "$AGENT_CONFIG_FILE" >/dev/null
sudo "$AGENT_CTL" -a fetch-config -m ec2 -s -c "file:$AGENT_CONFIG_FILE"
echo "vllm-endpoint: the CloudWatch agent runs with $AGENT_CONFIG_FILE"
