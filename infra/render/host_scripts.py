"""Shell scripts the program runs on the host over SSH (pulumi-command `remote.Command`).

Pure renderers: the same text runs in `pulumi up` and, for real, in tests/real against the test host.
Secrets reach these scripts only on stdin (the API key for the readiness probe), never in their
text or on a command line.
"""

from __future__ import annotations

import shlex

from vllm_endpoint.infra.catalog.names import (
    CACHE_SUBDIR_MODELS,
    CACHE_SUBDIR_PROXY,
    CACHE_SUBDIR_ROOT,
    PREFETCH_STATE_DIR,
)
from vllm_endpoint.infra.plan.spec import ReadinessGate

CACHE_SUBDIRS = (CACHE_SUBDIR_ROOT, CACHE_SUBDIR_MODELS, CACHE_SUBDIR_PROXY)

_TIMELINE_REPORT = r"""
report_timeline() {
  # Prints "stage  seconds-since-first-stage" for every recorded stage, in time order.
  [ -s "$timeline" ] || return 0
  sort -k2 -n "$timeline" | awk 'NR == 1 { t0 = $2 } { printf "%-22s %s %+9.1f s\n", $1, $2, $2 - t0 }'
}
"""


def _owner_check(cache_dir: str, container_user: str) -> str:
    root_cache = shlex.quote(f"{cache_dir}/{CACHE_SUBDIR_ROOT}")
    return f"""
owner=$(stat -c %u:%g {root_cache})
if [ "$owner" != {shlex.quote(container_user)} ]; then
  echo "{cache_dir}/{CACHE_SUBDIR_ROOT} belongs to $owner but the containers run as {container_user}:" >&2
  echo "set containerUser to $owner (or chown the folder)" >&2
  exit 1
fi"""


# How long the host check waits for the boot-time model download: ~90 GB at 100 MB/s. It must stay
# below the host-ready command's own timeout (components/gpu_host.py) minus cloud-init's time; past it,
# vLLM starts and waits on the prefetch's per-file locks for what is still being written.
PREFETCH_WAIT_SECONDS = 900


def prefetch_wait_script(state_dir: str, wait_s: int) -> str:
    """Waits for the boot-time model download boot.sh started, if it started one. Never fails: without
    the prefetch, vLLM downloads the model itself (waiting on the same per-file locks if one is still
    being written)."""
    state = shlex.quote(state_dir)
    return f"""
state={state}
if [ -e "$state/prefetch-model.started" ]; then
  waited=0
  while [ ! -e "$state/prefetch-model.done" ] && [ ! -e "$state/prefetch-model.failed" ]; do
    pid=$(cat "$state/prefetch-model.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && ! grep -qs prefetch-model-job "/proc/$pid/cmdline"; then
      echo "warning: the boot-time model download ended without a result; vLLM will download the model" >&2
      break
    fi
    if [ "$waited" -ge {wait_s} ]; then
      echo "warning: the boot-time model download is still running after {wait_s} s; vLLM takes over" >&2
      break
    fi
    sleep 5
    waited=$((waited + 5))
  done
  if [ -e "$state/prefetch-model.failed" ]; then
    echo "warning: the boot-time model download failed: $(cut -d' ' -f2- "$state/prefetch-model.failed")" >&2
    echo "warning: vLLM will download the model itself when the container starts" >&2
  elif [ -e "$state/prefetch-model.done" ]; then
    echo "model prefetched: $(cut -d' ' -f2- "$state/prefetch-model.done")"
  fi
fi
if [ -e "$state/prefetch-image.failed" ]; then
  echo "warning: the boot-time image pull failed: $(cut -d' ' -f2- "$state/prefetch-image.failed")" >&2
elif [ -e "$state/prefetch-image.started" ] && [ ! -e "$state/prefetch-image.done" ]; then
  echo "the image is still being pulled; the container's own pull joins it"
fi"""


def host_ready_script(cache_mount: str, require_nvidia: bool, container_user: str,
                      prefetch_state_dir: str = PREFETCH_STATE_DIR,
                      prefetch_wait_s: int = PREFETCH_WAIT_SECONDS) -> str:
    """Waits until cloud-init finished preparing the VM (failing with cloud-init's own report), then
    for the boot-time model download (reporting, never failing, when it did not work out)."""
    mount = shlex.quote(cache_mount)
    owner_check = _owner_check(cache_mount, container_user)
    nvidia_check = (
        """
if ! docker info --format '{{json .Runtimes}}' | grep -q '"nvidia"'; then
  echo "Docker on this host does not list the nvidia runtime" >&2
  exit 1
fi"""
        if require_nvidia
        else ""
    )
    return f"""set -eu
# cloud-init exits 1 (error) or 2 (recoverable error) when a boot stage failed.
if ! cloud-init status --wait >/dev/null; then
  echo "cloud-init reported a failure while preparing the host:" >&2
  cloud-init status --long >&2 || true
  sudo -n tail -n 40 /var/log/cloud-init-output.log >&2 || true
  exit 1
fi
if ! mountpoint -q {mount}; then
  echo "the cache volume is not mounted at {cache_mount}" >&2
  exit 1
fi
docker info >/dev/null{nvidia_check}{owner_check}{prefetch_wait_script(prefetch_state_dir, prefetch_wait_s)}
echo "host ready"
"""


def existing_host_prepare_script(cache_dir: str, require_nvidia: bool, container_user: str) -> str:
    """Creates the cache folders on a server the user already has and checks its Docker engine."""
    dirs = " ".join(shlex.quote(f"{cache_dir}/{sub}") for sub in CACHE_SUBDIRS)
    owner_check = _owner_check(cache_dir, container_user)
    nvidia_check = (
        """
if ! docker info --format '{{json .Runtimes}}' | grep -q '"nvidia"'; then
  echo "Docker on this host has no nvidia runtime: install the NVIDIA container toolkit and run" >&2
  echo "'sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker'" >&2
  exit 1
fi"""
        if require_nvidia
        else ""
    )
    return f"""set -eu
if ! mkdir -p {dirs} 2>/dev/null; then
  echo "cannot create {dirs}: make {shlex.quote(cache_dir)} writable by $(id -un) (hostCacheDir)" >&2
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  echo "$(id -un) cannot reach Docker on this host: add it to the docker group" >&2
  exit 1
fi
chmod 0755 {dirs}{nvidia_check}{owner_check}
echo "host ready"
"""


def write_files_script(directory: str, modes: dict[str, str]) -> str:
    """Writes files whose contents arrive on stdin, one `name base64-content` line each.

    Used for the proxy's config and TLS key: on stdin the key never appears in a command line, and
    each file is replaced atomically with its mode set before it holds anything.
    """
    allowed = " ".join(sorted(modes))
    cases = "\n".join(f"    {name}) mode={mode} ;;" for name, mode in sorted(modes.items()))
    target = shlex.quote(directory)
    return f"""set -eu
umask 077
mkdir -p {target}
while read -r name content; do
  case "$name" in
{cases}
    *) echo "unexpected file $name (expected one of: {allowed})" >&2; exit 1 ;;
  esac
  mkdir -p "$(dirname {target}/"$name")"
  tmp={target}/."$(basename "$name")".new
  : >"$tmp"
  chmod "$mode" "$tmp"
  printf '%s' "$content" | base64 -d >"$tmp"
  mv "$tmp" {target}/"$name"
done
echo "wrote files in {directory}"
"""


def write_files_stdin(files: dict[str, str]) -> str:
    """The stdin `write_files_script` reads."""
    import base64

    return "".join(f"{name} {base64.b64encode(content.encode()).decode()}\n" for name, content in sorted(files.items()))


def readiness_gate_script(gate: ReadinessGate) -> str:
    """Returns 0 once `GET /v1/models` answers 200 with the API key (read from stdin), printing the
    deploy timeline; otherwise exits 1 with the container's state and last log lines."""
    curl_tls = " -k" if gate.insecure_tls else ""
    name = shlex.quote(gate.container)
    return f"""set -u
timeline={shlex.quote(gate.timeline_file)}
IFS= read -r api_key || true
header="Authorization: Bearer $api_key"
{_TIMELINE_REPORT}
record() {{
  # One entry per stage: a re-deploy replaces the previous container's times.
  if [ -w "$(dirname "$timeline")" ]; then
    {{ grep -v "^$1 " "$timeline" 2>/dev/null; printf '%s %s\\n' "$1" "$2"; }} >"$timeline.new" \\
      && mv "$timeline.new" "$timeline"
  fi
}}
fail() {{
  echo "vLLM did not become ready: $1" >&2
  state_format='status={{{{.State.Status}}}} exit={{{{.State.ExitCode}}}} restarts={{{{.RestartCount}}}}'
  echo "--- container {gate.container}: $(docker inspect --format "$state_format" {name} 2>&1)" >&2
  echo "--- last {gate.log_lines} log lines of {gate.container}:" >&2
  docker logs --tail {gate.log_lines} {name} >&2 2>&1 || true
  exit 1
}}
deadline=$(( $(date +%s) + {gate.timeout_s} ))
while :; do
  # The key goes to curl on stdin (-H @-), never on its command line.
  code=$(printf '%s\\n' "$header" | curl -sS{curl_tls} -o /dev/null -w '%{{http_code}}' --max-time 10 -H @- \\
    {shlex.quote(gate.probe_url)} 2>/dev/null) || code=000
  if [ "$code" = 200 ]; then
    started=$(docker inspect --format '{{{{.State.StartedAt}}}}' {name} 2>/dev/null || true)
    if [ -n "$started" ]; then record container_started "$(date -d "$started" +%s.%N)"; fi
    record server_ready "$(date +%s.%N)"
    echo "ready: GET {gate.probe_url} answered 200"
    report_timeline
    exit 0
  fi
  if [ "$code" = 401 ]; then
    fail "the server rejected the API key (401): the container's VLLM_API_KEY is not the stack's apiKey"
  fi
  state=$(docker inspect --format '{{{{.State.Status}}}} {{{{.RestartCount}}}}' {name} 2>/dev/null) \\
    || fail "container {gate.container} does not exist"
  status=${{state% *}}
  restarts=${{state#* }}
  case "$status" in
    exited|dead) fail "the container stopped (status $status)" ;;
  esac
  if [ "$restarts" -ge {gate.max_restarts} ]; then
    fail "the container restarted $restarts times (it exits at start)"
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    fail "no answer from {gate.probe_url} within {gate.timeout_s} s (last HTTP status $code)"
  fi
  sleep {gate.poll_interval_s}
done
"""


def model_check_script(remote_dir: str) -> str:
    """Runs after a fine-tune folder was copied to the host: the files must sit directly in it."""
    target = shlex.quote(remote_dir)
    # SFTP copies a folder either as the target or into it, depending on whether the target existed;
    # accept both and leave the files directly in the target.
    return f"""set -eu
if [ ! -f {target}/config.json ]; then
  inner=$(find {target} -mindepth 2 -maxdepth 2 -name config.json -printf '%h\\n' | head -n 1)
  if [ -z "$inner" ]; then
    echo "upload to {remote_dir} has no config.json" >&2
    exit 1
  fi
  find "$inner" -mindepth 1 -maxdepth 1 -exec mv -t {target} {{}} +
  rmdir "$inner"
fi
chmod -R a+rX,go-w {target}
echo "model ready in {remote_dir}"
"""
