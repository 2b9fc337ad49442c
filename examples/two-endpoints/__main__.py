"""Two endpoints on one existing GPU server: a chat model on GPU 0 and a small model (cheap
classification, routing, drafts) on GPU 1, each on its own port with its own API key.

The endpoints share nothing on the server: containers, Docker network and cache folder are named after
each endpoint, and two endpoints asking for one port on one host are refused before anything is created.
"""

import pulumi

from vllm_endpoint import VllmEndpoint, VllmEndpointArgs

config = pulumi.Config()

# The same server and credentials for both.
host = VllmEndpointArgs(
    target="existing-host",
    host_address=config.require("hostAddress"),
    host_ssh_user=config.require("hostSshUser"),
    host_public_key=config.require("hostPublicKey"),
    ssh_private_key=config.require_secret("sshPrivateKey"),
    host_gpu_model=config.require("hostGpuModel"),
)

chat = VllmEndpoint("chat", VllmEndpointArgs(
    **host, model="Qwen/Qwen2.5-7B-Instruct", gpus=["0"], api_port=30005,
    # 8k-token sequences: about 9 fit in an A10G's KV cache at once next to the 7B weights, at 32k only 2.
    max_model_len=8192,
))
small = VllmEndpoint("small", VllmEndpointArgs(
    **host, model="Qwen/Qwen2.5-0.5B-Instruct", gpus=["1"], api_port=30006,
))

for name, endpoint in (("chat", chat), ("small", small)):
    pulumi.export(f"{name}_endpoint_url", endpoint.endpoint_url)
    pulumi.export(f"{name}_api_key", endpoint.api_key)
    pulumi.export(f"{name}_model", endpoint.model)
    pulumi.export(f"{name}_plan", endpoint.plan_summary)
