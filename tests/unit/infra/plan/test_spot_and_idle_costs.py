"""What spot and stopping when idle save, against figures worked out by hand from the catalog's prices, and
the arithmetic's properties over any setting (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vllm_endpoint.infra.catalog.gpus import lookup_instance_type
from vllm_endpoint.infra.catalog.prices import HOURS_PER_MONTH, spot_price
from vllm_endpoint.infra.plan.costs import (
    EXAMPLE_IDLE_STOP_MINUTES,
    USAGE,
    UsagePattern,
    VolumeSpec,
    estimate_costs,
    month_usd,
    running_hours_per_month,
)
from vllm_endpoint.infra.plan.deployment import build_plan
from vllm_endpoint.infra.settings.models import load_stack_config

AWS = {"sshAllowedCidrs": "93.184.215.14/32", "apiAllowedCidrs": "93.184.216.0/24"}
G5 = lookup_instance_type("g5.xlarge")
ROOT, CACHE = VolumeSpec("gp3", 100), VolumeSpec("gp3", 100, 3000, 400)
minutes = st.integers(min_value=15, max_value=10080)  # idleStopMinutes' range


def test_the_usage_assumption_is_stated_once() -> None:
    assert UsagePattern(busy_hours_per_day=8, busy_days_per_week=5) == USAGE
    assert USAGE.describe() == "busy 8 h a day on 5 days a week"


def test_idle_stop_hours_by_hand() -> None:
    # (8 h + 1 h of idle before the alarm) x 5 days x 730/168 weeks
    assert running_hours_per_month(60) == pytest.approx(9 * 5 * 730 / 168)  # 195.5 h
    assert running_hours_per_month(None) == HOURS_PER_MONTH
    # a day of idle minutes or more: the instance never stops on busy days, only the weekend is saved
    assert running_hours_per_month(24 * 60) == pytest.approx(24 * 5 * 730 / 168)


@given(minutes, minutes)
def test_more_idle_minutes_never_cost_less(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert running_hours_per_month(low) <= running_hours_per_month(high) <= HOURS_PER_MONTH


@given(st.floats(min_value=0, max_value=24), st.integers(min_value=0, max_value=7), st.one_of(st.none(), minutes))
def test_running_hours_stay_within_the_month(busy: float, days: int, idle: int | None) -> None:
    hours = running_hours_per_month(idle, UsagePattern(busy, days))
    assert 0 <= hours <= HOURS_PER_MONTH
    if idle is None:
        assert hours == HOURS_PER_MONTH


@given(st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=730),
       st.floats(min_value=0, max_value=1e4))
def test_a_month_is_the_running_hours_plus_what_stays(hourly: float, hours: float, fixed: float) -> None:
    assert month_usd(hourly, hours, fixed) == pytest.approx(hourly * hours + fixed)
    assert month_usd(hourly, hours, fixed) <= month_usd(hourly, HOURS_PER_MONTH, fixed) + 1e-9


def test_spot_and_idle_stop_by_hand_in_us_east_1() -> None:
    costs = estimate_costs(G5, CACHE, ROOT, "us-east-1", capacity="spot", idle_stop_minutes=60)
    spot = spot_price("g5.xlarge", "us-east-1")
    assert spot is not None and spot.typical == pytest.approx(0.436)  # median of the five zones
    # volumes $19 + $8 and the address $3.65 stay all month; the instance runs 195.5 h at $0.436
    assert costs.fixed_usd_per_month == pytest.approx(19 + 8 + 3.65)
    assert costs.expected_usd_per_month == pytest.approx(0.436 * 9 * 5 * 730 / 168 + 30.65)
    text = "\n".join(costs.describe())
    assert "spot price of g5.xlarge in us-east-1: $0.425-$0.451/h across 5 zones, typical $0.436/h" in text
    assert "read 2026-12-02 from skypilot-catalog" in text and "spot prices change hourly" in text
    assert f"spot saves: the instance at $0.436/h instead of $1.006/h, ${(1.006 - 0.436) * 730:,.2f}/month" in text
    assert ("idleStopMinutes 60 saves, assuming busy 8 h a day on 5 days a week: the instance runs about 196 "
            "of 730 h") in text
    assert "an Elastic IP on a stopped instance is an idle public IPv4 address, $0.005/h" in text
    assert f"expected with these settings: ${costs.expected_usd_per_month:,.2f}/month" in text
    assert "check that the persistent spot request was cancelled" in costs.after_destroy()
    assert "spot request" not in estimate_costs(G5, CACHE, ROOT, "us-east-1").after_destroy()


def test_on_demand_without_idle_stop_shows_what_each_would_save() -> None:
    text = "\n".join(estimate_costs(G5, CACHE, ROOT, "us-east-1").describe())
    assert "spot would save (capacity: spot)" in text
    assert f"idleStopMinutes {EXAMPLE_IDLE_STOP_MINUTES} (not set: an example) would save" in text
    # 730 - 195.5 h at $1.006
    assert f"${1.006 * (730 - 9 * 5 * 730 / 168):,.2f}/month less" in text
    assert "expected with these settings" not in text


def test_no_recorded_spot_price_is_said_not_guessed() -> None:
    costs = estimate_costs(G5, CACHE, ROOT, "ap-south-1", capacity="spot")
    assert costs.spot is None and costs.expected_usd_per_month == pytest.approx(costs.usd_per_month)
    text = "\n".join(costs.describe())
    assert "spot: no recorded spot price for g5.xlarge in ap-south-1" in text
    assert "the saving of capacity spot is not counted" in text


def test_the_plan_passes_the_settings_to_the_costs() -> None:
    p = build_plan(load_stack_config({**AWS, "capacity": "spot", "idleStopMinutes": "120"}), hub_fetcher=None,
                   region="us-east-1")
    assert p.costs is not None and (p.costs.capacity, p.costs.idle_stop_minutes) == ("spot", 120)
    assert "idleStopMinutes 120 saves" in p.summary
