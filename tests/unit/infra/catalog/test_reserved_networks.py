"""Which allowed CIDRs are addresses nobody connects from: the blocks of data/reserved-networks.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vllm_endpoint.infra.catalog.data_files import CatalogDataError
from vllm_endpoint.infra.catalog.reserved_networks import (
    RESERVED_NETWORKS,
    RESERVED_NETWORKS_FILE,
    load_reserved_networks_file,
    reserved_network,
)


@pytest.mark.parametrize("cidr, block, rfc", [
    ("192.0.2.0/24", "192.0.2.0/24", "RFC 5737"),
    ("198.51.100.7/32", "198.51.100.0/24", "RFC 5737"),
    ("203.0.113.10/32", "203.0.113.0/24", "RFC 5737"),
    ("2001:db8:1::/48", "2001:db8::/32", "RFC 3849"),
    ("0.0.0.0/8", "0.0.0.0/8", "RFC 1122"),
    ("0.0.0.0/32", "0.0.0.0/8", "RFC 1122"),
    ("127.0.0.1/32", "127.0.0.0/8", "RFC 1122"),
    ("::1/128", "::1/128", "RFC 4291"),
    ("169.254.169.254/32", "169.254.0.0/16", "RFC 3927"),
    ("fe80::/64", "fe80::/10", "RFC 4291"),
    ("239.1.2.0/24", "224.0.0.0/4", "RFC 5771"),
    ("ff02::1/128", "ff00::/8", "RFC 4291"),
    ("250.1.0.0/16", "240.0.0.0/4", "RFC 1112"),
    # Inside 240.0.0.0/4 too; named by its narrowest block.
    ("255.255.255.255/32", "255.255.255.255/32", "RFC 919"),
])
def test_an_address_inside_a_reserved_block_is_named_by_that_block(cidr: str, block: str, rfc: str) -> None:
    reserved = reserved_network(cidr)
    assert reserved is not None and (reserved.cidr, reserved.rfc) == (block, rfc)


@pytest.mark.parametrize("cidr", [
    "100.64.0.0/10", "100.101.102.103/32",  # carrier-grade NAT and tailnets: real clients
    "10.203.0.0/24", "172.16.0.0/12", "192.168.1.0/24", "fd00:1::/64",  # private networks
    "93.184.215.14/32", "2600:1f18::/48",  # public
    "0.0.0.0/0", "::/0",  # the whole internet: its own opt-in decides, not this list
    "192.0.0.0/16", "200.0.0.0/5",  # wider than a reserved block: they hold real addresses too
    "192.0.3.0/24", "203.0.114.0/24",  # right next to the documentation blocks
])
def test_real_networks_are_not_reserved(cidr: str) -> None:
    assert reserved_network(cidr) is None


def test_the_issue_s_list_is_all_there_and_each_block_names_its_rfc() -> None:
    listed = {r.cidr for r in RESERVED_NETWORKS}
    assert {"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "0.0.0.0/8", "240.0.0.0/4",
            "255.255.255.255/32", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4"} <= listed
    assert "100.64.0.0/10" not in listed
    assert all(r.rfc.startswith("RFC ") and r.kind and r.why for r in RESERVED_NETWORKS)


def _copy_with(tmp_path: Path, change: dict[str, str]) -> Path:
    data = yaml.safe_load(RESERVED_NETWORKS_FILE.read_text())
    data["networks"][0].update(change)
    path = tmp_path / "reserved-networks.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_block_written_with_host_bits_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(CatalogDataError) as err:
        load_reserved_networks_file(_copy_with(tmp_path, {"cidr": "192.0.2.1/24"}))
    assert err.value.problems == [
        f"{tmp_path / 'reserved-networks.yaml'}: field 'networks[0].cidr': 192.0.2.1/24 has host bits set"
    ]


def test_a_block_not_in_its_canonical_form_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogDataError) as err:
        load_reserved_networks_file(_copy_with(tmp_path, {"cidr": "2001:0db8::/32"}))
    assert "write '2001:0db8::/32' as 2001:db8::/32" in str(err.value)


def test_a_block_listed_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogDataError) as err:
        load_reserved_networks_file(_copy_with(tmp_path, {"cidr": "198.51.100.0/24"}))
    assert "listed twice: 198.51.100.0/24" in str(err.value)
