#!/usr/bin/env bash
# Before a fine-tune folder is copied to the host (components/vllm_server.py): checks that the cache has
# room for it and leaves an empty staging folder, which the copy then fills as
# <STAGING_DIR>/<folder name> (SFTP copies a folder into a target that exists). Nothing in MODEL_DIR, the
# folder the containers mount, is touched: verify-model.sh moves the copy there only once it is whole.
#
# Parameters (environment):
#   STAGING_DIR    the empty folder to leave
#   MODEL_DIR      where the verified model will live (its parent holds the staging folder too)
#   NEED_BYTES     the folder's size (sum of its files)
#   SPACE_SETTING  what the user changes to make room (names the setting)
set -euo pipefail
: "${STAGING_DIR:?is not set}" "${MODEL_DIR:?is not set}" "${NEED_BYTES:?is not set}" "${SPACE_SETTING:?is not set}"

parent=$(dirname -- "$MODEL_DIR")
mkdir -p -- "$parent"
# A copy cut short by an earlier deploy goes first: its space counts as free.
rm -rf -- "$STAGING_DIR"
free_bytes=$(($(df -Pk -- "$parent" | awk 'NR == 2 { print $4 }') * 1024))
if ((NEED_BYTES > free_bytes)); then
  size() { awk -v b="$1" 'BEGIN { if (b >= 1073741824) printf "%.1f GiB", b / 1073741824;
    else printf "%d MiB", b / 1048576 }'; }
  echo "the cache at $parent has $(size "$free_bytes") free, the model needs $(size "$NEED_BYTES");" \
    "$SPACE_SETTING" >&2
  exit 1
fi
mkdir -p -- "$STAGING_DIR"
echo "room for the model ($NEED_BYTES bytes) in $parent"
