"""vllm-endpoint: a private, OpenAI-compatible vLLM endpoint on a cloud GPU VM, as Pulumi components.

    from vllm_endpoint import VllmEndpoint, VllmEndpointArgs

The pipeline lives in two subpackages (the checkout's top-level `infra/` and `components/`):
`infra.settings` -> `infra.catalog` -> `infra.plan` -> `infra.render` -> `components`.
"""

from vllm_endpoint.components.vllm_endpoint import VllmEndpoint, VllmEndpointArgs

__all__ = ["VllmEndpoint", "VllmEndpointArgs"]
