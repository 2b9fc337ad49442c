"""VllmEndpoint's keyword arguments: every stack setting by its snake_case field name, validated by the
same models and with the same messages as the stack config (each names the camelCase setting).

    VllmEndpoint("chat", VllmEndpointArgs(model="Qwen/Qwen2.5-7B-Instruct", gpus=["1"], ...))

Some settings may be Pulumi Outputs of other resources (INPUT_SETTINGS: a subnet, a host's address, a
generated key, a VPC's CIDR block). Their values are unknown when the plan is made, so nothing that decides
which resources exist may depend on them, only on whether they are given. They are checked twice: at
construction with a stand-in that passes every check of the setting on its own (so the checks between
settings - "required on AWS", "set at most one of" - still run), and when the Output resolves, with the
real value (`check_resolved`), by the same models. The stand-ins never reach a resource: the component
takes these settings' values from the Outputs (tests/unit/components checks every resource input).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import SecretStr

from vllm_endpoint.infra.settings.models import (
    PROGRAM_SECTIONS,
    SECTIONS,
    TOP_LEVEL_KEYS,
    ConfigError,
    StackConfig,
    unknown_setting,
    validate_settings,
)

# Settings that may be Outputs (pulumi.Input in VllmEndpointArgs), with their stand-ins.
_STAND_INS: Final[dict[str, Any]] = {
    "subnet_id": "subnet-00000000",
    "kms_key_id": "arn:aws:kms:us-east-1:000000000000:key/stand-in",
    "ssh_public_key": "ssh-ed25519 AAAAstandin",
    # Private, not documentation, ranges: the settings refuse addresses nobody connects from.
    "api_allowed_cidrs": ["10.255.0.0/16"],
    "ssh_allowed_cidrs": ["10.255.0.0/16"],
    "host_address": "stand-in.invalid",
    "host_public_key": "ssh-ed25519 AAAAstandin",
    "api_key": "stand-in-" + "0" * 40,
    "hf_token": "stand-in",
    "ssh_private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nstand-in\n-----END OPENSSH PRIVATE KEY-----\n",
}
INPUT_SETTINGS: Final = frozenset(_STAND_INS)
SECRET_SETTINGS: Final = frozenset({"api_key", "hf_token", "ssh_private_key"})

# Keys of VllmEndpointArgs that are not stack settings, with their documentation.
COMPONENT_KEYS: Final[dict[str, str]] = {
    "ssh_dir": "Folder on the deploying machine for the SSH key and known_hosts files pulumi-docker's `ssh` "
    "reads; they are written at every deploy from the stack's state. Default: "
    "~/.ssh/vllm-endpoint/<project>-<stack>/<endpoint name>.",
}


def setting_keys() -> dict[str, str]:
    """Every setting's keyword (field name) -> its config key."""
    keys = {key: key for key in TOP_LEVEL_KEYS}
    for section, model in SECTIONS.items():
        if section in PROGRAM_SECTIONS:
            continue
        for name, info in model.model_fields.items():
            keys[name] = info.alias or name
    return keys


def load_endpoint_settings(kwargs: Mapping[str, Any], deferred: Collection[str] = ()) -> StackConfig:
    """Validate keyword arguments (component keys left out); the settings named in `deferred` are Outputs
    and are checked with their stand-ins. None means "not set". Raises ConfigError listing every problem."""
    keys = setting_keys()
    problems: list[str] = []
    values: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name not in keys:
            problems.append(unknown_setting(name, [*keys, *COMPONENT_KEYS]))
        elif name in deferred and name not in INPUT_SETTINGS:
            problems.append(
                f"{keys[name]}: cannot be a Pulumi Output: the plan needs its value before any resource exists; "
                f"pass a plain value (Outputs are taken for {', '.join(sorted(INPUT_SETTINGS))})"
            )
        elif name in deferred:
            values[keys[name]] = _STAND_INS[name]
        elif value is not None:
            values[keys[name]] = value
    return validate_settings(values, problems)


def check_resolved(name: str, value: Any, kwargs: Mapping[str, Any], deferred: Collection[str]) -> Any:
    """The validated value of the Output setting `name` once it resolved to `value`, checked with the other
    settings as at construction (the other Outputs still by their stand-ins). Raises ConfigError with the
    message a plain value would have had."""
    if value is None:
        key = setting_keys().get(name, name)
        raise ConfigError([f"{key}: the Output given for {name} resolved to no value; pass a value or leave "
                           f"{name} out"])
    cfg = load_endpoint_settings({**kwargs, name: value}, deferred=[d for d in deferred if d != name])
    return setting_value(cfg, name)


def setting_value(cfg: StackConfig, name: str) -> Any:
    """A setting's validated value as plain Python: secrets as text, lists as lists."""
    if name in TOP_LEVEL_KEYS:
        return getattr(cfg, name)
    for section, model in SECTIONS.items():
        if name in model.model_fields:
            return _plain(getattr(getattr(cfg, section), name))
    raise KeyError(name)


def settings_kwargs(cfg: StackConfig) -> dict[str, Any]:
    """The keyword arguments that make `cfg` again: the settings it was given, as plain values."""
    kwargs: dict[str, Any] = {key: getattr(cfg, key) for key in TOP_LEVEL_KEYS}
    for section in SECTIONS:
        if section in PROGRAM_SECTIONS:
            continue  # the program's own (the endpoint's name), not VllmEndpoint's
        current = getattr(cfg, section)
        for name in sorted(current.model_fields_set):
            kwargs[name] = _plain(getattr(current, name))
    return kwargs


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value
