"""The policy pack passes the program's own stacks, and catches the program's unsafe variants.

Every resource the program declares under mocks is handed to every policy the way the engine would
(props over the wire, resource options, the shipped policy config), so a change to the program that
breaks a security property fails here, not at a user's `pulumi up --policy-pack`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pulumi_policy import (
    PolicyResource,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

import vllm_endpoint.infra.catalog.names as names
import vllm_endpoint.infra.catalog.security as security_module
from tests.unit.components.test_components import AWS, EXISTING, LOCAL, Deployed, deploy
from tests.unit.policy import test_policy_pack as pack
from tests.unit.pulumi_mocks import mock_image_id

CONFIG_FILE = Path(__file__).resolve().parents[3] / "policy" / "vllm-endpoint.policy-config.json"
SHIPPED_CONFIG: dict[str, dict[str, Any]] = json.loads(CONFIG_FILE.read_text())


def violations(deployed: Deployed, config: dict[str, dict[str, Any]] | None = None) -> list[str]:
    config = SHIPPED_CONFIG if config is None else config
    found: list[str] = []
    stack: list[PolicyResource] = []
    # Containers reference their image by the RemoteImage's id: rebuild that dependency for the stack (by
    # provider too: two endpoints of a program may pull the same image, each through its own provider).
    remote_images = deployed.mocks.of_type("docker:index/remoteImage:RemoteImage")
    by_name = {r.name: pack.stack_resource(r.typ, r.name, r.inputs) for r in remote_images}
    images = {(r.provider, mock_image_id(r.inputs["name"])): by_name[r.name] for r in remote_images}
    for resource in deployed.mocks.resources:
        props = json.loads(json.dumps(resource.raw_inputs, default=str))
        options = deployed.options.get(resource.name)
        # What each provider SDK declares secret (pulumi-command's `connection`, SSM's `value`, ...).
        secret_outputs = tuple(options.additional_secret_outputs or ()) if options else ()
        if resource.typ == "docker:index/remoteImage:RemoteImage":
            stack.append(by_name[resource.name])
        else:
            image = images.get((resource.provider, str(resource.inputs.get("image"))))
            stack.append(pack.stack_resource(resource.typ, resource.name, props, [image] if image else None))
        for name, policy in pack.POLICIES.items():
            if not isinstance(policy, ResourceValidationPolicy):
                continue
            args = pack.resource_args(resource.typ, props, name=resource.name,
                                      protect=bool(options and options.protect), config=config.get(name, {}),
                                      secret_outputs=secret_outputs)
            found += [f"{name} on {resource.name}: {m}" for m in pack.validate_resource(name, args)]
    for name, policy in pack.POLICIES.items():
        if isinstance(policy, StackValidationPolicy):
            def report(message: str, urn: str | None = None, name: str = name) -> None:
                found.append(f"{name}: {message}")
            policy.validate(StackValidationArgs(stack, config.get(name, {}), {}), report)
    return found


@pytest.mark.parametrize("raw", [
    {**AWS},
    {**AWS, "tls": "self-signed", "metricsAllowedCidrs": "10.0.0.0/8", "hfToken": "hf_" + "x" * 34},
    {**AWS, "alarmEmail": "oncall@example.com", "idleStopMinutes": "60", "capacity": "spot"},
    {**EXISTING},
    {**LOCAL},
], ids=["aws", "aws-tls", "aws-alarms-idle-spot", "existing-host", "local"])
def test_the_programs_own_stacks_pass_every_policy(raw: dict[str, str], tmp_path: Path) -> None:
    deployed = deploy(raw, tmp_path)
    assert violations(deployed) == []


def test_the_shipped_config_only_accepts_the_cloud_init_host_key(tmp_path: Path) -> None:
    deployed = deploy(AWS, tmp_path)
    strict = violations(deployed, config={})
    assert len(strict) == 1 and strict[0].startswith("no-plaintext-credentials on vllm-host-instance")
    assert SHIPPED_CONFIG == {"no-plaintext-credentials": {"allowSshHostKeyInUserData": True}}


def test_world_open_rules_pass_only_with_the_programs_opt_in_marker(tmp_path: Path) -> None:
    deployed = deploy({"sshAllowedCidrs": "0.0.0.0/0", "apiAllowedCidrs": "0.0.0.0/0",
                       "dangerouslyAllowSshFromInternet": "true", "dangerouslyAllowApiFromInternet": "true"},
                      tmp_path)
    assert violations(deployed) == []
    for rule in deployed.mocks.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        rule.raw_inputs["description"] = rule.raw_inputs["description"].split(" (opt-in")[0]
    found = violations(deployed)
    assert any(v.startswith("no-ssh-from-internet") for v in found)
    assert any(v.startswith("no-api-from-internet") for v in found)


def test_an_image_below_the_floor_passes_only_with_opt_in_and_proxy(tmp_path: Path) -> None:
    deployed = deploy({**AWS, "imageTag": "v0.21.0", "allowInsecureImage": "true"}, tmp_path)
    assert violations(deployed) == []
    for container in deployed.mocks.of_type("docker:index/container:Container"):
        container.raw_inputs["labels"] = [label for label in container.raw_inputs["labels"]
                                          if label["label"] != names.INSECURE_IMAGE_OPT_IN_LABEL]
    assert any(v.startswith("vllm-image-floor") for v in violations(deployed))


def test_the_pack_and_the_program_share_markers_and_the_floor() -> None:
    rules = pack.rules
    # The pack reads the program's own names file (it cannot import the package from its venv).
    assert f"{names.OPT_IN_MARKER_PREFIX}{names.SSH_WORLD_OPT_IN}" == rules.SSH_OPT_IN_MARKER
    assert f"{names.OPT_IN_MARKER_PREFIX}{names.API_WORLD_OPT_IN}" == rules.API_OPT_IN_MARKER
    assert (rules.ROLE_LABEL, rules.CACHE_ROLE_VALUE, rules.PROXY_ROLE_VALUE) == (
        names.ROLE_TAG, names.CACHE_ROLE, names.PROXY_ROLE)
    assert (rules.VLLM_VERSION_LABEL, rules.INSECURE_IMAGE_OPT_IN_LABEL) == (
        names.VLLM_VERSION_LABEL, names.INSECURE_IMAGE_OPT_IN_LABEL)
    assert rules.VLLM_SECURITY_FLOOR == security_module.SECURITY_FLOOR
