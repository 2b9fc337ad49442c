"""A fleet's alarms and dashboard (infra/render/fleet_monitoring.py): what each alarm reads and when CloudWatch's
rules (alarms.evaluate_alarm) put it in ALARM, and that the dashboard shows only metrics that exist: the ones
the sidecars publish, AWS's load balancer and Container Insights metrics with the dimensions they carry."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vllm_endpoint.infra.render.alarms import (
    PERIOD_S,
    PROXY_5XX_PER_MINUTE,
    WAITING,
    AlarmSpec,
    Sample,
    endpoint_alarms,
    evaluate_alarm,
)
from vllm_endpoint.infra.render.cloudwatch_agent import STACK_DIMENSION, agent_metrics
from vllm_endpoint.infra.render.fleet_monitoring import (
    ALB_NAMESPACE,
    CONTAINER_INSIGHTS_NAMESPACE,
    LOAD_BALANCER_DIMENSION,
    SHARED_ALARMS,
    TARGET_GROUP_DIMENSION,
    FleetDashboardInputs,
    fleet_alarms,
    render_fleet_dashboard,
)

NS, STACK = "VllmEndpoint", "fleet"
ALARMS = {a.key: a for a in fleet_alarms(NS, STACK)}
START = 1_800_000_000 - 1_800_000_000 % PERIOD_S  # a period boundary
INPUTS = FleetDashboardInputs(region="us-east-1", namespace=NS, stack=STACK, load_balancer="app/svc/0123456789abcdef",
                              target_group="targetgroup/svc/fedcba9876543210", cluster="svc-cluster",
                              service="svc-service", waiting_per_replica=2.0, min_replicas=2, max_replicas=4,
                              alarm_arns=("arn:aws:cloudwatch:us-east-1:123456789012:alarm:a",))


def per_minute(spec: AlarmSpec, values: list[float | None]) -> list[Sample]:
    """One datapoint a minute from START (None: no datapoint that minute)."""
    return [Sample(START + i * PERIOD_S + 1, spec.metric.metric_name, v) for i, v in enumerate(values) if v is not None]


def state_after(spec: AlarmSpec, values: list[float | None]) -> str:
    return evaluate_alarm(spec, per_minute(spec, values), START + len(values) * PERIOD_S + 1).state


def test_the_fleet_keeps_the_endpoint_alarms_that_mean_the_same_over_replicas() -> None:
    endpoint = {a.key: a for a in endpoint_alarms(NS, STACK)}
    assert set(SHARED_ALARMS) < set(endpoint)
    for key in SHARED_ALARMS:
        assert ALARMS[key] == endpoint[key]
    # Waiting requests are what scales the fleet out: not an alarm of its own.
    assert all(a.metric.metric_name != WAITING for a in ALARMS.values())
    assert set(ALARMS) == {*SHARED_ALARMS, "no-healthy-replica", "replica-5xx", "load-balancer-5xx"}


def test_the_load_balancer_alarms_carry_the_dimensions_aws_publishes_them_with() -> None:
    for key in ("no-healthy-replica", "replica-5xx", "load-balancer-5xx"):
        metric = ALARMS[key].metric
        assert metric.namespace == ALB_NAMESPACE
        names = [d for d, _ in metric.dimensions]
        # HealthyHostCount exists per target group (with its load balancer); the ELB's own 5xx per load balancer.
        expected = [LOAD_BALANCER_DIMENSION] if key == "load-balancer-5xx" else [TARGET_GROUP_DIMENSION,
                                                                                 LOAD_BALANCER_DIMENSION]
        assert names == expected, key
        assert all(value == "" for _, value in metric.dimensions)  # the component fills them in


def test_no_healthy_replica_fires_after_three_minutes_without_one_and_when_the_metric_stops() -> None:
    spec = ALARMS["no-healthy-replica"]
    assert state_after(spec, [2, 1, 1, 1]) == "OK"
    assert state_after(spec, [2, 0, 0]) == "OK"
    assert state_after(spec, [2, 0, 0, 0]) == "ALARM"
    assert state_after(spec, [2, None, None, None]) == "ALARM"  # no datapoint is no load balancer reporting


@pytest.mark.parametrize("key", ["replica-5xx", "load-balancer-5xx"])
def test_5xx_alarms_need_a_sustained_rate_not_a_burst(key: str) -> None:
    spec = ALARMS[key]
    at = float(PROXY_5XX_PER_MINUTE)
    assert state_after(spec, [at, at, at, None, None]) == "ALARM"
    assert state_after(spec, [at, None, at, None, at]) == "ALARM"
    assert state_after(spec, [None, None, 50.0, 50.0, None]) == "OK"  # two minutes
    assert state_after(spec, [at - 1] * 5) == "OK"
    assert state_after(spec, [None] * 5) == "OK"  # no 5xx: no datapoint


def dashboard_metrics() -> list[list[Any]]:
    body = json.loads(render_fleet_dashboard(INPUTS))
    return [m for w in body["widgets"] if w["type"] == "metric" for m in w["properties"]["metrics"]
            if isinstance(m[0], str)]


def test_the_dashboard_reads_only_what_the_sidecars_and_aws_publish() -> None:
    published = {m.name for m in agent_metrics()}
    seen = set()
    for metric in dashboard_metrics():
        namespace, name, *dimensions = metric[:-1]
        pairs = dict(zip(dimensions[::2], dimensions[1::2], strict=True))
        seen.add(namespace)
        if namespace == NS:
            assert name in published and pairs == {STACK_DIMENSION: STACK}
        elif namespace == ALB_NAMESPACE:
            assert pairs[LOAD_BALANCER_DIMENSION] == INPUTS.load_balancer
            assert pairs.get(TARGET_GROUP_DIMENSION, INPUTS.target_group) == INPUTS.target_group
            # The ELB's own 5xx has no target group dimension.
            assert (TARGET_GROUP_DIMENSION in pairs) == (name != "HTTPCode_ELB_5XX_Count")
        else:
            assert namespace == CONTAINER_INSIGHTS_NAMESPACE
            assert pairs == {"ClusterName": INPUTS.cluster, "ServiceName": INPUTS.service}
    assert seen == {NS, ALB_NAMESPACE, CONTAINER_INSIGHTS_NAMESPACE}


def test_the_dashboard_shows_the_scaling_target_the_bounds_and_the_alarms() -> None:
    body = json.loads(render_fleet_dashboard(INPUTS))
    lines = {a["label"]: a["value"] for w in body["widgets"] if w["type"] == "metric"
             for a in w["properties"].get("annotations", {}).get("horizontal", [])}
    assert lines["scaling target"] == 2.0
    assert (lines["minReplicas"], lines["maxReplicas"]) == (2, 4)
    (alarms,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    assert alarms["properties"]["alarms"] == list(INPUTS.alarm_arns)
    # Widgets stay on CloudWatch's 24-unit grid without overlapping.
    cells = set()
    for w in body["widgets"]:
        assert w["x"] + w["width"] <= 24
        for x in range(w["x"], w["x"] + w["width"]):
            for y in range(w["y"], w["y"] + w["height"]):
                assert (x, y) not in cells
                cells.add((x, y))
