#!/usr/bin/env bash
# Prepares an instance for the vLLM endpoint. Run by cloud-init (runcmd) at every boot, as root.
#
# Every path and name comes from the env file BOOT_ENV_FILE names, which infra/render/userdata.py renders
# from infra/catalog/names.py (user-data puts BOOT_ENV_FILE itself as the line above this text):
#   CACHE_VOLUME_ID, CACHE_MOUNT_POINT, CACHE_SUBDIRS, CACHE_WAIT_SECONDS, CACHE_OWNER
#                          - for PREPARE_CACHE_SCRIPT (prepare-cache-volume.sh), which mounts the volume
#   SSH_USER               - added to the docker group (pulumi-docker connects as this user)
#   DOCKER_DATA_ROOT       - empty, or where Docker keeps its images (on the cache volume: they survive
#                            a replacement instance)
#   DEPLOY_TIMELINE_FILE   - where each stage's end time is appended ("stage epoch-seconds")
#   PREFETCH_STATE_DIR, PREFETCH_LOG, HF_PREFETCH_SCRIPT, HF_CLIENT_VENV, HF_CLIENT_PACKAGES, HF_HOME_DIR
#                          and the *_TAG names - see "Prefetch"
#   SUPERVISOR_UNIT_NAME   the systemd unit that starts the containers again after a docker kill
#                          (infra/host/supervise-containers.sh; cloud-init writes the unit file)
#   SPOT_HANDLER_UNIT_NAME the systemd unit that stops the containers cleanly on a spot interruption
#                          notice (infra/host/spot-interruption.sh; cloud-init writes the unit file)
#   METRICS_TAG, CLOUDWATCH_AGENT_SCRIPT
#                          with that instance tag (metrics on), the script installs the CloudWatch agent
#                          and points it at the vLLM container (infra/host/cloudwatch-agent.sh, reading
#                          AGENT_CTL, AGENT_CONFIG_FILE, SCRAPE_CONFIG_FILE, VLLM_LABEL, VLLM_PORT and
#                          AGENT_PACKAGE_URL from this same env file)
# A missing one stops the boot at once, naming it.
#
# `boot.sh` alone is the boot; `boot.sh prefetch` runs only the prefetch start (for tests and by hand);
# `boot.sh prefetch-image-job|prefetch-model-job` are the detached jobs it starts; `boot.sh install-hf-client`
# only installs the Hub client the model job uses.
#
# It exits non-zero (and cloud-init reports an error, which fails the deploy's host check) when the
# cache volume cannot be mounted: the container must never start with its caches on the root disk.
set -euo pipefail

: "${BOOT_ENV_FILE:?is not set: user-data sets it above this text (infra/render/userdata.py)}"
# shellcheck source=/dev/null
. "$BOOT_ENV_FILE"
missing="is missing in $BOOT_ENV_FILE"
: "${CACHE_VOLUME_ID:?$missing}" "${CACHE_MOUNT_POINT:?$missing}" "${CACHE_SUBDIRS:?$missing}" \
  "${CACHE_WAIT_SECONDS:?$missing}" "${CACHE_OWNER:?$missing}" "${SSH_USER:?$missing}" \
  "${PREPARE_CACHE_SCRIPT:?$missing}" "${DOCKER_DATA_ROOT?$missing}" "${DEPLOY_TIMELINE_FILE:?$missing}" \
  "${PREFETCH_STATE_DIR:?$missing}" "${PREFETCH_LOG:?$missing}" "${HF_PREFETCH_SCRIPT:?$missing}" \
  "${HF_CLIENT_VENV:?$missing}" "${HF_CLIENT_PACKAGES:?$missing}" "${HF_HOME_DIR:?$missing}" \
  "${PREFETCH_IMAGE_TAG:?$missing}" "${PREFETCH_MODEL_TAG:?$missing}" \
  "${PREFETCH_REVISION_TAG:?$missing}" "${HF_TOKEN_PARAMETER_TAG:?$missing}" "${SUPERVISOR_UNIT_NAME:?$missing}" \
  "${SPOT_HANDLER_UNIT_NAME:?$missing}" "${METRICS_TAG:?$missing}" "${CLOUDWATCH_AGENT_SCRIPT:?$missing}" \
  "${AGENT_CTL:?$missing}" "${AGENT_CONFIG_FILE:?$missing}" "${SCRAPE_CONFIG_FILE:?$missing}" \
  "${VLLM_LABEL:?$missing}" "${VLLM_PORT:?$missing}" "${AGENT_PACKAGE_URL?$missing}"

timeline() {
  printf '%s %s\n' "$1" "${2:-$(date +%s.%N)}" >>"$DEPLOY_TIMELINE_FILE"
}

# --- Prefetch ---------------------------------------------------------------------------------
# As soon as Docker is up, the image pull and the model download onto the cache volume start at
# once, in the background, so that both are there when the deploy creates the container. What to
# fetch is read from the instance's tags through IMDSv2 (instance_metadata_tags enabled), never from
# user-data: a new image or model changes tags in place and never stops the instance.
#   PREFETCH_IMAGE_TAG      image reference
#   PREFETCH_MODEL_TAG      Hugging Face repo id (absent for uploaded or baked-in models), downloaded
#                           by HF_PREFETCH_SCRIPT into HF_HOME_DIR (the containers' HF_HOME on the volume)
#                           with the Hub client (HF_CLIENT_PACKAGES) the job installs into HF_CLIENT_VENV
#   PREFETCH_REVISION_TAG   its revision (absent: main)
#   HF_TOKEN_PARAMETER_TAG  SSM SecureString parameter holding the HF token (gated models)
# Each job leaves prefetch-<job>.started, .pid and then .done or .failed ("<epoch> <message>") in
# PREFETCH_STATE_DIR, and its output in PREFETCH_LOG; the host readiness check waits for the model's.
# A failed prefetch only costs time: the container then downloads the model (or pulls the image) itself.
self=$(readlink -f -- "${BASH_SOURCE[0]}")
# Tests point these at stand-ins; an instance uses the defaults.
imds_url=${VLLM_ENDPOINT_IMDS_URL:-http://169.254.169.254}
retry_delay=${PREFETCH_RETRY_DELAY:-10}
state_dir=$PREFETCH_STATE_DIR
prefetch_log=$PREFETCH_LOG
imds_token=""

# An IMDSv2 session token, kept for the next calls (call it outside a subshell for that).
imds_session() {
  [[ -n $imds_token ]] || imds_token=$(curl -sS -f --max-time 5 --retry 3 -X PUT \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 3600' "$imds_url/latest/api/token")
}

# Prints the instance metadata at $1 (below /latest/). Status 1: absent (404); 2: IMDS failed.
imds_get() {
  local reply code
  imds_session || return 2
  # The session token goes to curl on stdin (-H @-), not on its command line.
  reply=$(printf 'X-aws-ec2-metadata-token: %s\n' "$imds_token" \
    | curl -sS --max-time 5 --retry 3 -H @- -w '\n%{http_code}' "$imds_url/latest/$1") || return 2
  code=${reply##*$'\n'}
  case $code in
    200) printf '%s\n' "${reply%$'\n'*}" ;;
    404) return 1 ;;
    *) echo "vllm-endpoint: IMDS answered $code for $1" >&2; return 2 ;;
  esac
}

# Prints the value of instance tag $1, or nothing when the tag is absent.
instance_tag() {
  local rc=0
  imds_get "meta-data/tags/instance/$1" || rc=$?
  [[ $rc -le 1 ]]
}

# Writes the job's result marker: $1 job, $2 done|failed, $3 message.
finish() {
  local marker="$state_dir/prefetch-$1.$2"
  printf '%s %s\n' "$(date +%s.%N)" "$3" >"$marker.tmp"
  mv -f -- "$marker.tmp" "$marker"
  echo "vllm-endpoint prefetch-$1: $2: $3"
}

start_job() {
  local job=$1 kv name
  shift
  # The job reads BOOT_ENV_FILE again itself (it is this script, env file path included).
  local pass=("VLLM_ENDPOINT_IMDS_URL=$imds_url" "PREFETCH_RETRY_DELAY=$retry_delay" "$@")
  # Where tests point the jobs at stand-ins (a Hub, a Docker engine); unset on an instance.
  for name in HF_ENDPOINT DOCKER_HOST HF_CLIENT_WHEELHOUSE; do
    if [[ -n ${!name:-} ]]; then pass+=("$name=${!name}"); fi
  done
  date +%s.%N >"$state_dir/prefetch-$job.started"
  if [[ -d /run/systemd/system ]] && command -v systemd-run >/dev/null; then
    # A unit of its own: cloud-init's unit ends (and systemd would stop its leftovers) long before a
    # multi-GB download does.
    local setenv=()
    for kv in "${pass[@]}"; do setenv+=("--setenv=$kv"); done
    systemd-run --quiet --collect --unit "vllm-endpoint-prefetch-$job-$(date +%s)" "${setenv[@]}" \
      -- "$self" "prefetch-$job-job"
  else
    env "${pass[@]}" setsid "$self" "prefetch-$job-job" </dev/null >>"$prefetch_log" 2>&1 &
    disown
  fi
}

start_prefetch() {
  local image model revision token_parameter
  mkdir -p -- "$state_dir"
  rm -f -- "$state_dir"/prefetch-image.* "$state_dir"/prefetch-model.*
  if ! imds_session || ! image=$(instance_tag "$PREFETCH_IMAGE_TAG") || ! model=$(instance_tag "$PREFETCH_MODEL_TAG") \
    || ! revision=$(instance_tag "$PREFETCH_REVISION_TAG") \
    || ! token_parameter=$(instance_tag "$HF_TOKEN_PARAMETER_TAG"); then
    echo "vllm-endpoint: cannot read the instance's tags (IMDS); nothing is prefetched" >&2
    return 0
  fi
  if [[ -n $image ]]; then
    start_job image "PREFETCH_IMAGE=$image"
  fi
  if [[ -n $model ]]; then
    start_job model "PREFETCH_MODEL=$model" "PREFETCH_REVISION=$revision" "HF_TOKEN_PARAMETER=$token_parameter"
  fi
}

prefetch_image_job() {
  local attempt
  echo $$ >"$state_dir/prefetch-image.pid"
  for attempt in 1 2 3; do
    # Present already (a kept Docker data root, a re-run): no registry round trip.
    if docker image inspect "$PREFETCH_IMAGE" >/dev/null 2>&1; then
      timeline image_present
      finish image "done" "$PREFETCH_IMAGE is present"
      return 0
    fi
    # pulumi-docker's own pull of the same reference joins this one in the daemon.
    if docker pull --quiet "$PREFETCH_IMAGE"; then
      timeline image_present
      finish image "done" "pulled $PREFETCH_IMAGE"
      return 0
    fi
    sleep $((attempt * retry_delay))
  done
  finish image failed "docker pull $PREFETCH_IMAGE failed 3 times (see $prefetch_log)"
}

# Prints the HF token kept in SSM parameter $1 (captured by the caller; never an argument).
read_hf_token() {
  local region attempt
  command -v aws >/dev/null || { echo "the AWS CLI is not installed" >&2; return 1; }
  region=$(imds_get meta-data/placement/region) || return 1
  for attempt in 1 2 3 4 5; do
    # The instance profile's credentials can lag the first seconds of the first boot.
    if AWS_DEFAULT_REGION=$region aws ssm get-parameter --name "$1" --with-decryption \
      --query Parameter.Value --output text; then
      return 0
    fi
    sleep $((attempt * retry_delay))
  done
  return 1
}

# Installs the Hub client (HF_CLIENT_PACKAGES) into the venv HF_CLIENT_VENV, unless the venv already holds
# exactly these pins (a later boot, a re-run). From PyPI; from the wheels in HF_CLIENT_WHEELHOUSE instead when
# that is set (a host without a registry: the tests). pip's own lines go to the log the host check reads.
install_hf_client() {
  mkdir -p -- "$(dirname -- "$HF_CLIENT_VENV")"
  # One install at a time; the lock file sits beside the venv, which an install replaces whole.
  ( flock 9 && install_hf_client_locked ) 9>"$HF_CLIENT_VENV.lock"
}

install_hf_client_locked() {
  local venv=$HF_CLIENT_VENV python pip_source=() packages t0=$SECONDS
  read -ra packages <<<"$HF_CLIENT_PACKAGES"
  if [[ -x $venv/bin/python && "$(cat -- "$venv/.packages" 2>/dev/null)" == "$HF_CLIENT_PACKAGES" ]]; then
    return 0
  fi
  echo "hf-prefetch: installing the Hub client ($HF_CLIENT_PACKAGES) into $venv"
  # The distribution's own interpreter (cloud-init runs on it), not one an AMI puts first on PATH.
  python=/usr/bin/python3
  [[ -x $python ]] || python=$(command -v python3) || { echo "python3 is not installed" >&2; return 1; }
  rm -rf -- "$venv"
  if ! "$python" -m venv "$venv"; then
    # Ubuntu leaves `venv`'s pip bootstrap to the python3-venv package.
    echo "hf-prefetch: installing python3-venv"
    rm -rf -- "$venv"
    apt-get -q update || return 1
    DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 install -y --no-install-recommends \
      python3-venv || return 1
    "$python" -m venv "$venv" || return 1
  fi
  if [[ -n ${HF_CLIENT_WHEELHOUSE:-} ]]; then pip_source=(--no-index --find-links "$HF_CLIENT_WHEELHOUSE"); fi
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --progress-bar off \
    "${pip_source[@]}" "${packages[@]}" || return 1
  printf '%s' "$HF_CLIENT_PACKAGES" >"$venv/.packages"
  echo "hf-prefetch: the Hub client is ready after $((SECONDS - t0)) s"
}

prefetch_model_job() {
  echo $$ >"$state_dir/prefetch-model.pid"
  local owner=${CACHE_OWNER%%:*} hf_home=$HF_HOME_DIR
  local errors="$state_dir/prefetch-model.err" python=$HF_CLIENT_VENV/bin/python token="" rc=0
  local args=(--repo "$PREFETCH_MODEL" --hf-home "$hf_home")
  if [[ -n ${PREFETCH_REVISION:-} ]]; then args+=(--revision "$PREFETCH_REVISION"); fi
  if ! install_hf_client; then
    finish model failed "cannot install the Hub client ($HF_CLIENT_PACKAGES) into $HF_CLIENT_VENV (see $prefetch_log)"
    return 0
  fi
  install -d -m 0755 -- "$hf_home"
  chown -- "$CACHE_OWNER" "$hf_home"
  local run=(runuser -u "$owner" -- env "DEPLOY_TIMELINE_FILE=$DEPLOY_TIMELINE_FILE")
  # Only a stand-in Hub is passed on; the prefetcher knows the real one.
  if [[ -n ${HF_ENDPOINT:-} ]]; then run+=("HF_ENDPOINT=$HF_ENDPOINT"); fi
  run+=("$python" "$HF_PREFETCH_SCRIPT" "${args[@]}")
  if [[ -n ${HF_TOKEN_PARAMETER:-} ]]; then
    if ! token=$(read_hf_token "$HF_TOKEN_PARAMETER"); then
      finish model failed "cannot read the Hugging Face token from SSM parameter $HF_TOKEN_PARAMETER"
      return 0
    fi
    # The token travels in a pipe: never in a file, an argument or the environment.
    printf '%s\n' "$token" | "${run[@]}" --token-file - 2>"$errors" || rc=$?
    token=""
  else
    "${run[@]}" </dev/null 2>"$errors" || rc=$?
  fi
  cat -- "$errors"
  if [[ $rc -eq 0 ]]; then
    finish model "done" "$PREFETCH_MODEL is in $hf_home"
  else
    local reason
    reason=$(grep -m1 'error:' "$errors" || tail -n 1 "$errors")
    finish model failed "${reason:-hf-prefetch exited with status $rc}"
  fi
  rm -f -- "$errors"
}

case ${1:-} in
  "") ;;
  prefetch) start_prefetch; exit 0 ;;
  prefetch-image-job) exec >>"$prefetch_log" 2>&1; prefetch_image_job; exit 0 ;;
  prefetch-model-job) exec >>"$prefetch_log" 2>&1; prefetch_model_job; exit 0 ;;
  install-hf-client) install_hf_client; exit ;;
  *) echo "usage: $0 [prefetch|install-hf-client]" >&2; exit 2 ;;
esac

# A fresh timeline per boot: the gate reports this boot's stages, not an older one's. The SSH user
# owns the folder because the readiness gate (which runs as that user) adds the last stages.
mkdir -p "$(dirname "$DEPLOY_TIMELINE_FILE")"
: >"$DEPLOY_TIMELINE_FILE"
chown "$SSH_USER" "$(dirname "$DEPLOY_TIMELINE_FILE")" "$DEPLOY_TIMELINE_FILE"
read -r uptime_s _ </proc/uptime
timeline instance_booted "$(awk -v now="$(date +%s.%N)" -v up="$uptime_s" 'BEGIN { printf "%.3f", now - up }')"

"$PREPARE_CACHE_SCRIPT"

if ! command -v nvidia-ctk >/dev/null 2>&1; then
  echo "vllm-endpoint: nvidia-ctk not found: this AMI lacks the NVIDIA container toolkit" >&2
  exit 1
fi
# Registers the "nvidia" runtime with Docker (the container selects GPUs through it).
nvidia-ctk runtime configure --runtime=docker
if [ -n "$DOCKER_DATA_ROOT" ]; then
  mkdir -p "$DOCKER_DATA_ROOT"
  python3 - "$DOCKER_DATA_ROOT" <<'PY'
import json, pathlib, sys
path = pathlib.Path("/etc/docker/daemon.json")
config = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
config["data-root"] = sys.argv[1]
path.write_text(json.dumps(config, indent=2) + "\n")
PY
fi
usermod -aG docker "$SSH_USER"
# At later boots Docker must start its containers only once the cache volume is mounted (the fstab
# entry is `nofail`, so systemd would not wait for it on its own): without this ordering a container
# whose bind source is missing would fail to start and stay down.
if command -v systemd-escape >/dev/null 2>&1; then
  mount_unit=$(systemd-escape --path --suffix=mount "$CACHE_MOUNT_POINT")
  mkdir -p /etc/systemd/system/docker.service.d
  printf '[Unit]\nAfter=%s\nWants=%s\n' "$mount_unit" "$mount_unit" \
    >/etc/systemd/system/docker.service.d/10-vllm-endpoint-cache.conf
  systemctl daemon-reload
fi
systemctl restart docker

for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && break
  sleep 1
done
if ! docker info --format '{{json .Runtimes}}' | grep -q '"nvidia"'; then
  echo "vllm-endpoint: Docker does not list the nvidia runtime after configuration" >&2
  exit 1
fi
timeline docker_ready
# Docker restarts a crashed container itself (policy `always`); this brings back one stopped through
# Docker's API (docker kill/stop), which Docker leaves down until its next restart.
systemctl daemon-reload
systemctl enable --now "$SUPERVISOR_UNIT_NAME" ||
  echo "vllm-endpoint: $SUPERVISOR_UNIT_NAME did not start: a docker kill will leave a container down" >&2
# Runs on on-demand instances too (IMDS answers 404 there): a later switch to spot needs no new boot files.
systemctl enable --now "$SPOT_HANDLER_UNIT_NAME" ||
  echo "vllm-endpoint: $SPOT_HANDLER_UNIT_NAME did not start: a spot interruption will not stop the containers first" >&2

# Never fails the boot: without a prefetch the container fetches what it needs itself.
start_prefetch || echo "vllm-endpoint: the prefetch did not start" >&2
# Metrics on: the CloudWatch agent, in a unit of its own (journalctl -u 'vllm-endpoint-cloudwatch-agent-*').
if metrics=$(instance_tag "$METRICS_TAG") && [[ -n $metrics ]]; then
  systemd-run --quiet --collect --unit "vllm-endpoint-cloudwatch-agent-$(date +%s)" \
    "--setenv=BOOT_ENV_FILE=$BOOT_ENV_FILE" -- "$CLOUDWATCH_AGENT_SCRIPT" boot ||
    echo "vllm-endpoint: the CloudWatch agent's setup did not start: no metrics" >&2
fi
