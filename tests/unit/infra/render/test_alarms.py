"""The alarms' specs and `evaluate_alarm`, CloudWatch's alarm semantics applied to a series of samples.

The idle-stop rule is checked on generated series: the alarm stops the instance only after the configured
span of real, idle datapoints, never while a request ran within it, and neither a stopped nor a just-booted
instance makes it flap.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from vllm_endpoint.infra.catalog.vllm_metrics import VLLM_METRICS
from vllm_endpoint.infra.render.alarms import (
    GENERATION_TOKENS,
    IDLE_METRIC,
    INSTANCE_DIMENSION,
    KV_CACHE,
    PROXY_5XX_MINUTES,
    PROXY_5XX_PER_MINUTE,
    RUNNING,
    WAITING,
    AlarmSpec,
    MetricInput,
    Sample,
    alarm_states,
    datapoints,
    endpoint_alarms,
    evaluate_alarm,
    idle_stop_alarm,
    idle_stop_periods,
    published_samples,
    stop_action_arn,
)
from vllm_endpoint.infra.render.cloudwatch_agent import (
    STACK_DIMENSION,
    AgentInputs,
    agent_metrics,
    render_agent_config,
    render_scrape_config,
)
from vllm_endpoint.infra.render.log_metrics import proxy_5xx_filter, proxy_5xx_metric

NS, STACK, INSTANCE = "VllmEndpoint", "dev", "i-0123456789abcdef0"


def idle(minutes: int = 15) -> AlarmSpec:
    return idle_stop_alarm(NS, INSTANCE, minutes)


def series(per_period: Sequence[float | None], period: int = 60, start: int = 0) -> list[Sample]:
    """One sample of the idle metric half-way into each period; None: no sample in that period."""
    return [Sample(start + (k + 0.5) * period, IDLE_METRIC, v) for k, v in enumerate(per_period) if v is not None]


# ----------------------------------------------------------------------------------------------
# The specs.

def test_the_notifying_alarms_read_published_metrics_by_the_stack() -> None:
    alarms = {a.key: a for a in endpoint_alarms(NS, STACK)}
    assert set(alarms) == {"not-ready", "kv-cache-full", "requests-waiting", "proxy-5xx"}
    published = {m.name for m in agent_metrics()}
    for alarm in alarms.values():
        assert alarm.metric.namespace == NS and alarm.action == "notify"
        if alarm.key == "proxy-5xx":
            continue  # the access log's metric filter: below
        assert alarm.metric.metric_name in published
        assert alarm.metric.dimensions == ((STACK_DIMENSION, STACK),)
    assert (alarms["not-ready"].metric.metric_name, alarms["not-ready"].metric.statistic) == (RUNNING, "SampleCount")
    # No data is the symptom itself for not-ready; for the others no data means nothing to say.
    assert {a.key: a.treat_missing_data for a in alarms.values()} == {
        "not-ready": "breaching", "kv-cache-full": "notBreaching", "requests-waiting": "notBreaching",
        "proxy-5xx": "notBreaching"}
    assert alarms["kv-cache-full"].metric.metric_name == KV_CACHE
    assert alarms["requests-waiting"].metric.metric_name == WAITING


def test_the_5xx_alarm_sums_the_access_logs_5xx_filter() -> None:
    spec = next(a for a in endpoint_alarms(NS, STACK) if a.key == "proxy-5xx")
    log_filter = proxy_5xx_filter(STACK, NS)
    # The filter's metric, which carries the stack in its name (a metric filter has no constant dimension).
    assert spec.metric == MetricInput(log_filter.metric_name, "Sum", NS, ())
    assert log_filter.metric_name == proxy_5xx_metric(STACK) and log_filter.value == "1"
    assert (spec.period_s, spec.evaluation_periods, spec.datapoints_to_alarm) == (60, 5, PROXY_5XX_MINUTES)
    assert (spec.comparison, spec.threshold) == ("GreaterThanOrEqualToThreshold", PROXY_5XX_PER_MINUTE)


def _errors(per_minute: Sequence[int]) -> list[Sample]:
    """What the 5xx filter publishes: a 1 per 5xx line, spread over each minute."""
    metric = proxy_5xx_metric(STACK)
    return [Sample(k * 60 + (i + 0.5) * 60 / n, metric, 1.0) for k, n in enumerate(per_minute) for i in range(n)]


def test_the_5xx_alarm_fires_on_sustained_errors_not_on_a_burst_or_a_single_failure() -> None:
    spec = next(a for a in endpoint_alarms(NS, STACK) if a.key == "proxy-5xx")
    at = 10 * 60
    assert evaluate_alarm(spec, [], at).state == "OK", "no 5xx line: no datapoint, not breaching"
    assert evaluate_alarm(spec, _errors([0] * 5 + [1] * 5), at).state == "OK", "one failed request a minute"
    assert evaluate_alarm(spec, _errors([0] * 5 + [50, 50, 0, 0, 0]), at).state == "OK", "a burst of two minutes"
    assert evaluate_alarm(spec, _errors([0] * 5 + [5, 0, 5, 0, 5]), at).state == "ALARM", "3 of 5 minutes"
    assert evaluate_alarm(spec, _errors([0] * 5 + [4, 4, 4, 4, 4]), at).state == "OK", "below the threshold"


def test_the_idle_stop_alarm_stops_the_instance_after_every_period_of_the_span_is_idle() -> None:
    spec = idle(45)
    assert spec.action == "stop" and stop_action_arn("eu-west-1") == "arn:aws:automate:eu-west-1:ec2:stop"
    assert spec.metric == MetricInput(GENERATION_TOKENS, "Sum", NS, ((INSTANCE_DIMENSION, INSTANCE),))
    assert (spec.period_s, spec.evaluation_periods, spec.datapoints_to_alarm) == (60, 45, 45)
    assert (spec.comparison, spec.threshold, spec.treat_missing_data) == ("LessThanOrEqualToThreshold", 0,
                                                                           "notBreaching")
    assert next(m for m in VLLM_METRICS if m.name == IDLE_METRIC).type == "counter"


@given(st.integers(min_value=15, max_value=10080))
def test_every_allowed_idle_span_fits_cloudwatchs_limits_and_never_stops_early(minutes: int) -> None:
    period, count = idle_stop_periods(minutes)
    spec = idle(minutes)
    spec.check_cloudwatch_limits()
    assert period * count >= minutes * 60, "never shorter than asked"
    assert period * count - minutes * 60 < period, "longer only by rounding up to whole periods"
    assert (period == 60) == (minutes <= 1440)


def test_an_ec2_action_needs_a_metric_of_the_instance() -> None:
    with pytest.raises(ValueError, match="InstanceId"):
        AlarmSpec("x", "x", MetricInput(RUNNING, "Maximum", NS, ((STACK_DIMENSION, STACK),)), 60, 3, 3,
                  "LessThanOrEqualToThreshold", 0, "notBreaching", action="stop")
    with pytest.raises(ValueError, match="datapoints"):
        AlarmSpec("x", "x", MetricInput(RUNNING, "Maximum", NS, ()), 60, 3, 4, "LessThanThreshold", 0, "missing")
    with pytest.raises(ValueError, match="exceed"):
        AlarmSpec("x", "x", MetricInput(RUNNING, "Maximum", NS, ()), 60, 1441, 1, "LessThanThreshold", 0,
                  "missing").check_cloudwatch_limits()


# ----------------------------------------------------------------------------------------------
# What the agent sends.

def test_counters_are_sent_as_increases_from_the_second_scrape_and_gauges_as_they_are() -> None:
    scrapes = [(0.0, {GENERATION_TOKENS: 100.0, RUNNING: 1.0}), (60.0, {GENERATION_TOKENS: 130.0, RUNNING: 0.0}),
               (120.0, {GENERATION_TOKENS: 130.0, RUNNING: 0.0}),
               (180.0, {GENERATION_TOKENS: 5.0}),  # the server restarted: no increase to send
               (240.0, {GENERATION_TOKENS: 9.0, "vllm:e2e_request_latency_seconds": 1.0})]
    assert published_samples(scrapes) == [
        Sample(0.0, RUNNING, 1.0), Sample(60.0, GENERATION_TOKENS, 30.0), Sample(60.0, RUNNING, 0.0),
        Sample(120.0, GENERATION_TOKENS, 0.0), Sample(120.0, RUNNING, 0.0), Sample(240.0, GENERATION_TOKENS, 4.0)]


def test_each_statistic_of_a_period() -> None:
    samples = [Sample(t, RUNNING, v) for t, v in ((1, 2.0), (20, 6.0), (59, 1.0), (61, 3.0))]
    for statistic, expected in (("Maximum", 6.0), ("Minimum", 1.0), ("Sum", 9.0), ("Average", 3.0),
                                ("SampleCount", 3.0)):
        spec = AlarmSpec("x", "x", MetricInput(RUNNING, statistic, NS, ()), 60, 1, 1,  # type: ignore[arg-type]
                         "GreaterThanThreshold", 0, "missing")
        assert datapoints(spec, samples, 0, 3) == [expected, 3.0 if statistic != "SampleCount" else 1.0, None]


# ----------------------------------------------------------------------------------------------
# CloudWatch's evaluation.

def test_the_server_not_ready_alarm_fires_on_missing_samples() -> None:
    spec = next(a for a in endpoint_alarms(NS, STACK) if a.key == "not-ready")
    up = [Sample(k * 60 + 30, RUNNING, 0.0) for k in range(10)]  # scraped every minute, idle
    assert evaluate_alarm(spec, up, 600).state == "OK"
    assert evaluate_alarm(spec, up[:8], 600).state == "OK"  # two minutes without: not yet
    assert evaluate_alarm(spec, up[:7], 600).state == "ALARM"
    assert evaluate_alarm(spec, [], 600).state == "ALARM"


def test_missing_and_ignore_treatments() -> None:
    base = AlarmSpec("x", "x", MetricInput(IDLE_METRIC, "Sum", NS, ()), 60, 3, 3, "LessThanOrEqualToThreshold", 0,
                     "missing")
    assert evaluate_alarm(base, [], 600).state == "INSUFFICIENT_DATA"
    # Some data: only the real datapoints count, and one breaching datapoint is fewer than 3.
    assert evaluate_alarm(base, series([None] * 8 + [0.0, None]), 600).state == "OK"
    ignore = AlarmSpec(**{**base.__dict__, "treat_missing_data": "ignore"})
    assert evaluate_alarm(ignore, series([0.0] * 9), 600, previous="OK").state == "OK"
    assert evaluate_alarm(ignore, series([0.0] * 10), 600, previous="OK").state == "ALARM"


def test_a_stopped_instance_takes_the_alarm_back_to_ok_and_a_woken_one_gets_the_full_span() -> None:
    n = 15
    busy, quiet = [5.0] * 10, [0.0] * n
    stopped, booting = [None] * 30, [None] * 3
    woken_idle = [0.0] * n
    values = busy + quiet + stopped + booting + woken_idle
    states = alarm_states(idle(n), series(values), [(k + 1) * 60 for k in range(len(values))])
    alarm_at = [k + 1 for k, e in enumerate(states) if e.state == "ALARM"]
    first_stop = len(busy) + n
    woken = first_stop + len(stopped) + len(booting)
    # ALARM (the stop) right after the quiet span; the stopped instance's missing data is not idle (OK, and OK
    # has no action); after the start, the stop comes again only after a full span of real idle datapoints.
    assert alarm_at == [first_stop, woken + n]
    transitions = [(k + 1, e.state) for k, e in enumerate(states) if k == 0 or e.state != states[k - 1].state]
    assert transitions == [(1, "OK"), (first_stop, "ALARM"), (first_stop + 1, "OK"), (woken + n, "ALARM")]


activity = st.lists(st.one_of(st.none(), st.just(0.0), st.floats(min_value=1, max_value=1e6)),
                    min_size=1, max_size=60)


@settings(max_examples=300, deadline=None)
@given(activity, st.integers(min_value=1, max_value=20), st.integers(min_value=0, max_value=10))
def test_idle_only_after_n_real_idle_periods_and_never_with_activity_among_them(
        values: list[float | None], n: int, extra: int) -> None:
    spec = idle(15).with_period(60)
    spec = AlarmSpec(**{**spec.__dict__, "evaluation_periods": n, "datapoints_to_alarm": n})
    samples = series(values)
    for k in range(1, len(values) + 1):
        evaluation = evaluate_alarm(spec, samples, k * 60 + 1, extra_periods=extra)
        recent = values[max(0, k - n):k]
        if extra == 0:
            # The strict range: ALARM exactly when the last n periods all have a datapoint of 0.
            expected = len(recent) == n and all(v == 0.0 for v in recent)
            assert (evaluation.state == "ALARM") == expected, (k, recent)
        if evaluation.state == "ALARM":
            assert not any(recent), "a period with tokens among the last n never lets it stop"
            window = values[max(0, k - n - extra):k]
            assert sum(v is not None for v in window) >= n, "n real idle datapoints, never filled-in ones"


@given(st.floats(min_value=0.1, max_value=600), st.integers(min_value=1, max_value=30))
def test_scaling_the_period_scales_when_the_alarm_fires(period_scale: float, n: int) -> None:
    """The real tier evaluates the deployed spec on a recorded series with a shorter period: the decision in
    periods is the same whatever their length."""
    period = max(1, round(period_scale))
    spec = AlarmSpec(**{**idle(15).__dict__, "evaluation_periods": n, "datapoints_to_alarm": n}).with_period(period)
    values: list[float | None] = [*[3.0] * 4, *[0.0] * (n + 3)]
    states = alarm_states(spec, series(values, period), [(k + 1) * period for k in range(len(values))])
    first = next(k + 1 for k, e in enumerate(states) if e.state == "ALARM")
    assert first == 4 + n
    assert math.isclose(states[first - 1].at, (4 + n) * period)


def test_the_agent_publishes_the_idle_metric_per_instance() -> None:
    """The contract with the agent: without the idle metric per InstanceId the idle-stop alarm has no data,
    stays OK (missing data is not breaching) and never stops the instance."""
    inputs = AgentInputs(stack=STACK, namespace=NS, vllm_address="172.18.0.2", instance_id="i-0123456789abcdef0")
    config = json.loads(render_agent_config(inputs))
    assert yaml.safe_load(render_scrape_config(inputs))["scrape_configs"][0]["static_configs"][0]["labels"] == {
        "stack": STACK, INSTANCE_DIMENSION: "i-0123456789abcdef0"}
    declarations = config["logs"]["metrics_collected"]["prometheus"]["emf_processor"]["metric_declaration"]
    assert any([INSTANCE_DIMENSION] in d["dimensions"] and any(re.fullmatch(s, IDLE_METRIC)
                                                                for s in d["metric_selectors"])
               for d in declarations)
