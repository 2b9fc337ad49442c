#!/usr/bin/env bash
# Before vLLM downloads a Hub model into hostCacheDir (targets existing-host and local): is there room on
# that disk for the part of the weights not in the cache yet? Without this a full disk fails the download
# minutes into the readiness gate, with an OSError deep in vLLM's log. (AWS stacks are checked in the plan
# against cacheVolumeSizeGb; uploaded folders by stage-model-upload.sh.)
#
# Parameters (environment):
#   MODEL_ID          the Hub repo id (for the message)
#   MODEL_CACHE_DIR   its folder in the Hugging Face cache under hostCacheDir (need not exist yet)
#   MODEL_BYTES       the weights' size the Hub reports (safetensors metadata), in bytes
#   MODEL_BYTES_NOTE  "" or "about " when the size is estimated from the parameter count
set -euo pipefail
: "${MODEL_ID:?is not set}" "${MODEL_CACHE_DIR:?is not set}" "${MODEL_BYTES:?is not set}" \
  "${MODEL_BYTES_NOTE?is not set}"

gib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1073741824 }'; }

have=0
if [ -d "$MODEL_CACHE_DIR" ]; then
  have=$(du -sb -- "$MODEL_CACHE_DIR" | cut -f1)
fi
# The nearest folder that exists tells which disk the download lands on.
disk_dir=$MODEL_CACHE_DIR
while [ ! -d "$disk_dir" ]; do disk_dir=$(dirname -- "$disk_dir"); done
free=$(df -B1 --output=avail -- "$disk_dir" | tail -n 1 | tr -d ' ')
missing=$((MODEL_BYTES > have ? MODEL_BYTES - have : 0))
if [ "$missing" -gt "$free" ]; then
  echo "hostCacheDir: the disk of $disk_dir has $(gib "$free") GiB free; $MODEL_ID needs ${MODEL_BYTES_NOTE}$(gib "$MODEL_BYTES") GiB of weights ($(gib "$have") GiB of them already in the cache): free $(gib $((missing - free))) GiB on that disk, or set hostCacheDir to a folder on a bigger one" >&2
  exit 1
fi
echo "room for $MODEL_ID: $(gib "$missing") GiB to download, $(gib "$free") GiB free in $disk_dir"
