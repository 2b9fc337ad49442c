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
for reference, and stands in where no source has the driver's figure (`memory_mib: null`, said in the doc).

Prices: on demand, by region (`prices_usd_per_hour`); `hourly_price(instance, region)` is the lookup for a
stack's region, and `GpuInstanceType.price_usd_per_hour` the `PRICE_REGION` (us-east-1) figure, None for a
type AWS sells only as Capacity Blocks (p5e).

EBS units: AWS publishes Mbps (10^6 bit/s); gp3 throughput is provisioned in MiB/s, so
`ebs_*_mib_s` converts (Mbps x 10^6 / 8 / 2^20).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Final

from pydantic import BeforeValidator, Field, field_validator, model_validator
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
# An AWS region code: us-east-1, eu-west-1, ap-southeast-2, us-gov-west-1.
_REGION_PATTERN: Final = r"^[a-z]{2}(-[a-z]+)+-\d$"


def _compute_capability(value: Any) -> Any:
    """"8.6" (as NVIDIA writes it, and the data file) -> (8, 6); a tuple passes through."""
    if isinstance(value, str):
        major, dot, minor = value.partition(".")
        if not (dot and major.isdigit() and minor.isdigit()):
            raise ValueError(f"{value!r} is not a compute capability such as \"8.6\"")
        return (int(major), int(minor))
    return value


# vLLM 0.32.0's thresholds (platforms/cuda.py): bfloat16 from 8.0 (Ampere), native FP8 from 8.9 (Ada, Hopper,
# Blackwell). The catalog states both per GPU; a GPU described only by its capability gets them from here.
BF16_COMPUTE_CAPABILITY: Final = (8, 0)
FP8_COMPUTE_CAPABILITY: Final = (8, 9)


@dataclass(frozen=True, config=STRICT_ENTRY)
class GpuModel:
    name: str
    nvidia_name: str
    # None where no source has the driver's total (source_note says so): the EC2 API figure stands in.
    memory_mib: Annotated[int, Field(gt=0)] | None
    ec2_memory_mib: Annotated[int, Field(gt=0)]
    compute_capability: Annotated[tuple[int, int], BeforeValidator(_compute_capability)]
    bf16: bool
    fp8: bool
    aliases: tuple[str, ...] = ()
    source_note: str = ""

    def __post_init__(self) -> None:
        if self.memory_mib is None and not self.source_note:
            raise ValueError("memory_mib is null: say in source_note why it is not known")

    @property
    def fit_memory_mib(self) -> int:
        """The memory the fit check sizes from: the driver's total, else the EC2 API's figure."""
        return self.ec2_memory_mib if self.memory_mib is None else self.memory_mib

    @property
    def memory_gib(self) -> float:
        return self.fit_memory_mib / 1024

    @property
    def memory_bytes(self) -> int:
        return self.fit_memory_mib * 1024 * 1024

    @property
    def compute_capability_str(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"

    @property
    def supported_by_vllm(self) -> bool:
        return self.compute_capability >= MIN_COMPUTE_CAPABILITY

    @property
    def unlisted(self) -> bool:
        """Described by the hostGpuMemoryGib/hostGpuComputeCapability settings, not a catalog entry."""
        return not self.nvidia_name

    @property
    def names(self) -> tuple[str, ...]:
        """Every name a lookup accepts for this GPU."""
        return (self.name, self.nvidia_name, *self.aliases)


class GpusFile(DataFile):
    gpus: tuple[GpuModel, ...] = Field(min_length=1)

    _unique = field_validator("gpus")(unique_names)

    @field_validator("gpus")
    @classmethod
    def _unambiguous_names(cls, gpus: tuple[GpuModel, ...]) -> tuple[GpuModel, ...]:
        owner: dict[str, str] = {}
        for gpu in gpus:
            if gpu.unlisted:
                raise ValueError(f"{gpu.name}: nvidia_name is empty (an empty one marks a GPU given by settings)")
            for name in {n.lower() for n in gpu.names}:
                if name in owner and owner[name] != gpu.name:
                    raise ValueError(f"the name {name!r} is used by both {owner[name]} and {gpu.name}")
                owner[name] = gpu.name
        return gpus


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
    # On demand, USD/hour, by region; empty for a type AWS sells only as Capacity Blocks (source_note says so).
    prices_usd_per_hour: Mapping[Annotated[str, Field(pattern=_REGION_PATTERN)], Annotated[float, Field(gt=0)]]
    # None where no EBS source has a value for this type (g6 and later: newer than that page). Required
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
        if not self.prices_usd_per_hour and not self.source_note:
            raise ValueError("prices_usd_per_hour is empty: say in source_note why there is no on-demand price")
        # Frozen, but a dict from the file would stay mutable behind the read-only type.
        object.__setattr__(self, "prices_usd_per_hour", MappingProxyType(dict(self.prices_usd_per_hour)))

    def __hash__(self) -> int:
        # The price mapping is not hashable, and names are unique in the catalog.
        return hash(self.name)

    @property
    def price_usd_per_hour(self) -> float | None:
        """On demand in PRICE_REGION (us-east-1); None when AWS sells the type only as Capacity Blocks."""
        return self.prices_usd_per_hour.get(PRICE_REGION)

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
    price_region: Annotated[str, Field(pattern=_REGION_PATTERN)]
    # When the prices were generated from AWS's Pricing API (`checked` is when the sources were last read).
    prices_as_of: datetime.date
    recover_action_families: tuple[str, ...]
    # family -> why the product refuses it (an NVIDIA family AWS offers that cannot serve this product)
    refused_families: Mapping[str, str]
    instance_types: tuple[GpuInstanceType, ...] = Field(min_length=1)

    _unique = field_validator("instance_types")(unique_names)

    @model_validator(mode="after")
    def _priced_in_price_region(self) -> InstanceTypesFile:
        missing = [i.name for i in self.instance_types
                   if i.prices_usd_per_hour and self.price_region not in i.prices_usd_per_hour]
        if missing:
            raise ValueError(f"no {self.price_region} (price_region) price for {', '.join(missing)}: every "
                             "priced entry has one")
        listed = sorted({i.family for i in self.instance_types} & set(self.refused_families))
        if listed:
            raise ValueError(f"refused_families lists {', '.join(listed)}, which instance_types also lists")
        return self


_INSTANCE_TYPES_DATA: Final = load_data_file(InstanceTypesFile, INSTANCE_TYPES_FILE)
_INSTANCES: Final = _INSTANCE_TYPES_DATA.instance_types
INSTANCE_TYPES: Mapping[str, GpuInstanceType] = MappingProxyType({i.name: i for i in _INSTANCES})
RECOVER_ACTION_FAMILIES: Final = frozenset(_INSTANCE_TYPES_DATA.recover_action_families)
PRICE_REGION: Final = _INSTANCE_TYPES_DATA.price_region
REFUSED_FAMILIES: Mapping[str, str] = MappingProxyType(dict(_INSTANCE_TYPES_DATA.refused_families))
PRICES_CHECKED: Final = _INSTANCE_TYPES_DATA.prices_as_of  # the date of price_usd_per_hour


def supported_families() -> list[str]:
    return sorted({i.family for i in _INSTANCES})


def lookup_instance_type(name: str) -> GpuInstanceType:
    wanted = name.strip().lower()
    try:
        return INSTANCE_TYPES[wanted]
    except KeyError:
        family = wanted.split(".", 1)[0]
        if family in REFUSED_FAMILIES:
            raise ValueError(f"{name!r} cannot host this endpoint: {family} is {REFUSED_FAMILIES[family]}") from None
        families = ", ".join(supported_families())
        raise ValueError(
            f"unknown GPU instance type {name!r}: the catalog has every size of the families "
            f"{families} (see docs/gpu-catalog.md)"
        ) from None


def hourly_price(instance: GpuInstanceType | str, region: str) -> tuple[float | None, str | None]:
    """(on-demand USD/hour, the region that price is for): `region`'s price where the catalog has it, else
    the PRICE_REGION price (the caller says which region it shows); (None, None) for a type with no on-demand
    price (p5e: Capacity Blocks only)."""
    it = lookup_instance_type(instance) if isinstance(instance, str) else instance
    for where in (region, PRICE_REGION):
        if where in it.prices_usd_per_hour:
            return it.prices_usd_per_hour[where], where
    return None, None


def lookup_gpu_model(name: str) -> GpuModel:
    """A GPU by catalog name (`A10G`), alias (`H100`) or the name `nvidia-smi` prints (`NVIDIA A10G`), any case."""
    wanted = name.strip().lower()
    for gpu in _GPUS:
        if wanted in (n.lower() for n in gpu.names):
            return gpu
    known = ", ".join(g.name for g in _GPUS)
    raise ValueError(f"unknown GPU model {name!r}: known models are {known}; for another GPU set "
                     "hostGpuMemoryGib and hostGpuComputeCapability instead")


def unlisted_gpu(memory_gib: float, compute_capability: str) -> GpuModel:
    """A GPU the catalog lacks, from its driver memory total and compute capability (the existing-host settings
    `hostGpuMemoryGib`, `hostGpuComputeCapability`); bf16 and fp8 follow from the capability as in vLLM."""
    capability = _compute_capability(compute_capability)
    memory_mib = round(memory_gib * 1024)
    return GpuModel(
        name="unlisted GPU", nvidia_name="",
        memory_mib=memory_mib, ec2_memory_mib=memory_mib, compute_capability=capability,
        bf16=capability >= BF16_COMPUTE_CAPABILITY, fp8=capability >= FP8_COMPUTE_CAPABILITY,
    )


def render_markdown() -> str:
    """docs/gpu-catalog.md: the catalog as a table, with its sources."""
    lines = [
        "# GPU catalog",
        "",
        "Generated by `vllm_endpoint.infra.catalog.gpus.render_markdown()`; a unit test keeps this file equal to it.",
        "",
    ]
    return "\n".join([*lines, *_gpu_table(), *_instance_table(), *_refused_section(), *_sources_section()])


def _gpu_table() -> list[str]:
    lines = [
        "## GPUs",
        "",
        "Memory is the driver's total (`nvidia-smi` memory.total), which vLLM multiplies by",
        "`--gpu-memory-utilization`; the EC2 API's figure is shown beside it. `-`: no source has the driver's",
        "figure, and the fit check uses the EC2 API's. `hostGpuModel` takes the GPU's name, any name in brackets,",
        "or the name `nvidia-smi` prints; for a GPU not listed, set `hostGpuMemoryGib` and `hostGpuComputeCapability`.",
        "",
        "| GPU | memory (driver) | EC2 API memory | compute capability | bf16 | fp8 | vLLM |",
        "|---|---|---|---|---|---|---|",
    ]
    floor = ".".join(str(part) for part in MIN_COMPUTE_CAPABILITY)
    for g in _GPUS:
        vllm = "yes" if g.supported_by_vllm else f"no (needs compute capability >= {floor})"
        memory = "-" if g.memory_mib is None else f"{g.memory_mib} MiB ({g.memory_gib:.2f} GiB)"
        name = g.name + (f" ({', '.join(g.aliases)})" if g.aliases else "")
        lines.append(
            f"| {name} | {memory} | {g.ec2_memory_mib} MiB "
            f"| {g.compute_capability_str} | {_yes(g.bf16)} | {_yes(g.fp8)} | {vllm} |"
        )
    return lines


def _instance_table() -> list[str]:
    lines = [
        "",
        f"## Instance types ({PRICE_REGION}, Linux, on demand)",
        "",
        "EBS bandwidth in Mbps as AWS publishes it, MiB/s in brackets; `-` = not found in any source",
        "(USD/h `-`: no on-demand price, see the entry's note in the data file).",
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
            f"| {'-' if i.price_usd_per_hour is None else i.price_usd_per_hour} | {baseline} "
            f"| {i.ebs_max_mbps} ({i.ebs_max_mib_s:.0f}) "
            f"| {iops} | {_yes(i.nitro)} | {store} | {_yes(i.supports_recovery)} |"
        )
    return lines


def _refused_section() -> list[str]:
    lines = ["", "## Refused families", "", "NVIDIA families AWS offers that this product cannot deploy to:", ""]
    return lines + [f"- {family}: {why}." for family, why in REFUSED_FAMILIES.items()]


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
