"""Several vLLM API server processes (apiServerCount, issue 15) on the real vLLM server (CPU build): the
rendered launch serves chats with the key through the proxy and refuses them without it, the readiness
gate passes with vLLM's KV cache figures, /metrics (read inside the host, not through the proxy) adds up
the requests every server answered, and the container log has neither the open-files warning nor the
`--model` deprecation warning."""

from __future__ import annotations

import json
import re
import secrets
import shutil
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
from vllm_endpoint.infra.catalog.names import (
    CONTAINER_MODEL_DIR,
    DEFAULT_VLLM_VERSION,
    VLLM_CONTAINER_PORT,
    VLLM_OPEN_FILES_TARGET,
)
from vllm_endpoint.infra.catalog.vllm_metrics import METRICS_VLLM_VERSION, VLLM_METRICS
from vllm_endpoint.infra.render.cloudwatch_agent import AgentInputs, agent_metrics, render_scrape_config
from vllm_endpoint.infra.render.host_scripts import gate_capacity_line

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
