"""The readiness gate `pulumi up` waits on, run for real over SSH against a real vLLM container: it
returns only once `GET /v1/models` answers with the key, streaming a progress line at most 15 s apart
while it waits and vLLM's own KV cache figures when ready, and it fails fast, with vLLM's own error,
when the container cannot start or the key is wrong."""

from __future__ import annotations

import itertools
import re
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.real.harness import images
from tests.real.harness.common import BUILD_DIR, http_status
from tests.real.harness.deployer import (
    Deployment,
    GateResult,
    StageTimes,
    deploy,
    existing_host_config,
    gate_result,
    timeline_seconds,
)
from tests.real.harness.testhost import TestHost
from vllm_endpoint.infra.render.host_scripts import (
    PROGRESS_LINE,
    gate_capacity_line,
    gate_report,
    readiness_gate_script,
    summary_with_capacity,
)

pytestmark = pytest.mark.real

SERVED_NAME = "tiny-gate"
# Long enough that only the gate's restart rule (not its deadline) can end the failing case early.
GATE_TIMEOUT_S = 600
# The tiny model has 2048 positions; vLLM refuses a longer max-model-len at start, as it would for a
# user who sets maxModelLen beyond what the fine-tune supports.
TOO_LONG_MAX_MODEL_LEN = "999999"
VLLM_MAX_LEN_ERROR = (f"User-specified max_model_len ({TOO_LONG_MAX_MODEL_LEN}) is greater than the derived "
                      "max_model_len")



def _config_and_proxy(host: TestHost, cache_dir: Path, model: Path, **settings: str) -> Deployment:
    config = existing_host_config(host, cache_dir, modelPath=str(model), servedModelName=SERVED_NAME,
                                  readinessTimeoutSeconds=str(GATE_TIMEOUT_S), **settings)
    images.build_nginx_image(host, tag=config.access.proxy_image)
    host.remove_all_containers()
    return deploy(host, config, api_key=secrets.token_urlsafe(36), gate=False)


@dataclass
class Started:
    deployment: Deployment
    health_before: int  # through the proxy, just before the gate started
    models_before: int
    gate: GateResult
    models_after: int  # right after the gate returned
    # Each stdout line with the seconds since the gate started at which it reached this machine.
    arrivals: list[tuple[float, str]]


def streamed_gate(deployment: Deployment) -> tuple[GateResult, list[tuple[float, str]]]:
    """The gate as `pulumi up` runs it (over SSH, key on stdin), its stdout read line by line as it
    arrives, the way pulumi-command streams it into the display."""
    gate = deployment.plan.readiness_gate
    start = time.monotonic()
    proc = subprocess.Popen(deployment.host.ssh_argv(readiness_gate_script(gate)), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(deployment.api_key + "\n")
    proc.stdin.close()
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read()) if proc.stderr else None)
    reader.start()
    killer = threading.Timer(gate.timeout_s + 60, proc.kill)
    killer.start()
    arrivals = [(time.monotonic() - start, line.rstrip("\n")) for line in proc.stdout]
    proc.wait()
    killer.cancel()
    reader.join()
    out = "".join(line + "\n" for _, line in arrivals)
    return GateResult(proc.returncode, time.monotonic() - start, out, "".join(stderr)), arrivals


@pytest.fixture(scope="module")
def started(test_host: TestHost, vllm_image: str, tiny_model: Path, cache_dir: Path,
            times: StageTimes) -> Started:
    deployment = _config_and_proxy(test_host, cache_dir, tiny_model, maxModelLen="512")
    base = f"http://{test_host.address}:{deployment.plan.api_port}"
    health_before = http_status(base + "/health")
    models_before = http_status(base + "/v1/models", deployment.api_key)
    result, arrivals = streamed_gate(deployment)
    models_after = http_status(base + "/v1/models", deployment.api_key)
    # What a user sees in `pulumi up`, kept for a look after the run (the closing notes quote it).
    (BUILD_DIR / "readiness-gate-transcript.txt").write_text(
        "".join(f"{arrived:7.1f} s  {line}\n" for arrived, line in arrivals))
    deployment.gate_seconds, deployment.gate_output = result.seconds, result.stdout
    deployment.timings["readiness_gate"] = result.seconds
    times.add_deploy(deployment, "gate started right after docker run")
    return Started(deployment, health_before, models_before, result, models_after, arrivals)


def test_the_gate_returns_only_once_the_models_endpoint_answers(started: Started) -> None:
    gate = started.deployment.plan.readiness_gate
    assert started.gate.returncode == 0, started.gate.stderr
    # vLLM was still starting when the gate began: neither path answered yet ...
    assert started.health_before != 200 and started.models_before != 200
    # ... so the gate's first probes failed and it waited (its first probe runs at once; a pass there
    # would return within a second or two).
    assert started.gate.seconds > gate.poll_interval_s
    # And when it returned, the endpoint answered with the key.
    assert started.models_after == 200


def test_the_gate_prints_the_deploy_timeline(started: Started) -> None:
    out, plan = started.gate.stdout, started.deployment.plan
    assert f"ready: GET http://127.0.0.1:{plan.api_port}/v1/models answered 200" in out
    # What the `deploy_timeline` output keeps: the ready line, vLLM's capacity, the timeline.
    stages = [line.split()[0] for line in gate_report(out).splitlines()
              if line and not line.startswith(("ready:", "capacity:"))]
    assert stages == ["container_started", "server_ready"]
    waited = timeline_seconds(out, "server_ready")
    assert waited is not None and 0 < waited <= started.gate.seconds + 30
    # The same timeline is kept on the host for a later look.
    on_host = started.deployment.host.ssh(f"cat {plan.timeline_file}").stdout.split()
    assert on_host[0::2] == ["container_started", "server_ready"]


# "[+12 s] <stage> | container running, health starting, restarts 0 | probe 502 | last log: <line>"
PROGRESS = re.compile(r"\[\+(\d+) s\] (?P<stage>[^|]+) \| container (?P<status>\w+), health (?P<health>\w+), "
                      r"restarts (?P<restarts>\d+) \| probe (?P<probe>\d{3})(?: \| [^|]+)? \| last log: (?P<log>.*)")
MAX_PROGRESS_GAP_S = 15


def test_while_vllm_starts_the_gate_streams_progress_at_most_15_s_apart(started: Started) -> None:
    out = started.gate.stdout
    progress = [(arrived, line) for arrived, line in started.arrivals if PROGRESS_LINE.match(line)]
    assert len(progress) >= 3, out  # vLLM needs ~50 s on 2 cores
    parsed = [PROGRESS.fullmatch(line) for _, line in progress]
    assert all(parsed), out
    ready = re.search(r"^ready: GET \S+ answered 200 after (\d+) s$", out, re.M)
    assert ready is not None, out
    # By the gate's own clock: the first line at once, then never more than 15 s without one.
    marks = [int(m.group(1)) for m in parsed if m] + [int(ready.group(1))]
    assert marks[0] <= 1 and marks == sorted(marks), marks
    assert max(b - a for a, b in itertools.pairwise(marks)) <= MAX_PROGRESS_GAP_S, marks
    # By this machine's clock: each line arrived while the gate waited, not all at its end.
    arrived = [t for t, _ in progress] + [next(t for t, line in started.arrivals if line.startswith("ready:"))]
    assert max(b - a for a, b in itertools.pairwise(arrived)) <= MAX_PROGRESS_GAP_S + 3, arrived
    assert arrived[0] < arrived[-1] - 2 * MAX_PROGRESS_GAP_S
    for m in parsed:
        assert m is not None
        assert (m["status"], m["restarts"]) == ("running", "0") and m["health"] in ("starting", "healthy")
        assert m["log"].strip() and "\x1b" not in m["log"] and len(m["log"]) <= 200
    # The stage follows vLLM's log: more than one step was seen on the way.
    assert len({m["stage"] for m in parsed if m}) >= 2, out
    assert started.deployment.api_key not in out + started.gate.stderr


def test_when_ready_the_gate_prints_vllms_kv_cache_next_to_the_plans_estimate(started: Started) -> None:
    line = gate_capacity_line(started.gate.stdout)
    assert line is not None, started.gate.stdout
    found = re.fullmatch(r"capacity: vLLM reports (CPU KV cache size: ([\d,]+) tokens), "
                         r"(Maximum concurrency for 512 tokens per request: ([\d.]+)x); (.*)", line)
    assert found is not None, line
    # The figures are the ones in vLLM's own log.
    logged = started.deployment.host.docker("logs", started.deployment.plan.vllm.name)
    logs = logged.stdout + logged.stderr
    assert found.group(1) in logs and found.group(3) in logs
    assert int(found.group(2).replace(",", "")) > 0 and float(found.group(4)) > 0
    plan = started.deployment.plan
    assert plan.fit is None  # an existing host without hostGpuModel: no estimate, and the gate says so
    assert found.group(5).startswith("the plan made no fit estimate (its warnings say why")
    # The `plan` stack output keeps both.
    assert summary_with_capacity(plan.summary, started.gate.stdout) == f"{plan.summary}\n{line}"


def test_the_gate_fails_at_once_with_a_wrong_key(started: Started, times: StageTimes) -> None:
    wrong = gate_result(started.deployment, api_key="wrong-" + secrets.token_urlsafe(36))
    times.add("gate_wrong_key_fails_after", wrong.seconds)
    assert wrong.returncode == 1
    assert "the server rejected the API key (401)" in wrong.stderr
    assert "--- container vllm: status=running" in wrong.stderr
    assert wrong.seconds < 30
    assert "ready:" not in wrong.stdout


# --------------------------------------------------------------------------------------------
# A container that exits at start (runs last: it replaces the deployment above).

@pytest.fixture(scope="module")
def crashing(test_host: TestHost, vllm_image: str, tiny_model: Path, cache_dir: Path,
             times: StageTimes) -> tuple[Deployment, GateResult]:
    deployment = _config_and_proxy(test_host, cache_dir, tiny_model, maxModelLen=TOO_LONG_MAX_MODEL_LEN)
    start = time.monotonic()
    result = gate_result(deployment)
    reason = next((line for line in result.stderr.splitlines() if line.startswith("vLLM did not become ready")),
                  "no reason printed")
    times.add("gate_fails_on_a_crash_looping_container", time.monotonic() - start, reason=reason)
    return deployment, result


def test_the_gate_fails_fast_with_vllms_own_error_when_the_container_exits_at_start(
        crashing: tuple[Deployment, GateResult]) -> None:
    deployment, result = crashing
    gate = deployment.plan.readiness_gate
    assert gate.timeout_s == GATE_TIMEOUT_S
    assert result.returncode == 1
    assert "ready:" not in result.stdout
    # Ended by the restart rule, well before the deadline.
    reason = re.search(r"vLLM did not become ready: (the container restarted (\d+) times|the container stopped)",
                       result.stderr)
    assert reason is not None, result.stderr[:2000]
    if reason.group(2) is not None:
        assert int(reason.group(2)) >= gate.max_restarts
    assert result.seconds < GATE_TIMEOUT_S / 3
    # The container's state and vLLM's own last words reach the person running `pulumi up`.
    state = re.search(r"--- container vllm: status=\w+ exit=\d+ restarts=(\d+)", result.stderr)
    assert state is not None and int(state.group(1)) >= 1, result.stderr[:2000]
    assert f"--- last {gate.log_lines} log lines of vllm:" in result.stderr
    assert VLLM_MAX_LEN_ERROR in result.stderr
