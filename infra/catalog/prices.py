"""What EBS volumes and the Elastic IP cost, per region, and recorded spot prices of GPU instance types:
data/ebs-prices.yaml, loaded and validated once.

Pure data plus lookups; the arithmetic is in infra/plan/costs.py. On-demand instance prices stay with the
instance types (data/instance-types.yaml, gpus.py). Spot prices change hourly: a `SpotPrice` is one reading,
with the date it was read and where.
"""

from __future__ import annotations

import datetime
import statistics
from collections.abc import Mapping
from dataclasses import dataclass as plain_dataclass
from types import MappingProxyType
from typing import Annotated, Final

from pydantic import Field, field_validator, model_validator
from pydantic.dataclasses import dataclass

from vllm_endpoint.infra.catalog.data_files import STRICT_ENTRY, DataFile, data_path, load_data_file, unique_names

PRICES_FILE: Final = data_path("ebs-prices.yaml")

_Price = Annotated[float, Field(gt=0)]


@dataclass(frozen=True, config=STRICT_ENTRY)
class RegionPrices:
    name: str
    gp3_gb_month: _Price
    gp3_iops_month: _Price
    gp3_throughput_month: _Price
    io1_gb_month: _Price
    io1_iops_month: _Price
    io2_gb_month: _Price
    io2_iops_month: Annotated[tuple[_Price, _Price, _Price], Field()]
    public_ipv4_hour: _Price


@dataclass(frozen=True, config=STRICT_ENTRY)
class SpotPrice:
    """One reading of an instance type's spot price in a region, by availability zone (zone id: price)."""

    instance: str
    region: str
    zones_usd_per_hour: Annotated[dict[str, _Price], Field(min_length=1)]
    checked: datetime.date
    where: str

    @property
    def low(self) -> float:
        return min(self.zones_usd_per_hour.values())

    @property
    def high(self) -> float:
        return max(self.zones_usd_per_hour.values())

    @property
    def typical(self) -> float:
        """The median over the zones: the figure the plan's spot arithmetic uses."""
        return float(statistics.median(self.zones_usd_per_hour.values()))


@dataclass(frozen=True, config=STRICT_ENTRY)
class CloudWatchPrices:
    """us-east-1 list prices of what the stack's monitoring creates (the sources entry says where from)."""

    checked: datetime.date
    custom_metric_month: _Price
    dashboard_month: _Price
    alarm_metric_month: _Price
    logs_ingested_gb: _Price
    logs_archived_gb_month: _Price
    kms_key_month: _Price


@dataclass(frozen=True, config=STRICT_ENTRY)
class LoadBalancerPrices:
    """us-east-1 list prices of an Application Load Balancer (a fleet's; the sources entry says where from)."""

    checked: datetime.date
    alb_hour: _Price
    lcu_hour: _Price


@dataclass(frozen=True, config=STRICT_ENTRY)
class SnapshotPrices:
    """The us-east-1 list price of EBS snapshot storage, standard tier (the sources entry says where from)."""

    checked: datetime.date
    snapshot_gb_month: _Price


@dataclass(frozen=True, config=STRICT_ENTRY)
class S3Prices:
    """The us-east-1 list price of S3 Standard storage (the sources entry says where from)."""

    checked: datetime.date
    standard_gb_month: _Price


class PricesFile(DataFile):
    hours_per_month: Annotated[int, Field(gt=0)]
    fallback_region: str
    gp3_free_iops: Annotated[int, Field(ge=0)]
    gp3_free_throughput_mib_s: Annotated[int, Field(ge=0)]
    io2_iops_tier_limits: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]]
    regions: tuple[RegionPrices, ...] = Field(min_length=1)
    spot_prices: tuple[SpotPrice, ...] = ()
    cloudwatch: CloudWatchPrices
    load_balancer: LoadBalancerPrices
    ebs_snapshots: SnapshotPrices
    s3_storage: S3Prices

    _unique = field_validator("regions")(unique_names)

    @field_validator("spot_prices")
    @classmethod
    def _one_reading_each(cls, entries: tuple[SpotPrice, ...]) -> tuple[SpotPrice, ...]:
        seen: set[tuple[str, str]] = set()
        for entry in entries:
            if (entry.instance, entry.region) in seen:
                raise ValueError(f"two spot_prices entries for {entry.instance} in {entry.region}")
            seen.add((entry.instance, entry.region))
        return entries

    @model_validator(mode="after")
    def _consistent(self) -> PricesFile:
        if self.fallback_region not in {r.name for r in self.regions}:
            raise ValueError(f"fallback_region {self.fallback_region!r} has no prices in `regions`")
        low, high = self.io2_iops_tier_limits
        if low >= high:
            raise ValueError(f"io2_iops_tier_limits must increase: {low} then {high}")
        return self


_DATA: Final = load_data_file(PricesFile, PRICES_FILE)
REGIONS: Mapping[str, RegionPrices] = MappingProxyType({r.name: r for r in _DATA.regions})
HOURS_PER_MONTH: Final = _DATA.hours_per_month
FALLBACK_REGION: Final = _DATA.fallback_region
GP3_FREE_IOPS: Final = _DATA.gp3_free_iops
GP3_FREE_THROUGHPUT_MIB_S: Final = _DATA.gp3_free_throughput_mib_s
IO2_IOPS_TIER_LIMITS: Final = _DATA.io2_iops_tier_limits
PRICES_CHECKED: Final[datetime.date] = _DATA.checked
CLOUDWATCH: Final = _DATA.cloudwatch
LOAD_BALANCER: Final = _DATA.load_balancer
EBS_SNAPSHOTS: Final = _DATA.ebs_snapshots
S3_STORAGE: Final = _DATA.s3_storage
SPOT_PRICES: Mapping[tuple[str, str], SpotPrice] = MappingProxyType(
    {(s.instance, s.region): s for s in _DATA.spot_prices})


@plain_dataclass(frozen=True)
class PricesFor:
    """The prices shown for a region: its own, or the fallback region's when the file has none for it."""

    asked: str | None  # the stack's region; None when the stack does not say
    prices: RegionPrices

    @property
    def exact(self) -> bool:
        return self.asked == self.prices.name


def prices_for(region: str | None) -> PricesFor:
    return PricesFor(region, REGIONS.get(region or "", REGIONS[FALLBACK_REGION]))


def spot_price(instance: str, region: str) -> SpotPrice | None:
    """The recorded spot price of `instance` in `region`, or None when none was recorded (the plan says so)."""
    return SPOT_PRICES.get((instance, region))
