#!/usr/bin/env bash
# Prepares a server the user already has (target existing-host): creates the cache folders the
# containers bind-mount and checks that the SSH user reaches Docker. Run over SSH as that user by
# components/vllm_server.py; infra/render/host_scripts.py renders the command.
#
# Parameters (environment):
#   CACHE_DIR   the stack's hostCacheDir
#   CACHE_DIRS  the folders to create in it, one absolute path per line
set -euo pipefail
: "${CACHE_DIR:?is not set}" "${CACHE_DIRS:?is not set}"

mapfile -t dirs <<<"$CACHE_DIRS"
if ! mkdir -p -- "${dirs[@]}" 2>/dev/null; then
  echo "cannot create ${dirs[*]}: make $CACHE_DIR writable by $(id -un) (hostCacheDir)" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "$(id -un) cannot reach Docker on this host: add it to the docker group" >&2
  exit 1
fi
chmod 0755 -- "${dirs[@]}"
echo "cache folders ready in $CACHE_DIR"
