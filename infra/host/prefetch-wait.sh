#!/usr/bin/env bash
# The AWS host's readiness check, last step: waits for the boot-time model download boot.sh started, if
# it started one, then reports how the downloads went. Never fails: without the prefetch, vLLM downloads
# the model itself (waiting on the same per-file locks if one is still being written).
#
# While it waits it prints a progress line every PROGRESS_INTERVAL_S (pulumi-command streams it into the
# `pulumi up` display): "[+<s> s] host: model download <bytes in the cache folder> of <total> | image ...".
#
# Parameters (environment):
#   PREFETCH_STATE_DIR     where boot.sh's prefetch jobs leave prefetch-<job>.started, .pid, .done, .failed
#   PREFETCH_WAIT_SECONDS  how long to wait for the model download before vLLM takes over
#   PREFETCH_LOG           the jobs' output; hf-prefetch.py logs "total <bytes> bytes in <folder> (...)", and
#                          boot.sh "hf-prefetch: installing the Hub client ..." while it installs that first
#   PROGRESS_INTERVAL_S    seconds between progress lines
set -euo pipefail
: "${PREFETCH_STATE_DIR:?is not set}" "${PREFETCH_WAIT_SECONDS:?is not set}" "${PREFETCH_LOG:?is not set}"
: "${PROGRESS_INTERVAL_S:?is not set}"

state=$PREFETCH_STATE_DIR

human_bytes() {
  awk -v b="$1" 'BEGIN { split("B KB MB GB TB", u); i = 1; while (b >= 1000 && i < 5) { b /= 1000; i++ }
    printf (i == 1 ? "%d %s" : "%.1f %s"), b, u[i] }'
}

progress() {
  local line total folder have model image
  line=$(grep -a '^hf-prefetch: total [0-9]* bytes in ' -- "$PREFETCH_LOG" 2>/dev/null | tail -n 1 || true)
  if [[ -n $line ]]; then
    total=${line#hf-prefetch: total }
    total=${total%% *}
    folder=${line#* bytes in }
    folder=${folder% (*}
    have=$(du -sb -- "$folder" 2>/dev/null | cut -f1 || true)
    model="model download $(human_bytes "${have:-0}") of $(human_bytes "$total") in $folder"
  elif [[ $(grep -a '^hf-prefetch: ' -- "$PREFETCH_LOG" 2>/dev/null | tail -n 1) == "hf-prefetch: installing"* ]]; then
    model="model download waits for the Hub client install (huggingface_hub, hf_xet)"
  else
    model="model download starting (its size is not known yet)"
  fi
  if [[ -e $state/prefetch-image.done ]]; then image="image present"
  elif [[ -e $state/prefetch-image.failed ]]; then image="image pull failed"
  elif [[ -e $state/prefetch-image.started ]]; then image="image pull running"
  else image="no image pull"
  fi
  echo "[+$(($(date +%s) - started_at)) s] host: $model | $image"
}

if [[ -e $state/prefetch-model.started ]]; then
  started_at=$(date +%s)
  next_progress=$started_at
  while [[ ! -e $state/prefetch-model.done && ! -e $state/prefetch-model.failed ]]; do
    pid=$(cat -- "$state/prefetch-model.pid" 2>/dev/null || true)
    # The job runs as `boot.sh prefetch-model-job`; a pid whose command line lacks that has ended.
    if [[ -n $pid ]] && ! grep -qs prefetch-model-job "/proc/$pid/cmdline"; then
      echo "warning: the boot-time model download ended without a result; vLLM will download the model" >&2
      break
    fi
    now=$(date +%s)
    if ((now - started_at >= PREFETCH_WAIT_SECONDS)); then
      echo "warning: the boot-time model download is still running after $PREFETCH_WAIT_SECONDS s; vLLM takes over" >&2
      break
    fi
    if ((now >= next_progress)); then
      progress
      next_progress=$((now + PROGRESS_INTERVAL_S))
    fi
    sleep 5
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
