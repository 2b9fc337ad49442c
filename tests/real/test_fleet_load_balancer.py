"""The fleet's load balancer on real parts: two replicas of the endpoint (vLLM + the nginx proxy, from the same
container specs as the ECS task), each on its own test host, behind a real HAProxy configured from the same
`load_balancer_spec()` as the ALB's target group and listener (tests/real/harness/alb_haproxy.py maps each
setting and says what differs). The target port is the endpoint's API port on each host, as one target group
port serves every task.

What it proves, through the official openai client at the load balancer:
- the metric the scaling policy tracks is a gauge on the real server, kept by name by the CloudWatch agent's
  rendered config, and it rises when requests queue (max-num-seqs 1; vLLM's engine is paused while they arrive,
  so that they queue together however busy the machine is);
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
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import threading
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
from vllm_endpoint.infra.catalog.names import FORWARDED_PREFIX, HEALTH_PATH, VLLM_CONTAINER_PORT
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
# Long answers (the model's whole length less the prompt), so that the queue outlasts several samples even when
# the tiny model answers fast; at most QUEUE_SAMPLES samples (about 0.2 s each) in all.
QUEUED_REQUESTS, QUEUED_TOKENS, QUEUE_SAMPLES = 8, 448, 600
# vLLM's port in its container (the proxy's upstream), as /proc/net/tcp spells it, and that table's ESTABLISHED.
VLLM_PORT_HEX, TCP_ESTABLISHED = f"{VLLM_CONTAINER_PORT:04X}", "01"
# Once every request has its connection to vLLM's API server: time for the server to read, tokenize and hand
# them to the (paused) engine.
ARRIVAL_SETTLE_S = 2.0
NOT_READY_REQUESTS = 8  # at least this many answered while the joining replica loads
# Polling the stats and /health every 0.1-0.5 s, and a check's own duration.
CHECK_SLACK_S = 1.5
SAMPLE_END = "sample-end"  # the queue sampler's line after each sample
START_TIMEOUT_S = 600  # a vLLM start on a busy 2-core machine


def replica_config(host: TestHost, cache_dir: Path, model: Path, core: int) -> StackConfig:
    # Each replica of a fleet has its instance to itself. Here two vLLM CPU engines share 2 cores, and each
    # binds its worker to core 0 by default (vLLM reserves the other): the second would load while the first's
    # busy worker holds that core. So each gets its own core, with the product's own extraEnv setting (what a
    # user of a CPU host would set).
    return existing_host_config(host, cache_dir, modelPath=str(model), servedModelName=SERVED_NAME,
                                maxModelLen="512", apiPort=str(API_PORT), maxNumSeqs=str(MAX_NUM_SEQS),
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


@contextlib.contextmanager
def queue_sampler(host: TestHost, url: str) -> Iterator[list[str]]:
    """Samples the queue gauge on `host` (where the agent scrapes it) until the block ends; yields the list the
    gauge's lines are collected into. The block starts once the first sample is in, so the sampler sees the
    requests the block sends from their start."""
    gauge = shlex.quote(f"^(# TYPE )?({WAITING}|{RUNNING})[ {{]")
    # POSIX sh (the SSH user's shell). The shell's own `echo` after each sample ends the loop once the test has
    # closed the connection (SIGPIPE), so no sampler outlives the block.
    script = (f"i=0; while [ $i -lt {QUEUE_SAMPLES} ]; do i=$((i + 1)); "
              f"curl -sS --max-time 5 {shlex.quote(url)} | grep -E {gauge}; echo {SAMPLE_END}; sleep 0.1; done")
    sampler = subprocess.Popen(host.ssh_argv(script), stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    assert sampler.stdout is not None

    def read_rest() -> None:
        for line in sampler.stdout or ():
            lines.append(line.strip())

    reader = threading.Thread(target=read_rest, daemon=True)
    try:
        first = sampler.stdout.readline()
        assert first, "the queue sampler ended before its first sample"
        lines.append(first.strip())
        reader.start()
        yield lines
        # Two more samples after the last answer, then the sampler is stopped.
        seen = lines.count(SAMPLE_END)
        wait_for(lambda: lines.count(SAMPLE_END) >= seen + 2 or sampler.poll() is not None, timeout=30,
                 what="the queue sampler's last samples")
    finally:
        sampler.kill()
        sampler.wait(timeout=10)
        if reader.is_alive():
            reader.join(timeout=10)


@pytest.fixture(scope="module")
def fleet(test_host: TestHost, vllm_image: str, tiny_model: Path, times: StageTimes,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    problem = prerequisite_problem(("haproxy", "curl"))
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
class Burst:
    """QUEUED_REQUESTS concurrent requests at max-num-seqs 1, and the replica's gauges sampled meanwhile."""

    waiting: list[float]
    running: list[float]
    gauge_type: str | None  # WAITING's `# TYPE`
    answered_in: float
    arrived_in: float  # seconds until every request had its connection to vLLM (the engine paused)
    ends: list[float]  # each answer's end, seconds after the burst began

    def summary(self) -> str:
        return (f"{WAITING}: {len(self.waiting)} samples while {QUEUED_REQUESTS} concurrent requests of "
                f"{QUEUED_TOKENS} tokens (at vLLM in {self.arrived_in:.1f} s, engine paused until "
                f"{ARRIVAL_SETTLE_S:.0f} s later) were answered in {self.answered_in:.1f} s at max-num-seqs "
                f"{MAX_NUM_SEQS}, "
                f"max {max(self.waiting, default=0):.0f}; {RUNNING}: max {max(self.running, default=0):.0f}; "
                f"answers ended at {', '.join(f'{e:.1f}' for e in self.ends)} s")


def engine_core_pid(deployment: Deployment) -> int:
    """The pid of vLLM's EngineCore process (its title, e.g. VLLM::EngineCore), as the machine sees it: the test
    hosts are network namespaces sharing the machine's PID namespace, so `docker top` prints pids os.kill can use
    (the tests run as root)."""
    top = deployment.host.docker("top", deployment.plan.vllm.name, "-eo", "pid,args").stdout
    pids = [int(line.split()[0]) for line in top.splitlines()[1:] if "EngineCore" in line]
    assert len(pids) == 1, f"expected one EngineCore process in {deployment.plan.vllm.name}:\n{top}"
    return pids[0]


@contextlib.contextmanager
def engine_paused(pid: int) -> Iterator[None]:
    """The engine stopped (SIGSTOP) for the block, and always continued after it."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def container_address(deployment: Deployment, container: str) -> str:
    """`container`'s address on the endpoint's private network."""
    networks = json.loads(deployment.host.docker("inspect", "--format", "{{json .NetworkSettings.Networks}}",
                                                 container).stdout)
    return str(networks[deployment.plan.network]["IPAddress"])


def connections_to_vllm(deployment: Deployment, peer: str) -> int:
    """Established connections from `peer` (an IPv4 address) to vLLM's API server whose received bytes the server
    has all read, from /proc/net/tcp{,6} in vLLM's container (its network namespace). The proxy's idle pooled
    connections count too, at most one per nginx worker."""
    tables = deployment.host.docker("exec", deployment.plan.vllm.name, "cat", "/proc/net/tcp",
                                    "/proc/net/tcp6").stdout
    # Addresses are hex in host (little-endian) byte order; an IPv4-mapped IPv6 address ends with the IPv4 word.
    word = "".join(f"{int(part):02X}" for part in reversed(peer.split(".")))
    count = 0
    for line in tables.splitlines():
        fields = line.split()
        if len(fields) < 5 or ":" not in fields[1] or ":" not in fields[2]:
            continue  # the tables' headers
        local_port, remote, state, queues = fields[1].rsplit(":", 1)[1], fields[2], fields[3], fields[4]
        count += (local_port == VLLM_PORT_HEX and state == TCP_ESTABLISHED and remote.split(":")[0].endswith(word)
                  and int(queues.split(":")[1], 16) == 0)
    return count


def queued_burst(deployment: Deployment, url: str, client: openai.OpenAI) -> Burst:
    # On this 2-core machine vLLM's worker has core 0 and the EngineCore's busy loop shares the other core with
    # the API server: a starved API server hands the requests over late and one by one, and the tiny model can
    # finish each (~0.8 s) before the next arrives, so none waits (CI runs saw the gauge at 0 in every sample).
    # So the engine is paused while the requests arrive: the API server has a core to itself and all of them
    # reach the engine's queue before it steps again; it then runs one and the others wait (the gauge reads 7).
    engine = engine_core_pid(deployment)
    proxy = container_address(deployment, deployment.plan.names.proxy_container)
    with queue_sampler(deployment.host, url) as lines, ThreadPoolExecutor(QUEUED_REQUESTS) as pool:
        started = time.monotonic()
        with engine_paused(engine):
            futures = [pool.submit(chat, client, SERVED_NAME, QUEUED_TOKENS) for _ in range(QUEUED_REQUESTS)]
            wait_for(lambda: connections_to_vllm(deployment, proxy) >= QUEUED_REQUESTS, timeout=60,
                     interval=0.1, what=f"{QUEUED_REQUESTS} requests at vLLM's API server")
            arrived = time.monotonic() - started
            time.sleep(ARRIVAL_SETTLE_S)
        answers = [future.result() for future in futures]
        answered_in = time.monotonic() - started
    assert all(a.ok for a in answers), [a.error for a in answers if not a.ok]
    types = {line.split()[2]: line.split()[3] for line in lines if line.startswith("# TYPE ")}

    def values(metric: str) -> list[float]:
        return [float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(metric + "{")
                or line.startswith(metric + " ")]

    return Burst(values(WAITING), values(RUNNING), types.get(WAITING), answered_in, arrived,
                 sorted(a.ended - started for a in answers))

# --- the tests --------------------------------------------------------------------------------------------------

def test_the_scaling_policy_tracks_a_gauge_the_real_server_raises_when_requests_queue(fleet: Fleet) -> None:
    """The target tracking policy's metric (components/vllm_service.py) is the real server's gauge, published
    under the same name by the CloudWatch agent's rendered config, and it counts the queue."""
    replica = fleet.replicas["a"]
    url, job, inputs = scrape_job(replica)
    direct = openai.OpenAI(base_url=replica.endpoint_url, api_key=fleet.api_key, max_retries=0, timeout=300)
    burst = queued_burst(replica, url, direct)
    print(burst.summary())
    if not any(burst.running) and not any(burst.waiting):
        # One CI run (of 830655a) saw both gauges at 0 in all 27 samples while vLLM answered the 8 requests one
        # by one: not a queue that failed to form (running would read 1) but stats not recorded, or not shown,
        # in that burst; why is not known yet (stop 22's note). Only that case is tried once more.
        burst = queued_burst(replica, url, direct)
        print(f"again: {burst.summary()}")
    assert burst.gauge_type == "gauge"
    # All the requests queue at once (queued_burst pauses the engine while they arrive): the gauge reads
    # QUEUED_REQUESTS - 1 after the engine's first step and falls by one per answer (~0.8 s each), while the
    # samples come every 0.2-1.5 s. At least 2 is a queue no single late request could make (one waiting behind
    # one running), with room for a slow sample.
    assert max(burst.waiting, default=0) >= 2
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
