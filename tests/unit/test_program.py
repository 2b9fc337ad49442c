"""`__main__.py` itself, under mocks, with the shipped stack files: it builds the stack, and a bad
config stops it before any resource is declared, listing every problem."""

from __future__ import annotations

import json
import logging
import runpy
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from tests.unit.components.test_service_lb import LbMocks
from tests.unit.pulumi_mocks import Mocks
from vllm_endpoint.infra.plan import local_machine
from vllm_endpoint.infra.plan.local_machine import LocalMachine

ROOT = Path(__file__).resolve().parents[2]
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n"
# What the dev stack file asks the user to set before the first deploy (their own public address).
USER_ADDRESSES = {"vllm-endpoint:sshAllowedCidrs": "93.184.215.14/32",
                  "vllm-endpoint:apiAllowedCidrs": "93.184.215.14/32"}


def stack_config(stack: str) -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"])


def run_program(config: dict[str, Any], secret_keys: list[str], home: Path,
                monkeypatch: pytest.MonkeyPatch, mocks: Mocks | None = None) -> Mocks:
    mocks = mocks or Mocks()
    pulumi.runtime.set_mocks(mocks, project="vllm-endpoint", stack="dev", preview=False)
    # Pulumi hands structured values (lists, maps) to the program as JSON text.
    flat = {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    pulumi.runtime.set_all_config(flat, secret_keys)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(ROOT)

    @pulumi.runtime.test
    def run() -> None:
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")

    run()
    return mocks


def test_the_dev_stack_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mocks = run_program({**stack_config("dev"), **USER_ADDRESSES}, [], tmp_path, monkeypatch)
    assert mocks.one("aws:ec2/instance:Instance").inputs["instanceType"] == "g5.xlarge"
    assert mocks.one("aws:ec2/instance:Instance").inputs["tags"]["environment"] == "dev"
    assert {r.inputs["name"] for r in mocks.of_type("docker:index/container:Container")} == {"vllm", "vllm-proxy"}
    # The docker connection's key material is written under the user's home, per project, stack and endpoint.
    assert (tmp_path / ".ssh" / "vllm-endpoint" / "vllm-endpoint-dev" / "vllm" / "known_hosts").exists()


def test_the_shared_gpu_stack_builds_without_aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = {**stack_config("shared-gpu"), "vllm-endpoint:sshPrivateKey": KEY}
    mocks = run_program(config, ["vllm-endpoint:sshPrivateKey"], tmp_path, monkeypatch)
    assert not [r for r in mocks.resources if r.typ.startswith("aws:")]
    vllm = next(r for r in mocks.of_type("docker:index/container:Container") if r.inputs["name"] == "vllm")
    assert "NVIDIA_VISIBLE_DEVICES=1" in vllm.inputs["envs"]
    command = vllm.inputs["command"]
    assert command[command.index("--gpu-memory-utilization") + 1] == "0.7"
    assert command[command.index("--max-num-seqs") + 1] == "16"


def test_the_shipped_local_stack_builds_as_shipped_with_nothing_to_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The README's first command: no account, no address, no key to set; a machine without a GPU.
    monkeypatch.setattr(local_machine, "probe_local_machine",
                        lambda: LocalMachine(str(tmp_path), "1000:1000", (), "no nvidia-smi on this machine"))
    mocks = run_program(stack_config("local"), [], tmp_path, monkeypatch)
    assert not [r for r in mocks.resources if r.typ.startswith(("aws:", "command:remote:"))]
    images = {r.inputs["name"] for r in mocks.of_type("docker:index/remoteImage:RemoteImage")}
    assert "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.32.0" in images
    proxy = next(r for r in mocks.of_type("docker:index/container:Container") if r.inputs["name"] == "vllm-proxy")
    assert proxy.inputs["ports"] == [{"internal": 8080, "external": 30005, "ip": "127.0.0.1"}]
    prepare = next(r for r in mocks.of_type("command:local:Command") if r.name.endswith("-prepare-host"))
    assert f"{tmp_path}/.cache/vllm-endpoint/vllm/root-cache" in prepare.inputs["create"]


def test_bad_config_stops_before_any_resource(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    key = "plaintext-key-" + "x" * 30
    config = {**stack_config("dev"), **USER_ADDRESSES, "vllm-endpoint:maxNumSeqs": "0", "vllm-endpoint:apiKey": key}
    mocks = Mocks()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as info:
        run_program(config, [], tmp_path, monkeypatch, mocks)
    assert info.value.code == 1
    assert mocks.resources == [] and mocks.calls == []
    assert "maxNumSeqs: Input should be greater than or equal to 1 (got 0)" in caplog.text
    assert "apiKey: is stored in plaintext" in caplog.text and key not in caplog.text


def test_the_shipped_dev_stack_asks_for_the_users_own_addresses_before_any_resource(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # As shipped it must not deploy: a GPU instance nobody may reach would cost money for nothing.
    mocks = Mocks()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit):
        run_program(stack_config("dev"), [], tmp_path, monkeypatch, mocks)
    assert mocks.resources == [] and mocks.calls == []
    assert ("sshAllowedCidrs: required on AWS: the deploying machine connects over SSH; set its address: "
            '`pulumi config set sshAllowedCidrs "$(curl -s https://checkip.amazonaws.com)/32"`') in caplog.text
    assert "apiAllowedCidrs: required on AWS" in caplog.text


def test_the_fleet_stack_builds_a_service_behind_the_load_balancer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = {**stack_config("fleet"), "vllm-endpoint:apiAllowedCidrs": "93.184.215.14/32"}
    mocks = run_program(config, [], tmp_path, monkeypatch, LbMocks())
    assert not mocks.of_type("aws:ec2/instance:Instance") and not mocks.of_type("docker:index/container:Container")
    assert mocks.one("aws:ecs/service:Service").inputs["desiredCount"] == 2
    target = mocks.one("aws:appautoscaling/target:Target").inputs
    assert (target["minCapacity"], target["maxCapacity"]) == (2, 4)
    assert mocks.one("aws:ec2/launchTemplate:LaunchTemplate").inputs["tagSpecifications"][0]["tags"][
        "environment"] == "fleet"


def test_the_shipped_fleet_stack_asks_for_the_apps_networks_before_any_resource(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    mocks = Mocks()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit):
        run_program(stack_config("fleet"), [], tmp_path, monkeypatch, mocks)
    assert mocks.resources == [] and mocks.calls == []
    assert "apiAllowedCidrs: required for a fleet" in caplog.text and "sshAllowedCidrs" not in caplog.text
