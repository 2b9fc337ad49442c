"""The component package other Pulumi languages add (`provider/`, vllm_endpoint/provider.py): the schema
it publishes, and a Construct call as a TypeScript/Go/YAML program's SDK makes it, under mocks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from tests.unit.components.test_endpoint_args import HF_TOKEN
from tests.unit.pulumi_mocks import Mocks, plaintext_occurrences
from vllm_endpoint.infra.settings.endpoint_args import COMPONENT_KEYS, INPUT_SETTINGS
from vllm_endpoint.infra.settings.models import config_keys
from vllm_endpoint.provider import (
    PACKAGE_NAME,
    SECRET_INPUTS,
    SECRET_OUTPUTS,
    VllmEndpointProvider,
    mark_secrets,
    package_schema,
)

ROOT = Path(__file__).resolve().parents[2]
TOKEN = f"{PACKAGE_NAME}:index:VllmEndpoint"
API_KEY = "k" * 40


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return package_schema("1.2.3")


def test_the_schema_publishes_one_component_with_every_setting_as_an_input(schema: dict[str, Any]) -> None:
    assert schema["name"] == PACKAGE_NAME and schema["version"] == "1.2.3"
    assert list(schema["resources"]) == [TOKEN]
    resource = schema["resources"][TOKEN]
    assert resource["isComponent"] is True
    inputs = resource["inputProperties"]
    # endpointName is the stack program's own setting: a component is named by its resource name.
    assert set(inputs) == {"target", *config_keys(), *(_camel(k) for k in COMPONENT_KEYS)} - {"endpointName"}
    assert not resource.get("requiredInputs"), "every setting has a default: a program may set none"
    for name, prop in inputs.items():
        assert prop.get("description"), f"{name} has no description in the published schema"
    # Settings that may come from other resources are Inputs there; every other one is plain.
    assert {name for name, prop in inputs.items() if not prop.get("plain")} == {_camel(k) for k in INPUT_SETTINGS}
    assert inputs["apiAllowedCidrs"]["type"] == "array" and inputs["apiAllowedCidrs"]["items"]["type"] == "string"
    assert inputs["apiPort"]["type"] == "integer" and inputs["trustRemoteCode"]["type"] == "boolean"


def test_the_api_key_is_a_secret_output_and_the_secret_settings_secret_inputs(schema: dict[str, Any]) -> None:
    resource = schema["resources"][TOKEN]
    outputs = resource["properties"]
    assert {"endpointUrl", "apiKey", "model", "publicIp", "sshCommand", "dockerRun"} <= set(outputs)
    assert {name for name, prop in outputs.items() if prop.get("secret")} == SECRET_OUTPUTS == {"apiKey"}
    inputs = resource["inputProperties"]
    assert {name for name, prop in inputs.items() if prop.get("secret")} == SECRET_INPUTS


def test_marking_a_secret_that_the_schema_lacks_is_an_error() -> None:
    # A renamed setting must fail here, not publish its secret as plain text.
    renamed: dict[str, Any] = {"resources": {TOKEN: {"inputProperties": {"apiKey": {}, "hfToken": {}},
                                     "properties": {"apiKey": {}}}}}
    with pytest.raises(ValueError, match="sshPrivateKey"):
        mark_secrets(renamed)


def test_the_plugin_manifest_and_entry_point_are_what_the_cli_loads() -> None:
    manifest = yaml.safe_load((ROOT / "provider" / "PulumiPlugin.yaml").read_text())
    assert manifest["runtime"]["name"] == "python"
    entry = (ROOT / "provider" / "__main__.py").read_text()
    assert "from vllm_endpoint.provider import serve" in entry and 'if __name__ == "__main__":' in entry
    assert "-r ../requirements.txt" in (ROOT / "provider" / "requirements.txt").read_text().splitlines()


def test_a_construct_call_from_another_language_builds_the_endpoint(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """What the engine sends when a YAML program declares `type: vllm-endpoint:VllmEndpoint` with
    camelCase properties: the provider maps them to VllmEndpointArgs and returns the outputs."""
    monkeypatch.setenv("HOME", str(tmp_path))
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="apps", stack="prod", preview=False)
    provider = VllmEndpointProvider("1.2.3")
    inputs = {
        "instanceType": "g6.xlarge",
        "gpuMemoryUtilization": 0.85,
        "sshAllowedCidrs": ["93.184.215.14/32"],
        "apiAllowedCidrs": ["93.184.216.0/24"],
        "apiKey": pulumi.Output.secret(API_KEY),
        "hfToken": pulumi.Output.secret(HF_TOKEN),
    }
    state: dict[str, Any] = {}

    @pulumi.runtime.test
    def construct() -> None:
        result = provider.construct("chat", TOKEN, inputs, None)
        state.update(result.state)

    construct()
    instance = mocks.one("aws:ec2/instance:Instance")
    assert instance.inputs["instanceType"] == "g6.xlarge"
    vllm = next(r for r in mocks.of_type("docker:index/container:Container") if r.name == "chat-server-vllm")
    command = vllm.inputs["command"]
    assert command[command.index("--gpu-memory-utilization") + 1] == "0.85"
    assert {"endpointUrl", "apiKey", "model"} <= set(state)
    for resource in mocks.resources:
        for secret in (API_KEY, HF_TOKEN):
            assert not plaintext_occurrences(resource.raw_inputs, secret), (resource.name, secret)

    async def is_secret() -> bool:
        return await state["apiKey"].is_secret()

    assert asyncio.new_event_loop().run_until_complete(is_secret())
