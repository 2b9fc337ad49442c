"""Teardown that keeps the data and says so: what `pulumi destroy` deletes, what it keeps, and a new
stack adopting the kept cache volume by id (under Pulumi mocks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.components.test_components import AWS, Deployed, deploy
from tests.unit.pulumi_mocks import MOCK_MISSING_VOLUME
from vllm_endpoint.infra.render.userdata import decode_user_data
from vllm_endpoint.infra.settings.models import ConfigError

VOLUME = "aws:ebs/volume:Volume"
ATTACHMENT = "aws:ec2/volumeAttachment:VolumeAttachment"
INSTANCE = "aws:ec2/instance:Instance"
# The mock's existing volumes: in the zone their id's last letter names; 150 GiB gp3, 4,000 IOPS, 250 MiB/s.
ADOPTED_IN_C = "vol-0123456789abcdefc"
ADOPTED_IN_B = "vol-0123456789abcdefb"


def test_destroy_keeps_only_the_cache_volume_and_is_not_blocked(tmp_path: Path) -> None:
    deployed = deploy(AWS, tmp_path)
    volume = deployed.mocks.one(VOLUME)
    options = deployed.options[volume.name]
    # retain_on_delete keeps it in AWS; no protect, which would make Pulumi refuse the whole destroy.
    assert (options.retain_on_delete, bool(options.protect)) == (True, False)
    # Policy packs cannot see retain_on_delete: the tag states it (policy cache-volume-protected).
    assert volume.inputs["tags"]["vllm-endpoint:on-destroy"] == "retain"
    # Everything else is deleted by destroy: nothing else retained or protected.
    kept = sorted(name for name, opts in deployed.options.items()
                  if (opts.retain_on_delete or opts.protect) and name != volume.name)
    assert kept == []
    # The attachment really detaches (the volume is `available` for the next stack), stopping the instance
    # first so the detach never hangs on a mounted volume.
    attachment = deployed.mocks.one(ATTACHMENT).inputs
    assert attachment["stopInstanceBeforeDetaching"] is True
    assert attachment["skipDestroy"] is False


def test_retained_on_destroy_says_which_volume_what_it_costs_and_how_to_delete_or_adopt_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    deployed = deploy(AWS, tmp_path)
    retained = _retained(deployed)
    assert retained == {
        "volume_id": "vol-0123456789abcdef0",
        "availability_zone": "us-east-1a",
        "volume": "gp3 100 GiB, 3,000 IOPS, 400 MiB/s",
        # 100 x $0.088 + (400 - 125) x $0.044 (eu-west-1)
        "usd_per_month": 20.9,
        "prices": "eu-west-1 prices of 2026-12-01",
        "why": "retained: destroy removes it from the stack and keeps it in AWS with its models and compile cache",
        "delete": "aws ec2 delete-volume --region eu-west-1 --volume-id vol-0123456789abcdef0",
        "adopt": "pulumi config set cacheVolumeId vol-0123456789abcdef0",
    }
    assert "cost in eu-west-1" in deployed.values["plan_summary"]
    assert "the cache volume stays and costs $20.90/month" in deployed.values["plan_summary"]


def test_protection_is_an_opt_in(tmp_path: Path) -> None:
    deployed = deploy({**AWS, "protectCacheVolume": "true"}, tmp_path)
    options = deployed.options[deployed.mocks.one(VOLUME).name]
    assert (options.protect, options.retain_on_delete) == (True, True)
    assert "`pulumi destroy` is refused" in str(_retained(deployed)["why"])


def test_a_new_stack_adopts_the_kept_volume_by_id(tmp_path: Path) -> None:
    deployed = deploy({**AWS, "cacheVolumeId": ADOPTED_IN_C}, tmp_path)
    assert deployed.mocks.of_type(VOLUME) == [], "no new volume"
    assert deployed.mocks.one(ATTACHMENT).inputs["volumeId"] == ADOPTED_IN_C
    # The instance lands in the volume's zone (us-east-1c), not the first default zone.
    instance = deployed.mocks.one(INSTANCE).inputs
    assert instance["subnetId"] == "subnet-0" + "c" * 16
    # The boot script mounts that volume (found by its id).
    assert ADOPTED_IN_C in decode_user_data(instance["userDataBase64"])
    assert deployed.values["cache_volume_id"] == ADOPTED_IN_C
    retained = _retained(deployed)
    assert retained["volume_id"] == ADOPTED_IN_C and retained["availability_zone"] == "us-east-1c"
    # 150 x $0.08 + (4,000 - 3,000) x $0.005 + (250 - 125) x $0.04 = 12 + 5 + 5
    assert retained["usd_per_month"] == 22.0
    assert str(retained["why"]).startswith("adopted by cacheVolumeId")
    assert f"cache volume {ADOPTED_IN_C}: adopted" in deployed.values["plan_summary"]


def test_an_adopted_volume_and_a_subnet_must_share_a_zone(tmp_path: Path) -> None:
    # The mock's subnets are in us-east-1b.
    with pytest.raises(ConfigError) as info:
        deploy({**AWS, "cacheVolumeId": ADOPTED_IN_C, "subnetId": "subnet-0123456789abcdef0"}, tmp_path)
    assert info.value.problems == [
        f"subnetId: the subnet is in us-east-1b, but the cache volume {ADOPTED_IN_C} (cacheVolumeId) is in "
        "us-east-1c; choose a subnet in us-east-1c, or unset subnetId"
    ]
    same_zone = deploy({**AWS, "cacheVolumeId": ADOPTED_IN_B, "subnetId": "subnet-0123456789abcdef0"}, tmp_path)
    assert same_zone.mocks.one(INSTANCE).inputs["subnetId"] == "subnet-0123456789abcdef0"


def test_a_volume_aws_does_not_know_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        deploy({**AWS, "cacheVolumeId": MOCK_MISSING_VOLUME}, tmp_path)
    assert info.value.problems[0].startswith(f"cacheVolumeId: {MOCK_MISSING_VOLUME} cannot be read in this region: ")
    assert "returned no results" in info.value.problems[0]


def _retained(deployed: Deployed) -> dict[str, object]:
    values: dict[str, object] = {}

    async def read() -> None:
        assert deployed.endpoint.host is not None
        values.update(await deployed.endpoint.host.retained_on_destroy.future() or {})

    import asyncio

    asyncio.get_event_loop().run_until_complete(read())
    return values
