"""VllmEndpoint as a Pulumi component package, for programs in any Pulumi language.

`provider/` (PulumiPlugin.yaml) runs `serve()`: a TypeScript, Go, C#, Java or YAML program adds the
package with `pulumi package add <path or git URL>/provider` and gets a generated SDK whose
`VllmEndpoint` takes the same settings (camelCase there, snake_case in Python).

The schema is inferred from `VllmEndpointArgs` and the component's output annotations by the SDK's
analyzer (`pulumi.provider.experimental`), as `component_provider_host` does. That analyzer has no
notion of secrets, so the schema it infers would publish `apiKey` as a plain string and a generated SDK
would not mark it; `package_schema()` adds `secret: true` to every property that holds one, which is
why this module hosts a `ComponentProvider` subclass instead of calling `component_provider_host`.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

from pulumi.provider import main
from pulumi.provider.experimental.component import ComponentProvider

from vllm_endpoint.components.vllm_endpoint import VllmEndpoint
from vllm_endpoint.infra.catalog.names import PROJECT

PACKAGE_NAME: Final = PROJECT
COMPONENTS: Final = (VllmEndpoint,)
# Schema property names (camelCase) of the inputs and outputs that carry secrets.
SECRET_INPUTS: Final = frozenset({"apiKey", "hfToken", "sshPrivateKey"})
SECRET_OUTPUTS: Final = frozenset({"apiKey"})


def package_version() -> str:
    try:
        return version(PACKAGE_NAME)
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "0.0.0"


def mark_secrets(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with `secret: true` on the secret inputs and outputs of every component."""
    for resource in schema.get("resources", {}).values():
        for key, names in (("inputProperties", SECRET_INPUTS), ("properties", SECRET_OUTPUTS)):
            properties = resource.get(key, {})
            missing = names - properties.keys()
            if missing:
                # A renamed setting must not silently lose its secret marking.
                raise ValueError(f"schema has no {key} {sorted(missing)} to mark secret")
            for name in names:
                properties[name]["secret"] = True
    return schema


class VllmEndpointProvider(ComponentProvider):
    def __init__(self, provider_version: str) -> None:
        super().__init__(list(COMPONENTS), PACKAGE_NAME, version=provider_version)
        assert self.schema is not None
        self.schema = json.dumps(mark_secrets(json.loads(self.schema)))


def package_schema(provider_version: str = "0.0.0") -> dict[str, Any]:
    """The schema `pulumi package add` reads from the running provider."""
    schema = VllmEndpointProvider(provider_version).schema
    assert schema is not None
    return dict(json.loads(schema))


def serve() -> None:
    """The plugin's entry point: the Pulumi CLI passes the engine address and flags as arguments."""
    main(VllmEndpointProvider(package_version()), sys.argv[1:])
