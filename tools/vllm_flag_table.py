"""Check infra/catalog/data/vllm-flags.yaml against the installed vLLM's server parser, or regenerate its option list.

Run it with the interpreter of the vLLM CPU build (the project venv has no vLLM, the vLLM venv no Pulumi):

    .venv-vllm/bin/python tools/vllm_flag_table.py --check   # exit 1 with a diff when the table is wrong
    .venv-vllm/bin/python tools/vllm_flag_table.py --write   # rewrite infra/catalog/data/vllm-<v>-server-flags.txt

The parser is built the way the image builds it: for images that run `vllm serve`, the `serve` subcommand of
vLLM's CLI; for older ones, `make_arg_parser` of the OpenAI api_server. `--check` verifies, for the installed
version: the committed option list equals the parser's; every table flag present in that version exists with the
stated kind, value type, choices, default and aliases, and every flag the table calls removed or not yet added is
absent; stated bounds are enforced by vLLM's config classes; the image entrypoint accepts `--model X`; and a set
of sample command lines gets the verdicts the table predicts from both the real parser and `check_server_args`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _catalog_module(name: str) -> ModuleType:
    """infra/catalog/<name>.py, imported from the checkout without running vllm_endpoint/__init__.py.

    That file imports the Pulumi components, and the vLLM venv has no Pulumi. An empty package object
    whose __path__ is the checkout's vllm_endpoint/ stands in for it, so the catalog modules import each
    other (and read their data files) under their real names, as they do in the project venv.
    """
    if "vllm_endpoint" not in sys.modules:
        package = ModuleType("vllm_endpoint")
        package.__path__ = [str(ROOT / "vllm_endpoint")]
        sys.modules["vllm_endpoint"] = package
    return importlib.import_module(f"vllm_endpoint.infra.catalog.{name}")


vv = _catalog_module("vllm_flags")
constants = _catalog_module("names")


@dataclass(frozen=True)
class OptionInfo:
    action: argparse.Action
    arity: Any  # vv.Arity


def installed_version() -> Any:
    import vllm

    # Local build tags such as "+cpu" are not part of the release number.
    return vv.VllmVersion.parse(vllm.__version__.split("+", 1)[0])


def build_parsers(version: Any) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, list[str]]:
    """(parser to call parse_args on, the parser that owns the options, argv prefix for the former)."""
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    if tuple(vv.image_entrypoint(version)) == ("vllm", "serve"):
        from vllm.entrypoints.cli.serve import ServeSubcommand

        top = FlexibleArgumentParser(prog="vllm")
        subparsers = top.add_subparsers(dest="subparser")
        serve = ServeSubcommand().subparser_init(subparsers)
        return top, serve, ["serve"]
    for module_name in ("vllm.entrypoints.launchers.cli_args", "vllm.entrypoints.openai.cli_args"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        parser = module.make_arg_parser(FlexibleArgumentParser())
        return parser, parser, []
    raise SystemExit("cannot find vLLM's make_arg_parser")


def arity_of(action: argparse.Action) -> Any:
    nargs = action.nargs
    if nargs == 0:
        return vv.Arity.NONE
    if nargs is None or nargs == 1:
        return vv.Arity.ONE
    if nargs == "?":
        return vv.Arity.OPTIONAL
    return vv.Arity.MANY


def options_of(parser: argparse.ArgumentParser) -> dict[str, OptionInfo]:
    return {
        option: OptionInfo(action, arity_of(action)) for action in parser._actions for option in action.option_strings
    }


def render_option_list(version: Any, options: dict[str, OptionInfo]) -> str:
    lines = [
        f"# Every option string the vLLM {version} server parser accepts: OPTION<TAB>ARITY",
        "# ARITY: none (no value), one, optional (zero or one value), many (one or more values).",
        "# Written by `tools/vllm_flag_table.py --write` from the installed vLLM CPU build; do not edit.",
    ]
    lines += [f"{option}\t{info.arity.value}" for option, info in sorted(options.items())]
    return "\n".join(lines) + "\n"


def type_name(action: argparse.Action) -> str:
    kind = action.type
    return getattr(kind, "__name__", repr(kind)) if kind is not None else "None"


def expected_kind(action: argparse.Action) -> Any:
    name = type(action).__name__
    if name == "BooleanOptionalAction":
        return vv.Kind.BOOL_OPTIONAL
    if name == "_StoreTrueAction":
        return vv.Kind.SWITCH
    if action.type is bool:
        return vv.Kind.BOOL_TYPED_VALUE
    if action.nargs == "?":
        return vv.Kind.OPTIONAL_BOOL_VALUE
    if action.nargs in ("+", "*"):
        return vv.Kind.VALUES
    return vv.Kind.VALUE


_VALUE_TYPE_NAMES = {
    "INT": {"int"},
    "FLOAT": {"float"},
    "HUMAN_INT": {"human_readable_int"},
    "HUMAN_INT_OR_AUTO": {"human_readable_int_or_auto"},
    # optional_type(int) and optional_type(str) are both closures named _optional_type.
    "OPTIONAL_INT": {"_optional_type"},
    "STR": {"None", "str", "_optional_type"},
}

# Where vLLM enforces the bounds the table states (config dataclass and field), for the installed release.
_BOUND_PROBES = {
    "--gpu-memory-utilization": ("vllm.config.cache", "CacheConfig", "gpu_memory_utilization"),
    "--block-size": ("vllm.config.cache", "CacheConfig", "block_size"),
}


def check_table(version: Any, options: dict[str, OptionInfo]) -> list[str]:
    diffs: list[str] = []
    for spec in vv.FLAGS:
        form = spec.form_at(version)
        info = options.get(spec.name)
        if form is None:
            if info is not None:
                diffs.append(f"{spec.name}: table says absent in {version}, the parser has it")
            if spec.negation in options:
                diffs.append(f"{spec.negation}: table says absent in {version}, the parser has it")
            continue
        if info is None:
            diffs.append(f"{spec.name}: table says present in {version}, the parser lacks it")
            continue
        action = info.action
        kind = expected_kind(action)
        if kind is not form.kind:
            diffs.append(f"{spec.name}: table kind {form.kind.value}, parser {kind.value}")
        if (spec.negation in options) != (form.kind is vv.Kind.BOOL_OPTIONAL):
            diffs.append(f"{spec.negation}: table and parser disagree on whether it exists")
        if form.kind in (vv.Kind.VALUE, vv.Kind.VALUES):
            allowed = _VALUE_TYPE_NAMES[form.value_type.name]
            if type_name(action) not in allowed:
                diffs.append(f"{spec.name}: table value type {form.value_type.value}, parser type {type_name(action)}")
            parser_choices = None if action.choices is None else tuple(sorted(str(c) for c in action.choices))
            table_choices = None if form.choices is None else tuple(sorted(form.choices))
            if parser_choices != table_choices:
                diffs.append(f"{spec.name}: table choices {table_choices}, parser {parser_choices}")
        if form.default is None:
            diffs.append(f"{spec.name}: the table states no default for {version}; the parser's is {action.default!r}")
        elif str(action.default) != form.default:
            diffs.append(f"{spec.name}: table default {form.default!r}, parser {str(action.default)!r}")
        for alias in spec.aliases:
            if alias.covers(version) != (alias.option in action.option_strings):
                diffs.append(f"{alias.option}: table and parser disagree on this alias of {spec.name}")
        extra = set(action.option_strings) - {spec.name, spec.negation} - {a.option for a in spec.aliases}
        if extra:
            diffs.append(f"{spec.name}: the parser has spellings the table lacks: {sorted(extra)}")
        diffs += check_bounds(spec.name, form)
    return diffs


def check_bounds(flag: str, form: Any) -> list[str]:
    if form.gt is None and form.le is None:
        return []
    probe = _BOUND_PROBES.get(flag)
    if probe is None:
        return [f"{flag}: the table states bounds but the script has no probe for them"]
    module_name, class_name, field_name = probe
    config_class = getattr(importlib.import_module(module_name), class_name)

    def accepted(value: float) -> bool:
        if form.value_type is vv.ValueType.INT:
            if value != int(value):
                return True  # no such integer; nothing to probe
            value = int(value)
        try:
            config_class(**{field_name: value})
        except Exception:
            return False
        return True

    diffs = []
    step = 1 if form.value_type is vv.ValueType.INT else 0.01
    if form.gt is not None and (accepted(form.gt) or not accepted(form.gt + step)):
        diffs.append(f"{flag}: vLLM does not enforce value > {form.gt:g} as the table says")
    if form.le is not None and (not accepted(form.le) or accepted(form.le + step)):
        diffs.append(f"{flag}: vLLM does not enforce value <= {form.le:g} as the table says")
    return diffs


def parser_accepts(parser: argparse.ArgumentParser, prefix: list[str], argv: Sequence[str]) -> bool:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parser.parse_args([*prefix, *argv])
    except (SystemExit, ValueError):
        # argparse exits on unknown/invalid options; vLLM's StoreBoolean raises ValueError.
        return False
    return True


@dataclass(frozen=True)
class Sample:
    argv: tuple[str, ...]
    parser_accepts: bool  # what vLLM's parser does with it
    checker_ok: bool  # what check_server_args should say
    why: str


MODEL = ("--model", "Qwen/Qwen2.5-1.5B-Instruct")
SAMPLES = (
    Sample(MODEL, True, True, "just the model"),
    Sample(
        (*MODEL, "--swap-space", "4", "--block-size", "16", "--max-num-seqs", "16", "--gpu-memory-utilization", "0.7"),
        False,
        False,
        "the original command: --swap-space is gone",
    ),
    Sample(
        (
            *MODEL,
            "--block-size",
            "16",
            "--max-num-seqs",
            "16",
            "--gpu-memory-utilization",
            "0.7",
            "--trust-remote-code",
        ),
        True,
        True,
        "the original command without --swap-space",
    ),
    Sample((*MODEL, "--api-key", "k1", "k2"), True, True, "several keys"),
    Sample((*MODEL, "--max_num_seqs", "16"), True, True, "underscore spelling"),
    Sample((*MODEL, "--max-num-seqs=16"), True, True, "= form"),
    Sample((*MODEL, "--max-num-seqs"), False, False, "value missing"),
    Sample((*MODEL, "--max-num-seqs", "many"), False, False, "not an integer"),
    Sample((*MODEL, "--max-num-seq", "16"), True, False, "abbreviation: argparse expands it, the checker refuses"),
    Sample((*MODEL, "--max-nm-seqs", "16"), False, False, "typo"),
    Sample((*MODEL, "--trust-remote-code=true"), False, False, "value given to a boolean flag"),
    Sample((*MODEL, "--no-enable-prefix-caching"), True, True, "negation"),
    Sample((*MODEL, "--dtype", "float64"), False, False, "not a dtype"),
    Sample((*MODEL, "--uvicorn-log-level", "verbose"), False, False, "not a log level"),
    Sample((*MODEL, "--kv-cache-dtype", "fp8"), True, True, "valid choice"),
    Sample((*MODEL, "--gpu-memory-utilization", "1.5"), True, False, "parser takes it, the config rejects it"),
    Sample((*MODEL, "--disable-log-requests"), False, False, "removed"),
    Sample((*MODEL, "--enable-log-requests", "--disable-fastapi-docs"), True, True, "current booleans"),
    Sample((*MODEL, "-tp", "1", "--max-model-len", "4k"), True, True, "alias and human-readable int"),
    Sample((*MODEL, "--compilation-config.mode", "3"), True, True, "one key of a JSON option"),
    Sample((*MODEL, "-O3"), True, True, "optimization level shorthand"),
    Sample((*MODEL, "--seed", "1", "--load-format", "auto", "--host", "0.0.0.0", "--port", "8000"), True, True, "misc"),
)


def check_samples(version: Any, parser: argparse.ArgumentParser, prefix: list[str]) -> list[str]:
    diffs = []
    for sample in SAMPLES:
        accepted = parser_accepts(parser, prefix, sample.argv)
        if accepted != sample.parser_accepts:
            diffs.append(
                f"sample {sample.why!r}: expected the parser to {'accept' if sample.parser_accepts else 'reject'}"
            )
        errors = vv.check_server_args(list(sample.argv), version)
        if (not errors) != sample.checker_ok:
            diffs.append(f"sample {sample.why!r}: check_server_args said {errors or 'nothing'}")
    return diffs


def check_entrypoint(version: Any, parser: argparse.ArgumentParser, prefix: list[str]) -> list[str]:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        namespace = parser.parse_args([*prefix, "--model", "example/model", "--max-num-seqs", "16"])
    # `vllm serve` moves --model into the positional model_tag, which its command copies back into `model`.
    model = getattr(namespace, "model_tag", None) or namespace.model
    if model != "example/model" or namespace.max_num_seqs != 16:
        return [f"the {' '.join(vv.image_entrypoint(version))} entrypoint did not take --model as the model"]
    return []


def main(argv: Sequence[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    mode = cli.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="verify the table and the option list")
    mode.add_argument("--write", action="store_true", help="rewrite the option list of the installed version")
    args = cli.parse_args(argv)

    version = installed_version()
    parser, owner, prefix = build_parsers(version)
    options = options_of(owner)
    path = vv.complete_flag_list_path(version)
    text = render_option_list(version, options)

    if args.write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)} ({len(options)} option strings of vLLM {version})")
        return 0

    diffs: list[str] = []
    if str(version) != constants.DEFAULT_VLLM_VERSION:
        diffs.append(f"installed vLLM {version} is not DEFAULT_VLLM_VERSION {constants.DEFAULT_VLLM_VERSION}")
    if not path.is_file():
        diffs.append(f"{path.relative_to(ROOT)} is missing; run with --write")
    elif path.read_text(encoding="utf-8") != text:
        committed = {line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")}
        generated = {line for line in text.splitlines() if not line.startswith("#")}
        diffs += [f"option list lacks: {line}" for line in sorted(generated - committed)]
        diffs += [f"option list has extra: {line}" for line in sorted(committed - generated)]
        diffs.append(f"{path.relative_to(ROOT)} differs from the parser; run with --write")
    diffs += check_table(version, options)
    diffs += check_entrypoint(version, parser, prefix)
    diffs += check_samples(version, parser, prefix)

    if diffs:
        print(f"infra/catalog/data/vllm-flags.yaml disagrees with vLLM {version}:", file=sys.stderr)
        for line in diffs:
            print(f"  - {line}", file=sys.stderr)
        return 1
    print(
        f"OK: {len(vv.FLAGS)} table flags, {len(options)} option strings and {len(SAMPLES)} sample command lines "
        f"agree with the vLLM {version} parser"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
