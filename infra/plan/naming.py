"""What an endpoint calls the things it creates, derived from its name (the VllmEndpoint's resource name).

Two endpoints of one program have different names, so nothing here is shared between them: containers,
the Docker network, the folder on an existing host, the SSM parameter, the local SSH folder, the tag and
label values. The stack's own endpoint is named `vllm` (DEFAULT_ENDPOINT_NAME), which keeps the container
names every earlier release used (`vllm`, `vllm-proxy`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vllm_endpoint.infra.catalog.names import ENDPOINT_NAME_PATTERN, PROJECT

_NAME = re.compile(ENDPOINT_NAME_PATTERN)


def name_problems(name: str) -> list[str]:
    """Why `name` cannot name an endpoint (empty when it can), in ConfigError's one-line form."""
    if _NAME.fullmatch(name):
        return []
    return [
        f"name: {name!r} cannot name an endpoint: its containers, network and host folder are named after "
        "it; use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit"
    ]


@dataclass(frozen=True)
class EndpointNames:
    endpoint: str

    @property
    def vllm_container(self) -> str:
        return self.endpoint

    @property
    def proxy_container(self) -> str:
        return f"{self.endpoint}-proxy"

    @property
    def containers(self) -> tuple[str, str]:
        return (self.vllm_container, self.proxy_container)

    @property
    def network(self) -> str:
        return f"{PROJECT}-{self.endpoint}"

    def existing_host_dir(self, host_cache_dir: str) -> str:
        """The endpoint's own folder on a host other endpoints may share (hostCacheDir). An AWS endpoint has
        its VM and cache volume to itself and uses the volume's root, as the boot script expects."""
        return f"{host_cache_dir.rstrip('/')}/{self.endpoint}"

    def hf_token_parameter(self, project: str, stack: str) -> str:
        return f"/{PROJECT}/{project}/{stack}/{self.endpoint}/hf-token"

    def secret_parameter(self, project: str, stack: str, env: str) -> str:
        """The SSM parameter a fleet's task reads the secret environment variable `env` from."""
        return f"/{PROJECT}/{project}/{stack}/{self.endpoint}/{env.lower().replace('_', '-')}"

    def ssh_dir(self, home: Path, project: str, stack: str) -> Path:
        """The local folder for pulumi-docker's key and known_hosts files."""
        return home / ".ssh" / PROJECT / f"{project}-{stack}" / self.endpoint
