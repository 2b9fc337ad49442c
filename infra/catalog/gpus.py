"""The AWS GPU instance types the product can deploy to, and the GPUs in them.

Pure data plus lookups: no Pulumi, no network. `infra/plan/fit.py` uses it to decide, before any cloud
resource exists, whether a model fits; the renderer uses the EBS figures to size the cache volume.

The facts are in data/gpus.yaml and data/instance-types.yaml, each with its sources and the date they
were checked; this module loads and validates them once, at import.

Which GPU memory figure and why: `GpuModel.memory_gib` is the driver's total (`nvidia-smi`
memory.total), because vLLM sizes everything from `torch.cuda.mem_get_info()` total x
`--gpu-memory-utilization` (vLLM 0.32.0 `v1/worker/utils.py` `request_memory`), and that total is the
driver's, not the marketing "24 GB" nor the EC2 API's `GpuInfo.MemoryInfo.SizeInMiB` (22888 MiB for
A10G and L4, below what the driver reports). The EC2 API figure is kept in `GpuModel.ec2_memory_mib`
for reference.

EBS units: AWS publishes Mbps (10^6 bit/s); gp3 throughput is provisioned in MiB/s, so
`ebs_*_mib_s` converts (Mbps x 10^6 / 8 / 2^20).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Final

from pydantic import BeforeValidator, Field, field_validator
from pydantic.dataclasses import dataclass

from vllm_endpoint.infra.catalog.data_files import (
    STRICT_ENTRY,
    DataFile,
    data_path,
    load_data_file,
    unique_names,
)

# vLLM's CUDA kernels are built for compute capability 7.5 and newer; V100 (7.0) is kept in the
# catalog only so a p3 choice is refused with this reason instead of failing on the instance.
MIN_COMPUTE_CAPABILITY: Final = (7, 5)

GPUS_FILE: Final = data_path("gpus.yaml")
INSTANCE_TYPES_FILE: Final = data_path("instance-types.yaml")


def _compute_capability(value: Any) -> Any:
    """"8.6" (as NVIDIA writes it, and the data file) -> (8, 6); a tuple passes through."""
    if isinstance(value, str):
        major, dot, minor = value.partition(".")
        if not (dot and major.isdigit() and minor.isdigit()):
            raise ValueError(f"{value!r} is not a compute capability such as \"8.6\"")
        return (int(major), int(minor))
    return value


@dataclass(frozen=True, config=STRICT_ENTRY)
class GpuModel:
    name: str
    nvidia_name: str
    memory_mib: Annotated[int, Field(gt=0)]
    ec2_memory_mib: Annotated[int, Field(gt=0)]
    compute_capability: Annotated[tuple[int, int], BeforeValidator(_compute_capability)]
    bf16: bool
    fp8: bool

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * 1024 * 1024

    @property
    def compute_capability_str(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    @property
    def supported_by_vllm(self) -> bool:
        return self.compute_capability >= MIN_COMPUTE_CAPABILITY


class GpusFile(DataFile):
    gpus: tuple[GpuModel, ...] = Field(min_length=1)

    _unique = field_validator("gpus")(unique_names)


_GPUS_DATA: Final = load_data_file(GpusFile, GPUS_FILE)
_GPUS: Final = _GPUS_DATA.gpus
GPU_MODELS: Mapping[str, GpuModel] = MappingProxyType({g.name: g for g in _GPUS})


def _gpu_by_name(value: Any) -> Any:
    """instance-types.yaml names its GPU (`gpu: A10G`); the entry holds the GpuModel itself."""
    if isinstance(value, str):
        if value not in GPU_MODELS:
            raise ValueError(f"{value!r} is not a GPU in {GPUS_FILE.name} (known: {', '.join(GPU_MODELS)})")
        return GPU_MODELS[value]
    return value


@dataclass(frozen=True, config=STRICT_ENTRY)
class GpuInstanceType:
    name: str
    gpu: Annotated[GpuModel, BeforeValidator(_gpu_by_name)]
    gpu_count: Annotated[int, Field(gt=0)]
    vcpus: Annotated[int, Field(gt=0)]
    memory_mib: Annotated[int, Field(gt=0)]
    price_usd_per_hour: Annotated[float, Field(gt=0)]
    # None where no EBS source has a value for this type (g6, g6e, p5: newer than that page). Required
    # keys all the same: the data file says `null` on purpose, it does not forget the figure.
    ebs_baseline_mbps: int | None
    ebs_max_mbps: int
    ebs_baseline_iops: int | None
    ebs_max_iops: int | None
    nitro: bool
    # Local NVMe instance store, GB (0: EBS only).
    instance_store_gb: Annotated[int, Field(ge=0)]
    source_note: str = ""

    def __post_init__(self) -> None:
        unsourced = None in (self.ebs_baseline_mbps, self.ebs_baseline_iops, self.ebs_max_iops)
        if unsourced and not self.source_note:
            raise ValueError("an EBS figure is null: say in source_note why it is not known")

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024

    @property
    def supports_recovery(self) -> bool:
        """EC2's automatic/CloudWatch `recover` action: only some families, and only without instance
        store (so of these only p3; see instance-types.yaml's sources)."""
        return self.family in RECOVER_ACTION_FAMILIES and self.instance_store_gb == 0

    @property
    def ebs_max_mib_s(self) -> float:
        return _mbps_to_mib_s(self.ebs_max_mbps)

    @property
    def ebs_baseline_mib_s(self) -> float | None:
        return None if self.ebs_baseline_mbps is None else _mbps_to_mib_s(self.ebs_baseline_mbps)

    @property
    def ebs_burst(self) -> bool | None:
        """True when the maximum is only a 30-minutes-a-day burst above the baseline."""
        if self.ebs_baseline_mbps is None:
            return None
        return self.ebs_baseline_mbps < self.ebs_max_mbps


def _mbps_to_mib_s(mbps: int) -> float:
    return mbps * 1_000_000 / 8 / (1024 * 1024)


class InstanceTypesFile(DataFile):
    price_region: str
    recover_action_families: tuple[str, ...]
    instance_types: tuple[GpuInstanceType, ...] = Field(min_length=1)

    _unique = field_validator("instance_types")(unique_names)


_INSTANCE_TYPES_DATA: Final = load_data_file(InstanceTypesFile, INSTANCE_TYPES_FILE)
_INSTANCES: Final = _INSTANCE_TYPES_DATA.instance_types
INSTANCE_TYPES: Mapping[str, GpuInstanceType] = MappingProxyType({i.name: i for i in _INSTANCES})
RECOVER_ACTION_FAMILIES: Final = frozenset(_INSTANCE_TYPES_DATA.recover_action_families)
PRICE_REGION: Final = _INSTANCE_TYPES_DATA.price_region


def supported_families() -> list[str]:
    return sorted({i.family for i in _INSTANCES})


def lookup_instance_type(name: str) -> GpuInstanceType:
    try:
        return INSTANCE_TYPES[name.strip().lower()]
    except KeyError:
        families = ", ".join(supported_families())
        raise ValueError(
            f"unknown GPU instance type {name!r}: the catalog has every size of the families "
            f"{families} (see docs/gpu-catalog.md)"
        ) from None


def lookup_gpu_model(name: str) -> GpuModel:
    """A GPU by catalog name (`A10G`) or by the name `nvidia-smi` prints (`NVIDIA A10G`), any case."""
    wanted = name.strip().lower()
    for gpu in _GPUS:
        if wanted in (gpu.name.lower(), gpu.nvidia_name.lower()):
            return gpu
    known = ", ".join(g.name for g in _GPUS)
    raise ValueError(f"unknown GPU model {name!r}: known models are {known}")


def render_markdown() -> str:
    """docs/gpu-catalog.md: the catalog as a table, with its sources."""
    lines = [
        "# GPU catalog",
        "",
        "Generated by `vllm_endpoint.infra.catalog.gpus.render_markdown()`; a unit test keeps this file equal to it.",
        "",
    ]
    return "\n".join([*lines, *_gpu_table(), *_instance_table(), *_sources_section()])


def _gpu_table() -> list[str]:
    lines = [
        "## GPUs",
        "",
        "Memory is the driver's total (`nvidia-smi` memory.total), which vLLM multiplies by",
        "`--gpu-memory-utilization`; the EC2 API's figure is shown beside it.",
        "",
        "| GPU | memory (driver) | EC2 API memory | compute capability | bf16 | fp8 | vLLM |",
        "|---|---|---|---|---|---|---|",
    ]
    floor = ".".join(str(part) for part in MIN_COMPUTE_CAPABILITY)
    for g in _GPUS:
        vllm = "yes" if g.supported_by_vllm else f"no (needs compute capability >= {floor})"
        lines.append(
            f"| {g.name} | {g.memory_mib} MiB ({g.memory_gib:.2f} GiB) | {g.ec2_memory_mib} MiB "
            f"| {g.compute_capability_str} | {_yes(g.bf16)} | {_yes(g.fp8)} | {vllm} |"
        )
    return lines


def _instance_table() -> list[str]:
    lines = [
        "",
        f"## Instance types ({PRICE_REGION}, Linux, on demand)",
        "",
        "EBS bandwidth in Mbps as AWS publishes it, MiB/s in brackets; `-` = not found in any source.",
        "",
        "| instance type | GPUs | vCPUs | RAM | USD/h | EBS baseline | EBS max | EBS IOPS base/max | Nitro "
        "| local NVMe | recover action |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i in _INSTANCES:
        baseline = "-" if i.ebs_baseline_mbps is None else (
            f"{i.ebs_baseline_mbps} ({i.ebs_baseline_mib_s:.0f})")
        iops = "-" if i.ebs_max_iops is None else f"{i.ebs_baseline_iops}/{i.ebs_max_iops}"
        store = f"{i.instance_store_gb} GB" if i.instance_store_gb else "none"
        lines.append(
            f"| {i.name} | {i.gpu_count}x {i.gpu.name} | {i.vcpus} | {i.memory_gib:g} GiB "
            f"| {i.price_usd_per_hour} | {baseline} | {i.ebs_max_mbps} ({i.ebs_max_mib_s:.0f}) "
            f"| {iops} | {_yes(i.nitro)} | {store} | {_yes(i.supports_recovery)} |"
        )
    return lines


def _sources_section() -> list[str]:
    lines = ["", "## Sources", ""]
    for path, data in ((GPUS_FILE, _GPUS_DATA), (INSTANCE_TYPES_FILE, _INSTANCE_TYPES_DATA)):
        lines.append(f"`infra/catalog/data/{path.name}`, checked {data.checked} (how each was read: see the file):")
        lines.append("")
        lines += [f"- {source.what}: {source.where}." for source in data.sources]
        lines.append("")
    return lines


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
