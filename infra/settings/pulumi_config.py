"""The one place that reads Pulumi config; everything else receives the typed StackConfig.

Kept apart from infra/settings/models.py so that validation is testable without a Pulumi engine, and because
`pulumi.Config` is awkward to mock (pulumi/pulumi#4472).
"""

from __future__ import annotations

import json

import pulumi.runtime.config as pulumi_runtime_config

from vllm_endpoint.infra.settings.models import PROJECT, StackConfig, load_stack_config


def read_stack_config() -> StackConfig:
    prefix = f"{PROJECT}:"
    merged = {**pulumi_runtime_config.get_config_env(), **pulumi_runtime_config.CONFIG.get()}
    raw = {
        key.removeprefix(prefix): value if isinstance(value, str) else json.dumps(value)
        for key, value in merged.items()
        if key.startswith(prefix)
    }
    secret_keys = frozenset(
        key.removeprefix(prefix)
        for key in raw
        if pulumi_runtime_config.is_config_secret(prefix + key)
        or prefix + key in pulumi_runtime_config.get_config_secret_keys_env()
    )
    return load_stack_config(raw, secret_keys)
