"""Typed shorthand for marking values secret (mypy cannot infer `Output.secret` on an `Output[str]`)."""

from __future__ import annotations

import pulumi


def secret(value: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.secret(value)
