"""Issue 12's first proof on real parts: the proxy's ECS container definition, rendered to `docker run` the way
the ECS agent runs it (infra/render/ecs.py), starts on the test host's Docker and answers every request as the
proxy started from its own spec (`docker_run_argv`) does.

No vLLM server is started (the real tier is near its time budget): a busybox httpd stands in for it, answering
/health and /v1/models, under the vLLM container's name and alias. The ECS task is emulated as awsvpc runs it: a
"pause" container holds the task's network namespace (here on the plan's Docker network, whose DNS the proxy's
nginx.conf asks for "vllm"; on ECS the proxy will reach 127.0.0.1 instead, which is the VllmService's change) and
publishes the port the task's address would take; the proxy joins that namespace.
"""

from __future__ import annotations

import http.client
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.real.harness import images
from tests.real.harness.deployer import existing_host_config
from tests.real.harness.testhost import TestHost
from vllm_endpoint.infra.catalog.names import PROXY_CONTAINER_PORT, SECRET_API_KEY_ENV, VLLM_UPSTREAM_HOST
from vllm_endpoint.infra.plan.deployment import DeploymentPlan, build_plan
from vllm_endpoint.infra.render.container import docker_run_argv
from vllm_endpoint.infra.render.ecs import ecs_to_docker_run, plan_ecs_task
from vllm_endpoint.infra.render.host_scripts import write_files_script, write_files_stdin
from vllm_endpoint.infra.render.proxy import proxy_files, proxy_spec

pytestmark = pytest.mark.real

DIRECT_PORT = 30021
ECS_PORT = 30022
PAUSE = "ecs-task-pause"
API_KEY_ARN = "arn:aws:ssm:us-east-1:123456789012:parameter/vllm-endpoint/test/api-key"
# Paths sent as written (no client-side normalisation): the allowlist, its tricks, and what it refuses.
PATHS = ["/health", "/v1/models", "/v1/../metrics", "/metrics", "/", "/invocations", "/tokenize", "/v1/%2e%2e/metrics",
         "/v1/models%0d%0aX:y", "/docs", "/v2/models"]


@dataclass
class Proxies:
    host: TestHost
    plan: DeploymentPlan
    api_key: str
    ecs_name: str
    ecs_definition: dict[str, Any]


@pytest.fixture(scope="module")
def proxies(test_host: TestHost, busybox_image: str, cache_dir: Path) -> Iterator[Proxies]:
    host = test_host
    plan = build_plan(existing_host_config(host, cache_dir, apiPort=str(DIRECT_PORT)))
    api_key = secrets.token_urlsafe(36)
    images.build_nginx_image(host, tag=plan.config.access.proxy_image)
    modes, contents = proxy_files(plan, api_key, None, None)
    host.ssh(write_files_script(plan.proxy_dir, modes), input=write_files_stdin(contents))
    host.docker("network", "create", plan.network)
    # The stand-in for vLLM, where the proxy looks for it.
    host.docker("run", "--detach", "--name", plan.names.vllm_container, "--network", plan.network,
                "--network-alias", VLLM_UPSTREAM_HOST, busybox_image)
    # 1. The proxy as the single endpoint runs it.
    host.docker(*docker_run_argv(proxy_spec(plan))[1:])
    # 2. The same proxy from its ECS container definition (the task also renders vLLM: one GPU, unused here).
    task = plan_ecs_task(plan, secret_arns={SECRET_API_KEY_ENV: API_KEY_ARN}, network_mode="awsvpc", gpu_count=1)
    definition = dict(task.container_definitions[1])
    assert definition["name"] == plan.names.proxy_container
    definition["name"] = f"{plan.names.proxy_container}-ecs"  # beside the first one on the same engine
    host.docker("run", "--detach", "--name", PAUSE, "--network", plan.network,
                "--publish", f"{ECS_PORT}:{PROXY_CONTAINER_PORT}", busybox_image, "sleep", "86400")
    host.docker(*ecs_to_docker_run(definition, task.volumes, network_mode="awsvpc",
                                   task_network=f"container:{PAUSE}")[1:])
    for port, name in ((DIRECT_PORT, plan.names.proxy_container), (ECS_PORT, definition["name"])):
        host.wait_http(f"http://{host.address}:{port}/health", timeout=60, container=name)
    yield Proxies(host, plan, api_key, definition["name"], definition)
    # cache_dir removes the containers and the network.


def answer(host: TestHost, port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(host.address, port, timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for key, value in headers.items():
            connection.putheader(key, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_the_ecs_rendered_proxy_answers_as_the_directly_run_proxy(proxies: Proxies) -> None:
    host = proxies.host
    with_key = {"Authorization": f"Bearer {proxies.api_key}"}
    seen = {}
    for method in ("GET", "POST"):
        for path in PATHS:
            for headers in ({}, with_key):
                direct = answer(host, DIRECT_PORT, method, path, headers)
                through_ecs = answer(host, ECS_PORT, method, path, headers)
                assert through_ecs == direct, (method, path, bool(headers))
                seen[(method, path, bool(headers))] = direct[0]
    # Not two equal failures: the allowlisted routes reach the stand-in, the rest are refused by nginx.
    assert seen[("GET", "/health", False)] == 200
    assert seen[("GET", "/v1/models", True)] == 200
    assert all(seen[("GET", path, True)] != 200 for path in ("/metrics", "/v1/../metrics", "/", "/docs"))


def test_what_the_ecs_definition_asks_for_is_what_docker_runs(proxies: Proxies) -> None:
    inspected = json.loads(proxies.host.docker("inspect", proxies.ecs_name).stdout)[0]
    hc, linux = inspected["HostConfig"], proxies.ecs_definition["linuxParameters"]
    assert inspected["Config"]["User"] == proxies.ecs_definition["user"]
    assert hc["ReadonlyRootfs"] is proxies.ecs_definition["readonlyRootFilesystem"] is True
    assert hc["CapDrop"] == linux["capabilities"]["drop"]
    assert hc["SecurityOpt"] == proxies.ecs_definition["dockerSecurityOptions"]
    assert {u["Name"]: (u["Soft"], u["Hard"]) for u in hc["Ulimits"]} == {
        u["name"]: (u["softLimit"], u["hardLimit"]) for u in proxies.ecs_definition["ulimits"]}
    assert hc["Tmpfs"] == {t["containerPath"]: ",".join([*t["mountOptions"], f"size={t['size']}m"])
                           for t in linux["tmpfs"]}
    pause_id = json.loads(proxies.host.docker("inspect", PAUSE).stdout)[0]["Id"]
    assert hc["NetworkMode"] == f"container:{pause_id}"
    assert sorted(hc["Binds"]) == sorted(f"{m.source}:{m.target}" + (":ro" if m.read_only else "")
                                         for m in proxy_spec(proxies.plan).mounts)
