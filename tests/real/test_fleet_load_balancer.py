"""The fleet's load balancer on real parts: two replicas of the endpoint (vLLM + the nginx proxy, from the same
container specs as the ECS task), each on its own test host, behind a real HAProxy configured from the same
`load_balancer_spec()` as the ALB's target group and listener (tests/real/harness/alb_haproxy.py maps each
setting and says what differs). The target port is the endpoint's API port on each host, as one target group
port serves every task.

What it proves, through the official openai client at the load balancer:
- the metric the scaling policy tracks is a gauge on the real server, kept by name by the CloudWatch agent's
  rendered config, and it counts the queue: 8 requests at max-num-seqs 1 read 7 waiting, then one fewer per
  answer. vLLM's engine processes are paused while the requests arrive (so that they queue together however
  busy the machine is) and at each snapshot (a busy 2-core machine's API server answers no scrape while the
  engine streams);
- a replica that joins (registered as soon as its containers run, as ECS does) gets no request while vLLM
  loads, is put in service interval x healthy threshold after it is ready, then takes its share; the clients
  see no failure and their longest wait between answers is printed;
- a replica removed during a burst of streams loses nothing: it is drained (no new request, those in flight
  finish), then stopped as ECS stops a task, and the service keeps answering.
Together the last two are a rolling update's two halves (one replica leaves, a new one joins). Where each
request went is read on the replicas themselves: vLLM's request counter (where the CloudWatch agent scrapes it)
and the proxy's access log. Two vLLM starts in all: the first replica's, and the second's while the first serves.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import openai
import pytest

from tests.real.harness import images
from tests.real.harness.alb_haproxy import Target, running_haproxy
from tests.real.harness.common import BUILD_DIR, prerequisite_problem, wait_for
from tests.real.harness.deployer import (
    DEFAULT_NAMES,
    Deployment,
    StageTimes,
    deploy,
    existing_host_config,
    make_cache_dir,
    run_gate,
)
from tests.real.harness.fleet import Answer, Fleet, Reading, SteadyClient, chat, scrape_job, served, stream, wall
from tests.real.harness.testhost import TestHost, start_test_host
from vllm_endpoint.infra.catalog.names import FORWARDED_PREFIX, HEALTH_PATH
from vllm_endpoint.infra.render.alarms import RUNNING, WAITING
from vllm_endpoint.infra.render.cloudwatch_agent import render_agent_config
from vllm_endpoint.infra.render.load_balancer import load_balancer_spec
from vllm_endpoint.infra.settings.models import StackConfig

pytestmark = pytest.mark.real

SERVED_NAME = "tiny-fleet"
API_PORT = 30021
# One sequence at a time: a few concurrent requests queue (the scaling metric) and a burst keeps each replica
# busy long enough to be removed in the middle of it.
MAX_NUM_SEQS = 1
# Short, so that a drain that did not end by itself would show within the test (ALB's default is 300 s).
DRAIN_DELAY_S = 30
ANSWER_TOKENS = 8  # the steady clients' short answers
BURST_WORKERS, STREAMS_PER_WORKER, STREAM_TOKENS = 4, 4, 48
# Long answers (the model's whole length less the prompt): each keeps the engine busy for about 0.8 s, so the
# queue drains over several snapshots.
QUEUED_REQUESTS, QUEUED_TOKENS = 8, 448
# vLLM's count of the API requests its server is handling (`--enable-server-load-tracking`), on vLLM's own port:
# it rises when a request reaches the handler, whatever the engine does. (Counting the proxy's connections to
# vLLM cannot tell: its keep-alive pool holds idle ones that look the same.)
LOAD_PATH, LOAD_TRACKING_FLAG = "/load", "--enable-server-load-tracking"
# Once every request is in vLLM's API server: time for it to tokenize them and hand them to the (paused) engine.
ARRIVAL_SETTLE_S = 2.0
# The engine runs this long between two snapshots (a few hundred decode steps of the tiny model, less than one
# answer), then is paused while the gauges are scraped.
ENGINE_RUN_S = 0.3
QUEUE_DRAIN_TIMEOUT_S = 180
REALTIME_PRIORITY = 50  # SCHED_FIFO's range is 1-99
NOT_READY_REQUESTS = 8  # at least this many answered while the joining replica loads
# Polling the stats and /health every 0.1-0.5 s, and a check's own duration.
CHECK_SLACK_S = 1.5
START_TIMEOUT_S = 600  # a vLLM start on a busy 2-core machine


def replica_config(host: TestHost, cache_dir: Path, model: Path, core: int) -> StackConfig:
    # Each replica of a fleet has its instance to itself. Here two vLLM CPU engines share 2 cores, and each
    # binds its worker to core 0 by default (vLLM reserves the other): the second would load while the first's
    # busy worker holds that core. So each gets its own core, with the product's own extraEnv setting (what a
    # user of a CPU host would set).
    return existing_host_config(host, cache_dir, modelPath=str(model), servedModelName=SERVED_NAME,
                                maxModelLen="512", apiPort=str(API_PORT), maxNumSeqs=str(MAX_NUM_SEQS),
                                extraArgs=json.dumps([LOAD_TRACKING_FLAG]),
                                extraEnv=json.dumps({"VLLM_CPU_OMP_THREADS_BIND": str(core)}))


def api_requests_logged(deployment: Deployment, since: float) -> list[float]:
    """Wall-clock times of the API requests the replica's proxy logged (its access log, one line per request;
    Docker's timestamp), since `since`. Health checks are not API requests."""
    logs = deployment.host.docker("logs", "--timestamps", "--since", f"{since:.3f}",
                                  deployment.plan.names.proxy_container)
    times = []
    for line in logs.stdout.splitlines():
        stamp, _, entry = line.partition(" ")
        if f" {FORWARDED_PREFIX}" in entry:
            # RFC 3339 with nanoseconds; Python reads microseconds.
            times.append(datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", stamp)).timestamp())
    return times


@pytest.fixture(scope="module")
def fleet(test_host: TestHost, vllm_image: str, tiny_model: Path, times: StageTimes,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    problem = prerequisite_problem(("haproxy", "curl", "chrt"))
    if problem:
        pytest.skip(problem)
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        second = stack.enter_context(start_test_host())
        hosts = {"a": test_host, "b": second}
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        for var in ("no_proxy", "NO_PROXY"):
            patch.setenv(var, ",".join(filter(None, [os.environ.get(var, ""), second.address])))
        caches = {n: make_cache_dir(h, BUILD_DIR / "host-cache" / f"{h.name}-fleet") for n, h in hosts.items()}
        stack.callback(_clean_up, hosts, caches)
        configs = {n: replica_config(h, caches[n], tiny_model, core) for core, (n, h) in enumerate(hosts.items())}
        api_key = secrets.token_urlsafe(36)  # one secret for every task of the service
        images.build_nginx_image(test_host, tag=configs["a"].access.proxy_image)
        first = deploy(test_host, configs["a"], api_key, gate=False)
        # The second host's images while the first replica loads.
        image_start = time.monotonic()
        images.build_vllm_image(second)
        images.build_nginx_image(second, tag=configs["b"].access.proxy_image)
        times.add("fleet_second_host_images", time.monotonic() - image_start)
        spec = load_balancer_spec(target_port=API_PORT, deregistration_delay_s=DRAIN_DELAY_S)
        lb = stack.enter_context(running_haproxy(spec, [Target(n, h.address) for n, h in hosts.items()],
                                                 tmp_path_factory.mktemp("fleet-lb")))
        # ECS registers a task once it runs; the load balancer's checks keep it out until vLLM is ready.
        lb.register("a")
        first.gate_seconds, first.gate_output = run_gate(first)
        first.timings["readiness_gate"] = first.gate_seconds
        times.add_deploy(first, "replica a")
        times.add("fleet_first_replica_ready", time.monotonic() - started)
        yield Fleet(lb, hosts, configs, {"a": first}, api_key, SERVED_NAME)


def _clean_up(hosts: dict[str, TestHost], caches: dict[str, Path]) -> None:
    for name, host in hosts.items():
        host.remove_all_containers()
        host.docker("network", "rm", DEFAULT_NAMES.network, check=False)
        shutil.rmtree(caches[name], ignore_errors=True)


def in_service(fleet: Fleet, name: str) -> None:
    """Waits until the load balancer has `name` in service (its checks pass from when it is ready)."""
    check = fleet.lb.spec.target_group.health_check
    fleet.lb.wait_status(name, "UP", timeout=check.seconds_to_healthy + check.interval_s + CHECK_SLACK_S)


@dataclass(frozen=True)
class Joined:
    deployment: Deployment
    deployed: float  # monotonic: its containers were started and it was registered
    ready: float  # its /health first answered 200, asked directly
    up: float  # the load balancer put it in service
    staying_before: Reading  # the other replica's served count after `deployed`
    staying_after: Reading  # ... and after `ready`


def join(fleet: Fleet, name: str, staying: str) -> Joined:
    """A new replica on its host, registered once its containers run (before vLLM is ready), as ECS does."""
    lb, host = fleet.lb, fleet.hosts[name]
    check = lb.spec.target_group.health_check
    deployment = deploy(host, fleet.configs[name], fleet.api_key, gate=False)
    lb.register(name)
    deployed = time.monotonic()
    before = Reading.of(fleet.replicas[staying])
    health = f"http://{host.address}:{API_PORT}{HEALTH_PATH}"
    polling = time.monotonic()
    ready = polling + host.wait_http(health, timeout=START_TIMEOUT_S, container=deployment.plan.vllm.name,
                                     status=int(check.matcher))
    after = Reading.of(fleet.replicas[staying])
    up = lb.wait_status(name, "UP", timeout=check.seconds_to_healthy + check.interval_s + CHECK_SLACK_S)
    fleet.replicas[name] = deployment
    return Joined(deployment, deployed, ready, up, before, after)


@dataclass(frozen=True)
class Snapshot:
    """The replica's gauges scraped while its engine is paused: what the last step it ran recorded."""

    at: float  # seconds after the burst began
    waiting: float
    running: float
    waiting_type: str | None  # WAITING's `# TYPE`


@dataclass(frozen=True)
class Burst:
    """QUEUED_REQUESTS concurrent requests at max-num-seqs 1, and the replica's gauges meanwhile. Times are seconds
    after the burst began."""

    snapshots: list[Snapshot]
    arrived_in: float  # until vLLM's API server held every request (the engine paused)
    ends: list[float]  # each answer's end
    served: float  # vLLM's request counter's rise over the burst: the answers this replica's vLLM gave

    @property
    def waiting(self) -> list[float]:
        return [s.waiting for s in self.snapshots]

    def summary(self) -> str:
        return (f"{QUEUED_REQUESTS} concurrent requests of {QUEUED_TOKENS} tokens at max-num-seqs {MAX_NUM_SEQS}, "
                f"all in vLLM's API server at {self.arrived_in:.1f} s; {len(self.snapshots)} snapshots, the engine "
                f"running {ENGINE_RUN_S} s between them ({WAITING}, {RUNNING}): "
                f"{' '.join(f'{s.waiting:.0f},{s.running:.0f}@{s.at:.1f}' for s in self.snapshots)}; answers ended at "
                f"{', '.join(f'{e:.1f}' for e in self.ends)} s; this vLLM served {self.served:.0f}")


def engine_pids(deployment: Deployment) -> list[int]:
    """The pids of vLLM's engine processes, as the machine sees them: the EngineCore (the scheduler) and, where
    the executor runs workers in their own processes (the CPU build does), each VLLM::Worker. Their titles start
    with VLLM::. The test hosts are network namespaces sharing the machine's PID namespace, so `docker top` prints
    pids os.kill can use (the tests run as root)."""
    top = deployment.host.docker("top", deployment.plan.vllm.name, "-eo", "pid,args").stdout
    found = {line.split()[1]: int(line.split()[0]) for line in top.splitlines()[1:]
             if len(line.split()) > 1 and line.split()[1].startswith("VLLM::")}
    assert "VLLM::EngineCore" in found, f"no EngineCore process in {deployment.plan.vllm.name}:\n{top}"
    return sorted(found.values())


def signal_all(pids: list[int], signum: signal.Signals) -> None:
    for pid in pids:
        os.kill(pid, signum)


@contextlib.contextmanager
def engine_paused(pids: list[int]) -> Iterator[None]:
    """The engine stopped (SIGSTOP) for the block, and always continued after it."""
    signal_all(pids, signal.SIGSTOP)
    try:
        yield
    finally:
        signal_all(pids, signal.SIGCONT)


def run_engine_briefly(pids: list[int]) -> None:
    """The paused engine runs for ENGINE_RUN_S and is paused again, timed by a real-time (SCHED_FIFO) shell: this
    process was seen to wake from a 0.3 s sleep 4.5 s late while the engine ran (the 2 cores busy with the engine,
    its API server and the client's threads), and the engine then ran the whole queue down between two
    snapshots."""
    listed = " ".join(map(str, pids))
    subprocess.run(["chrt", "--fifo", str(REALTIME_PRIORITY), "sh", "-c",
                    f"kill -CONT {listed}; sleep {ENGINE_RUN_S}; kill -STOP {listed}"], check=True, timeout=30)


def requests_in_api_server(deployment: Deployment, metrics_url: str) -> int:
    """vLLM's `/load`: the API requests its server is handling now, asked on vLLM's port from the host."""
    url = metrics_url.removesuffix("/metrics") + LOAD_PATH
    text = deployment.host.ssh(f"curl -sS --fail --max-time 5 {shlex.quote(url)}").stdout
    return int(json.loads(text)["server_load"])


def snapshot(deployment: Deployment, url: str, at: float) -> Snapshot:
    """The gauges from `url`, scraped from the host as the CloudWatch agent scrapes them (each the largest over
    its label sets)."""
    text = deployment.host.ssh(f"curl -sS --fail --max-time 30 {shlex.quote(url)}").stdout
    values: dict[str, float] = {}
    for line in text.splitlines():
        name = re.split(r"[ {]", line, maxsplit=1)[0]
        if name in (WAITING, RUNNING):
            values[name] = max(values.get(name, 0.0), float(line.rsplit(" ", 1)[1]))
    types = {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE ")}
    return Snapshot(at, values.get(WAITING, 0.0), values.get(RUNNING, 0.0), types.get(WAITING))


def queued_burst(deployment: Deployment, url: str, client: openai.OpenAI) -> Burst:
    # vLLM's API server serves nothing while its engine streams steps faster than it reads them: on this 2-core
    # machine a /metrics scrape begun as the engine resumed was answered only after the last answer, reading 0
    # (the answers and vLLM's stats log lines came out together at that moment too). So the gauges are read as
    # snapshots: the engine runs ENGINE_RUN_S, is paused, and the now idle API server is scraped; the reading is
    # what the engine's last step recorded. The engine is also paused while the requests arrive, so that they
    # all reach its queue before it steps (a starved API server otherwise hands them over one by one).
    engine = engine_pids(deployment)
    served_before = served(deployment)
    with ThreadPoolExecutor(QUEUED_REQUESTS) as pool, engine_paused(engine):
        started = time.monotonic()
        futures = [pool.submit(chat, client, SERVED_NAME, QUEUED_TOKENS) for _ in range(QUEUED_REQUESTS)]
        wait_for(lambda: requests_in_api_server(deployment, url) >= QUEUED_REQUESTS, timeout=60,
                 interval=0.1, what=f"{QUEUED_REQUESTS} requests in vLLM's API server")
        arrived = time.monotonic() - started
        time.sleep(ARRIVAL_SETTLE_S)
        snapshots: list[Snapshot] = []
        while not all(f.done() for f in futures):
            assert time.monotonic() - started < QUEUE_DRAIN_TIMEOUT_S, [s.waiting for s in snapshots]
            run_engine_briefly(engine)
            snapshots.append(snapshot(deployment, url, time.monotonic() - started))
    answers = [future.result() for future in futures]
    assert all(a.ok for a in answers), [a.error for a in answers if not a.ok]
    return Burst(snapshots, arrived, sorted(a.ended - started for a in answers),
                 served(deployment) - served_before)

# --- the tests --------------------------------------------------------------------------------------------------

def test_the_scaling_policy_tracks_a_gauge_the_real_server_raises_when_requests_queue(fleet: Fleet) -> None:
    """The target tracking policy's metric (components/vllm_service.py) is the real server's gauge, published
    under the same name by the CloudWatch agent's rendered config, and it counts the queue."""
    replica = fleet.replicas["a"]
    url, job, inputs = scrape_job(replica)
    direct = openai.OpenAI(base_url=replica.endpoint_url, api_key=fleet.api_key, max_retries=0, timeout=300)
    burst = queued_burst(replica, url, direct)
    print(burst.summary())
    assert burst.served == QUEUED_REQUESTS  # the gauges below are this vLLM's, which answered them all
    assert {s.waiting_type for s in burst.snapshots} == {"gauge"}
    # Every request is in the engine's queue before its first step: the gauge reads QUEUED_REQUESTS - 1 with one
    # running, then falls by one per answer (~0.8 s each; ENGINE_RUN_S between snapshots), never rising. At least
    # QUEUED_REQUESTS - 2: one answer may end before the first snapshot on a faster machine.
    assert max(burst.waiting) >= QUEUED_REQUESTS - 2, burst.summary()
    assert all(s.running <= MAX_NUM_SEQS for s in burst.snapshots), burst.summary()
    first = burst.waiting.index(max(burst.waiting))
    assert all(a >= b for a, b in itertools.pairwise(burst.waiting[first:])), burst.summary()
    # The agent keeps it (Prometheus anchors the relabel regex) and publishes it under its own name: WAITING is
    # what components/vllm_service.py gives the policy as metric_name (tests/unit/components/test_vllm_fleet.py
    # checks the policy's arguments).
    assert re.fullmatch(job["metric_relabel_configs"][0]["regex"], WAITING)
    agent = json.loads(render_agent_config(inputs))
    declarations = agent["logs"]["metrics_collected"]["prometheus"]["emf_processor"]["metric_declaration"]
    assert any(re.fullmatch(selector, WAITING) for d in declarations for selector in d["metric_selectors"])


def test_a_joining_replica_gets_no_traffic_until_it_passes_the_health_checks(fleet: Fleet, times: StageTimes) -> None:
    """b joins while a serves: nothing reaches it while vLLM loads, it is in service interval x healthy
    threshold after it is ready, then takes its share; no client request fails meanwhile."""
    if "b" in fleet.replicas:  # run after the removal test's own join: leave first
        fleet.remove("b")
    check = fleet.lb.spec.target_group.health_check
    in_service(fleet, "a")
    # One request a second: the users of a meanwhile, without starving b's start on this 2-core machine.
    with SteadyClient(fleet, workers=1, pause_s=1.0).running() as steady:
        wait_for(lambda: steady.answered_after(0) >= 2, timeout=120, what="the first answers")
        joined = join(fleet, "b", staying="a")
        since = wall(joined.deployed)
        wait_for(lambda: len(api_requests_logged(joined.deployment, since)) >= 2, timeout=60,
                 what="requests reaching b")
    times.add("fleet_join_ready", joined.ready - joined.deployed)
    logged = api_requests_logged(joined.deployment, since)
    failed = [a for a in steady.answers if not a.ok]
    # Answered between the two readings of a's counter: surely counted (started after the first reading ended,
    # answered before the second began), or possibly (overlapping the readings at all).
    before, after = joined.staying_before, joined.staying_after
    surely = sum(1 for a in steady.answers if a.ok and a.started > before.end and a.ended < after.start)
    possibly = sum(1 for a in steady.answers if a.ok and a.ended > before.start and a.started < after.end)
    a_served = after.value - before.value
    print(f"join: {len(steady.answers)} answers; b loaded for {joined.ready - joined.deployed:.0f} s, meanwhile "
          f"a answered {a_served:.0f} (clients got {surely}-{possibly}); b UP {joined.up - joined.ready:.1f} s "
          f"after ready (interval x healthy threshold = {check.seconds_to_healthy} s); {len(logged)} requests "
          f"reached b since; max gap between answers {steady.max_gap():.2f} s; failed {len(failed)}")
    assert not failed, failed[:3]
    assert surely >= NOT_READY_REQUESTS
    # Every request answered while b loaded went to a, and b logged none before it was in service.
    assert surely <= a_served <= possibly
    assert logged and min(logged) >= wall(joined.up) - CHECK_SLACK_S
    # Ready -> in service: the first passing check comes within one interval, then threshold - 1 more.
    assert (check.healthy_threshold - 1) * check.interval_s - CHECK_SLACK_S <= joined.up - joined.ready
    assert joined.up - joined.ready <= check.seconds_to_healthy + CHECK_SLACK_S


def test_a_replica_removed_during_a_burst_loses_no_request(fleet: Fleet) -> None:
    in_service(fleet, "a")
    if "b" not in fleet.replicas:  # run on its own: b joins first
        join(fleet, "b", staying="a")
    lb, leaving = fleet.lb, fleet.replicas["b"]
    before = served(leaving)
    counted: dict[str, float] = {}

    def streams() -> list[Answer]:
        client = fleet.client()
        return [stream(client, SERVED_NAME, STREAM_TOKENS) for _ in range(STREAMS_PER_WORKER)]

    def count_served(deployment: Deployment) -> None:
        counted["served"] = served(deployment) - before

    with SteadyClient(fleet, tokens=ANSWER_TOKENS).running() as steady, ThreadPoolExecutor(BURST_WORKERS) as pool:
        burst_futures = [pool.submit(streams) for _ in range(BURST_WORKERS)]
        # b running one stream and queueing another (max-num-seqs 1): the drain has work to wait for.
        wait_for(lambda: lb.in_flight("b") >= 2, timeout=60, interval=0.05, what="requests in flight on b")
        removal_started = time.monotonic()
        removal = fleet.remove("b", before_stop=count_served)
        removed = time.monotonic()
        burst = [answer for future in burst_futures for answer in future.result()]
        wait_for(lambda: steady.answered_after(removed) >= 3, timeout=120, what="answers after the removal")

    failed = [a for a in burst + steady.answers if not a.ok]
    drained = removal.drained
    stops = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in removal.stop_seconds.items())
    print(f"removal: {len(burst)} streams of {STREAM_TOKENS} tokens, {sum(a.started > removal_started for a in burst)} "
          f"started after the drain began; b had {drained.in_flight_at_start} in flight when it began and answered "
          f"{counted['served']:.0f} before its stop; drained in {drained.seconds:.1f} s (delay {DRAIN_DELAY_S} s), "
          f"stopped {stops}; steady: {len(steady.answers)} answers, max gap between answers "
          f"{steady.max_gap():.2f} s; max gap between stream chunks {max(a.max_chunk_gap for a in burst):.2f} s; "
          f"failed {len(failed)}")
    assert not failed, failed[:3]
    assert all(a.tokens == STREAM_TOKENS and a.finish_reason == "length" for a in burst)
    # b had requests in flight when it left, and the drain ended because they finished, not by the delay.
    assert drained.in_flight_at_start >= 2 and drained.left_in_flight == 0
    assert drained.seconds < DRAIN_DELAY_S
    assert counted["served"] >= drained.in_flight_at_start
    assert any(a.started > removal_started for a in burst), "the burst was over before the removal"
    assert steady.answered_after(removed) >= 3
