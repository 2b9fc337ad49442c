#!/usr/bin/env bash
# Fails unless Docker on this host lists the nvidia runtime, through which the vLLM container gets its
# GPUs. A step of the host checks (infra/render/host_scripts.py) when the container asks for GPUs.
set -euo pipefail

# Captured first: `docker info | grep -q` under pipefail can fail on a match (grep exits, docker gets SIGPIPE).
runtimes=$(docker info --format '{{json .Runtimes}}')
if [[ $runtimes != *'"nvidia"'* ]]; then
  echo "Docker on this host does not list the nvidia runtime: install the NVIDIA container toolkit and run" >&2
  echo "'sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker'" >&2
  exit 1
fi
