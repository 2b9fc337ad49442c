"""Issue 12's proof on real parts: the plan's awsvpc ECS task (infra/render/ecs.py), both containers rendered to
`docker run` as the ECS agent runs them (tests/real/harness/ecs_task.py), serves the tiny model on the test
host's Docker.

The task runs as awsvpc runs it: a "pause" container holds its network namespace, on Docker's default bridge
(no Docker DNS, as an awsvpc task has none) and publishing the port the task's address would take; vLLM (the
real CPU build, adapted for CPU as every real test adapts it: harness/deployer.py cpu_adapt) and the proxy join
it. The proxy has no host folder: its nginx.conf comes in its environment, its key check as a secret passed by
name as the agent passes what it read from SSM, and it reaches vLLM at 127.0.0.1. Through it, the official
openai client lists the model and chats with the key, and a request without the key is refused; then the
single endpoint's proxy, run directly from its own spec in front of the same vLLM, answers every path of PATHS
as the task's proxy does. One vLLM start for the module.
"""

from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.real.harness import images
from tests.real.harness.common import wait_for
from tests.real.harness.deployer import (
    DEFAULT_STACK,
    TEST_PROJECT,
    StageTimes,
    assert_client_served,
    cpu_adapt,
    existing_host_config,
    prepare_host,
    upload_model,
)
from tests.real.harness.ecs_task import RunningTask, run_task
from tests.real.harness.testhost import TestHost
from vllm_endpoint.infra.catalog.names import PROXY_CONTAINER_PORT, PROXY_KEY_CHECK_ENV, VLLM_UPSTREAM_HOST
from vllm_endpoint.infra.plan.deployment import DeploymentPlan, build_plan
from vllm_endpoint.infra.plan.spec import Owner
from vllm_endpoint.infra.render.container import docker_run_argv
from vllm_endpoint.infra.render.ecs import (
    TASK_PROXY_KEY_CHECK,
    plan_ecs_task,
    task_secret_names,
    task_secret_values,
)
from vllm_endpoint.infra.render.host_scripts import write_files_script, write_files_stdin
from vllm_endpoint.infra.render.proxy import proxy_files, proxy_spec, render_key_check

pytestmark = pytest.mark.real

DIRECT_PORT = 30021
ECS_PORT = 30022
SERVED_NAME = "tiny-ecs"
TASK_NAME = "ecs-task"
ARN = "arn:aws:ssm:us-east-1:123456789012:parameter/vllm-endpoint/test/{}"
# The load balancer's networks as the fleet renders them (there: the VPC's CIDRs). Here the proxy's peer is an
# address of the test machine's private networks (Docker's bridge, the test host's link).
TRUSTED_PROXIES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
# Paths sent as written (no client-side normalisation): the allowlist, its tricks, and what it refuses.
PATHS = ["/health", "/v1/models", "/v1/../metrics", "/metrics", "/", "/invocations", "/tokenize", "/v1/%2e%2e/metrics",
         "/v1/models%0d%0aX:y", "/docs", "/v2/models"]


@dataclass
class Task:
    host: TestHost
    plan: DeploymentPlan  # as run: vLLM adapted for CPU
    api_key: str
    running: RunningTask

    @property
    def url(self) -> str:
        return f"http://{self.host.address}:{ECS_PORT}/v1"

    def container(self, spec_name: str) -> str:
        return self.running.containers[spec_name]


@pytest.fixture(scope="module")
def task(test_host: TestHost, vllm_image: str, busybox_image: str, tiny_model: Path, cache_dir: Path,
         times: StageTimes) -> Iterator[Task]:
    host = test_host
    plan = build_plan(existing_host_config(host, cache_dir, apiPort=str(DIRECT_PORT), modelPath=str(tiny_model),
                                           servedModelName=SERVED_NAME, maxModelLen="512"))
    plan = dataclasses.replace(plan, vllm=cpu_adapt(plan.vllm))
    api_key = secrets.token_urlsafe(36)
    images.build_nginx_image(host, tag=plan.config.access.proxy_image)
    # The instance's part (on ECS: its boot script and the cache volume): the cache folders and the model.
    prepare_host(host, plan, Owner(TEST_PROJECT, DEFAULT_STACK, plan.names.endpoint))
    upload_model(host, plan)
    ecs = plan_ecs_task(plan, secret_arns={name: ARN.format(name) for name in task_secret_names(plan)},
                        trusted_proxies=TRUSTED_PROXIES)
    start = time.monotonic()
    running = run_task(host, ecs, name=TASK_NAME, pause_image=busybox_image,
                       secrets=task_secret_values(plan, api_key, None), publish={ECS_PORT: PROXY_CONTAINER_PORT})
    host.wait_http(f"http://{host.address}:{ECS_PORT}/health", timeout=120,
                   container=running.containers[plan.proxy.name])
    times.add("ecs_task_start_to_serving", time.monotonic() - start)
    yield Task(host, plan, api_key, running)
    # cache_dir removes the containers and the network.


@pytest.fixture(scope="module")
def direct_proxy(task: Task) -> int:
    """The single endpoint's proxy, from its own spec and host folder, on the plan's network, in front of the
    task's vLLM: the pause container joins that network under vLLM's alias. Its port."""
    host, plan = task.host, task.plan
    modes, contents = proxy_files(plan, task.api_key, None, None)
    host.ssh(write_files_script(plan.proxy_dir, modes), input=write_files_stdin(contents))
    host.docker("network", "create", plan.network)
    host.docker("network", "connect", "--alias", VLLM_UPSTREAM_HOST, plan.network, task.running.pause)
    host.docker(*docker_run_argv(proxy_spec(plan))[1:])
    host.wait_http(f"http://{host.address}:{DIRECT_PORT}/health", timeout=60, container=plan.names.proxy_container)
    return DIRECT_PORT


def test_the_task_serves_the_model_to_the_official_client_with_the_key(task: Task) -> None:
    assert_client_served(task.url, task.api_key, SERVED_NAME)


def test_without_the_key_or_with_another_the_task_answers_401(task: Task) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(task.url + "/models", timeout=30)
    assert info.value.code == 401
    client = openai.OpenAI(base_url=task.url, api_key="wrong-" + "x" * 40, max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_the_proxy_holds_its_files_itself_and_nginx_not_the_secret(task: Task) -> None:
    proxy = task.container(task.plan.proxy.name)
    written = task.host.docker("exec", proxy, "sh", "-c", f"stat -c %a {TASK_PROXY_KEY_CHECK}; "
                               f"cat {TASK_PROXY_KEY_CHECK}").stdout
    assert written == "600\n" + render_key_check(task.api_key)
    environ = task.host.docker("exec", proxy, "cat", "/proc/1/environ").stdout
    assert PROXY_KEY_CHECK_ENV not in environ and task.api_key not in environ
    assert "nginx" in task.host.docker("exec", proxy, "cat", "/proc/1/cmdline").stdout


def test_behind_the_load_balancer_the_proxy_logs_the_client_the_load_balancer_named(task: Task) -> None:
    """ALB appends the client's address to X-Forwarded-For; the proxy takes that last address as the client's
    (its access log's first field), not one the client wrote itself, and its own peer without the header."""

    def health_lines() -> list[str]:
        return [x for x in task.running.logs(task.plan.proxy.name).splitlines() if '"GET /health ' in x]

    def logged_client(headers: dict[str, str]) -> str:
        before = len(health_lines())
        assert answer(task.host, ECS_PORT, "GET", "/health", headers)[0] == 200
        wait_for(lambda: len(health_lines()) > before, timeout=10, what="the proxy's access log line")
        return health_lines()[-1].split(" ", 1)[0]

    peer = ipaddress.ip_address(logged_client({}))
    assert any(peer in ipaddress.ip_network(cidr) for cidr in TRUSTED_PROXIES), peer
    assert logged_client({"X-Forwarded-For": "198.51.100.7"}) == "198.51.100.7"
    # A client that sends its own X-Forwarded-For: ALB appends the real address after it.
    assert logged_client({"X-Forwarded-For": "203.0.113.9, 198.51.100.8"}) == "198.51.100.8"


def answer(host: TestHost, port: int, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(host.address, port, timeout=60)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for key, value in headers.items():
            connection.putheader(key, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_the_task_proxy_answers_every_path_as_the_single_endpoints_proxy(task: Task, direct_proxy: int) -> None:
    host = task.host
    with_key = {"Authorization": f"Bearer {task.api_key}"}
    seen = {}
    for method in ("GET", "POST"):
        for path in PATHS:
            for headers in ({}, with_key):
                direct = answer(host, direct_proxy, method, path, headers)
                through_task = answer(host, ECS_PORT, method, path, headers)
                # vLLM's 200s carry a time (`created`): the same status is the same answer there.
                same = through_task[0] == direct[0] if direct[0] == 200 else through_task == direct
                assert same, (method, path, bool(headers), direct, through_task)
                seen[(method, path, bool(headers))] = direct[0]
    # Not two equal failures: the allowlisted routes reach vLLM, the rest are refused by nginx.
    assert seen[("GET", "/health", False)] == 200
    assert seen[("GET", "/v1/models", True)] == 200 and seen[("GET", "/v1/models", False)] == 401
    assert all(seen[("GET", path, True)] in (403, 404) for path in ("/metrics", "/v1/../metrics", "/", "/docs"))


def test_what_the_task_definition_asks_for_is_what_docker_runs(task: Task) -> None:
    definitions = {d["name"]: d for d in task.running.task.container_definitions}
    pause_id = json.loads(task.host.docker("inspect", task.running.pause).stdout)[0]["Id"]
    for name, definition in definitions.items():
        inspected: dict[str, Any] = json.loads(task.host.docker("inspect", task.container(name)).stdout)[0]
        hc, linux = inspected["HostConfig"], definition["linuxParameters"]
        assert hc["NetworkMode"] == f"container:{pause_id}"
        assert inspected["Config"]["User"] == definition["user"]
        assert hc["CapDrop"] == linux["capabilities"]["drop"]
        assert hc["SecurityOpt"] == definition["dockerSecurityOptions"]
        assert {u["Name"]: (u["Soft"], u["Hard"]) for u in hc["Ulimits"]} == {
            u["name"]: (u["softLimit"], u["hardLimit"]) for u in definition["ulimits"]}
        assert hc["Tmpfs"] == {t["containerPath"]: ",".join([*t["mountOptions"], f"size={t['size']}m"])
                               for t in linux["tmpfs"]}
        sources = {v["name"]: v["host"]["sourcePath"] for v in task.running.task.volumes}
        assert sorted(hc["Binds"] or []) == sorted(
            f"{sources[p['sourceVolume']]}:{p['containerPath']}" + (":ro" if p["readOnly"] else "")
            for p in definition["mountPoints"])
    proxy = definitions[task.plan.proxy.name]
    inspected = json.loads(task.host.docker("inspect", task.container(task.plan.proxy.name)).stdout)[0]
    assert inspected["HostConfig"]["ReadonlyRootfs"] is proxy["readonlyRootFilesystem"] is True
    assert not inspected["HostConfig"]["Binds"]  # no host folder
    # What runs: the entry point, then the command (the CLI's --entrypoint takes one word, the agent's API call a
    # list; the process started is the same).
    assert [inspected["Path"], *inspected["Args"]] == [*proxy["entryPoint"], *proxy["command"]]
