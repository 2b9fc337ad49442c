"""Each container's one description (infra/plan/spec.py), rendered a third way: an Amazon ECS task definition.

`ecs_task` turns the vLLM spec (and the proxy's, when the task runs it as a sidecar) into the container
definitions and task-level fields of `aws.ecs.TaskDefinition` (EC2 launch type, a GPU capacity provider);
`plan_ecs_task` does it for a plan, and `task_secret_names` / `task_secret_values` say which SSM parameters the
task reads and what each must hold.
`ecs_to_docker_run` renders such a container definition back to the `docker run` argv the ECS agent's
Docker calls amount to, so that a definition can be proven on a test host the way `docker_run_argv` is.

Keys are the ECS API's own (RegisterTaskDefinition, ContainerDefinition, LinuxParameters, HealthCheck;
docs.aws.amazon.com/AmazonECS/latest/APIReference/, read 2026-12-02). The mapping:

spec field -> ECS key (note):
- name, image -> name, image
- args -> command (replaces CMD; the image's ENTRYPOINT stays, as with `docker run IMAGE ARGS`)
  (the awsvpc task's proxy has an entryPoint of its own: PROXY)
- env -> environment (a name given twice keeps its last value, as with `docker run`)
- secret_env -> secrets [{name, valueFrom}] (an SSM parameter or Secrets Manager ARN per name; never a value)
- gpus="all", or runtime nvidia + NVIDIA_VISIBLE_DEVICES -> resourceRequirements [{type GPU, value: count}] (GPU)
- runtime -> nothing but the GPU request: any runtime other than nvidia is refused
- ipc_mode -> the task's ipcMode "host"; "private" is the Docker daemon's default, so ECS states nothing
- shm_size_mb -> linuxParameters.sharedMemorySize (MiB)
- tmpfs -> linuxParameters.tmpfs [{containerPath, size (MiB, required), mountOptions}]
- ports -> portMappings [{containerPort, hostPort, protocol}] (host_ip refused: ECS binds every address)
- mounts -> mountPoints [{sourceVolume, containerPath, readOnly}] + the task's volumes [{name, host.sourcePath}]
- restart -> restartPolicy {enabled} (the agent restarts the container, not Docker)
- health -> healthCheck {command [CMD-SHELL, ...], interval, timeout, retries, startPeriod} (HEALTH)
- log_driver, log_opts -> logConfiguration (awslogs when `AwsLogs` is given, else the spec's own driver)
- network, network_aliases -> the task's networkMode (NETWORK)
- labels -> dockerLabels; user -> user; read_only_root -> readonlyRootFilesystem
- cap_drop, cap_add -> linuxParameters.capabilities {drop, add}; init -> linuxParameters.initProcessEnabled
- security_opts -> dockerSecurityOptions (no-new-privileges, apparmor:..., label:... only)
- stop_timeout_s -> stopTimeout (at most 120 s)
- ulimits -> ulimits [{name, softLimit, hardLimit}] (ECS's list of names only)

Everything a spec holds that ECS cannot express raises `EcsRenderError` naming the field.

GPU: ECS schedules GPUs by count (resourceRequirements type GPU) and its agent chooses the devices, then runs
the container with the NVIDIA runtime and NVIDIA_VISIBLE_DEVICES set to the chosen ones (agent
api/task/task.go, populateGPUEnvironmentVariables). A device list in the spec (an existing host's GPU 1) is
mapped to its length: a fleet instance belongs to this service alone, so which devices does not matter, only
how many. `gpus="all"` says no number, so the caller gives `gpu_count` (the instance type's GPUs).

NETWORK: the service uses `awsvpc`. Each task gets its own network interface and security group (so replicas
are reachable from the load balancer's security group only, and the target group registers task IPs), and the
task's containers share one network namespace: the proxy reaches vLLM at 127.0.0.1, with no Docker network,
DNS alias or host port. `bridge` is supported for a proof on a plain Docker host: ports published on the
host, containers on Docker's default bridge, and the proxy reaching vLLM's aliases through `links` (the ECS
form of an alias in that mode). A user-defined Docker network has no ECS form in either mode. Under awsvpc the
proxy's nginx.conf has 127.0.0.1 as its upstream (PROXY); the single host's config, which resolves the vLLM
container through Docker's DNS (127.0.0.11), is kept in bridge mode, whose default bridge has no such DNS.

PROXY: on a single host the proxy reads nginx.conf and the key check from a host folder the deploy writes
(infra/render/proxy.py `proxy_files`). Under awsvpc nothing writes a fleet instance's folders, so the task's
proxy carries its files itself (`task_proxy`): nginx.conf, rendered from the same template with vLLM at the
task's loopback (no resolver, the same pool, allowlist, key check and timeouts), in the plain environment
variable PROXY_CONFIG_ENV; the key check, `render_key_check(key)`, in the secret PROXY_KEY_CHECK_ENV, which the
agent reads from an SSM SecureString by ARN like the API key. Its entryPoint, infra/host/ecs-proxy-start,
writes both to the proxy's /tmp tmpfs (its root filesystem stays read-only, its user non-root, its
capabilities dropped) and execs nginx on them. Its host-folder mounts go; TLS is refused (no certificate
files: the load balancer terminates TLS). Bridge mode, used for proofs of the definitions only, keeps the
host-folder proxy of `proxy_spec`.

MODEL: a plan with modelPath mounts its folder's cache copy read-only into vLLM, as on one host; on a fleet no
deploy copies it there, so the task's first container does (infra/render/model_sync.py) and vLLM depends on its
SUCCESS. The sync container's script travels in its command (`python3 -c`) and the manifest in its
environment, so a task definition stays under ECS's 64 KiB (TASK_DEFINITION_MAX_BYTES, checked).

HEALTH: ECS accepts interval 5-300 s, timeout 2-120 s, retries 1-10, startPeriod 0-300 s (API_HealthCheck).
A value outside them is refused, except startPeriod: a cold model load (download, compile, CUDA graphs) takes
longer than 300 s, and ECS has a setting made for it, the service's healthCheckGracePeriodSeconds, during
which the scheduler ignores the container's health. So a longer start period is rendered as 300 s and the
full length is returned as `health_check_grace_period_s`, which the service must set.

HOST PATHS: the agent bind-mounts a host volume as `source:target` (Docker `Binds`), which creates a missing
source folder where `--mount` would refuse to start. The container instance must therefore mount its cache
volume before the ECS agent starts, or the caches land on the root disk.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from vllm_endpoint.infra.catalog.names import (
    PROXY_CONFIG_ENV,
    PROXY_CONFIG_FILE,
    PROXY_CONFIG_PATH,
    PROXY_KEY_CHECK_ENV,
    PROXY_KEY_CHECK_FILE,
    PROXY_KEY_CHECK_PATH,
    PROXY_TASK_CONFIG_DIR,
    SECRET_API_KEY_ENV,
    SECRET_HF_TOKEN_ENV,
)
from vllm_endpoint.infra.plan.deployment import DeploymentPlan
from vllm_endpoint.infra.plan.spec import ContainerSpec, HealthCheck
from vllm_endpoint.infra.render.host_scripts import env_lines, read_host_file
from vllm_endpoint.infra.render.model_sync import SUCCESS, SYNC_ENTRY_POINT, ModelSource, model_sync_spec
from vllm_endpoint.infra.render.proxy import (
    CONFIG_DIGEST_LABEL,
    IN_TASK,
    proxy_spec,
    render_key_check,
    render_nginx_conf,
)

NetworkMode = Literal["awsvpc", "bridge"]

# ECS API bounds (API_HealthCheck, API_ContainerDefinition.stopTimeout).
HEALTH_INTERVAL_S = (5, 300)
HEALTH_TIMEOUT_S = (2, 120)
HEALTH_RETRIES = (1, 10)
HEALTH_START_PERIOD_S = (0, 300)
STOP_TIMEOUT_MAX_S = 120
# API_Ulimit.name.
ULIMIT_NAMES = frozenset({"core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
                          "rss", "rtprio", "rttime", "sigpending", "stack"})
# API_Tmpfs.mountOptions: options by name (`uid=1000` is the `uid` option with its value).
TMPFS_OPTIONS = frozenset({
    "defaults", "ro", "rw", "suid", "nosuid", "dev", "nodev", "exec", "noexec", "sync", "async", "dirsync", "remount",
    "mand", "nomand", "atime", "noatime", "diratime", "nodiratime", "bind", "rbind", "unbindable", "runbindable",
    "private", "rprivate", "shared", "rshared", "slave", "rslave", "relatime", "norelatime", "strictatime",
    "nostrictatime", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol"})
# API_LogConfiguration.logDriver on the EC2 launch type.
LOG_DRIVERS = frozenset({"awslogs", "fluentd", "gelf", "json-file", "journald", "splunk", "syslog", "awsfirelens"})
# ECS's spelling of Docker's `no-new-privileges:true` (API_ContainerDefinition.dockerSecurityOptions).
NO_NEW_PRIVILEGES = "no-new-privileges"
# A tmpfs the spec leaves unsized (Docker's bound: half the RAM) gets this bound on ECS, which requires one:
# the vLLM container's HOME holds dot-files and Triton's compiled kernels, megabytes; its caches are on the volume.
UNSIZED_TMPFS_MIB = 1024
GPU_RUNTIME = "nvidia"
GPU_DEVICES_ENV = "NVIDIA_VISIBLE_DEVICES"
SECRET_ARN = re.compile(r"^arn:aws[a-z-]*:(ssm|secretsmanager):[a-z0-9-]+:[0-9]{12}:(parameter/\S+|secret:\S+)$")
# The proxy starts once vLLM answers its health check (ContainerDependency.condition).
HEALTHY = "HEALTHY"
# RegisterTaskDefinition's limit on a whole task definition (ECS service quotas, "Task definition size").
TASK_DEFINITION_MAX_BYTES = 64 * 1024
# The task's proxy: its entry point (infra/host/) and where it writes its files (module docstring, PROXY).
PROXY_START_SCRIPT = "ecs-proxy-start"
TASK_PROXY_CONFIG = f"{PROXY_TASK_CONFIG_DIR}/{PROXY_CONFIG_FILE}"
TASK_PROXY_KEY_CHECK = f"{PROXY_TASK_CONFIG_DIR}/{PROXY_KEY_CHECK_FILE}"


class EcsRenderError(ValueError):
    """A spec field ECS cannot express, or an ECS bound the spec breaks."""


@dataclass(frozen=True)
class AwsLogs:
    """CloudWatch Logs for the task's containers (the awslogs log driver)."""

    group: str
    region: str
    stream_prefix: str


@dataclass(frozen=True)
class EcsContainer:
    definition: dict[str, Any]
    volumes: tuple[dict[str, Any], ...]  # task volumes its mountPoints name
    ipc_mode: Literal["host"] | None  # task-level in ECS
    health_check_grace_period_s: int  # what the service's grace period must cover (0: no long start)


@dataclass(frozen=True)
class EcsTask:
    network_mode: NetworkMode
    ipc_mode: Literal["host"] | None
    container_definitions: tuple[dict[str, Any], ...]
    volumes: tuple[dict[str, Any], ...]
    health_check_grace_period_s: int  # the service's healthCheckGracePeriodSeconds, at least

    def container_definitions_json(self) -> str:
        return json.dumps(list(self.container_definitions), sort_keys=True)

    def task_definition_args(self) -> dict[str, Any]:
        """Keyword arguments for `pulumi_aws.ecs.TaskDefinition` (family, roles and memory are the caller's)."""
        args: dict[str, Any] = {
            "container_definitions": self.container_definitions_json(),
            "network_mode": self.network_mode,
            "requires_compatibilities": ["EC2"],
            "volumes": [{"name": v["name"], "host_path": v["host"]["sourcePath"]} for v in self.volumes],
        }
        if self.ipc_mode is not None:
            args["ipc_mode"] = self.ipc_mode
        return args


# ----------------------------------------------------------------------------------------------
# ContainerSpec -> container definition.

def ecs_container(spec: ContainerSpec, *, secret_arns: Mapping[str, str], network_mode: NetworkMode,
                  gpu_count: int | None = None, logs: AwsLogs | None = None,
                  tmpfs_size_mib: int = UNSIZED_TMPFS_MIB, essential: bool = True,
                  depends_on: Sequence[tuple[str, str]] = (), entry_point: Sequence[str] = ()) -> EcsContainer:
    """The ECS container definition of `spec`.

    `secret_arns` maps each of `spec.secret_env` to the ARN of an SSM parameter or Secrets Manager secret that
    the agent injects (with the task's execution role); `gpu_count` is needed when the spec asks for `all`
    GPUs; `depends_on` is (container name, condition) pairs; `entry_point` replaces the image's ENTRYPOINT
    (none: the image's stays).
    """
    where = f"container {spec.name}"
    definition: dict[str, Any] = {
        "name": spec.name,
        "image": spec.image,
        "essential": essential,
        "command": list(spec.args),
        "environment": _environment(spec, where),
        "secrets": _secrets(spec, secret_arns, where),
        "portMappings": [_port(p.host_port, p.container_port, p.host_ip, network_mode, where) for p in spec.ports],
        "dockerLabels": dict(spec.labels),
        "ulimits": [_ulimit(u.name, u.soft, u.hard, where) for u in spec.ulimits],
        "logConfiguration": _log_configuration(spec, logs, where),
    }
    gpus = _gpu_count(spec, gpu_count, where)
    if gpus:
        definition["resourceRequirements"] = [{"type": "GPU", "value": str(gpus)}]
    if spec.user:
        definition["user"] = spec.user
    if spec.read_only_root:
        definition["readonlyRootFilesystem"] = True
    if spec.security_opts:
        definition["dockerSecurityOptions"] = [_security_option(o, where) for o in spec.security_opts]
    if spec.restart != "no":
        # The agent restarts an exited container in place (ECS container restart policy); Docker's own
        # restart policy is not used on ECS. With the default restartAttemptPeriod (300 s) a container that exits
        # sooner is not restarted: it stops the task (essential) and the service starts a new one.
        definition["restartPolicy"] = {"enabled": True}
    if spec.stop_timeout_s is not None:
        if not 0 <= spec.stop_timeout_s <= STOP_TIMEOUT_MAX_S:
            raise EcsRenderError(f"{where}: stop_timeout_s {spec.stop_timeout_s} is outside ECS's stopTimeout "
                                 f"range 0-{STOP_TIMEOUT_MAX_S} s")
        definition["stopTimeout"] = spec.stop_timeout_s
    grace = 0
    if spec.health is not None:
        definition["healthCheck"], grace = _health_check(spec.health, where)
    linux = _linux_parameters(spec, tmpfs_size_mib, where)
    if linux:
        definition["linuxParameters"] = linux
    if entry_point:
        definition["entryPoint"] = list(entry_point)
    if depends_on:
        definition["dependsOn"] = [{"containerName": name, "condition": cond} for name, cond in depends_on]
    volumes = []
    mount_points = []
    for mount in spec.mounts:
        volume = host_volume(mount.source)
        volumes.append(volume)
        mount_points.append({"sourceVolume": volume["name"], "containerPath": mount.target,
                             "readOnly": mount.read_only})
    definition["mountPoints"] = mount_points
    _refuse_unexpressible(spec, network_mode, where)
    return EcsContainer(definition=definition, volumes=tuple(volumes),
                        ipc_mode="host" if spec.ipc_mode == "host" else None, health_check_grace_period_s=grace)


def host_volume(source: str) -> dict[str, Any]:
    """The task volume of a host path: named after the path, so two containers binding it share one volume."""
    if not source.startswith("/"):
        raise EcsRenderError(f"mount source {source!r}: ECS host volumes take an absolute path")
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", source.strip("/")).strip("-")[:200] or "root"
    # Paths that differ only in punctuation ("/a-b", "/a/b") would share a name: the path's digest tells them apart.
    name = f"host-{name}-{hashlib.sha256(source.encode()).hexdigest()[:8]}"
    return {"name": name, "host": {"sourcePath": source}}


def _environment(spec: ContainerSpec, where: str) -> list[dict[str, str]]:
    env = dict(spec.env)  # a name given twice keeps its last value, as `docker run --env` does
    if spec.runtime == GPU_RUNTIME:
        env.pop(GPU_DEVICES_ENV, None)  # the device list becomes a GPU count; the agent sets its own
    for name in spec.secret_env:
        if name in env:
            raise EcsRenderError(f"{where}: {name} is both a plain and a secret environment variable")
    return [{"name": k, "value": v} for k, v in env.items()]


def _secrets(spec: ContainerSpec, secret_arns: Mapping[str, str], where: str) -> list[dict[str, str]]:
    missing = [name for name in spec.secret_env if name not in secret_arns]
    if missing:
        raise EcsRenderError(f"{where}: no SSM parameter or Secrets Manager ARN for secret environment variables "
                             f"{missing}: ECS injects secrets by reference only, never by value")
    unknown = sorted(set(secret_arns) - set(spec.secret_env))
    if unknown:
        raise EcsRenderError(f"{where}: secret ARNs given for {unknown}, which the container does not take")
    secrets = []
    for name in spec.secret_env:
        arn = secret_arns[name]
        if not SECRET_ARN.match(arn):
            # Whatever it is, it is not a reference: do not echo it, it may be the secret itself.
            raise EcsRenderError(f"{where}: the reference for {name} is not an SSM parameter or Secrets Manager "
                                 "ARN (arn:aws:ssm:REGION:ACCOUNT:parameter/NAME or "
                                 "arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)")
        secrets.append({"name": name, "valueFrom": arn})
    return secrets


def _port(host_port: int, container_port: int, host_ip: str, network_mode: NetworkMode,
          where: str) -> dict[str, Any]:
    if host_ip:
        raise EcsRenderError(f"{where}: port {host_port} is bound to {host_ip} only; ECS port mappings bind every "
                             "address of the host or task (restrict who connects with security groups instead)")
    if network_mode == "awsvpc":
        # The port is the task's own address's: hostPort is the containerPort or absent (API_PortMapping).
        return {"containerPort": container_port, "hostPort": container_port, "protocol": "tcp"}
    return {"containerPort": container_port, "hostPort": host_port, "protocol": "tcp"}


def _ulimit(name: str, soft: int, hard: int, where: str) -> dict[str, Any]:
    if name not in ULIMIT_NAMES:
        raise EcsRenderError(f"{where}: ulimit {name!r} is not one ECS sets ({', '.join(sorted(ULIMIT_NAMES))})")
    return {"name": name, "softLimit": soft, "hardLimit": hard}


def _log_configuration(spec: ContainerSpec, logs: AwsLogs | None, where: str) -> dict[str, Any]:
    if logs is not None:
        return {"logDriver": "awslogs", "options": {
            "awslogs-group": logs.group, "awslogs-region": logs.region, "awslogs-stream-prefix": logs.stream_prefix}}
    if spec.log_driver not in LOG_DRIVERS:
        raise EcsRenderError(f"{where}: log driver {spec.log_driver!r} is not one ECS supports "
                             f"({', '.join(sorted(LOG_DRIVERS))})")
    return {"logDriver": spec.log_driver, "options": dict(spec.log_opts)}


def _gpu_count(spec: ContainerSpec, gpu_count: int | None, where: str) -> int:
    if gpu_count is not None and gpu_count < 1:
        raise EcsRenderError(f"{where}: gpu_count must be at least 1, not {gpu_count}")
    if spec.runtime not in (None, GPU_RUNTIME):
        raise EcsRenderError(f"{where}: runtime {spec.runtime!r}: ECS runs containers with Docker's default runtime, "
                             f"or {GPU_RUNTIME!r} for a GPU request")
    devices = spec.env_dict().get(GPU_DEVICES_ENV)
    if spec.runtime == GPU_RUNTIME:
        if devices is None or devices in ("", "none", "void"):
            raise EcsRenderError(f"{where}: the {GPU_RUNTIME} runtime without {GPU_DEVICES_ENV} names no GPUs")
        if devices == "all":
            if gpu_count is None:
                raise EcsRenderError(f"{where}: {GPU_DEVICES_ENV}=all: ECS reserves GPUs by count; give gpu_count")
            return gpu_count
        # ECS picks the devices itself: a device list becomes its length.
        count = len(devices.split(","))
        if gpu_count is not None and gpu_count != count:
            raise EcsRenderError(f"{where}: {GPU_DEVICES_ENV}={devices} selects {count} GPU(s), gpu_count says "
                                 f"{gpu_count}")
        return count
    if devices is not None:
        raise EcsRenderError(f"{where}: {GPU_DEVICES_ENV} is set without a GPU request; the ECS agent sets it")
    if spec.gpus == "all":
        if gpu_count is None:
            raise EcsRenderError(f"{where}: gpus=all: ECS reserves GPUs by count, not 'all'; give gpu_count "
                                 "(the instance type's GPUs)")
        return gpu_count
    if gpu_count is not None:
        raise EcsRenderError(f"{where}: gpu_count {gpu_count} given for a container that requests no GPU")
    return 0


def _security_option(option: str, where: str) -> str:
    if option in (NO_NEW_PRIVILEGES, f"{NO_NEW_PRIVILEGES}:true", f"{NO_NEW_PRIVILEGES}=true"):
        return NO_NEW_PRIVILEGES
    if option.startswith(("apparmor:", "label:")):
        return option
    raise EcsRenderError(f"{where}: security option {option!r} has no ECS form (dockerSecurityOptions takes "
                         f"{NO_NEW_PRIVILEGES}, apparmor:PROFILE and label:VALUE)")


def _bounded(value: int, bounds: tuple[int, int], key: str, where: str) -> int:
    low, high = bounds
    if not low <= value <= high:
        raise EcsRenderError(f"{where}: healthCheck.{key} {value} is outside ECS's range {low}-{high}")
    return value


def _health_check(h: HealthCheck, where: str) -> tuple[dict[str, Any], int]:
    low, high = HEALTH_START_PERIOD_S
    if h.start_period_s < low:
        raise EcsRenderError(f"{where}: healthCheck.startPeriod {h.start_period_s} is below {low}")
    # Longer starts are the service's grace period's to cover (module docstring, HEALTH).
    grace = h.start_period_s if h.start_period_s > high else 0
    return {
        "command": ["CMD-SHELL", h.shell_command],
        "interval": _bounded(h.interval_s, HEALTH_INTERVAL_S, "interval", where),
        "timeout": _bounded(h.timeout_s, HEALTH_TIMEOUT_S, "timeout", where),
        "retries": _bounded(h.retries, HEALTH_RETRIES, "retries", where),
        "startPeriod": min(h.start_period_s, high),
    }, grace


def _linux_parameters(spec: ContainerSpec, tmpfs_size_mib: int, where: str) -> dict[str, Any]:
    linux: dict[str, Any] = {}
    if spec.cap_drop or spec.cap_add:
        linux["capabilities"] = {"drop": list(spec.cap_drop), "add": list(spec.cap_add)}
    if spec.init:
        linux["initProcessEnabled"] = True
    if spec.shm_size_mb is not None:
        if spec.ipc_mode == "host":
            raise EcsRenderError(f"{where}: shm_size_mb with ipc_mode=host: the host's /dev/shm has no per-container "
                                 "size")
        linux["sharedMemorySize"] = spec.shm_size_mb
    if spec.tmpfs:
        linux["tmpfs"] = [_tmpfs(path, options, tmpfs_size_mib, where) for path, options in spec.tmpfs]
    return linux


_SIZE = re.compile(r"^([0-9]+)([kmg]?)$", re.IGNORECASE)


def _tmpfs(path: str, options: str, default_mib: int, where: str) -> dict[str, Any]:
    mount_options = []
    size_mib: int | None = None
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if key == "size":
            size_mib = _mib(value, f"{where}: tmpfs {path} size={value}")
            continue
        if key not in TMPFS_OPTIONS:
            raise EcsRenderError(f"{where}: tmpfs {path} option {option!r} is not one ECS accepts")
        mount_options.append(option)
    if size_mib is None:
        size_mib = default_mib
    if size_mib < 1:
        raise EcsRenderError(f"{where}: tmpfs {path}: ECS needs a size of at least 1 MiB")
    return {"containerPath": path, "size": size_mib, "mountOptions": mount_options}


def _mib(text: str, what: str) -> int:
    match = _SIZE.match(text)
    if match is None:
        raise EcsRenderError(f"{what}: not a size ECS can state in MiB")
    number, unit = int(match[1]), match[2].lower()
    factor = {"": 1, "k": 1024, "m": 2**20, "g": 2**30}[unit]
    size = number * factor
    if size % 2**20:
        raise EcsRenderError(f"{what}: ECS states tmpfs sizes in whole MiB")
    return size // 2**20


def _refuse_unexpressible(spec: ContainerSpec, network_mode: NetworkMode, where: str) -> None:
    if spec.ipc_mode not in (None, "host", "private"):
        raise EcsRenderError(f"{where}: ipc_mode {spec.ipc_mode!r} has no ECS form")
    if network_mode not in ("awsvpc", "bridge"):
        raise EcsRenderError(f"{where}: network mode {network_mode!r}: the renderer supports awsvpc and bridge")


# ----------------------------------------------------------------------------------------------
# The task: vLLM and, optionally, the proxy as its sidecar.

def ecs_task(vllm: ContainerSpec, proxy: ContainerSpec | None = None, *, secret_arns: Mapping[str, str],
             network_mode: NetworkMode = "awsvpc", gpu_count: int | None = None, logs: AwsLogs | None = None,
             tmpfs_size_mib: int = UNSIZED_TMPFS_MIB, proxy_entry_point: Sequence[str] = (),
             model_sync: ContainerSpec | None = None) -> EcsTask:
    """The task of one replica. The proxy, when given, starts once vLLM is HEALTHY (it would answer 502 before)
    and is essential too: a replica without its proxy serves nothing. The agent waits for HEALTHY without a limit
    unless the dependency sets startTimeout (none is set: a cold load's length is the grace period's business),
    and stops a task's containers in reverse: the proxy first, then vLLM (agent dependencygraph/graph.go).
    `model_sync`, when given, copies the fine-tune into the cache first (infra/render/model_sync.py): not
    essential (it exits when done), and vLLM starts only once it exited 0.
    `secret_arns` covers the secrets of every container; each gets its own."""
    taken = {name for spec in (vllm, proxy, model_sync) if spec is not None for name in spec.secret_env}
    unknown = sorted(set(secret_arns) - taken)
    if unknown:
        raise EcsRenderError(f"secret ARNs given for {unknown}, which no container of the task takes")
    containers = []
    if model_sync is not None:
        containers.append(ecs_container(model_sync, secret_arns=_own(secret_arns, model_sync),
                                        network_mode=network_mode, logs=logs, tmpfs_size_mib=tmpfs_size_mib,
                                        essential=False, entry_point=SYNC_ENTRY_POINT))
    containers.append(ecs_container(vllm, secret_arns=_own(secret_arns, vllm), network_mode=network_mode,
                                    gpu_count=gpu_count, logs=logs, tmpfs_size_mib=tmpfs_size_mib,
                                    depends_on=((model_sync.name, SUCCESS),) if model_sync is not None else ()))
    if proxy is not None:
        if vllm.health is None:
            raise EcsRenderError(f"container {vllm.name}: the proxy waits for it to be {HEALTHY}, so it needs a "
                                 "health check")
        sidecar = ecs_container(proxy, secret_arns=_own(secret_arns, proxy), network_mode=network_mode, logs=logs,
                                tmpfs_size_mib=tmpfs_size_mib, depends_on=((vllm.name, HEALTHY),),
                                entry_point=proxy_entry_point)
        if network_mode == "bridge" and vllm.network_aliases:
            # On Docker's default bridge a link is the only way to give vLLM its alias (awsvpc: 127.0.0.1).
            sidecar.definition["links"] = [f"{vllm.name}:{alias}" for alias in vllm.network_aliases]
        containers.append(sidecar)
    names = [c.definition["name"] for c in containers]
    if len(set(names)) != len(names):
        raise EcsRenderError(f"two containers of the task are named {names[0]}")
    ports = [p["containerPort"] for c in containers for p in c.definition["portMappings"]]
    if network_mode == "awsvpc" and len(set(ports)) != len(ports):
        raise EcsRenderError(f"awsvpc: the task's containers share one address; container ports {ports} collide")
    volumes: dict[str, dict[str, Any]] = {}
    for container in containers:
        for volume in container.volumes:
            volumes.setdefault(volume["name"], volume)
    ipc: Literal["host"] | None = "host" if any(c.ipc_mode == "host" for c in containers) else None
    check_definitions_size(json.dumps([c.definition for c in containers]))
    return EcsTask(network_mode=network_mode, ipc_mode=ipc,
                   container_definitions=tuple(c.definition for c in containers), volumes=tuple(volumes.values()),
                   health_check_grace_period_s=max(c.health_check_grace_period_s for c in containers))


def check_definitions_size(container_definitions_json: str) -> None:
    """Refuses container definitions RegisterTaskDefinition would refuse for their size (a sidecar added later
    is checked again with it)."""
    size = len(container_definitions_json.encode())
    if size > TASK_DEFINITION_MAX_BYTES:
        raise EcsRenderError(f"the task's container definitions take {size:,} bytes; ECS takes at most "
                             f"{TASK_DEFINITION_MAX_BYTES:,} per task definition (modelPath: its manifest has a "
                             "line per file; a folder of very many files fits in an image: imageBuildContext)")


def _own(secret_arns: Mapping[str, str], spec: ContainerSpec) -> dict[str, str]:
    return {name: arn for name, arn in secret_arns.items() if name in spec.secret_env}


def plan_ecs_task(plan: DeploymentPlan, *, secret_arns: Mapping[str, str], logs: AwsLogs | None = None,
                  network_mode: NetworkMode = "awsvpc", with_proxy: bool = True,
                  gpu_count: int | None = None, trusted_proxies: Sequence[str] = (),
                  model_source: ModelSource | None = None) -> EcsTask:
    """The plan's vLLM container (and proxy) as an ECS task; an `all` GPU request counts the instance type's GPUs
    unless `gpu_count` says how many (a plan without an instance type: an existing host, this machine).
    `secret_arns` maps each of `task_secret_names` to its parameter's ARN; `trusted_proxies`: the networks of
    the load balancer in front (CIDRs), whose X-Forwarded-For the proxy takes as the client's address;
    `model_source`: where the plan's modelPath was uploaded (required with a modelPath: the task copies it)."""
    if gpu_count is None and plan.instance is not None and plan.vllm.gpus == "all":
        gpu_count = plan.instance.gpu_count
    if (plan.model_upload is None) != (model_source is None):
        raise EcsRenderError("modelPath: the task copies the uploaded folder from S3; give model_source (its "
                             "bucket, prefix and region)" if plan.model_upload is not None else
                             "model_source given for a plan without modelPath: the task has nothing to copy")
    proxy = _task_proxy_or_none(plan, network_mode, with_proxy, trusted_proxies)
    sync = model_sync_spec(plan, model_source) if model_source is not None else None
    return ecs_task(plan.vllm, proxy.spec if proxy else None, secret_arns=secret_arns, network_mode=network_mode,
                    gpu_count=gpu_count, logs=logs, proxy_entry_point=proxy.entry_point if proxy else (),
                    model_sync=sync)


# ----------------------------------------------------------------------------------------------
# The task's proxy and secrets (module docstring, PROXY).

@dataclass(frozen=True)
class TaskProxy:
    spec: ContainerSpec
    entry_point: tuple[str, ...]  # the container definition's entryPoint (empty: the image's)


def task_proxy(plan: DeploymentPlan, trusted_proxies: Sequence[str] = ()) -> TaskProxy:
    """The proxy as an awsvpc task runs it: its files in its environment, written to its tmpfs at start."""
    where = f"container {plan.proxy.name}"
    if plan.proxy_settings.tls:
        raise EcsRenderError(f"{where}: tls: a task's proxy has no certificate files; the load balancer "
                             "terminates TLS")
    if not any(_holds(path, PROXY_TASK_CONFIG_DIR) for path, _ in plan.proxy.tmpfs):
        raise EcsRenderError(f"{where}: no tmpfs holds {PROXY_TASK_CONFIG_DIR}, where its entry point writes its "
                             "files (the root filesystem is read-only)")
    conf = task_nginx_conf(plan, trusted_proxies)
    digest = hashlib.sha256(conf.encode()).hexdigest()[:16]
    host_files = (PROXY_CONFIG_PATH, PROXY_KEY_CHECK_PATH)
    spec = replace(
        plan.proxy,
        args=(),  # the entry point starts nginx on the files it wrote
        env=(*plan.proxy.env, (PROXY_CONFIG_ENV, conf)),
        secret_env=(*plan.proxy.secret_env, PROXY_KEY_CHECK_ENV),
        mounts=tuple(m for m in plan.proxy.mounts if m.target not in host_files),
        labels=(*plan.proxy.labels, (CONFIG_DIGEST_LABEL, digest)),
    )
    # `sh -c`: the file's parameters, then its text; the file's name is its $0 (in its messages).
    script = env_lines({"CONFIG_FILE": TASK_PROXY_CONFIG, "KEY_CHECK_FILE": TASK_PROXY_KEY_CHECK})
    return TaskProxy(spec, ("/bin/sh", "-c", script + read_host_file(PROXY_START_SCRIPT), PROXY_START_SCRIPT))


def task_nginx_conf(plan: DeploymentPlan, trusted_proxies: Sequence[str] = ()) -> str:
    """The task proxy's nginx.conf: the single host's, with vLLM on the task's loopback, the key check where the
    entry point writes it, and the client's address from the load balancer's X-Forwarded-For."""
    return render_nginx_conf(plan.proxy_settings, vllm=IN_TASK, key_check_path=TASK_PROXY_KEY_CHECK,
                             trusted_proxies=trusted_proxies)


def _holds(mount_path: str, path: str) -> bool:
    return path == mount_path or path.startswith(mount_path.rstrip("/") + "/")


def _task_proxy_or_none(plan: DeploymentPlan, network_mode: NetworkMode, with_proxy: bool,
                        trusted_proxies: Sequence[str] = ()) -> TaskProxy | None:
    if not with_proxy:
        return None
    if network_mode == "awsvpc":
        return task_proxy(plan, trusted_proxies)
    return TaskProxy(proxy_spec(plan), ())  # bridge: the host folder's proxy, for proofs (module docstring)


def task_secret_names(plan: DeploymentPlan, *, network_mode: NetworkMode = "awsvpc",
                      with_proxy: bool = True) -> tuple[str, ...]:
    """Every secret environment variable of the plan's task: each needs an SSM parameter (or Secrets Manager
    secret) ARN in `plan_ecs_task`'s `secret_arns`."""
    proxy = _task_proxy_or_none(plan, network_mode, with_proxy)
    return (*plan.vllm.secret_env, *(proxy.spec.secret_env if proxy else ()))


def task_secret_values(plan: DeploymentPlan, api_key: str, hf_token: str | None, *,
                       network_mode: NetworkMode = "awsvpc", with_proxy: bool = True) -> dict[str, str]:
    """What each of `task_secret_names` must hold (the SecureString's value), by name."""
    known = {SECRET_API_KEY_ENV: api_key, PROXY_KEY_CHECK_ENV: render_key_check(api_key)}
    if hf_token is not None:
        known[SECRET_HF_TOKEN_ENV] = hf_token
    names = task_secret_names(plan, network_mode=network_mode, with_proxy=with_proxy)
    missing = [name for name in names if name not in known]
    if missing:
        raise ValueError(f"the task takes {missing} as secrets and no value was given for them")
    if hf_token is not None and SECRET_HF_TOKEN_ENV not in names:
        raise ValueError(f"an {SECRET_HF_TOKEN_ENV} was given, but the plan's vLLM does not take one")
    return {name: known[name] for name in names}


# ----------------------------------------------------------------------------------------------
# Container definition -> `docker run`, as the ECS agent runs it.

# Every key ecs_container writes; anything else in a definition is refused rather than left out of the proof.
_KNOWN_KEYS = frozenset({
    "name", "image", "essential", "command", "entryPoint", "environment", "secrets", "portMappings", "dockerLabels",
    "ulimits", "logConfiguration", "resourceRequirements", "user", "readonlyRootFilesystem",
    "dockerSecurityOptions", "restartPolicy", "stopTimeout", "healthCheck", "linuxParameters", "dependsOn",
    "mountPoints", "links"})
_KNOWN_LINUX_KEYS = frozenset({"capabilities", "initProcessEnabled", "sharedMemorySize", "tmpfs"})


def ecs_to_docker_run(definition: Mapping[str, Any], volumes: Sequence[Mapping[str, Any]], *,
                      network_mode: NetworkMode = "bridge", ipc_mode: str | None = None,
                      gpu_ids: Sequence[str] | None = None, task_network: str | None = None,
                      task_id: str = "local") -> list[str]:
    """The `docker run` argv of one ECS container definition, as the agent's Docker calls amount to.

    What the agent supplies and this takes as arguments: `gpu_ids`, the devices it assigned (default 0..N-1);
    `task_network`, the network the task's containers share (awsvpc: the agent's pause container,
    `container:NAME`; bridge: Docker's default bridge); `task_id`, which names the awslogs stream. Secrets are
    passed by name (`--env NAME`, the value from the caller's environment), as the agent hands Docker the
    value it fetched and no command line ever holds it. Left out, as the agent's own: its labels
    (com.amazonaws.ecs.*), its container name (ecs-FAMILY-REVISION-NAME-...), its restart handling
    (restartPolicy), `essential` (the agent stops the task when one exits) and dependsOn (the caller starts
    containers in that order). An entryPoint's first word is `--entrypoint` and the rest precede the command: the
    CLI takes one word where the agent's API call takes the list, and the process started is the same.
    """
    unknown = sorted(set(definition) - _KNOWN_KEYS)
    if unknown:
        raise EcsRenderError(f"container definition keys {unknown}: not rendered by ecs_to_docker_run")
    name = definition["name"]
    by_name = {v["name"]: v for v in volumes}
    argv = ["docker", "run", "--detach", "--name", name]
    gpus = sum(int(r["value"]) for r in definition.get("resourceRequirements", ()) if r["type"] == "GPU")
    if gpus:
        argv += ["--runtime", GPU_RUNTIME]
    if ipc_mode is not None:
        argv += ["--ipc", ipc_mode]
    linux = definition.get("linuxParameters", {})
    unknown = sorted(set(linux) - _KNOWN_LINUX_KEYS)
    if unknown:
        raise EcsRenderError(f"linuxParameters keys {unknown}: not rendered by ecs_to_docker_run")
    if "sharedMemorySize" in linux:
        argv += ["--shm-size", f"{linux['sharedMemorySize']}m"]
    if "user" in definition:
        argv += ["--user", definition["user"]]
    if linux.get("initProcessEnabled"):
        argv.append("--init")
    if definition.get("readonlyRootFilesystem"):
        argv.append("--read-only")
    for tmpfs in linux.get("tmpfs", ()):
        mount = ",".join([*tmpfs.get("mountOptions", ()), f"size={tmpfs['size']}m"])
        argv += ["--tmpfs", f"{tmpfs['containerPath']}:{mount}"]
    capabilities = linux.get("capabilities", {})
    for cap in capabilities.get("drop", ()):
        argv += ["--cap-drop", cap]
    for cap in capabilities.get("add", ()):
        argv += ["--cap-add", cap]
    for option in definition.get("dockerSecurityOptions", ()):
        argv += ["--security-opt", option]
    for limit in definition.get("ulimits", ()):
        argv += ["--ulimit", f"{limit['name']}={limit['softLimit']}:{limit['hardLimit']}"]
    if network_mode == "awsvpc":
        if task_network is None:
            raise EcsRenderError("awsvpc: give task_network, the container whose network namespace the task shares "
                                 "(container:NAME)")
        argv += ["--network", task_network]
    else:
        argv += ["--network", task_network or "bridge"]
        for link in definition.get("links", ()):
            argv += ["--link", link]
        for port in definition.get("portMappings", ()):
            host = port.get("hostPort", 0)
            argv += ["--publish", f"{host}:{port['containerPort']}" if host else str(port["containerPort"])]
    for point in definition.get("mountPoints", ()):
        source = by_name[point["sourceVolume"]]["host"]["sourcePath"]
        argv += ["--volume", f"{source}:{point['containerPath']}" + (":ro" if point.get("readOnly") else "")]
    for pair in definition.get("environment", ()):
        argv += ["--env", f"{pair['name']}={pair['value']}"]
    if gpus:
        ids = list(gpu_ids) if gpu_ids is not None else [str(i) for i in range(gpus)]
        if len(ids) != gpus:
            raise EcsRenderError(f"{len(ids)} GPU ids given for a request of {gpus}")
        argv += ["--env", f"{GPU_DEVICES_ENV}={','.join(ids)}"]
    for secret in definition.get("secrets", ()):
        argv += ["--env", secret["name"]]
    for key, value in definition.get("dockerLabels", {}).items():
        argv += ["--label", f"{key}={value}"]
    if "healthCheck" in definition:
        h = definition["healthCheck"]
        if h["command"][0] != "CMD-SHELL" or len(h["command"]) != 2:
            raise EcsRenderError(f"healthCheck.command {h['command'][:1]}: only the CMD-SHELL form is rendered")
        argv += [
            "--health-cmd", h["command"][1],
            "--health-interval", f"{h.get('interval', 30)}s",
            "--health-timeout", f"{h.get('timeout', 5)}s",
            "--health-retries", str(h.get("retries", 3)),
            "--health-start-period", f"{h.get('startPeriod', 0)}s",
        ]
    log = definition.get("logConfiguration")
    if log is not None:
        argv += ["--log-driver", log["logDriver"]]
        options: dict[str, str] = dict(log.get("options", {}))
        if log["logDriver"] == "awslogs" and "awslogs-stream-prefix" in options:
            # The agent names the stream PREFIX/CONTAINER/TASK-ID; Docker's driver knows no prefix option.
            options["awslogs-stream"] = f"{options.pop('awslogs-stream-prefix')}/{name}/{task_id}"
        for key, value in options.items():
            argv += ["--log-opt", f"{key}={value}"]
    if "stopTimeout" in definition:
        argv += ["--stop-timeout", str(definition["stopTimeout"])]
    entry_point = list(definition.get("entryPoint", ()))
    if entry_point:
        argv += ["--entrypoint", entry_point[0]]
    argv.append(definition["image"])
    argv += entry_point[1:] + list(definition.get("command", ()))
    return argv
