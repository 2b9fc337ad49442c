"""The AWS GPU instance types the product can deploy to, and the GPUs in them.

Pure data plus lookups: no Pulumi, no network. `infra/plan/fit.py` uses it to decide, before any cloud
resource exists, whether a model fits; the renderer uses the EBS figures to size the cache volume.

Sources (every number below comes from one of these, all read 2026-11-25; where none had a value the
entry says so):

- PRICE: on-demand USD/hour, us-east-1, Linux, shared tenancy. aws/karpenter-provider-aws
  `pkg/providers/pricing/zz_generated.pricing_aws.go` at commit 6fc13b5236fd04fd16ff3f9dc7490d0813994099,
  header "generated at 2026-07-20T13:44:30Z for us-east-1" (Karpenter generates it from the AWS Pricing
  API; its 2026-01-19 copy has the same values for every type here).
- SPEC: vCPUs, RAM (MiB), GPU count, GPU memory per the EC2 API (MiB), maximum EBS bandwidth (Mbps),
  hypervisor. aws/karpenter-provider-aws `website/content/en/preview/reference/instance-types.md` at
  commit 692ccdd0629e488300821443f0fa0bc3c3e08047 (2026-07-11). Its labels are
  `aws ec2 describe-instance-types` fields (`instance-ebs-bandwidth` is
  `EbsOptimizedInfo.MaximumBandwidthInMbps`, see `pkg/providers/instancetype/types.go`).
- EBS: baseline and maximum EBS bandwidth (Mbps) and IOPS (16 KiB I/O). AWS EC2 User Guide "Amazon
  EBS-optimized instances", `doc_source/ebs-optimized.md` in awsdocs/amazon-ec2-user-guide at commit
  e3707c431483ec0ffffcabebd36cf799ba682cd0 (2023-06-15, the last before that repository was archived).
  It predates g6, g6e and p5: for those only the maximum (SPEC) is known.
- P3: p3 vCPUs and RAM from the same commit, `doc_source/accelerated-computing-instances.md`
  ("Hardware specifications"); Xen hypervisor and 8 x V100 16384 MiB from aws/amazon-ec2-instance-selector
  `test/static/DescribeInstanceTypesPages/t3_micro_and_p3_16xl.json`.
- NITRO: `doc_source/instance-types.md`, same commit (lists G4dn, G5, P3dn, P4d, P4de and the bare-metal
  g4dn.metal, not P3); g6, g6e, p5 from SPEC (`instance-hypervisor: nitro`).
- RECOVERY: AWS EC2 User Guide "Recover your instance", `doc_source/ec2-instance-recover.md`, same
  commit: simplified and CloudWatch-action recovery need an instance without instance-store volumes,
  and of the accelerated families list only G3, G3s, G5g, Inf1, P2, P3 and VT1.
- SMI: usable GPU memory, `nvidia-smi` memory.total as printed in public logs found with the code search
  index: T4 15360 MiB, A10G 23028, L4 23034, L40S 46068, A100-SXM4-40GB 40960, A100-SXM4-80GB 81920,
  H100 80GB HBM3 81559, V100-SXM2-16GB 16160, V100-SXM2-32GB 32510.
- CC: compute capability, bf16, fp8. NVIDIA's CUDA GPU list / CUDA Programming Guide "Compute
  Capabilities". What vLLM 0.32.0 does with it: bf16 needs >= 8.0 (`platforms/cuda.py`
  `check_if_supports_dtype`), native fp8 needs >= 8.9 (`supports_fp8`).

Which GPU memory figure and why: `GpuModel.memory_gib` is the driver's total (SMI), because vLLM sizes
everything from `torch.cuda.mem_get_info()` total x `--gpu-memory-utilization` (vLLM 0.32.0
`v1/worker/utils.py` `request_memory`), and that total is the driver's, not the marketing "24 GB" nor
the EC2 API's `GpuInfo.MemoryInfo.SizeInMiB` (22888 MiB for A10G and L4, below what the driver
reports). A public log of vLLM at 0.9 on an A10 shows 20730 MiB used of 23028 MiB, i.e. 0.9 x the
driver total. The EC2 API figure is kept in `GpuModel.ec2_memory_mib` for reference.

EBS units: AWS publishes Mbps (10^6 bit/s); gp3 throughput is provisioned in MiB/s, so
`ebs_*_mib_s` converts (Mbps x 10^6 / 8 / 2^20).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

# vLLM's CUDA kernels are built for compute capability 7.5 and newer; V100 (7.0) is kept in the
# catalog only so a p3 choice is refused with this reason instead of failing on the instance.
MIN_COMPUTE_CAPABILITY: Final = (7, 5)
PRICE_REGION: Final = "us-east-1"
PRICE_SOURCE: Final = (
    "aws/karpenter-provider-aws zz_generated.pricing_aws.go, generated 2026-07-20 for us-east-1 "
    "(AWS Pricing API), read 2026-11-25"
)


@dataclass(frozen=True)
class GpuModel:
    name: str
    nvidia_name: str
    memory_mib: int
    ec2_memory_mib: int
    compute_capability: tuple[int, int]
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


@dataclass(frozen=True)
class GpuInstanceType:
    name: str
    gpu: GpuModel
    gpu_count: int
    vcpus: int
    memory_mib: int
    price_usd_per_hour: float
    # None where the EBS source has no value for this type (g6, g6e, p5: newer than that page).
    ebs_baseline_mbps: int | None
    ebs_max_mbps: int
    ebs_baseline_iops: int | None
    ebs_max_iops: int | None
    nitro: bool
    # Local NVMe instance store, GB (0: EBS only). SPEC `instance-local-nvme`; p3 from P3.
    instance_store_gb: int = 0
    # EC2's automatic/CloudWatch `recover` action: RECOVERY. Only P3 among these families; every other
    # type here has instance-store volumes, which the recover action does not support.
    supports_recovery: bool = False
    source_note: str = ""

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024

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


def _gpu(name: str, nvidia_name: str, memory_mib: int, ec2_memory_mib: int, cc: tuple[int, int],
         bf16: bool, fp8: bool) -> GpuModel:
    return GpuModel(name=name, nvidia_name=nvidia_name, memory_mib=memory_mib, ec2_memory_mib=ec2_memory_mib,
                    compute_capability=cc, bf16=bf16, fp8=fp8)


_GPUS = (
    _gpu("T4", "Tesla T4", 15360, 16384, (7, 5), bf16=False, fp8=False),
    _gpu("A10G", "NVIDIA A10G", 23028, 22888, (8, 6), bf16=True, fp8=False),
    _gpu("L4", "NVIDIA L4", 23034, 22888, (8, 9), bf16=True, fp8=True),
    _gpu("L40S", "NVIDIA L40S", 46068, 45776, (8, 9), bf16=True, fp8=True),
    _gpu("A100-40GB", "NVIDIA A100-SXM4-40GB", 40960, 40960, (8, 0), bf16=True, fp8=False),
    _gpu("A100-80GB", "NVIDIA A100-SXM4-80GB", 81920, 81920, (8, 0), bf16=True, fp8=False),
    _gpu("H100-80GB", "NVIDIA H100 80GB HBM3", 81559, 81920, (9, 0), bf16=True, fp8=True),
    _gpu("V100-16GB", "Tesla V100-SXM2-16GB", 16160, 16384, (7, 0), bf16=False, fp8=False),
    _gpu("V100-32GB", "Tesla V100-SXM2-32GB", 32510, 32768, (7, 0), bf16=False, fp8=False),
)
GPU_MODELS: Mapping[str, GpuModel] = MappingProxyType({g.name: g for g in _GPUS})

_NEWER_THAN_EBS_PAGE = "EBS baseline bandwidth and IOPS: not found in any source (newer than the EBS page)"


def _it(name: str, gpu: str, count: int, vcpus: int, memory_mib: int, price: float,
        ebs: tuple[int | None, int, int | None, int | None], nitro: bool, note: str = "") -> GpuInstanceType:
    baseline_mbps, max_mbps, baseline_iops, max_iops = ebs
    store = _INSTANCE_STORE_GB[name]
    return GpuInstanceType(name=name, gpu=GPU_MODELS[gpu], gpu_count=count, vcpus=vcpus,
                           memory_mib=memory_mib, price_usd_per_hour=price,
                           ebs_baseline_mbps=baseline_mbps, ebs_max_mbps=max_mbps,
                           ebs_baseline_iops=baseline_iops, ebs_max_iops=max_iops, nitro=nitro,
                           instance_store_gb=store, supports_recovery=name.startswith("p3.") and store == 0,
                           source_note=note)


def _fixed(mbps: int, iops: int) -> tuple[int, int, int, int]:
    """An EBS figure without burst: baseline equals maximum."""
    return (mbps, mbps, iops, iops)


def _newer(max_mbps: int) -> tuple[None, int, None, None]:
    return (None, max_mbps, None, None)


_INSTANCE_STORE_GB: Final = {
    "g4dn.xlarge": 125, "g4dn.2xlarge": 225, "g4dn.4xlarge": 225, "g4dn.8xlarge": 900, "g4dn.12xlarge": 900,
    "g4dn.16xlarge": 900, "g4dn.metal": 1800,
    "g5.xlarge": 250, "g5.2xlarge": 450, "g5.4xlarge": 600, "g5.8xlarge": 900, "g5.12xlarge": 3800,
    "g5.16xlarge": 1900, "g5.24xlarge": 3800, "g5.48xlarge": 7600,
    "g6.xlarge": 250, "g6.2xlarge": 450, "g6.4xlarge": 600, "g6.8xlarge": 900, "g6.12xlarge": 3760,
    "g6.16xlarge": 1880, "g6.24xlarge": 3760, "g6.48xlarge": 7520,
    "g6e.xlarge": 250, "g6e.2xlarge": 450, "g6e.4xlarge": 600, "g6e.8xlarge": 900, "g6e.12xlarge": 3800,
    "g6e.16xlarge": 1900, "g6e.24xlarge": 3800, "g6e.48xlarge": 7600,
    "p3.2xlarge": 0, "p3.8xlarge": 0, "p3.16xlarge": 0, "p3dn.24xlarge": 1800,
    "p4d.24xlarge": 8000, "p4de.24xlarge": 8000, "p5.4xlarge": 3800, "p5.48xlarge": 30400,
}

_GIB = 1024
_INSTANCES = (
    # g4dn: T4. EBS from the EBS page; the two smallest sizes burst.
    _it("g4dn.xlarge", "T4", 1, 4, 16 * _GIB, 0.526, (950, 3500, 3000, 20000), True),
    _it("g4dn.2xlarge", "T4", 1, 8, 32 * _GIB, 0.752, (1150, 3500, 6000, 20000), True),
    _it("g4dn.4xlarge", "T4", 1, 16, 64 * _GIB, 1.204, _fixed(4750, 20000), True),
    _it("g4dn.8xlarge", "T4", 1, 32, 128 * _GIB, 2.176, _fixed(9500, 40000), True),
    _it("g4dn.12xlarge", "T4", 4, 48, 192 * _GIB, 3.912, _fixed(9500, 40000), True),
    _it("g4dn.16xlarge", "T4", 1, 64, 256 * _GIB, 4.352, _fixed(9500, 40000), True),
    _it("g4dn.metal", "T4", 8, 96, 384 * _GIB, 7.824, _fixed(19000, 80000), True),
    # g5: A10G.
    _it("g5.xlarge", "A10G", 1, 4, 16 * _GIB, 1.006, (700, 3500, 3000, 15000), True),
    _it("g5.2xlarge", "A10G", 1, 8, 32 * _GIB, 1.212, (850, 3500, 3500, 15000), True),
    _it("g5.4xlarge", "A10G", 1, 16, 64 * _GIB, 1.624, _fixed(4750, 20000), True),
    _it("g5.8xlarge", "A10G", 1, 32, 128 * _GIB, 2.448, _fixed(16000, 65000), True),
    _it("g5.12xlarge", "A10G", 4, 48, 192 * _GIB, 5.672, _fixed(16000, 65000), True),
    _it("g5.16xlarge", "A10G", 1, 64, 256 * _GIB, 4.096, _fixed(16000, 65000), True),
    _it("g5.24xlarge", "A10G", 4, 96, 384 * _GIB, 8.144, _fixed(19000, 80000), True),
    _it("g5.48xlarge", "A10G", 8, 192, 768 * _GIB, 16.288, _fixed(19000, 80000), True),
    # g6: L4. Only the EBS maximum is sourced (SPEC).
    _it("g6.xlarge", "L4", 1, 4, 16 * _GIB, 0.8048, _newer(5000), True, _NEWER_THAN_EBS_PAGE),
    _it("g6.2xlarge", "L4", 1, 8, 32 * _GIB, 0.9776, _newer(5000), True, _NEWER_THAN_EBS_PAGE),
    _it("g6.4xlarge", "L4", 1, 16, 64 * _GIB, 1.3232, _newer(8000), True, _NEWER_THAN_EBS_PAGE),
    _it("g6.8xlarge", "L4", 1, 32, 128 * _GIB, 2.0144, _newer(16000), True, _NEWER_THAN_EBS_PAGE),
    _it("g6.12xlarge", "L4", 4, 48, 192 * _GIB, 4.6016, _newer(20000), True, _NEWER_THAN_EBS_PAGE),
    _it("g6.16xlarge", "L4", 1, 64, 256 * _GIB, 3.3968, _newer(20000), True, _NEWER_THAN_EBS_PAGE),
    _it("g6.24xlarge", "L4", 4, 96, 384 * _GIB, 6.6752, _newer(30000), True, _NEWER_THAN_EBS_PAGE),
    _it("g6.48xlarge", "L4", 8, 192, 768 * _GIB, 13.3504, _newer(60000), True, _NEWER_THAN_EBS_PAGE),
    # g6e: L40S.
    _it("g6e.xlarge", "L40S", 1, 4, 32 * _GIB, 1.861, _newer(5000), True, _NEWER_THAN_EBS_PAGE),
    _it("g6e.2xlarge", "L40S", 1, 8, 64 * _GIB, 2.24208, _newer(5000), True, _NEWER_THAN_EBS_PAGE),
    _it("g6e.4xlarge", "L40S", 1, 16, 128 * _GIB, 3.00424, _newer(8000), True, _NEWER_THAN_EBS_PAGE),
    _it("g6e.8xlarge", "L40S", 1, 32, 256 * _GIB, 4.52856, _newer(16000), True, _NEWER_THAN_EBS_PAGE),
    _it("g6e.12xlarge", "L40S", 4, 48, 384 * _GIB, 10.49264, _newer(20000), True, _NEWER_THAN_EBS_PAGE),
    _it("g6e.16xlarge", "L40S", 1, 64, 512 * _GIB, 7.57719, _newer(20000), True, _NEWER_THAN_EBS_PAGE),
    _it("g6e.24xlarge", "L40S", 4, 96, 768 * _GIB, 15.06559, _newer(30000), True, _NEWER_THAN_EBS_PAGE),
    _it("g6e.48xlarge", "L40S", 8, 192, 1536 * _GIB, 30.13118, _newer(60000), True, _NEWER_THAN_EBS_PAGE),
    # p3 / p3dn: V100, compute capability 7.0: listed so the product can refuse them by name.
    _it("p3.2xlarge", "V100-16GB", 1, 8, 61 * _GIB, 3.06, _fixed(1750, 10000), False),
    _it("p3.8xlarge", "V100-16GB", 4, 32, 244 * _GIB, 12.24, _fixed(7000, 40000), False),
    _it("p3.16xlarge", "V100-16GB", 8, 64, 488 * _GIB, 24.48, _fixed(14000, 80000), False),
    _it("p3dn.24xlarge", "V100-32GB", 8, 96, 768 * _GIB, 31.212, _fixed(19000, 80000), True),
    # p4d / p4de: A100.
    _it("p4d.24xlarge", "A100-40GB", 8, 96, 1152 * _GIB, 21.957642, _fixed(19000, 80000), True),
    _it("p4de.24xlarge", "A100-80GB", 8, 96, 1152 * _GIB, 27.44705, _fixed(19000, 80000), True),
    # p5: H100.
    _it("p5.4xlarge", "H100-80GB", 1, 16, 256 * _GIB, 6.88, _newer(10000), True, _NEWER_THAN_EBS_PAGE),
    _it("p5.48xlarge", "H100-80GB", 8, 192, 2048 * _GIB, 55.04, _newer(80000), True, _NEWER_THAN_EBS_PAGE),
)
INSTANCE_TYPES: Mapping[str, GpuInstanceType] = MappingProxyType({i.name: i for i in _INSTANCES})


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
        "## GPUs",
        "",
        "Memory is the driver's total (`nvidia-smi` memory.total), which vLLM multiplies by",
        "`--gpu-memory-utilization`; the EC2 API's figure is shown beside it.",
        "",
        "| GPU | memory (driver) | EC2 API memory | compute capability | bf16 | fp8 | vLLM |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in _GPUS:
        vllm = "yes" if g.supported_by_vllm else "no (needs compute capability >= 7.5)"
        lines.append(
            f"| {g.name} | {g.memory_mib} MiB ({g.memory_gib:.2f} GiB) | {g.ec2_memory_mib} MiB "
            f"| {g.compute_capability_str} | {_yes(g.bf16)} | {_yes(g.fp8)} | {vllm} |"
        )
    lines += [
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
    lines += [
        "",
        "## Sources",
        "",
        f"- Prices: {PRICE_SOURCE}.",
        "- vCPUs, RAM, GPU count, EC2 GPU memory, EBS maximum, hypervisor: Karpenter's generated",
        "  instance-type reference (`aws ec2 describe-instance-types` labels), commit 692ccdd0 (2026-07-11).",
        "- EBS baseline/maximum and IOPS for g4dn, g5, p3, p3dn, p4d, p4de: AWS EC2 User Guide,",
        "  \"Amazon EBS-optimized instances\" (awsdocs/amazon-ec2-user-guide, 2023-06-15). g6, g6e and p5",
        "  are newer than that page: their baseline and IOPS are unsourced.",
        "- p3 specs and Xen hypervisor: the same guide and aws/amazon-ec2-instance-selector test data.",
        "- Local NVMe: Karpenter's reference (`instance-local-nvme`); recover action: the same EC2 guide,",
        "  \"Recover your instance\" (no instance-store volumes; accelerated families G3, G3s, G5g, Inf1,",
        "  P2, P3, VT1).",
        "- GPU driver memory: `nvidia-smi` output in public logs.",
        "- Compute capability: NVIDIA's CUDA GPU list.",
        "",
    ]
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
