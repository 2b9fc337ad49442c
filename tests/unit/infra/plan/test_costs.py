"""The plan's cost arithmetic against figures worked out by hand from data/ebs-prices.yaml."""

from __future__ import annotations

import pytest

from vllm_endpoint.infra.catalog.gpus import hourly_price, lookup_instance_type
from vllm_endpoint.infra.catalog.prices import REGIONS, prices_for
from vllm_endpoint.infra.plan.costs import VolumeSpec, estimate_costs, volume_usd_per_month
from vllm_endpoint.infra.plan.deployment import build_plan
from vllm_endpoint.infra.settings.models import load_stack_config

AWS = {"sshAllowedCidrs": "93.184.215.14/32", "apiAllowedCidrs": "93.184.216.0/24"}
US_EAST_1, EU_WEST_1 = REGIONS["us-east-1"], REGIONS["eu-west-1"]


@pytest.mark.parametrize(("volume", "region", "usd"), [
    # 100 GB x $0.08; 3,000 IOPS are free; (400 - 125) MiB/s x $0.04 = $11
    (VolumeSpec("gp3", 100, 3000, 400), US_EAST_1, 19.00),
    # 1,000 x $0.088 + (6,000 - 3,000) x $0.0055 + (500 - 125) x $0.044 = 88 + 16.5 + 16.5
    (VolumeSpec("gp3", 1000, 6000, 500), EU_WEST_1, 121.00),
    # a gp3 volume without IOPS/throughput is at the free baseline: storage only
    (VolumeSpec("gp3", 100), US_EAST_1, 8.00),
    # 100 x $0.125 + 5,000 x $0.065
    (VolumeSpec("io1", 100, 5000), US_EAST_1, 337.50),
    # io2 tiers: 32,000 x $0.065 + 32,000 x $0.0455 + 6,000 x $0.032 = 2,080 + 1,456 + 192, + 100 x $0.125
    (VolumeSpec("io2", 100, 70000), US_EAST_1, 3740.50),
    # 500 x $0.138 + 32,000 x $0.072 + 8,000 x $0.0504 = 69 + 2,304 + 403.2
    (VolumeSpec("io2", 500, 40000), EU_WEST_1, 2776.20),
])
def test_volume_cost_by_hand(volume: VolumeSpec, region: object, usd: float) -> None:
    assert volume_usd_per_month(volume, region) == pytest.approx(usd)  # type: ignore[arg-type]


def test_default_dev_stack_costs_in_us_east_1() -> None:
    """g5.xlarge with the default cache (gp3 100 GiB, 400 MiB/s: the instance's EBS limit) and root (gp3 100 GiB)."""
    p = build_plan(load_stack_config(AWS), hub_fetcher=None, region="us-east-1")
    assert p.costs is not None
    hourly, _ = hourly_price("g5.xlarge", "us-east-1")
    assert hourly is not None
    by_what = {line.what.split(" (")[0].split(",")[0]: line.usd_per_month for line in p.costs.lines}
    assert by_what == pytest.approx({
        "instance g5.xlarge": hourly * 730,
        "cache volume gp3 100 GiB": 19.00,
        "root volume gp3 100 GiB": 8.00,
        "Elastic IP": 0.005 * 730,  # $3.65
        # metrics (on by default): 20 custom metrics x $0.30 + a dashboard $3 + 5 alarms (4 + recovery) x $0.10
        "CloudWatch": 20 * 0.30 + 3.00 + 5 * 0.10,  # $9.50
    })
    assert p.costs.usd_per_month == pytest.approx(hourly * 730 + 19 + 8 + 3.65 + 9.50)
    assert p.costs.retained is not None and p.costs.retained.usd_per_month == pytest.approx(19.00)
    text = p.summary
    assert "cost in us-east-1, on demand, 730 h a month" in text
    assert "cache volume gp3 100 GiB, 3,000 IOPS, 400 MiB/s: $19.00/month" in text
    assert "Elastic IP (public IPv4, $0.005/h): $3.65/month" in text
    assert "after `pulumi destroy`: the cache volume stays and costs $19.00/month until you delete it" in text
    assert "EBS and IPv4 prices of 2026-12-01" in text


def test_io2_cache_in_eu_west_1_with_a_bigger_root() -> None:
    p = build_plan(load_stack_config({**AWS, "cacheVolumeType": "io2", "cacheVolumeIops": "40000",
                                      "cacheVolumeSizeGb": "500", "rootVolumeSizeGb": "200"}),
                   hub_fetcher=None, region="eu-west-1")
    assert p.costs is not None
    hourly, where = hourly_price("g5.xlarge", "eu-west-1")
    assert hourly is not None
    # 2,776.20 (io2, above) + 200 x $0.088 + $3.65 + CloudWatch $9.50 (us-east-1's prices)
    assert p.costs.usd_per_month == pytest.approx(hourly * 730 + 2776.20 + 17.60 + 3.65 + 9.50)
    assert p.costs.ebs_region == "eu-west-1"
    assert "cost in eu-west-1" in p.summary
    if where != "eu-west-1":
        assert f"the instance price is {where}'s (the catalog has no g5.xlarge price for eu-west-1)" in p.summary


def test_a_region_without_prices_says_whose_are_shown() -> None:
    chosen = prices_for("ap-south-1")
    assert (chosen.prices.name, chosen.exact) == ("us-east-1", False)
    p = build_plan(load_stack_config(AWS), hub_fetcher=None, region="ap-south-1")
    assert "no EBS/IPv4 prices for ap-south-1 in the catalog: shown with us-east-1's" in p.summary
    unset = build_plan(load_stack_config(AWS), hub_fetcher=None)
    assert "cost in us-east-1 (aws:region is not set)" in unset.summary


def test_an_adopted_volume_is_not_counted_and_stays_after_destroy() -> None:
    p = build_plan(load_stack_config({**AWS, "cacheVolumeId": "vol-0123456789abcdef0"}), hub_fetcher=None,
                   region="us-east-1")
    assert p.costs is not None and p.costs.retained is None
    assert [line.what.split(" ")[0] for line in p.costs.lines] == ["instance", "root", "Elastic", "CloudWatch"]
    assert "cache volume vol-0123456789abcdef0: adopted, billed as before (not counted here)" in p.summary
    assert "the adopted cache volume vol-0123456789abcdef0 stays" in p.summary


def test_without_metrics_cloudwatch_is_not_counted() -> None:
    p = build_plan(load_stack_config({**AWS, "metrics": "false"}), hub_fetcher=None, region="us-east-1")
    assert p.costs is not None and not any(line.what.startswith("CloudWatch") for line in p.costs.lines)
    assert "CloudWatch" not in p.summary


def test_existing_hosts_have_no_aws_costs() -> None:
    p = build_plan(load_stack_config({"target": "existing-host", "hostAddress": "10.0.0.5", "hostSshUser": "u",
                                      "hostPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm5xk0pJl1ZkZ4bH2v0b3dJ"
                                                       "q5s0aQy7Ff2k0Vd7J8yO",
                                      "sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"
                                                       "-----END OPENSSH PRIVATE KEY-----\n"}),
                   hub_fetcher=None, region="us-east-1")
    assert p.costs is None and "cost in" not in p.summary


def test_an_unpriced_volume_type_is_an_error() -> None:
    with pytest.raises(ValueError, match="no prices for EBS volume type 'st1'"):
        estimate_costs(lookup_instance_type("g5.xlarge"), VolumeSpec("st1", 100), VolumeSpec("gp3", 100), None)
