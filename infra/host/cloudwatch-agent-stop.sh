#!/usr/bin/env bash
# Stops the CloudWatch agent (metrics turned off). Nothing to do where it was never installed. The
# package stays (a later `metrics: true` finds it); boot.sh leaves it alone without the metrics tag.
#
# Parameters (environment):
#   AGENT_CTL  the agent's control script
set -euo pipefail
: "${AGENT_CTL:?is not set}"
if [[ -x $AGENT_CTL ]]; then
  sudo "$AGENT_CTL" -a stop
  echo "vllm-endpoint: the CloudWatch agent is stopped"
fi
