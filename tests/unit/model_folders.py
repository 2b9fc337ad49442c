"""A merged fine-tune folder as a user would hand it over (config.json, safetensors, tokenizer), tiny."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from vllm_endpoint.infra.plan.deployment import DeploymentPlan, build_plan
from vllm_endpoint.infra.settings.models import load_stack_config

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


def upload_plan(folder: Path, target: str = "existing-host", cache_dir: str = "/srv/cache") -> DeploymentPlan:
    """The plan of a stack serving `folder` (modelPath) from `cache_dir` on an existing host, or on AWS."""
    raw = {"modelPath": str(folder)}
    if target == "aws":
        raw |= {"sshAllowedCidrs": "93.184.215.14/32", "apiAllowedCidrs": "93.184.216.0/24"}
    else:
        raw |= {"target": "existing-host", "hostAddress": "10.1.2.3", "hostSshUser": "deploy",
                "hostCacheDir": cache_dir,
                "hostPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm5xk0pJl1ZkZ4bH2v0b3dJq5s0aQy7Ff2k0Vd7J8yO",
                "sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n"}
    return build_plan(load_stack_config(raw), hub_fetcher=None)


# What the stack names the copy, which verify-model.sh's message tells the user to re-run.
COPY_URN = ("urn:pulumi:dev::vllm-endpoint::vllm-endpoint:index:VllmEndpoint$vllm-endpoint:docker:VllmServer"
            "$command:remote:CopyToRemote::vllm-server-model-upload")
# One for the tests that only render the upload's commands (the folder must exist while it is planned).
_PLANNED = tempfile.TemporaryDirectory(prefix="upload-plan-")
UPLOAD_PLAN = upload_plan(write_model_folder(Path(_PLANNED.name), "ft"))
_PLANNED.cleanup()
