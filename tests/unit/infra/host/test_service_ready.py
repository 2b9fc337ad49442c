"""infra/host/service-ready.sh, run by bash as the fleet's `pulumi up` runs it, against a local HTTP server that
plays the load balancer: 503 while no replica is healthy, then the model list for the right key only."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.unit.infra.host.test_host_files import required
from vllm_endpoint.infra.render.service_ready import service_ready_environment, service_ready_script

KEY = "fleet-key-" + "k" * 30
MODELS = {"object": "list", "data": [{"id": "Qwen/Qwen2.5-1.5B-Instruct", "object": "model"}]}


@dataclass
class Balancer:
    """What the stand-in answers: `unhealthy` 503s first, then 200 for the key (401 otherwise)."""

    unhealthy: int
    seen: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def balancer() -> Iterator[Balancer]:
    state = Balancer(unhealthy=2)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.seen.append((self.path, self.headers.get("Authorization", "")))
            if len(state.seen) <= state.unhealthy:
                self.send_response(503)
                self.end_headers()
                return
            ok = self.headers.get("Authorization") == f"Bearer {KEY}"
            body = json.dumps(MODELS if ok else {"error": "Unauthorized"}).encode()
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()


def run(balancer: Balancer, key: str, timeout_s: int = 60) -> subprocess.CompletedProcess[str]:
    env = service_ready_environment(balancer.url, timeout_s, "the task log group")
    env |= {"POLL_INTERVAL_S": "0.2", "PROGRESS_INTERVAL_S": "0", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["bash", "-c", service_ready_script()], input=key + "\n", env=env, text=True,
                          capture_output=True, timeout=timeout_s + 30, check=False)


def test_the_environment_is_exactly_what_the_script_requires() -> None:
    assert set(service_ready_environment("http://x/v1", 1, "h")) == required("service-ready.sh")


def test_it_waits_through_503_and_prints_the_models_once_the_key_is_answered(balancer: Balancer) -> None:
    done = run(balancer, KEY)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("503: no healthy replica yet") == 2
    assert json.loads(done.stdout.strip().splitlines()[-1]) == MODELS
    assert {path for path, _ in balancer.seen} == {"/v1/models"}
    assert all(auth == f"Bearer {KEY}" for _, auth in balancer.seen)


def test_a_refused_key_fails_at_once_without_printing_it(balancer: Balancer) -> None:
    balancer.unhealthy = 0
    done = run(balancer, "another-key-" + "x" * 30)
    assert done.returncode == 1 and len(balancer.seen) == 1
    assert "refused the key (401)" in done.stderr and "the task log group" in done.stderr
    assert "another-key" not in done.stdout + done.stderr


def test_it_gives_up_at_the_deadline_with_the_last_answer(balancer: Balancer) -> None:
    balancer.unhealthy = 10_000
    done = run(balancer, KEY, timeout_s=2)
    assert done.returncode == 1
    assert "no replica answered" in done.stderr and "503: no healthy replica yet" in done.stderr
