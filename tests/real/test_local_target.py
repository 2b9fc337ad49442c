"""target=local on a real Docker engine: the plan made for a machine without a GPU renders containers
that serve, with nothing adapted for the test (no `cpu_adapt`).

"This machine" is the test host as seen from inside it: its network namespace, its unprivileged user
(in the docker group) and its engine's unix socket, which is what `DOCKER_HOST` or the default socket is
for the user's own machine. Every step runs there as the VllmServer component runs it with
target=local: the same rendered command texts, as local commands through /bin/sh, in the same order
(prepare, proxy files, fine-tune copy and check, the containers as `docker run`, the readiness gate with
the key on stdin). Then the official openai client chats through http://127.0.0.1:<apiPort>/v1.

The CPU image the plan names (vLLM's public.ecr.aws CPU release) cannot be pulled here: the test tags
the real vLLM CPU build (the `vllm_image` fixture) with that name, as the nginx stand-in is tagged with
the proxy image's name.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.real.harness import images
from tests.real.harness.common import BUILD_DIR, REPO_ROOT
from tests.real.harness.deployer import COPY_URN, grantable_open_files
from tests.real.harness.testhost import TestHost
from vllm_endpoint.infra.catalog.names import SECRET_API_KEY_ENV
from vllm_endpoint.infra.plan.deployment import DeploymentPlan, build_plan
from vllm_endpoint.infra.plan.local_machine import LocalMachine
from vllm_endpoint.infra.render.container import docker_run_script
from vllm_endpoint.infra.render.host_scripts import (
    existing_host_prepare_script,
    local_model_copy_script,
    model_verify_script,
    readiness_gate_script,
    write_files_script,
    write_files_stdin,
)
from vllm_endpoint.infra.render.proxy import proxy_files, proxy_spec
from vllm_endpoint.infra.settings.models import load_stack_config

pytestmark = pytest.mark.real

API_PORT = 30017
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"

CHAT = """
import json, sys, openai
base_url, key, model = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)
models = [m.id for m in client.models.list().data]
reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=8)
try:
    openai.OpenAI(base_url=base_url, api_key="wrong-" + "x" * 40, max_retries=0, timeout=30).models.list()
    refused = None
except openai.AuthenticationError as err:
    refused = err.status_code
print(json.dumps({"models": models, "finish": reply.choices[0].finish_reason,
                  "tokens": reply.usage.completion_tokens, "refused": refused}))
"""


@dataclass
class Machine:
    """The test host as the deploying machine: commands run in its netns as its user, on its engine."""

    host: TestHost
    home: Path

    def run(self, script: str, stdin: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 600, as_user: bool = True) -> subprocess.CompletedProcess[str]:
        """`script` by /bin/sh in the machine's network namespace, as its user (`as_user`), else as root:
        an app on the machine (the test's own venv is not readable by the test host's user)."""
        user = ["setpriv", f"--reuid={self.host.uid}", f"--regid={self.host.gid}", "--init-groups"] if as_user else []
        argv = ["nsenter", f"--net=/var/run/netns/{self.host.name}", *user,
                "env", "-i", f"HOME={self.home}", "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                f"DOCKER_HOST=unix://{self.host.docker_socket}",
                *(f"{k}={v}" for k, v in (env or {}).items()), "/bin/sh", "-c", script]
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)


@dataclass
class LocalDeployment:
    plan: DeploymentPlan
    api_key: str
    gate: subprocess.CompletedProcess[str]
    steps: list[str]


@pytest.fixture(scope="module")
def machine(test_host: TestHost) -> Iterator[Machine]:
    home = BUILD_DIR / "host-cache" / f"{test_host.name}-local-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    os.chown(home, test_host.uid, test_host.gid)
    yield Machine(test_host, home)
    test_host.remove_all_containers()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def deployed(machine: Machine, vllm_image: str, tiny_model: Path) -> LocalDeployment:
    host = machine.host
    # The fine-tune folder on the deploying machine, readable by its user.
    model_src = machine.home / "merged-model"
    shutil.copytree(tiny_model, model_src)
    subprocess.run(["chown", "-R", f"{host.uid}:{host.gid}", str(model_src)], check=True)
    config = load_stack_config({"target": "local", "modelPath": str(model_src), "apiPort": str(API_PORT),
                                "localCpuKvCacheGib": "1", "maxModelLen": "512",
                                # what this machine's Docker can grant (the deploy's own check says so)
                                "containerOpenFiles": str(grantable_open_files())})
    plan = build_plan(config, machine_probe=lambda: LocalMachine(
        str(machine.home), host.container_user, (), "no nvidia-smi on this machine"))
    host.docker_local("tag", vllm_image, plan.image_ref)
    images.build_nginx_image(host, tag=plan.config.access.proxy_image)
    api_key = secrets.token_urlsafe(32)
    steps: list[str] = []

    def step(name: str, script: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        proc = machine.run(script, **kwargs)  # type: ignore[arg-type]
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
        steps.append(name)
        return proc

    step("prepare-host", existing_host_prepare_script(plan.host_cache_dir, False, plan.config.server.container_user,
                                                      open_files=plan.config.server.container_open_files))
    modes, contents = proxy_files(plan, api_key, None, None)
    step("proxy-files", write_files_script(plan.proxy_dir, modes), stdin=write_files_stdin(contents))
    assert plan.model_upload is not None
    step("model-upload", local_model_copy_script(plan))
    verify, manifest = model_verify_script(plan, COPY_URN)
    step("model-check", verify, stdin=manifest)
    run_script = docker_run_script(plan.network, [plan.vllm, proxy_spec(plan)], plan.secret_env)
    step("containers", run_script, env={SECRET_API_KEY_ENV: api_key})
    gate = step("readiness", readiness_gate_script(plan.readiness_gate), stdin=api_key + "\n",
                timeout=plan.readiness_gate.timeout_s + 60)
    return LocalDeployment(plan, api_key, gate, steps)


def test_the_local_plan_runs_unchanged_on_a_real_engine_and_answers_the_openai_client(
        deployed: LocalDeployment, machine: Machine) -> None:
    plan = deployed.plan
    print(deployed.gate.stdout)  # the gate's progress transcript, shown with -rP
    assert deployed.steps == ["prepare-host", "proxy-files", "model-upload", "model-check", "containers",
                              "readiness"]
    assert plan.vllm.gpus is None and plan.vllm.runtime is None
    assert ("VLLM_CPU_KVCACHE_SPACE", "1") in plan.vllm.env
    assert plan.vllm.user == machine.host.container_user
    url = f"http://127.0.0.1:{API_PORT}/v1"
    proc = machine.run(f"exec {VENV_PYTHON} -c \"$CHAT\" {url} \"$KEY\" {plan.served_model_name}",
                       env={"CHAT": CHAT, "KEY": deployed.api_key}, timeout=300, as_user=False)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["models"] == [plan.served_model_name]
    assert answer["tokens"] >= 1 and answer["refused"] == 401


def test_the_api_port_answers_on_loopback_only(deployed: LocalDeployment, machine: Machine) -> None:
    host = machine.host
    published = host.docker("port", deployed.plan.proxy.name).stdout.split()
    assert published == ["8080/tcp", "->", f"127.0.0.1:{API_PORT}"]
    # From the machine's own network address (what another machine would dial), nothing answers.
    probe = machine.run(f"exec curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 http://{host.address}:{API_PORT}/v1/models")
    assert probe.stdout in ("000", "") and probe.returncode != 0


def test_the_caches_and_the_fine_tune_live_in_the_users_home(deployed: LocalDeployment, machine: Machine) -> None:
    plan = deployed.plan
    assert plan.host_cache_dir == f"{machine.home}/.cache/vllm-endpoint/vllm"
    assert plan.model_upload is not None
    model_dir = Path(plan.model_upload.remote_dir)
    assert (model_dir / "config.json").is_file() and not Path(plan.model_upload.staging_dir).exists()
    owner = Path(plan.host_cache_dir, "root-cache").stat()
    assert (owner.st_uid, owner.st_gid) == (machine.host.uid, machine.host.gid)
    assert (model_dir / ".vllm-endpoint-verified").read_text().strip() == plan.model_upload.digest
