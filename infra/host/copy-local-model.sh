#!/usr/bin/env bash
# target=local: the copy step of an upload (what SFTP does on a remote host), after
# stage-model-upload.sh left STAGING_DIR empty; verify-model.sh checks the copy and moves it in place.
#
# Parameters (environment):
#   SOURCE_DIR   the stack's modelPath (a folder on this machine)
#   STAGING_DIR  the empty staging folder; the copy lands in it under the source folder's name
set -euo pipefail
: "${SOURCE_DIR:?is not set}" "${STAGING_DIR:?is not set}"

cp -R -- "$SOURCE_DIR" "$STAGING_DIR/"
echo "copied $SOURCE_DIR to $STAGING_DIR"
