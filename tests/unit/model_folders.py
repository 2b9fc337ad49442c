"""A merged fine-tune folder as a user would hand it over (config.json, safetensors, tokenizer), tiny."""

from __future__ import annotations

import json
from pathlib import Path

# Qwen2.5-1.5B's architecture, so the fit check has real numbers to work with.
QWEN2_1_5B_CONFIG = {
    "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 1536, "intermediate_size": 8960,
    "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
    "max_position_embeddings": 32768, "torch_dtype": "bfloat16", "tie_word_embeddings": True,
}


def write_model_folder(root: Path, name: str = "my-finetune", *, config: bool = True, weights: bool = True) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    if config:
        (folder / "config.json").write_text(json.dumps(QWEN2_1_5B_CONFIG))
    if weights:
        # A valid safetensors file: 8-byte header length, JSON header, then the tensor bytes.
        header = json.dumps({"w": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}}).encode()
        (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)
    for tokenizer_file in ("tokenizer.json", "tokenizer_config.json"):
        (folder / tokenizer_file).write_text("{}")
    return folder
