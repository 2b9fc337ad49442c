"""infra/host/spot-interruption.sh against a stand-in IMDS on loopback and a `docker`/`systemctl` on PATH
that record their calls: nothing happens without a notice, a notice stops exactly the stack's
containers once (the supervisor first), and the IMDSv2 token is fetched again when IMDS refuses it.
The real engine and vLLM: tests/real/test_restarts.py."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vllm_endpoint.infra.catalog.names import STACK_TAG, SUPERVISOR_UNIT_NAME

SCRIPT = Path(__file__).parents[4] / "infra" / "host" / "spot-interruption.sh"
NOTICE_PATH = "/latest/meta-data/spot/instance-action"
STOP_TIMEOUT = "17"
# Two of the stack's containers and one that is not the endpoint's (another label).
CONTAINERS = {"vllm": STACK_TAG, "proxy": STACK_TAG, "someone-elses": "other:stack"}


@dataclass
class Imds:
    """IMDSv2: a token from PUT /latest/api/token, required on every GET; the notice answers 404 until
    `notice` is set. `forget_token()` makes the current token fail with 401, as an expired one does."""

    notice: str | None = None
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    requests: list[tuple[str, str, int, str]] = field(default_factory=list)  # method, path, status, ttl
    lock: threading.Lock = field(default_factory=threading.Lock)

    def forget_token(self) -> None:
        self.token = secrets.token_urlsafe(16)

    def answer(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        if method == "PUT":
            ok = path == "/latest/api/token" and "X-aws-ec2-metadata-token-ttl-seconds" in headers
            return (200, self.token) if ok else (400, "")
        if headers.get("X-aws-ec2-metadata-token") != self.token:
            return 401, ""
        if path == NOTICE_PATH and self.notice is not None:
            return 200, self.notice
        return 404, ""

    def seen(self, method: str, status: int | None = None) -> int:
        with self.lock:
            return sum(m == method and (status is None or s == status) for m, _, s, _ in self.requests)

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        imds = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _do(self) -> None:
                headers = dict(self.headers.items())
                status, body = imds.answer(self.command, self.path, headers)
                with imds.lock:
                    imds.requests.append((self.command, self.path, status,
                                          headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")))
                payload = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = _do

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


def fake_tools(bin_dir: Path, calls: Path, systemctl_status: int = 0) -> Path:
    """`docker` (ps with a label filter lists the running containers carrying that label key; stop
    succeeds) and `systemctl`, both appending their argv as one JSON line to `calls`."""
    bin_dir.mkdir(parents=True)
    (bin_dir / "docker").write_text(f"""#!{sys.executable}
import json, sys
args = sys.argv[1:]
with open({str(calls)!r}, "a") as out:
    out.write(json.dumps(["docker", *args]) + "\\n")
if args[0] == "ps":
    label = next(a.split("=", 1)[1] for a in args if a.startswith("label="))
    assert "--format" in args and "{{{{.Names}}}}" in args, args
    print("\\n".join(n for n, key in {CONTAINERS!r}.items() if key == label))
elif args[0] != "stop":
    sys.exit(64)
""")
    (bin_dir / "systemctl").write_text(f"""#!/bin/sh
printf '["systemctl", "%s", "%s"]\\n' "$1" "$2" >>{calls}
exit {systemctl_status}
""")
    for tool in ("docker", "systemctl"):
        (bin_dir / tool).chmod(0o755)
    return bin_dir


@dataclass
class Handler:
    proc: subprocess.Popen[str]
    calls: Path
    log: Path

    def calls_made(self) -> list[list[str]]:
        return [json.loads(line) for line in self.calls.read_text().splitlines()] if self.calls.exists() else []

    def text(self) -> str:
        return self.log.read_text()


@contextlib.contextmanager
def handler(tmp_path: Path, imds: Imds, systemctl_status: int = 0, **env: str) -> Iterator[Handler]:
    calls = tmp_path / "calls.jsonl"
    bin_dir = fake_tools(tmp_path / "bin", calls, systemctl_status)
    environment = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SPOT_LABEL": STACK_TAG,
                   "STOP_TIMEOUT_S": STOP_TIMEOUT, "POLL_SECONDS": "0.1", "SUPERVISOR_UNIT": SUPERVISOR_UNIT_NAME,
                   **env}
    log = tmp_path / "handler.log"
    with imds.serve() as url, log.open("w") as out:
        proc = subprocess.Popen(["bash", str(SCRIPT)], env={"VLLM_ENDPOINT_IMDS_URL": url, **environment},
                                stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            yield Handler(proc, calls, log)
        finally:
            proc.kill()
            proc.wait(timeout=10)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def notice(action: str) -> str:
    return json.dumps({"action": action, "time": "2026-12-02T01:30:00Z"})


def test_without_a_notice_it_only_polls_with_one_token(tmp_path: Path) -> None:
    imds = Imds()
    with handler(tmp_path, imds) as run:
        wait_for(lambda: imds.seen("GET", 404) >= 10, "the handler did not poll")
        assert run.proc.poll() is None, run.text()
        assert run.calls_made() == []
        # One token for every poll, with the lifetime asked for (the default: IMDS's maximum).
        assert imds.seen("PUT") == 1
        assert [ttl for m, _, _, ttl in imds.requests if m == "PUT"] == ["21600"]
        assert {p for m, p, _, _ in imds.requests if m == "GET"} == {NOTICE_PATH}


def test_a_stop_notice_stops_the_supervisor_then_exactly_the_stacks_containers_once(tmp_path: Path) -> None:
    imds = Imds()
    with handler(tmp_path, imds) as run:
        wait_for(lambda: imds.seen("GET", 404) >= 3, "the handler did not poll")
        imds.notice = notice("stop")
        wait_for(lambda: "disks flushed" in run.text(), "the handler did not act on the notice")
        acted = imds.seen("GET", 200)
        wait_for(lambda: imds.seen("GET", 200) >= acted + 10, "the handler stopped polling after acting")
        assert run.calls_made() == [
            ["systemctl", "stop", SUPERVISOR_UNIT_NAME],
            ["docker", "ps", "--filter", f"label={STACK_TAG}", "--format", "{{.Names}}"],
            ["docker", "stop", "--time", STOP_TIMEOUT, "vllm", "proxy"],
        ]
        assert "spot interruption notice: action=stop time=2026-12-02T01:30:00Z" in run.text()
        assert run.text().count("spot interruption notice:") == 1


def test_without_a_supervisor_unit_or_with_one_that_will_not_stop_the_containers_stop_all_the_same(
        tmp_path: Path) -> None:
    for case, status, unit in (("none", 0, ""), ("failing", 5, SUPERVISOR_UNIT_NAME)):
        imds = Imds(notice=notice("terminate"))
        with handler(tmp_path / case, imds, systemctl_status=status, SUPERVISOR_UNIT=unit) as run:
            wait_for(lambda: "disks flushed" in run.text(), f"{case}: the handler did not act")
            tools = [call[:2] for call in run.calls_made()]
            assert tools[-1] == ["docker", "stop"], run.text()
            assert (["systemctl", "stop"] in tools) == bool(unit)
            assert ("could not stop" in run.text()) == bool(status)


def test_a_hibernation_notice_leaves_the_containers_running(tmp_path: Path) -> None:
    imds = Imds(notice=notice("hibernate"))
    with handler(tmp_path, imds) as run:
        wait_for(lambda: "left running" in run.text(), "the handler did not log the hibernation")
        assert run.calls_made() == []


def test_a_refused_token_is_fetched_again_and_the_polls_go_on(tmp_path: Path) -> None:
    imds = Imds()
    with handler(tmp_path, imds) as run:
        wait_for(lambda: imds.seen("GET", 404) >= 3, "the handler did not poll")
        imds.forget_token()
        wait_for(lambda: imds.seen("PUT") == 2, "no new token after a 401")
        polls = imds.seen("GET", 404)
        wait_for(lambda: imds.seen("GET", 404) >= polls + 5, "the polls did not go on with the new token")
        assert imds.seen("GET", 401) == 1 and imds.seen("PUT") == 2
        imds.notice = notice("stop")
        wait_for(lambda: "disks flushed" in run.text(), "the handler did not act after the new token")
        assert "IMDS does not answer" not in run.text()


def test_a_token_is_renewed_a_minute_before_it_expires(tmp_path: Path) -> None:
    imds = Imds()
    # A 61 s token is due for renewal after 1 s: bash's SECONDS has whole seconds, so within about 2 s.
    with handler(tmp_path, imds, IMDS_TOKEN_TTL="61"):
        wait_for(lambda: imds.seen("PUT") >= 3, "the token was not renewed before it expired", timeout=10)
        assert imds.seen("GET", 401) == 0


def test_an_unanswering_imds_is_logged_once_and_the_handler_keeps_polling(tmp_path: Path) -> None:
    imds = Imds()
    # A closed port on loopback first: IMDS is not up yet.
    with handler(tmp_path, imds, VLLM_ENDPOINT_IMDS_URL="http://127.0.0.1:9") as run:
        time.sleep(2)
        assert run.proc.poll() is None, run.text()
        assert run.text().count("IMDS does not answer") == 1
        assert run.calls_made() == []


@pytest.mark.parametrize("missing", ["SPOT_LABEL", "STOP_TIMEOUT_S"])
def test_a_missing_parameter_stops_it_at_once_naming_it(missing: str) -> None:
    env = {"PATH": os.environ["PATH"], "SPOT_LABEL": STACK_TAG, "STOP_TIMEOUT_S": STOP_TIMEOUT}
    del env[missing]
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=10)
    assert proc.returncode != 0 and missing in proc.stderr
