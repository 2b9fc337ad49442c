"""Issue 15, "a proxy that adds nothing measurable", on real parts: the plan deployed to the SSH test
host, the real vLLM server (CPU build) behind the real proxy (nginx >= 1.27.3, as the default proxy
image), and vLLM's own access log (uvicorn prints each request's client address and port) as the
witness of how many TCP connections the proxy opened to it.

- Through the deployed proxy, M sequential requests, each on a new client connection, reach vLLM
  over at most one pooled connection per nginx worker.
- The same requests through a proxy with the config rendered for nginx < 1.27.3 (no pool) open M
  connections: the count above is not an artefact of how it is measured.
- vLLM's container removed and created again (a new address on the Docker network): the running
  proxy finds it by name, without a restart, and pools again.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real.harness import images
from tests.real.harness.common import BUILD_DIR
from tests.real.harness.deployer import DEFAULT_NAMES, Deployment, deploy, existing_host_config, make_cache_dir
from tests.real.harness.testhost import TestHost
from vllm_endpoint.infra.catalog.names import PROXY_CONFIG_FILE, SECRET_API_KEY_ENV
from vllm_endpoint.infra.plan.spec import PortMapping
from vllm_endpoint.infra.render.container import to_docker_run
from vllm_endpoint.infra.render.host_scripts import write_files_script, write_files_stdin
from vllm_endpoint.infra.render.proxy import WORKER_PROCESSES, proxy_files, proxy_spec, render_nginx_conf

pytestmark = pytest.mark.real

SERVED_NAME = "tiny-pooled"
API_PORT = 30011
UNPOOLED_PORT = 30012
SEQUENTIAL_REQUESTS = 20
# A re-created vLLM needs its whole start again (~60 s on 2 idle cores, minutes under contention).
RESTART_TIMEOUT_S = 900
# uvicorn's access line: `INFO:     172.18.0.3:51234 - "GET /v1/models?probe=x HTTP/1.1" 200 OK`.
ACCESS_LINE = re.compile(r"(\d+\.\d+\.\d+\.\d+):(\d+) - \"GET (\S+) HTTP/1\.1\" (\d+)")


@pytest.fixture(scope="module")
def endpoint(test_host: TestHost, vllm_image: str, tiny_model: Path) -> Iterator[Deployment]:
    cache = make_cache_dir(test_host, BUILD_DIR / "host-cache" / f"{test_host.name}-proxy-keepalive")
    # The connections are counted in vLLM's access log, which the product turns off (a key a client puts in
    # a URL would land in it): this deployment turns it back on, the one change from what a stack runs.
    config = existing_host_config(test_host, cache, modelPath=str(tiny_model), servedModelName=SERVED_NAME,
                                  maxModelLen="512", apiPort=str(API_PORT),
                                  extraArgs='["--no-disable-uvicorn-access-log"]')
    images.build_nginx_image(test_host, tag=config.access.proxy_image)
    try:
        yield deploy(test_host, config, api_key=secrets.token_urlsafe(36))
    finally:  # also when the deploy itself fails
        test_host.remove_all_containers()
        test_host.docker("network", "rm", DEFAULT_NAMES.network, check=False)
        shutil.rmtree(cache, ignore_errors=True)


def get(url: str, api_key: str) -> int:
    """One request on a fresh client connection (urllib does not keep connections)."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


def vllm_connections(deployment: Deployment, probe: str, expected: int) -> set[tuple[str, int]]:
    """(address, port) of the connections vLLM served the requests tagged `probe` on, once its access
    log shows all `expected` of them (log lines reach `docker logs` a little after the answer)."""
    deadline = time.monotonic() + 30
    while True:
        logs = deployment.host.docker("logs", deployment.plan.names.vllm_container)
        seen = [match for match in ACCESS_LINE.finditer(logs.stdout + logs.stderr) if probe in match[3]]
        if len(seen) >= expected or time.monotonic() > deadline:
            assert len(seen) == expected, f"vLLM logged {len(seen)} of {expected} requests tagged {probe}"
            assert all(match[4] == "200" for match in seen)
            return {(match[1], int(match[2])) for match in seen}
        time.sleep(1)


def send_sequentially(deployment: Deployment, port: int, probe: str) -> None:
    for i in range(SEQUENTIAL_REQUESTS):
        url = f"http://{deployment.host.address}:{port}/v1/models?probe={probe}-{i}"
        assert get(url, deployment.api_key) == 200


def inspect(host: TestHost, container: str) -> dict[str, object]:
    return dict(json.loads(host.docker("inspect", container).stdout)[0])


def address_on(host: TestHost, container: str, network: str) -> str:
    networks = inspect(host, container)["NetworkSettings"]
    assert isinstance(networks, dict)
    return str(networks["Networks"][network]["IPAddress"])


def test_sequential_requests_through_the_proxy_share_pooled_connections_to_vllm(endpoint: Deployment) -> None:
    assert endpoint.plan.proxy_settings.pooled_upstream  # the default proxy image is nginx >= 1.27.3
    probe = secrets.token_hex(6)
    send_sequentially(endpoint, API_PORT, probe)
    connections = vllm_connections(endpoint, probe, SEQUENTIAL_REQUESTS)
    proxy_address = address_on(endpoint.host, endpoint.plan.names.proxy_container, endpoint.plan.network)
    assert {address for address, _ in connections} == {proxy_address}
    # Each nginx worker keeps its own pool; a new client connection may land on either worker.
    assert len(connections) <= WORKER_PROCESSES, sorted(connections)


def test_the_config_for_nginx_before_1_27_3_opens_a_connection_per_request(endpoint: Deployment) -> None:
    """The contrast that shows the count above measures pooling: the same proxy, the unpooled form."""
    host, plan = endpoint.host, endpoint.plan
    directory = f"{plan.host_cache_dir}/proxy-unpooled"
    conf = render_nginx_conf(dataclasses.replace(plan.proxy_settings, pooled_upstream=False))
    modes, contents = proxy_files(plan, endpoint.api_key, None, None)
    host.ssh(write_files_script(directory, modes), input=write_files_stdin({**contents, PROXY_CONFIG_FILE: conf}))
    spec = dataclasses.replace(proxy_spec(plan), name=f"{plan.names.proxy_container}-unpooled",
                               ports=(PortMapping(UNPOOLED_PORT, plan.proxy.ports[0].container_port),),
                               mounts=tuple(dataclasses.replace(m, source=m.source.replace(plan.proxy_dir, directory))
                                            for m in plan.proxy.mounts))
    subprocess.run(["bash", "-euo", "pipefail", "-c", to_docker_run(spec)], env=host.docker_env(), check=True,
                   capture_output=True, text=True, timeout=120)
    try:
        host.wait_http(f"http://{host.address}:{UNPOOLED_PORT}/health", timeout=60, container=spec.name)
        probe = secrets.token_hex(6)
        send_sequentially(endpoint, UNPOOLED_PORT, probe)
        assert len(vllm_connections(endpoint, probe, SEQUENTIAL_REQUESTS)) == SEQUENTIAL_REQUESTS
    finally:
        host.docker("rm", "-f", spec.name, check=False)


def test_a_re_created_vllm_container_is_found_by_the_running_proxy_and_pooled_again(
        endpoint: Deployment, busybox_image: str) -> None:
    host, names, network = endpoint.host, endpoint.plan.names, endpoint.plan.network
    proxy_before = inspect(host, names.proxy_container)["State"]
    old_address = address_on(host, names.vllm_container, network)
    host.docker("rm", "-f", names.vllm_container)
    # Something else takes the freed address, so the new vLLM container certainly gets another one.
    placeholder = "proxy-keepalive-placeholder"
    host.docker("run", "-d", "--name", placeholder, "--network", network, busybox_image, "sleep", "3600")
    try:
        url = f"http://{host.address}:{API_PORT}/v1/models"
        # Without vLLM the proxy answers for itself (502), and keeps running.
        assert get(url, endpoint.api_key) == 502
        env = host.docker_env() | {SECRET_API_KEY_ENV: endpoint.api_key}
        subprocess.run(["bash", "-euo", "pipefail", "-c", to_docker_run(endpoint.vllm)], env=env, check=True,
                       capture_output=True, text=True, timeout=300)
        new_address = address_on(host, names.vllm_container, network)
        assert new_address != old_address
        host.wait_http(url, timeout=RESTART_TIMEOUT_S, container=names.vllm_container,
                       headers={"Authorization": f"Bearer {endpoint.api_key}"})
    finally:
        host.docker("rm", "-f", placeholder, check=False)
    proxy_after = inspect(host, names.proxy_container)["State"]
    assert isinstance(proxy_before, dict) and isinstance(proxy_after, dict)
    # The same nginx process all along: not restarted by Docker, not re-created.
    assert (proxy_after["Pid"], proxy_after["StartedAt"]) == (proxy_before["Pid"], proxy_before["StartedAt"])
    assert inspect(host, names.proxy_container)["RestartCount"] == 0

    probe = secrets.token_hex(6)
    send_sequentially(endpoint, API_PORT, probe)
    assert len(vllm_connections(endpoint, probe, SEQUENTIAL_REQUESTS)) <= WORKER_PROCESSES
