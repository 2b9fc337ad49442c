"""The stack's CloudWatch alarms as plain data, and CloudWatch's alarm semantics applied to a series.

Every alarm but `proxy-5xx` reads what the host's CloudWatch agent publishes (infra/render/cloudwatch_agent.py):
vLLM's gauges as scraped, its counters as the increase since the previous scrape, in the stack's namespace with
the `stack` dimension (the idle-stop alarm's one metric with the instance's InstanceId instead). The
component (components/monitoring.py) turns each `AlarmSpec` into an `aws.cloudwatch.MetricAlarm`;
`evaluate_alarm` applies the same spec to a list of timestamped samples the way CloudWatch would, so what the
tests evaluate is exactly what is deployed.

The alarms:
- `not-ready`: no sample of vLLM's `up` metric (catalog UP_METRIC, reported at every scrape) for 3 minutes.
  No data is the symptom itself (the server does not answer the agent, or the agent is down), so missing data
  is breaching. A stopped instance sends nothing either: with idleStopMinutes an idle stop raises it too, and
  it returns to OK once the endpoint is woken and serving.
- `kv-cache-full`: the KV cache at least 90 % in use for 5 minutes (requests start to be preempted).
- `requests-waiting`: requests queued at every scrape for 5 minutes (the server cannot keep up).
- `idle-stop` (idleStopMinutes only): no token generated for the whole span: the EC2 stop action. See
  `idle_stop_alarm` for why that one metric, and the dimension it needs.
- `proxy-5xx`: at least 5 responses with a 5xx status a minute in 3 of 5 minutes, counted from the
  proxy's access log by a CloudWatch Logs metric filter (infra/render/log_metrics.py): vLLM's own 500s and the
  proxy's 502/504 when vLLM does not answer, which vLLM's counters cannot see (PROXY_5XX_PER_MINUTE says why
  that threshold). That metric has no `stack` dimension (a metric filter takes no constant dimension value):
  its name carries the scope. A minute without a 5xx has no datapoint (the filter has no default value), so
  missing data is not breaching.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from vllm_endpoint.infra.catalog.vllm_metrics import UP_METRIC, VLLM_METRICS
from vllm_endpoint.infra.render.cloudwatch_agent import INSTANCE_DIMENSION, PER_INSTANCE_METRIC, STACK_DIMENSION
from vllm_endpoint.infra.render.log_metrics import proxy_5xx_filter

Statistic = Literal["Maximum", "Minimum", "Average", "Sum", "SampleCount"]
Comparison = Literal["GreaterThanOrEqualToThreshold", "GreaterThanThreshold", "LessThanThreshold",
                     "LessThanOrEqualToThreshold"]
TreatMissing = Literal["breaching", "notBreaching", "ignore", "missing"]
State = Literal["OK", "ALARM", "INSUFFICIENT_DATA"]

# vLLM's metrics by what they are (the catalog's names: a renamed metric fails the catalog's real test).
RUNNING: Final = UP_METRIC.name
WAITING: Final = "vllm:num_requests_waiting"
KV_CACHE: Final = "vllm:kv_cache_usage_perc"
PROMPT_TOKENS: Final = "vllm:prompt_tokens_total"
GENERATION_TOKENS: Final = "vllm:generation_tokens_total"
_CATALOG: Final = {m.name: m for m in VLLM_METRICS}
assert {RUNNING, WAITING, KV_CACHE, PROMPT_TOKENS, GENERATION_TOKENS} <= _CATALOG.keys()

# The agent scrapes once a minute (AgentInputs.interval_s) and CloudWatch keeps its metrics at one-minute
# resolution: one period is one scrape.
PERIOD_S: Final = 60
# PutMetricAlarm: period x evaluation periods at most one day below one-hour periods, at most 7 days otherwise.
_MAX_SPAN_SHORT_S: Final = 86_400
_MAX_SPAN_S: Final = 604_800
KV_CACHE_FULL_THRESHOLD: Final = 0.9
NOT_READY_MINUTES: Final = 3
SUSTAINED_MINUTES: Final = 5
# proxy-5xx: a failing endpoint, not one failed request. vLLM answers 500 for a request it failed on, and a
# client retrying it at once makes a few more: fewer than 5 in a minute is left to the client. While vLLM is
# down every request gets 502/504, but so does `not-ready` fire then; this one covers what it does not see
# (vLLM up and answering the agent, and failing requests). 3 of 5 minutes: a burst within one or two minutes
# (a restart's first seconds, a client's retry loop that gives up) does not notify.
PROXY_5XX_PER_MINUTE: Final = 5
PROXY_5XX_MINUTES: Final = 3
# The idle-stop alarm's metric: the one the agent also publishes per instance (CloudWatch runs EC2 actions
# only for alarms on a metric with an InstanceId dimension).
IDLE_METRIC: Final = PER_INSTANCE_METRIC
assert IDLE_METRIC == GENERATION_TOKENS


@dataclass(frozen=True)
class MetricInput:
    """The metric an alarm reads, and the statistic of each period."""

    metric_name: str
    statistic: Statistic
    namespace: str
    dimensions: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class AlarmSpec:
    """A CloudWatch metric alarm on one metric (no metric math: EC2's actions need a single per-instance metric,
    and the other alarms need nothing more)."""

    key: str
    description: str
    metric: MetricInput
    period_s: int
    evaluation_periods: int
    datapoints_to_alarm: int
    comparison: Comparison
    threshold: float
    treat_missing_data: TreatMissing
    action: Literal["notify", "stop"] = "notify"

    def __post_init__(self) -> None:
        if not 1 <= self.datapoints_to_alarm <= self.evaluation_periods:
            raise ValueError(f"{self.key}: datapoints to alarm must be 1..{self.evaluation_periods}")
        if self.action == "stop" and dict(self.metric.dimensions).keys() != {INSTANCE_DIMENSION}:
            # "custom metrics that include the InstanceId dimension": CloudWatch's condition for EC2 actions.
            raise ValueError(f"{self.key}: an EC2 action needs a metric whose one dimension is {INSTANCE_DIMENSION}")

    def check_cloudwatch_limits(self) -> None:
        """PutMetricAlarm's limits on the period and the evaluated span (the deployed periods, not scaled ones)."""
        if self.period_s not in (10, 20, 30) and self.period_s % 60:
            raise ValueError(f"{self.key}: a period is 10, 20, 30 or a multiple of 60 seconds")
        span = self.period_s * self.evaluation_periods
        limit = _MAX_SPAN_SHORT_S if self.period_s < 3600 else _MAX_SPAN_S
        if span > limit:
            raise ValueError(f"{self.key}: {self.evaluation_periods} periods of {self.period_s} s exceed {limit} s")

    def with_period(self, period_s: int) -> AlarmSpec:
        """The same alarm with another period length: for evaluating a recorded series on a shorter time scale
        (the counts of periods, the comparison and the missing-data rule stay)."""
        return dataclasses.replace(self, period_s=period_s)


def _by_stack(name: str, statistic: Statistic, namespace: str, stack: str) -> MetricInput:
    return MetricInput(name, statistic, namespace, ((STACK_DIMENSION, stack),))


def stop_action_arn(region: str) -> str:
    """EC2's stop action for a CloudWatch alarm (no IAM role needed: CloudWatch's own service-linked role)."""
    return f"arn:aws:automate:{region}:ec2:stop"


def idle_stop_periods(minutes: int) -> tuple[int, int]:
    """(period in seconds, evaluation periods) covering `minutes`: one-minute periods up to a day (CloudWatch
    allows no longer span with periods under an hour), one-hour periods beyond (the span rounded up to whole
    hours: at most 7 days)."""
    if minutes * 60 <= _MAX_SPAN_SHORT_S:
        return PERIOD_S, minutes
    return 3600, math.ceil(minutes / 60)


def idle_stop_alarm(namespace: str, instance_id: str, minutes: int) -> AlarmSpec:
    """Idle means no token generated for `minutes`: in every period, the generation counter's increases
    (one per scrape) sum to 0.

    Why that one metric: EC2's stop action works only on an alarm watching a single metric whose dimension is
    the instance's InstanceId (CloudWatch's "EC2 per-instance metric"), so the agent publishes this counter
    with that dimension too (IDLE_METRIC), and metric math over several metrics is not an option. Of vLLM's
    metrics it is the one that sees every request: a request decodes at least one token, and a running one
    generates tokens at every engine step, so a busy minute always has an increase. The gauges (requests
    running, waiting) are read once a minute and miss any request that starts and ends between two scrapes: an
    endpoint used every few minutes for a few seconds would look idle. A request can wait with no token
    generated only while others run (they generate), or when the engine is stuck.

    Missing data is not breaching: periods without a datapoint (the instance stopped or still booting, the
    agent sending counter increases only from its second scrape) never count as idle. So a stopped instance
    takes the alarm back to OK (it has no OK action), and a started one gets the full span of real idle
    datapoints before it is stopped again: no stop-start flapping, and an agent that stops publishing never
    stops an endpoint. Every one of the periods must be idle (datapoints to alarm = evaluation periods)."""
    period, count = idle_stop_periods(minutes)
    return AlarmSpec(
        key="idle-stop",
        description=(f"Stops the vLLM endpoint's instance after {minutes} minutes without a generated token (the "
                     "cache volume and Elastic IP stay; scripts/wake.sh starts it again)"),
        metric=MetricInput(IDLE_METRIC, "Sum", namespace, ((INSTANCE_DIMENSION, instance_id),)),
        period_s=period, evaluation_periods=count, datapoints_to_alarm=count,
        comparison="LessThanOrEqualToThreshold", threshold=0, treat_missing_data="notBreaching", action="stop",
    )


def proxy_5xx_alarm(namespace: str, stack: str) -> AlarmSpec:
    """5xx responses from the proxy: the metric of the access log's `proxy-5xx` filter (one 1 per 5xx line), summed
    per minute. That metric has no dimension: its name is the scope's own."""
    log_filter = proxy_5xx_filter(stack, namespace)
    return AlarmSpec(
        key="proxy-5xx",
        description=(f"At least {PROXY_5XX_PER_MINUTE} responses with a 5xx status a minute, in "
                     f"{PROXY_5XX_MINUTES} of {SUSTAINED_MINUTES} minutes (the proxy's access log): vLLM fails "
                     "requests, or does not answer the proxy"),
        metric=MetricInput(log_filter.metric_name, "Sum", log_filter.namespace, log_filter.dimensions),
        period_s=PERIOD_S, evaluation_periods=SUSTAINED_MINUTES, datapoints_to_alarm=PROXY_5XX_MINUTES,
        comparison="GreaterThanOrEqualToThreshold", threshold=PROXY_5XX_PER_MINUTE,
        treat_missing_data="notBreaching",
    )


def endpoint_alarms(namespace: str, stack: str) -> tuple[AlarmSpec, ...]:
    """The stack's notifying alarms (the idle-stop alarm is `idle_stop_alarm`)."""
    alarms = (
        AlarmSpec(
            key="not-ready",
            description=(f"No sample of {RUNNING} for {NOT_READY_MINUTES} minutes: vLLM does not answer the "
                         "agent's scrape (down, restarting, or the instance stopped)"),
            metric=_by_stack(RUNNING, "SampleCount", namespace, stack),
            period_s=PERIOD_S, evaluation_periods=NOT_READY_MINUTES, datapoints_to_alarm=NOT_READY_MINUTES,
            comparison="LessThanThreshold", threshold=1, treat_missing_data="breaching",
        ),
        AlarmSpec(
            key="kv-cache-full",
            description=(f"vLLM's KV cache at least {KV_CACHE_FULL_THRESHOLD:.0%} in use for {SUSTAINED_MINUTES} "
                         "minutes: requests are preempted and recomputed (more GPU memory, a shorter "
                         "maxModelLen or fewer maxNumSeqs)"),
            metric=_by_stack(KV_CACHE, "Maximum", namespace, stack),
            period_s=PERIOD_S, evaluation_periods=SUSTAINED_MINUTES, datapoints_to_alarm=SUSTAINED_MINUTES,
            comparison="GreaterThanOrEqualToThreshold", threshold=KV_CACHE_FULL_THRESHOLD,
            treat_missing_data="notBreaching",
        ),
        AlarmSpec(
            key="requests-waiting",
            description=(f"Requests waiting at every scrape for {SUSTAINED_MINUTES} minutes: the endpoint "
                         "cannot keep up with its load"),
            metric=_by_stack(WAITING, "Minimum", namespace, stack),
            period_s=PERIOD_S, evaluation_periods=SUSTAINED_MINUTES, datapoints_to_alarm=SUSTAINED_MINUTES,
            comparison="GreaterThanThreshold", threshold=0, treat_missing_data="notBreaching",
        ),
        proxy_5xx_alarm(namespace, stack),
    )
    for alarm in alarms:
        alarm.check_cloudwatch_limits()
    return alarms



# ----------------------------------------------------------------------------------------------
# What the agent sends, and CloudWatch's evaluation of it.

@dataclass(frozen=True)
class Sample:
    """One datapoint as CloudWatch receives it: a metric's value at a time (seconds since the epoch)."""

    timestamp: float
    metric: str
    value: float


def published_samples(scrapes: Iterable[tuple[float, Mapping[str, float]]]) -> list[Sample]:
    """What the agent publishes from successive scrapes of /metrics ({metric name: value}, each summed over
    its label sets): gauges as they are, counters as the increase since the previous scrape (nothing for the
    first scrape, nor after a counter went down: the server restarted)."""
    out: list[Sample] = []
    previous: dict[str, float] = {}
    for timestamp, values in scrapes:
        for name, value in values.items():
            metric = _CATALOG.get(name)
            if metric is None or metric.type == "histogram":
                continue
            if metric.type == "counter":
                before = previous.get(name)
                previous[name] = value
                if before is None or value < before:
                    continue
                value = value - before
            out.append(Sample(timestamp, name, value))
    return out


def _statistic(values: Sequence[float], statistic: Statistic) -> float:
    if statistic == "Maximum":
        return max(values)
    if statistic == "Minimum":
        return min(values)
    if statistic == "Sum":
        return math.fsum(values)
    if statistic == "Average":
        return math.fsum(values) / len(values)
    return float(len(values))


def _breaches(value: float, comparison: Comparison, threshold: float) -> bool:
    if comparison == "GreaterThanOrEqualToThreshold":
        return value >= threshold
    if comparison == "GreaterThanThreshold":
        return value > threshold
    if comparison == "LessThanThreshold":
        return value < threshold
    return value <= threshold


def datapoints(spec: AlarmSpec, samples: Sequence[Sample], first_period: int, count: int) -> list[float | None]:
    """The alarm's value in each of `count` periods from period number `first_period` (periods are aligned to
    the epoch: number k covers [k * period, (k + 1) * period)); None where it has no datapoint.

    A metric without samples in a period has no datapoint there (SampleCount included: CloudWatch returns no
    datapoint, not 0). `samples` are the metric's own (dimensions are not modelled)."""
    buckets: dict[int, list[float]] = {}
    for s in samples:
        if s.metric == spec.metric.metric_name:
            buckets.setdefault(math.floor(s.timestamp / spec.period_s), []).append(s.value)
    return [_statistic(buckets[k], spec.metric.statistic) if k in buckets else None
            for k in range(first_period, first_period + count)]


@dataclass(frozen=True)
class Evaluation:
    at: float
    state: State
    values: tuple[float | None, ...]  # the evaluated periods' values, oldest first (None: missing)
    breaching: int


def evaluate_alarm(spec: AlarmSpec, samples: Sequence[Sample], at: float, previous: State = "INSUFFICIENT_DATA",
                   extra_periods: int = 0) -> Evaluation:
    """The alarm's state when CloudWatch evaluates it at time `at`, over the complete periods before it.

    CloudWatch's documented rules ("Configuring how CloudWatch alarms treat missing data"): it retrieves an
    evaluation range of more periods than the evaluation periods (`extra_periods` more; how many is not
    documented, 0 models the strictest case). With at least N real datapoints in the range, the most recent N
    decide and the missing-data setting plays no part. With fewer, the missing ones are filled with the
    setting (as few as needed, all real ones kept): breaching, not breaching; `ignore` keeps the current state;
    `missing` goes to INSUFFICIENT_DATA when the range has no datapoint at all. The alarm is ALARM when at least
    `datapoints_to_alarm` of the N are breaching."""
    n = spec.evaluation_periods
    last = math.floor(at / spec.period_s)  # the period containing `at` is not complete yet
    span = n + extra_periods
    values = datapoints(spec, samples, last - span, span)
    real = [v for v in values if v is not None]
    if len(real) >= n:
        evaluated: list[float | None] = list(real[-n:])
        breaching = sum(_breaches(v, spec.comparison, spec.threshold) for v in real[-n:])
    else:
        evaluated = list(values[-n:])
        filled = n - len(real)
        real_breaching = sum(_breaches(v, spec.comparison, spec.threshold) for v in real)
        if spec.treat_missing_data == "ignore" and filled:
            return Evaluation(at, previous, tuple(evaluated), real_breaching)
        if spec.treat_missing_data == "missing":
            if not real:
                return Evaluation(at, "INSUFFICIENT_DATA", tuple(evaluated), 0)
            filled = 0  # only the real datapoints are considered
        breaching = real_breaching + (filled if spec.treat_missing_data == "breaching" else 0)
    state: State = "ALARM" if breaching >= spec.datapoints_to_alarm else "OK"
    return Evaluation(at, state, tuple(evaluated), breaching)


def alarm_states(spec: AlarmSpec, samples: Sequence[Sample], times: Iterable[float],
                 extra_periods: int = 0) -> list[Evaluation]:
    """The alarm evaluated at each of `times` (ascending), each evaluation starting from the previous state."""
    state: State = "INSUFFICIENT_DATA"
    out = []
    for at in times:
        evaluation = evaluate_alarm(spec, samples, at, state, extra_periods)
        state = evaluation.state
        out.append(evaluation)
    return out
