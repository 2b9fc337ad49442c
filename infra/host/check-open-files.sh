#!/usr/bin/env bash
# Fails unless this host's Docker can give the containers OPEN_FILES open files (containerOpenFiles):
# a container asking for more than its engine's own hard limit starts only when the engine may raise
# limits (CAP_SYS_RESOURCE); otherwise `docker run` stops with "error setting rlimit type 7: operation not
# permitted", long after the plan. The engine is dockerd and the containerd that runs its containers.
# A step of the host checks (infra/render/host_scripts.py).
#
# Parameters (environment):
#   OPEN_FILES  the containers' open-files limit (soft = hard)
set -euo pipefail
: "${OPEN_FILES:?is not set}"

CAP_SYS_RESOURCE=24
lowest="" holder=""
for name in dockerd containerd; do
  pid=$(pgrep -xo "$name" || true)
  [[ -n $pid && -r /proc/$pid/limits ]] || continue
  hard=$(awk '/^Max open files/ { print $5 }' "/proc/$pid/limits")
  [[ $hard == unlimited ]] && continue
  caps=$(awk '/^CapEff:/ { print $2 }' "/proc/$pid/status")
  (((16#$caps >> CAP_SYS_RESOURCE) & 1)) && continue
  if [[ -z $lowest ]] || ((hard < lowest)); then
    lowest=$hard holder=$name
  fi
done
if [[ -n $lowest ]] && ((OPEN_FILES > lowest)); then
  echo "containerOpenFiles: Docker on this host cannot give containers $OPEN_FILES open files: $holder's own" \
    "hard limit is $lowest and it may not raise it (no CAP_SYS_RESOURCE). Set containerOpenFiles to $lowest" \
    "(vLLM then warns that it could not raise its limit), or raise the daemon's limit" \
    "(systemctl edit docker: [Service] LimitNOFILE=1048576)" >&2
  exit 1
fi
echo "open files: Docker can give the containers $OPEN_FILES"
