"""What runs, as data: the container specs, the proxy's settings and the readiness gate.

The plan (infra/plan/deployment.py) fills these in; infra/render/ turns them into `docker run` text,
pulumi-docker arguments, nginx.conf and the gate script. Nothing here renders text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from vllm_endpoint.infra.catalog.names import ENDPOINT_TAG, PROJECT_TAG, STACK_TAG, VLLM_CONTAINER_PORT

RestartPolicy = Literal["no", "on-failure", "always", "unless-stopped"]


@dataclass(frozen=True)
class Mount:
    source: str  # host path
    target: str  # container path
    read_only: bool = False


@dataclass(frozen=True)
class PortMapping:
    host_port: int
    container_port: int
    host_ip: str = ""  # "" = every host address, as docker's default


@dataclass(frozen=True)
class HealthCheck:
    shell_command: str  # run by /bin/sh in the container (Docker's CMD-SHELL form)
    interval_s: int
    timeout_s: int
    retries: int
    start_period_s: int


@dataclass(frozen=True)
class Ulimit:
    """A resource limit of the container's processes (`docker run --ulimit name=soft:hard`)."""

    name: str  # as docker names it: nofile, nproc, memlock, ...
    soft: int
    hard: int


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    secret_env: tuple[str, ...] = ()
    gpus: Literal["all"] | None = None
    runtime: str | None = None
    ipc_mode: Literal["host", "private"] | None = None
    shm_size_mb: int | None = None
    ports: tuple[PortMapping, ...] = ()
    mounts: tuple[Mount, ...] = ()
    tmpfs: tuple[tuple[str, str], ...] = ()
    restart: RestartPolicy = "unless-stopped"
    health: HealthCheck | None = None
    log_driver: str = "json-file"
    log_opts: tuple[tuple[str, str], ...] = ()
    network: str | None = None
    network_aliases: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    user: str | None = None
    read_only_root: bool = False
    cap_drop: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    security_opts: tuple[str, ...] = ()
    init: bool = False
    stop_timeout_s: int | None = None
    ulimits: tuple[Ulimit, ...] = ()

    def env_dict(self) -> dict[str, str]:
        return dict(self.env)



@dataclass(frozen=True)
class Owner:
    """Which program's endpoint deploys: a Pulumi project, one of its stacks, and the endpoint's name."""

    project: str
    stack: str
    endpoint: str

    @property
    def labels(self) -> tuple[tuple[str, str], ...]:
        return ((PROJECT_TAG, self.project), (STACK_TAG, self.stack), (ENDPOINT_TAG, self.endpoint))


# Docker's awslogs driver: each line the container writes, as an event of a CloudWatch Logs group (the
# daemon sends them with the instance's role). Non-blocking: the container's writes go to a buffer of this
# size and never wait for CloudWatch (a full buffer drops lines, not requests). Dual logging (Docker 20.10+)
# keeps `docker logs` working.
AWSLOGS_BUFFER: Final = "4m"


def with_awslogs(spec: ContainerSpec, group: str, region: str) -> ContainerSpec:
    """The spec with its output sent to the log group `group` of `region` (which must exist: the driver
    does not create it, so no group without a retention appears)."""
    return replace(spec, log_driver="awslogs", log_opts=(
        ("awslogs-region", region), ("awslogs-group", group),
        ("mode", "non-blocking"), ("max-buffer-size", AWSLOGS_BUFFER)))


def owned_by(spec: ContainerSpec, owner: Owner) -> ContainerSpec:
    """The spec with labels naming its project, stack and endpoint, each once: two stacks know nothing of
    each other, and the host check (infra/host/check-host-claims.sh) tells which holds a port or a GPU by
    them."""
    keys = {key for key, _ in owner.labels}
    labels = tuple(label for label in spec.labels if label[0] not in keys) + owner.labels
    return replace(spec, labels=labels)


# Measured (bench/proxy_overhead.py, 2 vCPU): nginx used 3-8% of one core to stream 1,200-2,500
# tokens/s (each token one small read and one small write), so the H200 run's 13,000 tokens/s need
# under half a core: one worker is enough, the second keeps streams moving while the other does TLS
# handshakes or reads a large request body. `auto` would start one per vCPU (192 on a p5.48xlarge),
# each with its own small pool, in CPU that vLLM's API servers need.
WORKER_PROCESSES = 2


@dataclass(frozen=True)
class ConnectionLimits:
    worker_connections: int
    keepalive: int  # idle connections to vLLM each worker keeps
    open_files: int


def connection_limits(max_num_seqs: int) -> ConnectionLimits:
    """nginx's limits for a vLLM that runs `max_num_seqs` sequences at once.

    Open requests: the batch vLLM runs and as many again waiting in its queue (a client that keeps
    more open only makes vLLM's queue longer). Each open request holds two connections in one worker
    (the client's and vLLM's), and the kernel does not spread new connections evenly over workers, so
    each worker can hold all of them, plus its idle pool; rounded up to a multiple of 1024. The idle
    pool holds a whole batch: requests of one batch that end together (equal output lengths) would
    otherwise close what the next batch opens again. Descriptors: one per connection, and one more
    for each request body nginx buffers to a temporary file.
    """
    keepalive = max_num_seqs
    connections = 2 * (2 * max_num_seqs) + keepalive
    worker_connections = -(-connections // 1024) * 1024
    return ConnectionLimits(worker_connections=worker_connections, keepalive=keepalive,
                            open_files=2 * worker_connections)



@dataclass(frozen=True)
class ProxySettings:
    metrics_allowed_cidrs: Sequence[str] = ()
    tls: bool = False
    max_body_mb: int = 64
    # Keep connections to vLLM open between requests; needs nginx >= NGINX_UPSTREAM_RESOLVE_SINCE
    # (build_plan reads the proxy image's version). False: a new connection per request.
    pooled_upstream: bool = True
    # Sequences vLLM runs at once (its max_num_seqs): the proxy's connection limits follow from it.
    max_num_seqs: int = 256



@dataclass(frozen=True)
class ModelRoom:
    """What downloading a Hub model needs on a host's disk: infra/host/check-model-room.sh checks it before
    the container starts (targets existing-host and local; AWS cache volumes are checked in the plan)."""

    model: str
    cache_dir: str  # the model's folder in the Hugging Face cache on the host
    weight_bytes: int  # as the Hub reports them
    estimated: bool  # from the parameter count, not the safetensors metadata


@dataclass(frozen=True)
class ReadinessGate:
    probe_url: str  # reached from the host itself, through the same path apps use
    container: str
    timeout_s: int
    timeline_file: str
    poll_interval_s: int = 5
    # A crash-looping container will not get better: stop waiting after this many restarts.
    max_restarts: int = 3
    log_lines: int = 60
    # The loopback probe of a self-signed endpoint cannot match the certificate's address.
    insecure_tls: bool = False
    # A progress line this often while it waits (pulumi-command streams it into `pulumi up`).
    progress_interval_s: int = 10
    # The model's Hugging Face cache folder on the host (its size shows a download); "" when vLLM
    # downloads nothing (an uploaded model).
    model_cache_dir: str = ""
    # The plan's fit estimate, printed next to vLLM's own KV cache figures; None without one.
    fit_kv_cache_tokens: int | None = None
    fit_max_concurrency: float | None = None
    fit_max_model_len: int | None = None



# ----------------------------------------------------------------------------------------------
# Facts about the vLLM container that every rendering shares.

# Polls /health inside the container: present in every vLLM release, unauthenticated, and it needs
# only the Python the image already has (no curl in some images).
VLLM_HEALTH_COMMAND = (
    "python3 -c \"import urllib.request; "
    f"urllib.request.urlopen('http://127.0.0.1:{VLLM_CONTAINER_PORT}/health', timeout=5)\""
)
# Engine start (weights, torch.compile, CUDA graphs) can take minutes: not "unhealthy" before then.
VLLM_HEALTH = HealthCheck(VLLM_HEALTH_COMMAND, interval_s=30, timeout_s=10, retries=3, start_period_s=600)
# json-file without limits grows until the root disk is full.
LOG_OPTS: tuple[tuple[str, str], ...] = (("max-size", "100m"), ("max-file", "5"))
# Gives vLLM time to finish in-flight requests and free the GPU before a replacement starts.
VLLM_STOP_TIMEOUT_S = 60
def open_files(limit: int) -> Ulimit:
    """containerOpenFiles as the containers' nofile limit: soft = hard, so vLLM (and nginx's workers, up to
    the hard limit) have nothing left to raise. Docker otherwise passes on its daemon's limit, which varies
    by host (20,000 on the H200 host, where every start warned)."""
    return Ulimit("nofile", limit, limit)


@dataclass(frozen=True)
class GpuRequest:
    """How the container gets its GPUs.

    pulumi-docker's `gpus` field is passed to Docker as a device request; `all` is the value every
    version of the provider documents, so a device list is selected through the NVIDIA runtime and
    NVIDIA_VISIBLE_DEVICES instead — the NVIDIA container toolkit's own mechanism, which the boot
    script registers with Docker and the host readiness check verifies.
    """

    gpus: Literal["all"] | None
    runtime: str | None
    env: tuple[tuple[str, str], ...] = field(default=())


def gpu_request(devices: str | tuple[str, ...]) -> GpuRequest:
    if devices == "all":
        return GpuRequest(gpus="all", runtime=None)
    return GpuRequest(gpus=None, runtime="nvidia", env=(("NVIDIA_VISIBLE_DEVICES", ",".join(devices)),))
