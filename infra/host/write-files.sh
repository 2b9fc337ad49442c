#!/usr/bin/env bash
# Writes files whose contents arrive on stdin, one `name base64-content` line each: the proxy's
# config and TLS files (components/vllm_server.py). On stdin the TLS key never appears in a command
# line, and each file is replaced atomically, its mode set before it holds anything.
#
# Parameters (environment):
#   TARGET_DIR  the folder the files go to
#   FILE_MODES  the files that may be written, one `name mode` line each (e.g. `tls/server.key 0600`)
set -euo pipefail
: "${TARGET_DIR:?is not set}" "${FILE_MODES:?is not set}"

# Prints the mode of file $1; fails for a name FILE_MODES does not list.
mode_of() {
  local name mode
  while read -r name mode; do
    if [[ $name == "$1" ]]; then
      printf '%s\n' "$mode"
      return 0
    fi
  done <<<"$FILE_MODES"
  return 1
}

umask 077
mkdir -p -- "$TARGET_DIR"
while read -r name content; do
  if ! mode=$(mode_of "$name"); then
    echo "unexpected file $name (expected one of: $(cut -d' ' -f1 <<<"$FILE_MODES" | paste -sd' '))" >&2
    exit 1
  fi
  mkdir -p -- "$(dirname -- "$TARGET_DIR/$name")"
  tmp="$TARGET_DIR/.$(basename -- "$name").new"
  : >"$tmp"
  chmod "$mode" -- "$tmp"
  printf '%s' "$content" | base64 -d >"$tmp"
  mv -- "$tmp" "$TARGET_DIR/$name"
done
echo "wrote files in $TARGET_DIR"
