"""An endpoint's names: derived from its name, so two names give two sets of names."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from vllm_endpoint.infra.catalog.names import DEFAULT_ENDPOINT_NAME
from vllm_endpoint.infra.plan.naming import EndpointNames, name_problems

NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)


def test_the_stacks_endpoint_keeps_the_container_names_of_earlier_releases() -> None:
    names = EndpointNames(DEFAULT_ENDPOINT_NAME)
    assert names.containers == ("vllm", "vllm-proxy")
    assert names.network == "vllm-endpoint-vllm"
    assert names.existing_host_dir("/srv/cache/") == "/srv/cache/vllm"


@given(NAMES, NAMES)
def test_two_names_share_no_network_folder_parameter_or_local_folder(a: str, b: str) -> None:
    if a == b:
        return
    first, second = EndpointNames(a), EndpointNames(b)
    assert first.network != second.network
    assert first.existing_host_dir("/srv") != second.existing_host_dir("/srv")
    assert first.hf_token_parameter("p", "s") != second.hf_token_parameter("p", "s")
    assert first.ssh_dir(Path("/home/u"), "p", "s") != second.ssh_dir(Path("/home/u"), "p", "s")
    # Container names can meet ("a" runs "a-proxy", so does an endpoint named "a-proxy"): the components
    # refuse two such endpoints on one host (tests/unit/components/test_endpoint_args.py).


@given(NAMES)
def test_valid_names_make_valid_docker_and_ssm_names(name: str) -> None:
    assert name_problems(name) == []


def test_names_that_cannot_name_a_folder_or_container_are_refused() -> None:
    for bad in ("", "my endpoint", "-x", ".hidden", "a/b", "x" * 64):
        assert name_problems(bad) and name_problems(bad)[0].startswith(f"name: {bad!r} cannot name an endpoint")
