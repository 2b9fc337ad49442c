"""What an AWS endpoint costs while it runs, and what keeps costing after `pulumi destroy`.

Pure arithmetic over the catalog's prices (infra/catalog/prices.py for EBS and the public IPv4 address,
infra/catalog/gpus.py for the instance): on-demand, before tax, a month of HOURS_PER_MONTH hours. Data
transfer, snapshots and CloudWatch are not counted.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from vllm_endpoint.infra.catalog import gpus as gpu_catalog
from vllm_endpoint.infra.catalog.prices import (
    GP3_FREE_IOPS,
    GP3_FREE_THROUGHPUT_MIB_S,
    HOURS_PER_MONTH,
    IO2_IOPS_TIER_LIMITS,
    PRICES_CHECKED,
    RegionPrices,
    prices_for,
)


@dataclass(frozen=True)
class VolumeSpec:
    """An EBS volume as it is billed: type, size, and what is provisioned (None: the type's free baseline)."""

    type: str
    size_gb: int
    iops: int | None = None
    throughput_mib_s: int | None = None

    def describe(self) -> str:
        parts = [f"{self.type} {self.size_gb} GiB"]
        if self.iops:
            parts.append(f"{self.iops:,} IOPS")
        if self.throughput_mib_s:
            parts.append(f"{self.throughput_mib_s} MiB/s")
        return ", ".join(parts)


def volume_usd_per_month(volume: VolumeSpec, prices: RegionPrices) -> float:
    """Storage plus the provisioned IOPS and throughput that the volume type bills."""
    if volume.type == "gp3":
        extra_iops = max(0, (volume.iops or GP3_FREE_IOPS) - GP3_FREE_IOPS)
        extra_throughput = max(0, (volume.throughput_mib_s or GP3_FREE_THROUGHPUT_MIB_S) - GP3_FREE_THROUGHPUT_MIB_S)
        return (volume.size_gb * prices.gp3_gb_month + extra_iops * prices.gp3_iops_month
                + extra_throughput * prices.gp3_throughput_month)
    if volume.type == "io1":
        return volume.size_gb * prices.io1_gb_month + (volume.iops or 0) * prices.io1_iops_month
    if volume.type == "io2":
        return volume.size_gb * prices.io2_gb_month + _io2_iops_usd(volume.iops or 0, prices)
    raise ValueError(f"no prices for EBS volume type {volume.type!r} (priced: gp3, io1, io2)")


def _io2_iops_usd(iops: int, prices: RegionPrices) -> float:
    low, high = IO2_IOPS_TIER_LIMITS
    tiers = (min(iops, low), max(0, min(iops, high) - low), max(0, iops - high))
    return sum(count * rate for count, rate in zip(tiers, prices.io2_iops_month, strict=True))


def public_ipv4_usd_per_month(prices: RegionPrices) -> float:
    return prices.public_ipv4_hour * HOURS_PER_MONTH


@dataclass(frozen=True)
class CostLine:
    what: str
    usd_per_month: float


@dataclass(frozen=True)
class CostEstimate:
    """The running endpoint's monthly cost by part, and what stays billed after a destroy."""

    region: str | None  # the stack's region (aws:region); None: not set
    ebs_region: str  # whose EBS and IPv4 prices are used
    instance_region: str  # whose instance price is used
    lines: tuple[CostLine, ...]
    instance_usd_per_hour: float
    retained: CostLine | None  # the stack's own cache volume; None when it adopted one
    adopted_volume_id: str | None
    ebs_checked: datetime.date
    instance_checked: datetime.date
    instance_name: str = ""

    @property
    def usd_per_month(self) -> float:
        return sum(line.usd_per_month for line in self.lines)

    @property
    def usd_per_hour(self) -> float:
        return self.usd_per_month / HOURS_PER_MONTH

    def describe(self) -> list[str]:
        """The plan summary's cost lines."""
        where = self.region or f"{self.ebs_region} (aws:region is not set)"
        head = [f"cost in {where}, on demand, {HOURS_PER_MONTH} h a month (instance prices of "
                f"{self.instance_checked}, EBS and IPv4 prices of {self.ebs_checked}):"]
        if self.region is not None and self.ebs_region != self.region:
            head.append(f"  no EBS/IPv4 prices for {self.region} in the catalog: shown with {self.ebs_region}'s")
        if self.instance_region != (self.region or self.ebs_region):
            head.append(f"  the instance price is {self.instance_region}'s (the catalog has no "
                        f"{self.instance_name or 'instance'} price for {self.region or self.ebs_region})")
        body = [f"  {line.what}: {_usd(line.usd_per_month)}/month" for line in self.lines]
        if self.adopted_volume_id is not None:
            body.append(f"  cache volume {self.adopted_volume_id}: adopted, billed as before (not counted here)")
        body.append(f"  total while running: {_usd(self.usd_per_month)}/month ({_usd(self.usd_per_hour, 3)}/h)")
        body.append("  after `pulumi destroy`: " + self.after_destroy())
        return head + body

    def after_destroy(self) -> str:
        if self.retained is not None:
            return (f"the cache volume stays and costs {_usd(self.retained.usd_per_month)}/month until you delete "
                    "it (output retained_on_destroy); nothing else is left")
        return (f"the adopted cache volume {self.adopted_volume_id} stays, as it was before this stack; "
                "nothing else is left")


def estimate_costs(instance: gpu_catalog.GpuInstanceType, cache: VolumeSpec | None, root: VolumeSpec,
                   region: str | None, adopted_volume_id: str | None = None) -> CostEstimate:
    """`cache` None: the stack adopts `adopted_volume_id` instead of creating a volume (its size is known
    only once AWS is asked, so the plan does not count it)."""
    chosen = prices_for(region)
    prices = chosen.prices
    price, price_region = gpu_catalog.hourly_price(instance, region or gpu_catalog.PRICE_REGION)
    instance_region = price_region or gpu_catalog.PRICE_REGION
    hourly = price or 0.0
    if price is None:  # p5e: Capacity Blocks only, billed by reservation
        lines = [CostLine(f"instance {instance.name}: no on-demand price (see docs/gpu-catalog.md), not counted",
                          0.0)]
    else:
        lines = [CostLine(f"instance {instance.name} ({_usd(hourly, 3)}/h)", hourly * HOURS_PER_MONTH)]
    retained = None
    if cache is not None:
        retained = CostLine(f"cache volume {cache.describe()}", volume_usd_per_month(cache, prices))
        lines.append(retained)
    lines.append(CostLine(f"root volume {root.describe()}", volume_usd_per_month(root, prices)))
    lines.append(CostLine(f"Elastic IP (public IPv4, {_usd(prices.public_ipv4_hour, 3)}/h)",
                          public_ipv4_usd_per_month(prices)))
    return CostEstimate(
        region=region, ebs_region=prices.name, instance_region=instance_region, lines=tuple(lines),
        instance_usd_per_hour=hourly, retained=retained, adopted_volume_id=adopted_volume_id,
        ebs_checked=PRICES_CHECKED, instance_checked=gpu_catalog.PRICES_CHECKED, instance_name=instance.name,
    )


def _usd(amount: float, decimals: int = 2) -> str:
    return f"${amount:,.{decimals}f}"
