"""What `metrics` costs by the month: CloudWatch's custom metrics, dashboard and alarms, and the alarm topic's
KMS key, against figures worked out by hand from the catalog's prices; counted as billed all month."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vllm_endpoint.infra.catalog.gpus import lookup_instance_type
from vllm_endpoint.infra.catalog.prices import CLOUDWATCH
from vllm_endpoint.infra.plan.costs import MonitoringUsage, VolumeSpec, estimate_costs, running_hours_per_month

G5 = lookup_instance_type("g5.xlarge")
ROOT, CACHE = VolumeSpec("gp3", 100), VolumeSpec("gp3", 100, 3000, 400)


def test_the_prices_are_the_us_east_1_list_prices_recorded_with_their_date() -> None:
    assert (CLOUDWATCH.custom_metric_month, CLOUDWATCH.dashboard_month, CLOUDWATCH.alarm_metric_month,
            CLOUDWATCH.kms_key_month, CLOUDWATCH.logs_ingested_gb) == (0.30, 3.00, 0.10, 1.00, 0.50)
    assert str(CLOUDWATCH.checked) == "2026-12-02"


def test_a_monitored_stack_by_hand() -> None:
    # 15 metrics x $0.30 + 1 dashboard x $3 + 5 alarms x $0.10 + 1 key x $1 = $9.00
    line = MonitoringUsage(custom_metrics=15, dashboards=1, alarms=5, kms_keys=1).line()
    assert line.usd_per_month == pytest.approx(4.50 + 3.00 + 0.50 + 1.00)
    assert line.what.startswith("CloudWatch (15 custom metrics, 1 dashboard, 5 alarms, 1 KMS key;")
    assert "$0.50/GB ingested" in line.what


def test_without_a_key_the_line_names_none() -> None:
    assert "KMS" not in MonitoringUsage(custom_metrics=1, dashboards=1, alarms=1, kms_keys=0).line().what


def test_cloudwatch_is_billed_all_month_and_stays_billed_while_stopped() -> None:
    usage = MonitoringUsage(custom_metrics=15, dashboards=1, alarms=5, kms_keys=0)
    plain = estimate_costs(G5, CACHE, ROOT, "us-east-1", idle_stop_minutes=60)
    monitored = estimate_costs(G5, CACHE, ROOT, "us-east-1", idle_stop_minutes=60, monitoring=usage)
    assert monitored.usd_per_month == pytest.approx(plain.usd_per_month + usage.line().usd_per_month)
    assert monitored.fixed_usd_per_month == pytest.approx(plain.fixed_usd_per_month + usage.line().usd_per_month)
    assert monitored.expected_usd_per_month - plain.expected_usd_per_month == pytest.approx(8.0)
    assert any("CloudWatch) stays billed" in line for line in monitored.savings())
    assert not any("CloudWatch" in line for line in plain.savings())
    assert running_hours_per_month(60) < 730  # the instance stops; CloudWatch's line does not


@given(st.integers(0, 200), st.integers(0, 3), st.integers(0, 20), st.integers(0, 2))
def test_the_line_is_the_sum_of_its_parts(metrics: int, dashboards: int, alarms: int, keys: int) -> None:
    cw = CLOUDWATCH
    line = MonitoringUsage(metrics, dashboards, alarms, keys).line()
    assert line.usd_per_month == pytest.approx(metrics * cw.custom_metric_month + dashboards * cw.dashboard_month
                                               + alarms * cw.alarm_metric_month + keys * cw.kms_key_month)
