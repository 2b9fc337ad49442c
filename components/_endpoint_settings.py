"""A VllmEndpoint's keyword arguments turned into what it builds from: the deployment plan, and the
settings that may be Outputs of other resources, each validated (plain values at construction, Outputs
when they resolve; see infra/settings/endpoint_args.py).

The plan is made from plain values only; of an Output setting it knows only that it is given. The
component takes those settings' values from `SettingInputs`, never from the plan's config (which holds
stand-ins for them).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi

from vllm_endpoint.components._claims import HostClaim, claim_endpoint_name, claim_host
from vllm_endpoint.components._support import secret
from vllm_endpoint.infra.catalog.names import LOCAL_API_ADDRESS
from vllm_endpoint.infra.plan.deployment import DeploymentPlan, build_plan
from vllm_endpoint.infra.plan.naming import name_problems
from vllm_endpoint.infra.settings.endpoint_args import (
    COMPONENT_KEYS,
    INPUT_SETTINGS,
    SECRET_SETTINGS,
    check_resolved,
    load_endpoint_settings,
    setting_value,
)
from vllm_endpoint.infra.settings.models import ConfigError
from vllm_endpoint.infra.settings.pulumi_config import read_aws_region


@dataclass(frozen=True)
class SettingInputs:
    """The settings that may be Outputs, validated: plain values, or Outputs that fail when they resolve
    to a bad value. Secrets are secret Outputs."""

    subnet_id: pulumi.Input[str] | None
    kms_key_id: pulumi.Input[str] | None
    ssh_public_key: pulumi.Input[str] | None
    api_allowed_cidrs: Sequence[str] | pulumi.Output[Sequence[str]]
    ssh_allowed_cidrs: Sequence[str] | pulumi.Output[Sequence[str]]
    host_address: pulumi.Input[str] | None
    host_public_key: pulumi.Input[str] | None
    api_key: pulumi.Output[str] | None
    hf_token: pulumi.Output[str] | None
    ssh_private_key: pulumi.Output[str] | None


@dataclass(frozen=True)
class EndpointSettings:
    plan: DeploymentPlan
    inputs: SettingInputs
    ssh_dir: str


def load_settings(name: str, args: Mapping[str, Any]) -> EndpointSettings:
    """Every check (settings, plan, the endpoint's name and what it puts on a plain-address host) before
    any resource exists; raises ConfigError listing the problems."""
    kwargs = {key: value for key, value in args.items() if key not in COMPONENT_KEYS}
    outputs = {key: pulumi.Output.from_input(value) for key, value in kwargs.items() if _holds_output(value)}
    ssh_dir = args.get("ssh_dir")
    own_problems = name_problems(name)
    if ssh_dir is not None and not isinstance(ssh_dir, str | Path):
        own_problems.append("ssh_dir: must be a folder path on the deploying machine (a plain string)")
    try:
        cfg = load_endpoint_settings(kwargs, deferred=outputs)
    except ConfigError as err:
        raise ConfigError([*own_problems, *err.problems]) from None
    if own_problems:
        raise ConfigError(own_problems)
    plan = build_plan(cfg, name, region=read_aws_region())
    claim_endpoint_name(name)

    values: dict[str, Any] = {}
    for key in INPUT_SETTINGS:
        if key in outputs:
            values[key] = outputs[key].apply(_checker(key, kwargs, tuple(outputs)))
        else:
            values[key] = setting_value(cfg, key)
        if key in SECRET_SETTINGS and values[key] is not None:
            values[key] = secret(values[key])
    if cfg.target != "aws":
        claim = HostClaim(endpoint=name, api_port=plan.api_port, containers=plan.names.containers,
                          network=plan.network, folder=plan.host_cache_dir)
        if cfg.target == "local":
            # Every local endpoint of a program shares this machine's engine.
            _claimed(LOCAL_API_ADDRESS, claim)
        else:
            values["host_address"] = _claimed(values["host_address"], claim)
    if ssh_dir is None:
        ssh_dir = plan.names.ssh_dir(Path.home(), pulumi.get_project(), pulumi.get_stack())
    return EndpointSettings(plan, SettingInputs(**values), str(ssh_dir))


def _checker(key: str, kwargs: Mapping[str, Any], deferred: tuple[str, ...]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        return check_resolved(key, value, kwargs, deferred)

    return check


def _claimed(address: pulumi.Input[str], claim: HostClaim) -> pulumi.Input[str]:
    """The host address, once `claim` is recorded for it: now for a plain address, when it resolves for
    an Output (an Output that fails then, naming both endpoints)."""
    if isinstance(address, pulumi.Output):
        def record(value: str) -> str:
            claim_host(value, claim)
            return value

        return address.apply(record)
    assert isinstance(address, str)  # required with target=existing-host, checked by the settings
    claim_host(address, claim)
    return address


def _holds_output(value: Any) -> bool:
    if isinstance(value, pulumi.Output) or inspect.isawaitable(value):
        return True
    if isinstance(value, list | tuple):
        return any(_holds_output(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_output(item) for item in value.values())
    return False
