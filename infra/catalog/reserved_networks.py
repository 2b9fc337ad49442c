"""Address blocks no client connects from (documentation, loopback, multicast, ...), from
data/reserved-networks.yaml: the allowed-CIDR settings refuse them, because a security group or proxy rule
that lists only such a block admits nobody while the stack looks configured.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Final

from pydantic import BaseModel, Field, field_validator

from vllm_endpoint.infra.catalog.data_files import STRICT, DataFile, data_path, load_data_file

RESERVED_NETWORKS_FILE: Final = data_path("reserved-networks.yaml")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ReservedNetwork(BaseModel):
    model_config = STRICT

    cidr: str = Field(description="The block, in its canonical form (no host bits).")
    kind: str = Field(description="What an address in it is, as the refusal says it: 'a documentation address'.")
    rfc: str = Field(pattern=r"^RFC [0-9]+$")
    why: str = Field(description="Why nothing reaches the endpoint from it.")

    @field_validator("cidr")
    @classmethod
    def _canonical(cls, value: str) -> str:
        network = ipaddress.ip_network(value)  # strict: a block written with host bits is a typo
        if network.with_prefixlen != value:
            raise ValueError(f"write {value!r} as {network.with_prefixlen}")
        return value

    @property
    def network(self) -> Network:
        return ipaddress.ip_network(self.cidr)


class ReservedNetworksFile(DataFile):
    networks: tuple[ReservedNetwork, ...] = Field(min_length=1)

    @field_validator("networks")
    @classmethod
    def _unique(cls, networks: tuple[ReservedNetwork, ...]) -> tuple[ReservedNetwork, ...]:
        seen = [n.cidr for n in networks]
        twice = sorted({c for c in seen if seen.count(c) > 1})
        if twice:
            raise ValueError(f"listed twice: {', '.join(twice)}")
        return networks


def load_reserved_networks_file(path: Path = RESERVED_NETWORKS_FILE) -> ReservedNetworksFile:
    return load_data_file(ReservedNetworksFile, path)


RESERVED_NETWORKS: Final = load_reserved_networks_file().networks


def reserved_network(cidr: str) -> ReservedNetwork | None:
    """The narrowest reserved block that holds all of `cidr` (255.255.255.255/32 is named as the broadcast
    address, not as part of 240.0.0.0/4), or None. A CIDR that is wider than a reserved block (0.0.0.0/0,
    192.0.0.0/16) is a real network and is not reserved."""
    network = ipaddress.ip_network(cidr, strict=False)
    holding = [r for r in RESERVED_NETWORKS
               if r.network.version == network.version and network.subnet_of(r.network)]  # type: ignore[arg-type]
    return max(holding, key=lambda r: r.network.prefixlen, default=None)
