#!/usr/bin/env bash
# Takes an EBS snapshot of a running endpoint's warm cache volume (model files, vLLM's compile cache, and with
# the fleet setting cacheImages Docker's image store with the pulled vLLM image), for a
# fleet's new instances to start their cache volume from (stack setting cacheSnapshotId):
#   scripts/snapshot-cache.sh [--endpoint NAME] <stack>
#
# Which volume: a single endpoint's stack exports cache_volume_id. A fleet's exports cluster_name and no volume
# (each instance has its own, made by the launch template): the script asks EC2 for the in-use volumes the
# launch template tagged with the stack and the endpoint, attached as the cache device, and takes the one
# attached longest (the replica most likely to have loaded and compiled everything). The endpoint is the stack's
# setting endpointName (`pulumi config get`), the program's default when unset, or --endpoint NAME.
#
# Why a snapshot of a volume in use is fine here: EBS snapshots an attached volume crash-consistently (the
# blocks as written at that moment, like a power cut; ext4's journal makes it mountable). The caches are written
# once and only read afterwards: the model files once per model and revision, vLLM's compile cache once per
# model and flags. Take it while the endpoint is idle, after it has answered at least once (the compile cache is
# complete then), and no download or first start is in progress: nothing is written then. The snapshot serves
# any stack with the same model; its compile cache only the same vLLM image and flags (others recompile). With
# cacheImages, Docker's store is written when an image is pulled or a container starts or stops: its layers are
# only read once pulled, and its metadata databases (bolt) survive a power cut by design.
#
# It refuses an unencrypted volume: the launch template takes the snapshot's encryption as it is, and every EBS
# volume of the project is encrypted. Before it creates anything it prints the volume's size and what the
# snapshot's storage costs at most (infra/catalog/data/ebs-prices.yaml, `ebs_snapshots`).
#
# The same by hand, with the AWS CLI:
#   aws ec2 create-snapshot --region REGION --volume-id VOL --description '...' && \
#     aws ec2 wait snapshot-completed --region REGION --snapshot-ids SNAP
#
# Environment: SNAPSHOT_TIMEOUT_SECONDS (default 3600) bounds the wait for the snapshot; SNAPSHOT_POLL_SECONDS
# (default 15) is the time between two looks at its progress. Exit codes: 0 completed, 2 usage, outputs or
# volume problems (none found, not encrypted), 3 AWS refused or failed (a call, or the snapshot in state error),
# 4 not completed before the timeout (it goes on in AWS).
set -euo pipefail
usage="usage: $0 [--endpoint NAME] <stack>"
stack=""
endpoint=""
while [ $# -gt 0 ]; do
  case "$1" in
    --endpoint) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; endpoint=$2; shift 2 ;;
    --endpoint=*) endpoint=${1#--endpoint=}; shift ;;
    -h|--help) echo "$usage"; exit 0 ;;
    -*) echo "$usage" >&2; exit 2 ;;
    *) [ -z "$stack" ] || { echo "$usage" >&2; exit 2; }; stack=$1; shift ;;
  esac
done
[ -n "$stack" ] || { echo "$usage" >&2; exit 2; }
timeout_s=${SNAPSHOT_TIMEOUT_SECONDS:-3600}
poll_s=${SNAPSHOT_POLL_SECONDS:-15}

say() { echo "[snapshot] $*"; }
fail() { local code=$1; shift; echo "[snapshot] $*" >&2; exit "$code"; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py="$root/.venv/bin/python"
[ -x "$py" ] || fail 2 "$py is missing: run scripts/setup.sh deploy first (the script reads the project's tag names there)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The tag keys, the cache device, the default endpoint name and the snapshot price, from where the program keeps
# them (a renamed tag is then renamed here too). From the project folder: the package is importable there.
if ! (cd "$root" && "$py" - >"$work/facts" 2>"$work/facts.err") <<'PY'
from vllm_endpoint.infra.catalog.names import (DEFAULT_ENDPOINT_NAME, ENDPOINT_TAG, PROJECT, ROLE_TAG, STACK_TAG,
                                               WARM_CACHE_ROLE)
from vllm_endpoint.infra.catalog.prices import EBS_SNAPSHOTS
from vllm_endpoint.infra.render.ecs_host import ECS_CACHE_DEVICE
print(STACK_TAG, ENDPOINT_TAG, ROLE_TAG, WARM_CACHE_ROLE, PROJECT, DEFAULT_ENDPOINT_NAME, ECS_CACHE_DEVICE,
      EBS_SNAPSHOTS.snapshot_gb_month, EBS_SNAPSHOTS.checked, sep="\n")
PY
then
  cat "$work/facts.err" >&2
  fail 2 "cannot read the project's tag names with $py (run scripts/setup.sh deploy)"
fi
{ read -r stack_tag; read -r endpoint_tag; read -r role_tag; read -r snapshot_role; read -r project; read -r default_endpoint
  read -r cache_device; read -r price_gb_month; read -r price_checked; } <"$work/facts"

# JSON in (a file), plain lines out: what the steps below read from pulumi's and the AWS CLI's answers.
json() { "$py" -c "$1" "${@:2}"; }

if ! pulumi stack output --stack "$stack" --json >"$work/outputs.json" 2>"$work/pulumi.err"; then
  cat "$work/pulumi.err" >&2
  fail 2 "cannot read the outputs of stack '$stack' (is it deployed, and is this the project folder?)"
fi
json '
import json, sys
outputs = json.load(open(sys.argv[1]))
for name in ("cache_volume_id", "region", "cluster_name", "service_name", "model"):
    value = outputs.get(name)
    print("" if value is None else value)
' "$work/outputs.json" >"$work/fields"
{ read -r cache_volume_id; read -r region; read -r cluster_name; read -r service_name; read -r model; } <"$work/fields"

if [ -z "$endpoint" ]; then
  # Unset in the stack's config, pulumi exits non-zero: the program's default name applies then.
  endpoint=$(pulumi config get endpointName --stack "$stack" 2>/dev/null) || endpoint=""
  [ -n "$endpoint" ] || endpoint=$default_endpoint
fi
region_args=()
[ -n "$region" ] && region_args=(--region "$region")

# aws ... with its stderr kept for the message; exit 3 when AWS refuses.
aws_json() {
  local out=$1; shift
  if ! aws "$@" --output json >"$out" 2>"$work/aws.err"; then
    cat "$work/aws.err" >&2
    fail 3 "AWS refused: aws $* (see above)"
  fi
}

if [ -n "$cache_volume_id" ]; then
  kind=single
  say "stack '$stack' is a single endpoint: its cache volume is $cache_volume_id (output cache_volume_id)"
  aws_json "$work/volumes.json" ec2 describe-volumes "${region_args[@]}" --volume-ids "$cache_volume_id"
elif [ -n "$cluster_name" ]; then
  kind=fleet
  say "stack '$stack' is a fleet (cluster $cluster_name): looking for an in-use cache volume ($cache_device)" \
      "of its instances, tagged $stack_tag=$stack and $endpoint_tag=$endpoint"
  aws_json "$work/volumes.json" ec2 describe-volumes "${region_args[@]}" --filters \
    "Name=tag:$stack_tag,Values=$stack" "Name=tag:$endpoint_tag,Values=$endpoint" \
    "Name=attachment.device,Values=$cache_device" "Name=status,Values=in-use"
else
  fail 2 "stack '$stack' has neither a cache_volume_id output (a single endpoint on AWS) nor a cluster_name" \
         "(a fleet): only target aws has a cache volume to snapshot"
fi

# The volume attached longest first: on a fleet, the replica that has served longest has the most complete cache.
json '
import json, sys
volumes = json.load(open(sys.argv[1])).get("Volumes", [])
def attached(volume):
    return min((a.get("AttachTime", "") for a in volume.get("Attachments", [])), default="")
volumes.sort(key=attached)
v = volumes[0] if volumes else {}
instances = ",".join(a.get("InstanceId", "") for a in v.get("Attachments", []))
for value in (len(volumes), v.get("VolumeId", ""), v.get("Size", ""), "true" if v.get("Encrypted") else "false",
              v.get("State", ""), v.get("VolumeType", ""), v.get("AvailabilityZone", ""), instances or "no instance"):
    print(value)
' "$work/volumes.json" >"$work/volume"
{ read -r found; read -r volume_id; read -r size_gib; read -r encrypted; read -r state; read -r volume_type
  read -r zone; read -r instances; } <"$work/volume"

if [ "$found" -eq 0 ]; then
  if [ "$kind" = fleet ]; then
    fail 2 "no in-use volume tagged $stack_tag=$stack and $endpoint_tag=$endpoint attached as $cache_device: is a" \
           "replica running (ECS service ${service_name:-?} in cluster $cluster_name)," \
           "and is the endpoint's name '$endpoint' (stack setting endpointName; --endpoint NAME)?"
  fi
  fail 2 "EC2 describes no volume $cache_volume_id${region:+ in $region}"
fi
[ "$kind" = fleet ] && say "found $found; taking the one attached longest: $volume_id"
say "volume $volume_id: $size_gib GiB $volume_type, $state on $instances, $zone, encrypted: $encrypted"
if [ "$encrypted" != true ]; then
  fail 2 "$volume_id is not encrypted: a fleet's launch template takes a snapshot's encryption as it is, so new" \
         "cache volumes would be unencrypted, and every EBS volume of this project is encrypted. Not snapshotting it."
fi

# An upper bound: the standard tier stores only written blocks (a volume's first snapshot all of those, later
# snapshots of it only the blocks changed since).
cost=$(awk -v size="$size_gib" -v price="$price_gb_month" 'BEGIN { printf "%.2f", size * price }')
say "cost: EBS snapshot storage, standard tier, \$$price_gb_month per GB-month (us-east-1 list price read" \
    "$price_checked; other regions differ): at most $size_gib GiB x \$$price_gb_month = \$$cost a month until" \
    "deleted; only the blocks the caches fill are stored, so it is usually less"

description="$project warm cache of stack $stack, endpoint $endpoint${model:+, model $model}, from $volume_id"
description=${description:0:255}  # CreateSnapshot's limit
tags=$(json '
import json, sys
keys = dict(zip(sys.argv[1::2], sys.argv[2::2]))
print(json.dumps([{"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in keys.items()]}]))
' "$stack_tag" "$stack" "$endpoint_tag" "$endpoint" "$role_tag" "$snapshot_role" Name "$stack-$endpoint-$snapshot_role")

# cacheSnapshotId is a fleet setting: a single endpoint's snapshot serves a fleet stack of the same model.
target=$stack
[ "$kind" = fleet ] || target="<fleet stack>"

SECONDS=0
aws_json "$work/create.json" ec2 create-snapshot "${region_args[@]}" --volume-id "$volume_id" \
  --description "$description" --tag-specifications "$tags"
snapshot_id=$(json 'import json, sys; print(json.load(open(sys.argv[1])).get("SnapshotId", ""))' "$work/create.json")
[ -n "$snapshot_id" ] || fail 3 "aws ec2 create-snapshot answered without a SnapshotId: $(cat "$work/create.json")"
say "creating $snapshot_id from $volume_id (billed from now on, until deleted); waiting until it is completed"

while :; do
  aws_json "$work/snapshot.json" ec2 describe-snapshots "${region_args[@]}" --snapshot-ids "$snapshot_id"
  json '
import json, sys
snapshot = (json.load(open(sys.argv[1])).get("Snapshots") or [{}])[0]
print(snapshot.get("State", ""), snapshot.get("Progress", "") or "0%", snapshot.get("StateMessage", ""), sep="\n")
' "$work/snapshot.json" >"$work/progress"
  { read -r snapshot_state; read -r progress; read -r state_message; } <"$work/progress"
  say "${SECONDS} s: $snapshot_id ${snapshot_state:-unknown}, $progress"
  case "$snapshot_state" in
    completed) break ;;
    error) fail 3 "EC2 reports $snapshot_id failed${state_message:+: $state_message}; delete it with" \
                  "aws ec2 delete-snapshot ${region_args[*]} --snapshot-id $snapshot_id, and run this again" ;;
  esac
  if [ "$SECONDS" -ge "$timeout_s" ]; then
    fail 4 "$snapshot_id is not completed after ${SECONDS} s (SNAPSHOT_TIMEOUT_SECONDS=$timeout_s): it goes on in" \
           "AWS. Watch it with aws ec2 describe-snapshots ${region_args[*]} --snapshot-ids $snapshot_id, and once it" \
           "is completed: pulumi config set cacheSnapshotId $snapshot_id --stack $target"
  fi
  sleep "$poll_s"
done

if [ "$kind" = fleet ]; then
  say "done in ${SECONDS} s. Next, to have the fleet's new instances start their cache volume from it (running" \
      "ones keep theirs):"
else
  say "done in ${SECONDS} s. Next, on the fleet stack that serves the same model (cacheSnapshotId is a fleet" \
      "setting; stack '$stack' is a single endpoint):"
fi
echo "  pulumi config set cacheSnapshotId $snapshot_id --stack $target"
echo "  pulumi up --stack $target"
say "the fleet's cacheVolumeSizeGb must be at least $size_gib (the snapshot's size)."
say "the snapshot is outside the stack (pulumi destroy keeps it) and is billed until deleted. To delete it, once no" \
    "stack's cacheSnapshotId names it (pulumi config rm cacheSnapshotId, then pulumi up):"
echo "  aws ec2 delete-snapshot ${region_args[*]:+${region_args[*]} }--snapshot-id $snapshot_id"
