"""The GPU fit check, against answers worked out by hand from the documented arithmetic."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vllm_endpoint.infra.catalog.gpus import lookup_gpu_model, lookup_instance_type
from vllm_endpoint.infra.catalog.models import KNOWN_MODELS, architecture_from_config
from vllm_endpoint.infra.plan.fit import FitError, cheapest_fitting_instance, check_fit, resolve_dtype

GIB = 1024**3
QWEN15 = KNOWN_MODELS["Qwen/Qwen2.5-1.5B-Instruct"]
QWEN7 = KNOWN_MODELS["Qwen/Qwen2.5-7B-Instruct"]
QWEN14 = KNOWN_MODELS["Qwen/Qwen2.5-14B-Instruct"]
LLAMA8 = KNOWN_MODELS["meta-llama/Llama-3.1-8B-Instruct"]
A10G = lookup_gpu_model("A10G")
T4 = lookup_gpu_model("T4")
A10G_BYTES = 23028 * 1024 * 1024  # nvidia-smi total of an A10G


def test_qwen25_15b_bf16_on_one_a10g_by_hand() -> None:
    report = check_fit(QWEN15, A10G, 1, 1, "auto", None, None, None, 0.9, instance_type="g5.xlarge")

    budget = int(A10G_BYTES * 0.9)                      # 21,732,008,755
    weights = 1_543_714_304 * 2                          # bf16
    non_torch, graphs = GIB // 2, GIB // 2
    # A10G < 70 GiB: vLLM's defaults are max_num_batched_tokens 2048, max_num_seqs 256.
    forward = 2048 * (4 * 1536 + 3 * 8960 + 12 * 128 + 2 * 2 * 128) * 2
    sampler = 256 * 151936 * 4 * 5
    kv_cache = budget - weights - non_torch - graphs - forward - sampler
    per_token = 2 * 28 * 2 * 128 * 2                     # K+V x layers x KV heads x head_dim x bf16
    assert per_token == 28_672
    tokens = kv_cache // (per_token * 16) * 16           # whole 16-token blocks

    assert report.dtype == "bfloat16"
    assert report.max_model_len == 32768                 # None -> max_position_embeddings
    assert report.budget_bytes == budget
    assert report.weights_bytes == weights
    assert report.overhead_bytes == non_torch + graphs + forward + sampler
    assert report.kv_cache_bytes == kv_cache
    assert report.kv_bytes_per_token == per_token
    assert report.kv_cache_tokens == tokens == 580_672
    assert report.max_concurrent_sequences == pytest.approx(580_672 / 32768)  # 17.7
    assert report.fits and report.error_message() == "" and report.ways_out == ()
    assert report.summary() == (
        "Qwen/Qwen2.5-1.5B-Instruct bfloat16 on 1x A10G (22.49 GiB, 0.90): weights 2.9 GiB, "
        "KV cache 15.5 GiB = 581k tokens = 17 concurrent 32768-token sequences; g5.xlarge $1.006/h"
    )
    report.raise_if_not_fits()


def test_qwen25_14b_on_one_a10g_does_not_fit_and_says_why() -> None:
    report = check_fit(QWEN14, A10G, 1, 1, "auto", None, None, None, 0.9)
    weights = 14_770_033_664 * 2                         # 29.5 GB of bf16 weights
    assert report.weights_bytes == weights
    assert weights > report.budget_bytes                 # > 0.9 x 22.49 GiB before any KV cache
    assert not report.fits and report.kv_cache_tokens == 0
    assert report.kv_bytes_per_token == 2 * 48 * 8 * 128 * 2  # 196,608

    message = report.error_message()
    assert message.startswith("Qwen/Qwen2.5-14B-Instruct bfloat16 does not fit on 1x A10G (22.49 GiB, 0.90).")
    assert "weights 27.5 GiB" in message and "budget 20.2 GiB" in message
    assert "196,608 bytes per token" in message
    assert "no max_model_len fits here" in message
    # On one GPU only 4-bit weights leave room for a full 32768-token sequence:
    # (14.77e9 - 1.557e9 embeddings) x 0.52 + 1.557e9 x 2 = 9.98e9 B = 9.3 GiB of weights.
    assert "an AWQ or GPTQ 4-bit checkpoint of this model (quantization awq): 1 concurrent" in message
    # 40 heads, 8 KV heads: TP 2 is the smallest split; 4x A10G is the cheapest A10G box with 2+.
    assert "tensor_parallel_size 2 on g5.12xlarge (4x A10G, $5.672/h)" in message
    # Every type cheaper than g6e.xlarge ($1.861) has one 15-22.5 GiB GPU: the weights alone
    # exceed it. One L40S: 0.9 x 44.99 GiB = 40.5 GiB > 27.5 GiB weights + 2 GiB overhead + 6 GiB KV.
    assert "instance type g6e.xlarge (1x L40S, $1.861/h, tensor_parallel_size 1)" in message
    with pytest.raises(FitError, match="does not fit"):
        report.raise_if_not_fits()
    assert report.message == message
    assert "does NOT fit" in report.summary()


def test_cheapest_fitting_instance_for_14b() -> None:
    found = cheapest_fitting_instance(QWEN14, "auto", None, None, None, 0.9)
    assert found is not None
    inst, report = found
    assert inst.name == "g6e.xlarge" and report.fits and report.instance_type == inst


@pytest.mark.parametrize("tp", [2, 4])
def test_qwen25_14b_tensor_parallel_on_g5_12xlarge(tp: int) -> None:
    report = check_fit(QWEN14, A10G, 4, tp, "bfloat16", None, None, None, 0.9, instance_type="g5.12xlarge")
    # 8 KV heads split evenly over TP 2 or 4: every weight, k/v included, divides by TP.
    assert report.weights_bytes == 14_770_033_664 * 2 // tp
    assert report.kv_bytes_per_token == 2 * 48 * (8 // tp) * 128 * 2
    non_torch = GIB // 2 + GIB // 2                      # + NCCL / custom all-reduce when TP > 1
    forward = 2048 * (4 * 5120 + (3 * 13824 + 40 * 128 + 2 * 8 * 128) // tp) * 2
    sampler = 256 * 152064 * 4 * 5
    kv_cache = int(A10G_BYTES * 0.9) - 14_770_033_664 * 2 // tp - non_torch - GIB // 2 - forward - sampler
    assert report.kv_cache_bytes == kv_cache
    assert report.kv_cache_tokens == kv_cache // (report.kv_bytes_per_token * 16) * 16
    assert report.fits
    expected_concurrency = {2: 1, 4: 7}[tp]              # 45k and 241k tokens over 32768
    assert math.floor(report.max_concurrent_sequences) == expected_concurrency
    assert ("only 2 of the container's 4 GPUs are used (TP 2)" in report.notes) == (tp == 2)


def test_kv_heads_are_replicated_when_tp_exceeds_them() -> None:
    report = check_fit(QWEN15, A10G, 4, 4, "auto", None, None, 8192, 0.9)
    # 2 KV heads over 4 GPUs: each GPU keeps ceil(2/4) = 1 head, not half of one.
    assert report.kv_bytes_per_token == 2 * 28 * 1 * 128 * 2
    # k/v projections (28 x (2 x 1536 x 256 + 2 x 256)) are replicated the same way: half of them per GPU.
    kv_proj = 28 * (2 * 1536 * 256 + 2 * 256)
    embeddings = 151936 * 1536
    rest = 1_543_714_304 - kv_proj - embeddings
    assert report.weights_bytes == rest * 2 // 4 + kv_proj * 2 // 2 + embeddings * 2 // 4
    assert any("replicates KV heads" in note for note in report.notes)


@pytest.mark.parametrize(("gpus", "tp", "expected"), [
    (4, 3, "do not divide one another"),                  # 12 heads / 3 fine, but 3 vs 2 KV heads
    (8, 5, "does not divide the 12 attention heads"),
    (1, 2, r"exceeds the 1 GPU\(s\) given to the container"),
    (2, 0, "must be at least 1"),
])
def test_invalid_tensor_parallel_sizes(gpus: int, tp: int, expected: str) -> None:
    with pytest.raises(FitError, match=expected):
        check_fit(QWEN15, A10G, gpus, tp, "auto", None, None, None, 0.9)


def test_valid_sizes_are_listed_when_tp_is_wrong() -> None:
    with pytest.raises(FitError, match="valid sizes: 1, 2, 4, 6"):
        check_fit(QWEN15, A10G, 8, 5, "auto", None, None, None, 0.9)


def test_more_gpus_than_the_instance_has() -> None:
    with pytest.raises(FitError, match=re.escape("exceeds the 1 GPU(s) of g5.xlarge")):
        check_fit(QWEN15, A10G, 2, 1, "auto", None, None, None, 0.9, instance_type="g5.xlarge")
    with pytest.raises(FitError, match=re.escape("g6.xlarge has L4 GPUs, not A10G")):
        check_fit(QWEN15, A10G, 1, 1, "auto", None, None, None, 0.9, instance_type="g6.xlarge")


def test_t4_dtype_resolution() -> None:
    # bf16 checkpoint, auto, no bf16 on compute capability 7.5: vLLM falls back to float16.
    assert resolve_dtype("auto", T4, QWEN15) == "float16"
    assert resolve_dtype("half", T4, QWEN15) == "float16"
    assert resolve_dtype("auto", A10G, QWEN15) == "bfloat16"
    with pytest.raises(FitError, match=re.escape(
            "bfloat16 is not supported on T4 (compute capability 7.5; bfloat16 needs 8.0 or newer): "
            "use dtype auto or float16")):
        resolve_dtype("bfloat16", T4, QWEN15)
    with pytest.raises(FitError, match="unknown dtype 'int8'"):
        resolve_dtype("int8", A10G, QWEN15)
    report = check_fit(QWEN15, T4, 1, 1, "auto", None, None, None, 0.9)
    assert report.dtype == "float16" and report.kv_cache_dtype == "float16"
    assert "dtype auto runs the bfloat16 checkpoint in float16 on T4" in report.notes
    with pytest.raises(FitError, match="bfloat16 is not supported on T4"):
        check_fit(QWEN15, T4, 1, 1, "bfloat16", None, None, None, 0.9)


def test_float32_checkpoints_and_float16_refusing_models() -> None:
    fp32 = dataclasses.replace(QWEN15, torch_dtype="float32")
    assert resolve_dtype("auto", A10G, fp32) == "bfloat16"
    assert resolve_dtype("auto", T4, fp32) == "float16"
    assert check_fit(fp32, A10G, 1, 1, "float32", None, None, 4096, 0.9).weights_bytes == 1_543_714_304 * 4
    gemma = dataclasses.replace(QWEN15, model_type="gemma2")
    assert resolve_dtype("auto", T4, gemma) == "float32"
    with pytest.raises(FitError, match="float16 is not supported for model type 'gemma2'"):
        resolve_dtype("float16", A10G, gemma)


@pytest.mark.parametrize("name", ["p3.2xlarge", "p3.8xlarge", "p3.16xlarge", "p3dn.24xlarge"])
def test_p3_is_refused(name: str) -> None:
    inst = lookup_instance_type(name)
    refusal = "compute capability 7.0; current vLLM needs 7.5 or newer, so p3/p3dn"
    with pytest.raises(FitError, match=re.escape(refusal)):
        check_fit(QWEN15, inst.gpu, inst.gpu_count, 1, "auto", None, None, None, 0.9, instance_type=inst)


def test_awq_weights_by_hand() -> None:
    report = check_fit(QWEN7, A10G, 1, 1, "auto", "awq", None, 16384, 0.9)
    embeddings = 2 * 152064 * 3584                       # untied: embed_tokens and lm_head stay bf16
    linear = 7_615_616_512 - embeddings
    assert report.weights_bytes == int(linear * (0.5 + 2.5 / 128) + embeddings * 2)
    assert report.quantization == "awq" and report.fits


def test_fp8_weights_and_kv_cache() -> None:
    plain = check_fit(LLAMA8, lookup_gpu_model("L4"), 1, 1, "auto", None, None, 8192, 0.9)
    fp8 = check_fit(LLAMA8, lookup_gpu_model("L4"), 1, 1, "auto", "fp8", "fp8", 8192, 0.9)
    embeddings = 2 * 128256 * 4096
    assert fp8.weights_bytes == (8_030_261_248 - embeddings) * 1 + embeddings * 2
    assert plain.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 2 * fp8.kv_bytes_per_token
    assert fp8.kv_cache_dtype == "fp8" and fp8.fits
    on_a10g = check_fit(LLAMA8, A10G, 1, 1, "auto", "fp8", None, 8192, 0.9)
    assert any("no FP8 tensor cores" in note for note in on_a10g.notes)


def test_prequantized_model_brings_its_quantization() -> None:
    awq_model = dataclasses.replace(QWEN7, quantization="awq")
    assert check_fit(awq_model, A10G, 1, 1, "auto", None, None, 4096, 0.9).quantization == "awq"


@pytest.mark.parametrize(("quantization", "kv", "expected"), [
    ("bitsandbytes", None, "quantization 'bitsandbytes' is not modelled"),
    (None, "int4", "kv_cache_dtype 'int4' is not modelled"),
])
def test_unmodelled_options_are_refused(quantization: str | None, kv: str | None, expected: str) -> None:
    with pytest.raises(FitError, match=expected):
        check_fit(QWEN15, A10G, 1, 1, "auto", quantization, kv, None, 0.9)


def test_max_model_len_and_utilization_bounds() -> None:
    with pytest.raises(FitError, match="max_model_len 40000 exceeds the 32768 tokens"):
        check_fit(QWEN15, A10G, 1, 1, "auto", None, None, 40000, 0.9)
    with pytest.raises(FitError, match="gpu_memory_utilization must be in \\(0, 1\\]"):
        check_fit(QWEN15, A10G, 1, 1, "auto", None, None, None, 1.5)


def test_largest_max_model_len_way_out_is_exact() -> None:
    l4 = lookup_gpu_model("L4")
    report = check_fit(LLAMA8, l4, 1, 1, "auto", None, None, None, 0.9)  # 131072 tokens: too many
    assert not report.fits
    longest = report.largest_max_model_len
    assert f"max_model_len {longest} (the longest that fits here; 131072 asked)" in report.ways_out
    assert check_fit(LLAMA8, l4, 1, 1, "auto", None, None, longest, 0.9).fits
    assert not check_fit(LLAMA8, l4, 1, 1, "auto", None, None, longest + 1, 0.9).fits


def test_h100_uses_the_large_batch_defaults() -> None:
    report = check_fit(LLAMA8, lookup_gpu_model("H100-80GB"), 1, 1, "auto", None, None, None, 0.9)
    assert (report.max_num_seqs, report.max_num_batched_tokens) == (1024, 8192)
    assert report.cuda_graph_bytes == GIB
    a100 = check_fit(LLAMA8, lookup_gpu_model("A100-80GB"), 1, 1, "auto", None, None, None, 0.9)
    assert (a100.max_num_seqs, a100.max_num_batched_tokens) == (256, 2048)  # vLLM excludes A100


def test_explicit_scheduler_limits_change_the_allowance() -> None:
    small = check_fit(QWEN15, A10G, 1, 1, "auto", None, None, None, 0.9, max_num_seqs=16,
                      max_num_batched_tokens=1024)
    default = check_fit(QWEN15, A10G, 1, 1, "auto", None, None, None, 0.9)
    assert small.activation_bytes == 1024 * 35072 * 2 + 16 * 151936 * 4 * 5
    assert small.kv_cache_tokens > default.kv_cache_tokens


# ---------------------------------------------------------------- properties

_MODELS = st.sampled_from(sorted(KNOWN_MODELS))


@settings(max_examples=60, deadline=None)
@given(name=_MODELS, low=st.integers(4096, 160_000), extra=st.integers(0, 80_000))
def test_more_gpu_memory_never_hurts(name: str, low: int, extra: int) -> None:
    arch = KNOWN_MODELS[name]
    small = dataclasses.replace(A10G, memory_mib=low)
    big = dataclasses.replace(A10G, memory_mib=low + extra)
    # Fixed scheduler limits: vLLM's own defaults jump at 70 GiB (256 -> 1024 sequences), which
    # really does cost KV cache (hypothesis found it: 68387 MiB held more tokens than 71680 MiB).
    a = check_fit(arch, small, 1, 1, "auto", None, None, 4096, 0.9, max_num_seqs=256, max_num_batched_tokens=2048)
    b = check_fit(arch, big, 1, 1, "auto", None, None, 4096, 0.9, max_num_seqs=256, max_num_batched_tokens=2048)
    assert a.kv_cache_tokens <= b.kv_cache_tokens
    assert not a.fits or b.fits


@settings(max_examples=60, deadline=None)
@given(name=_MODELS, u1=st.floats(0.05, 1.0), u2=st.floats(0.05, 1.0))
def test_higher_utilization_never_hurts(name: str, u1: float, u2: float) -> None:
    low, high = sorted((u1, u2))
    a = check_fit(KNOWN_MODELS[name], A10G, 1, 1, "auto", None, None, 2048, low)
    b = check_fit(KNOWN_MODELS[name], A10G, 1, 1, "auto", None, None, 2048, high)
    assert a.kv_cache_tokens <= b.kv_cache_tokens
    assert not a.fits or b.fits


@settings(max_examples=60, deadline=None)
@given(name=_MODELS, l1=st.integers(1, 8192), l2=st.integers(1, 8192),
       gpu=st.sampled_from(["T4", "A10G", "L4", "L40S", "H100-80GB"]))
def test_a_shorter_context_fits_whenever_a_longer_one_does(name: str, l1: int, l2: int, gpu: str) -> None:
    short, long = sorted((l1, l2))
    a = check_fit(KNOWN_MODELS[name], lookup_gpu_model(gpu), 1, 1, "auto", None, None, short, 0.9)
    b = check_fit(KNOWN_MODELS[name], lookup_gpu_model(gpu), 1, 1, "auto", None, None, long, 0.9)
    assert not b.fits or a.fits
    assert a.max_concurrent_sequences >= b.max_concurrent_sequences


@settings(max_examples=40, deadline=None)
@given(layers=st.integers(1, 64), kv=st.sampled_from([1, 2, 4, 8]), group=st.sampled_from([1, 2, 4, 8]),
       head_dim=st.sampled_from([64, 128]), tp=st.sampled_from([1, 2, 4, 8]))
def test_kv_bytes_per_token_formula(layers: int, kv: int, group: int, head_dim: int, tp: int) -> None:
    heads = kv * group
    arch = architecture_from_config({
        "model_type": "llama", "num_hidden_layers": layers, "hidden_size": heads * head_dim,
        "num_attention_heads": heads, "num_key_value_heads": kv, "intermediate_size": 4 * heads * head_dim,
        "vocab_size": 1000, "max_position_embeddings": 2048, "torch_dtype": "bfloat16",
    })
    if heads % tp or (tp >= kv and tp % kv) or (tp < kv and kv % tp):
        with pytest.raises(FitError):
            check_fit(arch, A10G, 8, tp, "auto", None, None, 16, 0.9)
        return
    report = check_fit(arch, A10G, 8, tp, "auto", None, None, 16, 0.9)
    assert report.kv_bytes_per_token == 2 * layers * max(kv // tp, 1) * head_dim * 2


# ----------------------------------------------------------------------------------------------
# H200 and the other GPUs added for issue 11, with a Llama-3.3-70B-class model.

LLAMA70 = architecture_from_config({
    # meta-llama/Llama-3.3-70B-Instruct's config.json shapes
    "model_type": "llama", "num_hidden_layers": 80, "hidden_size": 8192, "num_attention_heads": 64,
    "num_key_value_heads": 8, "intermediate_size": 28672, "vocab_size": 128256, "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}, name="meta-llama/Llama-3.3-70B-Instruct")
H200 = lookup_gpu_model("H200")
H200_BYTES = 143771 * 1024 * 1024  # nvidia-smi total of an H200
# Per layer: q/o 8192x8192 each, k/v 8192x1024 each, gate/up/down 8192x28672 each, two norms.
LLAMA70_PER_LAYER = 2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192
LLAMA70_EMBEDDINGS = 2 * 128256 * 8192  # input embeddings and an untied output head
LLAMA70_KV_PROJ = 80 * 2 * 8192 * 1024


def test_llama70_parameter_count_by_hand() -> None:
    assert LLAMA70.parameter_count == 80 * LLAMA70_PER_LAYER + 8192 + LLAMA70_EMBEDDINGS == 70_553_706_496


def test_llama70_fp8_on_one_h200_by_hand() -> None:
    report = check_fit(LLAMA70, H200, 1, 1, "auto", "fp8", None, 32768, 0.9)

    budget = int(H200_BYTES * 0.9)                       # 135,679,338,086 (126.4 GiB)
    # fp8 stores every linear weight (k/v included) in 1 byte; embeddings and head stay bf16.
    weights = (LLAMA70.parameter_count - LLAMA70_EMBEDDINGS) * 1 + LLAMA70_EMBEDDINGS * 2
    assert weights == 72_655_052_800                     # 67.7 GiB
    # H200 >= 70 GiB and not an A100: vLLM's defaults are 1024 sequences, 8192 batched tokens; graphs 1 GiB.
    forward = 8192 * (4 * 8192 + 3 * 28672 + 64 * 128 + 2 * 8 * 128) * 2
    sampler = 1024 * 128256 * 4 * 5
    kv_cache = budget - weights - GIB // 2 - GIB - forward - sampler
    per_token = 2 * 80 * 8 * 128 * 2                     # bf16 KV cache: fp8 weights do not change it
    tokens = kv_cache // (per_token * 16) * 16

    assert (report.max_num_seqs, report.max_num_batched_tokens, report.cuda_graph_bytes) == (1024, 8192, GIB)
    assert report.budget_bytes == budget and report.weights_bytes == weights
    assert report.kv_bytes_per_token == per_token == 327_680
    assert report.kv_cache_tokens == tokens == 172_944
    assert report.fits and math.floor(report.max_concurrent_sequences) == 5
    assert report.notes == ()  # Hopper has FP8 tensor cores: no weight-only note


def test_llama70_bf16_on_one_h200_does_not_fit_and_points_at_two() -> None:
    report = check_fit(LLAMA70, H200, 1, 1, "auto", None, None, 32768, 0.9, instance_type="p5en.48xlarge")
    assert not report.fits
    assert report.weights_bytes == LLAMA70.parameter_count * 2 > report.budget_bytes  # 131.4 > 126.4 GiB
    message = report.error_message()
    assert "quantization fp8 (vLLM quantizes the 16-bit weights at load time): 5 concurrent" in message
    # p5e has no on-demand price, so the priced p5en is the H200 host named.
    assert "tensor_parallel_size 2 on p5en.48xlarge (8x H200, $63.296/h): 10 concurrent" in message
    assert report.summary().endswith("; p5en.48xlarge $63.296/h")


def test_llama70_on_one_l40s_does_not_fit_even_in_fp8() -> None:
    l40s = lookup_gpu_model("L40S")
    report = check_fit(LLAMA70, l40s, 1, 1, "auto", "fp8", None, 32768, 0.9, instance_type="g6e.xlarge")
    assert not report.fits and report.kv_cache_tokens == 0
    assert report.budget_bytes == int(46068 * 1024 * 1024 * 0.9) < report.weights_bytes  # 40.5 < 67.7 GiB
    # < 70 GiB: vLLM's smaller defaults, 0.5 GiB of graphs.
    assert (report.max_num_seqs, report.max_num_batched_tokens, report.cuda_graph_bytes) == (256, 2048, GIB // 2)
    message = report.error_message()
    assert "no max_model_len fits here" in message
    assert "tensor_parallel_size 4 on g6e.12xlarge (4x L40S, $10.49264/h)" in message
    # The cheapest single GPU that holds 67.7 GiB of fp8 weights is g7e's 96 GB RTX PRO 6000.
    assert "instance type g7e.2xlarge (1x RTX-PRO-6000, $3.36312/h, tensor_parallel_size 1)" in message


def test_fp8_notes_follow_the_gpu_generation() -> None:
    for name in ("H200", "B200", "RTX-PRO-6000", "L40S"):
        assert check_fit(QWEN7, lookup_gpu_model(name), 1, 1, "auto", "fp8", None, 4096, 0.9).notes == (), name
    a100 = check_fit(QWEN7, lookup_gpu_model("A100-80GB"), 1, 1, "auto", "fp8", None, 4096, 0.9)
    assert any("no FP8 tensor cores" in note for note in a100.notes)


def test_the_unpriced_p5e_is_never_the_cheapest_way_out() -> None:
    best = cheapest_fitting_instance(LLAMA70, "auto", None, None, None, 0.9)
    assert best is not None and best[0].price_usd_per_hour is not None
    report = check_fit(LLAMA70, H200, 8, 8, "auto", None, None, None, 0.9, instance_type="p5e.48xlarge")
    assert report.fits and report.summary().endswith("; p5e.48xlarge no on-demand price")
