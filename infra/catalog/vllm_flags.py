"""Which `vllm/vllm-openai` server flags exist in which vLLM release, and a pre-deploy checker.

A flag that the image's vLLM no longer accepts makes the container exit with "unrecognized
arguments" and restart forever; the user learns it ten minutes into a deploy. `check_server_args`
turns that into an error before anything is created, and `flag_available` lets the renderer emit a
flag only where it exists.

The table is data/vllm-flags.yaml, loaded and validated once at import; the file says how it was
made (every `vllm` release on PyPI from 0.3.3 to 0.33.0 read from its wheel, so each "since"/"until"
is the first release that shows the change, not an estimate) and cites each flag's source as
"wheel X: path". `tools/vllm_flag_table.py --check` re-verifies it against the real parser of the
installed vLLM (0.32.0, the CPU build). Where a fact was not verified the entry says so.

Limits, stated once:
- Facts for releases newer than `NEWEST_EXAMINED` are extrapolated from it (open-ended spans).
- Releases older than `OLDEST_EXAMINED` are not covered: `check_server_args` reports that.
- Value validation is only done where the table states a type, choices or bounds; `--quantization`
  and `--load-format` values are not validated (their choices change with almost every release).
- The complete option list exists only for `infra/catalog/names.py DEFAULT_VLLM_VERSION` (from the CPU build
  of that version; the CUDA image's parser is built by the same code, but that was not run here).

Imports nothing that pulls in Pulumi: tools/vllm_flag_table.py imports it in the vLLM venv.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import BaseModel, Field, PlainValidator, field_validator, model_validator
from pydantic.dataclasses import dataclass as entry_dataclass

from vllm_endpoint.infra.catalog.data_files import (
    STRICT,
    STRICT_ENTRY,
    DataFile,
    data_path,
    load_data_file,
    unique_names,
)

__all__ = [
    "EXAMINED_RELEASES",
    "FLAGS",
    "NEWEST_EXAMINED",
    "OLDEST_EXAMINED",
    "SERVE_ENTRYPOINT_SINCE",
    "VLLM_FLAGS_FILE",
    "Alias",
    "Arity",
    "FlagSpec",
    "Form",
    "ImageEntrypoints",
    "Kind",
    "Note",
    "ValueType",
    "VllmFlagsFile",
    "VllmVersion",
    "check_server_args",
    "complete_flag_list",
    "complete_flag_list_path",
    "flag_available",
    "flag_spec",
    "image_entrypoint",
    "model_is_positional",
    "render_markdown",
    "runs_several_api_servers",
]

VLLM_FLAGS_FILE: Final = data_path("vllm-flags.yaml")


# --------------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------------

_VERSION_RE = re.compile(r"v?(?P<release>\d+(?:\.\d+){2,3})(?:\.post(?P<post>\d+))?")


@dataclass(frozen=True, order=True)
class VllmVersion:
    """A released vLLM version: 0.4.2, 0.10.1.1, 0.8.5.post1 (image tags add a leading `v`)."""

    release: tuple[int, ...]
    post: int = 0

    def __post_init__(self) -> None:
        # 0.10.1 and 0.10.1.0 must compare equal, so a fourth component of 0 is dropped.
        release = self.release
        while len(release) > 3 and release[-1] == 0:
            release = release[:-1]
        object.__setattr__(self, "release", release)

    @classmethod
    def parse(cls, text: str) -> VllmVersion:
        """Parse `0.32.0`, `v0.32.0`, `v0.8.5.post1`, `0.10.1.1`.

        Anything else (`latest`, `nightly`, `0.32`, release candidates, dev builds) is a ValueError:
        the table is keyed by released versions, and a floating tag says nothing about the flags.
        """
        match = _VERSION_RE.fullmatch(text.strip())
        if match is None:
            raise ValueError(
                f"{text!r} is not a released vLLM version: expected e.g. 0.32.0, v0.32.0 or v0.8.5.post1 "
                "(floating tags such as 'latest' or 'nightly' and pre-releases cannot be checked)"
            )
        release = tuple(int(part) for part in match["release"].split("."))
        return cls(release, int(match["post"] or 0))

    def __str__(self) -> str:
        text = ".".join(str(part) for part in self.release)
        return f"{text}.post{self.post}" if self.post else text


def _version(value: Any) -> VllmVersion:
    """A release in the data file: text, so that YAML cannot read `0.10` as the number 0.1."""
    if isinstance(value, VllmVersion):
        return value
    if isinstance(value, str):
        return VllmVersion.parse(value)
    raise ValueError(f"write the release as text such as 0.32.0, not {value!r}")


Version = Annotated[VllmVersion, PlainValidator(_version)]


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------


class Kind(enum.Enum):
    """How argparse consumes the flag in a span of releases."""

    VALUE = "value"  # exactly one value
    VALUES = "values"  # nargs="+": one or more values
    SWITCH = "switch"  # action="store_true": no value, no --no- form
    BOOL_OPTIONAL = "bool-optional"  # argparse.BooleanOptionalAction: --x / --no-x, no value
    OPTIONAL_BOOL_VALUE = "optional-bool-value"  # vLLM's StoreBoolean, nargs="?": --x [true|false]
    BOOL_TYPED_VALUE = "bool-typed-value"  # type=bool: needs a value, any non-empty text is True


class ValueType(enum.Enum):
    STR = "str"
    INT = "int"
    OPTIONAL_INT = "int-or-None"  # vLLM's optional_type(int): an int, or the text `None`
    FLOAT = "float"
    HUMAN_INT = "human-int"  # vLLM's human_readable_int: 2048, 2k, 2K, 1.5m
    HUMAN_INT_OR_AUTO = "human-int-or-auto"  # as above, or -1 / auto


_TAKES_VALUE = {Kind.VALUE, Kind.VALUES, Kind.BOOL_TYPED_VALUE}


@entry_dataclass(frozen=True, config=STRICT_ENTRY)
class Form:
    """What the flag is in the releases `since` (inclusive) up to `until` (exclusive, None = still)."""

    since: Version
    kind: Kind
    until: Version | None = None
    value_type: ValueType = ValueType.STR
    # Text forms of the values the parser (or, where noted, the engine config) accepts.
    choices: tuple[str, ...] | None = None
    # str() of the parser default; None when the table does not state it.
    default: str | None = None
    # Bounds the value must satisfy (value > gt, value <= le).
    gt: float | None = None
    le: float | None = None

    def covers(self, version: VllmVersion) -> bool:
        return self.since <= version and (self.until is None or version < self.until)


@entry_dataclass(frozen=True, config=STRICT_ENTRY)
class Alias:
    """Another option string for the same flag (e.g. `-tp`), present from `since` to `until`."""

    option: str
    since: Version
    until: Version | None = None

    def covers(self, version: VllmVersion) -> bool:
        return self.since <= version and (self.until is None or version < self.until)


@entry_dataclass(frozen=True, config=STRICT_ENTRY)
class Note:
    """A behaviour or default change from `since` on, with where it was read."""

    since: Version
    text: str


@entry_dataclass(frozen=True, config=STRICT_ENTRY)
class FlagSpec:
    """One server flag across releases.

    `forms` are contiguous and ordered: the first one's `since` is the release that added the flag
    (or OLDEST_EXAMINED when it was already there), the last one's `until` the release that removed it.
    """

    name: str
    summary: str
    forms: tuple[Form, ...]
    source: str
    aliases: tuple[Alias, ...] = ()
    # What to do instead once the flag is gone (used in the error text).
    replacement: str | None = None
    renamed_to: str | None = None
    renamed_in: Version | None = None
    deprecated_since: Version | None = None
    notes: tuple[Note, ...] = ()

    def __post_init__(self) -> None:
        if not self.forms:
            raise ValueError("forms: a flag has at least one")
        # A gap or overlap between spans would make form_at answer "absent" or the wrong form.
        for before, after in zip(self.forms, self.forms[1:], strict=False):
            if before.until != after.since:
                raise ValueError(f"forms: one ends at {before.until}, the next starts at {after.since}")
        if self.removed is not None and not self.replacement:
            raise ValueError("a removed flag needs `replacement`: the error message's advice")

    @property
    def added(self) -> VllmVersion:
        return self.forms[0].since

    @property
    def removed(self) -> VllmVersion | None:
        return self.forms[-1].until

    def form_at(self, version: VllmVersion) -> Form | None:
        for form in self.forms:
            if form.covers(version):
                return form
        return None

    @property
    def negation(self) -> str:
        return "--no-" + self.name[2:]


class ImageEntrypoints(BaseModel):
    """The ENTRYPOINT of `vllm/vllm-openai:v<version>`: `api_server` before `serve_since`, then `serve`."""

    model_config = STRICT

    api_server: tuple[str, ...] = Field(min_length=1)
    serve: tuple[str, ...] = Field(min_length=1)
    serve_since: Version


class VllmFlagsFile(DataFile):
    examined_releases: tuple[Version, ...] = Field(min_length=1)
    image_entrypoint: ImageEntrypoints
    # `FlexibleArgumentParser` rewrites `--max_num_seqs` to `--max-num-seqs` from this release on.
    underscores_accepted_since: Version
    flags: tuple[FlagSpec, ...] = Field(min_length=1)

    _unique = field_validator("flags")(unique_names)

    @field_validator("examined_releases")
    @classmethod
    def _ascending(cls, releases: tuple[VllmVersion, ...]) -> tuple[VllmVersion, ...]:
        # OLDEST_EXAMINED / NEWEST_EXAMINED are the first and the last.
        if list(releases) != sorted(set(releases)):
            raise ValueError("list each release once, oldest first")
        return releases

    @model_validator(mode="after")
    def _renames_point_at_flags(self) -> VllmFlagsFile:
        names = {spec.name for spec in self.flags}
        for spec in self.flags:
            if spec.renamed_to is not None and spec.renamed_to not in names:
                raise ValueError(f"{spec.name}: renamed_to {spec.renamed_to} is not a flag of the table")
        return self


_DATA: Final = load_data_file(VllmFlagsFile, VLLM_FLAGS_FILE)

EXAMINED_RELEASES: tuple[VllmVersion, ...] = _DATA.examined_releases
OLDEST_EXAMINED = EXAMINED_RELEASES[0]
NEWEST_EXAMINED = EXAMINED_RELEASES[-1]
SERVE_ENTRYPOINT_SINCE = _DATA.image_entrypoint.serve_since
_API_SERVER_ENTRYPOINT = _DATA.image_entrypoint.api_server
_SERVE_ENTRYPOINT = _DATA.image_entrypoint.serve
_UNDERSCORES_ACCEPTED_SINCE = _DATA.underscores_accepted_since
FLAGS: tuple[FlagSpec, ...] = _DATA.flags


def image_entrypoint(version: VllmVersion) -> tuple[str, ...]:
    """The ENTRYPOINT of `vllm/vllm-openai:v<version>` (see vllm-flags.yaml for the sources)."""
    return _SERVE_ENTRYPOINT if version >= SERVE_ENTRYPOINT_SINCE else _API_SERVER_ENTRYPOINT


def model_is_positional(version: VllmVersion) -> bool:
    """Whether the image takes the model as its first, positional argument (`vllm serve MODEL`).

    The api_server module the older images run has no positional model: it needs `--model X`.
    `vllm serve` still accepts `--model X` (it moves it to the positional argument), but warns that the
    option will be removed (the table's `--model` entry records the deprecation), so the model is given
    positionally wherever the entrypoint is `vllm serve`, and a release that removes `--model` changes
    nothing the product renders.
    """
    return image_entrypoint(version) == _SERVE_ENTRYPOINT


def runs_several_api_servers(version: VllmVersion) -> bool:
    """Whether `--api-server-count N` starts N API server processes in the image of `version`.

    The api_server module of the 0.10.0-0.11.0 images accepts the flag but ignores it; only `vllm serve`
    (the entrypoint from SERVE_ENTRYPOINT_SINCE) runs several servers.
    """
    return image_entrypoint(version) == _SERVE_ENTRYPOINT and flag_available("--api-server-count", version)


@cache
def _index() -> dict[str, FlagSpec]:
    names: dict[str, FlagSpec] = {}
    for spec in FLAGS:
        names[spec.name] = spec
        for alias in spec.aliases:
            names[alias.option] = spec
    return names


def flag_spec(flag: str) -> FlagSpec:
    """The table entry for `flag` (its name or an alias); KeyError when the table lacks it."""
    return _index()[flag]


# --------------------------------------------------------------------------------------------------
# The complete option list of the pinned version
# --------------------------------------------------------------------------------------------------


class Arity(enum.Enum):
    """How many values an option of the complete list takes."""

    NONE = "none"
    ONE = "one"
    OPTIONAL = "optional"
    MANY = "many"


def complete_flag_list_path(version: VllmVersion) -> Path:
    return data_path(f"vllm-{version}-server-flags.txt")


@cache
def complete_flag_list(version: VllmVersion) -> Mapping[str, Arity] | None:
    """Every option string the server parser of `version` accepts, or None where no list was made.

    Only the pinned default version has one (written by `tools/vllm_flag_table.py --write`).
    """
    path = complete_flag_list_path(version)
    if not path.is_file():
        return None
    options: dict[str, Arity] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        option, arity = line.split("\t")
        options[option] = Arity(arity)
    return options


# --------------------------------------------------------------------------------------------------
# Questions the renderer asks
# --------------------------------------------------------------------------------------------------


def _lookup(option: str, version: VllmVersion) -> tuple[FlagSpec, bool] | None:
    """(spec, negated) for `option`, counting `--no-x` as the negation of `--x`."""
    index = _index()
    if option in index:
        return index[option], False
    if option.startswith("--no-"):
        positive = "--" + option[len("--no-") :]
        if positive in index and index[positive].name == positive:
            return index[positive], True
    return None


def flag_available(flag: str, version: VllmVersion) -> bool:
    """Whether the server of `version` accepts `flag` (a name, an alias, or a `--no-` form).

    For flags outside the table the complete option list decides where one exists for `version`;
    otherwise a flag the table does not know is a ValueError rather than a guess.
    """
    found = _lookup(flag, version)
    if found is not None:
        spec, negated = found
        form = spec.form_at(version)
        if form is None:
            return False
        if flag != spec.name and not negated:
            alias = next(a for a in spec.aliases if a.option == flag)
            return alias.covers(version)
        return form.kind is Kind.BOOL_OPTIONAL if negated else True
    options = complete_flag_list(version)
    if options is not None:
        return flag in options
    raise ValueError(f"{flag} is not in the vLLM flag table and vLLM {version} has no complete option list")


# --------------------------------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------------------------------

_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")
_HUMAN_INT = re.compile(r"(\d+(?:\.\d+)?)([kKmMgGtT])")


def _looks_like_option(token: str) -> bool:
    """argparse's split between option strings and values (Lib/argparse.py, _parse_optional)."""
    if not token.startswith("-") or token == "-":
        return False
    if _NEGATIVE_NUMBER.match(token):
        return False
    if " " in token:
        # Text with a space is a value, unless it is `--option=text with spaces`.
        head, equals, _ = token.partition("=")
        return bool(equals) and " " not in head
    return True


def _value_error(value: str, form: Form) -> str | None:
    """Why `value` is not accepted by `form`, or None."""
    number: float | None = None
    try:
        if form.value_type is ValueType.INT:
            number = int(value)
        elif form.value_type is ValueType.OPTIONAL_INT:
            if value not in ("", "None"):
                number = int(value)
        elif form.value_type is ValueType.FLOAT:
            number = float(value)
        elif form.value_type in (ValueType.HUMAN_INT, ValueType.HUMAN_INT_OR_AUTO):
            text = value.strip()
            if form.value_type is ValueType.HUMAN_INT_OR_AUTO and (text == "-1" or text.lower() == "auto"):
                return None
            match = _HUMAN_INT.fullmatch(text)
            if match is None:
                number = int(text)
            elif match[2] in "KMGT" and "." in match[1]:
                return f"{value!r}: decimals are not allowed with binary suffixes (K, M, G, T)"
    except ValueError:
        wanted = {
            ValueType.INT: "an integer",
            ValueType.OPTIONAL_INT: "an integer",
            ValueType.FLOAT: "a number",
            ValueType.HUMAN_INT: "an integer such as 2048 or 2k",
            ValueType.HUMAN_INT_OR_AUTO: "an integer such as 2048 or 2k, or auto",
        }.get(form.value_type, "a value")
        return f"{value!r} is not {wanted}"
    if form.choices is not None:
        if form.value_type is ValueType.INT and number is not None:
            allowed = {int(choice) for choice in form.choices}
            if int(number) not in allowed:
                return f"{value!r} is not one of {', '.join(form.choices)}"
        elif value not in form.choices:
            return f"{value!r} is not one of {', '.join(form.choices)}"
    if number is not None:
        if form.gt is not None and not number > form.gt:
            return f"{value!r} must be greater than {form.gt:g}" + (
                f" and at most {form.le:g}" if form.le is not None else ""
            )
        if form.le is not None and not number <= form.le:
            return f"{value!r} must be at most {form.le:g}"
    return None


def _describe_removed(spec: FlagSpec, version: VllmVersion, shown: str) -> str:
    removed = spec.removed
    assert removed is not None
    reason = f"removed in {removed}"
    if spec.renamed_to and spec.renamed_in:
        reason += f"; {spec.renamed_to} replaced it in {spec.renamed_in}"
    advice = spec.replacement or "remove it"
    return f"{shown}: vLLM {version} rejects it ({reason}); {advice}"


def check_server_args(argv: Sequence[str], version: VllmVersion) -> list[str]:
    """One human-readable error per problem in `argv` for the server of `version`; [] means fine.

    `argv` is what follows the image's ENTRYPOINT (`image_entrypoint(version)`), e.g.
    `["--model", "Qwen/Qwen2.5-1.5B-Instruct", "--max-num-seqs", "16", "--trust-remote-code"]`.
    `--flag=value`, `--no-flag` and (from 0.5.1) `--flag_with_underscores` are understood.

    Checked for every flag in the table: present in `version` (not yet added / removed / renamed,
    with the replacement), a value where one is needed, none for boolean flags, the `--no-` form only
    where the release has it, and the value's type, choices and bounds where the table states them.

    Flags the table does not know: for a version with a complete option list (the pinned default,
    see `complete_flag_list`) an option outside that list is an error, and so is an abbreviation,
    which argparse would silently expand. For every other version an unknown flag is accepted (no
    complete list is known); a following non-option token is assumed to be its value.
    """
    if version < OLDEST_EXAMINED:
        return [
            f"vLLM {version} is older than the oldest release this table covers ({OLDEST_EXAMINED}); "
            "its flags cannot be checked"
        ]
    return _ArgvCheck(argv, version).run()


class _ArgvCheck:
    """One pass over argv the way argparse reads it. Each `_take_*` method consumes one option (and its
    values), records what is wrong with it, and returns the index of the next token."""

    def __init__(self, argv: Sequence[str], version: VllmVersion) -> None:
        self.argv = argv
        self.version = version
        self.options = complete_flag_list(version)
        self.serve = version >= SERVE_ENTRYPOINT_SINCE
        self.errors: list[str] = []
        self.positionals: list[str] = []
        self.model_option_given = False
        self.model_in_argv = any(token == "--model" or token.startswith("--model=") for token in argv)

    def run(self) -> list[str]:
        index = 0
        while index < len(self.argv):
            token = self.argv[index]
            if token == "--":
                self.positionals.extend(self.argv[index + 1 :])
                break
            if not _looks_like_option(token):
                self.positionals.append(token)
                index += 1
                continue
            index = self._take_option(index)
        entry = " ".join(image_entrypoint(self.version))
        self.errors += _check_positionals(self.positionals, self.serve, self.model_option_given, entry, self.version)
        return self.errors

    def _next_value(self, index: int) -> str | None:
        """The token after `index` when argparse would read it as a value."""
        if index + 1 < len(self.argv) and not _looks_like_option(self.argv[index + 1]):
            return self.argv[index + 1]
        return None

    def _take_option(self, index: int) -> int:
        token = self.argv[index]
        option, equals, inline = token.partition("=")
        has_inline = bool(equals)
        if option.startswith("--") and self.version >= _UNDERSCORES_ACCEPTED_SINCE:
            option = "--" + option[2:].replace("_", "-")
        if option in ("-h", "--help"):
            self.errors.append(f"{token}: the server would print its help and exit; remove it")
            return index + 1
        option, found = self._resolve(option)
        if found is None:
            return _check_unknown(self.argv, index, option, has_inline, self.version, self.options, self.errors)
        spec, negated = found
        if spec.name == "--model":
            self.model_option_given = True
        form = spec.form_at(self.version)
        if form is None:
            return self._take_absent(index, spec, option, has_inline)
        if option != spec.name and not negated:
            self._check_alias(spec, option)
        if negated and form.kind is not Kind.BOOL_OPTIONAL:
            self.errors.append(
                f"{option}: vLLM {self.version} has no {spec.negation} form ({_negation_history(spec)}); "
                f"leave {spec.name} out instead"
            )
            return index + 1
        if form.kind in (Kind.SWITCH, Kind.BOOL_OPTIONAL):
            return self._take_switch(index, option, has_inline, inline)
        if form.kind is Kind.OPTIONAL_BOOL_VALUE:
            return self._take_optional_bool(index, option, has_inline, inline)
        return self._take_values(index, option, form, has_inline, inline)

    def _resolve(self, option: str) -> tuple[str, tuple[FlagSpec, bool] | None]:
        """(option, table entry); before 0.5.1 an underscore spelling is an error, then checked as dashed."""
        found = _lookup(option, self.version)
        if found is None and option.startswith("--") and "_" in option:
            dashed = "--" + option[2:].replace("_", "-")
            if _lookup(dashed, self.version) is not None:
                self.errors.append(
                    f"{option}: vLLM {self.version} does not accept underscores in option names (it does from "
                    f"{_UNDERSCORES_ACCEPTED_SINCE}); write {dashed}"
                )
                return dashed, _lookup(dashed, self.version)
        return option, found

    def _take_absent(self, index: int, spec: FlagSpec, option: str, has_inline: bool) -> int:
        """A table flag that `version` does not have yet, or no longer has."""
        version = self.version
        if version < spec.added:
            self.errors.append(
                f"{option}: vLLM {version} does not have it (added in {spec.added}); the server would exit "
                f"with 'unrecognized arguments'; remove it or use a vLLM {spec.added} or newer image"
            )
        else:
            self.errors.append(_describe_removed(spec, version, option))
        # Skip its value as the nearest release that has it would read one, not to report it again.
        nearest = spec.forms[0] if version < spec.added else spec.forms[-1]
        value = None if has_inline else self._next_value(index)
        takes = nearest.kind in _TAKES_VALUE or (
            nearest.kind is Kind.OPTIONAL_BOOL_VALUE and value is not None and value.lower() in ("true", "false")
        )
        return index + (2 if takes and value is not None else 1)

    def _check_alias(self, spec: FlagSpec, option: str) -> None:
        alias = next(a for a in spec.aliases if a.option == option)
        if not alias.covers(self.version):
            self.errors.append(
                f"{option}: vLLM {self.version} does not have this spelling (added in {alias.since}); use {spec.name}"
            )

    def _take_switch(self, index: int, option: str, has_inline: bool, inline: str) -> int:
        if has_inline:
            self.errors.append(f"{option}: takes no value in vLLM {self.version} (a boolean flag); drop '={inline}'")
            return index + 1
        stray = self._next_value(index)
        # With `vllm serve` a lone positional right after a switch is the model, as argparse reads it.
        model_slot_free = self.serve and not self.positionals and not self.model_in_argv
        if stray is not None and not model_slot_free:
            self.errors.append(
                f"{option}: takes no value in vLLM {self.version} (a boolean flag); {stray!r} after it would be "
                "an unrecognized argument"
            )
            return index + 2
        return index + 1

    def _take_optional_bool(self, index: int, option: str, has_inline: bool, inline: str) -> int:
        value = inline if has_inline else self._next_value(index)
        if value is not None and value.lower() not in ("true", "false"):
            self.errors.append(f"{option}: vLLM {self.version} accepts only true or false after it, not {value!r}")
        return index + (1 if has_inline or value is None else 2)

    def _take_values(self, index: int, option: str, form: Form, has_inline: bool, inline: str) -> int:
        """A flag that takes one (VALUE, BOOL_TYPED_VALUE) or more (VALUES) values."""
        index += 1
        if has_inline:
            values = [inline]
        else:
            values = []
            while index < len(self.argv) and not _looks_like_option(self.argv[index]) and self.argv[index] != "--":
                values.append(self.argv[index])
                index += 1
                if form.kind is not Kind.VALUES:
                    break
        if not values:
            self.errors.append(f"{option}: needs a value in vLLM {self.version}, but none follows it")
        elif form.kind is Kind.BOOL_TYPED_VALUE:
            if values[0].strip().lower() in ("false", "0", "no", "off", ""):
                self.errors.append(
                    f"{option} {values[0]}: vLLM {self.version} parses any non-empty value as True (type=bool); "
                    "leave the flag out to keep it off"
                )
        else:
            self.errors += [f"{option}: {problem} (vLLM {self.version})"
                            for problem in (_value_error(value, form) for value in values) if problem is not None]
        return index


def _negation_history(spec: FlagSpec) -> str:
    first = next((form for form in spec.forms if form.kind is Kind.BOOL_OPTIONAL), None)
    if first is None:
        return f"{spec.name} is a plain switch in every release"
    return f"added in {first.since}"


def _check_unknown(
    argv: Sequence[str],
    index: int,
    option: str,
    inline: bool,
    version: VllmVersion,
    options: Mapping[str, Arity] | None,
    errors: list[str],
) -> int:
    """Check a flag outside the table; return the index after it (and its values)."""
    following = index + 1
    if options is None:
        # No complete list: accept it, and take a following non-option token as its value.
        if not inline and following < len(argv) and not _looks_like_option(argv[following]):
            following += 1
        return following

    base = option
    if option.startswith("--") and "." in option:
        # `--compilation-config.mode 3` sets one key of a JSON-valued option.
        base = option.split(".", 1)[0]
    if option.startswith("-O") and not option.startswith("--") and "--optimization-level" in options:
        # vLLM's parser rewrites `-O3`, `-O=3` and `-O 3` to `--optimization-level 3` before argparse runs.
        if option == "-O" and not inline and following < len(argv) and not _looks_like_option(argv[following]):
            following += 1
        return following
    arity = options.get(base)
    if arity is None:
        matches = sorted(candidate for candidate in options if candidate.startswith(option))
        if len(matches) == 1:
            errors.append(
                f"{option}: not a vLLM {version} option; argparse would silently take it as an abbreviation "
                f"of {matches[0]} (and a later release could make it ambiguous); write {matches[0]}"
            )
        elif matches:
            errors.append(f"{option}: not a vLLM {version} option (ambiguous abbreviation of {', '.join(matches[:5])})")
        else:
            close = difflib.get_close_matches(option, list(options), n=1, cutoff=0.75)
            hint = f"; did you mean {close[0]}?" if close else ""
            errors.append(f"{option}: vLLM {version} has no such option, the server would exit{hint}")
        if not inline and following < len(argv) and not _looks_like_option(argv[following]):
            following += 1
        return following
    if base != option:
        arity = Arity.ONE
    if arity is Arity.NONE:
        if inline:
            errors.append(f"{option}: takes no value in vLLM {version}")
        return following
    if inline:
        return following
    taken = 0
    while following < len(argv) and not _looks_like_option(argv[following]) and argv[following] != "--":
        following += 1
        taken += 1
        if arity in (Arity.ONE, Arity.OPTIONAL):
            break
    if taken == 0 and arity in (Arity.ONE, Arity.MANY):
        errors.append(f"{option}: needs a value in vLLM {version}, but none follows it")
    return following


def _check_positionals(
    positionals: list[str], serve: bool, model_option_given: bool, entry: str, version: VllmVersion
) -> list[str]:
    if not positionals:
        return []
    if not serve:
        return [
            f"{' '.join(positionals)!r}: `{entry}` (the vLLM {version} image's entrypoint) takes no positional "
            "arguments; give the model as --model"
        ]
    if model_option_given:
        return [
            f"{' '.join(positionals)!r}: `{entry}` already gets the model from --model; this extra argument "
            "would be rejected"
        ]
    if len(positionals) > 1:
        return [f"{' '.join(positionals[1:])!r}: `{entry}` takes only one positional argument (the model)"]
    return []


# --------------------------------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------------------------------


def _span(form: Form) -> str:
    if form.until is None:
        return f"{form.since}+"
    return f"{form.since} to <{form.until}"


def _form_text(form: Form) -> str:
    parts = [form.kind.value]
    takes_value = form.kind in _TAKES_VALUE or form.kind is Kind.OPTIONAL_BOOL_VALUE
    if takes_value and form.value_type is not ValueType.STR:
        parts.append(form.value_type.value)
    if form.choices is not None:
        parts.append("{" + ", ".join(form.choices) + "}")
    if form.gt is not None or form.le is not None:
        low = f"{form.gt:g} <" if form.gt is not None else ""
        high = f"<= {form.le:g}" if form.le is not None else ""
        parts.append(f"{low} value {high}".strip())
    if form.default is not None:
        parts.append(f"default {form.default}")
    return ", ".join(parts)


def render_markdown() -> str:
    """docs/vllm-flags.md (a unit test keeps the committed file equal to this)."""
    added_note = f"<= {OLDEST_EXAMINED}"
    lines = [
        "# vLLM server flags by release",
        "",
        "Generated from `infra/catalog/data/vllm-flags.yaml` by `infra/catalog/vllm_flags.py` `render_markdown()`; "
        "do not edit by hand.",
        "",
        f"Every `vllm` release on PyPI from {OLDEST_EXAMINED} to {NEWEST_EXAMINED} "
        f"({len(EXAMINED_RELEASES)} releases, post releases included) was read, so each boundary is the "
        "first release that shows the change. `tools/vllm_flag_table.py --check` verifies the table "
        "against the installed vLLM's own parser. Spans are `since to <until` (the release before `until` "
        f"is the last one with that form); `X+` means still so in {NEWEST_EXAMINED}; "
        f"added `<= {OLDEST_EXAMINED}` means already in the oldest release examined.",
        "",
        "Kinds: `value` one value; `values` one or more; `switch` no value and no `--no-` form; "
        "`bool-optional` `--x` / `--no-x`; `optional-bool-value` `--x [true|false]`; `bool-typed-value` "
        "needs a value and reads any non-empty text as true.",
        "",
        "## Image entrypoint",
        "",
        f"- before {SERVE_ENTRYPOINT_SINCE}: `{' '.join(_API_SERVER_ENTRYPOINT)}`",
        f"- {SERVE_ENTRYPOINT_SINCE} and later: `{' '.join(_SERVE_ENTRYPOINT)}` (accepts `--model X`, "
        "rewriting it to the positional model with a deprecation warning; the product gives the model "
        "positionally there)",
        "",
        "## Summary",
        "",
        "| flag | added | removed | renamed to | what it does |",
        "|---|---|---|---|---|",
    ]
    for spec in FLAGS:
        added = added_note if spec.added == OLDEST_EXAMINED else str(spec.added)
        removed = str(spec.removed) if spec.removed else ""
        renamed = f"{spec.renamed_to} ({spec.renamed_in})" if spec.renamed_to else ""
        names = ", ".join([f"`{spec.name}`", *(f"`{a.option}` ({a.since}+)" for a in spec.aliases)])
        lines.append(f"| {names} | {added} | {removed} | {renamed} | {spec.summary} |")
    lines += ["", "## Forms, defaults and notes", ""]
    for spec in FLAGS:
        lines.append(f"### `{spec.name}`")
        lines.append("")
        for form in spec.forms:
            lines.append(f"- {_span(form)}: {_form_text(form)}")
        if spec.deprecated_since:
            lines.append(f"- deprecated from {spec.deprecated_since}")
        if spec.removed:
            lines.append(f"- removed in {spec.removed}: {spec.replacement or 'remove it'}")
        for note in spec.notes:
            lines.append(f"- note from {note.since}: {note.text}")
        lines.append(f"- source: {spec.source}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    # `python -m vllm_endpoint.infra.catalog.vllm_flags > docs/vllm-flags.md` regenerates the documentation.
    print(render_markdown(), end="")
