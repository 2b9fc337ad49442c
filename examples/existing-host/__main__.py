"""The original scenario: a shared GPU server that already runs Docker, this endpoint on GPU 1 only,
with the original command's serving flags that still mean something on the current vLLM image:

    docker run --runtime nvidia --gpus '"device=1"' -v ~/.cache/huggingface:/root/.cache/huggingface \\
      -p 30005:8000 --ipc=host vllm/vllm-openai:v0.4.2 --model Qwen/Qwen2.5-1.5B-Instruct \\
      --api-key <key> --gpu-memory-utilization 0.7 --trust-remote-code --max-num-seqs 16 --block-size 16 \\
      --swap-space 4

Not carried over: v0.4.2 (below the security floor, v0.22.0; the package's pinned image runs instead),
--swap-space (removed in vLLM 0.18.0: an error before deploy), --trust-remote-code (Qwen2.5 runs without
it, and with it the model revision must be pinned), --ipc=host (a private /dev/shm is enough without
tensor parallelism) and --api-key on the command line (the key is generated, passed as VLLM_API_KEY and
exported as a secret). No cloud resources: pulumi-docker and the readiness gate reach the server over SSH.
"""

import pulumi

from vllm_endpoint import VllmEndpoint, VllmEndpointArgs

config = pulumi.Config()

endpoint = VllmEndpoint(
    # The root project's endpoint name: the same containers (`vllm`, `vllm-proxy`) and the same folder
    # under hostCacheDir, so moving from the root stack keeps the downloaded model.
    "vllm",
    VllmEndpointArgs(
        target="existing-host",
        host_address=config.require("hostAddress"),
        host_ssh_user=config.require("hostSshUser"),
        host_public_key=config.require("hostPublicKey"),
        ssh_private_key=config.require_secret("sshPrivateKey"),
        host_gpu_model=config.require("hostGpuModel"),
        host_cache_dir=config.require("hostCacheDir"),
        model="Qwen/Qwen2.5-1.5B-Instruct",
        gpus=["1"],  # --gpus '"device=1"': the other GPUs stay with whoever else uses the server
        api_port=30005,  # -p 30005:8000, now served by the proxy in front of vLLM
        gpu_memory_utilization=0.7,  # the GPU is shared
        # Kept because they were asked for; 16 sequences cap throughput (the plan output warns).
        max_num_seqs=16,
        block_size=16,
    ),
)

pulumi.export("endpoint_url", endpoint.endpoint_url)
pulumi.export("api_key", endpoint.api_key)
pulumi.export("model", endpoint.model)
pulumi.export("ssh_command", endpoint.ssh_command)
pulumi.export("docker_run", endpoint.docker_run)
pulumi.export("plan", endpoint.plan_summary)
