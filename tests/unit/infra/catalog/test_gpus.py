"""The GPU catalog: complete families, consistent figures, lookups and the generated doc."""

from __future__ import annotations

import pytest

from tools import gen_docs
from vllm_endpoint.infra.catalog.gpus import GPU_MODELS, INSTANCE_TYPES, lookup_gpu_model, lookup_instance_type

SIZES = {
    "g4dn": ["xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "metal"],
    "g5": ["xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge"],
    "g6": ["xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge"],
    "g6e": ["xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge"],
    "p3": ["2xlarge", "8xlarge", "16xlarge"],
}


def test_committed_doc_is_the_rendered_catalog() -> None:
    assert gen_docs.problems(paths=["docs/gpu-catalog.md"]) == []


@pytest.mark.parametrize("family", sorted(SIZES))
def test_every_size_of_each_family_is_listed(family: str) -> None:
    listed = {name for name in INSTANCE_TYPES if name.split(".")[0] == family}
    assert listed == {f"{family}.{size}" for size in SIZES[family]}


def test_the_large_training_types_are_listed() -> None:
    for name in ("p4d.24xlarge", "p4de.24xlarge", "p5.48xlarge"):
        assert lookup_instance_type(name).gpu_count == 8


def test_gpu_count_and_model_per_family() -> None:
    # Multi-GPU sizes: 12xlarge/24xlarge carry 4, 48xlarge/metal 8; 16xlarge is a 1-GPU size.
    assert lookup_instance_type("g5.16xlarge").gpu_count == 1
    assert lookup_instance_type("g5.12xlarge").gpu_count == 4
    assert lookup_instance_type("g6e.48xlarge").gpu_count == 8
    assert lookup_instance_type("g4dn.metal").gpu_count == 8
    expected_gpu = {"g4dn": "T4", "g5": "A10G", "g6": "L4", "g6e": "L40S", "p3": "V100-16GB",
                    "p4d": "A100-40GB", "p4de": "A100-80GB", "p5": "H100-80GB"}
    for inst in INSTANCE_TYPES.values():
        if inst.family in expected_gpu:
            assert inst.gpu.name == expected_gpu[inst.family], inst.name


def test_prices_match_the_independent_note_in_shared_facts() -> None:
    # /work/shared/notes/vllm-facts.md read these from a different public catalog.
    assert lookup_instance_type("g4dn.xlarge").price_usd_per_hour == 0.526
    assert lookup_instance_type("g5.xlarge").price_usd_per_hour == 1.006
    assert lookup_instance_type("g6.xlarge").price_usd_per_hour == 0.8048
    assert lookup_instance_type("g6e.xlarge").price_usd_per_hour == 1.861
    assert lookup_instance_type("g6e.xlarge").memory_gib == 32
    assert all(i.price_usd_per_hour > 0 for i in INSTANCE_TYPES.values())


def test_ebs_units_and_burst() -> None:
    g5 = lookup_instance_type("g5.xlarge")
    # 700 Mbps = 700e6 bit/s / 8 = 87.5e6 B/s = 87.5e6 / 1048576 MiB/s
    assert g5.ebs_baseline_mib_s == pytest.approx(87_500_000 / 1_048_576)
    assert g5.ebs_max_mib_s == pytest.approx(3500 * 1_000_000 / 8 / 1_048_576)
    assert g5.ebs_burst is True
    assert lookup_instance_type("g5.8xlarge").ebs_burst is False
    for inst in INSTANCE_TYPES.values():
        if inst.ebs_baseline_mbps is not None:
            assert inst.ebs_baseline_mbps <= inst.ebs_max_mbps, inst.name
            assert inst.ebs_baseline_iops is not None and inst.ebs_max_iops is not None
            assert inst.ebs_baseline_iops <= inst.ebs_max_iops, inst.name


def test_unsourced_ebs_baselines_are_exactly_the_newer_families() -> None:
    unsourced = {i.family for i in INSTANCE_TYPES.values() if i.ebs_baseline_mbps is None}
    assert unsourced == {"g6", "g6e", "p5"}
    for inst in INSTANCE_TYPES.values():
        if inst.family in unsourced:
            assert inst.ebs_burst is None and inst.ebs_baseline_mib_s is None and inst.ebs_max_iops is None
            assert "not found" in inst.source_note


def test_nitro_recovery_and_instance_store() -> None:
    assert {i.name for i in INSTANCE_TYPES.values() if not i.nitro} == {"p3.2xlarge", "p3.8xlarge", "p3.16xlarge"}
    # EC2's recover action wants no instance-store volumes: of these, only p3 has none.
    assert {i.name for i in INSTANCE_TYPES.values() if i.supports_recovery} == {
        "p3.2xlarge", "p3.8xlarge", "p3.16xlarge"}
    for inst in INSTANCE_TYPES.values():
        assert inst.supports_recovery == (inst.instance_store_gb == 0), inst.name


def test_gpu_capabilities_follow_compute_capability() -> None:
    for gpu in GPU_MODELS.values():
        assert gpu.bf16 == (gpu.compute_capability >= (8, 0)), gpu.name
        assert gpu.fp8 == (gpu.compute_capability >= (8, 9)), gpu.name
        assert gpu.supported_by_vllm == (gpu.compute_capability >= (7, 5)), gpu.name
        # The driver never reports more than 1 GiB beyond, nor 7 % below, the EC2 API's figure.
        assert gpu.ec2_memory_mib * 0.93 <= gpu.memory_mib <= gpu.ec2_memory_mib + 1024, gpu.name
    assert not lookup_instance_type("p3.2xlarge").gpu.supported_by_vllm
    assert lookup_gpu_model("T4").compute_capability_str == "7.5"


def test_memory_is_the_driver_total() -> None:
    # nvidia-smi on a g5: "0MiB / 23028MiB".
    a10g = lookup_gpu_model("A10G")
    assert a10g.memory_mib == 23028
    assert a10g.memory_bytes == 23028 * 1024 * 1024
    assert a10g.memory_gib == pytest.approx(22.488, abs=0.001)


def test_lookup_instance_type_is_forgiving_about_case_and_spaces() -> None:
    assert lookup_instance_type(" G5.XLarge ").name == "g5.xlarge"


def test_unknown_instance_type_lists_the_families() -> None:
    with pytest.raises(ValueError) as err:
        lookup_instance_type("m5.large")
    message = str(err.value)
    assert "'m5.large'" in message
    for family in ("g4dn", "g5", "g6", "g6e", "p3", "p4d", "p4de", "p5"):
        assert family in message


def test_lookup_gpu_model_by_catalog_or_driver_name() -> None:
    assert lookup_gpu_model("l40s").name == "L40S"
    assert lookup_gpu_model("NVIDIA A10G").name == "A10G"
    assert lookup_gpu_model("Tesla T4").name == "T4"
    with pytest.raises(ValueError, match="known models are T4, A10G"):
        lookup_gpu_model("RTX 4090")
