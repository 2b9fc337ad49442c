"""What the endpoints of one program claim, so that two of them never share a name, or a port, container,
network or folder on one host.

Each endpoint claims its name when it is declared, and what it puts on a host once the host's address is
known: at construction for a plain address, when the Output resolves for an Output one. A second claim
of the same thing is a ConfigError naming both endpoints and the setting to change. AWS endpoints claim
nothing on a host: each has its own VM.

"One program" is one connection to the Pulumi engine (the resource monitor): a `pulumi up`, or one
program run under test mocks.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from pulumi.runtime import settings as pulumi_settings

from vllm_endpoint.infra.settings.models import ConfigError


@dataclass(frozen=True)
class HostClaim:
    """What one endpoint puts on a host."""

    endpoint: str
    api_port: int
    containers: tuple[str, ...]
    network: str
    folder: str


@dataclass
class _Program:
    endpoints: set[str] = field(default_factory=set)
    hosts: dict[str, list[HostClaim]] = field(default_factory=dict)


_PROGRAMS: weakref.WeakKeyDictionary[object, _Program] = weakref.WeakKeyDictionary()


def _program() -> _Program:
    monitor = pulumi_settings.get_monitor()
    if monitor is None:  # no engine: nothing to declare resources with, nothing shared to protect
        return _Program()
    return _PROGRAMS.setdefault(monitor, _Program())


def claim_endpoint_name(name: str) -> None:
    program = _program()
    if name in program.endpoints:
        raise ConfigError([
            f"name: two endpoints of this program are named {name!r}; their containers, folders and cloud "
            "names are named after the endpoint, so give each endpoint its own name"
        ])
    program.endpoints.add(name)


def claim_host(address: str, claim: HostClaim) -> None:
    """Record what `claim.endpoint` puts on the host at `address`, or raise ConfigError when another
    endpoint of the program already has any of it."""
    host = address.strip().rstrip(".").lower()
    claims = _program().hosts.setdefault(host, [])
    problems: list[str] = []
    for other in claims:
        problems += _conflicts(address, other, claim)
    if problems:
        raise ConfigError(problems)
    claims.append(claim)


def _conflicts(address: str, a: HostClaim, b: HostClaim) -> list[str]:
    both = f"endpoints {a.endpoint!r} and {b.endpoint!r}"
    problems = []
    if a.api_port == b.api_port:
        problems.append(f"apiPort: {both} both ask for port {a.api_port} on host {address}; give one of them "
                        "another apiPort")
    for name in sorted(set(a.containers) & set(b.containers)):
        problems.append(f"name: {both} would both run a container named {name!r} on host {address}; rename "
                        "one of the endpoints")
    if a.network == b.network:
        problems.append(f"name: {both} would both use the Docker network {a.network!r} on host {address}; "
                        "rename one of the endpoints")
    if _nested(a.folder, b.folder):
        problems.append(f"hostCacheDir: {both} would share the folder {a.folder} / {b.folder} on host "
                        f"{address}; give them different names or hostCacheDir")
    return problems


def _nested(a: str, b: str) -> bool:
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)
