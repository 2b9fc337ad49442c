"""A fleet's CloudWatch alarms and dashboard, as plain data (components/monitoring.py's ServiceMonitoring
creates them).

Two sources. vLLM's own metrics, as each task's CloudWatch agent sidecar publishes them (the single endpoint's
names, one `stack` dimension shared by every replica: CloudWatch aggregates the replicas' samples, so a Sum is
the fleet's total and a Maximum its busiest replica). And what AWS publishes for free about the load balancer
(AWS/ApplicationELB, by its `LoadBalancer` and `TargetGroup` dimensions, whose values are the resources' ARN
suffixes, known once they exist) and about the service (Container Insights, ECS/ContainerInsights).

The alarms:
- `not-ready` and `kv-cache-full`: the single endpoint's (infra/render/alarms.py), over all replicas: no
  replica answers its agent's scrape, or one replica's KV cache stays full.
- `no-healthy-replica`: the target group's HealthyHostCount below 1 for 3 minutes: every request gets 503.
  Missing data is breaching (the load balancer reports it every minute while it exists).
- `replica-5xx`: the load balancer counted at least 5 responses with a 5xx status from the replicas a minute,
  in 3 of 5 minutes (the single endpoint's `proxy-5xx` rule, counted at the load balancer instead of from
  the proxy's access log).
- `load-balancer-5xx`: the same for the 5xx the load balancer answers itself (502, 503, 504: no healthy
  replica, a replica that closed the connection or did not answer within the idle timeout).
The single endpoint's `requests-waiting` is not one of them: waiting requests are what makes the fleet scale
out, and a scale-out takes minutes (an instance, the image, the model); `replicas at maxReplicas with
requests waiting` is on the dashboard instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from vllm_endpoint.infra.render.alarms import (
    KV_CACHE,
    KV_CACHE_FULL_THRESHOLD,
    PERIOD_S,
    PROXY_5XX_MINUTES,
    PROXY_5XX_PER_MINUTE,
    RUNNING,
    SUSTAINED_MINUTES,
    WAITING,
    AlarmSpec,
    MetricInput,
    Statistic,
    endpoint_alarms,
)
from vllm_endpoint.infra.render.cloudwatch_agent import STACK_DIMENSION
from vllm_endpoint.infra.render.dashboard import stack_metric, token_rate_metrics

ALB_NAMESPACE: Final = "AWS/ApplicationELB"
LOAD_BALANCER_DIMENSION: Final = "LoadBalancer"  # the load balancer's ARN suffix, app/<name>/<id>
TARGET_GROUP_DIMENSION: Final = "TargetGroup"  # the target group's ARN suffix, targetgroup/<name>/<id>
CONTAINER_INSIGHTS_NAMESPACE: Final = "ECS/ContainerInsights"
# The endpoint alarms that mean the same over a fleet's replicas.
SHARED_ALARMS: Final = ("not-ready", "kv-cache-full")
NO_HEALTHY_MINUTES: Final = 3
_WIDTH: Final = 24
_HALF: Final = _WIDTH // 2
_HEIGHT: Final = 6
_TEXT_HEIGHT: Final = 4


def _alb(metric: str, statistic: Statistic, *dimensions: str) -> MetricInput:
    """A load balancer metric; its dimensions' values are filled in by the component (empty here)."""
    return MetricInput(metric, statistic, ALB_NAMESPACE, tuple((d, "") for d in dimensions))


_SPAN: Final = f"in {PROXY_5XX_MINUTES} of {SUSTAINED_MINUTES} minutes"


def _five_xx(key: str, what: str, metric: MetricInput) -> AlarmSpec:
    """The single endpoint's proxy-5xx rule (PROXY_5XX_PER_MINUTE says why), counted at the load balancer. A
    minute without a 5xx has no datapoint: missing data is not breaching."""
    return AlarmSpec(key=key, description=f"At least {PROXY_5XX_PER_MINUTE} {what}", metric=metric,
                     period_s=PERIOD_S, evaluation_periods=SUSTAINED_MINUTES, datapoints_to_alarm=PROXY_5XX_MINUTES,
                     comparison="GreaterThanOrEqualToThreshold", threshold=PROXY_5XX_PER_MINUTE,
                     treat_missing_data="notBreaching")


def fleet_alarms(namespace: str, stack: str) -> tuple[AlarmSpec, ...]:
    """The fleet's alarms. The load balancer's dimensions have empty values: the component gives each its
    resource's ARN suffix (`alb_dimensions` says which)."""
    shared = tuple(a for a in endpoint_alarms(namespace, stack) if a.key in SHARED_ALARMS)
    alarms = (*shared,
              AlarmSpec(
                  key="no-healthy-replica",
                  description=(f"No replica passed the load balancer's health checks for {NO_HEALTHY_MINUTES} "
                               "minutes: every request gets 503 (replicas failing to start, or all gone)"),
                  metric=_alb("HealthyHostCount", "Minimum", TARGET_GROUP_DIMENSION, LOAD_BALANCER_DIMENSION),
                  period_s=PERIOD_S, evaluation_periods=NO_HEALTHY_MINUTES, datapoints_to_alarm=NO_HEALTHY_MINUTES,
                  comparison="LessThanThreshold", threshold=1, treat_missing_data="breaching"),
              _five_xx("replica-5xx", f"responses with a 5xx status a minute from the replicas, {_SPAN}: vLLM "
                       "fails requests, or does not answer its proxy",
                       _alb("HTTPCode_Target_5XX_Count", "Sum", TARGET_GROUP_DIMENSION, LOAD_BALANCER_DIMENSION)),
              _five_xx("load-balancer-5xx", f"5xx answers a minute from the load balancer itself, {_SPAN}: no "
                       "healthy replica (503), a replica that closed the connection (502) or did not answer in "
                       "time (504)", _alb("HTTPCode_ELB_5XX_Count", "Sum", LOAD_BALANCER_DIMENSION)))
    for alarm in alarms:
        alarm.check_cloudwatch_limits()
    return alarms


@dataclass(frozen=True)
class FleetDashboardInputs:
    region: str
    namespace: str
    stack: str  # the `stack` dimension's value the sidecars publish with
    load_balancer: str  # ARN suffixes
    target_group: str
    cluster: str
    service: str
    waiting_per_replica: float  # the scaling policy's target
    min_replicas: int
    max_replicas: int
    alarm_arns: Sequence[str] = field(default_factory=tuple)


def _vllm(i: FleetDashboardInputs, name: str, stat: str, label: str) -> list[Any]:
    return stack_metric(i.namespace, i.stack, name, stat, label)


def _lb(i: FleetDashboardInputs, name: str, stat: str, label: str, target_group: bool = True) -> list[Any]:
    dims = [TARGET_GROUP_DIMENSION, i.target_group] if target_group else []
    return [ALB_NAMESPACE, name, *dims, LOAD_BALANCER_DIMENSION, i.load_balancer, {"stat": stat, "label": label}]


def _graph(i: FleetDashboardInputs, title: str, metrics: list[list[Any]], x: int, y: int,
           y_axis: dict[str, Any] | None = None, lines: Sequence[tuple[str, float]] = ()) -> dict[str, Any]:
    properties: dict[str, Any] = {"title": title, "view": "timeSeries", "region": i.region, "period": PERIOD_S,
                                  "metrics": metrics, "yAxis": {"left": y_axis or {"min": 0}}}
    if lines:
        properties["annotations"] = {"horizontal": [{"label": label, "value": value} for label, value in lines]}
    return {"type": "metric", "x": x, "y": y, "width": _HALF, "height": _HEIGHT, "properties": properties}


def _note(i: FleetDashboardInputs) -> str:
    return "\n".join([
        f"# vLLM fleet: stack {i.stack}",
        f"{i.min_replicas}-{i.max_replicas} replicas on ECS (cluster `{i.cluster}`, service `{i.service}`) behind "
        f"an Application Load Balancer. vLLM's metrics are each replica's, as its CloudWatch agent sidecar "
        f"publishes them (namespace `{i.namespace}`, dimension `{STACK_DIMENSION}`, one scrape a minute): sums "
        "are the fleet's, maxima its busiest replica's. Autoscaling keeps the waiting requests per replica near "
        f"{i.waiting_per_replica:g}; a new replica takes minutes (instance, image, model), so waiting requests at "
        f"{i.max_replicas} replicas mean the fleet is at its limit (raise maxReplicas).",
    ])


def render_fleet_dashboard(i: FleetDashboardInputs) -> str:
    """The dashboard body (CloudWatch's DashboardBody JSON)."""
    row = [_TEXT_HEIGHT + n * _HEIGHT for n in range(4)]
    widgets: list[dict[str, Any]] = [
        {"type": "text", "x": 0, "y": 0, "width": _WIDTH, "height": _TEXT_HEIGHT, "properties": {"markdown": _note(i)}},
        _graph(i, "Replicas", [
            [CONTAINER_INSIGHTS_NAMESPACE, metric, "ClusterName", i.cluster, "ServiceName", i.service,
             {"stat": "Maximum", "label": label}]
            for metric, label in (("DesiredTaskCount", "desired"), ("RunningTaskCount", "running"))
        ] + [_lb(i, "HealthyHostCount", "Minimum", "healthy at the load balancer")], 0, row[0],
            {"min": 0}, [("minReplicas", i.min_replicas), ("maxReplicas", i.max_replicas)]),
        _graph(i, "Requests waiting per replica (the scaling metric) and running", [
            _vllm(i, WAITING, "Average", "waiting per replica"),
            _vllm(i, WAITING, "Sum", "waiting, all replicas"),
            _vllm(i, RUNNING, "Sum", "running, all replicas"),
        ], _HALF, row[0], {"min": 0}, [("scaling target", i.waiting_per_replica)]),
        _graph(i, "Tokens per second, all replicas", token_rate_metrics(i.namespace, i.stack), 0, row[1]),
        _graph(i, "KV cache usage, busiest replica (1 = full)", [
            _vllm(i, KV_CACHE, "Maximum", "KV cache in use"),
        ], _HALF, row[1], {"min": 0, "max": 1}, [("kv-cache-full alarm", KV_CACHE_FULL_THRESHOLD)]),
        _graph(i, "Requests per minute at the load balancer", [
            _lb(i, "RequestCount", "Sum", "requests"),
        ], 0, row[2]),
        _graph(i, "Response time at the load balancer (seconds; a stream's until its headers)", [
            _lb(i, "TargetResponseTime", stat, stat) for stat in ("p50", "p90", "p99")
        ], _HALF, row[2]),
        _graph(i, "5xx per minute", [
            _lb(i, "HTTPCode_Target_5XX_Count", "Sum", "from the replicas"),
            _lb(i, "HTTPCode_ELB_5XX_Count", "Sum", "from the load balancer", target_group=False),
        ], 0, row[3], {"min": 0}, [("5xx alarms", PROXY_5XX_PER_MINUTE)]),
    ]
    if i.alarm_arns:
        widgets.append({"type": "alarm", "x": _HALF, "y": row[3], "width": _HALF, "height": _HEIGHT,
                        "properties": {"title": "Alarms", "alarms": list(i.alarm_arns)}})
    return json.dumps({"widgets": widgets}, indent=1, sort_keys=True)
