"""Replicas of the endpoint behind a real load balancer (tests/real/harness/alb_haproxy.py), as the fleet's
real-parts test and bench/fleet_rollout.py drive them: clients through the load balancer with what each saw,
what ECS does to a task that leaves the service (deregister, then stop its containers), and what a replica's
own counters say (vLLM's /metrics where the CloudWatch agent scrapes it)."""

from __future__ import annotations

import contextlib
import itertools
import json
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import yaml

from vllm_endpoint.infra.catalog.names import FORWARDED_PREFIX, METRICS_NAMESPACE, PROJECT
from vllm_endpoint.infra.plan.deployment import build_plan
from vllm_endpoint.infra.render.cloudwatch_agent import AgentInputs, render_scrape_config
from vllm_endpoint.infra.render.ecs import plan_ecs_task, task_secret_names
from vllm_endpoint.infra.render.ecs_host import EcsHostSettings, ecs_host_settings
from vllm_endpoint.infra.settings.models import StackConfig, load_stack_config

from .alb_haproxy import Drained, Haproxy
from .common import REPO_ROOT, wait_for
from .deployer import DEFAULT_STACK, Deployment
from .testhost import TestHost


@dataclass
class Answer:
    started: float  # monotonic
    ended: float
    error: str = ""  # empty: answered
    tokens: int = 0
    finish_reason: str | None = None
    max_chunk_gap: float = 0.0  # streams: the longest wait between two chunks

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass
class Fleet:
    lb: Haproxy
    hosts: dict[str, TestHost]
    configs: dict[str, StackConfig]
    replicas: dict[str, Deployment]  # running and registered
    api_key: str
    model: str  # the served model name the clients ask for

    def client(self) -> openai.OpenAI:
        # No retries: a failed request must show as one.
        return openai.OpenAI(base_url=self.lb.url + FORWARDED_PREFIX.rstrip("/"), api_key=self.api_key,
                             max_retries=0, timeout=300)

    def remove(self, name: str, before_stop: Callable[[Deployment], None] | None = None) -> Removed:
        """What ECS does to a task leaving the service: deregister (drain), then stop its containers."""
        drained = self.lb.deregister(name)
        deployment = self.replicas.pop(name)
        if before_stop is not None:
            before_stop(deployment)
        return Removed(drained, stop_replica(deployment))


@dataclass(frozen=True)
class Removed:
    drained: Drained
    stop_seconds: dict[str, float]  # by container, in the order stopped


def stop_replica(deployment: Deployment) -> dict[str, float]:
    """ECS stops a task's containers in reverse dependency order, the proxy first, then vLLM; `docker stop` uses
    each container's own stop timeout (its spec's --stop-timeout): SIGTERM, then SIGKILL. Returns the seconds
    each took to stop."""
    took = {}
    for spec in reversed(deployment.specs):
        start = time.monotonic()
        # On a loaded machine the engine may answer that the killed container sent no exit event in its 10 s;
        # it is stopped when it no longer runs.
        deployment.host.docker("stop", spec.name, timeout=300, check=False)
        wait_for(lambda name=spec.name: not running(deployment.host, name), timeout=120,
                 what=f"{spec.name} stopped")
        took[spec.name] = time.monotonic() - start
    return took


def running(host: TestHost, name: str) -> bool:
    return host.docker("inspect", "--format", "{{.State.Running}}", name).stdout.strip() == "true"


def wall(monotonic: float) -> float:
    return time.time() - (time.monotonic() - monotonic)


# --- reading the replicas themselves ---------------------------------------------------------------------

def scrape_job(deployment: Deployment) -> tuple[str, dict[str, Any], AgentInputs]:
    """The URL the CloudWatch agent scrapes on this replica (the rendered scrape config's target: vLLM on the
    endpoint's private network, from the host), that job, and the agent's inputs."""
    networks = json.loads(deployment.host.docker("inspect", "--format", "{{json .NetworkSettings.Networks}}",
                                                 deployment.plan.vllm.name).stdout)
    inputs = AgentInputs(stack=DEFAULT_STACK, namespace=METRICS_NAMESPACE,
                         vllm_address=networks[deployment.plan.network]["IPAddress"])
    job = yaml.safe_load(render_scrape_config(inputs))["scrape_configs"][0]
    (target,) = job["static_configs"][0]["targets"]
    return f"{job['scheme']}://{target}{job['metrics_path']}", job, inputs


def served(deployment: Deployment) -> float:
    """Requests vLLM answered since it started (vllm:request_success_total, summed over its labels)."""
    url, _, _ = scrape_job(deployment)
    text = deployment.host.ssh(f"curl -sS --fail --max-time 10 {shlex.quote(url)}").stdout
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total"))


@dataclass(frozen=True)
class Reading:
    """A replica's served count, and when (monotonic) the reading began and ended."""

    value: float
    start: float
    end: float

    @classmethod
    def of(cls, deployment: Deployment) -> Reading:
        start = time.monotonic()
        value = served(deployment)
        return cls(value, start, time.monotonic())


# --- clients ---------------------------------------------------------------------------------------------


def chat(client: openai.OpenAI, model: str, tokens: int) -> Answer:
    started = time.monotonic()
    try:
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=tokens,
            temperature=0, extra_body={"ignore_eos": True})
    except openai.OpenAIError as exc:
        return Answer(started, time.monotonic(), error=repr(exc))
    usage = reply.usage.completion_tokens if reply.usage else 0
    return Answer(started, time.monotonic(), tokens=usage, finish_reason=reply.choices[0].finish_reason)


def stream(client: openai.OpenAI, model: str, tokens: int) -> Answer:
    """A streamed chat completion, read to its end (usage in the last chunk: the whole answer arrived)."""
    started = last = time.monotonic()
    answer = Answer(started, started)
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "tell me a story"}], max_tokens=tokens,
            temperature=0, stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        if raw.status_code != 200:
            answer.error = f"HTTP {raw.status_code}"
        for chunk in raw.parse():
            now = time.monotonic()
            answer.max_chunk_gap, last = max(answer.max_chunk_gap, now - last), now
            if chunk.choices and chunk.choices[0].finish_reason:
                answer.finish_reason = chunk.choices[0].finish_reason
            if chunk.usage is not None:
                answer.tokens = chunk.usage.completion_tokens
    except openai.OpenAIError as exc:
        answer.error = repr(exc)
    answer.ended = time.monotonic()
    return answer


@dataclass
class SteadyClient:
    """Workers sending short chat completions through the load balancer one after another: the service as its
    users see it while a replica leaves or joins."""

    fleet: Fleet
    workers: int = 2
    tokens: int = 8  # short answers
    pause_s: float = 0.2
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _work(self) -> None:
        client = self.fleet.client()
        while not self._stop.is_set():
            self.answers.append(chat(client, self.fleet.model, self.tokens))
            self._stop.wait(self.pause_s)

    @contextlib.contextmanager
    def running(self) -> Iterator[SteadyClient]:
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(self.workers)]
        for thread in self._threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(timeout=330)

    def answered_after(self, moment: float) -> int:
        return sum(1 for a in list(self.answers) if a.ok and a.started > moment)

    def max_gap(self) -> float:
        """The longest time between two successive answers."""
        ends = sorted(a.ended for a in self.answers if a.ok)
        return max((b - a for a, b in itertools.pairwise(ends)), default=0.0)


# What Pulumi.fleet.yaml's header asks the user to set before a first deploy.
USER_SET = {"apiAllowedCidrs": "93.184.216.0/24"}


def fleet_host_settings() -> EcsHostSettings:
    """The shipped fleet stack's host settings, as components/fleet.py renders the launch template's user data
    (structured settings arrive as JSON, as Pulumi passes them)."""
    values = yaml.safe_load((REPO_ROOT / "Pulumi.fleet.yaml").read_text())["config"]
    prefix = f"{PROJECT}:"
    raw = {k.removeprefix(prefix): v if isinstance(v, str) else json.dumps(v)
           for k, v in values.items() if k.startswith(prefix)}
    plan = build_plan(load_stack_config(raw | USER_SET), hub_fetcher=None)
    arns = {env: f"arn:aws:ssm:us-east-1:123456789012:parameter/test/{env.lower()}" for env in task_secret_names(plan)}
    return ecs_host_settings(plan, plan_ecs_task(plan, secret_arns=arns), "test-cluster")
