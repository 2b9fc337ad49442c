"""vllm-endpoint: a private, OpenAI-compatible vLLM endpoint on a cloud GPU VM, as Pulumi components.

    from vllm_endpoint import VllmEndpoint, VllmEndpointArgs

The pipeline lives in two subpackages (the checkout's top-level `infra/` and `components/`):
`infra.settings` -> `infra.catalog` -> `infra.plan` -> `infra.render` -> `components`.

The component is imported on first use, so the pure layers (`vllm_endpoint.infra...`) load without
Pulumi, and the generator of `components/vllm_endpoint_args.py` runs even when that file is missing.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vllm_endpoint.components.vllm_endpoint import VllmEndpoint, VllmEndpointArgs

__all__ = ["VllmEndpoint", "VllmEndpointArgs"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from vllm_endpoint.components import vllm_endpoint

        return getattr(vllm_endpoint, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
