"""The fleet's numbers, decided before any resource exists: which instance types may carry a replica, how
much of an instance a task reserves, how many instances may be spot, and how a deployment replaces tasks.

Pure functions of the catalog and the fleet's settings (no Pulumi, no AWS calls), used by
components/fleet.py (`VllmFleet`). Every replica takes all the GPUs of its instance, so an instance
carries exactly one task: replicas and instances are counted alike here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from vllm_endpoint.infra.catalog.gpus import INSTANCE_TYPES, GpuInstanceType, hourly_price
from vllm_endpoint.infra.catalog.prices import HOURS_PER_MONTH, LOAD_BALANCER, S3_STORAGE, spot_price
from vllm_endpoint.infra.plan.costs import MonitoringUsage
from vllm_endpoint.infra.settings.models import FleetSettings

# ECS counts CPU in units of 1/1024 vCPU (RegisterTaskDefinition `cpu`).
CPU_UNITS_PER_VCPU: Final = 1024
# Kept back from the task on every instance: half a vCPU for the ECS agent, Docker, the SSM agent and the
# CloudWatch agent (together a few per cent of one vCPU at rest, bursts at image pulls and task starts).
HOST_CPU_UNITS: Final = 512
# Memory kept back: 10 % of the nominal size, at least 1 GiB. The agent registers what the OS sees, which is
# already a few per cent below the EC2 figure (kernel, firmware, the NVIDIA driver's pinned memory); then the
# agent, Docker and the SSM agent take some hundreds of MiB. A task larger than the registered memory is never
# placed, so the margin errs on the generous side: one task per instance, so the headroom costs no replica.
HOST_MEMORY_FRACTION: Final = 0.10
HOST_MEMORY_MIN_MIB: Final = 1024
# Task memory in steps of this size (a round figure reads well in the console and the plan).
MEMORY_STEP_MIB: Final = 128


class FleetError(ValueError):
    """Fleet settings that cannot work together; the message names the settings."""


@dataclass(frozen=True)
class TaskReservations:
    cpu_units: int
    memory_mib: int
    why: str


def fleet_instance_types(primary: GpuInstanceType, extra: Sequence[GpuInstanceType]) -> tuple[GpuInstanceType, ...]:
    """The primary type first (the on-demand priority), then the extra ones, each once. Every one must carry the
    same GPUs, as many: the task asks for the primary's GPU count, and the fit check sized the model for its GPU."""
    chosen = [primary]
    for other in extra:
        if other.name in {c.name for c in chosen}:
            continue
        if other.gpu.name != primary.gpu.name or other.gpu_count != primary.gpu_count:
            raise FleetError(
                f"extraInstanceTypes: {other.name} has {other.gpu_count} x {other.gpu.name}, instanceType "
                f"{primary.name} has {primary.gpu_count} x {primary.gpu.name}; a fleet mixes only types with the "
                "same GPUs (the task takes all of them, and the fit check sized the model for that GPU)")
        chosen.append(other)
    return tuple(chosen)


def task_reservations(instances: Sequence[GpuInstanceType]) -> TaskReservations:
    """The task's `cpu` and `memory`: what the smallest of the types leaves after the host's share, so the task
    fits whichever type the Auto Scaling group launches."""
    if not instances:
        raise FleetError("no instance type to size the task for")
    smallest_cpu = min(instances, key=lambda i: i.vcpus)
    smallest_memory = min(instances, key=lambda i: i.memory_mib)
    cpu = smallest_cpu.vcpus * CPU_UNITS_PER_VCPU - HOST_CPU_UNITS
    headroom = max(HOST_MEMORY_MIN_MIB, math.ceil(smallest_memory.memory_mib * HOST_MEMORY_FRACTION))
    memory = (smallest_memory.memory_mib - headroom) // MEMORY_STEP_MIB * MEMORY_STEP_MIB
    if cpu < CPU_UNITS_PER_VCPU // 2 or memory < HOST_MEMORY_MIN_MIB:
        raise FleetError(f"instanceType {smallest_memory.name}: too small to leave room for the ECS agent")
    why = (f"{smallest_cpu.name}: {smallest_cpu.vcpus} vCPU less {HOST_CPU_UNITS} units; {smallest_memory.name}: "
           f"{smallest_memory.memory_mib} MiB less {headroom} MiB (max({HOST_MEMORY_MIN_MIB} MiB, "
           f"{HOST_MEMORY_FRACTION:.0%})) for the OS, the ECS agent and Docker")
    return TaskReservations(cpu, memory, why)


@dataclass(frozen=True)
class SpotSplit:
    """The Auto Scaling group's instances distribution: `on_demand_base` instances on demand, then this
    percentage of the instances above the base on demand and the rest spot."""

    on_demand_base_capacity: int
    on_demand_percentage_above_base_capacity: int


def spot_split(on_demand_base: int, spot_weight: int, on_demand_weight: int) -> SpotSplit:
    """Weights as ECS capacity provider strategies state them (on demand : spot), turned into the percentage
    the mixed instances policy takes, rounded to the nearest whole per cent (half up)."""
    problems = [f"{key} must be 0 or more, not {value}" for key, value in (
        ("onDemandBase", on_demand_base), ("spotWeight", spot_weight), ("onDemandWeight", on_demand_weight))
        if value < 0]
    if spot_weight + on_demand_weight == 0 and not problems:
        problems.append("spotWeight and onDemandWeight are both 0: give one of them a weight")
    if problems:
        raise FleetError("; ".join(problems))
    total = spot_weight + on_demand_weight
    return SpotSplit(on_demand_base, (100 * on_demand_weight + total // 2) // total)


@dataclass(frozen=True)
class ReplicaBounds:
    desired: int
    minimum: int
    maximum: int


def replica_bounds(desired: int, minimum: int, maximum: int) -> ReplicaBounds:
    if not 1 <= minimum <= desired <= maximum:
        raise FleetError(f"replicas: need 1 <= minReplicas ({minimum}) <= replicas ({desired}) <= maxReplicas "
                         f"({maximum})")
    return ReplicaBounds(desired, minimum, maximum)


@dataclass(frozen=True)
class DeploymentPercents:
    minimum_healthy_percent: int
    maximum_percent: int
    why: str


def max_instances(bounds: ReplicaBounds, surge: bool) -> int:
    """The Auto Scaling group's maximum size: room for a whole second fleet during a deployment (surge), or not
    one instance beyond the replicas. Managed scaling keeps the group at what the tasks need, so the extra
    instances exist only while a deployment runs."""
    return 2 * bounds.maximum if surge else bounds.maximum


def deployment_percents(bounds: ReplicaBounds, instances: int) -> DeploymentPercents:
    """The service's deploymentMinimumHealthyPercent and deploymentMaximumPercent.

    ECS applies them to the desired count of the moment, which autoscaling moves between the bounds: the
    least healthy tasks are desired x minimum / 100 rounded up, the most tasks desired x maximum / 100 rounded
    down. So the choice must hold for every desired count in the bounds.

    Room (instances for twice the most replicas): 100/200, a new task starts, becomes healthy, and only then an
    old one stops; no capacity is lost, and managed scaling launches the extra instances for the new tasks.
    No room: maximum 100 (no task beyond the desired count: there is no instance for it), and the minimum lets
    one old task stop before its successor starts on the freed instance, for the smallest desired count (a
    larger one stops several at once, never more than the minimum allows). 2 replicas: 50. One replica at the
    least: 0, the update takes the endpoint down for a cold start; any minimum above 0 would leave ECS unable
    to stop the one task or start a second, and the deployment would never progress.
    """
    if instances >= 2 * bounds.maximum:
        return DeploymentPercents(100, 200, f"{instances} instances at most hold twice the {bounds.maximum} "
                                            "replicas: new tasks start before old ones stop")
    least = bounds.minimum
    minimum = 100 * (least - 1) // least
    return DeploymentPercents(minimum, 100, f"{instances} instances at most, {bounds.maximum} replicas: no room for "
                                            "a new task beside the old ones, so old tasks stop first "
                                            f"(at {least} replicas, one at a time)")


# ----------------------------------------------------------------------------------------------
# The fleet as the stack's settings describe it, and what it costs.

# The plan counts one LCU around the clock: an API called by a few apps stays below it (25 new connections a
# second, 3,000 active a minute, 1 GB processed an hour); heavier traffic bills more LCUs (the line says so).
COUNTED_LCUS: Final = 1


def on_demand_count(replicas: int, split: SpotSplit) -> int:
    """How many of `replicas` instances the Auto Scaling group launches on demand: the base, then the
    on-demand percentage of the rest, rounded up (the group rounds in favour of on demand)."""
    base = min(replicas, split.on_demand_base_capacity)
    rest = replicas - base
    return base + math.ceil(rest * split.on_demand_percentage_above_base_capacity / 100)


@dataclass(frozen=True)
class FleetCosts:
    """A month of the fleet at a replica count: instances by capacity, their volumes, the load balancer."""

    region: str
    on_demand_usd_per_hour: float
    spot_usd_per_hour: float | None  # typical recorded spot price; None: none recorded
    volumes_usd_per_month: float  # one instance's root and cache volumes
    load_balancer_usd_per_month: float
    split: SpotSplit
    monitoring: MonitoringUsage | None = None  # `metrics` on: the dashboard, the alarms, the sidecars' metrics
    model_copy_bytes: int = 0  # modelPath: the folder's copy in the stack's S3 bucket
    warm_pool_size: int = 0  # stopped instances: their volumes bill, their hours do not

    @property
    def monitoring_usd_per_month(self) -> float:
        return self.monitoring.line().usd_per_month if self.monitoring is not None else 0.0

    @property
    def model_copy_usd_per_month(self) -> float:
        return self.model_copy_bytes / 1e9 * S3_STORAGE.standard_gb_month

    def usd_per_month(self, replicas: int) -> float:
        on_demand = on_demand_count(replicas, self.split)
        spot_hourly = self.spot_usd_per_hour if self.spot_usd_per_hour is not None else self.on_demand_usd_per_hour
        instances = (on_demand * self.on_demand_usd_per_hour + (replicas - on_demand) * spot_hourly) * HOURS_PER_MONTH
        return (instances + (replicas + self.warm_pool_size) * self.volumes_usd_per_month
                + self.load_balancer_usd_per_month + self.monitoring_usd_per_month + self.model_copy_usd_per_month)

    def line(self, label: str, replicas: int) -> str:
        on_demand = on_demand_count(replicas, self.split)
        month = self.usd_per_month(replicas)
        return (f"  at {label} {replicas} replica{'s' if replicas > 1 else ''} ({on_demand} on demand, "
                f"{replicas - on_demand} spot): ${month:,.2f}/month (${month / HOURS_PER_MONTH:,.3f}/h)")


@dataclass(frozen=True)
class FleetPlan:
    instance_types: tuple[GpuInstanceType, ...]
    bounds: ReplicaBounds
    spot: SpotSplit
    costs: FleetCosts

    def describe(self) -> list[str]:
        c, b = self.costs, self.bounds
        spot_note = (f"spot ${c.spot_usd_per_hour:,.3f}/h (a recorded reading)" if c.spot_usd_per_hour is not None
                     else "spot counted at the on-demand price (no recorded spot price)")
        lines = [f"fleet: {b.minimum}-{b.maximum} replicas (desired {b.desired}) of "
                 f"{' / '.join(t.name for t in self.instance_types)} on Amazon ECS behind an Application Load "
                 f"Balancer, in {c.region}; per replica: the instance on demand ${c.on_demand_usd_per_hour:,.3f}/h "
                 f"or {spot_note}, its root and cache volumes ${c.volumes_usd_per_month:,.2f}/month; the load "
                 f"balancer ${c.load_balancer_usd_per_month:,.2f}/month ({COUNTED_LCUS} LCU counted; more traffic "
                 "bills more)" + (f"; {_monitoring_note(c.monitoring)}" if c.monitoring is not None else "")
                 + (f"; the modelPath folder's copy in S3 ({c.model_copy_bytes / 1e9:,.2f} GB) "
                    f"${c.model_copy_usd_per_month:,.2f}/month" if c.model_copy_bytes else "")
                 + (f"; a warm pool of {c.warm_pool_size} stopped instance{'s' if c.warm_pool_size > 1 else ''} "
                    f"(their volumes only: ${c.warm_pool_size * c.volumes_usd_per_month:,.2f}/month)"
                    if c.warm_pool_size else "") + ":"]
        lines.append(c.line("the minimum of", b.minimum))
        if b.maximum != b.minimum:
            lines.append(c.line("the maximum of", b.maximum))
        lines.append("  a rolling update may run up to twice the replicas' instances for its duration; after "
                     "`pulumi destroy` nothing is left (each instance's volumes go with it)")
        return lines


def _monitoring_note(usage: MonitoringUsage) -> str:
    line = usage.line()
    return (f"{line.what}: ${line.usd_per_month:,.2f}/month (Container Insights' own metrics, billed as custom "
            "metrics too, not counted)")


def fleet_costs(instance: GpuInstanceType, volumes_usd_per_month: float, region: str, split: SpotSplit,
                monitoring: MonitoringUsage | None = None, model_copy_bytes: int = 0,
                warm_pool_size: int = 0) -> FleetCosts:
    price, _ = hourly_price(instance, region)
    spot = spot_price(instance.name, region)
    alb = (LOAD_BALANCER.alb_hour + COUNTED_LCUS * LOAD_BALANCER.lcu_hour) * HOURS_PER_MONTH
    return FleetCosts(region=region, on_demand_usd_per_hour=price or 0.0,
                      spot_usd_per_hour=spot.typical if spot is not None else None,
                      volumes_usd_per_month=volumes_usd_per_month, load_balancer_usd_per_month=alb, split=split,
                      monitoring=monitoring, model_copy_bytes=model_copy_bytes, warm_pool_size=warm_pool_size)


def plan_fleet(settings: FleetSettings, primary: GpuInstanceType, volumes_usd_per_month: float, region: str,
               problems: list[str], monitoring: MonitoringUsage | None = None,
               model_copy_bytes: int = 0) -> FleetPlan | None:
    """The fleet the settings describe (`replicas` set), or None with the problems appended."""
    assert settings.replicas is not None
    extra = []
    for name in settings.extra_instance_types:
        found = INSTANCE_TYPES.get(name)
        if found is None:
            problems.append(f"extraInstanceTypes: {name} is not in the GPU catalog (docs/gpu-catalog.md)")
        else:
            extra.append(found)
    desired, minimum, maximum = settings.replica_counts()
    try:
        types = fleet_instance_types(primary, extra)
        bounds = replica_bounds(desired, minimum, maximum)
        split = spot_split(settings.on_demand_base, settings.spot_weight, settings.on_demand_weight)
        task_reservations(types)
    except FleetError as err:
        problems.append(str(err))
        return None
    return FleetPlan(types, bounds, split, fleet_costs(primary, volumes_usd_per_month, region, split, monitoring,
                                                       model_copy_bytes, settings.warm_pool_size))
