"""The HAProxy stand-in for the fleet's ALB (tests/real/harness/alb_haproxy.py): the config it renders from
`load_balancer_spec()` is valid for the real HAProxy, carries the spec's numbers, and the real HAProxy routes
every request line exactly as `LoadBalancerSpec.route` says ALB does; registration and draining behave as
ALB's target states."""

from __future__ import annotations

import dataclasses
import http.server
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real.harness.alb_haproxy import (
    ALB_TARGET_CONNECT_TIMEOUT_S,
    BACKEND,
    Haproxy,
    Target,
    render_haproxy_config,
    running_haproxy,
)
from tests.real.harness.common import run
from vllm_endpoint.infra.render.load_balancer import (
    HealthCheck,
    LoadBalancerSpec,
    load_balancer_spec,
)

needs_haproxy = pytest.mark.skipif(shutil.which("haproxy") is None,
                                   reason="haproxy is not installed (scripts/setup.sh installs it)")

SPEC = load_balancer_spec()
TARGETS = (Target("a", "10.203.160.2"), Target("b", "10.203.161.2"))
# Request lines on both sides of every rule: the prefix, the health path and its methods, raw path tricks
# ALB forwards, case and slash variants it refuses, query strings it ignores.
REQUEST_LINES = [
    ("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/completions?stream=true"),
    ("DELETE", "/v1/files/x"), ("GET", "/health"), ("HEAD", "/health"), ("GET", "/health?probe=1"),
    ("GET", "/metrics"), ("POST", "/invocations"), ("GET", "/"), ("GET", "/v1"), ("GET", "/V1/models"),
    ("GET", "//v1/models"), ("POST", "/health"), ("PUT", "/health"), ("GET", "/health/"), ("GET", "/Health"),
    ("GET", "/metrics/../v1/models"), ("GET", "/%76%31/models"), ("GET", "/v1%2fmodels"),
    ("GET", "/v1/../metrics"), ("GET", "/v1/%2e%2e/metrics"), ("GET", "/v1/..;/metrics"),
    ("GET", "/v1/models%3F/../../metrics"), ("GET", "/x?/v1/models"),
]


def _fast_checks(spec: LoadBalancerSpec, interval_s: int, timeout_s: int, healthy_threshold: int,
                 unhealthy_threshold: int) -> LoadBalancerSpec:
    """The spec with other health check numbers (a unit test cannot wait ALB's 20 s)."""
    check = HealthCheck(interval_s=interval_s, timeout_s=timeout_s, healthy_threshold=healthy_threshold,
                        unhealthy_threshold=unhealthy_threshold)
    group = dataclasses.replace(spec.target_group, health_check=check)
    return dataclasses.replace(spec, target_group=group)


def _directives(config: str, section: str) -> list[str]:
    """The lines of one section (`backend replicas`), stripped."""
    lines, inside = [], False
    for line in config.splitlines():
        if not line.startswith(" "):
            inside = line == section
        elif inside:
            lines.append(line.strip())
    return lines


def _value(lines: list[str], keyword: str) -> str:
    (hit,) = [line for line in lines if line.startswith(keyword + " ")]
    return hit[len(keyword) + 1:]


def test_each_number_of_the_config_is_the_specs() -> None:
    spec = _fast_checks(load_balancer_spec(target_port=30021, deregistration_delay_s=17),
                        interval_s=7, timeout_s=3, healthy_threshold=4, unhealthy_threshold=6)
    config = render_haproxy_config(spec, TARGETS, ("127.0.0.1", 18000), Path("/run/x.sock"))
    check, backend = spec.target_group.health_check, _directives(config, f"backend {BACKEND}")
    assert _value(backend, "default-server").split()[:7] == [
        "check", "inter", f"{check.interval_s}s", "rise", str(check.healthy_threshold), "fall",
        str(check.unhealthy_threshold)]
    assert _value(backend, "timeout check") == f"{check.timeout_s}s"
    assert _value(backend, "http-check send") == f"meth GET uri '{check.path}'"
    assert _value(backend, "http-check expect") == f"status {check.matcher}"
    assert _value(backend, "balance") == "leastconn"
    assert [line.split()[2] for line in backend if line.startswith("server ")] == [
        f"{t.address}:{spec.target_group.port}" for t in TARGETS]
    # Every target starts unregistered: ECS registers a task once it runs.
    assert all(line.endswith(" disabled") for line in backend if line.startswith("server "))
    defaults = _directives(config, "defaults")
    assert _value(defaults, "timeout client") == _value(defaults, "timeout server") == f"{spec.idle_timeout_s}s"
    assert _value(defaults, "timeout connect") == f"{ALB_TARGET_CONNECT_TIMEOUT_S}s"


def test_the_rules_are_tried_in_priority_order_and_the_rest_gets_the_fixed_response() -> None:
    config = render_haproxy_config(SPEC, TARGETS, ("127.0.0.1", 18000), Path("/run/x.sock"))
    frontend = _directives(config, "frontend listener")
    uses = [line for line in frontend if line.startswith("use_backend ")]
    assert [line.split(" if ")[1].split()[0] for line in uses] == [
        f"rule_{r.key}_path" for r in sorted(SPEC.rules, key=lambda r: r.priority)]
    assert frontend[-1] == "default_backend fixed_response"
    response = SPEC.default_response
    assert _directives(config, "backend fixed_response") == [
        f'http-request return status {response.status_code} content-type "{response.content_type}" string '
        f'"{response.body.replace(chr(10), chr(92) + "n")}"']


def test_a_pattern_haproxy_cannot_quote_is_refused() -> None:
    rule = dataclasses.replace(SPEC.rules[0], path_patterns=("/it's/*",))
    with pytest.raises(ValueError, match="quote"):
        render_haproxy_config(dataclasses.replace(SPEC, rules=(rule,)), TARGETS, ("127.0.0.1", 1), Path("/s"))


@needs_haproxy
def test_haproxy_accepts_the_rendered_config(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(render_haproxy_config(SPEC, TARGETS, ("127.0.0.1", 18000), tmp_path / "sock"))
    proc = run(["haproxy", "-c", "-f", str(config)], check=False, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Warning" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def _raw_status(url: str, method: str, target: str) -> tuple[int, str]:
    """Sends the request line exactly as given (no client normalises it); returns (status, body)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture
def lb(tmp_path: Path) -> Iterator[Haproxy]:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (scripts/setup.sh installs it)")
    with running_haproxy(SPEC, TARGETS, tmp_path) as haproxy:
        yield haproxy


def test_the_real_haproxy_routes_each_request_line_as_alb(lb: Haproxy) -> None:
    """No target is registered, so a forwarded request gets HAProxy's 503 and any other the fixed 404."""
    response = SPEC.default_response
    for method, target in REQUEST_LINES:
        status, body = _raw_status(lb.url, method, target)
        expected = SPEC.route(method, target)
        assert (status == 503 if expected == "forward" else status == int(expected)), (method, target, status)
        if status == response.status_code and method != "HEAD":
            assert body == response.body


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Target:
    """A target whose /health answers 200 until it is stopped (then its port refuses connections)."""

    def __init__(self) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server.fileno() != -1:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def healthy_target() -> Iterator[_Target]:
    target = _Target()
    try:
        yield target
    finally:
        target.stop()


@needs_haproxy
def test_a_registered_target_is_in_service_after_the_healthy_threshold_and_out_after_the_unhealthy_one(
        tmp_path: Path, healthy_target: _Target) -> None:
    spec = _fast_checks(load_balancer_spec(target_port=healthy_target.port, deregistration_delay_s=5),
                        interval_s=1, timeout_s=1, healthy_threshold=3, unhealthy_threshold=2)
    check = spec.target_group.health_check
    with running_haproxy(spec, (Target("a", "127.0.0.1"),), tmp_path) as haproxy:
        assert haproxy.status("a") == "MAINT"
        registered = time.monotonic()
        haproxy.register("a")
        assert haproxy.status("a") == "DOWN"  # at once: no request before a check passed
        up = haproxy.wait_status("a", "UP", timeout=check.seconds_to_healthy + 5)
        # The first pass comes within one interval, then threshold - 1 more; failures likewise.
        assert (check.healthy_threshold - 1) * check.interval_s - 0.5 <= up - registered
        assert up - registered <= check.seconds_to_healthy + 1
        status, _ = _raw_status(haproxy.url, "GET", "/health")
        assert status == 200
        healthy_target.stop()
        stopped = time.monotonic()
        down = haproxy.wait_status("a", "DOWN", timeout=check.seconds_to_unhealthy + 5)
        assert (check.unhealthy_threshold - 1) * check.interval_s - 0.5 <= down - stopped
        assert down - stopped <= check.seconds_to_unhealthy + 1
        drained = haproxy.deregister("a")
        assert drained.left_in_flight == 0 and drained.seconds < 1  # nothing in flight: gone at once
        assert haproxy.status("a") == "MAINT"
