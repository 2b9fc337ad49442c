"""The recorded spot prices (data/ebs-prices.yaml, `spot_prices`): each one dated, sourced, for a catalog
instance type, and below that type's on-demand price where the catalog has one for the region."""

from __future__ import annotations

import datetime

import pytest

from vllm_endpoint.infra.catalog.gpus import INSTANCE_TYPES
from vllm_endpoint.infra.catalog.prices import SPOT_PRICES, spot_price


def test_there_are_recorded_spot_prices_for_the_default_instance() -> None:
    assert spot_price("g5.xlarge", "us-east-1") is not None
    assert spot_price("g5.xlarge", "ap-south-1") is None


@pytest.mark.parametrize("key", sorted(SPOT_PRICES), ids="/".join)
def test_each_spot_price_is_dated_sourced_and_below_on_demand(key: tuple[str, str]) -> None:
    entry = SPOT_PRICES[key]
    assert entry.instance in INSTANCE_TYPES
    assert datetime.date(2026, 1, 1) <= entry.checked <= datetime.date.today()
    assert entry.where.strip()
    assert entry.low <= entry.typical <= entry.high
    on_demand = INSTANCE_TYPES[entry.instance].prices_usd_per_hour.get(entry.region)
    if on_demand is not None:
        assert entry.high < on_demand
