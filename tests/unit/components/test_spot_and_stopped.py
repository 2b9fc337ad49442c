"""Spot capacity and a stopped instance, under mocks: the instance's market options are what `capacity` asks,
and a `pulumi up` on a stopped endpoint stops before any resource is declared, saying what to run.

The stack's instance as EC2 has it comes from `aws.ec2.get_instances` (components/_instance_state.py); the
mocks answer it from `Mocks.instances` (tests/unit/pulumi_mocks.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.unit.components.test_components import AWS, EXISTING, deploy
from tests.unit.pulumi_mocks import Mocks
from vllm_endpoint.components._instance_state import EndpointStoppedError
from vllm_endpoint.infra.catalog.names import ENDPOINT_TAG, STACK_TAG

INSTANCE = "aws:ec2/instance:Instance"
GET_INSTANCES = "aws:ec2/getInstances:getInstances"


def test_spot_is_a_persistent_request_that_stops_on_interruption(tmp_path: Path) -> None:
    spot = deploy({**AWS, "capacity": "spot"}, tmp_path)
    options = spot.mocks.one(INSTANCE).inputs["instanceMarketOptions"]
    assert options == {"marketType": "spot",
                       "spotOptions": {"spotInstanceType": "persistent", "instanceInterruptionBehavior": "stop"}}
    # No maximum price: EC2 caps a spot price at the on-demand price.
    assert "maxPrice" not in options["spotOptions"]
    # EC2 cannot change a spot instance's type: a new type is a new instance.
    assert spot.options["vllm-host-instance"].replace_on_changes == ["instanceType"]
    # The root volume is EBS (a stopped spot instance keeps it) and the cache volume stays attached.
    root = spot.mocks.one(INSTANCE).inputs["rootBlockDevice"]
    assert root["volumeType"] == "gp3" and root["deleteOnTermination"] is True


def test_on_demand_has_no_market_options(tmp_path: Path) -> None:
    on_demand = deploy(AWS, tmp_path)
    assert "instanceMarketOptions" not in on_demand.mocks.one(INSTANCE).inputs
    assert not on_demand.options["vllm-host-instance"].replace_on_changes


def test_the_plan_shows_spot_and_idle_stop_prices(tmp_path: Path) -> None:
    summary = deploy({**AWS, "capacity": "spot", "idleStopMinutes": "60"}, tmp_path).values["plan_summary"]
    assert "spot prices change hourly" in summary
    assert "spot saves: the instance at $0.436/h instead of $1.006/h" in summary
    assert "idleStopMinutes 60 saves, assuming busy 8 h a day on 5 days a week" in summary


def test_the_stacks_instance_is_looked_up_by_its_tags(tmp_path: Path) -> None:
    deployed = deploy(AWS, tmp_path)
    calls = [args for token, args in deployed.mocks.calls if token == GET_INSTANCES]
    assert calls and all(c["instanceTags"] == {STACK_TAG: "stack", ENDPOINT_TAG: "vllm"} for c in calls)
    assert calls[0]["instanceStateNames"] == ["stopping", "stopped"]


def test_an_existing_host_asks_ec2_nothing(tmp_path: Path) -> None:
    deployed = deploy(EXISTING, tmp_path)
    assert not [token for token, _ in deployed.mocks.calls if token == GET_INSTANCES]


@pytest.mark.parametrize("state", ["stopped", "stopping"])
def test_a_stopped_instance_stops_the_update_before_any_resource(
        state: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Mocks, "default_instances", (("i-0123456789abcdef0", state, "spot"),))
    with pytest.raises(EndpointStoppedError) as info:
        deploy({**AWS, "capacity": "spot"}, tmp_path)
    message = str(info.value)
    assert "the endpoint's instance i-0123456789abcdef0 is stopped" in message
    assert "Run `scripts/wake.sh stack` first" in message and "then `pulumi up` again" in message
    assert "the GPU bill would start unasked" in message


def test_a_running_instance_is_updated_as_usual(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Mocks, "default_instances", (("i-0123456789abcdef0", "running", ""),))
    deployed = deploy(AWS, tmp_path)
    assert deployed.mocks.one(INSTANCE)


def test_a_spot_instance_left_with_capacity_on_demand_is_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(Mocks, "default_instances", (("i-0fedcba9876543210", "running", "spot"),))
    with caplog.at_level(logging.WARNING):
        deploy(AWS, tmp_path)
    assert "i-0fedcba9876543210 is a spot instance" in caplog.text
    assert "hashicorp/terraform-provider-aws#38141" in caplog.text and "pulumi up --replace" in caplog.text
