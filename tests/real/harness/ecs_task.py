"""Runs a rendered ECS task (infra/render/ecs.py `EcsTask`) on a TestHost the way the ECS agent runs an awsvpc
task, so that a task definition is proven on real Docker before it reaches AWS.

What the agent does and this does the same way: a "pause" container holds the task's network namespace (on
ECS it gets the task's network interface; here it sits on Docker's default bridge, which has no DNS, and
publishes the ports the task's address would take); each container joins that namespace
(`--network container:PAUSE`), started from `ecs_to_docker_run` in dependsOn order, a container with a
HEALTHY dependency only once Docker reports that container healthy; secrets are passed by name (`--env NAME`)
with their values in the docker client's environment, never on a command line. What the agent adds of its own
(its labels, restart handling, stopping the task when an essential container exits) is not emulated.
Container names are the task's name and the definition's (the agent names them ecs-FAMILY-REVISION-NAME-...).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vllm_endpoint.infra.render.ecs import HEALTHY, EcsTask, ecs_to_docker_run
from vllm_endpoint.infra.render.model_sync import SUCCESS

from .common import run, wait_for
from .testhost import TestHost

# ContainerDependency conditions this runner waits for (START: the container was started, nothing more;
# SUCCESS: it exited 0).
_CONDITIONS = (HEALTHY, "START", SUCCESS)


@dataclass(frozen=True)
class RunningTask:
    host: TestHost
    task: EcsTask
    pause: str  # the container holding the task's network namespace
    containers: dict[str, str]  # definition name -> container name on the host

    def logs(self, name: str) -> str:
        logged = self.host.docker("logs", self.containers[name], check=False)
        return logged.stdout + logged.stderr


def run_task(host: TestHost, task: EcsTask, *, name: str, pause_image: str, secrets: Mapping[str, str],
             publish: Mapping[int, int], health_timeout_s: float = 900) -> RunningTask:
    """Starts `task` (awsvpc) on `host`. `secrets` holds each secret's value by its environment name (what the
    agent fetches from SSM); `publish` maps host ports to the task's container ports."""
    if task.network_mode != "awsvpc":
        raise ValueError(f"run_task emulates awsvpc tasks, not {task.network_mode}")
    pause = f"{name}-pause"
    ports = [f"--publish={host_port}:{port}" for host_port, port in publish.items()]
    host.docker("run", "--detach", "--name", pause, "--network", "bridge", *ports, pause_image, "sleep", "infinity")
    containers = {d["name"]: f"{name}-{d['name']}" for d in task.container_definitions}
    running = RunningTask(host, task, pause, containers)
    for definition in task.container_definitions:  # ecs_task lists a container after those it depends on
        for dependency in definition.get("dependsOn", ()):
            _wait_for(running, dependency["containerName"], dependency["condition"], health_timeout_s)
        _start(running, definition, secrets)
    return running


def _start(running: RunningTask, definition: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
    as_named = {**definition, "name": running.containers[definition["name"]]}
    argv = ecs_to_docker_run(as_named, running.task.volumes, network_mode="awsvpc", ipc_mode=running.task.ipc_mode,
                             task_network=f"container:{running.pause}")
    env = running.host.docker_env()
    env.update({s["name"]: secrets[s["name"]] for s in definition.get("secrets", ())})
    docker = shutil.which("docker")
    assert docker is not None and argv[0] == "docker"
    run([docker, *argv[1:]], env=env, timeout=300)


def _wait_for(running: RunningTask, name: str, condition: str, timeout_s: float) -> None:
    if condition not in _CONDITIONS:
        raise ValueError(f"dependsOn condition {condition}: run_task waits for {_CONDITIONS} only")
    if condition == SUCCESS:
        _wait_exit_0(running, name, timeout_s)
        return
    if condition != HEALTHY:
        return  # started already: containers start in order
    deadline = time.monotonic() + timeout_s
    while True:
        state = json.loads(running.host.docker("inspect", "--format", "{{json .State}}",
                                               running.containers[name]).stdout)
        if state.get("Health", {}).get("Status") == "healthy":
            return
        if not state["Running"] or time.monotonic() > deadline:
            raise RuntimeError(f"{name} is not {HEALTHY} (state {state.get('Status')}, health "
                               f"{state.get('Health', {}).get('Status')}); its log ends:\n{running.logs(name)[-4000:]}")
        time.sleep(2)


def _wait_exit_0(running: RunningTask, name: str, timeout_s: float) -> None:
    """As the agent resolves a SUCCESS dependency: the container exited with status 0. Any other status is
    terminal (the agent stops the dependent container, and with it the task)."""
    wait_for(lambda: _exit_code(running, name) is not None, timeout=timeout_s, interval=0.5,
             what=f"{name} to exit")
    status = _exit_code(running, name)
    if status != 0:
        raise RuntimeError(f"{name} exited with {status}, so the containers depending on its {SUCCESS} do not "
                           f"start; its log ends:\n{running.logs(name)[-4000:]}")


def _exit_code(running: RunningTask, name: str) -> int | None:
    state = json.loads(running.host.docker("inspect", "--format", "{{json .State}}", running.containers[name]).stdout)
    return None if state["Running"] or state["Status"] == "created" else int(state["ExitCode"])
