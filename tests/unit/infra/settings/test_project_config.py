"""Pulumi.yaml's `config:` block: every setting declared the way the Pulumi CLI needs, and the shipped stacks
pass the checks the CLI makes against it (its rules as read in pulumi/pulumi pkg/workspace/config.go and
sdk/go/common/workspace/project.go, restated here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from vllm_endpoint.infra.catalog.names import PROJECT
from vllm_endpoint.infra.settings.models import config_keys, load_stack_config
from vllm_endpoint.infra.settings.project_config import UNSET, Declaration, declarations

ROOT = Path(__file__).resolve().parents[4]
PULUMI_TYPES = {"string", "integer", "boolean", "array", "object"}
STACKS = sorted(p.name for p in ROOT.glob("Pulumi.*.yaml"))
AWS = {"sshAllowedCidrs": "93.184.215.14/32", "apiAllowedCidrs": "93.184.216.0/24"}
FLEET = {"replicas": "2", "apiAllowedCidrs": "93.184.216.0/24"}
EXISTING = {
    "target": "existing-host", "hostAddress": "gpu-box.internal", "hostSshUser": "deploy",
    "hostPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm5xk0pJl1ZkZ4bH2v0b3dJq5s0aQy7Ff2k0Vd7J8yO",
    "sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n",
}


def project_config() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"])


def as_the_cli_sees(value: Any) -> Any:
    """A stack file's top-level scalars reach the CLI's type check as text; lists and maps as structures."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def cli_accepts(type_: str, value: Any) -> bool:
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value) is not None)
    if type_ == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    raise AssertionError(f"no rule for {type_}")


def test_pulumi_yaml_declares_every_setting_as_generated() -> None:
    declared = project_config()
    assert list(declared) == ["target", *config_keys()]
    assert declared == {key: d.entry() for key, d in declarations().items()}


def test_every_declaration_has_a_default_so_no_setting_is_required_by_the_cli() -> None:
    # A project key declared without `default` (or `value`) must be set in every stack.
    assert all("default" in entry for entry in project_config().values())


def test_types_and_defaults_follow_the_clis_rules() -> None:
    for key, entry in project_config().items():
        assert set(entry) <= {"type", "description", "default", "secret"}, key
        assert entry["description"], key
        if "type" in entry:
            assert entry["type"] in PULUMI_TYPES, key
            # The CLI refuses a project file whose typed default is not of the type.
            assert cli_accepts(entry["type"], entry["default"]), key


def test_secrets_are_marked_secret_and_untyped() -> None:
    entries = project_config()
    secrets = {key for key, entry in entries.items() if entry.get("secret")}
    assert secrets == {"apiKey", "hfToken", "sshPrivateKey"}
    # Typed, a secret key would be required (no default) or always refused (its plaintext default).
    assert all("type" not in entries[key] and entries[key]["default"] == UNSET for key in secrets)


@pytest.mark.parametrize("key, type_, default", [
    ("target", "string", "aws"), ("hostSshPort", "integer", 22), ("trustRemoteCode", "boolean", False),
    ("modelRevision", "string", UNSET), ("modelPath", "string", UNSET),
    # Pulumi has no number type, no "integer or unset", and an array type would refuse "a,b".
    ("gpuMemoryUtilization", None, 0.9), ("maxNumSeqs", None, UNSET), ("sshAllowedCidrs", None, []),
    ("gpus", None, "all"), ("tags", None, {}), ("modelArchitecture", None, UNSET),
])
def test_declared_type_and_default(key: str, type_: str | None, default: Any) -> None:
    entry = project_config()[key]
    assert entry.get("type") == type_
    assert entry["default"] == default and type(entry["default"]) is type(default)


def test_each_declared_default_as_the_cli_passes_it_loads_as_the_models_default() -> None:
    keys = config_keys()
    bases = {"aws": AWS, "fleet": FLEET, "existing_host": EXISTING, "local": {"target": "local"}}
    checked = 0
    for key, declaration in declarations().items():
        if declaration.default == UNSET or key in AWS or key in EXISTING or key in FLEET:
            continue
        base = bases.get(keys[key][0], AWS) if key in keys else AWS
        with_default = load_stack_config({**base, key: declaration.passed_default()})
        assert with_default == load_stack_config(base), key
        checked += 1
    assert checked > 30


@pytest.mark.parametrize("declaration, passed, unset", [
    (Declaration("a", "", 22, "integer"), "22", True),
    (Declaration("a", "", 22, "integer"), "23", False),
    (Declaration("a", "", False, "boolean"), "false", True),
    (Declaration("a", "", False, "boolean"), "0", False),
    (Declaration("a", "", 22, "integer"), "22.0", False),
    (Declaration("a", "", 0.9), "0.9", True),
    (Declaration("a", "", 0.9), "0.90", True),
    (Declaration("a", "", 0.9), "0.7", False),
    (Declaration("a", "", []), "[]", True),
    (Declaration("a", "", []), '["10.0.0.0/8"]', False),
    (Declaration("a", "", {}), "{}", True),
    (Declaration("a", "", UNSET), "", True),
    (Declaration("a", "", UNSET), "abc", False),
    (Declaration("a", "", "all"), "all", True),
    (Declaration("a", "", "1"), "1", True),
])
def test_a_value_equal_to_the_declared_default_counts_as_unset(declaration: Declaration, passed: str,
                                                                 unset: bool) -> None:
    assert declaration.is_default(passed) is unset


@pytest.mark.parametrize("stack", STACKS)
def test_shipped_stacks_pass_the_clis_checks_of_the_declared_config(stack: str) -> None:
    declared = project_config()
    values = yaml.safe_load((ROOT / stack).read_text())["config"]
    prefix = f"{PROJECT}:"
    for full_key, value in values.items():
        if not full_key.startswith(prefix):
            continue
        key = full_key.removeprefix(prefix)
        assert key in declared, f"{stack}: {key} is not a setting"
        entry = declared[key]
        if "type" in entry:
            assert cli_accepts(entry["type"], as_the_cli_sees(value)), f"{stack}: {key}={value!r}"
        if entry.get("secret"):
            assert isinstance(value, dict) and "secure" in value, f"{stack}: {key} is not encrypted"


def test_the_cli_check_mirror_refuses_what_the_cli_refuses() -> None:
    assert not cli_accepts("integer", "sixteen") and not cli_accepts("integer", "1.5")
    assert not cli_accepts("boolean", "yes") and not cli_accepts("string", ["1"])
    assert cli_accepts("integer", as_the_cli_sees(16)) and cli_accepts("string", as_the_cli_sees(0.7))
