"""`scripts/wake.sh <stack>` against stand-ins: a `pulumi` that prints the stack's outputs, an `aws` that logs
what it is asked, and a local HTTP server for /v1/models that answers 503 a few times, then 200.

Checked: what EC2 is asked (start, then wait), the progress printed with the elapsed seconds, the exit codes
(0 serving, 3 EC2 refused to start it, 4 timeout), and that the API key reaches the server but no command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.unit.stand_ins import install_stand_ins

ROOT = Path(__file__).resolve().parents[1].parent
WAKE = ROOT / "scripts" / "wake.sh"
KEY = "k" * 48
INSTANCE = "i-0123456789abcdef0"

FAKE_PULUMI = """#!/usr/bin/env bash
echo "pulumi $*" >> "$WAKE_LOG"
[ "$1 $2" = "stack output" ] || exit 5
cat "$OUTPUTS_FILE"
"""
# `aws ec2 start-instances` fails with $START_ERROR when it is set (EC2's words for a spot instance it stopped).
FAKE_AWS = """#!/usr/bin/env bash
echo "aws $*" >> "$WAKE_LOG"
if [ "$2" = "start-instances" ] && [ -n "${START_ERROR:-}" ]; then echo "$START_ERROR" >&2; exit 254; fi
[ "$2" = "start-instances" ] && echo '{"StartingInstances": []}'
exit 0
"""


class _Models:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seen: list[tuple[str, str | None]] = []


@pytest.fixture
def models_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, _Models]]:
    state = _Models(getattr(request, "param", 3))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.seen.append((self.path, self.headers.get("Authorization")))
            ok = self.path == "/v1/models" and self.headers.get("Authorization") == f"Bearer {KEY}"
            if ok and state.failures <= 0:
                body = json.dumps({"object": "list", "data": [{"id": "m"}]}).encode()
                self.send_response(200)
            else:
                state.failures -= 1
                body = b'{"error": "loading"}'
                self.send_response(503 if ok else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", state
    finally:
        server.shutdown()
        server.server_close()


def _wake(tmp_path: Path, outputs: dict[str, object], **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = install_stand_ins(tmp_path, {"pulumi": FAKE_PULUMI, "aws": FAKE_AWS})
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    log = tmp_path / "wake.log"
    log.write_text("")
    run_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "WAKE_LOG": str(log),
               "OUTPUTS_FILE": str(tmp_path / "outputs.json"), "WAKE_POLL_SECONDS": "0.2", **env}
    result = subprocess.run(["bash", str(WAKE), "dev"], env=run_env, capture_output=True, text=True, timeout=60)
    return result, log.read_text().splitlines()


def _outputs(url: str) -> dict[str, object]:
    return {"instance_id": INSTANCE, "region": "us-east-1", "endpoint_url": url, "api_key": KEY,
            "ca_certificate": None, "model": "m"}


def test_wake_starts_the_instance_and_waits_until_models_answers(
        tmp_path: Path, models_server: tuple[str, _Models]) -> None:
    url, state = models_server
    result, calls = _wake(tmp_path, _outputs(url))
    assert result.returncode == 0, result.stderr
    assert calls == [
        "pulumi stack output --stack dev --json --show-secrets",
        f"aws ec2 start-instances --region us-east-1 --instance-ids {INSTANCE}",
        f"aws ec2 wait instance-running --region us-east-1 --instance-ids {INSTANCE}",
    ]
    lines = result.stdout.splitlines()
    assert lines[0] == f"[wake] starting {INSTANCE} in us-east-1 (the instance is billed from now on)"
    assert lines[1] == "[wake] waiting until EC2 reports it running (aws ec2 wait instance-running)"
    assert lines[2].endswith(f"s: instance running; waiting for the server to answer GET {url}/models")
    # Three 503s, each said with the elapsed seconds, then the answer.
    assert [line.split(": ", 1)[1] for line in lines[3:6]] == ["HTTP 503 (the server is starting)"] * 3
    assert all(line.split(" ")[1].isdigit() and line.split(" ")[2] == "s:" for line in lines[2:])
    assert lines[-1].endswith(f"s: the endpoint answers: {url}")
    assert [path for path, _ in state.seen] == ["/v1/models"] * 4
    assert {auth for _, auth in state.seen} == {f"Bearer {KEY}"}
    # The key went to the server, never to a command line the stand-ins saw, nor to the output.
    assert KEY not in "\n".join(calls) and KEY not in result.stdout + result.stderr


@pytest.mark.parametrize("models_server", [10_000], indirect=True)
def test_wake_gives_up_after_the_timeout_and_says_what_to_do(
        tmp_path: Path, models_server: tuple[str, _Models]) -> None:
    url, _ = models_server
    result, _ = _wake(tmp_path, _outputs(url), WAKE_TIMEOUT_SECONDS="1")
    assert result.returncode == 4
    assert "HTTP 503 (the server is starting)" in result.stdout
    assert f"no 200 from {url}/models after" in result.stderr
    assert "WAKE_TIMEOUT_SECONDS=1" in result.stderr and "ssh_command" in result.stderr


def test_a_spot_instance_ec2_stopped_is_not_started_and_it_says_why(
        tmp_path: Path, models_server: tuple[str, _Models]) -> None:
    url, state = models_server
    error = ("An error occurred (IncorrectSpotRequestState) when calling the StartInstances operation: "
             "The spot request is not in a valid state for this operation")
    result, calls = _wake(tmp_path, _outputs(url), START_ERROR=error)
    assert result.returncode == 3
    assert "a spot instance stopped by an interruption is started by EC2 alone" in result.stderr
    assert not any("wait instance-running" in c for c in calls) and not state.seen


def test_a_stack_without_an_instance_is_refused(tmp_path: Path) -> None:
    result, calls = _wake(tmp_path, {"instance_id": None, "endpoint_url": "http://127.0.0.1:30000/v1",
                                     "api_key": KEY, "region": None})
    assert result.returncode == 2
    assert "only target aws has an instance to wake" in result.stderr
    assert not any(c.startswith("aws ") for c in calls)


def test_wake_is_executable_and_documents_the_cli_equivalent() -> None:
    assert os.access(WAKE, os.X_OK)
    text = WAKE.read_text()
    assert "aws ec2 start-instances --region REGION --instance-ids ID && aws ec2 wait instance-running" in text
