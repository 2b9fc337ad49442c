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

The model is the fleet's fine-tune path: a folder uploaded to S3 (here a stand-in that checks every request's
SigV4 signature with botocore, harness/fakes3.py, in the test host's namespace), copied into the cache by the
task's first container (infra/render/model_sync.py: the vLLM image running infra/host/s3-model-sync.py) with
the credentials the ECS agent serves a task at 169.254.170.2 (the stand-in listens there, as the agent's
endpoint does on an instance), and vLLM started only once that container exited 0. The same definition run
again copies nothing; one that finds an object damaged, or whose credentials S3 refuses, exits non-zero and
leaves the cache as it was.
"""

from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import json
import secrets
import shlex
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
from tests.real.harness.common import run, wait_for
from tests.real.harness.deployer import (
    DEFAULT_STACK,
    TEST_PROJECT,
    StageTimes,
    assert_client_served,
    cpu_adapt,
    existing_host_config,
    prepare_host,
)
from tests.real.harness.ecs_task import RunningTask, run_task
from tests.real.harness.fakes3 import Counters, FakeS3
from tests.real.harness.testhost import TestHost
from vllm_endpoint.infra.catalog.names import PROXY_CONTAINER_PORT, PROXY_KEY_CHECK_ENV, VLLM_UPSTREAM_HOST
from vllm_endpoint.infra.plan.deployment import DeploymentPlan, ModelUpload, build_plan
from vllm_endpoint.infra.plan.spec import Owner
from vllm_endpoint.infra.render.container import docker_run_argv
from vllm_endpoint.infra.render.ecs import (
    TASK_PROXY_KEY_CHECK,
    EcsTask,
    ecs_to_docker_run,
    plan_ecs_task,
    task_secret_names,
    task_secret_values,
)
from vllm_endpoint.infra.render.host_scripts import write_files_script, write_files_stdin
from vllm_endpoint.infra.render.model_sync import (
    MODEL_SYNC_CONTAINER,
    SYNC_MODELS_MOUNT,
    ModelSource,
    model_object_keys,
    model_prefix,
)
from vllm_endpoint.infra.render.proxy import proxy_files, proxy_spec, render_key_check

pytestmark = pytest.mark.real

DIRECT_PORT = 30021
ECS_PORT = 30022
SERVED_NAME = "tiny-ecs"
ECS_CREDENTIALS_ADDRESS = "169.254.170.2"  # where the ECS agent serves a task its role's credentials
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
    s3: FakeS3  # the stack's bucket, which the sync container copied the model from
    copied: Counters  # the stand-in's requests while the task started

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
    # The instance's part (on ECS: its boot script and the cache volume): the cache folders, none of the model.
    prepare_host(host, plan, Owner(TEST_PROJECT, DEFAULT_STACK, plan.names.endpoint))
    upload = plan.model_upload
    assert upload is not None
    host.ssh(f"rm -rf {shlex.quote(upload.remote_dir)} && mkdir -p {shlex.quote(str(Path(upload.remote_dir).parent))}")
    s3 = stack_s3(host, tiny_model, upload)
    ecs = pointed_at(plan_ecs_task(plan, secret_arns={name: ARN.format(name) for name in task_secret_names(plan)},
                                   trusted_proxies=TRUSTED_PROXIES,
                                   model_source=ModelSource(s3.bucket, model_prefix(upload), s3.region)), s3)
    start = time.monotonic()
    running = run_task(host, ecs, name=TASK_NAME, pause_image=busybox_image,
                       secrets=task_secret_values(plan, api_key, None), publish={ECS_PORT: PROXY_CONTAINER_PORT})
    host.wait_http(f"http://{host.address}:{ECS_PORT}/health", timeout=120,
                   container=running.containers[plan.proxy.name])
    times.add("ecs_task_start_to_serving", time.monotonic() - start)
    yield Task(host, plan, api_key, running, s3, s3.reset_counters())
    s3.stop()
    host.ssh(f"rm -rf {shlex.quote(upload.remote_dir)}")  # the next module's upload starts from nothing
    # cache_dir removes the containers and the network.


def stack_s3(host: TestHost, model: Path, upload: ModelUpload) -> FakeS3:
    """The stack's bucket with the folder's objects, as FleetModel uploads them, and the ECS agent's
    credentials endpoint, both in the test host's namespace (the agent's at its link-local address)."""
    run(["ip", "-n", host.name, "address", "replace", f"{ECS_CREDENTIALS_ADDRESS}/32", "dev", "lo"])
    s3 = FakeS3(address=host.address, netns=host.name, credentials_address=ECS_CREDENTIALS_ADDRESS,
                credentials_port=80, bucket="vllm-endpoint-ecs-models-0123", region="eu-west-1").start()
    keys = model_object_keys(upload)
    assert s3.add_folder(model_prefix(upload), model) == {key: model / path for path, key in keys.items()}
    return s3


def pointed_at(task: EcsTask, s3: FakeS3) -> EcsTask:
    """The task as the agent runs it with a task role (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI in every
    container), the sync container reaching the stand-in (AWS_ENDPOINT_URL_S3, the SDKs' own variable) where
    on AWS it reaches S3's regional endpoint."""
    agent = {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": s3.credentials_relative_uri}
    test = {"AWS_ENDPOINT_URL_S3": s3.endpoint}

    def with_env(definition: dict[str, Any]) -> dict[str, Any]:
        extra = {**agent, **(test if definition["name"] == MODEL_SYNC_CONTAINER else {})}
        return {**definition, "environment": [*definition["environment"],
                                              *({"name": k, "value": v} for k, v in extra.items())]}

    return dataclasses.replace(task, container_definitions=tuple(with_env(d) for d in task.container_definitions))

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


def test_the_sync_container_copied_each_object_once_and_vllm_started_after_it_succeeded(task: Task) -> None:
    upload = task.plan.model_upload
    assert upload is not None
    keys = model_object_keys(upload)
    copied = task.copied
    assert sorted(r.key for r in copied.requests) == sorted(keys.values())
    assert {(r.method, r.status) for r in copied.requests} == {("GET", 200)} and copied.signature_failures == 0
    assert copied.bytes_sent == upload.contents.total_bytes and copied.credential_requests >= 1
    assert {r.access_key for r in copied.requests} <= {k.access_key for k in task.s3.issued_keys()}
    sync, vllm = (state(task, name) for name in (MODEL_SYNC_CONTAINER, task.plan.vllm.name))
    assert sync["ExitCode"] == 0 and sync["FinishedAt"] <= vllm["StartedAt"]
    log = task.running.logs(MODEL_SYNC_CONTAINER)
    assert f"done: {len(keys)} files, {upload.contents.total_bytes} bytes" in log
    marker = task.host.ssh(f"cat {shlex.quote(upload.remote_dir)}/.vllm-endpoint-verified").stdout.strip()
    assert marker == upload.digest


def test_a_second_task_on_the_instance_copies_nothing(task: Task) -> None:
    task.s3.reset_counters()
    status, log = run_sync(task, "sync-again")
    assert status == 0 and "already in the cache" in log, log
    assert task.s3.reset_counters().requests == []


def test_a_damaged_object_fails_the_copy_and_leaves_the_cache_as_it_was(task: Task) -> None:
    upload = task.plan.model_upload
    assert upload is not None
    key = model_object_keys(upload)["config.json"]
    original = (upload.local_dir / "config.json").read_bytes()
    task.s3.corrupt[key] = bytes([original[0] ^ 1]) + original[1:]  # the same size, one bit off
    task.s3.reset_counters()
    try:
        status, log = run_sync(task, "sync-damaged", MODEL_DIR=f"{SYNC_MODELS_MOUNT}/damaged", MODEL_SYNC_ATTEMPTS="2")
    finally:
        del task.s3.corrupt[key]
    assert status == 1 and "config.json" in log and "sha256" in log, log
    models = shlex.quote(str(Path(upload.remote_dir).parent))
    left = task.host.ssh(f"ls -A {models}").stdout.split()
    assert sorted(left) == sorted([Path(upload.remote_dir).name, f"{Path(upload.remote_dir).name}.lock",
                                   "damaged.lock"]), left
    assert len(task.s3.reset_counters().requests_for(key)) == 2


def test_an_object_the_role_may_not_read_fails_at_once_naming_the_permission(task: Task) -> None:
    upload = task.plan.model_upload
    assert upload is not None
    key = model_object_keys(upload)["config.json"]
    task.s3.deny(key)
    task.s3.reset_counters()
    try:
        status, log = run_sync(task, "sync-denied", MODEL_DIR=f"{SYNC_MODELS_MOUNT}/denied")
    finally:
        task.s3.denied.discard(key)
    assert status == 1 and "s3:GetObject" in log and key in log, log
    assert len(task.s3.reset_counters().requests_for(key)) == 1  # a 403 is not retried


def state(task: Task, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(task.host.docker("inspect", "--format", "{{json .State}}",
                                                        task.running.containers[name]).stdout)
    return found


def run_sync(task: Task, name: str, **env: str) -> tuple[int, str]:
    """The task's sync container started alone from its definition (as the next task on the instance starts it),
    with `env` changed; its exit status and log."""
    definition = task.running.task.container_definitions[0]
    assert definition["name"] == MODEL_SYNC_CONTAINER
    values = {e["name"]: e["value"] for e in definition["environment"]} | env
    as_run = {**definition, "name": name, "environment": [{"name": k, "value": v} for k, v in values.items()]}
    argv = ecs_to_docker_run(as_run, task.running.task.volumes, network_mode="awsvpc",
                             task_network=f"container:{task.running.pause}")
    task.host.docker(*argv[1:])
    try:
        status = int(task.host.docker("wait", name).stdout.strip())
        logged = task.host.docker("logs", name)
        return status, logged.stdout + logged.stderr
    finally:
        task.host.docker("rm", "--force", name, check=False)


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
        assert (hc.get("Tmpfs") or {}) == {t["containerPath"]: ",".join([*t["mountOptions"], f"size={t['size']}m"])
                                           for t in linux.get("tmpfs", ())}
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
    sync = definitions[MODEL_SYNC_CONTAINER]
    inspected = json.loads(task.host.docker("inspect", task.container(MODEL_SYNC_CONTAINER)).stdout)[0]
    assert inspected["HostConfig"]["ReadonlyRootfs"] is sync["readonlyRootFilesystem"] is True
    assert [inspected["Path"], *inspected["Args"]] == [*sync["entryPoint"], *sync["command"]]
