"""Model facts: the built-in shapes, parameter arithmetic, and reading a local model folder."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from vllm_endpoint.infra.catalog.models import (
    KNOWN_MODELS,
    PARAMS_FROM_HEADERS,
    PARAMS_FROM_INDEX,
    PARAMS_FROM_SHAPES,
    architecture_from_config,
    architecture_from_model_dir,
    estimate_parameters,
    lookup_known_model,
    read_safetensors_header,
    validate_model_dir,
)

REQUIRED_MODELS = [
    *(f"Qwen/Qwen2.5-{s}-Instruct" for s in ("0.5B", "1.5B", "3B", "7B", "14B")),
    *(f"Qwen/Qwen3-{s}" for s in ("0.6B", "1.7B", "4B", "8B", "14B")),
    "meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Meta-Llama-3-8B-Instruct",
    "meta-llama/Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-3B-Instruct",
]

TINY_CONFIG = {
    "model_type": "llama", "num_hidden_layers": 2, "hidden_size": 8, "num_attention_heads": 2,
    "num_key_value_heads": 1, "intermediate_size": 16, "vocab_size": 32, "max_position_embeddings": 128,
    "torch_dtype": "bfloat16", "tie_word_embeddings": False,
}


def test_every_required_model_is_known() -> None:
    assert set(REQUIRED_MODELS) <= set(KNOWN_MODELS)


@pytest.mark.parametrize("name", REQUIRED_MODELS)
def test_estimate_is_within_two_percent_of_the_published_count(name: str) -> None:
    arch = KNOWN_MODELS[name]
    assert arch.published_parameters is not None
    assert estimate_parameters(arch) == pytest.approx(arch.published_parameters, rel=0.02)
    assert arch.parameter_count == estimate_parameters(arch)
    assert arch.parameter_count_source == PARAMS_FROM_SHAPES


def test_qwen25_15b_parameters_by_hand() -> None:
    # Qwen2.5-1.5B: hidden 1536, 12 heads x 128, 2 KV heads x 128, intermediate 8960, 28 layers,
    # vocab 151936, tied embeddings, q/k/v biases.
    q = 1536 * 1536 + 1536
    k = v = 1536 * 256 + 256
    o = 1536 * 1536
    mlp = 3 * 1536 * 8960
    norms = 2 * 1536
    layer = q + k + v + o + mlp + norms  # 46,797,824
    total = 28 * layer + 1536 + 151936 * 1536
    assert total == 1_543_714_304
    assert KNOWN_MODELS["Qwen/Qwen2.5-1.5B-Instruct"].parameter_count == total


def test_qwen3_counts_its_qk_norms_and_no_biases() -> None:
    arch = KNOWN_MODELS["Qwen/Qwen3-8B"]
    assert (arch.qk_norm, arch.qkv_bias, arch.head_dim) == (True, False, 128)
    # hidden 4096, 32 x 128 query width, 8 x 128 KV width, intermediate 12288, 36 layers, vocab 151936.
    layer = 4096 * 4096 + 2 * 4096 * 1024 + 4096 * 4096 + 3 * 4096 * 12288 + 2 * 4096 + 2 * 128
    assert arch.parameter_count == 36 * layer + 4096 + 2 * 151936 * 4096


def test_head_dim_comes_from_config_or_hidden_over_heads() -> None:
    assert KNOWN_MODELS["Qwen/Qwen2.5-7B-Instruct"].head_dim == 3584 // 28
    assert KNOWN_MODELS["meta-llama/Llama-3.2-1B-Instruct"].head_dim == 64
    # Qwen3-0.6B: 16 heads x 128 > hidden 1024, so head_dim must be read, not derived.
    assert KNOWN_MODELS["Qwen/Qwen3-0.6B"].head_dim == 128


def test_context_limits() -> None:
    assert KNOWN_MODELS["meta-llama/Llama-3.1-8B-Instruct"].max_model_len_limit == 131072
    assert KNOWN_MODELS["meta-llama/Meta-Llama-3-8B-Instruct"].max_model_len_limit == 8192
    assert KNOWN_MODELS["Qwen/Qwen3-4B"].max_model_len_limit == 40960


def test_unknown_model_lookup_says_what_to_do() -> None:
    with pytest.raises(ValueError, match=r"no built-in facts for model 'acme/x'.*config\.json"):
        lookup_known_model("acme/x")
    assert lookup_known_model("Qwen/Qwen3-4B") is KNOWN_MODELS["Qwen/Qwen3-4B"]


def test_missing_key_is_named_with_the_file() -> None:
    config = {k: v for k, v in TINY_CONFIG.items() if k != "intermediate_size"}
    with pytest.raises(ValueError, match=r"^/x/config.json: missing key 'intermediate_size'$"):
        architecture_from_config(config, source="/x/config.json")


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("hidden_size", "8", "'hidden_size' must be a positive integer"),
    ("num_hidden_layers", 0, "'num_hidden_layers' must be a positive integer"),
    ("torch_dtype", "int8", "unsupported torch_dtype 'int8'"),
    ("num_key_value_heads", 3, "not a multiple of num_key_value_heads"),
])
def test_bad_values_are_named(key: str, value: object, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        architecture_from_config({**TINY_CONFIG, key: value}, source="c.json")


def test_moe_and_multimodal_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="mixture-of-experts config \\(num_experts\\)"):
        architecture_from_config({**TINY_CONFIG, "num_experts": 8})
    with pytest.raises(ValueError, match="multimodal"):
        architecture_from_config({"model_type": "llava", "text_config": TINY_CONFIG})


def test_config_defaults_and_newer_spellings() -> None:
    config = {k: v for k, v in TINY_CONFIG.items() if k not in ("num_key_value_heads", "torch_dtype")}
    arch = architecture_from_config({**config, "dtype": "float16"})
    assert arch.num_key_value_heads == 2  # no GQA key: one KV head per query head
    assert arch.torch_dtype == "float16"  # transformers >= 4.56 writes "dtype"
    assert architecture_from_config(config).torch_dtype == "float32"  # neither key: float32


def test_rope_scaling_extends_the_limit_like_vllm() -> None:
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    assert architecture_from_config({**TINY_CONFIG, "rope_scaling": yarn}).max_model_len_limit == 4 * 32768
    llama3 = {"rope_type": "llama3", "factor": 8.0}
    assert architecture_from_config({**TINY_CONFIG, "rope_scaling": llama3}).max_model_len_limit == 128


def test_prequantized_config_records_its_method() -> None:
    arch = architecture_from_config({**TINY_CONFIG, "quantization_config": {"quant_method": "AWQ", "bits": 4}})
    assert arch.quantization == "awq"


# ---------------------------------------------------------------- local model folders

def _write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A real safetensors file: u64 little-endian header length, JSON header, then the data."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = 2
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def _model_folder(root: Path, *, weights: bool = True, tokenizer: bool = True) -> Path:
    folder = root / "merged-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_CONFIG))
    if weights:
        _write_safetensors(folder / "model.safetensors",
                           {"model.embed_tokens.weight": ("BF16", [32, 8]), "model.norm.weight": ("BF16", [8])})
    if tokenizer:
        (folder / "tokenizer.json").write_text("{}")
        (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    return folder


def test_reads_a_local_folder_and_counts_parameters_from_the_headers(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path)
    assert validate_model_dir(folder) == []
    arch = architecture_from_model_dir(folder)
    assert (arch.hidden_size, arch.num_hidden_layers, arch.vocab_size) == (8, 2, 32)
    assert arch.parameter_count == 32 * 8 + 8
    assert arch.parameter_count_source == PARAMS_FROM_HEADERS
    assert arch.name == str(folder)


def test_header_reader_returns_the_json(tmp_path: Path) -> None:
    path = tmp_path / "a.safetensors"
    _write_safetensors(path, {"w": ("F16", [3, 5])})
    header = read_safetensors_header(path)
    assert header["w"] == {"dtype": "F16", "shape": [3, 5], "data_offsets": [0, 30]}


def test_corrupt_safetensors_is_named(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 10) + b"not json!!")
    with pytest.raises(ValueError, match=r"model.safetensors: safetensors header is not JSON"):
        architecture_from_model_dir(folder)
    assert any("safetensors header is not JSON" in e for e in validate_model_dir(folder))


def test_sharded_folder_counts_every_shard(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path, weights=False)
    _write_safetensors(folder / "model-00001-of-00002.safetensors", {"a": ("BF16", [4, 4])})
    _write_safetensors(folder / "model-00002-of-00002.safetensors", {"b": ("BF16", [2, 3])})
    index = {"metadata": {"total_size": 44},
             "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert architecture_from_model_dir(folder).parameter_count == 16 + 6
    assert validate_model_dir(folder) == []

    (folder / "model-00002-of-00002.safetensors").unlink()
    arch = architecture_from_model_dir(folder)
    # Without every shard the index's byte total divided by bf16's 2 bytes is the best figure.
    assert (arch.parameter_count, arch.parameter_count_source) == (44 // 2, PARAMS_FROM_INDEX)
    assert validate_model_dir(folder) == [
        f"{folder}: weight shards listed in model.safetensors.index.json are missing: "
        "model-00002-of-00002.safetensors"
    ]


def test_folder_without_weights_is_reported_and_falls_back_to_shapes(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path, weights=False)
    assert validate_model_dir(folder) == [
        f"{folder}: no weights (expected *.safetensors or pytorch_model*.bin)"
    ]
    arch = architecture_from_model_dir(folder)
    assert arch.parameter_count_source == PARAMS_FROM_SHAPES
    # 2 layers x (q 64 + k 32 + v 32 + o 64 + mlp 3*8*16 + norms 16) + final norm 8 + embed and head 2*32*8
    assert arch.parameter_count == 2 * (64 + 32 + 32 + 64 + 384 + 16) + 8 + 2 * 32 * 8


def test_an_unmerged_adapter_is_not_a_model(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path, weights=False)
    (folder / "adapter_config.json").write_text("{}")
    _write_safetensors(folder / "adapter_model.safetensors", {"lora_A": ("BF16", [4, 8])})
    errors = validate_model_dir(folder)
    assert len(errors) == 1 and errors[0].startswith(f"{folder}: holds only a LoRA/PEFT adapter")
    assert architecture_from_model_dir(folder).parameter_count_source == PARAMS_FROM_SHAPES


def test_pytorch_bin_weights_count_as_weights(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path, weights=False)
    (folder / "pytorch_model.bin").write_bytes(b"\0")
    assert validate_model_dir(folder) == []


def test_folder_without_config_or_tokenizer(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path, tokenizer=False)
    (folder / "config.json").unlink()
    errors = validate_model_dir(folder)
    assert errors[0] == f"{folder / 'config.json'}: missing (vLLM reads the architecture from it)"
    assert any(e.startswith(f"{folder / 'tokenizer_config.json'}: missing") for e in errors)
    assert any(e.startswith(f"{folder}: no tokenizer vocabulary (expected tokenizer.json or") for e in errors)
    with pytest.raises(FileNotFoundError, match=r"config\.json: missing"):
        architecture_from_model_dir(folder)


def test_a_path_that_is_not_a_folder(tmp_path: Path) -> None:
    assert validate_model_dir(tmp_path / "nope") == [f"{tmp_path / 'nope'}: not a directory"]


def test_broken_config_json_is_named(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json: not readable JSON"):
        architecture_from_model_dir(folder)


def test_prequantized_folder_counts_parameters_from_shapes(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path)
    (folder / "config.json").write_text(json.dumps({**TINY_CONFIG, "quantization_config": {"quant_method": "gptq"}}))
    arch = architecture_from_model_dir(folder)
    # Packed int32 tensors would undercount: the shapes give the real parameter count.
    assert (arch.quantization, arch.parameter_count_source) == ("gptq", PARAMS_FROM_SHAPES)
