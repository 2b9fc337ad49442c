#!/usr/bin/env bash
# Stops the CloudWatch agent and the latency timer that feeds it (metrics turned off). Nothing to do where
# they were never installed. The package stays (a later `metrics: true` finds it); boot.sh leaves it alone
# without the metrics tag.
#
# Parameters (environment):
#   AGENT_CTL           the agent's control script
#   LATENCY_TIMER_NAME  the systemd timer of vllm-latency.py
set -euo pipefail
: "${AGENT_CTL:?is not set}" "${LATENCY_TIMER_NAME:?is not set}"
if systemctl list-unit-files "$LATENCY_TIMER_NAME" >/dev/null 2>&1; then
  sudo systemctl disable --now "$LATENCY_TIMER_NAME" >/dev/null 2>&1 || true
fi
if [[ -x $AGENT_CTL ]]; then
  sudo "$AGENT_CTL" -a stop
  echo "vllm-endpoint: the CloudWatch agent is stopped"
fi
