"""The fleet's numbers (infra/plan/fleet.py): the rules they must keep for every setting, not sample values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vllm_endpoint.infra.catalog.gpus import INSTANCE_TYPES, GpuInstanceType
from vllm_endpoint.infra.plan.fleet import (
    CPU_UNITS_PER_VCPU,
    HOST_MEMORY_MIN_MIB,
    FleetError,
    ReplicaBounds,
    deployment_percents,
    fleet_instance_types,
    max_instances,
    replica_bounds,
    spot_split,
    task_reservations,
)

TYPES = sorted(INSTANCE_TYPES.values(), key=lambda i: i.name)


@st.composite
def bounds(draw: st.DrawFn) -> ReplicaBounds:
    maximum = draw(st.integers(1, 100))
    minimum = draw(st.integers(1, maximum))
    return replica_bounds(draw(st.integers(minimum, maximum)), minimum, maximum)


def least_tasks(desired: int, percent: int) -> int:
    return math.ceil(desired * percent / 100)


def most_tasks(desired: int, percent: int) -> int:
    return desired * percent // 100


@given(bounds(), st.booleans())
def test_with_room_no_capacity_is_lost_and_every_new_task_has_an_instance(b: ReplicaBounds, surge: bool) -> None:
    instances = max_instances(b, surge)
    p = deployment_percents(b, instances)
    for desired in range(b.minimum, b.maximum + 1):  # autoscaling may have moved the count anywhere in the bounds
        if surge:
            assert least_tasks(desired, p.minimum_healthy_percent) == desired
            assert desired < most_tasks(desired, p.maximum_percent) <= instances
        else:
            # No instance beyond the replicas: never a task beyond the desired count, and at least one old task
            # may stop (else the deployment never moves).
            assert most_tasks(desired, p.maximum_percent) == desired <= instances
            assert least_tasks(desired, p.minimum_healthy_percent) <= desired - 1


@given(bounds())
def test_without_room_replicas_above_one_keep_serving(b: ReplicaBounds) -> None:
    p = deployment_percents(b, b.maximum)
    for desired in range(max(2, b.minimum), b.maximum + 1):
        if b.minimum >= 2:
            assert least_tasks(desired, p.minimum_healthy_percent) >= 1


def test_the_usual_cases() -> None:
    assert (deployment_percents(replica_bounds(2, 2, 4), 8).minimum_healthy_percent,
            deployment_percents(replica_bounds(2, 2, 4), 8).maximum_percent) == (100, 200)
    two = deployment_percents(replica_bounds(2, 2, 2), 2)
    assert (two.minimum_healthy_percent, two.maximum_percent) == (50, 100)
    one = deployment_percents(replica_bounds(1, 1, 3), 3)
    assert (one.minimum_healthy_percent, one.maximum_percent) == (0, 100)  # one replica, no room: down for the update


@pytest.mark.parametrize("desired, minimum, maximum", [(0, 0, 1), (3, 1, 2), (1, 2, 3)])
def test_replica_bounds_are_ordered(desired: int, minimum: int, maximum: int) -> None:
    with pytest.raises(FleetError, match="minReplicas"):
        replica_bounds(desired, minimum, maximum)


@given(st.lists(st.sampled_from(TYPES), min_size=1, max_size=4))
def test_the_task_fits_every_type_with_room_for_the_agent(types: list[GpuInstanceType]) -> None:
    try:
        r = task_reservations(types)
    except FleetError:
        return  # a type too small for a task at all
    for t in types:
        assert 0 < r.cpu_units < t.vcpus * CPU_UNITS_PER_VCPU
        assert 0 < r.memory_mib <= t.memory_mib - HOST_MEMORY_MIN_MIB
        assert r.memory_mib % 128 == 0


def test_a_g5_xlarge_task() -> None:
    r = task_reservations([INSTANCE_TYPES["g5.xlarge"]])  # 4 vCPU, 16 GiB
    assert (r.cpu_units, r.memory_mib) == (3584, 14720)


@given(st.integers(0, 10), st.integers(0, 100), st.integers(0, 100))
def test_the_spot_split_follows_the_weights(base: int, spot: int, on_demand: int) -> None:
    if spot + on_demand == 0:
        with pytest.raises(FleetError, match="both 0"):
            spot_split(base, spot, on_demand)
        return
    s = spot_split(base, spot, on_demand)
    assert s.on_demand_base_capacity == base
    assert 0 <= s.on_demand_percentage_above_base_capacity <= 100
    assert abs(s.on_demand_percentage_above_base_capacity - 100 * on_demand / (spot + on_demand)) <= 0.5
    if on_demand == 0:
        assert s.on_demand_percentage_above_base_capacity == 0  # all spot above the base
    if spot == 0:
        assert s.on_demand_percentage_above_base_capacity == 100  # no spot at all


def test_spot_split_cases_and_refusals() -> None:
    assert spot_split(1, 3, 1).on_demand_percentage_above_base_capacity == 25
    assert spot_split(0, 1, 0).on_demand_percentage_above_base_capacity == 0  # all spot
    assert spot_split(2, 0, 1).on_demand_percentage_above_base_capacity == 100  # all on demand
    with pytest.raises(FleetError, match="onDemandBase must be 0 or more"):
        spot_split(-1, 1, 1)


def test_extra_types_must_carry_the_same_gpus() -> None:
    g5, g5_2x = INSTANCE_TYPES["g5.xlarge"], INSTANCE_TYPES["g5.2xlarge"]
    assert fleet_instance_types(g5, (g5_2x, g5)) == (g5, g5_2x)
    other = next(t for t in TYPES if t.gpu.name != g5.gpu.name)
    with pytest.raises(FleetError, match=f"extraInstanceTypes: {other.name}"):
        fleet_instance_types(g5, (other,))
