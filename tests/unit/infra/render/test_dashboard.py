"""The dashboard body: every graph reads a metric the agent publishes, by the stack, or one of the access log's
metric filters (named for the stack); token rates are the period's increases over its seconds; the request
latency's percentiles come from the latency filter; the dropped latency histograms (time to first token) are
named in a text widget."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from vllm_endpoint.infra.render.alarms import KV_CACHE_FULL_THRESHOLD, PROXY_5XX_PER_MINUTE
from vllm_endpoint.infra.render.cloudwatch_agent import (
    GPU_MEASUREMENTS,
    STACK_DIMENSION,
    agent_metrics,
    metrics_the_agent_drops,
)
from vllm_endpoint.infra.render.dashboard import (
    DashboardInputs,
    dashboard_name,
    dashboard_url,
    gpu_metric_name,
    render_dashboard,
)
from vllm_endpoint.infra.render.latency import latency_metric_names
from vllm_endpoint.infra.render.log_metrics import access_log_metric_filters, latency_metric, proxy_5xx_metric

INPUTS = DashboardInputs(region="eu-west-1", namespace="VllmEndpoint", stack="dev", instance_id="i-0123456789abcdef0",
                         alarm_arns=("arn:aws:cloudwatch:eu-west-1:123456789012:alarm:a",))


def widgets(inputs: DashboardInputs = INPUTS) -> list[dict[str, Any]]:
    body = json.loads(render_dashboard(inputs))
    assert set(body) == {"widgets"}
    return list(body["widgets"])


def graphs(inputs: DashboardInputs = INPUTS) -> dict[str, list[list[Any]]]:
    return {w["properties"]["title"]: w["properties"]["metrics"] for w in widgets(inputs) if w["type"] == "metric"}


def test_every_graphed_metric_is_published_by_the_agent_for_this_stack() -> None:
    published = ({m.name for m in agent_metrics()} | {gpu_metric_name(m) for m in GPU_MEASUREMENTS}
                 | set(latency_metric_names()))  # the host's latency timer sends these with the same dimension
    from_the_log = {spec.metric_name for spec in access_log_metric_filters("dev", "VllmEndpoint")}
    seen = set()
    for title, metrics in graphs().items():
        for line in metrics:
            if isinstance(line[0], dict):
                continue  # a metric math expression
            namespace, name, *dims, _options = line
            if namespace == "AWS/EC2":
                assert dims == ["InstanceId", "i-0123456789abcdef0"], title
                continue
            if name in from_the_log:
                assert namespace == "VllmEndpoint" and dims == [], title  # no dimension: the name has the stack
                seen.add(name)
                continue
            assert namespace == "VllmEndpoint" and dims == [STACK_DIMENSION, "dev"], title
            assert name in published, (title, name)
            seen.add(name)
    assert {m.name for m in agent_metrics()} | from_the_log <= seen, "every published metric is shown"


def test_the_request_latency_percentiles_and_the_5xx_responses_come_from_the_access_log() -> None:
    latency = graphs()["Request latency, /v1/ (seconds)"]
    assert [(name, options["stat"]) for _ns, name, options in latency] == [
        (latency_metric("dev"), "p50"), (latency_metric("dev"), "p90"), (latency_metric("dev"), "p99")]
    errors = next(w for w in widgets() if w["properties"].get("title") == "5xx responses per minute")
    [(_ns, name, options)] = errors["properties"]["metrics"]
    assert (name, options["stat"]) == (proxy_5xx_metric("dev"), "Sum")
    assert errors["properties"]["annotations"]["horizontal"][0]["value"] == PROXY_5XX_PER_MINUTE


def test_tokens_per_second_are_the_periods_increases_over_its_seconds() -> None:
    lines = graphs()["Tokens per second"]
    expressions = [line[0]["expression"] for line in lines if isinstance(line[0], dict)]
    assert expressions == ["prompt / PERIOD(prompt)", "generation / PERIOD(generation)"]
    sums = [line[-1] for line in lines if not isinstance(line[0], dict)]
    assert all(options["stat"] == "Sum" and options["visible"] is False for options in sums)


def test_the_kv_cache_graph_marks_the_alarms_threshold_and_the_alarms_are_listed() -> None:
    kv = next(w for w in widgets() if w["properties"].get("title", "").startswith("KV cache"))
    assert kv["properties"]["annotations"]["horizontal"][0]["value"] == KV_CACHE_FULL_THRESHOLD
    alarm = next(w for w in widgets() if w["type"] == "alarm")
    assert alarm["properties"]["alarms"] == list(INPUTS.alarm_arns)
    assert not any(w["type"] == "alarm" for w in widgets(DashboardInputs("eu-west-1", "NS", "dev", "i-1")))


def test_the_text_says_which_latency_histograms_the_agent_drops_and_whether_it_stops_when_idle() -> None:
    text = widgets()[0]["properties"]["markdown"]
    dropped = metrics_the_agent_drops()
    assert dropped and all(f"`{m.name}`" in text for m in dropped)
    assert "a timer on the host estimates each minute's p50, p90 and p99" in text and "Stops when idle" not in text
    assert "queueing in vLLM" in text
    idle = widgets(DashboardInputs("eu-west-1", "NS", "dev", "i-1", idle_stop_minutes=30))[0]["properties"]
    assert "after 30 minutes without a request" in idle["markdown"]


def test_widgets_stay_on_the_24_unit_grid_without_overlapping() -> None:
    cells: set[tuple[int, int]] = set()
    for w in widgets():
        assert w["x"] >= 0 and w["x"] + w["width"] <= 24
        area = {(x, y) for x in range(w["x"], w["x"] + w["width"]) for y in range(w["y"], w["y"] + w["height"])}
        assert not area & cells
        cells |= area


@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=4))
def test_dashboard_names_hold_only_what_cloudwatch_allows(parts: list[str]) -> None:
    name = dashboard_name(*parts)
    assert len(name) <= 255 and all(c.isascii() and (c.isalnum() or c in "-_") for c in name)


def test_the_url_opens_the_dashboard_in_its_region() -> None:
    assert dashboard_name("vllm-endpoint", "dev", "vllm") == "vllm-endpoint-dev-vllm"
    assert dashboard_url("us-east-1", "x-dev") == \
        "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#dashboards:name=x-dev"
