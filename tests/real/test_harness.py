"""The real-parts harness itself: SSH host-key pinning, docker over SSH, the built images.

These prove the test host behaves like the remote Docker host the product drives, so a product
test that passes on it means something.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from tests.real.harness.common import record_timing, run
from tests.real.harness.testhost import TestHost
from vllm_endpoint.infra.catalog.names import CONTAINER_MODEL_DIR, DEFAULT_API_PORT, VLLM_CONTAINER_PORT
from vllm_endpoint.infra.render.ssh import known_hosts_line, ssh_options

pytestmark = pytest.mark.real

PORT = DEFAULT_API_PORT


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# --- SSH: the pinned host key is the only one accepted --------------------------------------------

def test_pinned_host_key_connects(host: TestHost) -> None:
    assert host.known_hosts_file.read_text().splitlines() == [
        known_hosts_line(host.address, host.host_public_key)]
    assert host.ssh("echo connected").stdout.strip() == "connected"
    # The docker CLI over ssh:// reaches the engine inside the namespace, not the machine's.
    info = json.loads(host.docker("info", "--format", "{{json .}}").stdout)
    assert info["DockerRootDir"].endswith(f"docker-s{host.slot}")


def test_host_presenting_a_different_key_is_refused(host: TestHost, tmp_path: Path) -> None:
    impostor_key = tmp_path / "impostor_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor_key)])
    impostor_pub = impostor_key.with_name(impostor_key.name + ".pub").read_text().strip()
    port = 2222
    pinned = tmp_path / "known_hosts_pinned"
    pinned.write_text(known_hosts_line(host.address, host.host_public_key, port=port) + "\n")
    with host.extra_sshd(port, impostor_key):
        refused = run(host.ssh_argv("true", port=port, options=ssh_options(str(host.identity_file), str(pinned))),
                      check=False, timeout=60)
        assert refused.returncode == 255
        assert ("REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr
                or "Host key verification failed" in refused.stderr), refused.stderr

        # Control: the same sshd is accepted once its own key is the pinned one, so the refusal
        # above is about the key and nothing else.
        trusted = tmp_path / "known_hosts_impostor"
        trusted.write_text(known_hosts_line(host.address, impostor_pub, port=port) + "\n")
        accepted = run(host.ssh_argv("echo ok", port=port,
                                     options=ssh_options(str(host.identity_file), str(trusted))),
                       check=False, timeout=60)
        assert accepted.returncode == 0, accepted.stderr

        # docker over ssh:// goes through the same options: a host not pinned in known_hosts is refused.
        docker = run(["docker", "version"], env=host.docker_env(f"ssh://{host.ssh_user}@{host.address}:{port}"),
                     check=False, timeout=60)
        assert docker.returncode != 0
        assert "Host key verification failed" in docker.stderr, docker.stderr


# --- containers over SSH ----------------------------------------------------------------------------

def test_published_port_answers_from_the_machine(host: TestHost, busybox_image: str) -> None:
    host.docker("run", "-d", "--name", "bb", "-p", f"{PORT}:{VLLM_CONTAINER_PORT}", busybox_image)
    host.wait_http(host.url(PORT, "/health"), timeout=30, container="bb")
    assert _get(host.url(PORT, "/health")) == (200, "ok\n")
    status, body = _get(host.url(PORT, "/v1/models"))
    assert status == 200
    assert json.loads(body)["data"][0]["id"] == "busybox"


def test_bind_mounted_host_dir_survives_container_recreation(host: TestHost, busybox_image: str,
                                                             tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    mount = f"type=bind,src={data},dst=/data"
    host.docker("run", "--name", "writer", "--mount", mount, busybox_image, "sh", "-c", "echo kept > /data/f")
    host.docker("rm", "writer")
    out = host.docker("run", "--rm", "--mount", mount, busybox_image, "cat", "/data/f").stdout
    assert out == "kept\n"
    assert (data / "f").read_text() == "kept\n"


def test_restart_policy_and_health_check_are_applied(host: TestHost, busybox_image: str) -> None:
    host.docker(
        "run", "-d", "--name", "svc", "--restart", "unless-stopped",
        "--health-cmd", f"wget -q -O- http://127.0.0.1:{VLLM_CONTAINER_PORT}/health",
        "--health-interval", "1s", "--health-retries", "3",
        busybox_image,
    )
    inspected = json.loads(host.docker("inspect", "svc").stdout)[0]
    assert inspected["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert inspected["Config"]["Healthcheck"]["Test"] == [
        "CMD-SHELL", f"wget -q -O- http://127.0.0.1:{VLLM_CONTAINER_PORT}/health"]
    deadline = time.monotonic() + 30
    status = ""
    while time.monotonic() < deadline:
        status = host.docker("inspect", "--format", "{{.State.Health.Status}}", "svc").stdout.strip()
        if status == "healthy":
            break
        time.sleep(0.5)
    assert status == "healthy"


def test_missing_bind_source_stops_a_mount_but_not_a_volume_bind(host: TestHost, busybox_image: str,
                                                                 tmp_path: Path) -> None:
    """Why the cache subdirectories exist only on the mounted volume: with `--mount type=bind` a
    missing source refuses to start the container, whereas `-v` (pulumi-docker `volumes`) creates
    the missing directory on whatever disk is underneath."""
    missing = tmp_path / "not-mounted" / "root-cache"
    refused = host.docker("run", "--rm", "--mount", f"type=bind,src={missing},dst=/root/.cache",
                          busybox_image, "true", check=False)
    assert refused.returncode != 0
    assert "does not exist" in refused.stderr
    assert not missing.exists()
    host.docker("run", "--rm", "-v", f"{missing}:/root/.cache", busybox_image, "true")
    assert missing.is_dir()


def test_nginx_image_proxies_with_a_mounted_config(host: TestHost, busybox_image: str, nginx_image: str,
                                                   tmp_path: Path) -> None:
    host.docker("network", "create", "proxy-net")
    try:
        host.docker("run", "-d", "--name", "upstream", "--network", "proxy-net", busybox_image)
        conf = tmp_path / "nginx.conf"
        conf.write_text(
            "events {}\n"
            "http {\n"
            "  server {\n"
            "    listen 8080;\n"
            f"    location / {{ proxy_pass http://upstream:{VLLM_CONTAINER_PORT}; }}\n"
            "  }\n"
            "}\n"
        )
        host.docker("run", "-d", "--name", "proxy", "--network", "proxy-net", "-p", f"{PORT + 1}:8080",
                    "--mount", f"type=bind,src={conf},dst=/etc/nginx/nginx.conf,readonly", nginx_image)
        host.wait_http(host.url(PORT + 1, "/health"), timeout=30, container="proxy")
        assert _get(host.url(PORT + 1, "/health")) == (200, "ok\n")
    finally:
        host.remove_all_containers()
        host.docker("network", "rm", "proxy-net", check=False)


# --- the real vLLM server -------------------------------------------------------------------------

def test_real_vllm_image_serves_the_tiny_model(host: TestHost, vllm_image: str, tiny_model: Path) -> None:
    import openai

    api_key = "test-key-" + time.strftime("%H%M%S")
    start = time.monotonic()
    host.docker(
        "run", "-d", "--name", "vllm", "--ipc=host",
        "-p", f"{PORT}:{VLLM_CONTAINER_PORT}",
        "--mount", f"type=bind,src={tiny_model},dst={CONTAINER_MODEL_DIR},readonly",
        "-e", f"VLLM_API_KEY={api_key}",
        "-e", "VLLM_CPU_KVCACHE_SPACE=1",
        vllm_image,
        # Only args: the image's entrypoint is the server command, as in vllm/vllm-openai.
        "--model", CONTAINER_MODEL_DIR, "--served-model-name", "tiny",
    )
    host.wait_http(host.url(PORT, "/health"), timeout=400, container="vllm")
    ready = time.monotonic() - start
    record_timing("vllm_container_ready", ready, model="tiny-qwen2")

    # The product's health check runs python3 inside the container.
    host.docker("exec", "vllm", "python3", "-c",
                f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{VLLM_CONTAINER_PORT}/health')")
    assert _get(host.url(PORT, "/v1/models"))[0] == 401

    client = openai.OpenAI(base_url=host.url(PORT, "/v1"), api_key=api_key, timeout=120, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0,
    )
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0
