"""Runs a DeploymentPlan on a TestHost the way the VllmServer component does, with the product's own
rendered parts: the host preparation script, the proxy-files script (contents on stdin), the model
upload and its check, the `docker run` commands rendered from the container specs (executed by bash
with DOCKER_HOST=ssh://...), and the readiness gate script (API key on stdin).

What differs from `pulumi up` on a GPU host is only what a CPU cannot do, applied to the rendered
spec by `cpu_adapt` and listed in CPU_CHANGES; tests assert nothing else was changed.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.unit.model_folders import COPY_URN  # what the stack names the copy in the verify step's message
from vllm_endpoint.infra.catalog.names import (
    DEFAULT_ENDPOINT_NAME,
    PROJECT,
    SECRET_API_KEY_ENV,
    SECRET_HF_TOKEN_ENV,
    VLLM_OPEN_FILES_TARGET,
)
from vllm_endpoint.infra.plan.deployment import DeploymentPlan, ImageBuild, build_plan
from vllm_endpoint.infra.plan.naming import EndpointNames
from vllm_endpoint.infra.plan.spec import ContainerSpec, Owner, owned_by
from vllm_endpoint.infra.render.container import docker_run_script
from vllm_endpoint.infra.render.host_scripts import (
    existing_host_prepare_script,
    host_claims,
    model_stage_script,
    model_verify_script,
    readiness_gate_script,
    write_files_script,
    write_files_stdin,
)
from vllm_endpoint.infra.render.proxy import proxy_files, proxy_spec
from vllm_endpoint.infra.settings.models import StackConfig, load_stack_config

from .common import record_timing, run
from .testhost import TestHost

# Everything the CPU test changes in the rendered vLLM container spec, and why.
CPU_CHANGES = {
    "gpus / runtime": "no GPU and no NVIDIA runtime here: the GPU request is dropped",
    "NVIDIA_VISIBLE_DEVICES": "dropped with the GPU request",
    "VLLM_CPU_KVCACHE_SPACE=1": "added: the CPU build sizes its KV cache in GiB of RAM, not by GPU memory",
    "host preparation": "does not require the nvidia runtime in `docker info`",
}
CPU_ENV = (("VLLM_CPU_KVCACHE_SPACE", "1"),)
# What a deployment's containers and network are called unless a test names its endpoint otherwise:
# the stack's own endpoint.
DEFAULT_NAMES = EndpointNames(DEFAULT_ENDPOINT_NAME)
# The Pulumi project (Pulumi.yaml's name) and the stack a deployment belongs to unless a test deploys
# several stacks: the labels on its containers, and whose containers the host claims check counts as its own.
TEST_PROJECT = PROJECT
DEFAULT_STACK = "real-tests"


CAP_SYS_RESOURCE = 24  # its bit in /proc/<pid>/status CapEff


def cpu_adapt(spec: ContainerSpec) -> ContainerSpec:
    env = tuple((k, v) for k, v in spec.env if k != "NVIDIA_VISIBLE_DEVICES") + CPU_ENV
    return dataclasses.replace(spec, gpus=None, runtime=None, env=env)


def grantable_open_files() -> int:
    """The open-files limit the test hosts' engines can give a container: they run with this process's
    limits, and a hard limit above their own needs CAP_SYS_RESOURCE, which a sandboxed machine lacks (this
    one: 20,000 without it). What a user of such a host sets as containerOpenFiles when the deploy's check
    (check-open-files.sh) asks them to."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    status = Path("/proc/self/status").read_text()
    caps = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), 16)
    if caps >> CAP_SYS_RESOURCE & 1 or hard == resource.RLIM_INFINITY:
        return VLLM_OPEN_FILES_TARGET
    return min(VLLM_OPEN_FILES_TARGET, hard)


def vllm_as_run(plan: DeploymentPlan, stack: str = DEFAULT_STACK) -> ContainerSpec:
    """The vLLM container `deploy` runs: the plan's spec labelled as VllmServer labels it (project, stack,
    endpoint), with only the CPU_CHANGES made."""
    return owned_by(cpu_adapt(plan.vllm), Owner(TEST_PROJECT, stack, plan.names.endpoint))


def existing_host_config(host: TestHost, cache_dir: Path, **settings: str) -> StackConfig:
    """A stack config for the test host as an existing server (no AWS), as a user would write it (with the
    containerOpenFiles the host's check would ask for, unless `settings` give one)."""
    raw = {
        "target": "existing-host",
        "hostAddress": host.address,
        "hostSshUser": host.ssh_user,
        "hostPublicKey": host.host_public_key,
        "hostCacheDir": str(cache_dir),
        "containerUser": host.container_user,
        "containerOpenFiles": str(grantable_open_files()),
        "sshPrivateKey": host.identity_file.read_text(),
        **settings,
    }
    return load_stack_config(raw)


@dataclass
class Deployment:
    host: TestHost
    plan: DeploymentPlan
    api_key: str
    vllm: ContainerSpec  # as run (after cpu_adapt)
    specs: list[ContainerSpec]
    docker_run: str
    gate_seconds: float = 0.0
    gate_output: str = ""
    # Seconds each deploy step took, in the order they ran (see `deploy`).
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def endpoint_url(self) -> str:
        """Exactly what the stack would export as `endpoint_url` for this host."""
        return f"{self.plan.scheme}://{self.host.address}:{self.plan.api_port}/v1"


def make_cache_dir(host: TestHost, path: Path) -> Path:
    """The host folder for `hostCacheDir`, owned by the SSH user (as the boot script leaves the volume)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, host.uid, host.gid)
    return path


def deploy(host: TestHost, config: StackConfig, api_key: str, *, hf_token: str | None = None,
           tls_files: tuple[str, str] | None = None, gate: bool = True,
           name: str = DEFAULT_ENDPOINT_NAME, stack: str = DEFAULT_STACK) -> Deployment:
    """Deploys the endpoint `name` (its containers, network and host folder are named after it) of the
    stack `stack`. Raises CalledProcessError (with the host's message in stderr) when the host preparation
    refuses, before any container is touched."""
    plan = build_plan(config, name)
    owner = Owner(TEST_PROJECT, stack, name)
    timings: dict[str, float] = {}
    with _step(timings, "prepare_host"):
        prepare_host(host, plan, owner)

    with _step(timings, "proxy_files"):
        modes, contents = proxy_files(plan, api_key, *(tls_files or (None, None)))
        host.ssh(write_files_script(plan.proxy_dir, modes), input=write_files_stdin(contents))

    if plan.model_upload is not None:
        with _step(timings, "model_upload"):
            upload_model(host, plan)

    if plan.image_build is not None:
        with _step(timings, "image_build"):
            build_image(host, plan.image_build)

    vllm = vllm_as_run(plan, stack)
    specs = [vllm, owned_by(proxy_spec(plan), owner)]
    script = docker_run_script(plan.network, specs, plan.secret_env)
    names = [spec.name for spec in specs]
    with _step(timings, "docker_run"):
        # Replace what a previous deploy left (pulumi-docker's delete-before-replace).
        host.docker("rm", "-f", *names, check=False)
        host.docker("network", "rm", plan.network, check=False)
        env = host.docker_env()
        env[SECRET_API_KEY_ENV] = api_key
        if hf_token is not None:
            env[SECRET_HF_TOKEN_ENV] = hf_token
        subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, check=True, capture_output=True,
                       text=True, timeout=900)
    deployment = Deployment(host, plan, api_key, vllm, specs, script, timings=timings)
    if gate:
        deployment.gate_seconds, deployment.gate_output = run_gate(deployment)
        timings["readiness_gate"] = deployment.gate_seconds
    return deployment


def prepare_host(host: TestHost, plan: DeploymentPlan, owner: Owner) -> subprocess.CompletedProcess[str]:
    """The existing-host preparation as the component runs it, with the host claims check."""
    return host.ssh(existing_host_prepare_script(plan.host_cache_dir, False, plan.config.server.container_user,
                                                 host_claims(plan, owner, host.address),
                                                 open_files=plan.config.server.container_open_files,
                                                 room=plan.model_room))


def upload_model(host: TestHost, plan: DeploymentPlan) -> None:
    """The fine-tune upload as VllmServer runs it: stage, copy, verify and move into place. Its three
    resources run once per content digest, so a folder already verified for this digest is not sent again
    (what a second `pulumi up` of an unchanged model does). Raises CommandError with the host's
    message."""
    upload = plan.model_upload
    assert upload is not None
    marker = shlex.quote(f"{upload.remote_dir}/.vllm-endpoint-verified")
    if host.ssh(f"grep -qx {upload.digest} {marker}", check=False).returncode == 0:
        return
    host.ssh(model_stage_script(plan))
    # pulumi-command copies with SFTP as the SSH user; scp (SFTP protocol) with the same options.
    run(["scp", "-q", "-r", *host.ssh_options, str(upload.local_dir),
         f"{host.ssh_user}@{host.address}:{upload.staging_dir}"], timeout=600)
    verify, manifest = model_verify_script(plan, COPY_URN)
    host.ssh(verify, input=manifest)


@contextmanager
def _step(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    timings[name] = time.monotonic() - start


def build_image(host: TestHost, build: ImageBuild) -> subprocess.CompletedProcess[str]:
    """The custom image, built on the host's engine as pulumi-docker's `docker.Image` does: the context
    travels over the provider's SSH connection (DOCKER_HOST=ssh://) and the engine runs the build.

    The classic builder, not BuildKit: the docker CLI here (28.x) has no buildx plugin, and for a
    Dockerfile of FROM/COPY lines both builders produce the same image."""
    env = host.docker_env()
    env["DOCKER_BUILDKIT"] = "0"
    # `--platform` as the component passes it (DockerBuildArgs(platform="linux/amd64")).
    return run(["docker", "build", "--platform", "linux/amd64", "--tag", build.tag, str(build.context)],
               env=env, timeout=900)


def run_gate(deployment: Deployment, timeout: float | None = None) -> tuple[float, str]:
    """The readiness gate, exactly as `pulumi up` runs it: over SSH, API key on stdin."""
    gate = deployment.plan.readiness_gate
    start = time.monotonic()
    proc = deployment.host.ssh(readiness_gate_script(gate), input=deployment.api_key + "\n",
                               timeout=timeout or gate.timeout_s + 60)
    return time.monotonic() - start, proc.stdout


@dataclass
class GateResult:
    returncode: int
    seconds: float
    stdout: str
    stderr: str


def gate_result(deployment: Deployment, api_key: str | None = None, timeout: float | None = None) -> GateResult:
    """The readiness gate as `run_gate` runs it, returning its exit code and output instead of raising:
    for tests of how it fails. `api_key` replaces the deployment's key on the gate's stdin."""
    gate = deployment.plan.readiness_gate
    key = deployment.api_key if api_key is None else api_key
    start = time.monotonic()
    proc = deployment.host.ssh(readiness_gate_script(gate), input=key + "\n", check=False,
                               timeout=timeout or gate.timeout_s + 60)
    return GateResult(proc.returncode, time.monotonic() - start, proc.stdout, proc.stderr)


def timeline_seconds(gate_output: str, stage: str, since: str = "container_started") -> float | None:
    """Seconds from `since` to `stage` in the timeline the gate prints (`stage epoch +offset s`)."""
    epochs: dict[str, float] = {}
    for line in gate_output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in (stage, since):
            try:
                epochs[parts[0]] = float(parts[1])
            except ValueError:
                continue
    if stage in epochs and since in epochs:
        return epochs[stage] - epochs[since]
    return None


@dataclass
class StageTimes:
    """Timings of one test module: each goes to timings.jsonl (record_timing) and into a summary."""

    module: str
    entries: list[tuple[str, float, str]] = field(default_factory=list)

    def add(self, stage: str, seconds: float, **details: object) -> None:
        record_timing(stage, seconds, module=self.module, **details)
        note = " ".join(f"{k}={v}" for k, v in details.items())
        self.entries.append((stage, seconds, note))

    def add_deploy(self, deployment: Deployment, label: str) -> None:
        """Each deploy step, the gate's wait and vLLM's own start (container start to first answer)."""
        for step, seconds in deployment.timings.items():
            self.add(f"deploy_{step}", seconds, deployment=label)
        ready = timeline_seconds(deployment.gate_output, "server_ready")
        if ready is not None:
            self.add("vllm_ready_after_container_start", ready, deployment=label)

    def summary(self) -> str:
        lines = [f"timings of {self.module}:"]
        lines += [f"  {stage:<44} {seconds:8.1f} s  {note}" for stage, seconds, note in self.entries]
        return "\n".join(lines)

    def report(self, config: Any) -> None:
        """Prints the summary past pytest's output capture (module fixtures' teardown is captured)."""
        reporter = config.pluginmanager.getplugin("terminalreporter")
        capture = config.pluginmanager.getplugin("capturemanager")
        if reporter is None or not self.entries:
            return
        if capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line("\n" + self.summary())
        else:
            reporter.write_line("\n" + self.summary())


def assert_serves(deployment: Deployment, served_name: str) -> None:
    """The official openai client, at the exported URL with the exported key, lists exactly the served
    model and gets a chat completion from it."""
    assert_client_served(deployment.endpoint_url, deployment.api_key, served_name)


def assert_client_served(base_url: str, api_key: str, served_name: str) -> None:
    """The official openai client, at `base_url` with `api_key`, lists exactly the served model and gets a chat
    completion from it."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)
    assert [m.id for m in client.models.list().data] == [served_name]
    reply = client.chat.completions.create(
        model=served_name, messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0)
    assert reply.choices[0].message.content is not None
    assert reply.usage is not None and reply.usage.completion_tokens > 0
