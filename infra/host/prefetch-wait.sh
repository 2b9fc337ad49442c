#!/usr/bin/env bash
# The AWS host's readiness check, last step: waits for the boot-time model download boot.sh started, if
# it started one, then reports how the downloads went. Never fails: without the prefetch, vLLM downloads
# the model itself (waiting on the same per-file locks if one is still being written).
#
# Parameters (environment):
#   PREFETCH_STATE_DIR     where boot.sh's prefetch jobs leave prefetch-<job>.started, .pid, .done, .failed
#   PREFETCH_WAIT_SECONDS  how long to wait for the model download before vLLM takes over
set -euo pipefail
: "${PREFETCH_STATE_DIR:?is not set}" "${PREFETCH_WAIT_SECONDS:?is not set}"

state=$PREFETCH_STATE_DIR
if [[ -e $state/prefetch-model.started ]]; then
  waited=0
  while [[ ! -e $state/prefetch-model.done && ! -e $state/prefetch-model.failed ]]; do
    pid=$(cat -- "$state/prefetch-model.pid" 2>/dev/null || true)
    # The job runs as `boot.sh prefetch-model-job`; a pid whose command line lacks that has ended.
    if [[ -n $pid ]] && ! grep -qs prefetch-model-job "/proc/$pid/cmdline"; then
      echo "warning: the boot-time model download ended without a result; vLLM will download the model" >&2
      break
    fi
    if ((waited >= PREFETCH_WAIT_SECONDS)); then
      echo "warning: the boot-time model download is still running after $PREFETCH_WAIT_SECONDS s; vLLM takes over" >&2
      break
    fi
    sleep 5
    waited=$((waited + 5))
  done
  if [[ -e $state/prefetch-model.failed ]]; then
    echo "warning: the boot-time model download failed: $(cut -d' ' -f2- -- "$state/prefetch-model.failed")" >&2
    echo "warning: vLLM will download the model itself when the container starts" >&2
  elif [[ -e $state/prefetch-model.done ]]; then
    echo "model prefetched: $(cut -d' ' -f2- -- "$state/prefetch-model.done")"
  fi
fi
if [[ -e $state/prefetch-image.failed ]]; then
  echo "warning: the boot-time image pull failed: $(cut -d' ' -f2- -- "$state/prefetch-image.failed")" >&2
elif [[ -e $state/prefetch-image.started && ! -e $state/prefetch-image.done ]]; then
  echo "the image is still being pulled; the container's own pull joins it"
fi
