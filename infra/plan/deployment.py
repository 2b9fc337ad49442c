"""From validated config to everything the components wire: the deployment plan.

`build_plan` is the one step between `StackConfig` and resources. It resolves what the config leaves
open (image version, dtype, tensor parallelism, served model name), runs every check that must pass
before anything is created — vLLM flags against the image's version, the image security floor, the
GPU floor, the GPU memory fit, the local model folder — and renders the container specs. All problems
are collected and raised together as one ConfigError.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vllm_endpoint.infra.catalog import gpus as gpu_catalog
from vllm_endpoint.infra.catalog import models as model_facts
from vllm_endpoint.infra.catalog.dtypes import DTYPE_BYTES
from vllm_endpoint.infra.catalog.names import (
    CACHE_SUBDIR_MODELS,
    CACHE_SUBDIR_PROXY,
    CACHE_SUBDIR_ROOT,
    CONTAINER_CACHE_ROOT,
    CONTAINER_HF_HOME,
    CONTAINER_MODEL_DIR,
    CONTAINER_USER_NAME,
    CONTAINER_VLLM_CACHE_ROOT,
    CUSTOM_IMAGE_REPOSITORY,
    DEFAULT_ENDPOINT_NAME,
    DEPLOY_TIMELINE_FILE,
    ENDPOINT_TAG,
    HOST_CACHE_MOUNT,
    INSECURE_IMAGE_OPT_IN_LABEL,
    LOCAL_API_ADDRESS,
    LOCAL_CACHE_DIR,
    NGINX_UPSTREAM_RESOLVE_SINCE,
    PREFETCH_IMAGE_TAG,
    PREFETCH_MODEL_TAG,
    PREFETCH_REVISION_TAG,
    PROXY_CONFIG_FILE,
    PROXY_CONFIG_PATH,
    PROXY_CONTAINER_PORT,
    PROXY_KEY_CHECK_FILE,
    PROXY_KEY_CHECK_PATH,
    PROXY_ROLE,
    PROXY_TLS_DIR,
    PROXY_TLS_SUBDIR,
    ROLE_TAG,
    SECRET_API_KEY_ENV,
    SECRET_HF_TOKEN_ENV,
    VLLM_CPU_IMAGE_REPOSITORY,
    VLLM_CPU_KV_CACHE_ENV,
    VLLM_IMAGE_DISK_GIB,
    VLLM_ROLE,
    VLLM_UPSTREAM_HOST,
    VLLM_VERSION_LABEL,
)
from vllm_endpoint.infra.catalog.prices import prices_for
from vllm_endpoint.infra.catalog.security import ADVISORIES_BELOW_FLOOR, SECURITY_FLOOR
from vllm_endpoint.infra.catalog.vllm_flags import (
    SERVE_ENTRYPOINT_SINCE,
    VllmVersion,
    check_server_args,
    flag_available,
    flag_spec,
    image_entrypoint,
    model_is_positional,
    runs_several_api_servers,
)
from vllm_endpoint.infra.plan import local_machine
from vllm_endpoint.infra.plan.costs import MONITORING, CostEstimate, VolumeSpec, estimate_costs, volume_usd_per_month
from vllm_endpoint.infra.plan.fit import (
    GIB,
    QUANTIZATION_WEIGHT_BYTES,
    FitReport,
    check_fit,
    default_scheduler_limits,
    resolve_dtype,
)
from vllm_endpoint.infra.plan.fleet import FleetPlan, plan_fleet
from vllm_endpoint.infra.plan.hub_facts import HubFetcher, HubQuery, HubRefused, fetch_hub_facts
from vllm_endpoint.infra.plan.local_machine import LocalMachine
from vllm_endpoint.infra.plan.model_files import FolderContents, dockerfile_base, folder_contents, folder_digest
from vllm_endpoint.infra.plan.naming import EndpointNames, name_problems
from vllm_endpoint.infra.plan.spec import (
    LOG_OPTS,
    VLLM_HEALTH,
    VLLM_STOP_TIMEOUT_S,
    ContainerSpec,
    GpuRequest,
    ModelRoom,
    Mount,
    PortMapping,
    ProxySettings,
    ReadinessGate,
    RestartPolicy,
    connection_limits,
    gpu_request,
    open_files,
)
from vllm_endpoint.infra.settings.models import (
    MAX_NUM_SEQS_16_MEASURES,
    AwsSettings,
    ConfigError,
    ServerSettings,
    StackConfig,
)


@dataclass(frozen=True)
class ModelUpload:
    """A local fine-tune folder, uploaded once per content digest to the host's cache: into `staging_dir`
    first, moved to `remote_dir` only once every file matches `contents` (infra/host/verify-model.sh)."""

    local_dir: Path
    contents: FolderContents
    remote_dir: str

    @property
    def digest(self) -> str:
        return self.contents.digest

    @property
    def staging_dir(self) -> str:
        # Created empty before each upload, so the copy always lands in it as <staging_dir>/<folder name>.
        return f"{self.remote_dir}.upload"

    @property
    def staged_copy(self) -> str:
        return f"{self.staging_dir}/{self.local_dir.name}"


@dataclass(frozen=True)
class ImageBuild:
    """A custom image built on the host `FROM vllm/vllm-openai` (a fine-tune baked in)."""

    context: Path
    tag: str


@dataclass(frozen=True)
class CacheVolume:
    """The AWS cache volume's size and speed, with defaults sized to the instance type."""

    type: str
    size_gb: int
    iops: int | None
    throughput_mib_s: int | None

    def describe(self) -> str:
        speed = f", {self.throughput_mib_s} MiB/s" if self.throughput_mib_s else ""
        iops = f", {self.iops} IOPS" if self.iops else ""
        return f"cache volume {self.type} {self.size_gb} GiB{speed}{iops}"


# gp3 gives 0.25 MiB/s per provisioned IOPS at most, so a throughput needs at least 4 IOPS per MiB/s.
GP3_IOPS_PER_MIB_S = 4
GP3_BASE_IOPS = 3000
GP3_BASE_THROUGHPUT = 125
# Beyond this the model read is rarely the bottleneck, and throughput is billed per MiB/s-month.
DEFAULT_THROUGHPUT_CAP = 1000


def cache_volume(settings: AwsSettings, instance: gpu_catalog.GpuInstanceType) -> CacheVolume:
    if settings.cache_volume_type != "gp3":
        return CacheVolume(settings.cache_volume_type, settings.cache_volume_size_gb, settings.cache_volume_iops,
                           None)
    throughput = settings.cache_volume_throughput
    if throughput is None:
        # What the instance can read from EBS at all (burst rate on the small sizes), in steps of 25.
        limit = min(DEFAULT_THROUGHPUT_CAP, int(instance.ebs_max_mib_s) // 25 * 25)
        throughput = max(GP3_BASE_THROUGHPUT, limit)
    iops = settings.cache_volume_iops or max(GP3_BASE_IOPS, throughput * GP3_IOPS_PER_MIB_S)
    return CacheVolume("gp3", settings.cache_volume_size_gb, iops, throughput)


@dataclass(frozen=True)
class ModelFacts:
    """Where the fit check's architecture came from, and the weights' size where known."""

    source: str  # "Hub config.json at <commit>", "shipped table", "modelArchitecture setting", ...
    weight_bytes: int | None = None
    weight_bytes_estimated: bool = False  # parameters x checkpoint dtype, not the safetensors headers
    parameters_by_dtype: tuple[tuple[str, int], ...] = ()
    note: str = ""

    def describe(self) -> str:
        line = f"architecture: {self.source}"
        if self.weight_bytes is not None:
            about = "about " if self.weight_bytes_estimated else ""
            params = ", ".join(f"{dtype} {_count(count)}" for dtype, count in self.parameters_by_dtype)
            line += f"; weights {about}{_size(self.weight_bytes)}"
            line += f" ({params} parameters)" if params else ""
        return line + (f"; {self.note}" if self.note else "")


def _size(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / 2**20:.1f} MiB"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 10**9 else f"{n / 1e6:.1f}M" if n >= 10**6 else f"{n:,}"


@dataclass(frozen=True)
class DeploymentPlan:
    config: StackConfig
    names: EndpointNames
    vllm_version: VllmVersion
    image_ref: str
    image_build: ImageBuild | None
    model_upload: ModelUpload | None
    served_model_name: str
    tensor_parallel_size: int
    dtype: str
    host_cache_dir: str
    timeline_file: str
    vllm: ContainerSpec
    proxy: ContainerSpec
    proxy_settings: ProxySettings
    fit: FitReport | None
    instance: gpu_catalog.GpuInstanceType | None
    cache_volume: CacheVolume | None
    warnings: tuple[str, ...]
    model_facts: ModelFacts | None = None
    costs: CostEstimate | None = None  # AWS only: by the month, and what stays after a destroy
    api_servers: ApiServers | None = None  # how many vLLM API server processes run, and why that many
    fleet: FleetPlan | None = None  # `replicas` set: the ECS fleet's replicas, spot split and costs (no `costs`)

    @property
    def network(self) -> str:
        return self.names.network

    @property
    def scheme(self) -> str:
        return "https" if self.config.access.tls == "self-signed" else "http"

    @property
    def api_port(self) -> int:
        return self.config.server.api_port

    @property
    def secret_env(self) -> tuple[str, ...]:
        return self.vllm.secret_env

    @property
    def readiness_gate(self) -> ReadinessGate:
        """The probe `pulumi up` waits on: from the host itself, through the proxy apps use."""
        return ReadinessGate(
            probe_url=f"{self.scheme}://127.0.0.1:{self.api_port}/v1/models",
            container=self.vllm.name,
            timeout_s=self.config.server.readiness_timeout_seconds,
            timeline_file=self.timeline_file,
            insecure_tls=self.scheme == "https",
            model_cache_dir=self.host_model_cache_dir or "",
            fit_kv_cache_tokens=self.fit.kv_cache_tokens if self.fit is not None else None,
            fit_max_concurrency=round(self.fit.max_concurrent_sequences, 2) if self.fit is not None else None,
            fit_max_model_len=self.fit.max_model_len if self.fit is not None else None,
        )

    @property
    def host_model_cache_dir(self) -> str | None:
        """The host folder where the Hub model vLLM (or the boot prefetch) downloads lands, or None for a
        model that is not downloaded (uploaded, or baked into a custom image)."""
        if self.model_upload is not None or self.image_build is not None:
            return None
        hf_home = PurePosixPath(CONTAINER_HF_HOME).relative_to(CONTAINER_CACHE_ROOT)
        repo_folder = "models--" + self.config.model.model.replace("/", "--")
        return f"{self.host_cache_dir}/{CACHE_SUBDIR_ROOT}/{hf_home}/hub/{repo_folder}"

    @property
    def model_room(self) -> ModelRoom | None:
        """On an existing host or this machine: the room the Hub model's weights need in hostCacheDir (None
        when nothing is downloaded there, or the Hub did not say how big the weights are)."""
        facts, folder = self.model_facts, self.host_model_cache_dir
        if self.config.target == "aws" or folder is None or facts is None or facts.weight_bytes is None:
            return None
        return ModelRoom(self.config.model.model, folder, facts.weight_bytes, facts.weight_bytes_estimated)

    @property
    def prefetch_tags(self) -> dict[str, str]:
        """Instance tags telling the boot script what to fetch while the instance comes up. Tags, not
        user-data: they change in place, so a new image or model never stops the instance."""
        if self.config.target != "aws" or not self.config.aws.prefetch_at_boot:
            return {}
        tags = {}
        if self.image_build is None:
            tags[PREFETCH_IMAGE_TAG] = self.image_ref
        if self.model_upload is None and self.image_build is None:
            tags[PREFETCH_MODEL_TAG] = self.config.model.model
            if self.config.model.model_revision:
                tags[PREFETCH_REVISION_TAG] = self.config.model.model_revision
        return tags

    @property
    def proxy_dir(self) -> str:
        return f"{self.host_cache_dir}/{CACHE_SUBDIR_PROXY}"

    @property
    def summary(self) -> str:
        """One paragraph for the `plan` stack output: what runs, how much fits, what it costs."""
        parts = [
            f"{self.served_model_name} on {self.image_ref} (vLLM {self.vllm_version}), "
            f"dtype {self.dtype}, tensor parallel {self.tensor_parallel_size}"
        ]
        if self.api_servers is not None:
            parts.append(f"API servers: {self.api_servers.count} ({self.api_servers.why})")
        if self.fit is not None:
            parts.append(self.fit.summary())  # names the instance and its price
        if self.model_facts is not None:
            parts.append(self.model_facts.describe())
        if self.costs is not None:
            parts += self.costs.describe()
        if self.fleet is not None:
            parts += self.fleet.describe()
        parts += [f"warning: {w}" for w in self.warnings]
        return "\n".join(parts)


# ----------------------------------------------------------------------------------------------

def build_plan(cfg: StackConfig, endpoint: str = DEFAULT_ENDPOINT_NAME, *,
               hub_fetcher: HubFetcher | None = fetch_hub_facts, region: str | None = None,
               machine_probe: Callable[[], LocalMachine] | None = None) -> DeploymentPlan:
    """The plan of the endpoint named `endpoint` (its containers, network and host folder carry the name).

    `hub_fetcher` reads a Hub model's config.json and safetensors metadata (the plan's only I/O besides
    `machine_probe`, which target=local asks about the deploying machine, by default
    `probe_local_machine`); a None `hub_fetcher` plans from the shipped facts alone. `region` (the stack's
    `aws:region`) picks the cost lines' prices.
    """
    problems = name_problems(endpoint)
    warnings: list[str] = []
    names = EndpointNames(endpoint)
    on_cpu = False
    if cfg.target == "local":
        cfg, on_cpu = _local_config(cfg, (machine_probe or local_machine.probe_local_machine)(), problems, warnings)
    s = cfg.server

    version = _image_version(s, problems)
    instance, gpu, host_gpus = _gpu_facts(cfg, problems)
    gpus_for_container = s.gpu_count or host_gpus
    tp = _tensor_parallel_size(s, gpus_for_container, problems)
    host_cache_dir = HOST_CACHE_MOUNT if cfg.target == "aws" else names.existing_host_dir(
        cfg.existing_host.host_cache_dir)
    model_upload, image_build, model_arg, served_name, arch = _model_source(cfg, host_cache_dir, problems)
    facts: ModelFacts | None = None
    if cfg.model.model_path is None and cfg.server.image_build_context is None:
        arch, facts = _hub_model_facts(cfg, arch, gpu, hub_fetcher, problems)
        _cache_volume_room(cfg, facts, problems)
    known_problems = len(problems)
    dtype, dtype_flag = _dtype(s, gpu, arch, problems)
    dtype_runs = len(problems) == known_problems and not on_cpu
    if version is not None:
        _security_floor(version, cfg, problems, warnings)
        _gpu_floor(version, gpu, problems)
    # The fit is computed for the dtype that runs; a dtype the GPU cannot run is reported once, by _dtype.
    # On the CPU there is no GPU memory to fit: localCpuKvCacheGib sizes the KV cache (said by _local_config).
    fit = _fit(cfg, _FitInputs(arch, gpu, instance, gpus_for_container, tp, dtype, served_name), problems,
               warnings) if dtype_runs else None
    warnings += _concurrency_warnings(s)
    proxy_settings = _proxy_settings(cfg, gpu, problems, warnings)

    if on_cpu and s.api_server_count is None:
        servers = ApiServers(1, "vLLM's CPU build: its engine uses every core")
    else:
        servers = api_servers(s, instance, tp, version, problems, warnings,
                              host_vcpus=cfg.existing_host.host_cpu_count if cfg.target != "aws" else None)
    argv = vllm_argv(cfg.server, model_arg, served_name, cfg.model.model_revision, dtype_flag, tp, version,
                     api_server_count=servers.count)
    if version is not None:
        problems += _flag_problems(argv, len(s.extra_args), version)

    volume = cache_volume(cfg.aws, instance) if instance is not None and cfg.target == "aws" else None
    fleet = _fleet(cfg, instance, volume, region, problems, model_upload)
    if problems:
        raise ConfigError(problems)
    assert version is not None  # a missing version is a problem above

    image_ref = image_build.tag if image_build else _image_reference(s)
    return DeploymentPlan(
        config=cfg, names=names, vllm_version=version, image_ref=image_ref, image_build=image_build,
        model_upload=model_upload, served_model_name=served_name, tensor_parallel_size=tp, dtype=dtype,
        host_cache_dir=host_cache_dir,
        timeline_file=DEPLOY_TIMELINE_FILE if cfg.target == "aws" else f"{host_cache_dir}/deploy-timeline",
        vllm=vllm_container_spec(cfg, names, image_ref, argv, host_cache_dir, model_upload, tp, version,
                                 cpu_kv_cache_gib=cfg.local.local_cpu_kv_cache_gib if on_cpu else None),
        # Always behind the proxy: a switchable proxy would hand the API port from one container to the
        # other within one update, which Pulumi cannot order (a removed resource is deleted last).
        proxy=proxy_container_spec(cfg, names, host_cache_dir),
        proxy_settings=proxy_settings,
        fit=fit, instance=instance,
        cache_volume=volume,
        warnings=tuple(warnings), model_facts=facts,
        costs=None if fleet is not None else _costs(cfg, instance, volume, region),
        api_servers=servers, fleet=fleet,
    )


def _local_config(cfg: StackConfig, machine: LocalMachine, problems: list[str],
                  warnings: list[str]) -> tuple[StackConfig, bool]:
    """target=local planned as an existing host, with this machine's facts as the defaults: `~/` is the
    deploying user's home, the containers run as that user (who creates, and so owns, the cache folder),
    and its GPUs are described by nvidia-smi unless the settings describe them. Returns (config, on CPU)."""
    host, server, device = cfg.existing_host, cfg.server, cfg.local.local_device
    on_gpu = device == "gpu" or (device == "auto" and bool(machine.gpus))
    if device == "gpu" and not machine.gpus:
        why = machine.gpu_probe_note or "nvidia-smi lists none"
        problems.append(f"localDevice: gpu, but this machine shows no NVIDIA GPU ({why}); set localDevice to "
                        "cpu, or auto")
    cache = host.host_cache_dir if "host_cache_dir" in host.model_fields_set else LOCAL_CACHE_DIR
    host_update: dict[str, object] = {
        "host_cache_dir": machine.home.rstrip("/") + cache[1:] if cache.startswith("~/") else cache}
    described = host.host_gpu_model is not None or host.host_gpu_memory_gib is not None
    if on_gpu and machine.gpus and not described:
        host_update["host_gpu_memory_gib"] = machine.gpus[0].memory_gib
        host_update["host_gpu_compute_capability"] = machine.gpus[0].compute_capability
    if on_gpu and machine.gpus and host.host_gpu_count is None:
        host_update["host_gpu_count"] = len(machine.gpus)
    # On the CPU the engine itself uses every core: no CPUs to spare for more API servers.
    if on_gpu and machine.cpus and host.host_cpu_count is None:
        host_update["host_cpu_count"] = machine.cpus
    server_update: dict[str, object] = {}
    if "container_user" not in server.model_fields_set:
        server_update["container_user"] = machine.user
    if not on_gpu:
        if "image" not in server.model_fields_set:
            server_update["image"] = VLLM_CPU_IMAGE_REPOSITORY
        warnings.append(f"target=local on the CPU ({machine.gpu_probe_note or 'localDevice cpu'}): vLLM's CPU "
                        f"build serves slowly, with a KV cache of localCpuKvCacheGib="
                        f"{cfg.local.local_cpu_kv_cache_gib} GiB of RAM; use a small model")
    local = cfg.model_copy(update={"existing_host": host.model_copy(update=host_update),
                                   "server": server.model_copy(update=server_update)})
    return local, not on_gpu


def _tensor_parallel_size(s: ServerSettings, gpus_for_container: int | None, problems: list[str]) -> int:
    """The setting, else one shard per GPU the container gets."""
    tp = s.tensor_parallel_size or gpus_for_container or 1
    if gpus_for_container is not None and tp > gpus_for_container:
        problems.append(
            f"tensorParallelSize: {tp} is more than the {gpus_for_container} GPU(s) the container gets "
            "(gpus); give it more GPUs or lower tensorParallelSize"
        )
    return tp


def _fleet(cfg: StackConfig, instance: gpu_catalog.GpuInstanceType | None, volume: CacheVolume | None,
           region: str | None, problems: list[str], model_upload: ModelUpload | None) -> FleetPlan | None:
    """`replicas` set on AWS: the fleet's numbers and costs (each instance has a cache and a root volume)."""
    if cfg.target != "aws" or cfg.fleet.replicas is None or instance is None or volume is None:
        return None
    prices = prices_for(region).prices
    volumes = (volume_usd_per_month(VolumeSpec("gp3", volume.size_gb, volume.iops, volume.throughput_mib_s), prices)
               + volume_usd_per_month(VolumeSpec("gp3", cfg.aws.root_volume_size_gb), prices))
    monitoring = MONITORING.fleet_usage(alarm_email=cfg.aws.alarm_email is not None) if cfg.aws.metrics else None
    copy = model_upload.contents.total_bytes if model_upload is not None else 0
    return plan_fleet(cfg.fleet, instance, volumes, region or gpu_catalog.PRICE_REGION, problems, monitoring, copy)


def _costs(cfg: StackConfig, instance: gpu_catalog.GpuInstanceType | None, volume: CacheVolume | None,
           region: str | None) -> CostEstimate | None:
    if instance is None or volume is None:
        return None
    adopted = cfg.aws.cache_volume_id
    cache = None if adopted else VolumeSpec(volume.type, volume.size_gb, volume.iops, volume.throughput_mib_s)
    # The root volume is gp3 at its free baseline (the instance sets no IOPS or throughput for it).
    root = VolumeSpec("gp3", cfg.aws.root_volume_size_gb)
    monitoring = MONITORING.usage(
        instance.gpu_count, idle_stop=cfg.aws.idle_stop_minutes is not None,
        alarm_email=cfg.aws.alarm_email is not None, recovery_alarm=cfg.aws.recovery_alarm,
    ) if cfg.aws.metrics else None
    return estimate_costs(instance, cache, root, region, adopted_volume_id=adopted, capacity=cfg.aws.capacity,
                          idle_stop_minutes=cfg.aws.idle_stop_minutes, monitoring=monitoring)


# ----------------------------------------------------------------------------------------------
# The vLLM command line.

def vllm_argv(s: ServerSettings, model_arg: str, served_name: str | None, revision: str | None,
              dtype: str, tp: int, version: VllmVersion | None, *, api_server_count: int = 1) -> tuple[str, ...]:
    """The container's args: what follows the image's entrypoint. `vllm serve` takes the model as its
    positional argument (its `--model` is deprecated); the api_server module of older images needs
    `--model`. The API key is not here: it reaches vLLM as VLLM_API_KEY, which every release since 0.3
    reads. `api_server_count` is `api_servers(...).count`: rendered only above 1, where it takes effect."""
    argv = [model_arg] if version is not None and model_is_positional(version) else ["--model", model_arg]
    if served_name and served_name != model_arg:
        argv += ["--served-model-name", served_name]
    if revision:
        argv += ["--revision", revision]
    if dtype != "auto":
        argv += ["--dtype", dtype]
    if tp > 1:
        argv += ["--tensor-parallel-size", str(tp)]
    argv += ["--gpu-memory-utilization", f"{s.gpu_memory_utilization:g}"]
    optional: list[tuple[str, object]] = [
        ("--max-model-len", s.max_model_len),
        ("--max-num-seqs", s.max_num_seqs),
        ("--block-size", s.block_size),
        ("--swap-space", s.swap_space),
        ("--quantization", s.quantization),
        ("--kv-cache-dtype", None if s.kv_cache_dtype == "auto" else s.kv_cache_dtype),
    ]
    for flag, value in optional:
        if value is not None:
            argv += [flag, str(value)]
    if s.trust_remote_code:
        argv.append("--trust-remote-code")
    if api_server_count > 1:
        argv += ["--api-server-count", str(api_server_count)]
    # The docs UI and schema are not an API anyone should reach; off wherever the image knows the flag.
    if version is None or flag_available("--disable-fastapi-docs", version):
        argv.append("--disable-fastapi-docs")
    # uvicorn's access log writes each request line, query string included, so a key a client put in the
    # URL (`?api_key=...`, refused with 401) would land in the container's log; the proxy logs requests
    # without their query strings instead.
    if version is None or flag_available("--disable-uvicorn-access-log", version):
        argv.append("--disable-uvicorn-access-log")
    argv += s.extra_args
    return tuple(argv)


# ----------------------------------------------------------------------------------------------
# API server processes: apiServerCount, or a default from the machine's CPUs.

# Each API server takes a CPU core under load (the H200 runs in apiServerCount's description). A vCPU of
# the catalog's GPU instance types is one hyperthread, so a core is two vCPUs.
VCPUS_PER_CORE = 2
# The proxy's nginx workers, and the boot prefetch (image pull, model download) that still runs while
# vLLM starts: one core between them.
HOST_SIDE_CORES = 1
# The best of the counts measured on the H200 (8 servers served less than 4).
MAX_DEFAULT_API_SERVERS = 4


@dataclass(frozen=True)
class ApiServers:
    count: int
    why: str


def _engine_cores(tp: int) -> int:
    """One busy process per GPU (the worker that launches its kernels), plus the scheduler (EngineCore) as
    a process of its own once tensor parallelism puts the workers in separate processes. Each keeps a core
    to itself: an engine that waits for CPU leaves its GPU idle."""
    return tp + (1 if tp > 1 else 0)


def api_servers(s: ServerSettings, instance: gpu_catalog.GpuInstanceType | None, tp: int,
                version: VllmVersion | None, problems: list[str], warnings: list[str], *,
                host_vcpus: int | None = None) -> ApiServers:
    """How many API server processes vLLM runs: the setting, else one per core the engine, the proxy and
    the boot prefetch leave free on the instance type or the host (`host_vcpus`: hostCpuCount), at most
    MAX_DEFAULT_API_SERVERS; 1 where the image runs one, or where the program does not know the CPUs."""
    several = version is not None and runs_several_api_servers(version)
    flags = [arg for arg in s.extra_args if arg.split("=", 1)[0] in ("--api-server-count", "-asc")]
    if flags:
        problems.append(f"extraArgs: {flags[0]}: set apiServerCount instead (the plan derives a default from the "
                        "instance type; two values would leave the last one in charge)")
    budget = None
    if instance is not None:
        spare = instance.vcpus // VCPUS_PER_CORE - _engine_cores(tp) - HOST_SIDE_CORES
        budget = (max(spare, 1), f"{instance.name}: {instance.vcpus} vCPUs, {_engine_cores(tp)} core(s) for the "
                                 f"engine, {HOST_SIDE_CORES} for the proxy and the boot prefetch")
    elif host_vcpus is not None:
        spare = host_vcpus // VCPUS_PER_CORE - _engine_cores(tp) - HOST_SIDE_CORES
        budget = (max(spare, 1), f"the host's {host_vcpus} vCPUs (hostCpuCount), {_engine_cores(tp)} core(s) for "
                                 f"the engine, {HOST_SIDE_CORES} for the proxy")
    if version is None:
        return ApiServers(1, "the image's vLLM version is unknown")  # reported by _image_version
    if s.api_server_count is not None:
        if not several and s.api_server_count > 1:
            entry = " ".join(image_entrypoint(version))
            warnings.append(f"apiServerCount={s.api_server_count}: the vLLM {version} image runs `{entry}`, "
                            f"which runs one API server (several from vLLM {SERVE_ENTRYPOINT_SINCE}, whose "
                            "image runs `vllm serve`); not rendered")
            return ApiServers(1, f"the vLLM {version} image runs one")
        if budget is not None and s.api_server_count > budget[0]:
            warnings.append(f"apiServerCount={s.api_server_count} is more than the {budget[0]} core(s) left for "
                            f"API servers ({budget[1]}): they take CPU from the engine under load")
        return ApiServers(s.api_server_count, "apiServerCount")
    if not several:
        return ApiServers(1, f"the vLLM {version} image runs one")
    if budget is None:
        return ApiServers(1, "the host's vCPUs are unknown: set hostCpuCount (`nproc`), or apiServerCount to "
                             f"about one per core the engine leaves free, at most {MAX_DEFAULT_API_SERVERS}")
    count = min(budget[0], MAX_DEFAULT_API_SERVERS)
    return ApiServers(count, f"default for {budget[1]}; at most {MAX_DEFAULT_API_SERVERS}")


# ----------------------------------------------------------------------------------------------
# Container specs.

# What brings a stopped container back, per target (the README's "Restarts" table):
# - aws: the instance runs this endpoint alone, so its declared state is "running". `always` also starts a
#   container someone stopped through Docker's API once dockerd restarts or the instance boots; the
#   host's supervisor (infra/host/supervise-containers.sh) starts it again within seconds before that.
# - existing-host, local: someone else's machine. `unless-stopped` respects a `docker stop` by its owner
#   (to free the GPU, say) across reboots; a crash or an OOM kill is restarted all the same.
RESTART_POLICY: dict[str, RestartPolicy] = {"aws": "always", "existing-host": "unless-stopped",
                                            "local": "unless-stopped"}


def vllm_container_spec(cfg: StackConfig, names: EndpointNames, image_ref: str, argv: tuple[str, ...],
                        host_cache_dir: str, model_upload: ModelUpload | None, tp: int,
                        version: VllmVersion, *, cpu_kv_cache_gib: int | None = None) -> ContainerSpec:
    """`cpu_kv_cache_gib` (target=local without a GPU): no GPU request; vLLM's CPU build sizes its KV
    cache by that many GiB of RAM instead."""
    s = cfg.server
    request = (GpuRequest(gpus=None, runtime=None, env=((VLLM_CPU_KV_CACHE_ENV, str(cpu_kv_cache_gib)),))
               if cpu_kv_cache_gib is not None else gpu_request(s.gpus))
    uid, gid = s.container_user.split(":")
    mounts = [Mount(f"{host_cache_dir}/{CACHE_SUBDIR_ROOT}", CONTAINER_CACHE_ROOT)]
    if model_upload is not None:
        mounts.append(Mount(model_upload.remote_dir, CONTAINER_MODEL_DIR, read_only=True))
    env = [
        # HOME is a tmpfs the container user owns (the image's /root is root-only); the caches
        # below it are the persistent volume.
        ("HOME", "/root"),
        # containerUser has no /etc/passwd entry in the image: these give user-name lookups
        # (`getpass.getuser()`, torch's Inductor cache dir) an answer on every image; extraEnv wins.
        *((name, CONTAINER_USER_NAME) for name in ("USER", "LOGNAME") if name not in s.extra_env),
        ("HF_HOME", CONTAINER_HF_HOME),
        ("VLLM_CACHE_ROOT", CONTAINER_VLLM_CACHE_ROOT),
        *request.env,
        *sorted(s.extra_env.items()),
    ]
    secret_env = [SECRET_API_KEY_ENV]
    if cfg.secrets.hf_token is not None:
        secret_env.append(SECRET_HF_TOKEN_ENV)
    ipc = s.ipc if s.ipc != "auto" else ("host" if tp > 1 else "private")
    return ContainerSpec(
        name=names.vllm_container,
        image=image_ref,
        args=argv,
        env=tuple(env),
        secret_env=tuple(secret_env),
        gpus=request.gpus,
        runtime=request.runtime,
        ipc_mode=ipc,
        shm_size_mb=s.shm_size_gb * 1024 if ipc == "private" else None,
        # No published port: only the proxy reaches vLLM, over the private network.
        mounts=tuple(mounts),
        tmpfs=(("/root", f"rw,exec,uid={uid},gid={gid},mode=0755"),),
        restart=RESTART_POLICY[cfg.target],
        health=VLLM_HEALTH,
        log_opts=LOG_OPTS,
        network=names.network,
        network_aliases=(VLLM_UPSTREAM_HOST,),
        labels=(
            (ROLE_TAG, VLLM_ROLE),
            (ENDPOINT_TAG, names.endpoint),
            (VLLM_VERSION_LABEL, str(version)),
            *(((INSECURE_IMAGE_OPT_IN_LABEL, "true"),) if cfg.access.allow_insecure_image else ()),
        ),
        user=s.container_user,
        cap_drop=("ALL",),
        security_opts=("no-new-privileges:true",),
        init=True,
        stop_timeout_s=VLLM_STOP_TIMEOUT_S,
        ulimits=(open_files(s.container_open_files),),
    )


def _proxy_settings(cfg: StackConfig, gpu: gpu_catalog.GpuModel | None, problems: list[str],
                    warnings: list[str]) -> ProxySettings:
    nginx = nginx_version(cfg.access.proxy_image)
    pooled = nginx is not None and nginx >= NGINX_UPSTREAM_RESOLVE_SINCE
    if not pooled:
        since = ".".join(map(str, NGINX_UPSTREAM_RESOLVE_SINCE))
        warnings.append(f"proxyImage {cfg.access.proxy_image}: not an nginx {since} or newer (by its tag), so "
                        "the proxy opens a new connection to vLLM for every request (pooled connections need "
                        f"`server ... resolve`, nginx {since}); use nginx:{since} or newer")
    # The batch vLLM runs sizes the proxy's connections: the setting, else vLLM's default for the GPU,
    # else the largest default it picks for any GPU, so that an unknown GPU is never under-served.
    gpus = [gpu] if gpu is not None else gpu_catalog.GPU_MODELS.values()
    max_num_seqs = cfg.server.max_num_seqs or max(default_scheduler_limits(g)[0] for g in gpus)
    # The proxy's workers raise their open-files limit to what its connections need (worker_rlimit_nofile);
    # the container's hard limit, containerOpenFiles, caps that, and nginx would start with fewer.
    needed = connection_limits(max_num_seqs).open_files
    if cfg.server.container_open_files < needed:
        problems.append(f"containerOpenFiles: {cfg.server.container_open_files} is below the {needed} open files "
                        f"the proxy needs for {max_num_seqs} sequences at once (maxNumSeqs): raise containerOpenFiles "
                        f"to {needed} or more, or lower maxNumSeqs")
    return ProxySettings(metrics_allowed_cidrs=tuple(cfg.access.metrics_allowed_cidrs),
                         tls=cfg.access.tls == "self-signed", pooled_upstream=pooled, max_num_seqs=max_num_seqs)


_NGINX_TAG = re.compile(r"^(?:[a-z0-9._-]+/)*nginx(?:-unprivileged)?:(\d+)\.(\d+)\.(\d+)(?:[-@]|$)")


def nginx_version(image: str) -> tuple[int, int, int] | None:
    """The nginx release an image's tag names (`nginx:1.29.3-alpine` -> (1, 29, 3)); None for an image
    that is not nginx by its name or whose tag names no full release (`nginx:stable`, `nginx:1.29`)."""
    match = _NGINX_TAG.match(image)
    return None if match is None else (int(match[1]), int(match[2]), int(match[3]))


def proxy_container_spec(cfg: StackConfig, names: EndpointNames, host_cache_dir: str) -> ContainerSpec:
    proxy_dir = f"{host_cache_dir}/{CACHE_SUBDIR_PROXY}"  # DeploymentPlan.proxy_dir
    mounts = [Mount(f"{proxy_dir}/{PROXY_CONFIG_FILE}", PROXY_CONFIG_PATH, read_only=True),
              Mount(f"{proxy_dir}/{PROXY_KEY_CHECK_FILE}", PROXY_KEY_CHECK_PATH, read_only=True)]
    if cfg.access.tls == "self-signed":
        mounts.append(Mount(f"{proxy_dir}/{PROXY_TLS_SUBDIR}", PROXY_TLS_DIR, read_only=True))
    return ContainerSpec(
        name=names.proxy_container,
        image=cfg.access.proxy_image,
        # Replaces the image's CMD only; its entrypoint (nginx's own) stays.
        args=("nginx", "-c", PROXY_CONFIG_PATH, "-g", "daemon off;"),
        # target=local answers on this machine's loopback only (the other targets filter by security
        # group or by the host's own firewall).
        ports=(PortMapping(cfg.server.api_port, PROXY_CONTAINER_PORT,
                           host_ip=LOCAL_API_ADDRESS if cfg.target == "local" else ""),),
        mounts=tuple(mounts),
        tmpfs=(("/tmp", "rw,noexec,nosuid,size=256m"),),
        restart=RESTART_POLICY[cfg.target],
        log_opts=LOG_OPTS,
        network=names.network,
        # infra/render/proxy.py adds the rendered config's digest (nginx reads its files at start).
        labels=((ROLE_TAG, PROXY_ROLE), (ENDPOINT_TAG, names.endpoint)),
        # Same unprivileged user as vLLM: it owns the files on the host (the TLS key is 0600).
        user=cfg.server.container_user,
        read_only_root=True,
        cap_drop=("ALL",),
        security_opts=("no-new-privileges:true",),
        # The proxy holds two connections per proxied request and its idle pool to vLLM in each worker.
        ulimits=(open_files(cfg.server.container_open_files),),
    )


# ----------------------------------------------------------------------------------------------
# Pieces of build_plan.

def _dtype(s: ServerSettings, gpu: gpu_catalog.GpuModel | None, arch: model_facts.ModelArchitecture | None,
           problems: list[str]) -> tuple[str, str]:
    """(dtype, dtype flag): `dtype` is what runs (for the fit check and the plan); the flag what is rendered:
    an explicit choice, or the float16 fallback `auto` would take on GPUs without bfloat16 (explicit, because
    older images picked differently); otherwise vLLM's own `auto` stays in charge."""
    dtype, dtype_flag = s.dtype, s.dtype
    if gpu is not None and arch is not None:
        try:
            dtype = resolve_dtype(s.dtype, gpu, arch)
        except ValueError as err:
            problems.append(f"dtype: {err}")
        else:
            if s.dtype == "auto" and dtype != arch.torch_dtype:
                dtype_flag = dtype
    return dtype, dtype_flag


def _gpu_floor(version: VllmVersion, gpu: gpu_catalog.GpuModel | None, problems: list[str]) -> None:
    if gpu is not None and not gpu.supported_by_vllm and version >= VllmVersion.parse(SECURITY_FLOOR):
        key = "hostGpuComputeCapability" if gpu.unlisted else "instanceType/hostGpuModel"
        problems.append(
            f"{key}: {gpu.name} has compute capability {gpu.compute_capability_str}; vLLM {version} needs "
            "7.5 or newer (T4, A10G, L4, L40S, A100, H100, H200, B200): choose e.g. g5.xlarge"
        )


@dataclass(frozen=True)
class _FitInputs:
    arch: model_facts.ModelArchitecture | None
    gpu: gpu_catalog.GpuModel | None
    instance: gpu_catalog.GpuInstanceType | None
    gpus_for_container: int | None
    tensor_parallel_size: int
    dtype: str
    served_name: str


def _fit(cfg: StackConfig, f: _FitInputs, problems: list[str], warnings: list[str]) -> FitReport | None:
    """The GPU memory fit, or the warning saying why it was not checked."""
    s = cfg.server
    if s.quantization is not None and s.quantization not in QUANTIZATION_WEIGHT_BYTES:
        warnings.append(f"GPU memory fit not checked: quantization {s.quantization!r} is not modelled "
                        f"(modelled: {', '.join(sorted(QUANTIZATION_WEIGHT_BYTES))})")
        return None
    if f.gpu is not None and not f.gpu.supported_by_vllm:
        return None  # refused by _gpu_floor for current images; the fit model does not cover pre-Turing GPUs
    if f.arch is not None and f.gpu is not None and f.gpus_for_container is not None:
        try:
            fit = check_fit(
                f.arch, f.gpu, gpus_for_container=f.gpus_for_container, tensor_parallel_size=f.tensor_parallel_size,
                dtype=f.dtype, quantization=s.quantization,
                kv_cache_dtype=None if s.kv_cache_dtype == "auto" else s.kv_cache_dtype,
                max_model_len=s.max_model_len, gpu_memory_utilization=s.gpu_memory_utilization,
                max_num_seqs=s.max_num_seqs, instance_type=f.instance,
            )
        except ValueError as err:
            problems.append(f"fit check: {err}")
            return None
        if not fit.fits:
            problems.append(fit.error_message())
        return fit
    if f.gpu is None:
        warnings.append("GPU memory fit not checked: set hostGpuModel (and hostGpuCount) for this host, or "
                        "hostGpuMemoryGib and hostGpuComputeCapability for a GPU not in docs/gpu-catalog.md")
    elif f.arch is None:
        warnings.append(f"GPU memory fit not checked: the architecture of {f.served_name} is unknown; set "
                        "modelArchitecture")
    return None


def _hub_model_facts(cfg: StackConfig, shipped: model_facts.ModelArchitecture | None,
                     gpu: gpu_catalog.GpuModel | None, fetcher: HubFetcher | None,
                     problems: list[str]) -> tuple[model_facts.ModelArchitecture | None, ModelFacts | None]:
    """The Hub model's architecture: the Hub's own config.json at the pinned revision when it answers,
    else the shipped table. An explicit modelArchitecture is the user's word and wins without asking."""
    m = cfg.model
    if m.model_architecture is not None:
        return shipped, _with_estimate(ModelFacts("modelArchitecture setting"), shipped)
    label = "shipped table" if shipped is not None else "unknown"
    if gpu is None and cfg.target == "aws":
        # Nothing to check it against (no GPU known, so no fit and no cache volume): no Hub traffic. An
        # existing host or this machine still asks: the weights' size is checked against its disk.
        return shipped, None
    if fetcher is None or m.model.startswith("/"):  # a path inside a custom image is not a Hub repo
        return shipped, _with_estimate(ModelFacts(label), shipped)
    token = cfg.secrets.hf_token.get_secret_value() if cfg.secrets.hf_token is not None else None
    try:
        hub = fetcher(HubQuery(m.model, m.model_revision, token))
    except HubRefused as err:
        problems.append(_scrub(str(err), token))
        return shipped, None
    except Exception as err:  # whatever the fetcher hits, the plan falls back to the shipped facts
        reason = _scrub(str(err) or type(err).__name__, token)
        return shipped, _with_estimate(ModelFacts(f"{label} (Hub not used: {reason})"), shipped)
    params = tuple(sorted(hub.parameters_by_dtype.items()))
    if hub.architecture is None:
        # Read, but not a layout the fit check models (mixture of experts, multimodal): the weights still count.
        return shipped, ModelFacts(f"{label} (not modelled: {hub.source})", hub.weight_bytes,
                                   parameters_by_dtype=params, note=_scrub(hub.note, token))
    return hub.architecture, ModelFacts(hub.source, hub.weight_bytes, parameters_by_dtype=params,
                                        note=_scrub(hub.note, token))


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "<hfToken>") if token else text


def _with_estimate(facts: ModelFacts, arch: model_facts.ModelArchitecture | None) -> ModelFacts:
    """Without safetensors metadata: parameters x checkpoint dtype bytes (not for packed quantized weights)."""
    if arch is None or arch.quantization is not None:
        return facts
    return ModelFacts(facts.source, arch.parameter_count * DTYPE_BYTES[arch.torch_dtype], weight_bytes_estimated=True,
                      note=facts.note)


def _cache_volume_room(cfg: StackConfig, facts: ModelFacts | None, problems: list[str]) -> None:
    """The weights land on the AWS cache volume (with the compile caches), and with cacheImages Docker's image
    store too: a full volume fails the download or the pull."""
    weights = facts.weight_bytes if facts is not None and facts.weight_bytes is not None else 0
    image = VLLM_IMAGE_DISK_GIB * GIB if cfg.fleet.cache_images else 0
    size_gb = cfg.aws.cache_volume_size_gb
    if cfg.target != "aws" or weights + image <= size_gb * GIB:
        return
    needs = []
    if weights:
        about = "about " if facts is not None and facts.weight_bytes_estimated else ""
        needs.append(f"the model's weights need {about}{weights / GIB:.1f} GiB")
    if image:
        needs.append(f"the vLLM image (cacheImages) about {VLLM_IMAGE_DISK_GIB} GiB")
    # Headroom for vLLM's torch.compile and CUDA-graph caches, which live on the same volume.
    suggested = math.ceil((weights + image) / GIB * 1.1 / 10 + 1) * 10
    problems.append(f"cacheVolumeSizeGb: {' and '.join(needs)}; the cache volume is {size_gb} GiB: raise "
                    f"cacheVolumeSizeGb (e.g. to {suggested})")


def _concurrency_warnings(s: ServerSettings) -> list[str]:
    if s.max_num_seqs is not None and s.max_num_seqs <= 32:
        return [f"maxNumSeqs={s.max_num_seqs} caps concurrency; measured with 16 against vLLM's default: "
                f"{MAX_NUM_SEQS_16_MEASURES}; unset it unless you need the cap"]
    return []


# The settings that render a vLLM flag (vllm_argv), so that a flag the image refuses is reported under the
# setting the user wrote, not under extraArgs.
_SETTING_OF_FLAG = {
    "--model": "model", "--served-model-name": "servedModelName", "--revision": "modelRevision", "--dtype": "dtype",
    "--tensor-parallel-size": "tensorParallelSize", "--gpu-memory-utilization": "gpuMemoryUtilization",
    "--max-model-len": "maxModelLen", "--max-num-seqs": "maxNumSeqs", "--block-size": "blockSize",
    "--swap-space": "swapSpace", "--quantization": "quantization", "--kv-cache-dtype": "kvCacheDtype",
    "--trust-remote-code": "trustRemoteCode", "--api-server-count": "apiServerCount",
}


def _flag_problems(argv: tuple[str, ...], extra_count: int, version: VllmVersion) -> list[str]:
    """check_server_args' problems, each under the setting that rendered the flag; what only the user's own
    arguments add is reported under extraArgs."""
    problems: list[str] = []
    # A flag the image no longer has is named with its setting and left out of the argv check, which would
    # report it again in vLLM's terms. (Every such flag exists from the oldest release the table covers.)
    rendered: list[str] = []
    tokens = list(argv[:len(argv) - extra_count])
    while tokens:
        token = tokens.pop(0)
        setting = _SETTING_OF_FLAG.get(token)
        removed = flag_spec(token).removed if setting is not None else None
        if setting is not None and removed is not None and version >= removed:
            problems.append(_removed_flag(setting, token, version))
            if tokens and not tokens[0].startswith("--"):
                tokens.pop(0)  # its value
            continue
        rendered.append(token)
    own = check_server_args(rendered, version)
    for problem in own:
        flag = problem.split(":", 1)[0]
        setting = _SETTING_OF_FLAG.get(flag)
        problems.append(f"{setting} ({flag}){problem.removeprefix(flag)}" if setting else f"vLLM flags: {problem}")
    # What the user's own arguments add: the whole argv's problems less those of the rendered part.
    added = check_server_args([*rendered, *argv[len(argv) - extra_count:]], version) if extra_count else []
    for problem in own:
        if problem in added:
            added.remove(problem)
    return problems + [f"extraArgs: {p}" for p in added]


def _removed_flag(setting: str, flag: str, version: VllmVersion) -> str:
    spec = flag_spec(flag)
    # The table's advice ends in vLLM's terms ("remove it"); the user removes the setting instead.
    why = (spec.replacement or "").removesuffix("; remove it")
    return (f"{setting}: vLLM {version} (the image's) has no {flag}: it was removed in vLLM {spec.removed}"
            f"{f'; {why}' if why else ''}. Unset it: `pulumi config rm {setting}`")


def _image_reference(s: ServerSettings) -> str:
    ref = f"{s.image}:{s.image_tag}"
    return f"{ref}@{s.image_digest}" if s.image_digest else ref


def _image_version(s: ServerSettings, problems: list[str]) -> VllmVersion | None:
    if s.image_build_context is not None:
        dockerfile = s.image_build_context / "Dockerfile"
        try:
            base_image, base_tag = dockerfile_base(dockerfile.read_text())
        except (OSError, ValueError) as err:
            problems.append(f"imageBuildContext: {dockerfile}: {err}")
            return None
        if s.vllm_version is None:
            if base_image != s.image or base_tag is None:
                problems.append(
                    f"imageBuildContext: {dockerfile} builds FROM {base_image}:{base_tag}, not {s.image}:<version>; "
                    "set vllmVersion to the vLLM version inside it"
                )
                return None
            return _parse_version(base_tag, "imageBuildContext (FROM tag)", problems)
    if s.vllm_version is not None:
        return _parse_version(s.vllm_version, "vllmVersion", problems)
    return _parse_version(s.image_tag, "imageTag", problems, hint="set vllmVersion to the vLLM version inside it")


def _parse_version(text: str, key: str, problems: list[str], hint: str = "") -> VllmVersion | None:
    try:
        return VllmVersion.parse(text)
    except ValueError as err:
        problems.append(f"{key}: {err}" + (f"; {hint}" if hint else ""))
        return None


def _security_floor(version: VllmVersion, cfg: StackConfig, problems: list[str], warnings: list[str]) -> None:
    if version >= VllmVersion.parse(SECURITY_FLOOR):
        return
    advisories = ", ".join(ADVISORIES_BELOW_FLOOR)
    if not cfg.access.allow_insecure_image:
        problems.append(
            f"imageTag: vLLM {version} is older than the security floor v{SECURITY_FLOOR} and carries "
            f"{advisories}; use v{SECURITY_FLOOR} or newer, or set allowInsecureImage=true (keeps the proxy on)"
        )
    else:
        warnings.append(f"running vLLM {version} below the security floor v{SECURITY_FLOOR} ({advisories}) "
                        "by allowInsecureImage; only the proxy's allowlist stands in front of it")


def _gpu_facts(cfg: StackConfig, problems: list[str]) -> tuple[
        gpu_catalog.GpuInstanceType | None, gpu_catalog.GpuModel | None, int | None]:
    """(instance type, GPU model, GPUs on the host) as far as the config tells."""
    if cfg.target == "aws":
        try:
            instance = gpu_catalog.lookup_instance_type(cfg.aws.instance_type)
        except ValueError as err:
            problems.append(f"instanceType: {err}")
            return None, None, None
        if cfg.server.gpus != "all":
            bad = [d for d in cfg.server.gpus if d.isdigit() and int(d) >= instance.gpu_count]
            if bad:
                problems.append(
                    f"gpus: {instance.name} has {instance.gpu_count} GPU(s) (indexes 0-{instance.gpu_count - 1}); "
                    f"{', '.join(bad)} does not exist"
                )
        return instance, instance.gpu, instance.gpu_count
    host = cfg.existing_host
    if host.host_gpu_memory_gib is not None and host.host_gpu_compute_capability is not None:
        gpu = gpu_catalog.unlisted_gpu(host.host_gpu_memory_gib, host.host_gpu_compute_capability)
        return None, gpu, host.host_gpu_count
    if host.host_gpu_model is None:
        return None, None, host.host_gpu_count
    try:
        return None, gpu_catalog.lookup_gpu_model(host.host_gpu_model), host.host_gpu_count
    except ValueError as err:
        problems.append(f"hostGpuModel: {err}")
        return None, None, host.host_gpu_count


def _model_source(cfg: StackConfig, host_cache_dir: str, problems: list[str]) -> tuple[
        ModelUpload | None, ImageBuild | None, str, str, model_facts.ModelArchitecture | None]:
    """(upload, build, --model argument, served name, architecture for the fit check)."""
    m, s = cfg.model, cfg.server
    override = _architecture_override(m.model_architecture, problems)
    if m.model_path is not None:
        folder = m.model_path.expanduser()
        errors = model_facts.validate_model_dir(folder)
        if errors:
            problems += [f"modelPath: {e}" for e in errors]
            return None, None, CONTAINER_MODEL_DIR, m.served_model_name or folder.name, override
        try:
            contents = folder_contents(folder)
        except ValueError as err:
            problems.append(f"modelPath: {err}")
            return None, None, CONTAINER_MODEL_DIR, m.served_model_name or folder.name, override
        upload = ModelUpload(folder, contents, f"{host_cache_dir}/{CACHE_SUBDIR_MODELS}/{contents.digest[:16]}")
        arch = override
        if arch is None:
            try:
                arch = model_facts.architecture_from_model_dir(folder)
            except ValueError as err:
                problems.append(f"modelPath: {err}")
        return upload, None, CONTAINER_MODEL_DIR, m.served_model_name or folder.name, arch
    if s.image_build_context is not None:
        context = s.image_build_context.expanduser()
        if not context.is_dir():
            problems.append(f"imageBuildContext: {context} is not a folder")
            return None, None, m.model, m.served_model_name or Path(m.model).name, override
        tag = f"{CUSTOM_IMAGE_REPOSITORY}:{folder_digest(context)[:16]}"
        served = m.served_model_name or Path(m.model).name
        return None, ImageBuild(context, tag), m.model, served, override
    arch = override or model_facts.KNOWN_MODELS.get(m.model)
    return None, None, m.model, m.served_model_name or m.model, arch


def _architecture_override(values: dict[str, int | float | str] | None,
                           problems: list[str]) -> model_facts.ModelArchitecture | None:
    if values is None:
        return None
    try:
        return model_facts.architecture_from_config(values)
    except ValueError as err:
        problems.append(f"modelArchitecture: {err}")
        return None
