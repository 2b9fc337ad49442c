"""Will the model fit on the GPU? Answered before any cloud resource is created.

The arithmetic follows what vLLM (0.32.0, the pinned default) does at start-up, per GPU:

    budget    = GPU memory (driver total) x --gpu-memory-utilization      (v1/worker/utils.py)
    KV cache  = budget - weights - non-KV overhead                        (v1/worker/gpu_worker.py)
    tokens    = KV cache // (bytes per token x 16-token block) x 16
    it starts only if one max_model_len sequence fits in those tokens     ("max seq len ... larger than
                                                                           the maximum number of tokens
                                                                           that can be stored in KV cache")

Weights per GPU = parameters x bytes per parameter / TP. bfloat16/float16 weights take 2 bytes,
float32 4. `--quantization fp8` stores linear layers in 1 byte; AWQ/GPTQ in 4 bits plus a 16-bit
scale and a 4-bit zero point per 128-weight group (0.5 + 2.5/128 bytes). Embeddings and the output
head stay in the model dtype under all of them. With tensor parallelism every weight is split over
the TP GPUs except k_proj/v_proj when TP exceeds the KV heads: vLLM then replicates KV heads, so each
GPU holds ceil(kv_heads / TP) of them.

KV bytes per token per GPU = 2 (K and V) x layers x ceil(kv_heads / TP) x head_dim x KV dtype bytes.
Again ceil: with TP > kv_heads the KV heads are replicated, not split, and the per-GPU cache per
token stops shrinking at one head.

The overhead allowance (per GPU) is explicit and deliberately on the safe side of what vLLM profiles:

- NON_TORCH_BYTES, 0.5 GiB: the CUDA context, cuBLAS/cuDNN workspaces and allocator slack, which
  vLLM measures as "non-torch memory" inside the budget.
- TP_COMMUNICATION_BYTES, 0.5 GiB more when TP > 1: NCCL buffers and vLLM's custom all-reduce.
- CUDA graphs, 0.5 GiB (1 GiB when max_num_seqs > 256, as on H100-class GPUs, because more batch
  sizes are captured): vLLM >= 0.21 profiles graph memory and takes it out of the budget.
- Activations: max_num_batched_tokens x (4 x hidden + 3 x intermediate/TP + (q+k+v width)/TP)
  x activation bytes: the residual stream and its normalised copy, the attention input/output,
  the fused gate/up projection and its activation.
- Sampler: max_num_seqs x vocab x 4 bytes x 5 (float32 logits, probabilities, sorted values and the
  int64 sort indices) - vLLM's profile run samples max_num_seqs dummy requests.

max_num_seqs / max_num_batched_tokens default as vLLM 0.32.0 defaults them for the OpenAI server
(engine/arg_utils.py): 1024 / 8192 on GPUs with >= 70 GiB that are not A100, else 256 / 2048.

Calibration: a public vLLM 0.7.2 start-up log of Qwen2.5-Math-1.5B (the shapes of Qwen2.5-1.5B) in
bfloat16 on a 22.06 GiB GPU reports "non_torch_memory takes 0.05GiB; PyTorch activation peak memory
takes 1.40GiB" and "Graph capturing ... took 0.18 GiB": 1.63 GiB against this module's 1.86 GiB
for the same model on an A10G. Another (vLLM V0, a 15 GiB 8B model, chunked prefill) reports 0.22
GiB of activations where this module allows 0.86 GiB. The allowance over-reserves by a few hundred
MiB rather than let a deployment that "fits" run out of memory on the GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final

from vllm_endpoint.infra.catalog.dtypes import (
    AUTO,
    DTYPE_ALIASES,
    DTYPE_BYTES,
    DTYPES,
    KV_CACHE_DTYPE_BYTES,
    canonical_dtype,
)
from vllm_endpoint.infra.catalog.gpus import (
    INSTANCE_TYPES,
    MIN_COMPUTE_CAPABILITY,
    GpuInstanceType,
    GpuModel,
    lookup_instance_type,
)
from vllm_endpoint.infra.catalog.models import ModelArchitecture

GIB: Final = 1024**3
NON_TORCH_BYTES: Final = GIB // 2
TP_COMMUNICATION_BYTES: Final = GIB // 2
CUDA_GRAPH_BYTES: Final = GIB // 2
CUDA_GRAPH_BYTES_LARGE_BATCH: Final = GIB
SAMPLER_COPIES: Final = 5
KV_BLOCK_TOKENS: Final = 16

# Bytes per parameter of the quantized linear layers, by vLLM --quantization value.
_FOUR_BIT_BYTES: Final = 0.5 + 2.5 / 128
QUANTIZATION_WEIGHT_BYTES: Final = {
    "awq": _FOUR_BIT_BYTES, "awq_marlin": _FOUR_BIT_BYTES, "auto_awq": _FOUR_BIT_BYTES,
    "gptq": _FOUR_BIT_BYTES, "gptq_marlin": _FOUR_BIT_BYTES, "auto_gptq": _FOUR_BIT_BYTES,
    "fp8": 1.0,
}
# vLLM refuses float16 for these model types (numerical instability; config/model.py).
_NO_FLOAT16_MODEL_TYPES: Final = frozenset({"gemma2", "gemma3", "gemma3_text", "glm4"})


class FitError(ValueError):
    """The combination cannot run at all (unsupported GPU, dtype, TP layout, ...), whatever the memory."""


def resolve_dtype(requested: str, gpu: GpuModel, arch: ModelArchitecture) -> str:
    """The dtype vLLM will run with for `--dtype requested` on this GPU.

    `auto` takes the checkpoint's dtype when the GPU supports it; a bfloat16 model on a GPU without
    bfloat16 (T4, V100: compute capability < 8.0) falls back to float16, as vLLM does, and float32
    checkpoints are served in the GPU's preferred 16-bit type. An explicit `bfloat16` on such a GPU
    is an error: vLLM refuses it at start-up ("Bfloat16 is only supported on GPUs with compute
    capability of at least 8.0"), and silently changing an explicit choice would hide it.
    """
    wanted = canonical_dtype(requested.strip().lower())
    if wanted != AUTO and wanted not in DTYPES:
        known = ", ".join(name + "".join(f" ({alias})" for alias, of in DTYPE_ALIASES.items() if of == name)
                          for name in DTYPES)
        raise FitError(f"unknown dtype {requested!r}: use {AUTO}, {known}")
    # In vLLM's order of preference (infra/catalog/data/dtypes.yaml); bfloat16 only where the GPU has it.
    supported = [dtype for dtype in DTYPES if gpu.bf16 or dtype != "bfloat16"]
    if arch.model_type in _NO_FLOAT16_MODEL_TYPES:
        supported.remove("float16")
    if wanted == "auto":
        for dtype in supported:
            if dtype == arch.torch_dtype and dtype != "float32":
                return dtype
        return supported[0]
    if wanted == "bfloat16" and not gpu.bf16:
        raise FitError(
            f"dtype bfloat16 is not supported on {gpu.name} (compute capability "
            f"{gpu.compute_capability_str}; bfloat16 needs 8.0 or newer): use dtype auto or float16, "
            "which vLLM runs in float16 on this GPU"
        )
    for dtype in supported:
        if dtype == wanted:
            return dtype
    raise FitError(f"dtype {wanted} is not supported for model type {arch.model_type!r} "
                   f"(vLLM refuses it: numerical instability); use bfloat16 or float32")


def default_scheduler_limits(gpu: GpuModel) -> tuple[int, int]:
    """(max_num_seqs, max_num_batched_tokens) that vLLM 0.32.0's OpenAI server picks for this GPU."""
    if gpu.memory_bytes >= 70 * GIB and not gpu.name.startswith("A100"):
        return 1024, 8192
    return 256, 2048


@dataclass(frozen=True)
class FitReport:
    model: str
    gpu: GpuModel
    gpus_for_container: int
    tensor_parallel_size: int
    dtype: str
    quantization: str | None
    kv_cache_dtype: str
    max_model_len: int
    gpu_memory_utilization: float
    max_num_seqs: int
    max_num_batched_tokens: int
    budget_bytes: int
    weights_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int
    activation_bytes: int
    kv_cache_bytes: int  # negative when weights and overhead alone exceed the budget
    kv_bytes_per_token: int
    kv_cache_tokens: int
    fits: bool
    instance_type: GpuInstanceType | None = None
    notes: tuple[str, ...] = ()
    ways_out: tuple[str, ...] = ()

    @property
    def overhead_bytes(self) -> int:
        return self.non_torch_bytes + self.cuda_graph_bytes + self.activation_bytes

    @property
    def max_concurrent_sequences(self) -> float:
        """Full max_model_len sequences the KV cache holds at once (vLLM's "Maximum concurrency")."""
        return self.kv_cache_tokens / self.max_model_len

    @property
    def largest_max_model_len(self) -> int:
        """The longest max_model_len whose one sequence fits in this KV cache (0: none)."""
        return self.kv_cache_tokens

    def _where(self) -> str:
        tp = f", TP {self.tensor_parallel_size}" if self.tensor_parallel_size > 1 else ""
        return (f"{self.gpus_for_container}x {self.gpu.name} ({self.gpu.memory_gib:.2f} GiB, "
                f"{self.gpu_memory_utilization:.2f}{tp})")

    def _what(self) -> str:
        quant = f" {self.quantization}" if self.quantization else ""
        kv = f", KV {self.kv_cache_dtype}" if self.kv_cache_dtype != self.dtype else ""
        return f"{self.model} {self.dtype}{quant}{kv}"

    def summary(self) -> str:
        """One line for the stack's plan output."""
        price = "" if self.instance_type is None else f"; {self.instance_type.name} {_price(self.instance_type)}"
        if not self.fits:
            return (f"{self._what()} does NOT fit on {self._where()}: weights {_gib(self.weights_bytes)}, "
                    f"KV cache {_gib(max(self.kv_cache_bytes, 0))} = {_tokens(self.kv_cache_tokens)} tokens "
                    f"< one {self.max_model_len}-token sequence{price}")
        return (f"{self._what()} on {self._where()}: weights {_gib(self.weights_bytes)}, "
                f"KV cache {_gib(self.kv_cache_bytes)} = {_tokens(self.kv_cache_tokens)} tokens = "
                f"{math.floor(self.max_concurrent_sequences)} concurrent {self.max_model_len}-token "
                f"sequences{price}")

    def error_message(self) -> str:
        """Why it does not fit, with the numbers and the ways out ("" when it fits)."""
        if self.fits:
            return ""
        per_seq = self.kv_bytes_per_token * self.max_model_len
        lines = [
            f"{self._what()} does not fit on {self._where()}.",
            f"Per GPU: budget {_gib(self.budget_bytes)} = {self.gpu.memory_gib:.2f} GiB x "
            f"{self.gpu_memory_utilization:.2f}; weights {_gib(self.weights_bytes)}; overhead "
            f"{_gib(self.overhead_bytes)} (non-torch {_gib(self.non_torch_bytes)}, CUDA graphs "
            f"{_gib(self.cuda_graph_bytes)}, activations and sampler {_gib(self.activation_bytes)}); "
            f"left for the KV cache {_gib(self.kv_cache_bytes)}.",
            f"One {self.max_model_len}-token sequence needs {_gib(per_seq)} of KV cache per GPU "
            f"({self.kv_bytes_per_token:,} bytes per token); {self.kv_cache_tokens:,} tokens fit.",
        ]
        if self.ways_out:
            lines.append("Ways out:")
            lines += [f"  - {w}" for w in self.ways_out]
        return "\n".join(lines)

    @property
    def message(self) -> str:
        return self.error_message()

    def raise_if_not_fits(self) -> None:
        if not self.fits:
            raise FitError(self.error_message())


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def _price(inst: GpuInstanceType) -> str:
    price = inst.price_usd_per_hour
    return "no on-demand price" if price is None else f"${price}/h"


def _by_price(inst: GpuInstanceType) -> tuple[bool, float, str]:
    """Cheapest first; a type with no on-demand price (Capacity Blocks only) after every priced one."""
    price = inst.price_usd_per_hour
    return price is None, price or 0.0, inst.name


def _tokens(n: int) -> str:
    return f"{n / 1000:.0f}k" if n >= 10_000 else f"{n:,}"


def _validate_tp(arch: ModelArchitecture, gpus_for_container: int, tp: int) -> None:
    if gpus_for_container < 1:
        raise FitError(f"gpus_for_container must be at least 1, got {gpus_for_container}")
    if tp < 1:
        raise FitError(f"tensor_parallel_size must be at least 1, got {tp}")
    if tp > gpus_for_container:
        raise FitError(f"tensor_parallel_size {tp} exceeds the {gpus_for_container} GPU(s) given to the "
                       "container")
    if arch.num_attention_heads % tp:
        raise FitError(f"tensor_parallel_size {tp} does not divide the {arch.num_attention_heads} attention "
                       f"heads of {arch.name}; valid sizes: {_valid_tps(arch, gpus_for_container)}")
    kv = arch.num_key_value_heads
    if (tp >= kv and tp % kv) or (tp < kv and kv % tp):
        raise FitError(f"tensor_parallel_size {tp} and the {kv} KV heads of {arch.name} do not divide one "
                       f"another; valid sizes: {_valid_tps(arch, gpus_for_container)}")


def _tp_ok(arch: ModelArchitecture, tp: int) -> bool:
    kv = arch.num_key_value_heads
    return arch.num_attention_heads % tp == 0 and (tp % kv == 0 if tp >= kv else kv % tp == 0)


def _valid_tps(arch: ModelArchitecture, limit: int) -> str:
    return ", ".join(str(t) for t in range(1, limit + 1) if _tp_ok(arch, t)) or "none"


def _weights_bytes_per_gpu(arch: ModelArchitecture, tp: int, dtype_bytes: int, linear_bytes: float) -> int:
    kv_params = arch.kv_projection_parameters
    embedding = arch.embedding_parameters
    linear = arch.parameter_count - embedding - kv_params
    kv_share = math.ceil(arch.num_key_value_heads / tp) / arch.num_key_value_heads
    total = linear * linear_bytes / tp + kv_params * kv_share * linear_bytes + embedding * dtype_bytes / tp
    return int(total)


def kv_bytes_per_token_per_gpu(arch: ModelArchitecture, tp: int, kv_dtype_bytes: int) -> int:
    kv_heads_per_gpu = math.ceil(arch.num_key_value_heads / tp)
    return 2 * arch.num_hidden_layers * kv_heads_per_gpu * arch.head_dim * kv_dtype_bytes


def _activation_bytes(arch: ModelArchitecture, tp: int, act_bytes: int, max_num_seqs: int,
                      max_num_batched_tokens: int) -> int:
    q_width = arch.num_attention_heads * arch.head_dim
    kv_width = arch.num_key_value_heads * arch.head_dim
    per_token = 4 * arch.hidden_size + (3 * arch.intermediate_size + q_width + 2 * kv_width) // tp
    forward = max_num_batched_tokens * per_token * act_bytes
    sampler = max_num_seqs * arch.vocab_size * 4 * SAMPLER_COPIES
    return forward + sampler


@dataclass(frozen=True)
class _Ask:
    """The knobs that stay the same while the ways out try other GPUs, TP sizes or quantizations."""

    quantization: str | None
    kv_cache_dtype: str | None
    max_model_len: int | None
    utilization: float
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None


def _refuse_impossible(arch: ModelArchitecture, gpu: GpuModel, gpus_for_container: int, tp: int,
                       utilization: float, instance_type: GpuInstanceType | None) -> None:
    """Raises FitError for an ask no amount of memory can serve: an old GPU, a TP size the model
    cannot split into, more GPUs than the instance has."""
    if gpu.compute_capability < MIN_COMPUTE_CAPABILITY:
        family = "p3/p3dn (V100)" if gpu.name.startswith("V100") else gpu.name
        raise FitError(
            f"{gpu.name} has compute capability {gpu.compute_capability_str}; current vLLM needs "
            f"{MIN_COMPUTE_CAPABILITY[0]}.{MIN_COMPUTE_CAPABILITY[1]} or newer, so {family} instances "
            "cannot serve it: choose g4dn (T4) or newer (g5, g6, g6e, p4d, p5)"
        )
    if not 0 < utilization <= 1:
        raise FitError(f"gpu_memory_utilization must be in (0, 1], got {utilization}")
    _validate_tp(arch, gpus_for_container, tp)
    if instance_type is not None and gpus_for_container > instance_type.gpu_count:
        raise FitError(f"gpus_for_container {gpus_for_container} exceeds the {instance_type.gpu_count} "
                       f"GPU(s) of {instance_type.name}")


def _linear_weights(ask: _Ask, arch: ModelArchitecture, gpu: GpuModel, dtype_bytes: int,
                    notes: list[str]) -> tuple[str | None, float]:
    """(quantization method, bytes per linear-layer weight)."""
    quant = ask.quantization or arch.quantization
    quant = quant.lower() if quant else None
    if quant is not None and quant not in QUANTIZATION_WEIGHT_BYTES:
        raise FitError(f"quantization {quant!r} is not modelled by the fit check; supported: "
                       f"{', '.join(sorted(QUANTIZATION_WEIGHT_BYTES))}")
    if quant == "fp8" and not gpu.fp8:
        notes.append(f"{gpu.name} has no FP8 tensor cores: vLLM runs fp8 weight-only (Marlin), "
                     "activations stay 16-bit")
    return quant, QUANTIZATION_WEIGHT_BYTES[quant] if quant else float(dtype_bytes)


def _kv_cache_dtype(ask: _Ask, resolved: str, dtype_bytes: int) -> tuple[str, int]:
    """(KV-cache dtype, bytes per element): `auto` stores the KV cache in the model's dtype."""
    kv_name = (ask.kv_cache_dtype or "auto").strip().lower()
    if kv_name == "auto":
        return resolved, dtype_bytes
    if kv_name in KV_CACHE_DTYPE_BYTES:
        return kv_name, KV_CACHE_DTYPE_BYTES[kv_name]
    raise FitError(f"kv_cache_dtype {ask.kv_cache_dtype!r} is not modelled by the fit check; supported: "
                   f"auto, {', '.join(KV_CACHE_DTYPE_BYTES)}")


def _sequence_length(arch: ModelArchitecture, ask: _Ask) -> int:
    length = arch.max_model_len_limit if ask.max_model_len is None else ask.max_model_len
    if length < 1:
        raise FitError(f"max_model_len must be positive, got {length}")
    if length > arch.max_model_len_limit:
        raise FitError(f"max_model_len {length} exceeds the {arch.max_model_len_limit} tokens {arch.name} "
                       "supports (max_position_embeddings / rope scaling); vLLM refuses it")
    return length


def _compute(arch: ModelArchitecture, gpu: GpuModel, gpus_for_container: int, tp: int, dtype: str, ask: _Ask,
             instance_type: GpuInstanceType | None = None) -> FitReport:
    utilization = ask.utilization
    _refuse_impossible(arch, gpu, gpus_for_container, tp, utilization, instance_type)
    resolved = resolve_dtype(dtype, gpu, arch)
    dtype_bytes = DTYPE_BYTES[resolved]
    notes: list[str] = []
    if dtype.strip().lower() == "auto" and resolved != arch.torch_dtype:
        notes.append(f"dtype auto runs the {arch.torch_dtype} checkpoint in {resolved} on {gpu.name}")
    quant, linear_bytes = _linear_weights(ask, arch, gpu, dtype_bytes, notes)
    kv_name, kv_bytes = _kv_cache_dtype(ask, resolved, dtype_bytes)
    length = _sequence_length(arch, ask)

    default_seqs, default_tokens = default_scheduler_limits(gpu)
    seqs = ask.max_num_seqs or default_seqs
    batched = ask.max_num_batched_tokens or default_tokens

    if tp > arch.num_key_value_heads:
        notes.append(f"TP {tp} > {arch.num_key_value_heads} KV heads: vLLM replicates KV heads, each GPU "
                     f"holds {math.ceil(arch.num_key_value_heads / tp)} of them")
    if gpus_for_container > tp:
        notes.append(f"only {tp} of the container's {gpus_for_container} GPUs are used (TP {tp})")

    budget = int(gpu.memory_bytes * utilization)
    weights = _weights_bytes_per_gpu(arch, tp, dtype_bytes, linear_bytes)
    non_torch = NON_TORCH_BYTES + (TP_COMMUNICATION_BYTES if tp > 1 else 0)
    graphs = CUDA_GRAPH_BYTES_LARGE_BATCH if seqs > 256 else CUDA_GRAPH_BYTES
    activations = _activation_bytes(arch, tp, dtype_bytes, seqs, batched)
    kv_cache = budget - weights - non_torch - graphs - activations
    per_token = kv_bytes_per_token_per_gpu(arch, tp, kv_bytes)
    block = per_token * KV_BLOCK_TOKENS
    tokens = (kv_cache // block) * KV_BLOCK_TOKENS if kv_cache > 0 else 0
    return FitReport(
        model=arch.name, gpu=gpu, gpus_for_container=gpus_for_container, tensor_parallel_size=tp,
        dtype=resolved, quantization=quant, kv_cache_dtype=kv_name, max_model_len=length,
        gpu_memory_utilization=utilization, max_num_seqs=seqs, max_num_batched_tokens=batched,
        budget_bytes=budget, weights_bytes=weights, non_torch_bytes=non_torch, cuda_graph_bytes=graphs,
        activation_bytes=activations, kv_cache_bytes=kv_cache, kv_bytes_per_token=per_token,
        kv_cache_tokens=tokens, fits=tokens >= length, instance_type=instance_type, notes=tuple(notes),
    )


def check_fit(arch: ModelArchitecture, instance_gpu: GpuModel, gpus_for_container: int,
              tensor_parallel_size: int, dtype: str, quantization: str | None, kv_cache_dtype: str | None,
              max_model_len: int | None, gpu_memory_utilization: float, *,
              max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None,
              instance_type: GpuInstanceType | str | None = None) -> FitReport:
    """How the model sits in GPU memory, and the ways out when it does not fit.

    Raises FitError when the combination cannot run at all (GPU too old, bfloat16 on a GPU without
    it, TP that does not divide the heads or exceeds the GPUs, unknown quantization, max_model_len
    beyond the model's). A FitReport with fits=False means: it would start loading and then fail
    for memory; `error_message()` says why and what would fit. `max_num_seqs` and
    `max_num_batched_tokens` default to vLLM's own defaults for the GPU; `instance_type` only adds
    its name and price to the summary and checks gpus_for_container against it (a name is looked up
    in the catalog).
    """
    if isinstance(instance_type, str):
        instance_type = lookup_instance_type(instance_type)
    if instance_type is not None and instance_type.gpu != instance_gpu:
        raise FitError(f"{instance_type.name} has {instance_type.gpu.name} GPUs, not {instance_gpu.name}")
    ask = _Ask(quantization, kv_cache_dtype, max_model_len, gpu_memory_utilization, max_num_seqs,
               max_num_batched_tokens)
    report = _compute(arch, instance_gpu, gpus_for_container, tensor_parallel_size, dtype, ask, instance_type)
    if report.fits:
        return report
    return replace(report, ways_out=tuple(_ways_out(arch, report, dtype, ask)))


def _try(arch: ModelArchitecture, gpu: GpuModel, gpus: int, tp: int, dtype: str,
         ask: _Ask) -> FitReport | None:
    try:
        return _compute(arch, gpu, gpus, tp, dtype, ask)
    except FitError:
        return None


def _ways_out(arch: ModelArchitecture, report: FitReport, requested_dtype: str, ask: _Ask) -> list[str]:
    ways: list[str] = []
    gpu, tp, gpus = report.gpu, report.tensor_parallel_size, report.gpus_for_container

    # 1. A shorter context on these very GPUs.
    if report.kv_cache_tokens >= KV_BLOCK_TOKENS:
        ways.append(f"max_model_len {report.largest_max_model_len} (the longest that fits here; "
                    f"{report.max_model_len} asked)")
    else:
        ways.append(f"no max_model_len fits here: weights and overhead ({_gib(report.weights_bytes)} + "
                    f"{_gib(report.overhead_bytes)}) leave no room for the KV cache in "
                    f"{_gib(report.budget_bytes)}")

    # 2. Quantized weights or KV cache on the same GPUs.
    options: list[tuple[str, _Ask]] = []
    if report.quantization is None:
        options.append(("quantization fp8 (vLLM quantizes the 16-bit weights at load time)",
                        replace(ask, quantization="fp8")))
        options.append(("an AWQ or GPTQ 4-bit checkpoint of this model (quantization awq)",
                        replace(ask, quantization="awq")))
    if report.kv_cache_dtype not in KV_CACHE_DTYPE_BYTES:
        options.append(("kv_cache_dtype fp8 (halves the KV cache per token)",
                        replace(ask, kv_cache_dtype="fp8")))
    for label, option in options:
        trial = _try(arch, gpu, gpus, tp, requested_dtype, option)
        if trial is None:
            continue
        if trial.fits:
            ways.append(f"{label}: {_concurrency(trial)}")
        elif trial.kv_cache_tokens >= KV_BLOCK_TOKENS:
            ways.append(f"{label} together with max_model_len {trial.largest_max_model_len} or less")

    # 3. More GPUs of the same model, with tensor parallelism.
    for more_tp in range(tp + 1, 9):
        if not _tp_ok(arch, more_tp):
            continue
        trial = _try(arch, gpu, more_tp, more_tp, requested_dtype, ask)
        if trial is None or not trial.fits:
            continue
        hosts = sorted((i for i in INSTANCE_TYPES.values() if i.gpu == gpu and i.gpu_count >= more_tp),
                       key=_by_price)
        where = (f"{hosts[0].name} ({hosts[0].gpu_count}x {gpu.name}, {_price(hosts[0])})"
                 if hosts else f"{more_tp}x {gpu.name}")
        ways.append(f"tensor_parallel_size {more_tp} on {where}: {_concurrency(trial)}")
        break

    # 4. The cheapest instance type in the catalog that fits as asked.
    best = cheapest_fitting_instance(arch, requested_dtype, ask.quantization, ask.kv_cache_dtype,
                                     ask.max_model_len, ask.utilization)
    if best is not None:
        inst, trial = best
        ways.append(f"instance type {inst.name} ({inst.gpu_count}x {inst.gpu.name}, {_price(inst)}, "
                    f"tensor_parallel_size {trial.tensor_parallel_size}): {_concurrency(trial)}")
    else:
        ways.append("no instance type in the catalog fits this model as asked")
    return ways


def _concurrency(report: FitReport) -> str:
    return f"{math.floor(report.max_concurrent_sequences)} concurrent {report.max_model_len}-token sequences"


def cheapest_fitting_instance(arch: ModelArchitecture, dtype: str, quantization: str | None,
                              kv_cache_dtype: str | None, max_model_len: int | None,
                              gpu_memory_utilization: float) -> tuple[GpuInstanceType, FitReport] | None:
    """The cheapest catalog instance type on which the model fits, using all its GPUs (largest valid TP)."""
    ask = _Ask(quantization, kv_cache_dtype, max_model_len, gpu_memory_utilization)
    for inst in sorted(INSTANCE_TYPES.values(), key=_by_price):
        tps = [t for t in range(inst.gpu_count, 0, -1) if _tp_ok(arch, t)]
        if not tps:
            continue
        trial = _try(arch, inst.gpu, inst.gpu_count, tps[0], dtype, ask)
        if trial is not None and trial.fits:
            return inst, replace(trial, instance_type=inst)
    return None
