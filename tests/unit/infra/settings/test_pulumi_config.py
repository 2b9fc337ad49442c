"""infra/settings/pulumi_config.py read through Pulumi's public test hooks: `pulumi.runtime.set_all_config`, and
the PULUMI_CONFIG / PULUMI_CONFIG_SECRET_KEYS variables the CLI's Python language host sets for the program
(with every declared key present: the CLI adds Pulumi.yaml's default for each key a stack does not set)."""

from __future__ import annotations

import ast
import json
from collections.abc import Collection, Iterator
from pathlib import Path

import pulumi
import pytest
import yaml

from vllm_endpoint.infra.catalog.names import PROJECT
from vllm_endpoint.infra.settings import pulumi_config
from vllm_endpoint.infra.settings.endpoint_args import load_endpoint_settings
from vllm_endpoint.infra.settings.models import ConfigError, load_stack_config
from vllm_endpoint.infra.settings.project_config import declarations
from vllm_endpoint.infra.settings.pulumi_config import read_stack_config, read_stack_settings

ROOT = Path(__file__).resolve().parents[4]
P = f"{PROJECT}:"
API_KEY = "k" * 40
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n"
AWS = {"sshAllowedCidrs": '["93.184.215.14/32"]', "apiAllowedCidrs": "93.184.216.0/24"}


@pytest.fixture(autouse=True)
def no_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Config given with set_all_config stays in the test process's context; clear it both ways.
    pulumi.runtime.set_all_config({}, [])
    monkeypatch.delenv("PULUMI_CONFIG", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_SECRET_KEYS", raising=False)
    yield
    pulumi.runtime.set_all_config({}, [])


def as_the_cli_runs(monkeypatch: pytest.MonkeyPatch, stack: dict[str, str], secret: Collection[str] = (),
                    other: dict[str, str] | None = None) -> None:
    """The environment the CLI gives the program for a stack setting `stack` (keys without the project prefix)."""
    passed = {P + key: d.passed_default() for key, d in declarations().items()}
    passed |= {P + key: value for key, value in stack.items()} | (other or {})
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(passed))
    monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", json.dumps(sorted(P + key for key in secret)))


def set_all(stack: dict[str, str], secret: Collection[str] = ()) -> None:
    pulumi.runtime.set_all_config({P + k: v for k, v in stack.items()}, [P + k for k in secret])


def problems_of() -> list[str]:
    with pytest.raises(ConfigError) as info:
        read_stack_config()
    return info.value.problems


def stack_file(name: str) -> dict[str, str]:
    """A shipped stack's settings as the CLI passes them: text, lists and maps as JSON."""
    values = yaml.safe_load((ROOT / f"Pulumi.{name}.yaml").read_text())["config"]
    return {k.removeprefix(P): v if isinstance(v, str) else json.dumps(v) for k, v in values.items() if k.startswith(P)}


def test_values_given_with_set_all_config_are_read_and_typed() -> None:
    set_all({**AWS, "maxNumSeqs": "64", "trustRemoteCode": "true", "modelRevision": "abc", "apiKey": API_KEY},
            {"apiKey"})
    cfg = read_stack_config()
    assert cfg.server.max_num_seqs == 64 and cfg.server.trust_remote_code is True
    assert cfg.secrets.api_key is not None and cfg.secrets.api_key.get_secret_value() == API_KEY


@pytest.mark.parametrize("stack, user_set, secret", [
    ("dev", AWS, {}),  # the addresses the stack file asks the user to set
    ("shared-gpu", {}, {"sshPrivateKey": PRIVATE_KEY}),
])
def test_with_the_clis_declared_defaults_a_stack_reads_as_its_own_settings(
        stack: str, user_set: dict[str, str], secret: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = {**stack_file(stack), **user_set, **secret}
    as_the_cli_runs(monkeypatch, settings, set(secret), other={"aws:region": "us-east-1"})
    assert read_stack_config() == load_stack_config(settings, frozenset(secret))


def test_a_setting_of_the_other_target_is_still_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    as_the_cli_runs(monkeypatch, {**AWS, "hostSshPort": "2222"})
    assert problems_of() == ["hostSshPort: has no effect with target=aws; remove it"]


def test_an_undeclared_key_is_an_unknown_setting_with_the_closest_name(monkeypatch: pytest.MonkeyPatch) -> None:
    as_the_cli_runs(monkeypatch, {**AWS, "maxNumSeq": "64"}, other={"aws:region": "us-east-1", "other:x": "1"})
    assert problems_of() == ["maxNumSeq: unknown setting; did you mean 'maxNumSeqs'?"]


def test_a_plaintext_secret_is_refused_through_either_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = ["apiKey: is stored in plaintext in the stack file; remove it and run "
                "`pulumi config set --secret apiKey <value>`"]
    set_all({**AWS, "apiKey": API_KEY})
    assert problems_of() == expected
    set_all({**AWS, "apiKey": API_KEY}, {"apiKey"})
    assert read_stack_config().secrets.api_key is not None

    pulumi.runtime.set_all_config({}, [])
    as_the_cli_runs(monkeypatch, {**AWS, "apiKey": API_KEY})
    assert problems_of() == expected
    as_the_cli_runs(monkeypatch, {**AWS, "apiKey": API_KEY}, {"apiKey"})
    assert read_stack_config().secrets.api_key is not None


def test_an_unset_secret_is_not_a_plaintext_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI passes Pulumi.yaml's empty default, unencrypted, for secrets the stack does not set.
    as_the_cli_runs(monkeypatch, AWS)
    cfg = read_stack_config()
    assert cfg.secrets.api_key is None and cfg.secrets.hf_token is None and cfg.secrets.ssh_private_key is None


def test_every_problem_is_reported_at_once_with_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    as_the_cli_runs(monkeypatch, {**AWS, "maxNumSeqs": "0", "hfToken": "hf_abc", "imageTagg": "v1", "tls": "on"})
    found = problems_of()
    assert sorted(line.split(":")[0] for line in found) == ["hfToken", "imageTagg", "maxNumSeqs", "tls"]
    assert not any("hf_abc" in line for line in found)


def test_settings_are_keyword_arguments_that_validate_to_the_same_config(
        monkeypatch: pytest.MonkeyPatch) -> None:
    as_the_cli_runs(monkeypatch, {**AWS, "maxNumSeqs": "64", "gpus": "0,1", "tags": '{"team": "ml"}',
                                  "apiKey": API_KEY}, {"apiKey"})
    settings = read_stack_settings()
    assert set(settings) == {"target", "ssh_allowed_cidrs", "api_allowed_cidrs", "max_num_seqs", "gpus", "tags",
                             "api_key"}
    assert settings["target"] == "aws" and settings["max_num_seqs"] == 64 and settings["gpus"] == ["0", "1"]
    assert settings["api_key"] == API_KEY
    assert load_endpoint_settings(settings) == read_stack_config()


def test_target_is_a_setting_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = {**stack_file("shared-gpu"), "sshPrivateKey": PRIVATE_KEY}
    as_the_cli_runs(monkeypatch, settings, {"sshPrivateKey"})
    assert read_stack_settings()["target"] == "existing-host"


def test_the_reader_uses_only_pulumi_config_and_exported_runtime_functions() -> None:
    tree = ast.parse(Path(pulumi_config.__file__).read_text())
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "pulumi" \
                and node.value.attr == "runtime":
            used.add(node.attr)
    assert used and used <= set(pulumi.runtime.__all__) - {"set_config", "set_all_config", "get_config"}
    pulumi_imports = {alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names
                      if alias.name.startswith("pulumi")}
    pulumi_imports |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                       if (n.module or "").startswith("pulumi")}
    assert pulumi_imports == {"pulumi"}
