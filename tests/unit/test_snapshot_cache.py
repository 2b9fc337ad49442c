"""`scripts/snapshot-cache.sh <stack>` against stand-ins: a `pulumi` that prints the stack's outputs (and its
endpointName, when the test sets one), an `aws` that logs its argv and answers EC2's JSON: the volumes, the new
snapshot, then the snapshot's progress, one answer per look.

Checked: which volume it takes (a single endpoint's output; a fleet's by the launch template's tags, the cache
device and in-use), what EC2 is asked (the exact filters, the snapshot's tags), the cost printed before anything
is created, the progress lines with the elapsed seconds, the next steps printed at the end, and the exit codes
(2 an unencrypted or missing volume, 3 AWS refused or the snapshot failed, 4 timeout).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.unit.stand_ins import install_stand_ins
from vllm_endpoint.infra.catalog.names import DEFAULT_ENDPOINT_NAME, ENDPOINT_TAG, ROLE_TAG, STACK_TAG
from vllm_endpoint.infra.catalog.prices import EBS_SNAPSHOTS
from vllm_endpoint.infra.render.ecs_host import ECS_CACHE_DEVICE

ROOT = Path(__file__).resolve().parents[1].parent
SCRIPT = ROOT / "scripts" / "snapshot-cache.sh"
VOLUME = "vol-0123456789abcdef0"
SNAPSHOT = "snap-0fedcba9876543210"

# Each stand-in appends its argv (as JSON) to $SNAP_LOG, so the test sees every argument as the script passed it.
FAKE_PULUMI = f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["SNAP_LOG"], "a") as log:
    log.write(json.dumps(["pulumi", *args]) + "\\n")
if args[:2] == ["stack", "output"]:
    print(open(os.environ["OUTPUTS_FILE"]).read())
elif args[:3] == ["config", "get", "endpointName"] and os.environ.get("ENDPOINT_NAME"):
    print(os.environ["ENDPOINT_NAME"])
else:
    sys.exit("error: configuration key 'endpointName' not found for stack 'dev'")
"""
# describe-snapshots answers the next entry of $SNAPSHOT_STATES ("state:progress,..."), then repeats the last.
# An operation named in $AWS_FAIL fails with EC2's words for it.
FAKE_AWS = f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["SNAP_LOG"], "a") as log:
    log.write(json.dumps(["aws", *args]) + "\\n")
operation = args[1]
if operation == os.environ.get("AWS_FAIL"):
    sys.exit(f"An error occurred (UnauthorizedOperation) when calling the {{operation}} operation: not allowed")
if operation == "describe-volumes":
    print(open(os.environ["VOLUMES_FILE"]).read())
elif operation == "create-snapshot":
    print(json.dumps({{"SnapshotId": "{SNAPSHOT}", "State": "pending", "Progress": ""}}))
elif operation == "describe-snapshots":
    counter = os.environ["SNAP_LOG"] + ".looks"
    looks = int(open(counter).read()) if os.path.exists(counter) else 0
    open(counter, "w").write(str(looks + 1))
    states = os.environ["SNAPSHOT_STATES"].split(",")
    state, progress = states[min(looks, len(states) - 1)].split(":")
    print(json.dumps({{"Snapshots": [{{"SnapshotId": "{SNAPSHOT}", "State": state, "Progress": progress,
                                       "StateMessage": "internal error" if state == "error" else ""}}]}}))
"""

SINGLE: dict[str, object] = {"cache_volume_id": VOLUME, "region": "us-east-1", "instance_id": "i-0aaaaaaaaaaaaaaaa",
          "endpoint_url": "http://203.0.113.10:30005/v1", "api_key": "[secret]", "model": "Qwen/Qwen3-8B"}
FLEET: dict[str, object] = {"cluster_name": "vllm-cluster-1a2b", "service_name": "vllm-svc-3c4d", "region": "eu-west-1",
         "endpoint_url": "http://lb.example/v1", "api_key": "[secret]", "model": "Qwen/Qwen3-8B"}


def _volume(volume_id: str, attached: str, encrypted: bool = True, size: int = 100) -> dict[str, object]:
    return {"VolumeId": volume_id, "Size": size, "Encrypted": encrypted, "State": "in-use", "VolumeType": "gp3",
            "AvailabilityZone": "us-east-1a",
            "Attachments": [{"AttachTime": attached, "Device": ECS_CACHE_DEVICE, "InstanceId": "i-0" + volume_id[-16:],
                             "State": "attached", "VolumeId": volume_id}]}


def _run(tmp_path: Path, outputs: Mapping[str, object], volumes: list[dict[str, object]], *args: str,
         stack: str = "dev", **env: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    bin_dir = install_stand_ins(tmp_path, {"pulumi": FAKE_PULUMI, "aws": FAKE_AWS})
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    (tmp_path / "volumes.json").write_text(json.dumps({"Volumes": volumes}))
    log = tmp_path / "calls.log"
    log.write_text("")
    run_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SNAP_LOG": str(log),
               "OUTPUTS_FILE": str(tmp_path / "outputs.json"), "VOLUMES_FILE": str(tmp_path / "volumes.json"),
               "SNAPSHOT_STATES": "pending:0%,pending:57%,completed:100%", "SNAPSHOT_POLL_SECONDS": "0.1", **env}
    # From elsewhere than the project folder: the script finds the project's venv and package by its own path.
    result = subprocess.run(["bash", str(SCRIPT), *args, stack], env=run_env, capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    return result, [json.loads(line) for line in log.read_text().splitlines()]


def _option(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def _aws(calls: list[list[str]], operation: str) -> list[list[str]]:
    return [call for call in calls if call[:3] == ["aws", "ec2", operation]]


def test_a_single_endpoint_s_cache_volume_is_snapshotted_with_cost_progress_and_next_steps(tmp_path: Path) -> None:
    result, calls = _run(tmp_path, SINGLE, [_volume(VOLUME, "2026-12-01T10:00:00+00:00")])
    assert result.returncode == 0, result.stderr
    # The outputs without secrets; the endpoint's name from its setting, unset here: the program's default.
    assert calls[:2] == [["pulumi", "stack", "output", "--stack", "dev", "--json"],
                         ["pulumi", "config", "get", "endpointName", "--stack", "dev"]]
    assert _aws(calls, "describe-volumes") == [
        ["aws", "ec2", "describe-volumes", "--region", "us-east-1", "--volume-ids", VOLUME, "--output", "json"]]
    [create] = _aws(calls, "create-snapshot")
    assert create[3:7] == ["--region", "us-east-1", "--volume-id", VOLUME]
    assert "Qwen/Qwen3-8B" in _option(create, "--description") and VOLUME in _option(create, "--description")
    [spec] = json.loads(_option(create, "--tag-specifications"))
    assert spec["ResourceType"] == "snapshot"
    assert {t["Key"]: t["Value"] for t in spec["Tags"]} == {
        STACK_TAG: "dev", ENDPOINT_TAG: DEFAULT_ENDPOINT_NAME, ROLE_TAG: "warm-cache",
        "Name": f"dev-{DEFAULT_ENDPOINT_NAME}-warm-cache"}
    assert _aws(calls, "describe-snapshots") == [
        ["aws", "ec2", "describe-snapshots", "--region", "us-east-1", "--snapshot-ids", SNAPSHOT, "--output", "json"]
    ] * 3

    out = result.stdout
    price = EBS_SNAPSHOTS.snapshot_gb_month
    # The cost is said before the snapshot is created.
    cost = f"at most 100 GiB x ${price} = ${100 * price:.2f} a month"
    assert cost in out and out.index(cost) < out.index(f"creating {SNAPSHOT} from {VOLUME}")
    progress = [line for line in out.splitlines() if f"s: {SNAPSHOT} " in line]
    assert [line.split(f"s: {SNAPSHOT} ")[1] for line in progress] == ["pending, 0%", "pending, 57%",
                                                                      "completed, 100%"]
    assert all(line.split(" ")[1].isdigit() for line in progress)
    # A single endpoint cannot take cacheSnapshotId itself: the next steps name the fleet stack to set.
    fleet = "<fleet stack>"
    assert f"  pulumi config set cacheSnapshotId {SNAPSHOT} --stack {fleet}\n  pulumi up --stack {fleet}\n" in out
    assert "cacheVolumeSizeGb must be at least 100" in out
    assert out.endswith(f"  aws ec2 delete-snapshot --region us-east-1 --snapshot-id {SNAPSHOT}\n")


def test_a_fleet_s_volume_is_found_by_its_tags_device_and_state_and_the_one_attached_longest_taken(
        tmp_path: Path) -> None:
    newer, older = "vol-0bbbbbbbbbbbbbbbb", "vol-0cccccccccccccccc"
    result, calls = _run(tmp_path, FLEET, [_volume(newer, "2026-12-02T07:30:00+00:00"),
                                           _volume(older, "2026-12-01T22:05:00+00:00", size=200)],
                         stack="fleet", ENDPOINT_NAME="chat")
    assert result.returncode == 0, result.stderr
    assert ["pulumi", "config", "get", "endpointName", "--stack", "fleet"] in calls
    assert _aws(calls, "describe-volumes") == [[
        "aws", "ec2", "describe-volumes", "--region", "eu-west-1", "--filters",
        f"Name=tag:{STACK_TAG},Values=fleet", f"Name=tag:{ENDPOINT_TAG},Values=chat",
        f"Name=attachment.device,Values={ECS_CACHE_DEVICE}", "Name=status,Values=in-use", "--output", "json"]]
    [create] = _aws(calls, "create-snapshot")
    assert _option(create, "--volume-id") == older
    [spec] = json.loads(_option(create, "--tag-specifications"))
    tags = {t["Key"]: t["Value"] for t in spec["Tags"]}
    assert (tags[STACK_TAG], tags[ENDPOINT_TAG]) == ("fleet", "chat")
    assert f"found 2; taking the one attached longest: {older}" in result.stdout
    assert f"  pulumi config set cacheSnapshotId {SNAPSHOT} --stack fleet\n  pulumi up --stack fleet\n" in result.stdout
    assert "cacheVolumeSizeGb must be at least 200" in result.stdout


def test_the_endpoint_name_can_be_given_instead_of_read(tmp_path: Path) -> None:
    result, calls = _run(tmp_path, FLEET, [_volume(VOLUME, "2026-12-02T07:30:00+00:00")], "--endpoint", "chat")
    assert result.returncode == 0, result.stderr
    assert not any(call[:2] == ["pulumi", "config"] for call in calls)
    assert f"Name=tag:{ENDPOINT_TAG},Values=chat" in _aws(calls, "describe-volumes")[0]


def test_an_unencrypted_volume_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    result, calls = _run(tmp_path, SINGLE, [_volume(VOLUME, "2026-12-01T10:00:00+00:00", encrypted=False)])
    assert result.returncode == 2
    assert f"{VOLUME} is not encrypted" in result.stderr and "every EBS volume" in result.stderr
    assert not _aws(calls, "create-snapshot")


def test_a_fleet_without_a_running_replica_is_told_what_was_looked_for(tmp_path: Path) -> None:
    result, calls = _run(tmp_path, FLEET, [], stack="fleet")
    assert result.returncode == 2
    assert f"no in-use volume tagged {STACK_TAG}=fleet and {ENDPOINT_TAG}={DEFAULT_ENDPOINT_NAME}" in result.stderr
    assert "vllm-svc-3c4d" in result.stderr and not _aws(calls, "create-snapshot")


def test_a_stack_without_a_cache_volume_is_refused(tmp_path: Path) -> None:
    result, calls = _run(tmp_path, {"endpoint_url": "http://127.0.0.1:30005/v1", "region": None}, [])
    assert result.returncode == 2
    assert "only target aws has a cache volume to snapshot" in result.stderr
    assert not any(call[0] == "aws" for call in calls)


def test_progress_is_printed_until_the_timeout_then_exit_4_says_it_goes_on(tmp_path: Path) -> None:
    result, calls = _run(tmp_path, SINGLE, [_volume(VOLUME, "2026-12-01T10:00:00+00:00")],
                         # bash counts SECONDS in whole seconds from a fraction of one: 4 s leaves room for
                         # two polls even on a busy machine.
                         SNAPSHOT_STATES="pending:12%", SNAPSHOT_TIMEOUT_SECONDS="4", SNAPSHOT_POLL_SECONDS="0.2")
    assert result.returncode == 4
    assert f"{SNAPSHOT} pending, 12%" in result.stdout
    assert len(_aws(calls, "describe-snapshots")) >= 2
    assert f"{SNAPSHOT} is not completed after" in result.stderr and "SNAPSHOT_TIMEOUT_SECONDS=4" in result.stderr
    assert f"pulumi config set cacheSnapshotId {SNAPSHOT}" in result.stderr
    assert "pulumi up" not in result.stdout


@pytest.mark.parametrize("operation", ["create-snapshot", "describe-volumes", "describe-snapshots"])
def test_an_aws_refusal_exits_3_with_aws_s_words(tmp_path: Path, operation: str) -> None:
    result, calls = _run(tmp_path, SINGLE, [_volume(VOLUME, "2026-12-01T10:00:00+00:00")], AWS_FAIL=operation)
    assert result.returncode == 3
    assert "UnauthorizedOperation" in result.stderr and f"AWS refused: aws ec2 {operation}" in result.stderr
    assert "pulumi config set" not in result.stdout
    assert _aws(calls, operation)[-1] == calls[-1]  # nothing asked after the refusal


def test_a_snapshot_ec2_reports_failed_exits_3_and_says_how_to_delete_it(tmp_path: Path) -> None:
    result, _ = _run(tmp_path, SINGLE, [_volume(VOLUME, "2026-12-01T10:00:00+00:00")],
                     SNAPSHOT_STATES="pending:30%,error:30%")
    assert result.returncode == 3
    assert f"EC2 reports {SNAPSHOT} failed: internal error" in result.stderr
    assert f"aws ec2 delete-snapshot --region us-east-1 --snapshot-id {SNAPSHOT}" in result.stderr


@pytest.mark.parametrize("args", [[], ["a", "b"], ["--endpoint"], ["--bogus", "dev"]])
def test_bad_usage_exits_2(args: list[str]) -> None:
    result = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stderr.startswith("usage: ")


def test_the_script_is_executable_documented_and_passes_shellcheck() -> None:
    assert os.access(SCRIPT, os.X_OK)
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    assert "crash-consistent" in text and "aws ec2 wait snapshot-completed" in text
    tool = shutil.which("shellcheck")
    if tool is None:
        pytest.skip("shellcheck is not installed (scripts/setup.sh installs it)")
    lint = subprocess.run([tool, "-S", "style", str(SCRIPT)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
