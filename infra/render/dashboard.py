"""The stack's CloudWatch dashboard: its name, its console URL and its body (the DashboardBody JSON).

It shows what the host's CloudWatch agent publishes (infra/render/cloudwatch_agent.py: the stack's namespace,
the one `stack` dimension): vLLM's requests running and waiting, prompt and generation tokens per second, the
KV cache's usage, the GPU's utilization and memory, and EC2's status checks of the instance, with the alarms'
states. A counter arrives as its increase per scrape, so tokens per second are the period's sum divided by
the period's seconds (metric math `m / PERIOD(m)`).

From the proxy's access log (the metric filters of infra/render/log_metrics.py, metrics without a dimension
whose names carry the stack): the p50, p90 and p99 of the `/v1/` requests' time in the proxy (end to end, as
the client sees it, queueing in vLLM included), and the 5xx responses per minute with the `proxy-5xx` alarm's
threshold. From vLLM's own histograms, which the agent's Prometheus pipeline drops: the p50, p90 and p99 of
time to first token and of vLLM's end-to-end latency, estimated each minute on the host from the histograms'
increase (infra/render/latency.py, infra/host/vllm-latency.py), with the `stack` dimension.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from vllm_endpoint.infra.render.alarms import (
    GENERATION_TOKENS,
    KV_CACHE,
    KV_CACHE_FULL_THRESHOLD,
    PERIOD_S,
    PROMPT_TOKENS,
    PROXY_5XX_PER_MINUTE,
    RUNNING,
    WAITING,
)
from vllm_endpoint.infra.render.cloudwatch_agent import GPU_MEASUREMENTS, STACK_DIMENSION, metrics_the_agent_drops
from vllm_endpoint.infra.render.latency import LATENCY_HISTOGRAMS, QUANTILES, latency_metric_name
from vllm_endpoint.infra.render.log_metrics import latency_metric, proxy_5xx_metric

# The latency graph's percentiles (CloudWatch computes them from the metric filter's values).
LATENCY_PERCENTILES: Final = ("p50", "p90", "p99")
# CloudWatch's dashboard grid is 24 units wide.
_WIDTH: Final = 24
_HALF: Final = _WIDTH // 2
_HEIGHT: Final = 6
_TEXT_HEIGHT: Final = 5
_NAME_MAX: Final = 255


@dataclass(frozen=True)
class DashboardInputs:
    region: str
    namespace: str
    stack: str  # the `stack` dimension's value the agent publishes with
    instance_id: str
    alarm_arns: Sequence[str] = field(default_factory=tuple)
    idle_stop_minutes: int | None = None


def dashboard_name(*parts: str) -> str:
    """A dashboard name from its parts (project, stack, endpoint): CloudWatch allows A-Z, a-z, 0-9, - and _."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", "-".join(parts)).strip("-")[:_NAME_MAX]


def dashboard_url(region: str, name: str) -> str:
    return f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#dashboards:name={name}"


def gpu_metric_name(measurement: str) -> str:
    """The agent's CloudWatch name of an nvidia_gpu measurement."""
    return f"nvidia_smi_{measurement}"


def stack_metric(namespace: str, stack: str, name: str, stat: str, label: str, metric_id: str | None = None,
                 visible: bool = True) -> list[Any]:
    """A graph's line of a metric the agent publishes with the `stack` dimension (the fleet's dashboard too)."""
    options: dict[str, Any] = {"stat": stat, "label": label}
    if metric_id is not None:
        options["id"] = metric_id
    if not visible:
        options["visible"] = False
    return [namespace, name, STACK_DIMENSION, stack, options]


def token_rate_metrics(namespace: str, stack: str) -> list[list[Any]]:
    """Prompt and generated tokens per second: each period's increase of the counters over its seconds."""
    return [
        stack_metric(namespace, stack, PROMPT_TOKENS, "Sum", "prompt tokens", "prompt", visible=False),
        stack_metric(namespace, stack, GENERATION_TOKENS, "Sum", "generated tokens", "generation", visible=False),
        [{"expression": "prompt / PERIOD(prompt)", "label": "prompt tokens/s", "id": "prompt_rate"}],
        [{"expression": "generation / PERIOD(generation)", "label": "generated tokens/s", "id": "generation_rate"}],
    ]


def _metric(inputs: DashboardInputs, name: str, stat: str, label: str) -> list[Any]:
    return stack_metric(inputs.namespace, inputs.stack, name, stat, label)


def _log_metric(inputs: DashboardInputs, name: str, stat: str, label: str) -> list[Any]:
    """A metric of an access-log metric filter: no dimension (its name carries the stack)."""
    return [inputs.namespace, name, {"stat": stat, "label": label}]


def _graph(inputs: DashboardInputs, title: str, metrics: list[list[Any]], x: int, y: int,
           y_axis: dict[str, Any] | None = None, annotations: dict[str, Any] | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "title": title, "view": "timeSeries", "region": inputs.region, "period": PERIOD_S, "metrics": metrics,
    }
    if y_axis:
        properties["yAxis"] = {"left": y_axis}
    if annotations:
        properties["annotations"] = annotations
    return {"type": "metric", "x": x, "y": y, "width": _HALF, "height": _HEIGHT, "properties": properties}


def _note(inputs: DashboardInputs) -> str:
    dropped = ", ".join(f"`{m.name}`" for m in metrics_the_agent_drops())
    lines = [
        f"# vLLM endpoint: stack {inputs.stack}",
        f"vLLM's metrics as the CloudWatch agent on the instance publishes them (namespace `{inputs.namespace}`, "
        f"dimension `{STACK_DIMENSION}`), one scrape a minute. Tokens per second: each minute's increase of the "
        "token counters divided by the period's seconds.",
        "",
        "**Request latency** is the proxy's: from the first byte of a `/v1/` request read to the last byte of the "
        "answer sent (queueing in vLLM and the whole generation included), from its access log, as are the 5xx "
        "responses.",
        "",
        f"**Time to first token and vLLM's end-to-end latency** come from vLLM's own histograms ({dropped}), "
        "which the agent cannot carry: a timer on the host estimates each minute's p50, p90 and p99 from their "
        "increase (within vLLM's bucket bounds) and sends them to the agent. No requests in a minute: no point.",
    ]
    if inputs.idle_stop_minutes is not None:
        lines += ["", f"**Stops when idle**: after {inputs.idle_stop_minutes} minutes without a request the "
                      "instance is stopped (no data then). `scripts/wake.sh` starts it again."]
    return "\n".join(lines)


def render_dashboard(inputs: DashboardInputs) -> str:
    """The dashboard body (CloudWatch's DashboardBody JSON)."""
    gauge_axis = {"min": 0}
    widgets: list[dict[str, Any]] = [
        {"type": "text", "x": 0, "y": 0, "width": _WIDTH, "height": _TEXT_HEIGHT,
         "properties": {"markdown": _note(inputs)}},
        _graph(inputs, "Requests running and waiting", [
            _metric(inputs, RUNNING, "Maximum", "running"),
            _metric(inputs, WAITING, "Maximum", "waiting"),
        ], 0, _TEXT_HEIGHT, gauge_axis),
        _graph(inputs, "Tokens per second", token_rate_metrics(inputs.namespace, inputs.stack), _HALF, _TEXT_HEIGHT,
               gauge_axis),
        _graph(inputs, "KV cache usage (1 = full)", [
            _metric(inputs, KV_CACHE, "Maximum", "KV cache in use"),
        ], 0, _TEXT_HEIGHT + _HEIGHT, {"min": 0, "max": 1},
            {"horizontal": [{"label": "kv-cache-full alarm", "value": KV_CACHE_FULL_THRESHOLD}]}),
        _graph(inputs, "GPU utilization (%)", [
            _metric(inputs, gpu_metric_name("utilization_gpu"), "Average", "GPU utilization"),
        ], _HALF, _TEXT_HEIGHT + _HEIGHT, {"min": 0, "max": 100}),
        _graph(inputs, "GPU memory (MiB)", [
            _metric(inputs, gpu_metric_name(m), "Maximum", m.replace("_", " ")) for m in GPU_MEASUREMENTS
            if m.startswith("memory_")
        ], 0, _TEXT_HEIGHT + 2 * _HEIGHT, gauge_axis),
        _graph(inputs, "EC2 status checks (1 = failed)", [
            ["AWS/EC2", metric, "InstanceId", inputs.instance_id, {"stat": "Maximum", "label": label}]
            for metric, label in (("StatusCheckFailed_System", "system"), ("StatusCheckFailed_Instance", "instance"))
        ], _HALF, _TEXT_HEIGHT + 2 * _HEIGHT, {"min": 0, "max": 1}),
        _graph(inputs, "Request latency, /v1/ (seconds)", [
            _log_metric(inputs, latency_metric(inputs.stack), stat, stat) for stat in LATENCY_PERCENTILES
        ], 0, _TEXT_HEIGHT + 3 * _HEIGHT, gauge_axis),
        _graph(inputs, "5xx responses per minute", [
            _log_metric(inputs, proxy_5xx_metric(inputs.stack), "Sum", "5xx responses"),
        ], _HALF, _TEXT_HEIGHT + 3 * _HEIGHT, gauge_axis,
            {"horizontal": [{"label": "proxy-5xx alarm", "value": PROXY_5XX_PER_MINUTE}]}),
    ]
    for x, histogram, title in ((0, LATENCY_HISTOGRAMS[0], "Time to first token, vLLM (seconds)"),
                                (_HALF, LATENCY_HISTOGRAMS[1], "End-to-end latency, vLLM (seconds)")):
        widgets.append(_graph(inputs, title, [
            _metric(inputs, latency_metric_name(histogram, q), "Maximum", f"p{round(q * 100)}") for q in QUANTILES
        ], x, _TEXT_HEIGHT + 4 * _HEIGHT, gauge_axis))
    if inputs.alarm_arns:
        widgets.append({"type": "alarm", "x": 0, "y": _TEXT_HEIGHT + 5 * _HEIGHT, "width": _WIDTH, "height": 3,
                        "properties": {"title": "Alarms", "alarms": list(inputs.alarm_arns)}})
    return json.dumps({"widgets": widgets}, indent=1, sort_keys=True)
