"""Every setting as Pulumi's project file declares it: the `config:` block of Pulumi.yaml.

tools/gen_docs.py writes the block from these declarations (CI checks it is current), and
infra/settings/pulumi_config.py reads config knowing what the CLI does with them. What the Pulumi CLI does
with a declared project key (pulumi/pulumi pkg/workspace/config.go and sdk/go/common/workspace/project.go):

- A key declared without a `default` is required: `pulumi up` stops with "Stack 'dev' is missing
  configuration value 'x'" (pulumi/pulumi#21797 asks for optional keys). So every setting has a default here,
  and the CLI hands the program that default whenever the stack does not set the key. A setting whose model
  default is "unset" declares `""`, which the reader takes as unset.
- `type` (string, integer, boolean, array with `items`, object) is checked against the stack's value before
  the program runs. Scalars in a stack file reach that check as text, so `integer` accepts "64" and `boolean`
  "true"/"false". There is no number type and no "integer or unset"; a list typed `array` would refuse the
  comma-separated form the README documents. Those settings carry no `type`: the program validates them.
- `secret: true` is checked only on a typed key, and then also against the default of a key the stack does
  not set, so an optional secret cannot be typed. The secrets carry `secret: true` untyped, and the program
  refuses a plaintext value itself (infra/settings/pulumi_config.py).
- Keys the project does not declare are not refused (the CLI stopped checking in v3.45.0).
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from vllm_endpoint.infra.settings.models import setting_fields

UNSET = ""  # the declared default of a setting whose model default is "unset"


@dataclass(frozen=True)
class Declaration:
    key: str
    description: str
    default: Any
    type: Literal["string", "integer", "boolean"] | None = None
    secret: bool = False

    def entry(self) -> dict[str, Any]:
        """The key's entry under Pulumi.yaml's `config:`."""
        entry: dict[str, Any] = {} if self.type is None else {"type": self.type}
        entry["description"] = self.description
        if self.secret:
            entry["secret"] = True
        entry["default"] = self.default
        return entry

    def passed_default(self) -> str:
        """The text the CLI hands the program for this key when the stack does not set it: strings, whole
        numbers and booleans as their text, anything else as JSON."""
        if isinstance(self.default, str):
            return self.default
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, int):
            return str(self.default)
        return json.dumps(self.default, separators=(",", ":"))

    def is_default(self, value: str) -> bool:
        """Whether a value the program received is this key's declared default, i.e. the stack leaves it unset."""
        if value == self.passed_default():
            return True
        if isinstance(self.default, str):
            return False
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return False
        # Same type too: `0` is not the default `false`, nor `1.0` the default `1`.
        return type(parsed) is type(self.default) and parsed == self.default


def _core(annotation: Any) -> tuple[Any, bool]:
    """The annotation without `Annotated` and `None`, and whether None was allowed."""
    optional = False
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) < len(get_args(annotation))
        annotation = args[0] if len(args) == 1 else Union[tuple(args)]  # noqa: UP007
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation, optional


def _model_default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    assert info.default is not PydanticUndefined, "every setting has a default"
    return info.default


def _type(core: Any, optional: bool) -> Literal["string", "integer", "boolean"] | None:
    """The Pulumi type that accepts exactly the forms the setting takes, if there is one."""
    if core is bool:
        return "boolean"
    if core is int:
        return None if optional else "integer"
    if core in (str, Path) or (get_origin(core) is Literal and all(isinstance(a, str) for a in get_args(core))):
        return "string"
    return None


def declare(key: str, info: FieldInfo) -> Declaration:
    core, optional = _core(info.annotation)
    default = _model_default(info)
    if isinstance(default, Path):
        default = str(default)
    return Declaration(
        key=key,
        description=" ".join((info.description or "").split()),
        default=UNSET if default is None else default,
        type=None if core is SecretStr else _type(core, optional),
        secret=core is SecretStr,
    )


def declarations() -> dict[str, Declaration]:
    """Every setting by config key, in the README's order."""
    return {key: declare(key, info) for key, info in setting_fields().items()}
