"""VllmEndpoint's keyword arguments against the stack config: the same settings, the same checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.model_folders import write_model_folder
from vllm_endpoint.infra.settings.endpoint_args import (
    _STAND_INS,
    COMPONENT_KEYS,
    INPUT_SETTINGS,
    check_resolved,
    load_endpoint_settings,
    setting_keys,
    setting_value,
    settings_kwargs,
)
from vllm_endpoint.infra.settings.models import ConfigError, config_keys, load_stack_config

ROOT = Path(__file__).resolve().parents[4]
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm5xk0pJl1ZkZ4bH2v0b3dJq5s0aQy7Ff2k0Vd7J8yO"
AWS = {"sshAllowedCidrs": "93.184.215.14/32", "apiAllowedCidrs": '["93.184.216.0/24", "2600:1f18::/48"]'}
EXISTING = {"target": "existing-host", "hostAddress": "gpu-box.internal", "hostSshUser": "deploy",
            "hostPublicKey": HOST_KEY, "sshPrivateKey": KEY}


def stack_file(stack: str) -> dict[str, str]:
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {key.split(":", 1)[1]: v if isinstance(v, str) else json.dumps(v)
            for key, v in config.items() if key.startswith("vllm-endpoint:")}


def configs(tmp_path: Path) -> list[dict[str, str]]:
    model = write_model_folder(tmp_path, "merged-ft")
    return [
        {**stack_file("dev"), **AWS},  # the addresses the stack file asks the user to set
        {**stack_file("shared-gpu"), "sshPrivateKey": KEY},
        {**AWS, "apiKey": "k" * 40, "hfToken": "hf_x", "gpus": "0", "tags": '{"team": "ml"}', "maxNumSeqs": "64",
         "extraArgs": '["--enable-chunked-prefill"]', "tls": "self-signed", "metricsAllowedCidrs": "10.0.0.0/8"},
        {**EXISTING, "modelPath": str(model), "gpus": '["0", "1"]', "hostGpuModel": "A10G", "apiPort": "30006",
         "modelArchitecture": '{"num_hidden_layers": 2, "torch_dtype": "bfloat16"}'},
    ]


def test_keyword_arguments_make_the_same_config_as_the_stack_config(tmp_path: Path) -> None:
    for raw in configs(tmp_path):
        cfg = load_stack_config(raw)
        kwargs = settings_kwargs(cfg)
        assert set(kwargs) <= set(setting_keys())
        again = load_endpoint_settings(kwargs)
        assert again == cfg
        # And the same settings count as given (settings of the other target are an error).
        assert again.aws.model_fields_set == cfg.aws.model_fields_set
        assert again.existing_host.model_fields_set == cfg.existing_host.model_fields_set


def test_every_setting_is_a_keyword_named_after_its_field() -> None:
    keys = setting_keys()
    # endpointName is the stack program's: a program names its VllmEndpoint itself.
    assert set(keys.values()) == {*config_keys(), "target"} - {"endpointName"}
    assert all(keys[name] == name.split("_")[0] + "".join(p.title() for p in name.split("_")[1:]) for name in keys)
    assert set(keys) >= INPUT_SETTINGS and not set(COMPONENT_KEYS) & set(keys)


def test_the_stacks_endpoint_name_is_not_a_keyword_of_the_component() -> None:
    with pytest.raises(ConfigError, match=r"endpoint_name: unknown setting"):
        load_endpoint_settings({"endpoint_name": "chat"})


@pytest.mark.parametrize("name", sorted(INPUT_SETTINGS))
def test_each_stand_in_passes_the_checks_of_its_setting(name: str) -> None:
    base: dict[str, Any] = ({"target": "existing-host", "host_ssh_user": "deploy"}
                            if name.startswith("host_") else {"ssh_allowed_cidrs": ["93.184.215.14/32"],
                                                               "api_allowed_cidrs": ["93.184.216.0/24"]})
    if name.startswith("host_"):
        base |= {"host_address": "gpu-box.internal", "host_public_key": HOST_KEY, "ssh_private_key": KEY}
    if name == "ssh_public_key":
        base["ssh_private_key"] = KEY
    cfg = load_endpoint_settings({**base, name: object()}, deferred=[name])
    # The stand-in is in the config the plan sees (never in a resource: tests/unit/components checks that).
    assert setting_value(cfg, name) == _STAND_INS[name]


def test_required_settings_given_as_outputs_count_as_given() -> None:
    outputs = {"host_address": object(), "host_public_key": object(), "ssh_private_key": object()}
    cfg = load_endpoint_settings({"target": "existing-host", "host_ssh_user": "deploy", **outputs},
                                 deferred=list(outputs))
    assert cfg.target == "existing-host"
    with pytest.raises(ConfigError) as info:
        load_endpoint_settings({"target": "existing-host", "host_ssh_user": "deploy"})
    assert "hostAddress: required with target=existing-host" in info.value.problems


def test_a_resolved_output_is_checked_with_the_other_settings_and_normalised() -> None:
    kwargs = {"ssh_allowed_cidrs": ["93.184.215.14/32"], "api_allowed_cidrs": object()}
    assert check_resolved("api_allowed_cidrs", [" 10.0.0.0/8"], kwargs, ["api_allowed_cidrs"]) == ["10.0.0.0/8"]
    with pytest.raises(ConfigError) as info:
        check_resolved("api_allowed_cidrs", [], kwargs, ["api_allowed_cidrs"])
    assert info.value.problems[0].startswith("apiAllowedCidrs: required on AWS")
    with pytest.raises(ConfigError) as info:
        check_resolved("api_allowed_cidrs", None, kwargs, ["api_allowed_cidrs"])
    assert info.value.problems == [
        "apiAllowedCidrs: the Output given for api_allowed_cidrs resolved to no value; pass a value or leave "
        "api_allowed_cidrs out"]
    with pytest.raises(ConfigError) as info:
        check_resolved("api_key", "short", {**kwargs, "api_key": object()}, ["api_key", "api_allowed_cidrs"])
    # A secret's value never appears in the message.
    assert info.value.problems[0].startswith("apiKey: must be at least 32 characters") and "short" not in str(
        info.value)


def test_none_means_not_set() -> None:
    cfg = load_endpoint_settings({"ssh_allowed_cidrs": ["93.184.215.14/32"], "api_allowed_cidrs": ["10.0.0.0/8"],
                                  "max_num_seqs": None, "host_address": None})
    assert cfg.server.max_num_seqs is None and not cfg.existing_host.model_fields_set


@given(st.text(min_size=1, max_size=20).filter(lambda k: k not in setting_keys() and k not in COMPONENT_KEYS))
def test_an_unknown_keyword_is_one_problem_naming_it(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_endpoint_settings({"ssh_allowed_cidrs": ["93.184.215.14/32"], "api_allowed_cidrs": ["10.0.0.0/8"],
                                key: 1})
    assert info.value.problems == [next(p for p in info.value.problems if p.startswith(f"{key}: unknown setting"))]


def test_whole_numbers_given_as_floats_are_taken_as_the_stack_config_takes_them() -> None:
    # Pulumi's provider host (the component package) hands every number over as a float.
    base = {"ssh_allowed_cidrs": ["93.184.215.14/32"], "api_allowed_cidrs": ["10.0.0.0/8"]}
    as_floats = load_endpoint_settings({**base, "api_port": 30006.0, "max_num_seqs": 64.0, "shm_size_gb": 8.0})
    assert as_floats == load_endpoint_settings({**base, "api_port": 30006, "max_num_seqs": 64, "shm_size_gb": 8})
    with pytest.raises(ConfigError) as info:
        load_endpoint_settings({**base, "api_port": 30006.5})
    assert info.value.problems[0].startswith("apiPort: ")
