"""Two stacks on one existing host: two separate deploys (two `pulumi up`s, each with its own stack name
and plan), each endpoint serving its own model on its own port with its own key; a third deploy that
asks for what one of them holds is refused by the host claims check before any container is created,
and a stack re-deploying over its own containers passes. Two vLLM starts in all."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.real.harness import images
from tests.real.harness import tiny_model as recipe
from tests.real.harness.common import BUILD_DIR, VLLM_VENV, CommandError
from tests.real.harness.deployer import (
    TEST_PROJECT,
    Deployment,
    StageTimes,
    assert_serves,
    deploy,
    existing_host_config,
    prepare_host,
    run_gate,
)
from tests.real.harness.testhost import TestHost
from vllm_endpoint.infra.catalog.names import ENDPOINT_TAG, PROJECT_TAG, STACK_TAG
from vllm_endpoint.infra.plan.deployment import build_plan
from vllm_endpoint.infra.plan.spec import Owner
from vllm_endpoint.infra.render.host_scripts import HostClaims, host_claims_script
from vllm_endpoint.infra.settings.models import StackConfig

pytestmark = pytest.mark.real


@dataclass(frozen=True)
class Stack:
    stack: str
    endpoint: str
    port: int
    served_name: str

    @property
    def owner(self) -> Owner:
        return Owner(TEST_PROJECT, self.stack, self.endpoint)


ONE = Stack("one", "chat", 30011, "tiny-chat")
TWO = Stack("two", "code", 30012, "tiny-code")
SECOND_MODEL_SEED = 4321


def second_tiny_model() -> Path:
    """Another tiny model, with its own weights and tokenizer: tiny_model.py's recipe with another seed."""
    python = VLLM_VENV / "bin" / "python"
    # Keyed like the first (tiny_model.py's text and the libraries' versions), so a changed recipe rebuilds it.
    dest = BUILD_DIR / "models" / f"tiny-qwen2-seed{SECOND_MODEL_SEED}-{recipe._content_key(python)}"
    if (dest / "model.safetensors").is_file():
        return dest
    work = dest.with_name(dest.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    harness = Path(__file__).parent / "harness"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    code = (f"import sys; sys.path.insert(0, {str(harness)!r}); import tiny_model; "
            f"tiny_model.SEED = {SECOND_MODEL_SEED}; tiny_model.main({str(work)!r})")
    subprocess.run([str(python), "-c", code], check=True, env=env, timeout=600)
    work.chmod(0o755)
    shutil.rmtree(dest, ignore_errors=True)
    work.rename(dest)
    return dest


def config_for(host: TestHost, cache_dir: Path, stack: Stack, model: Path, **settings: str) -> StackConfig:
    # Both stacks use the same hostCacheDir, as two stacks left at the default would; each endpoint
    # has its own folder in it.
    return existing_host_config(host, cache_dir, modelPath=str(model), servedModelName=stack.served_name,
                                maxModelLen="512", apiPort=str(stack.port), **settings)


def container_ids(host: TestHost) -> list[str]:
    return sorted(host.docker("ps", "--all", "--quiet", "--no-trunc").stdout.split())


def test_the_check_tells_another_stacks_container_from_the_stacks_own_on_the_real_engine(
        host: TestHost, busybox_image: str) -> None:
    # Before any vLLM starts: the check's `docker inspect` template against the engine itself.
    labels = [f"{key}={value}" for key, value in Owner(TEST_PROJECT, "prod", "chat").labels]
    host.docker("run", "--detach", "--name", "chat-proxy", *(arg for label in labels for arg in ("--label", label)),
                "--publish", "30015:8080", busybox_image, "sleep", "3600")
    host.docker("create", "--name", "stopped", "--publish", "30016:8080", busybox_image, "sleep", "3600")

    def claims(stack: str, endpoint: str, port: int) -> str:
        return host_claims_script(HostClaims(Owner(TEST_PROJECT, stack, endpoint), host.address, port, "",
                                             (endpoint, f"{endpoint}-proxy")))

    refused = host.ssh(claims("dev", "vllm", 30015), check=False)
    assert refused.returncode == 1
    assert refused.stderr == (f"apiPort 30015 on {host.address} is held by container chat-proxy (stack prod, endpoint "
                              "chat); pick another apiPort or destroy that stack\n")
    own = host.ssh(claims("prod", "other", 30015), check=False)
    assert own.returncode == 0, own.stderr
    # A created, never started container holds no port.
    free = host.ssh(claims("dev", "vllm", 30016), check=False)
    assert free.returncode == 0, free.stderr
    # Another stack's container with this endpoint's name, stopped or not.
    named = host.ssh(claims("dev", "chat", 30017), check=False)
    assert named.returncode == 1
    assert f"name: a container named chat-proxy is already on {host.address}: container chat-proxy (stack prod" in (
        named.stderr)


@pytest.fixture(scope="module")
def stacks(test_host: TestHost, vllm_image: str, tiny_model: Path, cache_dir: Path,
           times: StageTimes) -> Iterator[tuple[Deployment, Deployment]]:
    models = {ONE: tiny_model, TWO: second_tiny_model()}
    configs = {stack: config_for(test_host, cache_dir, stack, models[stack]) for stack in (ONE, TWO)}
    images.build_nginx_image(test_host, tag=configs[ONE].access.proxy_image)
    deployments: list[Deployment] = []
    try:
        # One deploy after the other, as two `pulumi up`s; the second's host check runs while the first's
        # containers hold their port. The gates wait afterwards, so the two vLLM starts overlap.
        for stack in (ONE, TWO):
            deployments.append(deploy(test_host, configs[stack], api_key=secrets.token_urlsafe(36),
                                      name=stack.endpoint, stack=stack.stack, gate=False))
        for deployment, stack in zip(deployments, (ONE, TWO), strict=True):
            deployment.gate_seconds, deployment.gate_output = run_gate(deployment)
            deployment.timings["readiness_gate"] = deployment.gate_seconds
            times.add_deploy(deployment, f"stack {stack.stack}")
        yield deployments[0], deployments[1]
    finally:
        # cache_dir's own clean-up removes every container; the networks are named after the endpoints.
        test_host.remove_all_containers()
        for stack in (ONE, TWO):
            test_host.docker("network", "rm", f"{TEST_PROJECT}-{stack.endpoint}", check=False)


def test_each_stack_serves_its_own_model_on_its_own_port_with_its_own_key(
        stacks: tuple[Deployment, Deployment]) -> None:
    one, two = stacks
    assert_serves(one, ONE.served_name)
    assert_serves(two, TWO.served_name)
    assert (one.plan.api_port, two.plan.api_port) == (ONE.port, TWO.port)
    # Each endpoint's key opens its own endpoint only.
    stranger = openai.OpenAI(base_url=two.endpoint_url, api_key=one.api_key, max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()
    # Their own models: different weights in different upload folders.
    assert one.plan.model_upload is not None and two.plan.model_upload is not None
    assert one.plan.model_upload.digest != two.plan.model_upload.digest


def test_each_stacks_containers_carry_its_project_stack_and_endpoint(stacks: tuple[Deployment, Deployment]) -> None:
    for deployment, stack in zip(stacks, (ONE, TWO), strict=True):
        for container in deployment.plan.names.containers:
            labels = json.loads(deployment.host.docker("inspect", "--format", "{{json .Config.Labels}}",
                                                       container).stdout)
            assert (labels[PROJECT_TAG], labels[STACK_TAG], labels[ENDPOINT_TAG]) == (
                TEST_PROJECT, stack.stack, stack.endpoint)


def test_a_third_stack_asking_for_a_port_another_stack_holds_fails_before_any_container_is_created(
        stacks: tuple[Deployment, Deployment], cache_dir: Path, tiny_model: Path) -> None:
    one, _ = stacks
    host = one.host
    before = container_ids(host)
    third = config_for(host, cache_dir, Stack("three", "extra", ONE.port, "tiny-extra"), tiny_model)
    with pytest.raises(CommandError) as info:
        deploy(host, third, api_key=secrets.token_urlsafe(36), name="extra", stack="three", gate=False)
    assert (f"apiPort {ONE.port} on {host.address} is held by container chat-proxy (stack one, endpoint chat); "
            "pick another apiPort or destroy that stack") in info.value.proc.stderr
    assert container_ids(host) == before
    assert_serves(one, ONE.served_name)  # untouched


def test_another_stacks_endpoint_of_the_same_name_is_refused_before_it_replaces_the_containers(
        stacks: tuple[Deployment, Deployment], cache_dir: Path, tiny_model: Path) -> None:
    one, _ = stacks
    host = one.host
    before = container_ids(host)
    # Stack three names its endpoint `chat` too (every stack's own endpoint is named the same by default).
    third = config_for(host, cache_dir, Stack("three", "chat", 30013, "tiny-extra"), tiny_model)
    with pytest.raises(CommandError) as info:
        deploy(host, third, api_key=secrets.token_urlsafe(36), name="chat", stack="three", gate=False)
    assert (f"name: a container named chat is already on {host.address}: container chat (stack one, endpoint chat)"
            in info.value.proc.stderr)
    assert container_ids(host) == before


def test_a_stack_re_deploying_over_its_own_containers_passes_the_check(stacks: tuple[Deployment, Deployment]) -> None:
    one, _ = stacks
    # What `pulumi up` of stack one runs again: the same plan, the same stack, its containers holding the port.
    proc = prepare_host(one.host, build_plan(one.plan.config, ONE.endpoint), ONE.owner)
    assert f"host claims: apiPort {ONE.port} and gpus all free on {one.host.address} for stack one" in proc.stdout
    assert_serves(one, ONE.served_name)


def test_a_port_a_host_process_listens_on_is_refused(test_host: TestHost) -> None:
    # sshd listens in the test host's namespace; no container publishes its port.
    claims = HostClaims(Owner(TEST_PROJECT, "three", "extra"), test_host.address, test_host.ssh_port, "",
                        ("extra", "extra-proxy"))
    proc = test_host.ssh(host_claims_script(claims), check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"apiPort {test_host.ssh_port} on {test_host.address} is held by a process that is not a container (ss lists "
        "a listening socket on it); pick another apiPort or stop that process")
