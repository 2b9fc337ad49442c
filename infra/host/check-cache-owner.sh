#!/usr/bin/env bash
# Fails unless the containers' cache folder belongs to the uid:gid the containers run as: they write
# their caches there, and a folder they cannot write makes vLLM fail late, at its first download.
# A step of the host checks (infra/render/host_scripts.py).
#
# Parameters (environment):
#   CACHE_ROOT_DIR  the host folder mounted as the containers' cache root
#   CONTAINER_USER  uid:gid the containers run as (the stack's containerUser)
set -euo pipefail
: "${CACHE_ROOT_DIR:?is not set}" "${CONTAINER_USER:?is not set}"

owner=$(stat -c %u:%g -- "$CACHE_ROOT_DIR")
if [[ $owner != "$CONTAINER_USER" ]]; then
  echo "$CACHE_ROOT_DIR belongs to $owner but the containers run as $CONTAINER_USER:" >&2
  echo "set containerUser to $owner (or chown the folder)" >&2
  exit 1
fi
