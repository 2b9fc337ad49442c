#!/usr/bin/env bash
# Wakes a stopped endpoint (stopped when idle by idleStopMinutes, or by hand):  scripts/wake.sh <stack>
# Reads the stack's outputs (instance_id, region, endpoint_url, api_key, ca_certificate), starts the instance,
# waits until EC2 says it runs, then asks <endpoint_url>/models with the API key until it answers 200,
# printing the seconds since the start. The cache volume and the Elastic IP stayed while it was stopped:
# nothing is downloaded again, the wait is the boot and vLLM loading the model from the cache volume.
#
# The same by hand, with the AWS CLI (then poll /v1/models yourself):
#   aws ec2 start-instances --region REGION --instance-ids ID && aws ec2 wait instance-running --region REGION --instance-ids ID
#
# Environment: WAKE_TIMEOUT_SECONDS (default 900) bounds the wait for the server; WAKE_POLL_SECONDS (default 5)
# is the time between two requests. Exit codes: 0 serving, 2 usage or outputs missing, 3 EC2 refused to start
# it (a spot instance stopped by an interruption: EC2 alone restarts it), 4 no 200 before the timeout.
# The API key is read from the stack's secrets and only ever written to a 0600 file for curl, never to argv.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 <stack>" >&2; exit 2; }
stack=$1
timeout_s=${WAKE_TIMEOUT_SECONDS:-900}
poll_s=${WAKE_POLL_SECONDS:-5}

say() { echo "[wake] $*"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 700 "$work"

if ! pulumi stack output --stack "$stack" --json --show-secrets >"$work/outputs.json" 2>"$work/pulumi.err"; then
  cat "$work/pulumi.err" >&2
  echo "[wake] cannot read the outputs of stack '$stack' (is it deployed, and is this the project folder?)" >&2
  exit 2
fi

# One output per line: instance_id, region, endpoint_url; the key and the CA go to files, not to variables
# that could reach a command line.
python3 - "$work" <<'PY'
import json, pathlib, sys
work = pathlib.Path(sys.argv[1])
outputs = json.loads((work / "outputs.json").read_text())
def text(name):
    value = outputs.get(name)
    return "" if value is None else str(value)
(work / "fields").write_text("\n".join(text(n) for n in ("instance_id", "region", "endpoint_url")) + "\n")
key = work / "auth-header"
key.touch(mode=0o600)
key.write_text(f"Authorization: Bearer {text('api_key')}\n" if text("api_key") else "")
if text("ca_certificate"):
    (work / "ca.pem").write_text(text("ca_certificate"))
PY
{ read -r instance_id; read -r region; read -r endpoint_url; } <"$work/fields"

if [ -z "$instance_id" ] || [ -z "$endpoint_url" ]; then
  echo "[wake] stack '$stack' has no instance_id or endpoint_url output: only target aws has an instance to wake" >&2
  exit 2
fi
region_args=()
[ -n "$region" ] && region_args=(--region "$region")
models_url="${endpoint_url%/}/models"
curl_args=(-s -o /dev/null -w '%{http_code}' --max-time 10 -H "@$work/auth-header")
[ -f "$work/ca.pem" ] && curl_args+=(--cacert "$work/ca.pem")

SECONDS=0
say "starting $instance_id${region:+ in $region} (the instance is billed from now on)"
if ! aws ec2 start-instances "${region_args[@]}" --instance-ids "$instance_id" >"$work/start.out" 2>"$work/start.err"; then
  cat "$work/start.err" >&2
  if grep -qi "spot" "$work/start.err"; then
    echo "[wake] EC2 refused to start $instance_id: a spot instance stopped by an interruption is started by EC2" \
         "alone, when it has capacity for it again (the spot request stays open until then). See its state with:" \
         "aws ec2 describe-spot-instance-requests ${region_args[*]} --filters Name=instance-id,Values=$instance_id" >&2
  else
    echo "[wake] EC2 refused to start $instance_id (see above)" >&2
  fi
  exit 3
fi
say "waiting until EC2 reports it running (aws ec2 wait instance-running)"
aws ec2 wait instance-running "${region_args[@]}" --instance-ids "$instance_id"
say "${SECONDS} s: instance running; waiting for the server to answer GET $models_url"

while :; do
  code=$(curl "${curl_args[@]}" "$models_url" 2>/dev/null) || true
  case "$code" in
    200)
      say "${SECONDS} s: the endpoint answers: $endpoint_url"
      exit 0 ;;
    000|"") say "${SECONDS} s: no answer yet (booting)" ;;
    *) say "${SECONDS} s: HTTP $code (the server is starting)" ;;
  esac
  if [ "$SECONDS" -ge "$timeout_s" ]; then
    echo "[wake] no 200 from $models_url after ${SECONDS} s (WAKE_TIMEOUT_SECONDS=$timeout_s): the instance runs" \
         "(and is billed), the server is not ready yet. Run this script again to keep waiting, or look at the host" \
         "with the stack's ssh_command output (pulumi stack output ssh_command --stack $stack)" >&2
    exit 4
  fi
  sleep "$poll_s"
done
