"""What brings each container back, every way it can stop on the test host, and how long the endpoint is
down under a bounded load (the README's "Restarts" table takes its figures from this module's report).

The plan's restart policy per target (infra/plan/deployment.py RESTART_POLICY) and the AWS instance's
supervisor (infra/host/supervise-containers.sh, run here against the test host's engine with a restart
loop in place of systemd's Restart=always):

- existing-host (`unless-stopped`, no supervisor): a `docker kill` by the machine's owner is respected;
- aws (`always` + the supervisor): a crash and an OOM kill (the kernel's SIGKILL: the crash path) come
  back by the policy, a `docker kill` by the supervisor, a dockerd restart and a reboot by the policy.

Each fault is measured the same way: from the fault until `GET /v1/models` through the proxy answers 200
again, while LOAD_WORKERS clients send requests through the proxy; every request in that window that
did not answer 200 is counted as failed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.real.harness import images
from tests.real.harness.bootprefetch import FakeImds
from tests.real.harness.common import BUILD_DIR, REPO_ROOT
from tests.real.harness.deployer import DEFAULT_NAMES, Deployment, StageTimes, deploy, existing_host_config
from tests.real.harness.testhost import TestHost
from vllm_endpoint.infra.catalog.names import SPOT_NOTICE_S, SPOT_POLL_S, STACK_TAG
from vllm_endpoint.infra.plan.deployment import RESTART_POLICY
from vllm_endpoint.infra.plan.spec import VLLM_STOP_TIMEOUT_S

pytestmark = pytest.mark.real

SERVED_NAME = "tiny-restarts"
VLLM, PROXY = DEFAULT_NAMES.containers
SUPERVISOR_SCRIPT = REPO_ROOT / "infra" / "host" / "supervise-containers.sh"
FIGURES_FILE = BUILD_DIR / "restart-figures.json"
# The bounded load: this many clients, each sending a request every LOAD_INTERVAL_S (a /v1/models list or
# a short chat, alternately) with a per-request timeout.
LOAD_WORKERS = 4
LOAD_INTERVAL_S = 0.25
REQUEST_TIMEOUT_S = 10.0
# vLLM's cold start on this CPU machine is about 60-70 s (the deploy's readiness gate).
RECOVERY_TIMEOUT_S = 300.0


# --------------------------------------------------------------------------------------------
# The load and the measurement.

@dataclass
class Load:
    """LOAD_WORKERS threads sending authorized requests through the proxy until stopped."""

    base_url: str
    api_key: str
    results: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, HTTP status or 0)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _request(self, chat: bool) -> int:
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        body = None
        if chat:
            body = json.dumps({"model": SERVED_NAME, "max_tokens": 4, "temperature": 0,
                               "messages": [{"role": "user", "content": "hi"}]}).encode()
        url = f"{self.base_url}/{'chat/completions' if chat else 'models'}"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers),
                                        timeout=REQUEST_TIMEOUT_S) as resp:
                resp.read()
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError):
            return 0

    def _worker(self, index: int) -> None:
        chat = bool(index % 2)
        while not self._stop.is_set():
            status = self._request(chat)
            with self._lock:
                self.results.append((time.monotonic(), status))
            chat = not chat
            self._stop.wait(LOAD_INTERVAL_S)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._worker, args=(i,), daemon=True) for i in range(LOAD_WORKERS)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT_S + 5)

    def between(self, start: float, end: float) -> list[int]:
        with self._lock:
            return [status for at, status in self.results if start <= at <= end]


@dataclass(frozen=True)
class Outage:
    fault: str
    brought_back_by: str
    down_s: float
    failed: int
    requests: int


def models_answer(deployment: Deployment) -> bool:
    request = urllib.request.Request(f"{deployment.endpoint_url}/models",
                                     headers={"Authorization": f"Bearer {deployment.api_key}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def measure(deployment: Deployment, fault: str, brought_back_by: str, act: Callable[[], object],
            times: StageTimes) -> Outage:
    """Runs `act` under the load, waits for /v1/models to answer again and counts what failed meanwhile."""
    assert models_answer(deployment), "the endpoint must serve before the fault"
    with Load(deployment.endpoint_url, deployment.api_key) as load:
        time.sleep(2)  # the load runs before the fault
        start = time.monotonic()
        act()
        # Down first (an answer in the moment before Docker acts is from before the fault)...
        went_down = start + 3
        while models_answer(deployment) and time.monotonic() < went_down:
            time.sleep(0.1)
        # ...then up again.
        deadline = start + RECOVERY_TIMEOUT_S
        while not models_answer(deployment):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{fault}: /v1/models did not answer within {RECOVERY_TIMEOUT_S:.0f} s")
            time.sleep(0.1)
        back = time.monotonic()
        time.sleep(3)  # requests in flight when it came back finish in the window
        statuses = load.between(start, time.monotonic())
    outage = Outage(fault, brought_back_by, round(back - start, 1), sum(s != 200 for s in statuses), len(statuses))
    times.add(f"restart: {fault}", outage.down_s, failed=outage.failed, requests=outage.requests,
              by=brought_back_by.replace(" ", "_"))
    return outage


# --------------------------------------------------------------------------------------------
# The supervisor, as systemd runs it on an instance.

class Supervisor:
    """supervise-containers.sh against the test host's engine, started again a second after it exits
    (systemd's Restart=always; the unit's RestartSec is 5 s)."""

    def __init__(self, host: TestHost, log: Path) -> None:
        self.host, self.log = host, log
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.starts = 0

    def _loop(self) -> None:
        # As root on the host itself, through the engine's own socket (an instance's default socket).
        env = {**self.host.local_docker_env(), "DOCKER_HOST": f"unix://{self.host.docker_socket}",
               "SUPERVISE_LABEL": STACK_TAG, "SWEEP_SECONDS": "10", "SETTLE_SECONDS": "1"}
        with self.log.open("ab") as out:
            while not self._stop.is_set():
                self._proc = subprocess.Popen(["bash", str(SUPERVISOR_SCRIPT)], env=env, stdout=out,
                                              stderr=subprocess.STDOUT, start_new_session=True)
                self.starts += 1
                self._proc.wait()
                self._stop.wait(1)

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)  # the script and its `docker events`
        self._thread.join(timeout=30)

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


# --------------------------------------------------------------------------------------------
# Faults.

def running(host: TestHost, name: str) -> bool:
    return host.docker_local("inspect", "--format", "{{.State.Running}}", name, check=False).stdout.strip() == "true"


def restart_policy(host: TestHost, name: str) -> str:
    return host.docker_local("inspect", "--format", "{{.HostConfig.RestartPolicy.Name}}", name).stdout.strip()


def main_process(host: TestHost, name: str) -> int:
    """The container's own program: the child of its init process (docker-init for vLLM, `init: true`),
    or its first process when it has none (the proxy's nginx master)."""
    pid = int(host.docker_local("inspect", "--format", "{{.State.Pid}}", name).stdout.strip())
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    if comm not in ("docker-init", "tini"):
        return pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, f"{name}: its init has children {children}"
    return int(children[0])


def crash(host: TestHost, name: str) -> Callable[[], None]:
    """SIGKILL of the container's program from the host, as a crash or the kernel's OOM killer ends it."""
    return lambda: os.kill(main_process(host, name), signal.SIGKILL)


def docker_kill(host: TestHost, *names: str) -> Callable[[], object]:
    return lambda: host.docker_local("kill", *names)


# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def deployed(test_host: TestHost, vllm_image: str, tiny_model: Path, cache_dir: Path,
             times: StageTimes) -> Iterator[Deployment]:
    config = existing_host_config(test_host, cache_dir, modelPath=str(tiny_model), servedModelName=SERVED_NAME,
                                  maxModelLen="512", maxNumSeqs="8")
    images.build_nginx_image(test_host, tag=config.access.proxy_image)
    test_host.remove_all_containers()
    deployment = deploy(test_host, config, api_key="restarts-" + os.urandom(16).hex())
    times.add_deploy(deployment, "restarts")
    yield deployment
    figures = [vars(o) for o in OUTAGES]
    FIGURES_FILE.write_text(json.dumps({"at": time.strftime("%Y-%m-%d %H:%M:%S"), "outages": figures}, indent=2))


OUTAGES: list[Outage] = []


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.5)


def test_on_an_existing_host_a_docker_kill_by_its_owner_is_respected(deployed: Deployment) -> None:
    host = deployed.host
    assert restart_policy(host, VLLM) == restart_policy(host, PROXY) == RESTART_POLICY["existing-host"]
    host.docker_local("kill", PROXY)
    time.sleep(10)
    assert not running(host, PROXY), "nothing starts a container its owner stopped on their own machine"
    host.docker_local("start", PROXY)
    wait_for(lambda: models_answer(deployed), 60, "the proxy did not serve after docker start")


@pytest.fixture(scope="module")
def aws_like(deployed: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervisor]:
    """The deployment as an instance runs it: the AWS restart policy, and the supervisor running."""
    host = deployed.host
    host.docker_local("update", "--restart", RESTART_POLICY["aws"], VLLM, PROXY)
    assert restart_policy(host, VLLM) == restart_policy(host, PROXY) == "always"
    with Supervisor(host, tmp_path_factory.mktemp("supervisor") / "supervisor.log") as supervisor:
        wait_for(lambda: "watching containers labelled" in supervisor.text(), 30, "the supervisor did not start")
        yield supervisor


def test_a_crashed_proxy_is_restarted_by_dockers_policy(deployed: Deployment, aws_like: Supervisor,
                                                        times: StageTimes) -> None:
    before = aws_like.text()
    OUTAGES.append(measure(deployed, "proxy crash (SIGKILL)", "restart policy", crash(deployed.host, PROXY), times))
    assert aws_like.text() == before, "Docker restarted it, not the supervisor"


def test_a_docker_kill_of_the_proxy_is_undone_by_the_supervisor(deployed: Deployment, aws_like: Supervisor,
                                                                times: StageTimes) -> None:
    OUTAGES.append(measure(deployed, "proxy docker kill", "supervisor", docker_kill(deployed.host, PROXY), times))
    assert f"started {PROXY} again" in aws_like.text()


def test_a_crashed_vllm_is_restarted_by_dockers_policy(deployed: Deployment, aws_like: Supervisor,
                                                       times: StageTimes) -> None:
    before = aws_like.text()
    OUTAGES.append(measure(deployed, "vLLM crash (SIGKILL)", "restart policy", crash(deployed.host, VLLM), times))
    assert aws_like.text() == before


def test_a_docker_kill_of_vllm_is_undone_by_the_supervisor(deployed: Deployment, aws_like: Supervisor,
                                                           times: StageTimes) -> None:
    OUTAGES.append(measure(deployed, "vLLM docker kill", "supervisor", docker_kill(deployed.host, VLLM), times))
    assert f"started {VLLM} again" in aws_like.text()


def test_after_a_dockerd_restart_both_come_back_and_the_supervisor_watches_again(
        deployed: Deployment, aws_like: Supervisor, times: StageTimes) -> None:
    host = deployed.host
    starts = aws_like.starts
    OUTAGES.append(measure(deployed, "dockerd restart", "restart policy", host.restart_engine, times))
    assert aws_like.starts > starts, "the supervisor exits when dockerd stops (systemd starts it again)"
    wait_for(lambda: aws_like.text().count("watching containers labelled") > starts, 30,
             "the supervisor did not watch again")
    OUTAGES.append(measure(deployed, "proxy docker kill after the dockerd restart", "supervisor",
                           docker_kill(host, PROXY), times))


# --------------------------------------------------------------------------------------------
# A spot interruption: infra/host/spot-interruption.sh as its systemd unit runs it on an instance, against
# the test host's engine and a stand-in IMDS that announces EC2's stop. Last in the module: it stops the
# endpoint and has the next boot bring it back.

SPOT_HANDLER_SCRIPT = REPO_ROOT / "infra" / "host" / "spot-interruption.sh"
SPOT_NOTICE_PATH = "/latest/meta-data/spot/instance-action"


@dataclass
class SpotImds(FakeImds):
    """IMDSv2 whose spot/instance-action answers 404 until `announce` is called, as EC2's does."""

    notice: str | None = None

    def announce(self, action: str, seconds_ahead: int) -> None:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds_ahead))
        self.notice = json.dumps({"action": action, "time": at})

    def answer(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        if (method, path) == ("GET", SPOT_NOTICE_PATH) and self.notice is not None \
                and headers.get("X-aws-ec2-metadata-token") == self.session:
            return 200, self.notice
        return super().answer(method, path, headers)


def cache_mount(host: TestHost, name: str, cache_dir: Path) -> tuple[str, Path]:
    """The container's writable bind mount from the cache folder: (path inside, path on the host)."""
    mounts = json.loads(host.docker_local("inspect", "--format", "{{json .Mounts}}", name).stdout)
    inside, source = next((m["Destination"], Path(m["Source"])) for m in mounts
                          if m["RW"] and Path(m["Source"]).resolve().is_relative_to(cache_dir.resolve()))
    return inside, source


def test_a_spot_interruption_notice_stops_both_cleanly_and_the_next_boot_brings_them_back(
        deployed: Deployment, aws_like: Supervisor, cache_dir: Path, times: StageTimes,
        tmp_path: Path) -> None:
    host = deployed.host
    wait_for(lambda: models_answer(deployed), RECOVERY_TIMEOUT_S, "the endpoint must serve before the notice")
    assert restart_policy(host, VLLM) == restart_policy(host, PROXY) == RESTART_POLICY["aws"]
    # On an instance the handler's first step stops the supervisor's unit (systemctl; unit-tested in
    # tests/unit/infra/host/test_spot_interruption.py). The test host has no systemd: hold it here.
    aws_like.__exit__()
    # Written by vLLM's container into its cache folder just before, and never synced by anyone else: the
    # handler's sync and the clean stop must leave it whole.
    inside, on_host = cache_mount(host, VLLM, cache_dir)
    host.docker_local("exec", VLLM, "sh", "-c",
                      f"head -c 4194304 /dev/urandom >{inside}/spot-canary.tmp && mv {inside}/spot-canary.tmp "
                      f"{inside}/spot-canary")
    canary = (on_host / "spot-canary").read_bytes()
    cache_files = {p for p in cache_dir.rglob("*") if p.is_file()}

    imds = SpotImds(tags={})
    log = tmp_path / "spot-handler.log"
    env = {**host.local_docker_env(), "DOCKER_HOST": f"unix://{host.docker_socket}", "SPOT_LABEL": STACK_TAG,
           "STOP_TIMEOUT_S": str(VLLM_STOP_TIMEOUT_S), "POLL_SECONDS": str(SPOT_POLL_S), "SUPERVISOR_UNIT": ""}
    with imds.serve() as url, log.open("wb") as out:
        handler = subprocess.Popen(["bash", str(SPOT_HANDLER_SCRIPT)], env={**env, "VLLM_ENDPOINT_IMDS_URL": url},
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # Without a notice it only polls: the endpoint serves on.
            wait_for(lambda: sum(s == 404 for _, p, s in imds.requests if p == SPOT_NOTICE_PATH) >= 2,
                     30, "the handler did not poll IMDS")
            assert running(host, VLLM) and running(host, PROXY) and models_answer(deployed)

            imds.announce("stop", SPOT_NOTICE_S)
            announced = time.monotonic()
            wait_for(lambda: not running(host, VLLM) and not running(host, PROXY), SPOT_NOTICE_S,
                     "the containers did not stop within the notice")
            stopped_s = time.monotonic() - announced
            wait_for(lambda: "disks flushed" in log.read_text(), SPOT_NOTICE_S, "the handler did not finish")
            handled_s = time.monotonic() - announced
            # A few more polls of the same notice: it is acted on once.
            polls = len(imds.requests)
            wait_for(lambda: len(imds.requests) >= polls + 3, 30, "the handler stopped polling after acting")
        finally:
            os.killpg(handler.pid, signal.SIGTERM)  # the script and its sleep
            handler.wait(timeout=30)
    text = log.read_text()
    times.add("spot: notice to both containers stopped", round(stopped_s, 1), stop_timeout=VLLM_STOP_TIMEOUT_S)
    times.add("spot: notice to handler done (stop + sync)", round(handled_s, 1), notice=SPOT_NOTICE_S)
    assert handled_s < SPOT_NOTICE_S, text
    assert "spot interruption notice: action=stop time=" in text and text.count("spot interruption notice:") == 1
    # Stopped by their own shutdown, not killed when docker stop's grace ran out (137) nor by the kernel.
    for name in (VLLM, PROXY):
        state = json.loads(host.docker_local("inspect", "--format", "{{json .State}}", name).stdout)
        assert (state["ExitCode"], state["OOMKilled"], state["Running"]) == (0, False, False), (name, state)
    logs = host.docker_local("logs", "--tail", "100", VLLM)
    vllm_log = logs.stdout + logs.stderr
    assert "Application shutdown complete" in vllm_log, vllm_log[-3000:]

    # The next boot, when EC2 starts the instance again: `always` starts both with dockerd, though they were
    # stopped through Docker's API (where `unless-stopped` would leave them down). This is also what any
    # reboot does to containers someone stopped by hand.
    boot = time.monotonic()
    host.restart_engine()
    wait_for(lambda: models_answer(deployed), RECOVERY_TIMEOUT_S, "the endpoint did not serve after the next boot")
    times.add("restart: host reboot after both were stopped by hand (spot)", round(time.monotonic() - boot, 1),
              by="restart_policy")
    assert (on_host / "spot-canary").read_bytes() == canary
    assert cache_files <= {p for p in cache_dir.rglob("*") if p.is_file()}, "files on the cache folder were lost"
    (on_host / "spot-canary").unlink()
