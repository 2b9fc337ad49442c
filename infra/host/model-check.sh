#!/usr/bin/env bash
# Runs after a fine-tune folder was copied to the host (components/vllm_server.py): the model's files
# must sit directly in MODEL_DIR, readable by the containers' user.
#
# Parameters (environment):
#   MODEL_DIR  the folder the upload went to
set -euo pipefail
: "${MODEL_DIR:?is not set}"

# SFTP copies a folder either as the target or into it, depending on whether the target existed;
# accept both and leave the files directly in the target.
if [[ ! -f $MODEL_DIR/config.json ]]; then
  inner=$(find "$MODEL_DIR" -mindepth 2 -maxdepth 2 -name config.json -printf '%h\n' -quit)
  if [[ -z $inner ]]; then
    echo "upload to $MODEL_DIR has no config.json" >&2
    exit 1
  fi
  find "$inner" -mindepth 1 -maxdepth 1 -exec mv -t "$MODEL_DIR" {} +
  rmdir -- "$inner"
fi
chmod -R a+rX,go-w -- "$MODEL_DIR"
echo "model ready in $MODEL_DIR"
