"""What the GPU fit check needs to know about a model: its shapes, dtype and parameter count.

A local model folder is read without torch, the safetensors files by their header alone (8-byte
little-endian length, then that many bytes of JSON). The built-in models (`KNOWN_MODELS`) are the
config.json values in data/models.yaml, read through the same `architecture_from_config` as a local
folder's config.json; the file says where they come from and how they were checked.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, TypedDict

from pydantic import BaseModel, Field, field_validator

from vllm_endpoint.infra.catalog.data_files import STRICT, DataFile, data_path, load_data_file, unique_names
from vllm_endpoint.infra.catalog.dtypes import DTYPE_BYTES, canonical_dtype

__all__ = [
    "DTYPE_BYTES",
    "KNOWN_MODELS",
    "MODELS_FILE",
    "PARAMS_FROM_HEADERS",
    "PARAMS_FROM_INDEX",
    "PARAMS_FROM_SHAPES",
    "KnownModel",
    "ModelArchitecture",
    "ModelsFile",
    "architecture_from_config",
    "architecture_from_model_dir",
    "estimate_parameters",
    "lookup_known_model",
    "read_safetensors_header",
    "safetensors_parameter_count",
    "validate_model_dir",
]

MODELS_FILE: Final = data_path("models.yaml")
# A safetensors header larger than this is not a header; refusing it keeps a corrupt file from
# making us read gigabytes as JSON.
_MAX_HEADER_BYTES: Final = 100 * 1024 * 1024
_MOE_KEYS: Final = ("num_experts", "num_local_experts", "n_routed_experts", "moe_intermediate_size")
# model_type values whose attention has q/k/v biases without saying so in config.json.
_QKV_BIAS_MODEL_TYPES: Final = frozenset({"qwen2"})
# Qwen3 normalises q and k per head (RMSNorm of head_dim each).
_QK_NORM_MODEL_TYPES: Final = frozenset({"qwen3"})

PARAMS_FROM_SHAPES: Final = "computed from the config.json shapes"
PARAMS_FROM_HEADERS: Final = "safetensors headers"
PARAMS_FROM_INDEX: Final = "model.safetensors.index.json total_size / dtype bytes"


@dataclass(frozen=True)
class ModelArchitecture:
    name: str
    model_type: str
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    torch_dtype: str
    tie_word_embeddings: bool
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False
    # The longest context vLLM accepts without an explicit override: max_position_embeddings, scaled
    # by a linear/dynamic/YaRN rope_scaling factor the way vLLM derives max_model_len.
    max_model_len_limit: int = 0
    parameter_count: int = 0
    parameter_count_source: str = PARAMS_FROM_SHAPES
    # The model card's rounded figure (e.g. 1.54e9), for checking the shape arithmetic.
    published_parameters: float | None = None
    # quantization_config.quant_method of a pre-quantized checkpoint (awq, gptq, fp8, ...).
    quantization: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.max_model_len_limit == 0:
            object.__setattr__(self, "max_model_len_limit", self.max_position_embeddings)
        if self.parameter_count == 0:
            object.__setattr__(self, "parameter_count", estimate_parameters(self))

    @property
    def embedding_parameters(self) -> int:
        """Input embedding plus, when untied, the output head: the weights quantization leaves 16-bit."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def kv_projection_parameters(self) -> int:
        """k_proj and v_proj of all layers (with biases): the weights replicated when TP > KV heads."""
        per_layer = 2 * self.hidden_size * self.num_key_value_heads * self.head_dim
        if self.qkv_bias:
            per_layer += 2 * self.num_key_value_heads * self.head_dim
        return self.num_hidden_layers * per_layer


def estimate_parameters(arch: ModelArchitecture) -> int:
    """Parameters of a dense decoder-only transformer (Llama/Qwen2/Qwen3 layout) from its shapes."""
    h, q_width, kv_width = arch.hidden_size, arch.num_attention_heads * arch.head_dim, (
        arch.num_key_value_heads * arch.head_dim)
    attention = h * q_width + 2 * h * kv_width + q_width * h
    if arch.qkv_bias:
        attention += q_width + 2 * kv_width
    if arch.o_bias:
        attention += h
    mlp = 3 * h * arch.intermediate_size  # gate, up, down
    norms = 2 * h + (2 * arch.head_dim if arch.qk_norm else 0)
    per_layer = attention + mlp + norms
    return arch.num_hidden_layers * per_layer + h + arch.embedding_parameters  # + final norm


def architecture_from_config(config: Mapping[str, Any], *, name: str = "(config.json)",
                             source: str = "config.json") -> ModelArchitecture:
    """The architecture described by a Hugging Face `config.json` (already parsed).

    Raises ValueError naming `source` and the missing or unusable key.
    """
    _refuse_unsupported_layouts(config, source)
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ValueError(f"{source}: missing key 'model_type'")
    shapes = _shapes(config, source)
    attention_bias = bool(config.get("attention_bias", False))
    return ModelArchitecture(
        name=name, model_type=model_type, **shapes,
        torch_dtype=_checkpoint_dtype(config, source),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=model_type in _QKV_BIAS_MODEL_TYPES or attention_bias,
        o_bias=model_type not in _QKV_BIAS_MODEL_TYPES and attention_bias,
        qk_norm=model_type in _QK_NORM_MODEL_TYPES,
        max_model_len_limit=_derived_max_model_len(config, shapes["max_position_embeddings"]),
        quantization=_quantization_method(config), source=source,
    )


def _refuse_unsupported_layouts(config: Mapping[str, Any], source: str) -> None:
    if "text_config" in config and "hidden_size" not in config:
        raise ValueError(f"{source}: a multimodal config (text_config); the fit check supports "
                         "decoder-only text models")
    moe = [k for k in _MOE_KEYS if config.get(k)]
    if moe:
        raise ValueError(f"{source}: a mixture-of-experts config ({', '.join(moe)}); the fit check "
                         "supports dense decoder-only models")


def _positive_int(config: Mapping[str, Any], key: str, source: str) -> int:
    if key not in config or config[key] is None:
        raise ValueError(f"{source}: missing key {key!r}")
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{source}: {key!r} must be a positive integer, got {value!r}")
    return value


class _Shapes(TypedDict):
    """The ModelArchitecture fields that are config.json's integer shapes, by the same names."""

    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int


def _shapes(config: Mapping[str, Any], source: str) -> _Shapes:
    layers = _positive_int(config, "num_hidden_layers", source)
    hidden = _positive_int(config, "hidden_size", source)
    heads = _positive_int(config, "num_attention_heads", source)
    # Configs written before grouped-query attention omit the key: one KV head per query head.
    kv_heads = _positive_int(config, "num_key_value_heads", source) if "num_key_value_heads" in config else heads
    head_dim = _positive_int(config, "head_dim", source) if config.get("head_dim") is not None else hidden // heads
    shapes = _Shapes(
        num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv_heads,
        head_dim=head_dim, intermediate_size=_positive_int(config, "intermediate_size", source),
        vocab_size=_positive_int(config, "vocab_size", source),
        max_position_embeddings=_positive_int(config, "max_position_embeddings", source),
    )
    if heads % kv_heads:
        raise ValueError(f"{source}: num_attention_heads ({heads}) is not a multiple of "
                         f"num_key_value_heads ({kv_heads})")
    return shapes


def _checkpoint_dtype(config: Mapping[str, Any], source: str) -> str:
    # transformers >= 4.56 writes "dtype"; older releases "torch_dtype"; absent means float32.
    dtype = config.get("torch_dtype") or config.get("dtype") or "float32"
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise ValueError(f"{source}: unsupported torch_dtype {dtype!r} (expected one of "
                         f"{', '.join(sorted(DTYPE_BYTES))})")
    return canonical_dtype(dtype)


def _quantization_method(config: Mapping[str, Any]) -> str | None:
    """quantization_config.quant_method of a pre-quantized checkpoint, lower case."""
    quant = config.get("quantization_config")
    if isinstance(quant, Mapping):
        method = quant.get("quant_method")
        return str(method).lower() if method else None
    return None


def _derived_max_model_len(config: Mapping[str, Any], max_pos: int) -> int:
    """vLLM multiplies max_position_embeddings by the rope_scaling factor except for the types that
    already encode the long context in max_position_embeddings (llama3, longrope/su, mrope)."""
    scaling = config.get("rope_scaling")
    if not isinstance(scaling, Mapping):
        return max_pos
    rope_type = scaling.get("rope_type") or scaling.get("type")
    factor = scaling.get("factor")
    if rope_type in (None, "default", "llama3", "su", "longrope", "mrope") or not factor:
        return max_pos
    base = max_pos
    if rope_type == "yarn" and scaling.get("original_max_position_embeddings"):
        base = int(scaling["original_max_position_embeddings"])
    return int(base * float(factor))


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file (tensor name -> dtype, shape, data_offsets)."""
    with path.open("rb") as f:
        raw_len = f.read(8)
        if len(raw_len) != 8:
            raise ValueError(f"{path}: too short for a safetensors file (no 8-byte header length)")
        (length,) = struct.unpack("<Q", raw_len)
        if length > _MAX_HEADER_BYTES:
            raise ValueError(f"{path}: safetensors header length {length} is not plausible")
        data = f.read(length)
    if len(data) != length:
        raise ValueError(f"{path}: safetensors header truncated ({len(data)} of {length} bytes)")
    try:
        header = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: safetensors header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not a JSON object")
    return header


def safetensors_parameter_count(files: list[Path]) -> int:
    """Elements in all tensors of the given files, from their headers."""
    total = 0
    for path in files:
        for tensor_name, info in read_safetensors_header(path).items():
            if tensor_name == "__metadata__":
                continue
            shape = info.get("shape") if isinstance(info, dict) else None
            if not isinstance(shape, list):
                raise ValueError(f"{path}: tensor {tensor_name!r} has no shape in the header")
            total += math.prod(int(d) for d in shape)
    return total


def _safetensors_files(model_dir: Path) -> tuple[list[Path], dict[str, Any] | None]:
    """The weight files and, if present, the parsed index."""
    index_path = model_dir / "model.safetensors.index.json"
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{index_path}: not readable JSON: {e}") from None
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index_path}: missing key 'weight_map'")
        shards = sorted({str(v) for v in weight_map.values()})
        return [model_dir / s for s in shards], index
    return _weight_safetensors(model_dir), None


def _weight_safetensors(model_dir: Path) -> list[Path]:
    """*.safetensors of the model itself; a PEFT adapter saved alongside is not part of it."""
    return sorted(p for p in model_dir.glob("*.safetensors") if not p.name.startswith("adapter_model"))


def architecture_from_model_dir(path: str | Path) -> ModelArchitecture:
    """The architecture of a local (fine-tuned, merged) model folder.

    The parameter count comes from the safetensors headers when every weight file is there, else
    from the index's total_size divided by the checkpoint dtype's bytes, else from the shapes. A
    pre-quantized checkpoint's packed tensors do not count parameters, so its count is the shapes'.
    """
    model_dir = Path(path)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: missing (a model folder needs the config.json its "
                                "trainer saved)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{config_path}: not readable JSON: {e}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: not a JSON object")
    arch = architecture_from_config(config, name=str(model_dir), source=str(config_path))
    if arch.quantization is not None:
        return arch

    files, index = _safetensors_files(model_dir)
    if files and all(f.is_file() for f in files):
        return replace(arch, parameter_count=safetensors_parameter_count(files),
                       parameter_count_source=PARAMS_FROM_HEADERS)
    if index is not None:
        metadata = index.get("metadata")
        total_size = metadata.get("total_size") if isinstance(metadata, dict) else None
        if isinstance(total_size, int | float) and total_size > 0:
            return replace(arch, parameter_count=int(total_size) // DTYPE_BYTES[arch.torch_dtype],
                           parameter_count_source=PARAMS_FROM_INDEX)
    return arch


# Any one of these lets transformers' AutoTokenizer (which vLLM uses) build the tokenizer.
_TOKENIZER_VOCAB_FILES: Final = (
    ("tokenizer.json",), ("tokenizer.model",), ("vocab.json", "merges.txt"), ("tiktoken.model",),
)


def validate_model_dir(path: str | Path) -> list[str]:
    """Problems that would stop vLLM from serving this folder; empty when none were found.

    Each message names the path and what is missing.
    """
    model_dir = Path(path)
    if not model_dir.is_dir():
        return [f"{model_dir}: not a directory"]
    errors: list[str] = []

    config_path = model_dir / "config.json"
    if not config_path.is_file():
        errors.append(f"{config_path}: missing (vLLM reads the architecture from it)")
    else:
        try:
            architecture_from_model_dir(model_dir)
        except (ValueError, OSError) as e:
            errors.append(str(e))

    index_path = model_dir / "model.safetensors.index.json"
    safetensors = _weight_safetensors(model_dir)
    bins = sorted(model_dir.glob("pytorch_model*.bin"))
    if index_path.is_file():
        try:
            shards, _ = _safetensors_files(model_dir)
            missing = [s.name for s in shards if not s.is_file()]
            if missing:
                errors.append(f"{model_dir}: weight shards listed in {index_path.name} are missing: "
                              f"{', '.join(missing)}")
        except ValueError as e:
            errors.append(str(e))
    elif not safetensors and not bins:
        if (model_dir / "adapter_config.json").is_file():
            errors.append(f"{model_dir}: holds only a LoRA/PEFT adapter (adapter_config.json), no model weights; "
                          "merge the adapter into the base model (merge_and_unload + save_pretrained) first")
        else:
            errors.append(f"{model_dir}: no weights (expected *.safetensors or pytorch_model*.bin)")

    if not (model_dir / "tokenizer_config.json").is_file():
        errors.append(f"{model_dir / 'tokenizer_config.json'}: missing (the tokenizer's settings and "
                      "chat template; save it with tokenizer.save_pretrained)")
    if not any(all((model_dir / f).is_file() for f in group) for group in _TOKENIZER_VOCAB_FILES):
        wanted = " or ".join("+".join(group) for group in _TOKENIZER_VOCAB_FILES)
        errors.append(f"{model_dir}: no tokenizer vocabulary (expected {wanted})")
    return errors


PositiveInt = Annotated[int, Field(gt=0)]


class KnownModel(BaseModel):
    """One entry of data/models.yaml: a model's config.json values, under config.json's own keys."""

    model_config = STRICT

    name: str
    published_parameters_billions: Annotated[float, Field(gt=0)]
    model_type: str
    num_hidden_layers: PositiveInt
    hidden_size: PositiveInt
    num_attention_heads: PositiveInt
    num_key_value_heads: PositiveInt
    head_dim: PositiveInt | None = None
    intermediate_size: PositiveInt
    vocab_size: PositiveInt
    max_position_embeddings: PositiveInt
    tie_word_embeddings: bool
    torch_dtype: str

    def architecture(self) -> ModelArchitecture:
        config = self.model_dump(exclude={"name", "published_parameters_billions"}, exclude_none=True)
        arch = architecture_from_config(config, name=self.name,
                                        source=f"https://huggingface.co/{self.name}/blob/main/config.json")
        # Rounded to whole parameters: 1.54 x 1e9 in binary floating point is 1540000000.0000002.
        return replace(arch, published_parameters=float(round(self.published_parameters_billions * 1e9)))


class ModelsFile(DataFile):
    models: tuple[KnownModel, ...] = Field(min_length=1)

    _unique = field_validator("models")(unique_names)


KNOWN_MODELS: Mapping[str, ModelArchitecture] = MappingProxyType(
    {entry.name: entry.architecture() for entry in load_data_file(ModelsFile, MODELS_FILE).models}
)


def lookup_known_model(name: str) -> ModelArchitecture:
    try:
        return KNOWN_MODELS[name]
    except KeyError:
        known = ", ".join(KNOWN_MODELS)
        raise ValueError(
            f"no built-in facts for model {name!r} (known: {known}); serve a local folder with its "
            "config.json, or add the model's config.json values to infra/catalog/data/models.yaml"
        ) from None
