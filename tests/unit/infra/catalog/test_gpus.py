"""The GPU catalog: complete families, consistent figures, lookups and the generated doc."""

from __future__ import annotations

import dataclasses

import pytest

from tools import gen_docs
from vllm_endpoint.infra.catalog.gpus import (
    GPU_MODELS,
    INSTANCE_TYPES,
    PRICE_REGION,
    hourly_price,
    lookup_gpu_model,
    lookup_instance_type,
    unlisted_gpu,
)

SIZES = {
    "g4dn": ["xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "metal"],
    "g5": ["xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge"],
    "g6": ["xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge"],
    "g6e": ["xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge"],
    "p3": ["2xlarge", "8xlarge", "16xlarge"],
    "gr6": ["4xlarge", "8xlarge"],
    "g7": ["2xlarge", "4xlarge", "8xlarge", "12xlarge", "24xlarge", "48xlarge"],
    "g7e": ["2xlarge", "4xlarge", "8xlarge", "12xlarge", "24xlarge", "48xlarge"],
    "p5": ["4xlarge", "48xlarge"],
    "p5e": ["48xlarge"],
    "p5en": ["48xlarge"],
    "p6-b200": ["48xlarge"],
    "p6-b300": ["48xlarge"],
}


def test_committed_doc_is_the_rendered_catalog() -> None:
    assert gen_docs.problems(paths=["docs/gpu-catalog.md"]) == []


@pytest.mark.parametrize("family", sorted(SIZES))
def test_every_size_of_each_family_is_listed(family: str) -> None:
    listed = {name for name in INSTANCE_TYPES if name.split(".")[0] == family}
    assert listed == {f"{family}.{size}" for size in SIZES[family]}


def test_the_large_training_types_are_listed() -> None:
    for name in ("p4d.24xlarge", "p4de.24xlarge", "p5.48xlarge", "p5e.48xlarge", "p5en.48xlarge",
                 "p6-b200.48xlarge", "p6-b300.48xlarge", "g7e.48xlarge", "g7.48xlarge"):
        assert lookup_instance_type(name).gpu_count == 8


def test_gpu_count_and_model_per_family() -> None:
    # Multi-GPU sizes: 12xlarge/24xlarge carry 4, 48xlarge/metal 8; 16xlarge is a 1-GPU size.
    assert lookup_instance_type("g5.16xlarge").gpu_count == 1
    assert lookup_instance_type("g5.12xlarge").gpu_count == 4
    assert lookup_instance_type("g6e.48xlarge").gpu_count == 8
    assert lookup_instance_type("g4dn.metal").gpu_count == 8
    # g7/g7e follow the g5/g6 layout except at 12xlarge, which carries 2.
    assert lookup_instance_type("g7e.12xlarge").gpu_count == 2
    assert lookup_instance_type("g7.24xlarge").gpu_count == 4
    expected_gpu = {"g4dn": "T4", "g5": "A10G", "g6": "L4", "gr6": "L4", "g6e": "L40S", "p3": "V100-16GB",
                    "p4d": "A100-40GB", "p4de": "A100-80GB", "p5": "H100-80GB", "p5e": "H200", "p5en": "H200",
                    "p6-b200": "B200", "p6-b300": "B300", "g7e": "RTX-PRO-6000", "g7": "RTX-PRO-4500"}
    assert {inst.family for inst in INSTANCE_TYPES.values()} == {*expected_gpu, "p3dn"}
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
    # Only p5e has no on-demand price: AWS sells it as Capacity Blocks.
    unpriced = {i.name for i in INSTANCE_TYPES.values() if i.price_usd_per_hour is None}
    assert unpriced == {"p5e.48xlarge"}
    assert "Capacity Blocks" in lookup_instance_type("p5e.48xlarge").source_note


def test_new_types_carry_their_published_figures() -> None:
    # aws/karpenter-provider-aws's instance-type reference and us-east-1 price table (see the data file).
    p5en = lookup_instance_type("p5en.48xlarge")
    assert (p5en.gpu_count, p5en.vcpus, p5en.memory_gib, p5en.price_usd_per_hour) == (8, 192, 2048, 63.296)
    assert (p5en.ebs_max_mbps, p5en.instance_store_gb) == (100000, 30400)
    assert lookup_instance_type("p5e.48xlarge").ebs_max_mbps == 80000
    b200 = lookup_instance_type("p6-b200.48xlarge")
    assert (b200.gpu.name, b200.price_usd_per_hour, b200.gpu.memory_mib) == ("B200", 113.9328, 183359)
    g7e = lookup_instance_type("g7e.2xlarge")
    assert (g7e.vcpus, g7e.memory_gib, g7e.price_usd_per_hour, g7e.gpu.memory_mib) == (8, 64, 3.36312, 97887)
    assert lookup_instance_type("gr6.4xlarge").memory_gib == 128
    # Entries stay usable as set members and dict keys although their prices are a mapping.
    assert len(set(INSTANCE_TYPES.values())) == len(INSTANCE_TYPES)


def test_hourly_price_says_which_region_it_is_for() -> None:
    assert PRICE_REGION == "us-east-1"
    assert hourly_price("g5.xlarge", "us-east-1") == (1.006, "us-east-1")
    # No other region's price is in the catalog yet: the us-east-1 figure comes back, labelled as such.
    assert hourly_price(lookup_instance_type("p5en.48xlarge"), "eu-west-1") == (63.296, "us-east-1")
    assert hourly_price("p5e.48xlarge", "us-east-1") == (None, None)


def test_a_regional_price_is_used_where_the_catalog_has_it() -> None:
    g5 = lookup_instance_type("g5.xlarge")
    regional = dataclasses.replace(g5, prices_usd_per_hour={"us-east-1": 1.006, "eu-west-1": 1.123})
    assert hourly_price(regional, "eu-west-1") == (1.123, "eu-west-1")
    assert hourly_price(regional, "us-west-2") == (1.006, "us-east-1")
    assert regional.price_usd_per_hour == 1.006


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
    assert unsourced == {"g6", "g6e", "gr6", "g7", "g7e", "p5", "p5e", "p5en", "p6-b200", "p6-b300"}
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
        assert gpu.ec2_memory_mib * 0.93 <= gpu.fit_memory_mib <= gpu.ec2_memory_mib + 1024, gpu.name
        assert gpu.memory_mib is not None or "no public" in gpu.source_note, gpu.name
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
    for family in ("g4dn", "g5", "g6", "g6e", "gr6", "g7", "g7e", "p3", "p4d", "p4de", "p5", "p5e", "p5en",
                   "p6-b200", "p6-b300"):
        assert family in message


@pytest.mark.parametrize(("name", "why"), [
    ("g6f.large", "g6f is a fraction of an L4 GPU (NVIDIA vGPU): vLLM needs a whole GPU; take g6.xlarge"),
    ("p6e-gb200.36xlarge", "p6e-gb200 is sold only as P6e-GB200 UltraServers"),
    ("g5g.xlarge", "arm64 (Graviton2)"),
])
def test_an_nvidia_family_the_product_cannot_use_is_refused_with_the_reason(name: str, why: str) -> None:
    with pytest.raises(ValueError, match=f"'{name}' cannot host this endpoint: ") as err:
        lookup_instance_type(name)
    assert why in str(err.value)


def test_lookup_gpu_model_by_catalog_or_driver_name() -> None:
    assert lookup_gpu_model("l40s").name == "L40S"
    assert lookup_gpu_model("NVIDIA A10G").name == "A10G"
    assert lookup_gpu_model("Tesla T4").name == "T4"
    with pytest.raises(ValueError, match="known models are T4, A10G") as err:
        lookup_gpu_model("RTX 4090")
    assert "for another GPU set hostGpuMemoryGib and hostGpuComputeCapability instead" in str(err.value)


@pytest.mark.parametrize(("name", "gpu"), [
    ("H200", "H200"), ("NVIDIA H200", "H200"), ("h100", "H100-80GB"), ("B200", "B200"), ("L40S", "L40S"),
    ("L4", "L4"), ("A10G", "A10G"), ("T4", "T4"), ("A100-40GB", "A100-40GB"), ("A100-80GB", "A100-80GB"),
    ("NVIDIA B300 SXM6 AC", "B300"), ("RTX PRO 6000", "RTX-PRO-6000"),
    ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "RTX-PRO-6000"),
])
def test_host_gpu_names_a_user_would_write(name: str, gpu: str) -> None:
    assert lookup_gpu_model(name).name == gpu


def test_new_gpus_have_hopper_and_blackwell_capabilities() -> None:
    h200 = lookup_gpu_model("H200")
    assert (h200.compute_capability, h200.bf16, h200.fp8, h200.memory_mib) == ((9, 0), True, True, 143771)
    assert lookup_gpu_model("B200").compute_capability == (10, 0)
    assert lookup_gpu_model("RTX-PRO-6000").compute_capability == (12, 0)
    # No public nvidia-smi figure for the RTX PRO 4500: the EC2 API's 32768 MiB stands in.
    rtx4500 = lookup_gpu_model("RTX-PRO-4500")
    assert rtx4500.memory_mib is None and rtx4500.memory_bytes == 32768 * 1024 * 1024


@pytest.mark.parametrize(("capability", "bf16", "fp8", "supported"), [
    ("7.0", False, False, False), ("7.5", False, False, True), ("8.0", True, False, True),
    ("8.6", True, False, True), ("8.9", True, True, True), ("9.0", True, True, True), ("12.0", True, True, True),
])
def test_an_unlisted_gpu_gets_vllms_rules_from_its_capability(capability: str, bf16: bool, fp8: bool,
                                                              supported: bool) -> None:
    gpu = unlisted_gpu(94.5, capability)
    assert (gpu.bf16, gpu.fp8, gpu.supported_by_vllm, gpu.unlisted) == (bf16, fp8, supported, True)
    assert gpu.memory_mib == 96768 and gpu.memory_bytes == 96768 * 1024 * 1024
    assert gpu.name == "unlisted GPU" and gpu.compute_capability_str == capability
