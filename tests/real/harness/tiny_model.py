"""A tiny Qwen2 chat model made on the spot, so the real vLLM server has something to serve offline.

Two halves:
- `ensure_tiny_model()` runs in the project venv (which has no torch): it picks the cache directory
  from a content key and, if the model is not there yet, runs this same file as a script with the
  vLLM venv's interpreter.
- `main()` (the script half) runs in the vLLM venv, where `torch`, `transformers` and `tokenizers`
  exist. It is seeded, so the same inputs give the same model.

head_dim is hidden_size / num_attention_heads = 64: vLLM's CPU attention rejects head_dim 16.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# The model's shape is part of the cache key through this file's own text (see _content_key).
HIDDEN_SIZE = 128
INTERMEDIATE_SIZE = 256
NUM_LAYERS = 2
NUM_HEADS = 2
NUM_KV_HEADS = 1
VOCAB_TARGET = 512
MAX_POSITIONS = 2048
SEED = 1234

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_TEXT = (
    "the a model server answers every request with tokens from its vocabulary while the cache "
    "volume keeps compiled kernels between restarts and the proxy checks each key before it "
    "forwards a chat completion to the engine on port eight thousand hello world user assistant "
    "system you are a helpful tiny language model that knows nothing but still replies quickly"
)


def _corpus(lines: int = 400) -> list[str]:
    """Deterministic training text: no download, identical on every machine."""
    import random

    rng = random.Random(SEED)
    words = _TEXT.split()
    out = []
    for _ in range(lines):
        out.append(" ".join(rng.choice(words) for _ in range(rng.randint(5, 25))) + ".")
    return out


def main(dest: str) -> None:
    """Write the tokenizer, config, generation config and safetensors weights into `dest`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(SEED)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET,
        special_tokens=[END_OF_TEXT, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=IM_END, pad_token=END_OF_TEXT, unk_token=None, bos_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(dest)

    eos_id = tok.token_to_id(IM_END)
    pad_id = tok.token_to_id(END_OF_TEXT)
    config = Qwen2Config(
        vocab_size=tok.get_vocab_size(),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=True,
    )
    # bfloat16: what vLLM on CPU runs anyway (dtype auto), so the weights load without a cast.
    config.dtype = "bfloat16"
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(dest, safe_serialization=True)
    GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=eos_id).save_pretrained(dest)


def _content_key(vllm_python: Path) -> str:
    """Changes when this file or the vLLM venv's transformers/tokenizers/torch versions change."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    site = next(vllm_python.parent.parent.glob("lib/python3*/site-packages"), None)
    if site is not None:
        for dist in sorted(site.glob("*.dist-info")):
            if dist.name.split("-")[0].lower() in {"transformers", "tokenizers", "torch", "safetensors"}:
                digest.update(dist.name.encode())
    return digest.hexdigest()[:16]


def ensure_tiny_model(cache_root: Path, vllm_python: Path) -> Path:
    """Return a directory holding the tiny model, building it once per content key."""
    key = _content_key(vllm_python)
    final = cache_root / f"tiny-qwen2-{key}"
    if (final / "model.safetensors").is_file() and (final / "tokenizer.json").is_file():
        return final
    cache_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tiny-model-", dir=cache_root))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        # No network: everything is made locally, so stop the libraries from trying.
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        subprocess.run([str(vllm_python), __file__, str(work)], check=True, env=env, timeout=600)
        # Readable by the container's root and by anyone on the host; the dir is bind-mounted read-only.
        work.chmod(0o755)
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
    finally:
        if work.exists():
            shutil.rmtree(work)
    return final


if __name__ == "__main__":
    main(sys.argv[1])
