"""One spec, three renderings: `docker run`, pulumi-docker Container args, and the vLLM argv agree.

The `docker run` text is parsed back here with an independent reader (shlex + the docker CLI's flag
meanings) into the shape of pulumi-docker's Container arguments; both must be equal field by field.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vllm_endpoint.infra.plan.deployment import DeploymentPlan, build_plan
from vllm_endpoint.infra.plan.spec import ContainerSpec, HealthCheck, Mount, PortMapping, Ulimit, gpu_request
from vllm_endpoint.infra.render.container import docker_run_argv, docker_run_script, to_container_args, to_docker_run
from vllm_endpoint.infra.render.proxy import proxy_spec, render_nginx_conf
from vllm_endpoint.infra.settings.models import load_stack_config

_VALUE_FLAGS = {
    "--name", "--restart", "--runtime", "--gpus", "--ipc", "--shm-size", "--user", "--tmpfs", "--cap-drop",
    "--cap-add", "--security-opt", "--network", "--network-alias", "--publish", "--mount", "--env", "--label",
    "--health-cmd", "--health-interval", "--health-timeout", "--health-retries", "--health-start-period",
    "--log-driver", "--log-opt", "--stop-timeout", "--ulimit",
}


def parse_docker_run(text: str, secret_values: dict[str, str]) -> dict[str, Any]:
    """Reads a `docker run` command the way the docker CLI does, into pulumi-docker's argument shape.
    `--env NAME` (no value) takes the value from the caller's environment, given as `secret_values`."""
    argv = shlex.split(text.replace("\\\n", " "))
    assert argv[:3] == ["docker", "run", "--detach"], argv[:3]
    out: dict[str, Any] = {"envs": [], "ports": [], "mounts": [], "labels": [], "log_opts": {}, "must_run": True}
    caps: dict[str, list[str]] = {"drops": [], "adds": []}
    health: dict[str, Any] = {}
    network: dict[str, Any] = {}
    i = 3
    while i < len(argv) and argv[i].startswith("--"):
        flag = argv[i]
        if flag not in _VALUE_FLAGS:
            {"--init": lambda: out.__setitem__("init", True),
             "--read-only": lambda: out.__setitem__("read_only", True)}[flag]()
            i += 1
            continue
        value = argv[i + 1]
        i += 2
        if flag == "--name":
            out["name"] = value
        elif flag in ("--restart", "--runtime", "--gpus", "--user", "--log-driver"):
            out[flag[2:].replace("-", "_")] = value
        elif flag == "--ipc":
            out["ipc_mode"] = value
        elif flag == "--shm-size":
            assert value.endswith("m")
            out["shm_size"] = int(value[:-1])
        elif flag == "--tmpfs":
            path, _, options = value.partition(":")
            out.setdefault("tmpfs", {})[path] = options
        elif flag == "--cap-drop":
            caps["drops"].append(value)
        elif flag == "--cap-add":
            caps["adds"].append(value)
        elif flag == "--security-opt":
            out.setdefault("security_opts", []).append(value)
        elif flag == "--network":
            network["name"] = value
            network.setdefault("aliases", [])
        elif flag == "--network-alias":
            network.setdefault("aliases", []).append(value)
        elif flag == "--publish":
            parts = value.split(":")
            port: dict[str, Any] = {"internal": int(parts[-1]), "external": int(parts[-2])}
            if len(parts) == 3:
                port["ip"] = parts[0]
            out["ports"].append(port)
        elif flag == "--mount":
            fields = dict(kv.partition("=")[::2] for kv in value.split(","))
            out["mounts"].append({"type": fields["type"], "source": fields["source"], "target": fields["target"],
                                  "read_only": "readonly" in fields})
        elif flag == "--env":
            out["envs"].append(value if "=" in value else f"{value}={secret_values[value]}")
        elif flag == "--label":
            key, _, label_value = value.partition("=")
            out["labels"].append({"label": key, "value": label_value})
        elif flag == "--health-cmd":
            health["tests"] = ["CMD-SHELL", value]
        elif flag in ("--health-interval", "--health-timeout", "--health-start-period"):
            health[flag.removeprefix("--health-").replace("-", "_")] = value
        elif flag == "--health-retries":
            health["retries"] = int(value)
        elif flag == "--log-opt":
            key, _, opt = value.partition("=")
            out["log_opts"][key] = opt
        elif flag == "--stop-timeout":
            out["stop_timeout"] = out["destroy_grace_seconds"] = int(value)
        elif flag == "--ulimit":
            name, _, limits = value.partition("=")
            soft, _, hard = limits.partition(":")
            out.setdefault("ulimits", []).append({"name": name, "soft": int(soft), "hard": int(hard or soft)})
    out["image"] = argv[i]
    out["command"] = argv[i + 1:]
    if caps["drops"] or caps["adds"]:
        out["capabilities"] = caps
    if health:
        out["healthcheck"] = health
    if network:
        out["networks_advanced"] = [network]
    out.setdefault("restart", "no")
    return out


def sample_spec(**changes: Any) -> ContainerSpec:
    base = ContainerSpec(
        name="vllm",
        image="vllm/vllm-openai:v0.32.0",
        args=("--model", "Qwen/Qwen2.5-1.5B-Instruct", "--max-num-seqs", "16", "--trust-remote-code"),
        env=(("HF_HOME", "/root/.cache/huggingface"), ("NVIDIA_VISIBLE_DEVICES", "1")),
        secret_env=("VLLM_API_KEY",),
        runtime="nvidia",
        ipc_mode="host",
        ports=(PortMapping(30005, 8000),),
        mounts=(Mount("/opt/cache/root-cache", "/root/.cache"), Mount("/opt/m", "/app/model", read_only=True)),
        tmpfs=(("/root", "rw,exec,uid=1000,gid=1000,mode=0755"),),
        health=HealthCheck("python3 -c \"print('it''s ok')\"", 30, 10, 3, 600),
        log_opts=(("max-size", "100m"), ("max-file", "5")),
        labels=(("vllm-endpoint:role", "vllm"),),
        user="1000:1000",
        cap_drop=("ALL",),
        security_opts=("no-new-privileges:true",),
        init=True,
        stop_timeout_s=60,
    )
    return ContainerSpec(**{**base.__dict__, **changes})


def rendered_pulumi_args(spec: ContainerSpec, secrets: dict[str, str]) -> dict[str, Any]:
    args = to_container_args(spec, image=spec.image, secret_env_values=secrets)
    return args


@pytest.mark.parametrize("changes", [
    {},
    {"runtime": None, "gpus": "all", "env": (("HF_HOME", "/x"),)},
    {"ports": (PortMapping(30005, 8080, host_ip="127.0.0.1"),), "network": "vllm-endpoint",
     "network_aliases": ("vllm",)},
    {"ipc_mode": "private", "shm_size_mb": 4096, "read_only_root": True, "init": False, "health": None},
    {"secret_env": ("VLLM_API_KEY", "HF_TOKEN"), "cap_add": ("NET_BIND_SERVICE",), "restart": "always"},
    {"ulimits": (Ulimit("nofile", 65535, 65535), Ulimit("memlock", -1, -1))},
])
def test_docker_run_and_pulumi_args_agree_field_by_field(changes: dict[str, Any]) -> None:
    spec = sample_spec(**changes)
    secrets = {"VLLM_API_KEY": "k" * 40, "HF_TOKEN": "hf_x"}
    parsed = parse_docker_run(to_docker_run(spec), secrets)
    assert parsed == rendered_pulumi_args(spec, {k: secrets[k] for k in spec.secret_env})


def test_the_vllm_argv_is_the_tail_of_docker_run_and_the_container_command() -> None:
    spec = sample_spec()
    argv = docker_run_argv(spec)
    assert argv[-len(spec.args) - 1:] == [spec.image, *spec.args]
    assert to_container_args(spec, spec.image, {"VLLM_API_KEY": "k"})["command"] == list(spec.args)


def test_secret_values_never_appear_in_docker_run() -> None:
    spec = sample_spec(secret_env=("VLLM_API_KEY", "HF_TOKEN"))
    text = docker_run_script("net", [spec], spec.secret_env)
    assert "--env VLLM_API_KEY \\" in text and "--env HF_TOKEN \\" in text
    assert "VLLM_API_KEY=" not in text and "HF_TOKEN=" not in text
    assert text.startswith("# Equivalent of what this stack runs; export VLLM_API_KEY HF_TOKEN first.")
    assert "docker network create --driver bridge net" in text


def test_a_secret_without_a_value_is_an_error() -> None:
    with pytest.raises(ValueError, match="VLLM_API_KEY"):
        to_container_args(sample_spec(), "img", {})


def test_gpu_requests() -> None:
    assert gpu_request("all") == gpu_request("all")
    every = gpu_request("all")
    assert (every.gpus, every.runtime, every.env) == ("all", None, ())
    some = gpu_request(("1", "3"))
    # A device list goes through the NVIDIA runtime, not pulumi-docker's `gpus` (documented: `all`).
    assert (some.gpus, some.runtime, some.env) == (None, "nvidia", (("NVIDIA_VISIBLE_DEVICES", "1,3"),))


_token = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(args=st.lists(_token, max_size=8), env=st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True),
                                                              _token, max_size=4))
def test_any_args_and_env_survive_the_round_trip(args: list[str], env: dict[str, str]) -> None:
    spec = sample_spec(args=tuple(args), env=tuple(env.items()))
    parsed = parse_docker_run(to_docker_run(spec), {"VLLM_API_KEY": "secret"})
    assert parsed == rendered_pulumi_args(spec, {"VLLM_API_KEY": "secret"})


# ----------------------------------------------------------------------------------------------
# Open-files limits (issue 15): rendered for both containers, in both renderings.

def _plan(**raw: str) -> DeploymentPlan:
    return build_plan(load_stack_config({"sshAllowedCidrs": "93.184.215.14/32", "apiAllowedCidrs": "93.184.216.0/24",
                                         **raw}), hub_fetcher=None)


# vLLM raises its soft open-files limit toward this at start and warns when the hard limit is below it
# (set_ulimit, vllm/utils/system_utils.py, wheel 0.32.0): read here from the source, not from the product.
VLLM_SET_ULIMIT_TARGET = 65535


@pytest.mark.parametrize("max_num_seqs", [None, "1024", "4096"])
def test_both_containers_get_open_files_limits_that_do_not_bite(max_num_seqs: str | None) -> None:
    plan = _plan(**({"maxNumSeqs": max_num_seqs} if max_num_seqs else {}))
    nofile = {spec.name: next(u for u in spec.ulimits if u.name == "nofile") for spec in (plan.vllm, proxy_spec(plan))}
    vllm_limit = nofile[plan.vllm.name]
    assert vllm_limit.soft >= VLLM_SET_ULIMIT_TARGET and vllm_limit.hard >= VLLM_SET_ULIMIT_TARGET
    # nginx runs as the container user: it can raise its workers' limit only up to the hard limit.
    conf = render_nginx_conf(plan.proxy_settings)
    wanted = re.search(r"worker_rlimit_nofile (\d+);", conf)
    assert wanted is not None
    assert int(wanted[1]) <= nofile[plan.proxy.name].hard
    for spec in (plan.vllm, proxy_spec(plan)):
        limit = nofile[spec.name]
        assert f"--ulimit nofile={limit.soft}:{limit.hard}" in to_docker_run(spec)
        assert {"name": "nofile", "soft": limit.soft, "hard": limit.hard} in \
            to_container_args(spec, spec.image, {k: "x" for k in spec.secret_env})["ulimits"]
