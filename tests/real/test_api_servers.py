"""Several vLLM API server processes (apiServerCount, issue 15) on the real vLLM server (CPU build): the
rendered launch serves chats with the key through the proxy and refuses them without it, the readiness
gate passes with vLLM's KV cache figures, /metrics (read inside the host, not through the proxy) adds up
the requests every server answered, and the container log has neither the open-files warning nor the
`--model` deprecation warning."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import secrets
import shutil
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import yaml

from tests.real.harness import images
from tests.real.harness.common import BUILD_DIR
from tests.real.harness.deployer import (
    DEFAULT_NAMES,
    Deployment,
    assert_serves,
    deploy,
    existing_host_config,
    grantable_open_files,
    make_cache_dir,
)
from tests.real.harness.testhost import TestHost
from tests.unit.infra.host.test_vllm_latency import SCRIPT, emf_datagram_problems
from vllm_endpoint.infra.catalog.names import (
    CONTAINER_MODEL_DIR,
    DEFAULT_VLLM_VERSION,
    VLLM_CONTAINER_PORT,
    VLLM_OPEN_FILES_TARGET,
)
from vllm_endpoint.infra.catalog.vllm_metrics import METRICS_VLLM_VERSION, VLLM_METRICS
from vllm_endpoint.infra.render.alarms import (
    RUNNING,
    WAITING,
    alarm_states,
    datapoints,
    idle_stop_alarm,
    published_samples,
)
from vllm_endpoint.infra.render.cloudwatch_agent import AgentInputs, agent_metrics, render_scrape_config
from vllm_endpoint.infra.render.host_scripts import gate_capacity_line
from vllm_endpoint.infra.render.latency import LATENCY_HISTOGRAMS, latency_metric_name, metrics_url

pytestmark = pytest.mark.real

SERVED_NAME = "tiny-multi"
API_SERVERS = 2
# Concurrent requests, so that the proxy opens several connections to vLLM and both servers accept some.
PARALLEL, REQUESTS = 8, 24

# Run inside the vLLM container (its own Python and prometheus_client): the Prometheus multiprocess
# directory vLLM made (it sets PROMETHEUS_MULTIPROC_DIR in its own environment, not the container's),
# and each process's vllm:request_success_total from its counter file.
_PER_PROCESS_COUNTERS = r"""
import glob, json, os, re
from prometheus_client.mmap_dict import MmapedDict
dirs = set()
for path in glob.glob('/proc/[0-9]*/environ'):
    try:
        data = open(path, 'rb').read()
    except OSError:
        continue
    for item in data.split(b'\0'):
        if item.startswith(b'PROMETHEUS_MULTIPROC_DIR='):
            dirs.add(item.split(b'=', 1)[1].decode())
per_pid = {}
for folder in dirs:
    for path in glob.glob(os.path.join(folder, 'counter_*.db')):
        pid = re.search(r'counter_(\d+)\.db$', path).group(1)
        for key, value, _ in MmapedDict(path, read_mode=True).read_all_values():
            if json.loads(key)[1] == 'vllm:request_success_total':
                per_pid[pid] = per_pid.get(pid, 0.0) + value
print(json.dumps({'dirs': sorted(dirs), 'per_pid': per_pid}))
"""

_METRICS = (
    "import urllib.request; "
    f"print(urllib.request.urlopen('http://127.0.0.1:{VLLM_CONTAINER_PORT}/metrics', timeout=30).read().decode())"
)


# The open-files limit this machine's Docker can give a container (grantable_open_files: 20,000 here,
# where no process may raise a hard limit); the harness's stack config sets containerOpenFiles to it, as
# the deploy's host check would ask a user of such a host to. Below vLLM's target, vLLM's warning is then
# expected instead of absent.
LIMIT = grantable_open_files()
VLLM_WANTS = VLLM_OPEN_FILES_TARGET


@pytest.fixture(scope="module")
def endpoint(test_host: TestHost, vllm_image: str, tiny_model: Path) -> Iterator[Deployment]:
    yield from _deployed(test_host, tiny_model)


def _deployed(test_host: TestHost, tiny_model: Path) -> Iterator[Deployment]:
    config = existing_host_config(
        test_host, BUILD_DIR / "host-cache" / f"{test_host.name}-api-servers",
        modelPath=str(tiny_model), servedModelName=SERVED_NAME, maxModelLen="512", apiServerCount=str(API_SERVERS),
    )
    images.build_nginx_image(test_host, tag=config.access.proxy_image)
    make_cache_dir(test_host, Path(config.existing_host.host_cache_dir))
    try:
        yield deploy(test_host, config, api_key=secrets.token_urlsafe(36))
    finally:
        test_host.remove_all_containers()
        test_host.docker("network", "rm", DEFAULT_NAMES.network, check=False)
        shutil.rmtree(config.existing_host.host_cache_dir, ignore_errors=True)


def container_log(d: Deployment) -> str:
    logged = d.host.docker("logs", d.plan.vllm.name)
    return logged.stdout + logged.stderr


def in_vllm(d: Deployment, code: str) -> str:
    return d.host.docker("exec", d.plan.vllm.name, "python3", "-c", code).stdout


def success_total(metrics_text: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
               if line.startswith("vllm:request_success_total"))


def test_the_rendered_launch_asks_for_the_api_servers_and_the_open_files_limit(endpoint: Deployment) -> None:
    args = endpoint.plan.vllm.args
    assert args[0] == CONTAINER_MODEL_DIR  # the model, positionally (`vllm serve MODEL`)
    assert "--model" not in args
    assert args[args.index("--api-server-count") + 1] == str(API_SERVERS)
    assert f"--api-server-count {API_SERVERS}" in endpoint.docker_run
    assert endpoint.docker_run.count(f"--ulimit nofile={LIMIT}:{LIMIT}") == 2  # vLLM and the proxy
    limits = in_vllm(endpoint, "import resource; print(*resource.getrlimit(resource.RLIMIT_NOFILE))").split()
    assert [int(n) for n in limits] == [LIMIT, LIMIT]
    proxy = endpoint.host.docker("inspect", "--format", "{{json .HostConfig.Ulimits}}", endpoint.plan.proxy.name)
    assert {"Name": "nofile", "Soft": LIMIT, "Hard": LIMIT} in json.loads(proxy.stdout)


def test_the_gate_passed_with_vllms_kv_cache_figures_and_the_timeline(endpoint: Deployment) -> None:
    out = endpoint.gate_output
    assert f"ready: GET http://127.0.0.1:{endpoint.plan.api_port}/v1/models answered 200" in out
    assert "container_started" in out and "server_ready" in out
    # The engine logs its KV cache figures itself; several API servers only silence the periodic stats lines.
    line = gate_capacity_line(out)
    assert line is not None and re.search(r"KV cache size: [\d,]+ tokens", line), out
    assert "Maximum concurrency for 512 tokens per request" in line
    print(line)


def test_chats_with_the_key_through_the_proxy_and_401_without_it(endpoint: Deployment) -> None:
    assert_serves(endpoint, SERVED_NAME)

    def keyless(_: int) -> int:
        request = urllib.request.Request(endpoint.endpoint_url + "/chat/completions",
                                         data=b'{"model": "x", "messages": []}',
                                         headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=30)
        except urllib.error.HTTPError as err:
            return err.code
        return 200

    # Every server checks the key: several requests at once reach both.
    with ThreadPoolExecutor(PARALLEL) as pool:
        assert set(pool.map(keyless, range(2 * PARALLEL))) == {401}
    wrong = openai.OpenAI(base_url=endpoint.endpoint_url, api_key="wrong-" + "x" * 40, max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_metrics_inside_the_host_add_up_the_requests_of_every_api_server(endpoint: Deployment) -> None:
    before = json.loads(in_vllm(endpoint, _PER_PROCESS_COUNTERS))
    scraped_before = success_total(in_vllm(endpoint, _METRICS))
    assert scraped_before == sum(before["per_pid"].values())
    client = openai.OpenAI(base_url=endpoint.endpoint_url, api_key=endpoint.api_key, max_retries=0, timeout=120)

    def chat(i: int) -> int:
        reply = client.chat.completions.create(model=SERVED_NAME, messages=[{"role": "user", "content": f"hi {i}"}],
                                               max_tokens=4, temperature=0)
        assert reply.usage is not None
        return reply.usage.completion_tokens

    with ThreadPoolExecutor(PARALLEL) as pool:
        assert all(tokens > 0 for tokens in pool.map(chat, range(REQUESTS)))

    after = json.loads(in_vllm(endpoint, _PER_PROCESS_COUNTERS))
    assert len(after["dirs"]) == 1, after  # vLLM's own temporary directory, made for several servers
    served = {pid: after["per_pid"].get(pid, 0.0) - before["per_pid"].get(pid, 0.0) for pid in after["per_pid"]}
    print(f"vllm:request_success_total by API server process after {REQUESTS} chats: {served}")
    # Both servers answered some of them, and together all of them.
    assert sum(1 for count in served.values() if count > 0) == API_SERVERS, served
    assert sum(served.values()) == REQUESTS, served
    # Whichever server answers a scrape, /metrics reports the sum over all of them.
    for _ in range(4):
        assert success_total(in_vllm(endpoint, _METRICS)) == scraped_before + REQUESTS


def test_the_log_has_no_open_files_or_model_option_warning(endpoint: Deployment) -> None:
    log = container_log(endpoint)
    if LIMIT >= VLLM_WANTS:
        assert "failed to automatically increase" not in log and "Found ulimit of" not in log
    else:
        # This machine cannot grant vLLM's target: vLLM says so, naming exactly the limit the container got.
        assert f"Found ulimit of {LIMIT} and failed to automatically increase" in log
    assert "instead of via the `--model` option" not in log


def prometheus_types(metrics_text: str) -> dict[str, str]:
    """{name: type} from the `# TYPE name type` lines of Prometheus' text format."""
    types = {}
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            types[name] = kind.strip()
    return types


def sample_names(metrics_text: str) -> set[str]:
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in metrics_text.splitlines()
            if line and not line.startswith("#")}


def test_the_catalog_metrics_are_what_the_real_server_exposes_where_the_agent_scrapes(endpoint: Deployment) -> None:
    """Every metric of infra/catalog/data/vllm-metrics.yaml, by name and type, on the real server's /metrics (a
    renamed metric in a later vLLM fails here), and the rendered scrape config's target answers with them from
    inside the host."""
    assert METRICS_VLLM_VERSION == DEFAULT_VLLM_VERSION  # the file describes the vLLM the tier runs
    text = in_vllm(endpoint, _METRICS)
    types, samples = prometheus_types(text), sample_names(text)
    print("vLLM's own metrics and types:", {n: t for n, t in sorted(types.items()) if n.startswith("vllm:")})
    for metric in VLLM_METRICS:
        assert types.get(metric.name) == metric.type, (metric.name, types.get(metric.name))
        expected = ({f"{metric.name}_bucket", f"{metric.name}_sum", f"{metric.name}_count"}
                    if metric.type == "histogram" else {metric.name})
        assert expected <= samples, (metric.name, expected - samples)

    networks = json.loads(endpoint.host.docker("inspect", "--format", "{{json .NetworkSettings.Networks}}",
                                               endpoint.plan.vllm.name).stdout)
    inputs = AgentInputs(stack="real-tests", namespace="VllmEndpoint/test",
                         vllm_address=networks[endpoint.plan.network]["IPAddress"])
    job = yaml.safe_load(render_scrape_config(inputs))["scrape_configs"][0]
    (target,) = job["static_configs"][0]["targets"]
    assert not target.endswith(f":{endpoint.plan.api_port}")
    # The agent runs on the host: the same request, from the host's network namespace over SSH.
    scraped = endpoint.host.ssh(f"curl -sS --fail --max-time 30 {job['scheme']}://{target}{job['metrics_path']}").stdout
    assert prometheus_types(scraped).items() >= {m.name: m.type for m in VLLM_METRICS}.items()
    # What the scrape config keeps (Prometheus anchors the regex) is every published catalog metric, no more.
    kept = {name for name in sample_names(scraped) if re.fullmatch(job["metric_relabel_configs"][0]["regex"], name)}
    assert kept == {m.name for m in agent_metrics()}


# ----------------------------------------------------------------------------------------------
# The idle-stop rule (issue 13) on a series recorded from this real server: a burst of chats, then silence.
# The deployed alarm has one-minute periods (one agent scrape each); here one recorded second stands for one
# minute, so the same spec (infra/render/alarms.py) is evaluated with its period scaled from 60 s to 1 s and
# every count of periods unchanged: idleStopMinutes=15 becomes 15 s of silence.
IDLE_STOP_MINUTES = 15
DEPLOYED_PERIOD_S, SCALED_PERIOD_S = 60, 1  # a minute of the real alarm = a second of the recording
BURST_S, RECORD_S = 8.0, 36.0  # the recording: 2 s before the burst, the burst, then silence

# Run inside the vLLM container: scrape its own /metrics once a second, half-way into each second (one scrape
# per scaled period, as the agent's once-a-minute scrape is one per real period), summing each wanted metric
# over its label sets; one JSON line per scrape.
_RECORD_METRICS = r"""
import json, math, re, sys, time, urllib.request
wanted, end, port = set(sys.argv[1].split(',')), time.time() + float(sys.argv[2]), sys.argv[3]
while True:
    now = time.time()
    target = math.floor(now) + 0.5
    time.sleep((target if target > now else target + 1) - now)
    at = time.time()
    if at > end:
        break
    text = urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=5).read().decode()
    values = dict.fromkeys(wanted, 0.0)
    for line in text.splitlines():
        name = re.split(r'[{ ]', line, maxsplit=1)[0]
        if name in wanted:
            values[name] += float(line.rsplit(' ', 1)[1])
    print(json.dumps({'t': at, 'v': values}), flush=True)
"""


def test_the_idle_stop_alarm_says_busy_during_a_burst_and_idle_only_after_the_span_of_silence(
        endpoint: Deployment) -> None:
    spec = idle_stop_alarm("VllmEndpoint/test", "i-0123456789abcdef0", IDLE_STOP_MINUTES)
    assert (spec.period_s, spec.evaluation_periods) == (DEPLOYED_PERIOD_S, IDLE_STOP_MINUTES)
    scaled = spec.with_period(SCALED_PERIOD_S)
    # The alarm's metric, and the gauges for comparison (printed).
    names = ",".join((spec.metric.metric_name, RUNNING, WAITING))
    client = openai.OpenAI(base_url=endpoint.endpoint_url, api_key=endpoint.api_key, max_retries=0, timeout=120)
    replies: list[float] = []

    def chats_until(deadline: float) -> int:
        tokens = 0
        while time.time() < deadline:
            reply = client.chat.completions.create(model=SERVED_NAME, messages=[{"role": "user", "content": "count"}],
                                                   max_tokens=16, temperature=0)
            assert reply.usage is not None
            tokens += reply.usage.completion_tokens
            replies.append(time.time())
        return tokens

    with ThreadPoolExecutor(1 + PARALLEL) as pool:
        recording = pool.submit(endpoint.host.docker, "exec", endpoint.plan.vllm.name, "python3", "-c",
                                _RECORD_METRICS, names, str(RECORD_S), str(VLLM_CONTAINER_PORT),
                                timeout=RECORD_S + 60)
        time.sleep(2.5)  # a scrape or two of the quiet server first (the agent sends counter increases from the 2nd)
        burst_start = time.time()
        generated = sum(pool.map(chats_until, [burst_start + BURST_S] * PARALLEL))
        burst_end = max(replies)
        lines = recording.result().stdout.splitlines()
    scrapes = [(row["t"], row["v"]) for row in map(json.loads, lines)]
    samples = published_samples(scrapes)
    first, last = math.floor(scrapes[0][0]), math.floor(scrapes[-1][0])
    values = datapoints(scaled, samples, first, last - first + 1)
    busy = [first + i for i, v in enumerate(values) if v]
    evaluations = alarm_states(scaled, samples, range(first + 1, last + 2))
    alarm_at = next((e.at for e in evaluations if e.state == "ALARM"), None)
    print(f"{len(replies)} chats, {generated} tokens generated in {burst_end - burst_start:.1f} s; {len(scrapes)} "
          f"scrapes over {scrapes[-1][0] - scrapes[0][0]:.1f} s")
    running = datapoints(dataclasses.replace(scaled, metric=dataclasses.replace(scaled.metric, metric_name=RUNNING,
                                                                               statistic="Maximum")),
                         samples, first, last - first + 1)
    print("per period (s after the first scrape): tokens generated =",
          {k - first: v for k, v in zip(range(first, last + 1), values, strict=True)})
    print("                                       requests running =",
          {k - first: v for k, v in zip(range(first, last + 1), running, strict=True)})
    print("alarm state by evaluation time:", {int(e.at) - first: e.state for e in evaluations})
    print(f"last busy period +{busy[-1] - first} s, last reply +{burst_end - first:.1f} s, first ALARM "
          f"+{(alarm_at or 0) - first} s (needs {IDLE_STOP_MINUTES} idle periods)")

    assert not any(values[: math.floor(burst_start) - first]), "the server was busy before the burst"
    # Busy during the burst: activity in (nearly) every period of it, and the alarm never ALARM then.
    burst_periods = range(math.floor(burst_start) + 1, math.floor(burst_end))
    assert sum(1 for k in burst_periods if k in busy) >= len(burst_periods) - 1, (busy, burst_periods)
    assert busy[-1] <= math.floor(burst_end) + 1, "activity after the last reply"
    # Idle only after the configured span of silence: never before busy + 1 + N periods, and then indeed.
    assert all(e.state != "ALARM" for e in evaluations if e.at < busy[-1] + 1 + IDLE_STOP_MINUTES)
    assert alarm_at is not None, "the alarm never went to ALARM in the silence"
    assert alarm_at - burst_end >= IDLE_STOP_MINUTES * SCALED_PERIOD_S - 1
    assert alarm_at <= busy[-1] + 1 + IDLE_STOP_MINUTES + 2, "a few missing scrapes at most delay it"


# ----------------------------------------------------------------------------------------------
# The latency percentiles (issue 13): infra/host/vllm-latency.py on the host, as its timer runs it on an AWS
# instance, around a burst of streaming chats whose time to first token and total time the official client
# measures. A UDP socket on the host's loopback stands in for the agent's EMF listener.
LATENCY_CHATS, LATENCY_PARALLEL = 24, 4

# Run on the host (its python3; the program on stdin's first argument): one run of the program, then every
# datagram that reached the stand-in listener within 2 s.
_LATENCY_RUN = r"""
import json, socket, subprocess, sys
script, url, state = sys.argv[1:4]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(('127.0.0.1', 0))
sock.settimeout(2)
proc = subprocess.run([sys.executable, script, '--metrics-url', url, '--namespace', 'VllmEndpoint/test',
                       '--stack', 'real-tests', '--state-file', state,
                       '--emf-endpoint', 'udp://127.0.0.1:%d' % sock.getsockname()[1]],
                      capture_output=True, text=True, timeout=60)
datagrams = []
try:
    while True:
        datagrams.append(sock.recv(70000).decode())
except socket.timeout:
    pass
print(json.dumps({'rc': proc.returncode, 'stdout': proc.stdout, 'stderr': proc.stderr, 'datagrams': datagrams}))
"""


def _bucket_around(value: float, bounds: list[float]) -> tuple[float, float]:
    """(lower, upper] of vLLM's bucket that holds `value`; above the last bound, (last, last): the estimate
    of a rank in +Inf is the last bound."""
    lower = max([0.0, *(b for b in bounds if b < value)])
    upper = min((b for b in bounds if b >= value), default=lower)
    return lower, upper


def _histogram_delta(before: str, after: str, name: str) -> tuple[list[tuple[float, float]], float]:
    """A histogram's increase between two /metrics texts, summed over its series: (bound, cumulative count)
    pairs, and the increase of its _sum (the exact total of the observations)."""
    def read(text: str) -> tuple[dict[float, float], float]:
        buckets: dict[float, float] = {}
        total = 0.0
        for line in text.splitlines():
            if line.startswith(f"{name}_bucket{{"):
                le = re.search(r'le="([^"]+)"', line)
                assert le is not None, line
                bound = math.inf if le[1] == "+Inf" else float(le[1])
                buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
            elif line.startswith(f"{name}_sum{{"):
                total += float(line.rsplit(" ", 1)[1])
        return buckets, total

    (b0, s0), (b1, s1) = read(before), read(after)
    return sorted((bound, b1[bound] - b0.get(bound, 0.0)) for bound in b1), s1 - s0


def test_the_latency_percentiles_bracket_the_clients_own_median_times(endpoint: Deployment) -> None:
    """The estimate is as precise as vLLM's buckets allow: its median lies in the bucket that holds the median
    rank of the burst's own increase (read here, apart from the program), and at most at the top of the bucket
    of the client's median: vLLM's times are inside the client's (which adds the proxy, the HTTP and the API
    server's own work, so the client's median may sit a bucket or two higher)."""
    ttft_name, e2e_name = LATENCY_HISTOGRAMS
    networks = json.loads(endpoint.host.docker("inspect", "--format", "{{json .NetworkSettings.Networks}}",
                                               endpoint.plan.vllm.name).stdout)
    url = metrics_url(networks[endpoint.plan.network]["IPAddress"])
    folder = endpoint.host.ssh("mktemp -d").stdout.strip()
    script = f"{folder}/vllm-latency.py"
    endpoint.host.ssh(f"cat > {script}", input=SCRIPT.read_text())

    def latency_run() -> dict[str, object]:
        out = endpoint.host.ssh(f"python3 - {script} {url} {folder}/counts.json", input=_LATENCY_RUN).stdout
        result: dict[str, object] = json.loads(out)
        assert result["rc"] == 0, result
        return result

    client = openai.OpenAI(base_url=endpoint.endpoint_url, api_key=endpoint.api_key, max_retries=0, timeout=120)

    def timed_chat(i: int) -> tuple[float, float]:
        start = time.perf_counter()
        first: float | None = None
        stream = client.chat.completions.create(model=SERVED_NAME, messages=[{"role": "user", "content": f"count {i}"}],
                                                max_tokens=16, temperature=0, stream=True)
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter()
        end = time.perf_counter()
        return (first if first is not None else end) - start, end - start

    try:
        baseline = latency_run()
        assert "first run" in str(baseline["stdout"]) and baseline["datagrams"] == [], baseline
        before = in_vllm(endpoint, _METRICS)
        with ThreadPoolExecutor(LATENCY_PARALLEL) as pool:
            timings = list(pool.map(timed_chat, range(LATENCY_CHATS)))
        after = in_vllm(endpoint, _METRICS)
        sent = latency_run()
    finally:
        endpoint.host.ssh(f"rm -rf -- {folder}", check=False)
    print(sent["stdout"], end="")
    datagrams = sent["datagrams"]
    assert isinstance(datagrams, list) and len(datagrams) == 1, sent
    assert emf_datagram_problems(datagrams[0].encode(), time.time() * 1000) == []
    document = json.loads(datagrams[0])
    assert document["stack"] == "real-tests"
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "VllmEndpoint/test"
    # Every chat of the burst, and nothing else, is in the interval.
    assert document[f"{ttft_name}_requests"] == document[f"{e2e_name}_requests"] == LATENCY_CHATS

    client_medians = {ttft_name: statistics.median(t for t, _ in timings),
                      e2e_name: statistics.median(t for _, t in timings)}
    client_means = {ttft_name: statistics.fmean(t for t, _ in timings),
                    e2e_name: statistics.fmean(t for _, t in timings)}
    for name in LATENCY_HISTOGRAMS:
        buckets, total_s = _histogram_delta(before, after, name)
        assert buckets[-1][1] == LATENCY_CHATS, buckets
        bounds = [bound for bound, _ in buckets[:-1]]
        estimates = {q: document[latency_metric_name(name, q)] for q in (0.5, 0.9, 0.99)}
        rank = 0.5 * LATENCY_CHATS
        b = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
        rank_bucket = (0.0 if b == 0 else buckets[b - 1][0], min(buckets[b][0], bounds[-1]))
        client_bucket = _bucket_around(client_medians[name], bounds)
        print(f"{name}: estimated " + ", ".join(f"p{round(q * 100)} {v:.4f} s" for q, v in estimates.items())
              + f"; the median rank's bucket {rank_bucket}; vLLM's exact mean {total_s / LATENCY_CHATS:.4f} s; "
              f"client median {client_medians[name]:.4f} s (bucket {client_bucket}), client mean "
              f"{client_means[name]:.4f} s")
        assert estimates[0.5] <= estimates[0.9] <= estimates[0.99]
        assert rank_bucket[0] <= estimates[0.5] <= rank_bucket[1], (name, estimates, buckets)
        # vLLM's times lie inside the client's: never above the client's median bucket (an estimate is at most
        # the last bound, the top of a client median above it).
        assert estimates[0.5] <= client_bucket[1]
        assert total_s / LATENCY_CHATS <= client_means[name]
