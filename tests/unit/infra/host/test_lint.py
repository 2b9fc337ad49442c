"""Every script the program renders is valid: shellcheck for bash, `cloud-init schema` for user-data,
`nginx -t` for the proxy config. (The scripts are executed for real in tests/real.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vllm_endpoint.infra.catalog.names import BOOT_SCRIPT, HF_PREFETCH_SCRIPT, PREFETCH_STATE_DIR, PREPARE_CACHE_SCRIPT
from vllm_endpoint.infra.plan.spec import ProxySettings, ReadinessGate
from vllm_endpoint.infra.render.host_scripts import (
    existing_host_prepare_script,
    host_ready_script,
    model_check_script,
    readiness_gate_script,
    write_files_script,
)
from vllm_endpoint.infra.render.proxy import render_nginx_conf
from vllm_endpoint.infra.render.userdata import (
    USER_DATA_LIMIT,
    HostBootSettings,
    boot_env,
    decode_user_data,
    encode_user_data,
    read_script,
    render_user_data,
    shipped_script,
)

HOST_KEY_PRIVATE = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n"
HOST_KEY_PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm5xk0pJl1ZkZ4bH2v0b3dJq5s0aQy7Ff2k0Vd7J8yO"
BOOT = HostBootSettings("vol-0123456789abcdef0", "ubuntu", HOST_KEY_PRIVATE, HOST_KEY_PUBLIC)


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (scripts/setup.sh installs it)")
    return path


def shellcheck(text: str, tmp_path: Path, name: str = "script.sh") -> None:
    script = tmp_path / name
    script.write_text(text if text.startswith("#!") else "#!/usr/bin/env bash\n" + text)
    result = subprocess.run([require("shellcheck"), "-S", "style", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


RENDERED = {
    "host-ready": host_ready_script("/opt/vllm-endpoint/cache", True, "1000:1000"),
    "host-ready-no-gpu": host_ready_script("/opt/vllm-endpoint/cache", False, "1000:1000"),
    "existing-host": existing_host_prepare_script("/srv/cache dir", True, "1001:1001"),
    "readiness": readiness_gate_script(ReadinessGate("http://127.0.0.1:30005/v1/models", "vllm", 600, "/tmp/t")),
    "readiness-tls": readiness_gate_script(ReadinessGate("https://127.0.0.1:30005/v1/models", "vllm", 60, "/t",
                                                         insecure_tls=True)),
    "write-files": write_files_script("/opt/x/proxy", {"nginx.conf": "0644", "tls/server.key": "0600"}),
    "model-check": model_check_script("/opt/x/models/abc"),
}


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_rendered_scripts_pass_shellcheck(name: str, tmp_path: Path) -> None:
    shellcheck(RENDERED[name], tmp_path)


@pytest.mark.parametrize("name", ["boot.sh", "prepare-cache-volume.sh"])
def test_boot_scripts_pass_shellcheck(name: str, tmp_path: Path) -> None:
    shellcheck(read_script(name), tmp_path, name)


def test_user_data_is_valid_cloud_config(tmp_path: Path) -> None:
    document = render_user_data(BOOT)
    assert document.startswith("#cloud-config\n")
    path = tmp_path / "user-data"
    path.write_text(document)
    result = subprocess.run([require("cloud-init"), "schema", "--config-file", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_user_data_installs_the_scripts_and_the_pinned_host_key() -> None:
    document = yaml.safe_load(render_user_data(BOOT))
    files = {f["path"]: f for f in document["write_files"]}
    assert files[BOOT_SCRIPT]["content"] == shipped_script("boot.sh")
    assert files[PREPARE_CACHE_SCRIPT]["content"] == shipped_script("prepare-cache-volume.sh")
    assert files[HF_PREFETCH_SCRIPT]["content"] == shipped_script("hf-prefetch.py")
    assert all(files[p]["permissions"] == "0755" for p in (BOOT_SCRIPT, PREPARE_CACHE_SCRIPT, HF_PREFETCH_SCRIPT))
    # boot.sh finds the prefetcher and leaves its markers where the host check looks for them.
    assert f"HF_PREFETCH_SCRIPT={HF_PREFETCH_SCRIPT}\n" in boot_env(BOOT)
    assert f"PREFETCH_STATE_DIR={PREFETCH_STATE_DIR}\n" in boot_env(BOOT)
    assert f"state={PREFETCH_STATE_DIR}\n" in host_ready_script("/opt/vllm-endpoint/cache", True, "1000:1000")
    assert document["ssh_keys"] == {"ed25519_private": HOST_KEY_PRIVATE, "ed25519_public": HOST_KEY_PUBLIC}
    assert document["ssh_deletekeys"] is True


def test_user_data_fits_ec2s_limit_compressed_and_round_trips() -> None:
    document = render_user_data(BOOT)
    encoded = encode_user_data(document)
    assert decode_user_data(encoded) == document
    assert encode_user_data(document) == encoded, "compression must be deterministic (no spurious diffs)"
    import base64

    assert len(base64.b64decode(encoded)) < USER_DATA_LIMIT


def test_boot_env_refuses_values_that_would_need_shell_quoting() -> None:
    with pytest.raises(ValueError, match="ubuntu;reboot"):
        boot_env(HostBootSettings("vol-0123456789abcdef0", "ubuntu;reboot", HOST_KEY_PRIVATE, HOST_KEY_PUBLIC))


@pytest.mark.parametrize("settings", [
    ProxySettings(),
    ProxySettings(metrics_allowed_cidrs=("10.0.0.0/8", "2001:db8::/32")),
    ProxySettings(tls=True),
])
def test_proxy_config_is_accepted_by_nginx(settings: ProxySettings, tmp_path: Path) -> None:
    conf = render_nginx_conf(settings)
    if settings.tls:
        # nginx -t loads the certificate: give it a throwaway one where the config expects it.
        tls_dir = tmp_path / "tls"
        tls_dir.mkdir()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(tls_dir / "server.key"), "-out", str(tls_dir / "server.crt"), "-days", "1",
                        "-subj", "/CN=test"], check=True, capture_output=True)
        conf = conf.replace("/etc/nginx/tls", str(tls_dir))
    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    result = subprocess.run([require("nginx"), "-t", "-c", str(path), "-p", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
