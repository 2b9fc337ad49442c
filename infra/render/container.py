"""Each container's one description (infra/plan/spec.py), rendered two ways.

`ContainerSpec` is the only source of what runs: `to_docker_run` renders it as the `docker run`
command an operator can read or paste (the `docker_run` stack output), `to_container_args` as the
pulumi-docker `Container` arguments, and `ContainerSpec.args` of the vLLM container is the vLLM argv.
tests/unit/test_spec.py parses the `docker run` text back and proves the renderings agree field by field.

Secret values never enter a spec: a secret environment variable is listed by name only. The
pulumi-docker rendering takes the values as (secret) Outputs; the `docker run` rendering passes the
name alone (`-e VLLM_API_KEY`), so Docker copies it from the operator's shell and it never appears on
a command line.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from vllm_endpoint.infra.plan.deployment import DeploymentPlan
from vllm_endpoint.infra.plan.spec import ContainerSpec, Owner, owned_by, with_awslogs
from vllm_endpoint.infra.render.proxy import proxy_spec

# ----------------------------------------------------------------------------------------------
# Rendering 1: `docker run`.

def _duration(seconds: int) -> str:
    return f"{seconds}s"


def docker_run_argv(spec: ContainerSpec) -> list[str]:
    argv = ["docker", "run", "--detach", "--name", spec.name]
    if spec.restart != "no":
        argv += ["--restart", spec.restart]
    if spec.runtime:
        argv += ["--runtime", spec.runtime]
    if spec.gpus:
        argv += ["--gpus", spec.gpus]
    if spec.ipc_mode:
        argv += ["--ipc", spec.ipc_mode]
    if spec.shm_size_mb is not None:
        argv += ["--shm-size", f"{spec.shm_size_mb}m"]
    if spec.user:
        argv += ["--user", spec.user]
    if spec.init:
        argv.append("--init")
    if spec.read_only_root:
        argv.append("--read-only")
    for path, options in spec.tmpfs:
        argv += ["--tmpfs", f"{path}:{options}" if options else path]
    for cap in spec.cap_drop:
        argv += ["--cap-drop", cap]
    for cap in spec.cap_add:
        argv += ["--cap-add", cap]
    for opt in spec.security_opts:
        argv += ["--security-opt", opt]
    for limit in spec.ulimits:
        argv += ["--ulimit", f"{limit.name}={limit.soft}:{limit.hard}"]
    if spec.network:
        argv += ["--network", spec.network]
        for alias in spec.network_aliases:
            argv += ["--network-alias", alias]
    for port in spec.ports:
        host = f"{port.host_ip}:{port.host_port}" if port.host_ip else str(port.host_port)
        argv += ["--publish", f"{host}:{port.container_port}"]
    for mount in spec.mounts:
        text = f"type=bind,source={mount.source},target={mount.target}"
        argv += ["--mount", text + (",readonly" if mount.read_only else "")]
    for key, value in spec.env:
        argv += ["--env", f"{key}={value}"]
    for key in spec.secret_env:
        argv += ["--env", key]
    for key, value in spec.labels:
        argv += ["--label", f"{key}={value}"]
    if spec.health:
        h = spec.health
        argv += [
            "--health-cmd", h.shell_command,
            "--health-interval", _duration(h.interval_s),
            "--health-timeout", _duration(h.timeout_s),
            "--health-retries", str(h.retries),
            "--health-start-period", _duration(h.start_period_s),
        ]
    argv += ["--log-driver", spec.log_driver]
    for key, value in spec.log_opts:
        argv += ["--log-opt", f"{key}={value}"]
    if spec.stop_timeout_s is not None:
        argv += ["--stop-timeout", str(spec.stop_timeout_s)]
    argv.append(spec.image)
    argv += list(spec.args)
    return argv


def to_docker_run(spec: ContainerSpec) -> str:
    """The `docker run` command, one option per line, ready to paste into a shell."""
    argv = docker_run_argv(spec)
    lines: list[str] = [shlex.join(argv[:2])]
    i = 2
    while i < len(argv):
        token = argv[i]
        if token.startswith("--") and i + 1 < len(argv) and _takes_value(token):
            lines.append(shlex.join(argv[i:i + 2]))
            i += 2
        elif token.startswith("--"):
            lines.append(shlex.quote(token))
            i += 1
        else:
            break
    lines.append(shlex.join(argv[i:]))
    return " \\\n  ".join(lines)


_FLAGS_WITHOUT_VALUE = {"--detach", "--init", "--read-only"}


def _takes_value(flag: str) -> bool:
    return flag not in _FLAGS_WITHOUT_VALUE


def docker_run_script(network: str | None, specs: Sequence[ContainerSpec], secret_env: Sequence[str]) -> str:
    """Everything the component runs, as the shell commands that would do the same by hand."""
    parts = ["# Equivalent of what this stack runs; export " + " ".join(secret_env) + " first."
             if secret_env else "# Equivalent of what this stack runs."]
    if network:
        parts.append(shlex.join(["docker", "network", "create", "--driver", "bridge", network]))
    parts += [to_docker_run(spec) for spec in specs]
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------
# Rendering 2: pulumi-docker `Container` arguments.

def to_container_args(spec: ContainerSpec, image: Any, secret_env_values: Mapping[str, Any],
                      network_id: Any = None) -> dict[str, Any]:
    """Keyword arguments for `pulumi_docker.Container`.

    `image` is what the container should reference (the RemoteImage's image id, so a re-pulled tag
    re-creates the container); `secret_env_values` maps each `spec.secret_env` name to its secret
    Output; `network_id` is the docker Network resource's name/id Output when `spec.network` is set.
    Returned values are plain Python data and Outputs, so the mapping is testable without an engine.
    """
    missing = set(spec.secret_env) - set(secret_env_values)
    if missing:
        raise ValueError(f"no value for secret environment variables {sorted(missing)}")
    envs: list[Any] = [f"{key}={value}" for key, value in spec.env]
    envs += [_env_pair(key, secret_env_values[key]) for key in spec.secret_env]
    args: dict[str, Any] = {
        "name": spec.name,
        "image": image,
        "command": list(spec.args),
        "envs": envs,
        "restart": spec.restart,
        "log_driver": spec.log_driver,
        "log_opts": dict(spec.log_opts),
        "ports": [
            {"internal": p.container_port, "external": p.host_port, **({"ip": p.host_ip} if p.host_ip else {})}
            for p in spec.ports
        ],
        "mounts": [
            {"type": "bind", "source": m.source, "target": m.target, "read_only": m.read_only}
            for m in spec.mounts
        ],
        "labels": [{"label": k, "value": v} for k, v in spec.labels],
        # The container is the product: keep it running, and do not remove volumes it never had.
        "must_run": True,
    }
    args |= _optional_args(spec, network_id)
    if spec.stop_timeout_s is not None:
        args["stop_timeout"] = spec.stop_timeout_s
        args["destroy_grace_seconds"] = spec.stop_timeout_s
    return args


def _optional_args(spec: ContainerSpec, network_id: Any) -> dict[str, Any]:
    """The pulumi-docker arguments a spec sets only when it has them (the provider's defaults otherwise)."""
    args: dict[str, Any] = {}
    if spec.gpus:
        args["gpus"] = spec.gpus
    if spec.runtime:
        args["runtime"] = spec.runtime
    if spec.ipc_mode:
        args["ipc_mode"] = spec.ipc_mode
    if spec.shm_size_mb is not None:
        args["shm_size"] = spec.shm_size_mb
    if spec.user:
        args["user"] = spec.user
    if spec.init:
        args["init"] = True
    if spec.read_only_root:
        args["read_only"] = True
    if spec.tmpfs:
        args["tmpfs"] = dict(spec.tmpfs)
    if spec.cap_drop or spec.cap_add:
        args["capabilities"] = {"drops": list(spec.cap_drop), "adds": list(spec.cap_add)}
    if spec.security_opts:
        args["security_opts"] = list(spec.security_opts)
    if spec.ulimits:
        args["ulimits"] = [{"name": u.name, "soft": u.soft, "hard": u.hard} for u in spec.ulimits]
    if spec.network:
        args["networks_advanced"] = [
            {"name": network_id if network_id is not None else spec.network, "aliases": list(spec.network_aliases)}
        ]
    if spec.health:
        h = spec.health
        args["healthcheck"] = {
            "tests": ["CMD-SHELL", h.shell_command],
            "interval": _duration(h.interval_s),
            "timeout": _duration(h.timeout_s),
            "retries": h.retries,
            "start_period": _duration(h.start_period_s),
        }
    return args


def _env_pair(key: str, value: Any) -> Any:
    if hasattr(value, "apply"):
        return value.apply(lambda v: f"{key}={v}")
    return f"{key}={value}"


def plan_docker_run(plan: DeploymentPlan, owner: Owner | None = None,
                    proxy_awslogs: tuple[str, str] | None = None) -> str:
    """The `docker_run` stack output: every container of the plan, as an operator would start them; with
    `owner`, labelled with its project, stack and endpoint as the deployed containers are; with
    `proxy_awslogs` (log group, region), the proxy's output to CloudWatch Logs as deployed with metrics on."""
    specs = [plan.vllm, proxy_spec(plan)]
    if owner is not None:
        specs = [owned_by(spec, owner) for spec in specs]
    if proxy_awslogs is not None:
        specs[1] = with_awslogs(specs[1], *proxy_awslogs)
    return docker_run_script(plan.network, specs, plan.secret_env)
