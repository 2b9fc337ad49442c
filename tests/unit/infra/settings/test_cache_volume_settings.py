"""cacheVolumeId and protectCacheVolume: the messages a user sees for settings that cannot go together."""

from __future__ import annotations

import pytest

from vllm_endpoint.infra.settings.models import ConfigError, load_stack_config

AWS = {"sshAllowedCidrs": "93.184.215.14/32", "apiAllowedCidrs": "93.184.216.0/24"}
VOLUME = "vol-0123456789abcdef0"


def problems(**raw: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_stack_config({**AWS, **raw})
    return info.value.problems


def test_defaults_retain_without_protecting() -> None:
    cfg = load_stack_config(AWS)
    assert (cfg.aws.cache_volume_id, cfg.aws.protect_cache_volume) == (None, False)
    assert load_stack_config({**AWS, "protectCacheVolume": "true"}).aws.protect_cache_volume is True


@pytest.mark.parametrize("volume_id", [VOLUME, "vol-01234567"])
def test_volume_ids_in_both_aws_formats(volume_id: str) -> None:
    assert load_stack_config({**AWS, "cacheVolumeId": volume_id}).aws.cache_volume_id == volume_id


@pytest.mark.parametrize("bad", ["vol-XYZ", "0123456789abcdef0", "snap-0123456789abcdef0", "vol-0123456789ABCDEF0"])
def test_a_malformed_volume_id_is_refused(bad: str) -> None:
    assert any(p.startswith("cacheVolumeId:") and "is not an EBS volume id (e.g. vol-0123456789abcdef0)" in p
               for p in problems(cacheVolumeId=bad))


def test_the_adopted_volume_decides_zone_size_and_speed() -> None:
    found = problems(cacheVolumeId=VOLUME, availabilityZone="us-east-1b", cacheVolumeSizeGb="200",
                     cacheVolumeThroughput="250", protectCacheVolume="true")
    assert found == [
        f"availabilityZone: the adopted cache volume {VOLUME} decides the zone; unset availabilityZone",
        f"cacheVolumeSizeGb, cacheVolumeThroughput: the adopted cache volume {VOLUME} keeps its own size and "
        f"speed; unset them, or change the volume itself (`aws ec2 modify-volume --volume-id {VOLUME} --size ...`)",
        f"protectCacheVolume: the adopted cache volume {VOLUME} is not part of the stack, so no deploy can "
        "delete it; unset protectCacheVolume",
    ]


def test_a_subnet_may_go_with_an_adopted_volume() -> None:
    # Its zone is checked against the volume's when the stack is deployed (tests/unit/components).
    cfg = load_stack_config({**AWS, "cacheVolumeId": VOLUME, "subnetId": "subnet-0123456789abcdef0"})
    assert cfg.aws.subnet_id == "subnet-0123456789abcdef0"
