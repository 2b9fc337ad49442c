"""The one place that reads Pulumi config; everything else receives the typed StackConfig (or its settings).

Kept apart from infra/settings/models.py so that validation is testable without a Pulumi engine, and because
`pulumi.Config` is awkward to mock (pulumi/pulumi#4472).

Values are read with `pulumi.Config`, one declared setting at a time. Pulumi.yaml declares every setting with a
default (infra/settings/project_config.py says why), so the CLI hands the program every key; a value equal to its
declared default counts as not set (so the other target's settings at their defaults are not "set outside the
target"). Two things `pulumi.Config` cannot tell, and the CLI does not check:
- keys of this project that no setting declares (a misspelt key): the CLI accepts them silently, so their names
  are taken from `pulumi.runtime.get_config_env()`, the config the language host hands the program
  (PULUMI_CONFIG), and each is reported as an unknown setting with the closest name (config given with
  `pulumi.runtime.set_all_config` has no such list: tests of misspelt keys set PULUMI_CONFIG);
- a secret stored in plaintext: the CLI checks `secret: true` only on typed keys, which an optional secret
  cannot be, so the program asks `pulumi.runtime.is_config_secret` (config given with
  `pulumi.runtime.set_all_config`) and `pulumi.runtime.get_config_secret_keys_env()` (PULUMI_CONFIG_SECRET_KEYS,
  how the CLI passes the encrypted keys).
"""

from __future__ import annotations

import os
from typing import Any

import pulumi

from vllm_endpoint.infra.catalog.names import PROJECT
from vllm_endpoint.infra.settings.endpoint_args import settings_kwargs
from vllm_endpoint.infra.settings.models import StackConfig, load_stack_config
from vllm_endpoint.infra.settings.project_config import declarations


def read_stack_config() -> StackConfig:
    """The stack's validated settings; ConfigError lists every problem at once, each naming its setting."""
    raw, secret_keys = _read_raw()
    return load_stack_config(raw, secret_keys)


def read_stack_settings() -> dict[str, Any]:
    """The stack's validated settings as VllmEndpoint's keyword arguments: by field name, plain values
    (`{"target": "aws", "max_num_seqs": 64, "api_key": "..."}`); settings the stack leaves unset are absent."""
    return settings_kwargs(read_stack_config())


def _read_raw() -> tuple[dict[str, str], frozenset[str]]:
    config = pulumi.Config(PROJECT)
    declared = declarations()
    raw: dict[str, str] = {}
    for key, declaration in declared.items():
        value = config.get(key)
        if value is not None and not declaration.is_default(value):
            raw[key] = value
    prefix = f"{PROJECT}:"
    for full_key, value in pulumi.runtime.get_config_env().items():
        key = full_key.removeprefix(prefix)
        if full_key.startswith(prefix) and key not in declared:
            raw[key] = str(value)
    encrypted = set(pulumi.runtime.get_config_secret_keys_env())
    secret_keys = frozenset(
        key for key in raw if pulumi.runtime.is_config_secret(prefix + key) or prefix + key in encrypted
    )
    return raw, secret_keys


def read_aws_region() -> str | None:
    """The stack's AWS region (`aws:region`, else the AWS_REGION/AWS_DEFAULT_REGION the provider falls back
    to), for the plan's prices; None when neither says."""
    return (pulumi.Config("aws").get("region") or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION") or None)
