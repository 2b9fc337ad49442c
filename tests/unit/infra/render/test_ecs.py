"""The ECS rendering of a container spec (infra/render/ecs.py) runs what `docker run` runs.

The proof: a spec's ECS container definition, rendered back to `docker run` the way the ECS agent runs it,
equals `docker_run_argv(spec)` once the differences ECS forces are applied to the latter. Those differences
are `forced_by_ecs` below, one rule each, so that any other difference fails.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from vllm_endpoint.infra.catalog.names import PROJECT, PROXY_KEY_CHECK_ENV, SECRET_API_KEY_ENV, SECRET_HF_TOKEN_ENV
from vllm_endpoint.infra.plan.deployment import DeploymentPlan, build_plan
from vllm_endpoint.infra.plan.local_machine import LocalGpu, LocalMachine
from vllm_endpoint.infra.plan.spec import ContainerSpec, HealthCheck, Mount, PortMapping, Ulimit, gpu_request
from vllm_endpoint.infra.render.container import docker_run_argv
from vllm_endpoint.infra.render.ecs import (
    HEALTH_START_PERIOD_S,
    TMPFS_OPTIONS,
    ULIMIT_NAMES,
    UNSIZED_TMPFS_MIB,
    AwsLogs,
    EcsRenderError,
    NetworkMode,
    ecs_container,
    ecs_task,
    ecs_to_docker_run,
    plan_ecs_task,
    task_proxy,
    task_secret_names,
)
from vllm_endpoint.infra.render.proxy import proxy_spec
from vllm_endpoint.infra.settings.models import load_stack_config

ROOT = Path(__file__).resolve().parents[4]
ARNS = {
    SECRET_API_KEY_ENV: "arn:aws:ssm:us-east-1:123456789012:parameter/vllm-endpoint/dev/api-key",
    SECRET_HF_TOKEN_ENV: "arn:aws:secretsmanager:us-east-1:123456789012:secret:vllm-endpoint/hf-token-AbCdEf",
    PROXY_KEY_CHECK_ENV: "arn:aws:ssm:us-east-1:123456789012:parameter/vllm-endpoint/dev/proxy-key-check",
}
PAUSE = "container:ecs-pause"  # the awsvpc task's network namespace on a test host
# What the user sets before a first deploy of the AWS stack (Pulumi.dev.yaml's header).
USER_SET = {"sshAllowedCidrs": "93.184.215.14/32", "apiAllowedCidrs": "93.184.216.0/24"}
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n"
LOCAL_GPU = LocalMachine(home="/home/dev", user="1000:1000", gpus=(LocalGpu("NVIDIA L4", 22.49, "8.9"),))
_NO_VALUE = {"--detach", "--init", "--read-only"}


def stack_settings(name: str) -> dict[str, str]:
    """A shipped stack's settings as the CLI passes them, with what its header asks the user to set."""
    values = yaml.safe_load((ROOT / f"Pulumi.{name}.yaml").read_text())["config"]
    prefix = f"{PROJECT}:"
    raw = {k.removeprefix(prefix): v if isinstance(v, str) else json.dumps(v)
           for k, v in values.items() if k.startswith(prefix)}
    target = raw.get("target", "aws")
    return raw | (USER_SET if target == "aws" else {"sshPrivateKey": PRIVATE_KEY} if target == "existing-host" else {})


def stack_plan(name: str, **extra: str) -> DeploymentPlan:
    return build_plan(load_stack_config(stack_settings(name) | extra), hub_fetcher=None,
                      machine_probe=lambda: LOCAL_GPU)


# ----------------------------------------------------------------------------------------------
# The differences ECS forces, applied to `docker_run_argv(spec)`.

def options_and_tail(argv: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    assert argv[:2] == ["docker", "run"]
    options: list[tuple[str, str]] = []
    i = 2
    while i < len(argv) and argv[i].startswith("--"):
        if argv[i] in _NO_VALUE:
            options.append((argv[i], ""))
            i += 1
        else:
            options.append((argv[i], argv[i + 1]))
            i += 2
    return options, argv[i:]


def forced_by_ecs(spec: ContainerSpec, *, network_mode: NetworkMode, gpu_ids: list[str], links: Sequence[str] = (),
                  logs: AwsLogs | None = None) -> tuple[Counter[tuple[str, str]], list[str]]:
    """`docker_run_argv(spec)` with each difference ECS forces, and nothing else, applied."""
    options, tail = options_and_tail(docker_run_argv(spec))
    out: list[tuple[str, str]] = []
    for flag, value in options:
        if flag == "--restart":
            continue  # 1. the agent restarts containers (restartPolicy), not Docker
        if flag == "--gpus":
            # 2. GPUs by count: the agent picks the devices and runs the NVIDIA runtime with them
            out += [("--runtime", "nvidia"), ("--env", f"NVIDIA_VISIBLE_DEVICES={','.join(gpu_ids)}")]
        elif flag == "--ipc" and value == "private":
            continue  # 3. private IPC is the daemon's default; ECS states only `host`
        elif flag == "--mount":
            # 4. host volumes are bind mounts the agent passes as Binds (`-v source:target[:ro]`)
            fields = dict(kv.partition("=")[::2] for kv in value.split(","))
            out.append(("--volume", f"{fields['source']}:{fields['target']}" + (":ro" if "readonly" in fields else "")))
        elif flag == "--security-opt" and value == "no-new-privileges:true":
            out.append((flag, "no-new-privileges"))  # 5. ECS's spelling of the same option
        elif flag in ("--network", "--network-alias"):
            continue  # 6. the task's network, added below; aliases: links on the consumer (bridge), 127.0.0.1 (awsvpc)
        elif flag == "--publish" and network_mode == "awsvpc":
            continue  # 7. awsvpc: the port is the task's own address's, nothing is published on the host
        elif flag == "--health-start-period":
            # 8. at most 300 s; the service's health-check grace period covers the rest
            out.append((flag, f"{min(int(value[:-1]), HEALTH_START_PERIOD_S[1])}s"))
        elif flag == "--tmpfs":
            # 9. ECS requires a size and states it last
            path, _, opts = value.partition(":")
            parts = [o for o in opts.split(",") if o and not o.startswith("size=")]
            sizes = [o for o in opts.split(",") if o.startswith("size=")]
            out.append((flag, f"{path}:{','.join([*parts, sizes[0] if sizes else f'size={UNSIZED_TMPFS_MIB}m'])}"))
        elif flag in ("--log-driver", "--log-opt") and logs is not None:
            continue  # 10. CloudWatch Logs instead of the host's json-file (added below)
        else:
            out.append((flag, value))
    # 6. every container joins the task's network: a shared namespace (awsvpc) or Docker's default bridge
    out.append(("--network", PAUSE if network_mode == "awsvpc" else "bridge"))
    out += [("--link", link) for link in links] if network_mode == "bridge" else []
    if logs is not None:
        out += [("--log-driver", "awslogs"), ("--log-opt", f"awslogs-group={logs.group}"),
                ("--log-opt", f"awslogs-region={logs.region}"),
                ("--log-opt", f"awslogs-stream={logs.stream_prefix}/{spec.name}/local")]
    return Counter(out), tail


def ecs_run(definition: dict[str, Any], volumes: tuple[dict[str, Any], ...], *, network_mode: NetworkMode,
            ipc_mode: str | None, gpu_ids: list[str]) -> tuple[Counter[tuple[str, str]], list[str]]:
    argv = ecs_to_docker_run(definition, volumes, network_mode=network_mode, ipc_mode=ipc_mode, gpu_ids=gpu_ids,
                             task_network=PAUSE if network_mode == "awsvpc" else None)
    options, tail = options_and_tail(argv)
    return Counter(options), tail


def task_arns(plan: DeploymentPlan, network_mode: NetworkMode = "awsvpc") -> dict[str, str]:
    return {name: ARNS[name] for name in task_secret_names(plan, network_mode=network_mode)}


def proxy_as_run(plan: DeploymentPlan, definition: dict[str, Any],
                 network_mode: NetworkMode) -> tuple[ContainerSpec, dict[str, Any]]:
    """The proxy's spec in the task, and its definition without the entry point the awsvpc task adds (which
    test_ecs_proxy.py checks): what the rest of the definition must run like."""
    if network_mode == "bridge":
        return proxy_spec(plan), definition
    proxy = task_proxy(plan)
    assert definition["entryPoint"] == list(proxy.entry_point)
    return proxy.spec, {k: v for k, v in definition.items() if k != "entryPoint"}


def assert_same_run(spec: ContainerSpec, definition: dict[str, Any], volumes: tuple[dict[str, Any], ...], *,
                    network_mode: NetworkMode, ipc_mode: str | None, gpu_ids: list[str], links: Sequence[str] = (),
                    logs: AwsLogs | None = None) -> None:
    expected = forced_by_ecs(spec, network_mode=network_mode, gpu_ids=gpu_ids, links=links, logs=logs)
    assert ecs_run(definition, volumes, network_mode=network_mode, ipc_mode=ipc_mode, gpu_ids=gpu_ids) == expected


# ----------------------------------------------------------------------------------------------
# The project's own stacks.

@pytest.mark.parametrize("network_mode", ["awsvpc", "bridge"])
@pytest.mark.parametrize("stack", ["dev", "shared-gpu"])
def test_a_stacks_task_runs_what_its_docker_run_runs_up_to_what_ecs_forces(stack: str,
                                                                          network_mode: NetworkMode) -> None:
    plan = stack_plan(stack)
    task = plan_ecs_task(plan, secret_arns=task_arns(plan, network_mode), network_mode=network_mode)
    vllm_def, proxy_def = task.container_definitions
    # dev: `--gpus all` on a g5.xlarge (1 GPU); shared-gpu: device "1" of the host, which the agent assigns.
    gpu_ids = ["0"] if plan.vllm.gpus == "all" else plan.vllm.env_dict()["NVIDIA_VISIBLE_DEVICES"].split(",")
    assert_same_run(plan.vllm, vllm_def, task.volumes, network_mode=network_mode, ipc_mode=task.ipc_mode,
                    gpu_ids=gpu_ids)
    links = [f"{plan.vllm.name}:{alias}" for alias in plan.vllm.network_aliases]
    proxy, proxy_def = proxy_as_run(plan, proxy_def, network_mode)
    assert_same_run(proxy, proxy_def, task.volumes, network_mode=network_mode, ipc_mode=task.ipc_mode,
                    gpu_ids=[], links=links)


def test_the_dev_stack_with_cloudwatch_logs() -> None:
    plan = stack_plan("dev")
    logs = AwsLogs("/vllm-endpoint/dev", "us-east-1", "replica")
    task = plan_ecs_task(plan, secret_arns=task_arns(plan), logs=logs)
    vllm_def, proxy_def = task.container_definitions
    proxy, proxy_def = proxy_as_run(plan, proxy_def, "awsvpc")
    for spec, definition in ((plan.vllm, vllm_def), (proxy, proxy_def)):
        assert definition["logConfiguration"] == {"logDriver": "awslogs", "options": {
            "awslogs-group": "/vllm-endpoint/dev", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "replica"}}
        assert_same_run(spec, definition, task.volumes, network_mode="awsvpc", ipc_mode=None,
                        gpu_ids=["0"] if spec.gpus else [], logs=logs)


def test_the_dev_task_as_the_service_will_register_it() -> None:
    plan = stack_plan("dev")
    task = plan_ecs_task(plan, secret_arns=task_arns(plan))
    vllm_def, proxy_def = task.container_definitions
    assert task.network_mode == "awsvpc" and task.ipc_mode is None
    assert vllm_def["resourceRequirements"] == [{"type": "GPU", "value": "1"}]  # g5.xlarge: one A10G
    assert vllm_def["essential"] and proxy_def["essential"]
    assert proxy_def["dependsOn"] == [{"containerName": plan.vllm.name, "condition": "HEALTHY"}]
    assert "portMappings" in proxy_def and proxy_def["portMappings"] == [
        {"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"}]
    assert vllm_def["portMappings"] == []
    # VLLM_HEALTH waits 600 s before counting failures; ECS stops at 300 and the service covers the rest.
    assert vllm_def["healthCheck"]["startPeriod"] == 300
    assert task.health_check_grace_period_s == plan.vllm.health.start_period_s == 600  # type: ignore[union-attr]
    assert vllm_def["linuxParameters"]["initProcessEnabled"] is True
    assert vllm_def["linuxParameters"]["sharedMemorySize"] == plan.vllm.shm_size_mb
    assert vllm_def["linuxParameters"]["capabilities"] == {"drop": ["ALL"], "add": []}
    assert vllm_def["user"] == plan.vllm.user and proxy_def["readonlyRootFilesystem"] is True
    assert vllm_def["stopTimeout"] == plan.vllm.stop_timeout_s
    args = task.task_definition_args()
    assert json.loads(args["container_definitions"]) == [vllm_def, proxy_def]
    assert args["requires_compatibilities"] == ["EC2"] and args["network_mode"] == "awsvpc"
    # The proxy's files come with the task (test_ecs_proxy.py): only vLLM's host folders are volumes.
    assert proxy_def["mountPoints"] == []
    assert {v["host_path"] for v in args["volumes"]} == {m.source for m in plan.vllm.mounts}
    mounted = {p["sourceVolume"] for d in task.container_definitions for p in d["mountPoints"]}
    assert mounted == {v["name"] for v in args["volumes"]}


def test_the_local_stack_is_refused_with_its_loopback_port() -> None:
    # target=local publishes the API on 127.0.0.1 only; ECS cannot bind one address.
    plan = stack_plan("local")
    with pytest.raises(EcsRenderError, match=r"gpus=all.*give gpu_count"):  # no instance type says how many
        plan_ecs_task(plan, secret_arns=task_arns(plan))
    with pytest.raises(EcsRenderError, match=r"port 30005 is bound to 127\.0\.0\.1 only"):
        plan_ecs_task(plan, secret_arns=task_arns(plan), gpu_count=1)


def test_secret_values_never_reach_the_task_definition() -> None:
    api_key, hf_token = "k" * 40, "hf_SeCrEtTokenValue"
    plan = stack_plan("dev", apiKey=api_key, hfToken=hf_token)
    assert set(plan.secret_env) == {SECRET_API_KEY_ENV, SECRET_HF_TOKEN_ENV}
    task = plan_ecs_task(plan, secret_arns=ARNS)
    text = json.dumps(task.task_definition_args())
    assert api_key not in text and hf_token not in text
    vllm_def = task.container_definitions[0]
    assert vllm_def["secrets"] == [{"name": k, "valueFrom": ARNS[k]} for k in plan.secret_env]
    assert task.container_definitions[1]["secrets"] == [
        {"name": PROXY_KEY_CHECK_ENV, "valueFrom": ARNS[PROXY_KEY_CHECK_ENV]}]
    assert not {e["name"] for e in vllm_def["environment"]} & set(plan.secret_env)
    argv = ecs_to_docker_run(vllm_def, task.volumes, task_network=PAUSE, network_mode="awsvpc")
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--env" and argv[i + 1] in plan.secret_env] == \
        list(plan.secret_env)  # by name only: the value comes from the environment, never the command line


def test_a_secret_needs_an_arn_and_an_arn_is_all_it_takes() -> None:
    plan = stack_plan("dev")
    with pytest.raises(EcsRenderError, match=f"{SECRET_API_KEY_ENV}.*by reference only"):
        plan_ecs_task(plan, secret_arns={})
    with pytest.raises(EcsRenderError, match="not an SSM parameter or Secrets Manager ARN") as info:
        plan_ecs_task(plan, secret_arns={SECRET_API_KEY_ENV: "sk-the-key-itself"})
    assert "sk-the-key-itself" not in str(info.value)
    with pytest.raises(EcsRenderError, match=SECRET_HF_TOKEN_ENV):
        plan_ecs_task(plan, secret_arns=ARNS)  # an ARN for a secret this stack does not use
    with pytest.raises(EcsRenderError, match=f"{PROXY_KEY_CHECK_ENV}.*by reference only"):
        plan_ecs_task(plan, secret_arns={SECRET_API_KEY_ENV: ARNS[SECRET_API_KEY_ENV]})  # the proxy's is missing


# ----------------------------------------------------------------------------------------------
# Any spec: hypothesis.

_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=10)
_word = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
_path = st.lists(_word, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
_health = st.builds(HealthCheck, _text, st.integers(5, 300), st.integers(2, 120), st.integers(1, 10),
                    st.integers(0, 1200))
_tmpfs_option = st.sampled_from(sorted(TMPFS_OPTIONS - {"mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol"})) | \
    st.sampled_from(["uid=1000", "gid=1000", "mode=0755", "mode=1777"])
_tmpfs = st.tuples(_path, st.builds(lambda opts, size: ",".join([*opts, *([f"size={size}m"] if size else [])]),
                                    st.lists(_tmpfs_option, max_size=3), st.integers(0, 4096)))
_gpu = st.sampled_from(["none", "all", "1", "0,3"])


@st.composite
def specs(draw: st.DrawFn) -> tuple[ContainerSpec, int | None]:
    gpu = draw(_gpu)
    request = gpu_request("all" if gpu == "all" else tuple(gpu.split(","))) if gpu != "none" else None
    env = draw(st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True).filter(
        lambda k: k not in (SECRET_API_KEY_ENV, SECRET_HF_TOKEN_ENV, "NVIDIA_VISIBLE_DEVICES")), _text, max_size=4))
    ipc: Literal["host", "private"] | None = draw(st.sampled_from([None, "private", "host"]))
    mounts = draw(st.lists(st.builds(Mount, _path, _path, st.booleans()), max_size=3, unique_by=lambda m: m.target))
    spec = ContainerSpec(
        name=draw(_word), image=draw(st.sampled_from(["vllm/vllm-openai:v0.32.0", "nginx:1.29.3-alpine"])),
        args=tuple(draw(st.lists(_text, max_size=6))),
        env=tuple(env.items()) + (request.env if request else ()),
        secret_env=tuple(draw(st.sampled_from([(), (SECRET_API_KEY_ENV,), (SECRET_API_KEY_ENV, SECRET_HF_TOKEN_ENV)]))),
        gpus=request.gpus if request else None, runtime=request.runtime if request else None,
        ipc_mode=ipc, shm_size_mb=draw(st.none() | st.integers(64, 65536)) if ipc != "host" else None,
        ports=tuple(draw(st.lists(st.builds(PortMapping, st.integers(1, 65535), st.integers(1, 65535)), max_size=2,
                                  unique_by=lambda p: p.container_port))),
        mounts=tuple(mounts), tmpfs=tuple(draw(st.lists(_tmpfs, max_size=2, unique_by=lambda t: t[0]))),
        restart=draw(st.sampled_from(["no", "on-failure", "always", "unless-stopped"])),
        health=draw(st.none() | _health), log_opts=tuple(draw(st.dictionaries(_word, _word, max_size=2)).items()),
        network=draw(st.none() | _word), network_aliases=tuple(draw(st.lists(_word, max_size=2))),
        labels=tuple(draw(st.dictionaries(_word, _text, max_size=3)).items()),
        user=draw(st.none() | st.sampled_from(["1000:1000", "0:0", "nginx"])), read_only_root=draw(st.booleans()),
        cap_drop=tuple(draw(st.lists(st.sampled_from(["ALL", "NET_RAW", "SYS_ADMIN"]), max_size=2, unique=True))),
        cap_add=tuple(draw(st.lists(st.sampled_from(["NET_BIND_SERVICE", "CHOWN"]), max_size=2, unique=True))),
        security_opts=draw(st.sampled_from([(), ("no-new-privileges:true",)])), init=draw(st.booleans()),
        stop_timeout_s=draw(st.none() | st.integers(0, 120)),
        ulimits=tuple(draw(st.lists(st.builds(Ulimit, st.sampled_from(sorted(ULIMIT_NAMES)), st.integers(0, 10**6),
                                              st.integers(0, 10**6)), max_size=2, unique_by=lambda u: u.name))),
    )
    if spec.network is None:
        spec = ContainerSpec(**{**spec.__dict__, "network_aliases": ()})
    return spec, (4 if gpu == "all" else None)


@settings(max_examples=200, deadline=None)
@given(drawn=specs(), network_mode=st.sampled_from(["awsvpc", "bridge"]))
def test_any_spec_runs_on_ecs_as_docker_run_runs_it_up_to_what_ecs_forces(
        drawn: tuple[ContainerSpec, int | None], network_mode: NetworkMode) -> None:
    spec, gpu_count = drawn
    secret_arns = {k: ARNS[k] for k in spec.secret_env}
    container = ecs_container(spec, secret_arns=secret_arns, network_mode=network_mode, gpu_count=gpu_count)
    definition = container.definition
    assert json.loads(json.dumps(definition)) == definition  # what container_definitions carries
    assert container.health_check_grace_period_s == (
        spec.health.start_period_s if spec.health and spec.health.start_period_s > 300 else 0)
    if spec.runtime:
        gpu_ids = spec.env_dict()["NVIDIA_VISIBLE_DEVICES"].split(",")
    else:
        gpu_ids = [str(i) for i in range(gpu_count or 0)]
    if network_mode == "awsvpc":
        assert all(p["hostPort"] == p["containerPort"] for p in definition["portMappings"])
    assert_same_run(spec, definition, container.volumes, network_mode=network_mode, ipc_mode=container.ipc_mode,
                    gpu_ids=gpu_ids)
    # Secrets by reference only: each name's ARN, and no value anywhere.
    assert definition["secrets"] == [{"name": k, "valueFrom": ARNS[k]} for k in spec.secret_env]


# ----------------------------------------------------------------------------------------------
# What ECS cannot express: refused, naming it.

def base_spec(**changes: Any) -> ContainerSpec:
    spec = ContainerSpec(name="vllm", image="vllm/vllm-openai:v0.32.0", args=("m",), secret_env=(SECRET_API_KEY_ENV,),
                         health=HealthCheck("true", 30, 10, 3, 60))
    return ContainerSpec(**{**spec.__dict__, **changes})


def render(spec: ContainerSpec, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("network_mode", "awsvpc")
    return ecs_container(spec, secret_arns={SECRET_API_KEY_ENV: ARNS[SECRET_API_KEY_ENV]}, **kwargs).definition


@pytest.mark.parametrize("changes, message", [
    ({"health": HealthCheck("true", 4, 10, 3, 0)}, r"healthCheck.interval 4 is outside ECS's range 5-300"),
    ({"health": HealthCheck("true", 301, 10, 3, 0)}, r"healthCheck.interval 301"),
    ({"health": HealthCheck("true", 30, 1, 3, 0)}, r"healthCheck.timeout 1 is outside ECS's range 2-120"),
    ({"health": HealthCheck("true", 30, 121, 3, 0)}, r"healthCheck.timeout 121"),
    ({"health": HealthCheck("true", 30, 10, 0, 0)}, r"healthCheck.retries 0 is outside ECS's range 1-10"),
    ({"health": HealthCheck("true", 30, 10, 11, 0)}, r"healthCheck.retries 11"),
    ({"health": HealthCheck("true", 30, 10, 3, -1)}, r"healthCheck.startPeriod -1"),
    ({"stop_timeout_s": 121}, r"stop_timeout_s 121 is outside ECS's stopTimeout range 0-120"),
    ({"ports": (PortMapping(30005, 8080, host_ip="127.0.0.1"),)}, r"bound to 127.0.0.1 only"),
    ({"runtime": "runsc"}, r"runtime 'runsc'"),
    ({"runtime": "nvidia"}, r"names no GPUs"),
    ({"env": (("NVIDIA_VISIBLE_DEVICES", "0"),)}, r"NVIDIA_VISIBLE_DEVICES is set without a GPU request"),
    ({"ulimits": (Ulimit("rtprios", 1, 1),)}, r"ulimit 'rtprios'"),
    ({"tmpfs": (("/tmp", "rw,size=1m,huge=always"),)}, r"tmpfs /tmp option 'huge=always'"),
    ({"tmpfs": (("/tmp", "size=1500k"),)}, r"whole MiB"),
    ({"tmpfs": (("/tmp", "size=lots"),)}, r"size=lots"),
    ({"security_opts": ("seccomp=unconfined",)}, r"security option 'seccomp=unconfined'"),
    ({"log_driver": "local"}, r"log driver 'local'"),
    ({"env": ((SECRET_API_KEY_ENV, "x"),)}, r"both a plain and a secret"),
    ({"ipc_mode": "host", "shm_size_mb": 1024}, r"shm_size_mb with ipc_mode=host"),
    ({"mounts": (Mount("relative/dir", "/x"),)}, r"absolute path"),
])
def test_what_ecs_cannot_express_is_refused_by_name(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(EcsRenderError, match=message):
        render(base_spec(**changes))


def test_every_bound_itself_is_accepted() -> None:
    for health in (HealthCheck("true", 5, 2, 1, 0), HealthCheck("true", 300, 120, 10, 300)):
        definition = render(base_spec(health=health, stop_timeout_s=120))
        assert definition["healthCheck"]["startPeriod"] == health.start_period_s


def test_gpu_requests_become_counts() -> None:
    some = gpu_request(("1", "3"))
    spec = base_spec(runtime=some.runtime, env=(("A", "b"), *some.env))
    definition = render(spec)
    assert definition["resourceRequirements"] == [{"type": "GPU", "value": "2"}]
    assert definition["environment"] == [{"name": "A", "value": "b"}]  # the agent sets NVIDIA_VISIBLE_DEVICES
    assert render(spec, gpu_count=2) == definition
    with pytest.raises(EcsRenderError, match="selects 2 GPU"):
        render(spec, gpu_count=4)
    every = base_spec(gpus="all")
    with pytest.raises(EcsRenderError, match=r"gpus=all.*give gpu_count"):
        render(every)
    assert render(every, gpu_count=8)["resourceRequirements"] == [{"type": "GPU", "value": "8"}]
    with pytest.raises(EcsRenderError, match="requests no GPU"):
        render(base_spec(), gpu_count=1)
    argv = ecs_to_docker_run(render(every, gpu_count=2), (), task_network=PAUSE, network_mode="awsvpc",
                             gpu_ids=["GPU-a", "GPU-b"])
    assert "--gpus" not in argv and argv[argv.index("--runtime") + 1] == "nvidia"
    assert "NVIDIA_VISIBLE_DEVICES=GPU-a,GPU-b" in argv


def test_a_name_given_twice_keeps_its_last_value_as_docker_does() -> None:
    definition = render(base_spec(env=(("HF_HOME", "/a"), ("X", "1"), ("HF_HOME", "/b"))))
    assert definition["environment"] == [{"name": "HF_HOME", "value": "/b"}, {"name": "X", "value": "1"}]


def test_task_level_fields() -> None:
    vllm = base_spec(ipc_mode="host", mounts=(Mount("/opt/c", "/root/.cache"),), network="n", network_aliases=("vllm",))
    proxy = ContainerSpec(name="proxy", image="nginx:1.29.3-alpine", ports=(PortMapping(30005, 8080),),
                          mounts=(Mount("/opt/c", "/cache", read_only=True),), network="n")
    arns = {SECRET_API_KEY_ENV: ARNS[SECRET_API_KEY_ENV]}
    task = ecs_task(vllm, proxy, secret_arns=arns, network_mode="bridge")
    assert task.ipc_mode == "host" and task.task_definition_args()["ipc_mode"] == "host"  # the whole task's
    assert len(task.volumes) == 1  # one host path, one volume, two mount points
    assert task.container_definitions[1]["links"] == ["vllm:vllm"]
    assert task.container_definitions[1]["portMappings"] == [{"containerPort": 8080, "hostPort": 30005,
                                                              "protocol": "tcp"}]
    assert "links" not in ecs_task(vllm, proxy, secret_arns=arns).container_definitions[1]  # awsvpc: 127.0.0.1
    with pytest.raises(EcsRenderError, match="needs a health check"):
        ecs_task(base_spec(health=None), proxy, secret_arns=arns)
    with pytest.raises(EcsRenderError, match="collide"):
        ecs_task(base_spec(ports=(PortMapping(1, 8080),)), proxy, secret_arns=arns)
    with pytest.raises(EcsRenderError, match="named vllm"):
        ecs_task(vllm, ContainerSpec(**{**proxy.__dict__, "name": "vllm"}), secret_arns=arns)


def test_the_proof_renderer_refuses_what_it_does_not_know() -> None:
    definition = render(base_spec())
    with pytest.raises(EcsRenderError, match="privileged"):
        ecs_to_docker_run({**definition, "privileged": True}, (), network_mode="bridge")
    with pytest.raises(EcsRenderError, match="devices"):
        ecs_to_docker_run({**definition, "linuxParameters": {"devices": []}}, (), network_mode="bridge")
    with pytest.raises(EcsRenderError, match="task_network"):
        ecs_to_docker_run(definition, (), network_mode="awsvpc")
