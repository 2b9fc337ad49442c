"""What an AWS endpoint costs while it runs, what keeps costing after `pulumi destroy`, and what stopping when
idle (`idleStopMinutes`) and spot capacity (`capacity: spot`) save.

Pure arithmetic over the catalog's prices (infra/catalog/prices.py for EBS, the public IPv4 address and the
recorded spot prices, infra/catalog/gpus.py for the on-demand instance price): before tax, a month of
HOURS_PER_MONTH hours. Data transfer and snapshots are not counted; CloudWatch (with `metrics`) is counted at
us-east-1's list prices, except the logs, whose volume follows the traffic (the line says the rate).

The idle-stop saving depends on how the endpoint is used; the plan shows it for one stated usage pattern,
USAGE (below), the only place that assumption is made. What a stopped instance still costs: its EBS volumes
(billed by the GB-month whether attached to a running instance or not) and the Elastic IP (billed as an idle
public IPv4 address, the same $/h as when attached): only the instance hours stop.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Final

from vllm_endpoint.infra.catalog import gpus as gpu_catalog
from vllm_endpoint.infra.catalog.prices import (
    CLOUDWATCH,
    GP3_FREE_IOPS,
    GP3_FREE_THROUGHPUT_MIB_S,
    HOURS_PER_MONTH,
    IO2_IOPS_TIER_LIMITS,
    PRICES_CHECKED,
    RegionPrices,
    SpotPrice,
    prices_for,
    spot_price,
)

HOURS_PER_WEEK: Final = 7 * 24


@dataclass(frozen=True)
class UsagePattern:
    """How much of the week the endpoint serves requests: the assumption behind the idle-stop saving."""

    busy_hours_per_day: float  # in one stretch: the alarm stops the instance idleStopMinutes after it
    busy_days_per_week: int

    def describe(self) -> str:
        return f"busy {self.busy_hours_per_day:g} h a day on {self.busy_days_per_week} days a week"


# A dev endpoint used through the working day on weekdays, idle at night and at weekends.
USAGE: Final = UsagePattern(busy_hours_per_day=8, busy_days_per_week=5)
# The idleStopMinutes the plan shows the saving for when the stack does not set it.
EXAMPLE_IDLE_STOP_MINUTES: Final = 60


def running_hours_per_month(idle_stop_minutes: int | None, usage: UsagePattern = USAGE) -> float:
    """The hours a month the instance runs, and so is billed: all of them without idle stop; with it, each busy
    day's hours plus the idle minutes before the alarm stops it (at most a whole day), on the busy days of
    HOURS_PER_MONTH / HOURS_PER_WEEK weeks, never more than the month. Starting it again (scripts/wake.sh) is
    counted as busy time."""
    if idle_stop_minutes is None:
        return float(HOURS_PER_MONTH)
    per_busy_day = min(24.0, usage.busy_hours_per_day + idle_stop_minutes / 60)
    weeks = HOURS_PER_MONTH / HOURS_PER_WEEK
    return min(float(HOURS_PER_MONTH), per_busy_day * usage.busy_days_per_week * weeks)


def month_usd(instance_usd_per_hour: float, running_hours: float, fixed_usd_per_month: float) -> float:
    """A month's bill: the instance for the hours it runs, plus what is billed all month (volumes, address)."""
    return instance_usd_per_hour * running_hours + fixed_usd_per_month


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
class MonitoringCounts:
    """What `metrics` publishes and creates, counted once here for the plan (which runs before anything is
    rendered); tests/unit/infra/render/test_monitoring_counts.py checks each figure against the renderers."""

    vllm_metrics: int  # the agent's vLLM metrics, dimension `stack` (cloudwatch_agent.agent_metrics())
    per_instance_metrics: int  # the idle metric again, dimension InstanceId
    gpu_measurements: int  # nvidia_gpu measurements: each per GPU, and once rolled up by `stack`
    latency_metrics: int  # the host's TTFT and e2e percentiles (latency.latency_metric_names())
    log_metrics: int  # the access log's metric filters (log_metrics.access_log_metric_filters())
    endpoint_alarms: int  # alarms.endpoint_alarms(), besides the idle stop and the host's recovery alarm
    fleet_alarms: int  # fleet_monitoring.fleet_alarms(); a fleet publishes only the vLLM metrics (its sidecars')

    def usage(self, gpus: int, *, idle_stop: bool, alarm_email: bool, recovery_alarm: bool) -> MonitoringUsage:
        metrics = (self.vllm_metrics + self.per_instance_metrics + self.gpu_measurements * (gpus + 1)
                   + self.latency_metrics + self.log_metrics)
        alarms = self.endpoint_alarms + int(idle_stop) + int(recovery_alarm)
        return MonitoringUsage(custom_metrics=metrics, dashboards=1, alarms=alarms, kms_keys=int(alarm_email))


    def fleet_usage(self, *, alarm_email: bool) -> MonitoringUsage:
        """A fleet's: the sidecars publish the vLLM metrics with the `stack` dimension all replicas share (one
        custom metric each, whatever the replica count); the load balancer's metrics are AWS's own (free)."""
        return MonitoringUsage(custom_metrics=self.vllm_metrics, dashboards=1, alarms=self.fleet_alarms,
                               kms_keys=int(alarm_email))


MONITORING: Final = MonitoringCounts(vllm_metrics=5, per_instance_metrics=1, gpu_measurements=3,
                                     latency_metrics=6, log_metrics=2, endpoint_alarms=4, fleet_alarms=5)


@dataclass(frozen=True)
class MonitoringUsage:
    """What the stack's monitoring creates that CloudWatch bills by the month (`metrics` on)."""

    custom_metrics: int  # each metric name with its dimensions' values: one custom metric
    dashboards: int
    alarms: int  # standard resolution, one metric each
    kms_keys: int  # the alarm topic's own key (alarmEmail)

    def line(self) -> CostLine:
        cw = CLOUDWATCH
        usd = (self.custom_metrics * cw.custom_metric_month + self.dashboards * cw.dashboard_month
               + self.alarms * cw.alarm_metric_month + self.kms_keys * cw.kms_key_month)
        parts = [f"{self.custom_metrics} custom metrics", f"{self.dashboards} dashboard",
                 f"{self.alarms} alarms"] + ([f"{self.kms_keys} KMS key"] if self.kms_keys else [])
        return CostLine(f"CloudWatch ({', '.join(parts)}; us-east-1 prices of {cw.checked}; logs "
                        f"{_usd(cw.logs_ingested_gb)}/GB ingested, not counted: about 100 bytes a request)", usd)


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
    capacity: str = "on-demand"  # the `capacity` setting
    idle_stop_minutes: int | None = None  # the `idleStopMinutes` setting
    spot: SpotPrice | None = None  # the recorded spot price for the instance type in the stack's region
    public_ipv4_usd_per_hour: float = 0.0

    @property
    def usd_per_month(self) -> float:
        return sum(line.usd_per_month for line in self.lines)

    @property
    def usd_per_hour(self) -> float:
        return self.usd_per_month / HOURS_PER_MONTH

    @property
    def monitored(self) -> bool:
        return any(line.what.startswith("CloudWatch") for line in self.lines)

    @property
    def fixed_usd_per_month(self) -> float:
        """What is billed all month, running or stopped: the volumes, the Elastic IP and CloudWatch."""
        return self.usd_per_month - self.instance_usd_per_hour * HOURS_PER_MONTH

    @property
    def spot_usd_per_hour(self) -> float | None:
        """The typical (median over zones) recorded spot price, or None when none is recorded."""
        return self.spot.typical if self.spot is not None else None

    @property
    def expected_usd_per_month(self) -> float:
        """The month with the stack's own capacity and idleStopMinutes, at USAGE when it stops when idle."""
        hourly = self.instance_usd_per_hour
        if self.capacity == "spot" and self.spot_usd_per_hour is not None:
            hourly = self.spot_usd_per_hour
        return month_usd(hourly, running_hours_per_month(self.idle_stop_minutes), self.fixed_usd_per_month)

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
        body += self.savings()
        body.append("  after `pulumi destroy`: " + self.after_destroy())
        return head + body

    def savings(self) -> list[str]:
        """What spot and stopping when idle save (or would save), said with their prices and assumptions."""
        od = self.instance_usd_per_hour
        if od <= 0:
            return []  # no on-demand price (Capacity Blocks only): nothing to compare with
        lines = [self._spot_line()]
        spot_hourly = self.spot_usd_per_hour
        month = float(HOURS_PER_MONTH)
        if spot_hourly is not None:
            verb = "saves" if self.capacity == "spot" else "would save (capacity: spot)"
            lines.append(f"  spot {verb}: the instance at {_usd(spot_hourly, 3)}/h instead of {_usd(od, 3)}/h, "
                         f"{_usd((od - spot_hourly) * month)}/month running all month; an interruption stops it "
                         "(nothing billed for it while stopped) until EC2 has capacity again")
        minutes = self.idle_stop_minutes or EXAMPLE_IDLE_STOP_MINUTES
        hours = running_hours_per_month(minutes)
        hourly = spot_hourly if self.capacity == "spot" and spot_hourly is not None else od
        setting = (f"idleStopMinutes {minutes}" if self.idle_stop_minutes is not None
                   else f"idleStopMinutes {minutes} (not set: an example)")
        verb = "saves" if self.idle_stop_minutes is not None else "would save"
        lines.append(
            f"  {setting} {verb}, assuming {USAGE.describe()}: the instance runs about {hours:,.0f} of {month:,.0f} h "
            f"({_usd(hourly * hours)} instead of {_usd(hourly * month)}); what is billed by the month (volumes, "
            f"Elastic IP{', CloudWatch' if self.monitored else ''}) stays billed while it is stopped "
            f"({_usd(self.fixed_usd_per_month)}/month: an Elastic IP on a stopped "
            f"instance is an idle public IPv4 address, {_usd(self.public_ipv4_usd_per_hour, 3)}/h): "
            f"{_usd(hourly * (month - hours))}/month less")
        if round(self.expected_usd_per_month, 2) != round(self.usd_per_month, 2):
            lines.append(f"  expected with these settings: {_usd(self.expected_usd_per_month)}/month "
                         f"(instead of {_usd(self.usd_per_month)} on demand all month)")
        return lines

    def _spot_line(self) -> str:
        where = self.region or self.ebs_region
        if self.spot is None:
            note = (f"  spot: no recorded spot price for {self.instance_name} in {where} (see `aws ec2 "
                    f"describe-spot-price-history --instance-types {self.instance_name} --product-descriptions "
                    "Linux/UNIX`)")
            if self.capacity == "spot":
                note += "; the saving of capacity spot is not counted"
            return note
        s = self.spot
        return (f"  spot price of {s.instance} in {s.region}: {_usd(s.low, 3)}-{_usd(s.high, 3)}/h across "
                f"{len(s.zones_usd_per_hour)} zones, typical {_usd(s.typical, 3)}/h (read {s.checked} from {s.where}; "
                f"spot prices change hourly, this is one reading), on demand {_usd(self.instance_usd_per_hour, 3)}/h "
                f"(of {self.instance_checked})")

    def after_destroy(self) -> str:
        if self.retained is not None:
            text = (f"the cache volume stays and costs {_usd(self.retained.usd_per_month)}/month until you delete "
                    "it (output retained_on_destroy); nothing else is left")
        else:
            text = (f"the adopted cache volume {self.adopted_volume_id} stays, as it was before this stack; "
                    "nothing else is left")
        if self.capacity == "spot":
            # hashicorp/terraform-provider-aws#38142: the provider has been reported to leave it open.
            text += ("; with capacity spot, check that the persistent spot request was cancelled (`aws ec2 "
                     "describe-spot-instance-requests --filters Name=state,Values=open,active,disabled`): an open "
                     "one launches a new instance")
        return text


def estimate_costs(instance: gpu_catalog.GpuInstanceType, cache: VolumeSpec | None, root: VolumeSpec,
                   region: str | None, adopted_volume_id: str | None = None, *, capacity: str = "on-demand",
                   idle_stop_minutes: int | None = None, monitoring: MonitoringUsage | None = None) -> CostEstimate:
    """`cache` None: the stack adopts `adopted_volume_id` instead of creating a volume (its size is known
    only once AWS is asked, so the plan does not count it). `capacity` and `idle_stop_minutes` are the stack's
    settings: the savings lines say what they save, or would."""
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
    if monitoring is not None:
        # Billed all month (a metric counts in any hour it receives data; the alarms and dashboard always).
        lines.append(monitoring.line())
    return CostEstimate(
        region=region, ebs_region=prices.name, instance_region=instance_region, lines=tuple(lines),
        instance_usd_per_hour=hourly, retained=retained, adopted_volume_id=adopted_volume_id,
        ebs_checked=PRICES_CHECKED, instance_checked=gpu_catalog.PRICES_CHECKED, instance_name=instance.name,
        capacity=capacity, idle_stop_minutes=idle_stop_minutes,
        spot=spot_price(instance.name, region or gpu_catalog.PRICE_REGION),
        public_ipv4_usd_per_hour=prices.public_ipv4_hour,
    )


def _usd(amount: float, decimals: int = 2) -> str:
    return f"${amount:,.{decimals}f}"
