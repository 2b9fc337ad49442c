"""The containers' life on a real Docker host: what Docker reports against the rendered spec, the cache
volume across a re-created container, the endpoint without the proxy, and an engine restart (what a
reboot does to Docker) after which the restart policy alone must bring the endpoint back.

Expectations are read from the spec's fields and compared with `docker inspect` JSON directly; the
renderer is not used to compute them.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.real.harness import images
from tests.real.harness.common import http_status
from tests.real.harness.deployer import (
    CPU_ENV,
    DEFAULT_NAMES,
    Deployment,
    StageTimes,
    deploy,
    existing_host_config,
    run_gate,
    vllm_as_run,
)
from tests.real.harness.testhost import TestHost
from vllm_endpoint.infra.catalog.names import (
    CACHE_SUBDIR_ROOT,
    CONTAINER_CACHE_ROOT,
    PROXY_CONTAINER_PORT,
    VLLM_CONTAINER_PORT,
    VLLM_UPSTREAM_HOST,
)
from vllm_endpoint.infra.plan.spec import ContainerSpec, HealthCheck, Mount, PortMapping
from vllm_endpoint.infra.render.container import plan_docker_run
from vllm_endpoint.infra.render.proxy import proxy_spec, render_nginx_conf

pytestmark = pytest.mark.real

SERVED_NAME = "tiny-lifecycle"
VLLM, PROXY = DEFAULT_NAMES.containers
FIRST_MAX_NUM_SEQS, SECOND_MAX_NUM_SEQS = "16", "8"
# Docker's own defaults for what a spec leaves unset (dockerd 20.10 and later).
DOCKER_DEFAULT_IPC = "private"
DOCKER_DEFAULT_SHM_BYTES = 64 * 2**20
DOCKER_DEFAULT_RUNTIME = "runc"


# --------------------------------------------------------------------------------------------
# Comparison of `docker inspect` with a ContainerSpec.

def inspect(host: TestHost, name: str) -> dict[str, Any]:
    data = json.loads(host.docker("inspect", name).stdout)
    assert len(data) == 1
    return dict(data[0])


def image_env_names(host: TestHost, image: str) -> set[str]:
    env = json.loads(host.docker("image", "inspect", "--format", "{{json .Config.Env}}", image).stdout) or []
    return {item.split("=", 1)[0] for item in env}


def spec_differences(spec: ContainerSpec, info: dict[str, Any], image_env: set[str]) -> list[str]:
    """Every field of `spec` Docker does not report as specified (empty when they all match)."""
    problems: list[str] = []

    def check(what: str, actual: object, expected: object) -> None:
        if actual != expected:
            problems.append(f"{what}: docker reports {actual!r}, the spec says {expected!r}")

    cfg, hc = info["Config"], info["HostConfig"]
    check("name", info["Name"], f"/{spec.name}")
    check("image", cfg["Image"], spec.image)
    check("command (args after the image's entrypoint)", cfg["Cmd"] or [], list(spec.args))
    check("restart policy", hc["RestartPolicy"]["Name"], spec.restart)

    health = cfg.get("Healthcheck")
    if spec.health is None:
        check("health check", health, None)
    else:
        ns = 10**9
        check("health check", {k: (health or {}).get(k) for k in ("Test", "Interval", "Timeout", "Retries",
                                                                  "StartPeriod")},
              {"Test": ["CMD-SHELL", spec.health.shell_command], "Interval": spec.health.interval_s * ns,
               "Timeout": spec.health.timeout_s * ns, "Retries": spec.health.retries,
               "StartPeriod": spec.health.start_period_s * ns})

    check("log driver", hc["LogConfig"]["Type"], spec.log_driver)
    check("log options", hc["LogConfig"]["Config"] or {}, dict(spec.log_opts))
    check("user", cfg["User"], spec.user or "")
    check("cap drop", sorted(hc["CapDrop"] or []), sorted(spec.cap_drop))
    check("cap add", sorted(hc["CapAdd"] or []), sorted(spec.cap_add))
    check("security options", sorted(hc["SecurityOpt"] or []), sorted(spec.security_opts))
    check("ipc mode", hc["IpcMode"], spec.ipc_mode or DOCKER_DEFAULT_IPC)
    check("shm size", hc["ShmSize"],
          spec.shm_size_mb * 2**20 if spec.shm_size_mb is not None else DOCKER_DEFAULT_SHM_BYTES)
    check("init", bool(hc.get("Init")), spec.init)
    check("read-only root filesystem", hc["ReadonlyRootfs"], spec.read_only_root)
    check("stop timeout", cfg.get("StopTimeout"), spec.stop_timeout_s)
    check("runtime", hc["Runtime"], spec.runtime or DOCKER_DEFAULT_RUNTIME)
    check("GPU device requests", bool(hc.get("DeviceRequests")), spec.gpus is not None)

    wanted_mounts = {(m.source, m.target, m.read_only) for m in spec.mounts}
    check("mounts (as created)",
          {(m["Source"], m["Target"], bool(m.get("ReadOnly"))) for m in hc.get("Mounts") or []
           if m["Type"] == "bind"}, wanted_mounts)
    check("mounts (as running)",
          {(m["Source"], m["Destination"], not m["RW"]) for m in info["Mounts"] if m["Type"] == "bind"},
          wanted_mounts)
    check("tmpfs", hc.get("Tmpfs") or {}, dict(spec.tmpfs))

    env = dict(item.split("=", 1) for item in cfg["Env"])
    for key, value in spec.env:
        check(f"env {key}", env.get(key), value)
    for key in spec.secret_env:
        if not env.get(key):
            problems.append(f"secret env {key}: not set in the container")
    extra = set(env) - {k for k, _ in spec.env} - set(spec.secret_env) - image_env
    check("env names neither in the spec nor in the image", sorted(extra), [])

    labels = cfg.get("Labels") or {}
    for key, value in spec.labels:
        check(f"label {key}", labels.get(key), value)

    networks = info["NetworkSettings"]["Networks"]
    check("network mode", hc["NetworkMode"], spec.network or "default")
    check("networks", sorted(networks), [spec.network or "bridge"])
    if spec.network and spec.network in networks:
        aliases = networks[spec.network].get("Aliases") or []
        missing = [a for a in spec.network_aliases if a not in aliases]
        check("network aliases missing", missing, [])

    bindings = {port: [(b["HostIp"], b["HostPort"]) for b in value or []]
                for port, value in (hc.get("PortBindings") or {}).items()}
    check("published ports", bindings,
          {f"{p.container_port}/tcp": [(p.host_ip, str(p.host_port))] for p in spec.ports})
    check("running", info["State"]["Running"], True)
    return problems



def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.5) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    raise TimeoutError(f"{what} within {timeout:.0f} s")


# --------------------------------------------------------------------------------------------
# Shared deployments: one first deploy, one re-deploy with a flag changed.

@pytest.fixture(scope="module")
def api_key() -> str:
    return secrets.token_urlsafe(36)


def _deploy(host: TestHost, cache_dir: Path, model: Path, api_key: str, times: StageTimes, label: str,
            **settings: str) -> Deployment:
    config = existing_host_config(host, cache_dir, modelPath=str(model), servedModelName=SERVED_NAME,
                                  maxModelLen="512", **settings)
    deployment = deploy(host, config, api_key=api_key)
    times.add_deploy(deployment, label)
    return deployment


@dataclass
class First:
    deployment: Deployment
    vllm: dict[str, Any]  # docker inspect right after the gate passed
    proxy: dict[str, Any]


@pytest.fixture(scope="module")
def first(test_host: TestHost, vllm_image: str, tiny_model: Path, cache_dir: Path, api_key: str,
          times: StageTimes) -> First:
    images.build_nginx_image(test_host, tag=existing_host_config(test_host, cache_dir).access.proxy_image)
    test_host.remove_all_containers()
    deployment = _deploy(test_host, cache_dir, tiny_model, api_key, times, "first",
                         maxNumSeqs=FIRST_MAX_NUM_SEQS)
    return First(deployment, inspect(test_host, VLLM), inspect(test_host, PROXY))


@dataclass
class Second:
    first: First
    deployment: Deployment
    vllm: dict[str, Any]
    probe_name: str
    probe_text: str


@pytest.fixture(scope="module")
def second(first: First, tiny_model: Path, cache_dir: Path, api_key: str, times: StageTimes) -> Second:
    host = first.deployment.host
    name, text = f"lifecycle-probe-{secrets.token_hex(4)}", secrets.token_hex(16)
    # Written by the container (as its own user) into the cache volume, as vLLM writes its caches.
    host.docker("exec", VLLM, "sh", "-c", f"printf %s {text} > {CONTAINER_CACHE_ROOT}/{name}")
    deployment = _deploy(host, cache_dir, tiny_model, api_key, times, "second (flag changed)",
                         maxNumSeqs=SECOND_MAX_NUM_SEQS)
    return Second(first, deployment, inspect(host, VLLM), name, text)


# --------------------------------------------------------------------------------------------

def test_the_cpu_run_spec_is_the_rendered_spec_minus_the_gpu_request(first: First) -> None:
    rendered, ran = first.deployment.plan.vllm, first.deployment.vllm
    assert ran == vllm_as_run(first.deployment.plan)  # the CPU changes and the owner labels, nothing else
    assert rendered.gpus == "all" and ran.gpus is None
    assert ran.env == rendered.env + CPU_ENV


def test_docker_reports_the_vllm_container_exactly_as_specified(first: First) -> None:
    host, spec = first.deployment.host, first.deployment.vllm
    assert spec_differences(spec, first.vllm, image_env_names(host, spec.image)) == []
    # The facts the product relies on, spelled out (they are also covered by the comparison above).
    hc = first.vllm["HostConfig"]
    assert hc["RestartPolicy"]["Name"] == "unless-stopped"
    assert hc["Init"] is True and hc["CapDrop"] == ["ALL"] and hc["SecurityOpt"] == ["no-new-privileges:true"]
    assert first.vllm["Config"]["User"] == host.container_user
    assert hc["PortBindings"] in ({}, None), "vLLM must not be published when the proxy is on"
    assert VLLM_UPSTREAM_HOST in first.vllm["NetworkSettings"]["Networks"][first.deployment.plan.network]["Aliases"]
    # The key is in the container's environment and nowhere in what an operator sees.
    assert first.deployment.api_key not in first.deployment.docker_run
    assert first.deployment.api_key not in json.dumps(first.vllm["Config"]["Cmd"])


@pytest.mark.parametrize(("change", "field_name"), [
    ({"restart": "always"}, "restart policy"),
    ({"user": "0:0"}, "user"),
    ({"init": False}, "init"),
    ({"cap_drop": ()}, "cap drop"),
    ({"security_opts": ()}, "security options"),
    ({"shm_size_mb": 1024}, "shm size"),
    ({"log_opts": (("max-size", "10m"),)}, "log options"),
    ({"network_aliases": ("vllm", "other")}, "network aliases"),
    ({"stop_timeout_s": 10}, "stop timeout"),
    ({"read_only_root": True}, "read-only root filesystem"),
    ({"tmpfs": ()}, "tmpfs"),
])
def test_the_comparison_notices_any_changed_field(first: First, change: dict[str, Any], field_name: str) -> None:
    """The comparison above is not vacuous: a spec that differs in one field is reported, by name."""
    spec = dataclasses.replace(first.deployment.vllm, **change)
    problems = spec_differences(spec, first.vllm, image_env_names(first.deployment.host, spec.image))
    assert problems and all(p.startswith(field_name) for p in problems), problems


def test_the_comparison_notices_changed_mounts_env_health_and_ports(first: First) -> None:
    spec, host = first.deployment.vllm, first.deployment.host
    env_names = image_env_names(host, spec.image)
    assert spec.health is not None
    changes: list[tuple[dict[str, Any], str]] = [
        ({"mounts": tuple(Mount(m.source, m.target, not m.read_only) for m in spec.mounts)}, "mounts"),
        ({"env": (*spec.env[:-1], (spec.env[-1][0], "other"))}, "env"),
        ({"env": (*spec.env, ("NOT_SET", "1"))}, "env NOT_SET"),
        ({"secret_env": (*spec.secret_env, "HF_TOKEN")}, "secret env HF_TOKEN"),
        ({"health": HealthCheck(spec.health.shell_command, 31, 10, 3, 600)}, "health check"),
        ({"ports": (PortMapping(30005, 8000),)}, "published ports"),
        ({"network": "bridge"}, "network"),
    ]
    for change, field_name in changes:
        problems = spec_differences(dataclasses.replace(spec, **change), first.vllm, env_names)
        assert problems and all(p.startswith(field_name) for p in problems), (change, problems)
    # And an env name the spec does not list (the image's own are allowed) is reported too.
    fewer = dataclasses.replace(spec, env=spec.env[:-1])
    assert spec_differences(fewer, first.vllm, env_names) == [
        f"env names neither in the spec nor in the image: docker reports {[spec.env[-1][0]]!r}, the spec says []"]


def test_docker_reports_the_proxy_container_exactly_as_specified(first: First) -> None:
    host, spec = first.deployment.host, proxy_spec(first.deployment.plan)
    assert spec is not None
    assert spec_differences(spec, first.proxy, image_env_names(host, spec.image)) == []
    hc = first.proxy["HostConfig"]
    assert hc["ReadonlyRootfs"] is True
    assert hc["PortBindings"] == {"8080/tcp": [{"HostIp": "", "HostPort": "30005"}]}
    assert first.proxy["Config"].get("Healthcheck") is None


def test_dockers_own_health_check_turns_healthy(first: First, times: StageTimes) -> None:
    """The spec's health command (python3 + urllib against /health) works inside the image."""
    host = first.deployment.host
    assert first.deployment.vllm.health is not None
    timeout = first.deployment.vllm.health.interval_s * 2 + first.deployment.vllm.health.timeout_s

    def healthy() -> bool:
        status = host.docker("inspect", "--format", "{{.State.Health.Status}}", VLLM).stdout.strip()
        assert status in {"starting", "healthy"}, status
        return status == "healthy"

    times.add("docker_health_healthy_after_gate", wait_until(healthy, timeout, "vllm did not turn healthy",
                                                             interval=2))


def test_a_file_in_the_cache_volume_survives_re_creation(second: Second) -> None:
    host = second.deployment.host
    assert second.vllm["Id"] != second.first.vllm["Id"], "the flag change must re-create the container"
    seen = host.docker("exec", VLLM, "cat", f"{CONTAINER_CACHE_ROOT}/{second.probe_name}").stdout
    assert seen == second.probe_text
    # ... and it lives in the host folder the plan names, not in a Docker-managed volume.
    on_host = Path(second.deployment.plan.host_cache_dir) / CACHE_SUBDIR_ROOT / second.probe_name
    assert on_host.read_text() == second.probe_text
    assert on_host.stat().st_uid == host.uid


def test_the_re_deploy_changes_only_the_flag(second: Second) -> None:
    before, after = plan_docker_run(second.first.deployment.plan), plan_docker_run(second.deployment.plan)
    changed = [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    # The flag, and the proxy's config digest: its pool of connections to vLLM follows maxNumSeqs.
    assert len(changed) == 4 and sum("config-digest=" in line for line in changed) == 2, changed
    digest = re.compile(r"config-digest=[0-9a-f]+")
    assert digest.sub("", after) == digest.sub("", before).replace(f"--max-num-seqs {FIRST_MAX_NUM_SEQS} ",
                                                                  f"--max-num-seqs {SECOND_MAX_NUM_SEQS} ")
    host, spec = second.deployment.host, second.deployment.vllm
    assert spec_differences(spec, second.vllm, image_env_names(host, spec.image)) == []
    cmd = second.vllm["Config"]["Cmd"]
    assert cmd[cmd.index("--max-num-seqs") + 1] == SECOND_MAX_NUM_SEQS


def test_after_an_engine_restart_both_containers_and_the_endpoint_come_back(
        second: Second, times: StageTimes) -> None:
    host, deployment = second.deployment.host, second.deployment
    names = (VLLM, PROXY)
    before = {name: inspect(host, name) for name in names}
    stop_s, start_s = host.restart_engine()
    times.add("engine_stop", stop_s)
    times.add("engine_start", start_s)

    def running() -> bool:
        states = [host.docker("inspect", "--format", "{{.State.Running}}", n, check=False).stdout.strip()
                  for n in names]
        return states == ["true", "true"]

    # Nobody starts them: only their restart policy can.
    times.add("containers_running_after_engine_start", wait_until(running, 60, "containers not running again"))
    after = {name: inspect(host, name) for name in names}
    for name in names:
        assert after[name]["Id"] == before[name]["Id"], f"{name} was re-created, not restarted"
        assert after[name]["State"]["StartedAt"] > before[name]["State"]["StartedAt"]

    seconds, output = run_gate(deployment)
    times.add("vllm_ready_after_engine_restart", seconds)
    assert f"ready: GET http://127.0.0.1:{deployment.plan.api_port}/v1/models answered 200" in output
    client = openai.OpenAI(base_url=deployment.endpoint_url, api_key=deployment.api_key, max_retries=0,
                           timeout=60)
    assert [m.id for m in client.models.list().data] == [SERVED_NAME]
    assert http_status(deployment.endpoint_url + "/models") == 401


# --------------------------------------------------------------------------------------------
# The port chain: host 30005 -> proxy 8080 -> vLLM 8000 on the private network.

def test_the_api_port_forwards_through_the_proxy_to_vllms_8000(first: First) -> None:
    host, plan = first.deployment.host, first.deployment.plan
    published = host.docker("port", PROXY).stdout.strip().splitlines()
    assert published and all(line.split(" -> ")[0] == f"{PROXY_CONTAINER_PORT}/tcp" for line in published)
    assert {line.rsplit(":", 1)[1] for line in published} == {str(plan.api_port)}
    assert host.docker("port", VLLM).stdout.strip() == "", "vLLM publishes nothing"
    networks = inspect(host, VLLM)["NetworkSettings"]["Networks"]
    assert VLLM_UPSTREAM_HOST in networks[plan.network]["Aliases"]
    assert f"server {VLLM_UPSTREAM_HOST}:{VLLM_CONTAINER_PORT} resolve;" in render_nginx_conf(plan.proxy_settings)
    client = openai.OpenAI(base_url=first.deployment.endpoint_url, api_key=first.deployment.api_key,
                           max_retries=0, timeout=60)
    assert [m.id for m in client.models.list().data] == [SERVED_NAME]
