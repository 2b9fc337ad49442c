"""vllm-endpoint: a private, OpenAI-compatible vLLM endpoint on a cloud GPU VM, as Pulumi components.

    from vllm_endpoint import ConfigError, VllmEndpoint, VllmEndpointArgs, VllmService, VllmServiceArgs

`ConfigError` is what a bad setting raises (one line per problem, each naming the setting).

The pipeline lives in two subpackages (the checkout's top-level `infra/` and `components/`):
`infra.catalog` -> `infra.settings` -> `infra.plan` -> `infra.render` -> `components` (imports go only
that way: tests/unit/test_import_direction.py).

The component is imported on first use, so the pure layers (`vllm_endpoint.infra...`) load without
Pulumi, and the generator of `components/vllm_endpoint_args.py` runs even when that file is missing.
"""

from typing import TYPE_CHECKING, Any

from vllm_endpoint.infra.settings.models import ConfigError

if TYPE_CHECKING:
    from vllm_endpoint.components.vllm_endpoint import VllmEndpoint, VllmEndpointArgs
    from vllm_endpoint.components.vllm_service import VllmService, VllmServiceArgs

__all__ = ["ConfigError", "VllmEndpoint", "VllmEndpointArgs", "VllmService", "VllmServiceArgs"]
_ENDPOINT_NAMES = ("VllmEndpoint", "VllmEndpointArgs")
_SERVICE_NAMES = ("VllmService", "VllmServiceArgs")


def __getattr__(name: str) -> Any:
    if name in _ENDPOINT_NAMES:
        from vllm_endpoint.components import vllm_endpoint

        return getattr(vllm_endpoint, name)
    if name in _SERVICE_NAMES:
        from vllm_endpoint.components import vllm_service

        return getattr(vllm_service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
