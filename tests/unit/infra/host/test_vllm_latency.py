"""infra/host/vllm-latency.py: the percentile estimate (Prometheus' histogram_quantile on the minute's increase
of vLLM's buckets), what it does with no request and with a restarted vLLM, and the CloudWatch embedded
metric format (EMF) document it sends, checked against the rules of the EMF specification
(docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html).
The program is also run as the timer runs it: a process reading a /metrics server, with the rendered env
file, sending to a UDP listener standing in for the agent. tests/real/test_api_servers.py runs it against
the real vLLM server."""

from __future__ import annotations

import ast
import http.server
import importlib.util
import json
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vllm_endpoint.infra.catalog.names import METRICS_NAMESPACE
from vllm_endpoint.infra.catalog.vllm_metrics import VLLM_METRICS
from vllm_endpoint.infra.render.cloudwatch_agent import metrics_the_agent_drops
from vllm_endpoint.infra.render.latency import (
    LATENCY_HISTOGRAMS,
    QUANTILES,
    latency_metric_name,
    latency_metric_names,
    render_latency_env,
)

SCRIPT = Path(__file__).resolve().parents[4] / "infra" / "host" / "vllm-latency.py"


def load_latency_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vllm_latency", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["vllm_latency"] = module
    spec.loader.exec_module(module)
    return module


latency = load_latency_module()

# --------------------------------------------------------------------------------------------------
# The EMF specification's rules, as checks of a parsed document (each problem one line).
# Units CloudWatch accepts (the specification's MetricDefinition.Unit: the PutMetricData StandardUnit values).
EMF_UNITS = frozenset({
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes", "Bits",
    "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second", "Kilobytes/Second",
    "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
    "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
})
# Members of `_aws` besides the specification's two: the CloudWatch agent's extension naming the log group
# and stream of the event (the agent writes to emf/logs/default otherwise).
AGENT_METADATA = frozenset({"LogGroupName", "LogStreamName"})
# A datagram to the agent's UDP listener must fit in one UDP packet.
UDP_MAX_BYTES = 65_507


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def emf_problems(document: object, now_ms: float | None = None) -> list[str]:
    """What in `document` breaks the EMF specification (empty: a valid document)."""
    problems: list[str] = []
    if not isinstance(document, dict):
        return ["the root node is not a JSON object"]
    aws = document.get("_aws")
    if not isinstance(aws, dict):
        return ["the root node has no `_aws` metadata object"]
    if set(aws) - {"Timestamp", "CloudWatchMetrics"} - AGENT_METADATA:
        problems.append(f"`_aws` has members the specification does not define: {set(aws)}")
    timestamp = aws.get("Timestamp")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp <= 0:
        problems.append(f"`_aws.Timestamp` is not milliseconds since the epoch: {timestamp!r}")
    elif now_ms is not None and not now_ms - 14 * 86_400_000 <= timestamp <= now_ms + 2 * 3_600_000:
        # CloudWatch takes a metric 2 weeks into the past and 2 hours into the future at most.
        problems.append(f"`_aws.Timestamp` {timestamp} is too far from now {now_ms:.0f}")
    directives = aws.get("CloudWatchMetrics")
    if not isinstance(directives, list):
        return [*problems, "`_aws.CloudWatchMetrics` is not an array"]
    for d, directive in enumerate(directives):
        where = f"CloudWatchMetrics[{d}]"
        if not isinstance(directive, dict):
            problems.append(f"{where} is not an object")
            continue
        if set(directive) != {"Namespace", "Dimensions", "Metrics"}:
            problems.append(f"{where} members are {sorted(directive)}, not Namespace, Dimensions, Metrics")
        namespace = directive.get("Namespace")
        if not isinstance(namespace, str) or not 1 <= len(namespace) <= 255:
            problems.append(f"{where}.Namespace is not a string of 1-255 characters: {namespace!r}")
        dimension_sets = directive.get("Dimensions")
        if not isinstance(dimension_sets, list):
            problems.append(f"{where}.Dimensions is not an array")
            dimension_sets = []
        for dimension_set in dimension_sets:
            if not isinstance(dimension_set, list) or not all(isinstance(k, str) for k in dimension_set):
                problems.append(f"{where}: a DimensionSet is not an array of strings: {dimension_set!r}")
                continue
            if len(dimension_set) > 30:
                problems.append(f"{where}: a DimensionSet has more than 30 keys")
            for key in dimension_set:
                value = document.get(key)
                if not isinstance(value, str) or not 1 <= len(value) <= 1024:
                    problems.append(f"{where}: dimension {key!r} has no target member with a string value")
        metrics = directive.get("Metrics")
        if not isinstance(metrics, list) or not 1 <= len(metrics) <= 100:
            problems.append(f"{where}.Metrics is not an array of 1-100 MetricDefinitions")
            metrics = []
        for metric in metrics:
            if not isinstance(metric, dict) or set(metric) - {"Name", "Unit", "StorageResolution"}:
                problems.append(f"{where}: not a MetricDefinition: {metric!r}")
                continue
            name = metric.get("Name")
            if not isinstance(name, str) or not 1 <= len(name) <= 255:
                problems.append(f"{where}: a MetricDefinition's Name is not a string of 1-255: {name!r}")
                continue
            if "Unit" in metric and metric["Unit"] not in EMF_UNITS:
                problems.append(f"{where}: {name}: Unit {metric['Unit']!r} is not a CloudWatch unit")
            if "StorageResolution" in metric and metric["StorageResolution"] not in (1, 60):
                problems.append(f"{where}: {name}: StorageResolution is neither 1 nor 60")
            value = document.get(name)
            values = value if isinstance(value, list) else [value]
            if not values or len(values) > 100 or not all(_is_number(v) for v in values):
                problems.append(f"{where}: metric {name!r} has no target member with a number (or 1-100 numbers)")
    return problems


def emf_datagram_problems(datagram: bytes, now_ms: float | None = None) -> list[str]:
    """A datagram as the agent's listener reads it: one JSON document, newline-ended, within a UDP packet."""
    problems = [] if len(datagram) <= UDP_MAX_BYTES else [f"{len(datagram)} bytes: more than one UDP packet"]
    try:
        document = json.loads(datagram)
    except ValueError as err:
        return [*problems, f"not one JSON document: {err}"]
    return problems + emf_problems(document, now_ms)


# --------------------------------------------------------------------------------------------------
# The estimate.

def cumulative(bounds: Sequence[float], per_bucket: Sequence[float]) -> list[tuple[float, float]]:
    total, buckets = 0.0, []
    for bound, count in zip([*bounds, math.inf], per_bucket, strict=True):
        total += count
        buckets.append((bound, total))
    return buckets


def bucket_of_rank(q: float, buckets: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(lower, upper) bound of the bucket holding rank q * total; the +Inf bucket as its lower bound twice."""
    rank = q * buckets[-1][1]
    b = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    lower = 0.0 if b == 0 else buckets[b - 1][0]
    upper = buckets[b][0]
    return (lower, lower) if upper == math.inf else (lower, upper)


bounds_strategy = st.lists(st.floats(min_value=1e-4, max_value=1e4, allow_nan=False), min_size=1, max_size=20,
                           unique=True).map(sorted)


@st.composite
def histograms(draw: st.DrawFn) -> list[tuple[float, float]]:
    bounds = draw(bounds_strategy)
    counts = draw(st.lists(st.integers(0, 1000), min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    if sum(counts) == 0:
        counts[draw(st.integers(0, len(counts) - 1))] = 1
    return cumulative(bounds, [float(c) for c in counts])


quantiles = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=400, deadline=None)
@given(histograms(), quantiles)
def test_the_estimate_lies_in_the_bucket_that_holds_the_rank(buckets: list[tuple[float, float]], q: float) -> None:
    estimate = latency.quantile(q, buckets)
    lower, upper = bucket_of_rank(q, buckets)
    assert estimate is not None
    assert lower - 1e-9 * max(1.0, upper) <= estimate <= upper + 1e-9 * max(1.0, upper), (estimate, lower, upper)


@settings(max_examples=300, deadline=None)
@given(histograms(), quantiles, quantiles)
def test_the_estimate_grows_with_the_quantile(buckets: list[tuple[float, float]], a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert latency.quantile(low, buckets) <= latency.quantile(high, buckets) + 1e-9


def test_the_estimate_is_prometheus_histogram_quantile() -> None:
    # Buckets 1, 2, 4, +Inf with 10 observations in each: what Prometheus' histogram_quantile() answers.
    buckets = cumulative([1.0, 2.0, 4.0], [10, 10, 10, 10])
    assert latency.quantile(0.25, buckets) == 1.0  # rank 10: the top of the first bucket
    assert latency.quantile(0.5, buckets) == 2.0
    assert latency.quantile(0.375, buckets) == 1.5  # rank 15: half-way into (1, 2]
    assert latency.quantile(0.1, buckets) == pytest.approx(0.4)  # the first bucket starts at 0
    assert latency.quantile(0.9, buckets) == 4.0  # in +Inf: the highest finite bound
    assert latency.quantile(0.99, buckets) == 4.0


def test_nothing_to_estimate_from_is_no_estimate() -> None:
    assert latency.quantile(0.5, cumulative([1.0, 2.0], [0, 0, 0])) is None
    assert latency.quantile(0.5, []) is None
    assert latency.quantile(0.5, [(math.inf, 3.0)]) is None  # no finite bound
    with pytest.raises(ValueError):
        latency.quantile(1.5, cumulative([1.0], [1, 1]))


def exposition(counts: Mapping[str, Sequence[float]], bounds: Sequence[float] = (0.1, 0.5, 1.0),
               series: Sequence[str] = ('engine="0",model_name="m"',)) -> str:
    """vLLM's /metrics text for the two histograms: cumulative counts by bound (+Inf last) for each series."""
    lines = []
    for name, per_series in counts.items():
        lines.append(f"# TYPE {name} histogram")
        for labels in series:
            for le, count in zip([*(str(b) for b in bounds), "+Inf"], per_series, strict=True):
                lines.append(f'{name}_bucket{{{labels},le="{le}"}} {float(count)}')
            lines.append(f"{name}_count{{{labels}}} {float(per_series[-1])}")
            lines.append(f"{name}_sum{{{labels}}} 1.0")
    lines.append('vllm:num_requests_running{engine="0",model_name="m"} 0.0')
    return "\n".join(lines) + "\n"


TTFT, E2E = LATENCY_HISTOGRAMS


def test_the_exposition_is_read_by_series_and_bound() -> None:
    text = exposition({TTFT: [1, 2, 3, 4], E2E: [0, 0, 1, 1]}, series=('engine="0",model_name="m"',
                                                                       'engine="1",model_name="m"'))
    counts = latency.parse_buckets(text)
    assert set(counts) == {TTFT, E2E}
    assert counts[TTFT]["engine=0,model_name=m"] == {"0.1": 1.0, "0.5": 2.0, "1.0": 3.0, "+Inf": 4.0}
    assert len(counts[E2E]) == 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=4, max_size=4), st.lists(st.integers(0, 50), min_size=4, max_size=4))
def test_the_interval_is_the_increase_since_the_previous_run(before: list[int], added: list[int]) -> None:
    previous_counts = list(_accumulate(before))
    current_counts = [p + a for p, a in zip(previous_counts, _accumulate(added), strict=True)]
    previous = latency.parse_buckets(exposition({TTFT: previous_counts, E2E: previous_counts}))
    current = latency.parse_buckets(exposition({TTFT: current_counts, E2E: previous_counts}))
    values, requests = latency.estimates(previous, current)
    assert requests == {TTFT: sum(added), E2E: 0}
    # e2e had no request in the interval: no estimate (a missing datapoint), not 0.
    assert not any(name.startswith(E2E) for name in values)
    if sum(added) == 0:
        assert values == {}
    else:
        expected = cumulative([0.1, 0.5, 1.0], [float(a) for a in added])
        assert values == {latency_metric_name(TTFT, q): latency.quantile(q, expected) for q in QUANTILES}


def _accumulate(counts: Sequence[int]) -> Iterator[float]:
    total = 0.0
    for count in counts:
        total += count
        yield total


def test_a_restarted_vllm_counts_from_zero() -> None:
    previous = latency.parse_buckets(exposition({TTFT: [50, 80, 90, 100], E2E: [0, 0, 10, 10]}))
    # After the restart: 4 requests so far, fewer than before in every bucket.
    current = latency.parse_buckets(exposition({TTFT: [0, 2, 4, 4], E2E: [0, 0, 10, 12]}))
    values, requests = latency.estimates(previous, current)
    assert requests[TTFT] == 4
    assert values[latency_metric_name(TTFT, 0.5)] == latency.quantile(0.5, cumulative([0.1, 0.5, 1.0], [0, 2, 2, 0]))
    # The e2e counts only grew: an ordinary increase (2 requests, both above the last bound).
    assert requests[E2E] == 2 and values[latency_metric_name(E2E, 0.5)] == 1.0
    # Other bounds (another vLLM) count as a restart too.
    other = latency.parse_buckets(exposition({TTFT: [1, 1, 1, 1], E2E: [1, 1, 1, 1]}, bounds=(0.2, 0.4, 0.8)))
    assert latency.estimates(current, other)[1] == {TTFT: 1, E2E: 1}


def test_the_metric_names_are_the_renderers() -> None:
    assert latency.HISTOGRAMS == LATENCY_HISTOGRAMS and latency.QUANTILES == QUANTILES
    assert [latency.metric_name(h, q) for h in latency.HISTOGRAMS for q in latency.QUANTILES] == \
        list(latency_metric_names())
    assert latency_metric_names()[0] == "vllm:time_to_first_token_seconds_p50"
    # The histograms are exactly those the agent drops, as the catalog names them.
    assert set(LATENCY_HISTOGRAMS) == {m.name for m in metrics_the_agent_drops()}
    assert {m.name for m in VLLM_METRICS if m.use == "percentiles"} == set(LATENCY_HISTOGRAMS)


def test_the_document_is_valid_emf_with_the_stack_dimension() -> None:
    values = {latency_metric_name(TTFT, 0.5): 0.12, latency_metric_name(E2E, 0.99): 3.5}
    now = time.time() * 1000
    document = latency.emf_document(values, namespace=METRICS_NAMESPACE, stack="dev", timestamp_ms=int(now),
                                    log_group="/vllm-endpoint/dev/prometheus", properties={"interval_seconds": 60.0})
    assert emf_problems(document, now) == []
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert directive == {"Namespace": METRICS_NAMESPACE, "Dimensions": [["stack"]],
                         "Metrics": [{"Name": name, "Unit": "Seconds"} for name in values]}
    assert document["stack"] == "dev" and document[latency_metric_name(TTFT, 0.5)] == 0.12


def test_the_checks_catch_what_the_specification_forbids() -> None:
    good = latency.emf_document({"m": 1.0}, namespace="NS", stack="dev", timestamp_ms=1_700_000_000_000)
    assert emf_problems(good) == []

    def broken(change: Any) -> list[str]:
        document = json.loads(json.dumps(good))
        change(document)
        return emf_problems(document)

    assert broken(lambda d: d.pop("_aws"))
    assert broken(lambda d: d["_aws"].pop("Timestamp"))
    assert broken(lambda d: d["_aws"].update(Timestamp="now"))
    assert broken(lambda d: d.pop("stack"))  # a dimension without its value
    assert broken(lambda d: d.update(stack=3))
    assert broken(lambda d: d.pop("m"))  # a metric without its value
    assert broken(lambda d: d.update(m="1.0"))
    assert broken(lambda d: d.update(m=[1.0] * 101))
    assert broken(lambda d: d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0].update(Unit="Hours"))
    assert broken(lambda d: d["_aws"]["CloudWatchMetrics"][0].update(Namespace=""))
    assert broken(lambda d: d["_aws"]["CloudWatchMetrics"][0].update(Dimensions=[[f"k{i}" for i in range(31)]]))
    assert broken(lambda d: d["_aws"]["CloudWatchMetrics"][0].update(Extra=1))
    assert broken(lambda d: d["_aws"].update(Extra=1))
    assert emf_problems(good, now_ms=1_700_000_000_000 + 15 * 86_400_000)  # more than 2 weeks old


def test_the_program_uses_python_3_10_grammar_and_the_standard_library_only() -> None:
    # Ubuntu 22.04's python3 is 3.10.
    tree = ast.parse(SCRIPT.read_text(), feature_version=(3, 10))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported - set(sys.stdlib_module_names) - {"__future__"} == set()
    assert SCRIPT.read_text().startswith("#!/usr/bin/env python3\n")  # the deploy writes it 0755


# --------------------------------------------------------------------------------------------------
# The program as the timer runs it.

class _Metrics(http.server.BaseHTTPRequestHandler):
    text = ""

    def do_GET(self) -> None:
        body = type(self).text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, type[_Metrics]]]:
    handler = type("Handler", (_Metrics,), {"text": ""})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def agent() -> Iterator[socket.socket]:
    """A UDP socket standing in for the agent's EMF listener."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    try:
        yield sock
    finally:
        sock.close()


def received(sock: socket.socket) -> list[bytes]:
    datagrams = []
    while True:
        try:
            datagrams.append(sock.recv(UDP_MAX_BYTES + 1))
        except TimeoutError:
            return datagrams


def env_file_environment(text: str) -> dict[str, str]:
    """An EnvironmentFile of NAME=value lines as systemd reads it (no quotes are used)."""
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_the_program_run_by_the_timer_sends_one_document_per_busy_minute(
        metrics_server: tuple[str, type[_Metrics]], agent: socket.socket, tmp_path: Path) -> None:
    url, handler = metrics_server
    env_text = render_latency_env(vllm_address="172.18.0.2", namespace="NS", stack="dev", log_group="/g/dev")
    env = {**env_file_environment(env_text), "VLLM_METRICS_URL": url,
           "EMF_ENDPOINT": f"udp://127.0.0.1:{agent.getsockname()[1]}",
           "LATENCY_STATE_FILE": str(tmp_path / "state" / "counts.json"), "PATH": "/usr/bin:/bin"}

    def run() -> str:
        proc = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert len(proc.stdout.splitlines()) == 1, proc.stdout  # one line for the journal
        return proc.stdout

    handler.text = exposition({TTFT: [5, 10, 10, 10], E2E: [0, 5, 10, 10]})
    assert "first run" in run() and received(agent) == []
    handler.text = exposition({TTFT: [5, 10, 10, 10], E2E: [0, 5, 10, 10]})
    assert "no request" in run() and received(agent) == []
    handler.text = exposition({TTFT: [7, 12, 14, 14], E2E: [0, 5, 12, 14]})
    line = run()
    (datagram,) = received(agent)
    assert datagram.endswith(b"\n") and datagram.decode().strip() in line
    assert emf_datagram_problems(datagram, time.time() * 1000) == []
    document = json.loads(datagram)
    assert document["stack"] == "dev" and document["_aws"]["LogGroupName"] == "/g/dev"
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "NS"
    assert document[f"{TTFT}_requests"] == 4 and document[f"{E2E}_requests"] == 4
    # 4 new requests: 2 at most 0.1 s, 2 in (0.5, 1] (TTFT); 2 in (0.5, 1], 2 above 1 (e2e).
    assert document[latency_metric_name(TTFT, 0.5)] == pytest.approx(0.1)
    assert document[latency_metric_name(TTFT, 0.99)] == pytest.approx(0.5 + 0.5 * 1.96 / 2)
    assert document[latency_metric_name(E2E, 0.5)] == pytest.approx(1.0)
    assert document[latency_metric_name(E2E, 0.9)] == 1.0  # in +Inf: the highest finite bound
    # vLLM restarted: fewer requests than before, counted from zero.
    handler.text = exposition({TTFT: [1, 1, 1, 1], E2E: [0, 0, 0, 1]})
    run()
    (datagram,) = received(agent)
    assert json.loads(datagram)[f"{TTFT}_requests"] == 1


def test_stale_counts_and_an_unreachable_vllm_send_nothing(
        metrics_server: tuple[str, type[_Metrics]], agent: socket.socket, tmp_path: Path) -> None:
    url, handler = metrics_server
    state = tmp_path / "counts.json"
    args = [sys.executable, str(SCRIPT), "--metrics-url", url, "--namespace", "NS", "--stack", "dev",
            "--state-file", str(state), "--emf-endpoint", f"udp://127.0.0.1:{agent.getsockname()[1]}"]
    handler.text = exposition({TTFT: [1, 1, 1, 1], E2E: [1, 1, 1, 1]})
    subprocess.run(args, check=True, capture_output=True, timeout=30)
    saved = json.loads(state.read_text())
    state.write_text(json.dumps({**saved, "time": saved["time"] - 3600}))  # the host was stopped for an hour
    handler.text = exposition({TTFT: [2, 2, 2, 2], E2E: [2, 2, 2, 2]})
    proc = subprocess.run(args, check=True, capture_output=True, text=True, timeout=30)
    assert "old" in proc.stdout and received(agent) == []
    down = subprocess.run([*args[:3], "http://127.0.0.1:9/metrics", *args[4:]], capture_output=True, text=True,
                          timeout=30)
    assert down.returncode == 1 and down.stderr.startswith("vllm-latency: ") and received(agent) == []
