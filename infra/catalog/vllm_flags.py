"""Which `vllm/vllm-openai` server flags exist in which vLLM release, and a pre-deploy checker.

A flag that the image's vLLM no longer accepts makes the container exit with "unrecognized
arguments" and restart forever; the user learns it ten minutes into a deploy. `check_server_args`
turns that into an error before anything is created, and `flag_available` lets the renderer emit a
flag only where it exists.

How the table was made (2026-11): every `vllm` release on PyPI from 0.3.3 to 0.33.0, 80 in all
(`EXAMINED_RELEASES`, post releases included), was downloaded as a wheel and its argument
definitions read: `vllm/engine/arg_utils.py`, `vllm/entrypoints/openai/cli_args.py` (from 0.32.0
`vllm/entrypoints/launchers/cli_args.py`, in 0.33.0 `vllm/entrypoints/common/cli_args.py`), and,
where flags are generated from config dataclasses (0.8.5 and later), the field annotations in
`vllm/config.py` / `vllm/config/*.py`. Because every release was read, each "since"/"until" below
is the first release that shows the change, not an estimate. `tools/vllm_flag_table.py --check`
re-verifies the table against the real parser of the installed vLLM (0.32.0, the CPU build).
Sources are cited as "wheel X: path". Where a fact was not verified the entry says so.

Limits, stated once:
- Facts for releases newer than `NEWEST_EXAMINED` are extrapolated from it (open-ended spans).
- Releases older than `OLDEST_EXAMINED` are not covered: `check_server_args` reports that.
- Value validation is only done where the table states a type, choices or bounds; `--quantization`
  and `--load-format` values are not validated (their choices change with almost every release).
- The complete option list exists only for `infra/catalog/names.py DEFAULT_VLLM_VERSION` (from the CPU build
  of that version; the CUDA image's parser is built by the same code, but that was not run here).
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

__all__ = [
    "EXAMINED_RELEASES",
    "FLAGS",
    "NEWEST_EXAMINED",
    "OLDEST_EXAMINED",
    "SERVE_ENTRYPOINT_SINCE",
    "Arity",
    "FlagSpec",
    "Form",
    "Kind",
    "ValueType",
    "VllmVersion",
    "check_server_args",
    "complete_flag_list",
    "complete_flag_list_path",
    "flag_available",
    "flag_spec",
    "image_entrypoint",
    "render_markdown",
]


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


def _v(text: str) -> VllmVersion:
    return VllmVersion.parse(text)


_EXAMINED_TEXT = (
    "0.3.3 0.4.0 0.4.0.post1 0.4.1 0.4.2 0.4.3 0.5.0 0.5.0.post1 0.5.1 0.5.2 0.5.3 0.5.3.post1 "
    "0.5.4 0.5.5 0.6.0 0.6.1 0.6.1.post1 0.6.1.post2 0.6.2 0.6.3 0.6.3.post1 0.6.4 0.6.4.post1 "
    "0.6.5 0.6.6 0.6.6.post1 0.7.0 0.7.1 0.7.2 0.7.3 0.8.0 0.8.1 0.8.2 0.8.3 0.8.4 0.8.5 "
    "0.8.5.post1 0.9.0 0.9.0.1 0.9.1 0.9.2 0.10.0 0.10.1 0.10.1.1 0.10.2 0.11.0 0.11.1 0.11.2 "
    "0.12.0 0.13.0 0.14.0 0.14.1 0.15.0 0.15.1 0.16.0 0.17.0 0.17.1 0.18.0 0.18.1 0.19.0 0.19.1 "
    "0.20.0 0.20.1 0.20.2 0.21.0 0.22.0 0.22.1 0.23.0 0.24.0 0.25.0 0.25.1 0.26.0 0.27.0 0.27.1 "
    "0.28.0 0.29.0 0.30.0 0.31.0 0.32.0 0.33.0"
)
EXAMINED_RELEASES: tuple[VllmVersion, ...] = tuple(_v(text) for text in _EXAMINED_TEXT.split())
OLDEST_EXAMINED = EXAMINED_RELEASES[0]
NEWEST_EXAMINED = EXAMINED_RELEASES[-1]

# The vllm-openai stage of the image's Dockerfile (read from each release's sdist: `Dockerfile` up to
# 0.8.x, `docker/Dockerfile` after): `ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server"]`
# in 0.6.6, 0.7.3, 0.8.0, 0.9.2, 0.10.0, 0.10.1, 0.10.1.1, 0.10.2 and 0.11.0;
# `ENTRYPOINT ["vllm", "serve"]` in 0.11.1, 0.11.2, 0.12.0, 0.32.0 and 0.33.0. Sdists before 0.6.6
# ship no Dockerfile; the repository's Dockerfile of the 0.5 era (vllm-project/vllm at e93d59a6)
# has the api_server entrypoint too.
SERVE_ENTRYPOINT_SINCE = _v("0.11.1")
_API_SERVER_ENTRYPOINT = ("python3", "-m", "vllm.entrypoints.openai.api_server")
_SERVE_ENTRYPOINT = ("vllm", "serve")

# `FlexibleArgumentParser` (wheel 0.5.1: vllm/utils.py) rewrites `--max_num_seqs` to `--max-num-seqs`;
# 0.5.0 and older use a plain argparse.ArgumentParser, which rejects the underscore spelling.
_UNDERSCORES_ACCEPTED_SINCE = _v("0.5.1")


def image_entrypoint(version: VllmVersion) -> tuple[str, ...]:
    """The ENTRYPOINT of `vllm/vllm-openai:v<version>` (see SERVE_ENTRYPOINT_SINCE for the sources).

    Both entrypoints accept the model as `--model X`: the api_server parser has a `--model` option
    in every release; `vllm serve` (checked in 0.32.0's parser, wheel 0.32.0:
    vllm/utils/argparse_utils.py) moves `--model X` to the positional model argument and logs that
    the option "will be removed in a future version". The product therefore never needs to prepend
    `serve` or drop `--model`.
    """
    return _SERVE_ENTRYPOINT if version >= SERVE_ENTRYPOINT_SINCE else _API_SERVER_ENTRYPOINT


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
_BOOLEAN_KINDS = {Kind.SWITCH, Kind.BOOL_OPTIONAL, Kind.OPTIONAL_BOOL_VALUE}


@dataclass(frozen=True)
class Form:
    """What the flag is in the releases `since` (inclusive) up to `until` (exclusive, None = still)."""

    since: VllmVersion
    until: VllmVersion | None
    kind: Kind
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


@dataclass(frozen=True)
class Alias:
    """Another option string for the same flag (e.g. `-tp`), present from `since` to `until`."""

    option: str
    since: VllmVersion
    until: VllmVersion | None = None

    def covers(self, version: VllmVersion) -> bool:
        return self.since <= version and (self.until is None or version < self.until)


@dataclass(frozen=True)
class Note:
    """A behaviour or default change from `since` on, with where it was read."""

    since: VllmVersion
    text: str


@dataclass(frozen=True)
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
    renamed_in: VllmVersion | None = None
    deprecated_since: VllmVersion | None = None
    notes: tuple[Note, ...] = field(default=())

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


_F = Form
_K = Kind
_T = ValueType

_DTYPES = ("auto", "bfloat16", "float", "float16", "float32", "half")
_UVICORN_LEVELS = ("critical", "debug", "error", "info", "trace", "warning")
_KV_FP8 = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
_KV_0_20 = (
    "auto",
    "bfloat16",
    "float16",
    "fp8",
    "fp8_ds_mla",
    "fp8_e4m3",
    "fp8_e5m2",
    "fp8_inc",
    "fp8_per_token_head",
    "int8_per_token_head",
    "nvfp4",
    "turboquant_3bit_nc",
    "turboquant_4bit_nc",
    "turboquant_k3v4_nc",
    "turboquant_k8v4",
)


def _added(*values: str) -> tuple[str, ...]:
    return tuple(sorted(values))


FLAGS: tuple[FlagSpec, ...] = (
    FlagSpec(
        name="--model",
        summary="Hugging Face model id or local path to serve.",
        forms=(
            _F(_v("0.3.3"), _v("0.10.0"), _K.VALUE, default="facebook/opt-125m"),
            _F(_v("0.10.0"), None, _K.VALUE, default="Qwen/Qwen3-0.6B"),
        ),
        source="wheel 0.4.2 and 0.9.2: vllm/engine/arg_utils.py; wheel 0.10.0: vllm/config.py "
        "(ModelConfig.model default); 0.32.0 parser",
        notes=(
            Note(
                _v("0.11.1"),
                "The image runs `vllm serve`, which rewrites `--model X` to its positional model argument "
                "and warns that the option will be removed in a future version (still accepted in 0.33.0, "
                "wheel 0.33.0: vllm/utils/argparse_utils.py).",
            ),
        ),
    ),
    FlagSpec(
        name="--served-model-name",
        summary="Name(s) the API reports and accepts as `model`; defaults to --model.",
        forms=(
            _F(_v("0.3.3"), _v("0.4.1"), _K.VALUE, default="None"),
            _F(_v("0.4.1"), None, _K.VALUES, default="None"),
        ),
        source="wheel 0.3.3 and 0.4.0: vllm/entrypoints/openai/api_server.py (one value); wheel 0.4.1: "
        "vllm/entrypoints/openai/cli_args.py (nargs='+'); from 0.9.0 ModelConfig.served_model_name",
    ),
    FlagSpec(
        name="--revision",
        summary="Model revision (branch, tag or commit) to download.",
        forms=(_F(_v("0.3.3"), None, _K.VALUE, default="None"),),
        source="wheel 0.3.3-0.8.5.post1: vllm/engine/arg_utils.py; from 0.9.0 ModelConfig.revision",
    ),
    FlagSpec(
        name="--tokenizer",
        summary="Tokenizer id or path; defaults to the model's.",
        forms=(_F(_v("0.3.3"), None, _K.VALUE, default="None"),),
        source="wheel 0.3.3-0.8.5.post1: vllm/engine/arg_utils.py; from 0.9.0 ModelConfig.tokenizer",
    ),
    FlagSpec(
        name="--dtype",
        summary="Weight and activation dtype.",
        forms=(_F(_v("0.3.3"), None, _K.VALUE, choices=_DTYPES, default="auto"),),
        source="wheel 0.3.3-0.8.5.post1: vllm/engine/arg_utils.py choices; from 0.9.0 the ModelDType "
        "Literal (vllm/config.py, later vllm/config/model.py)",
        notes=(
            Note(
                _v("0.3.3"),
                "`auto` uses the checkpoint's dtype; the engine rejects bfloat16 on GPUs below compute "
                "capability 8.0 (T4) (behaviour from the team notes, not re-read for every release).",
            ),
        ),
    ),
    FlagSpec(
        name="--max-model-len",
        summary="Context length (prompt + output); default is the model's.",
        forms=(
            _F(_v("0.3.3"), _v("0.8.4"), _K.VALUE, _T.INT, default="None"),
            _F(_v("0.8.4"), _v("0.14.0"), _K.VALUE, _T.HUMAN_INT, default="None"),
            _F(_v("0.14.0"), None, _K.VALUE, _T.HUMAN_INT_OR_AUTO, default="None"),
        ),
        source="wheel 0.8.4: vllm/engine/arg_utils.py (type=human_readable_int); wheel 0.14.0: "
        "human_readable_int_or_auto (-1 / auto = the largest length that fits)",
    ),
    FlagSpec(
        name="--gpu-memory-utilization",
        summary="Share of the GPU's memory this vLLM instance may use (weights + activations + KV cache).",
        forms=(
            _F(_v("0.3.3"), _v("0.11.1"), _K.VALUE, _T.FLOAT, default="0.9", le=1.0),
            _F(_v("0.11.1"), _v("0.20.0"), _K.VALUE, _T.FLOAT, default="0.9", gt=0.0, le=1.0),
            _F(_v("0.20.0"), None, _K.VALUE, _T.FLOAT, default="0.92", gt=0.0, le=1.0),
        ),
        aliases=(Alias("--device-memory-utilization", _v("0.31.0")),),
        source="wheel 0.3.3-0.11.0: vllm/config.py or vllm/config/cache.py CacheConfig._verify_args "
        "rejects > 1.0; wheel 0.11.1: vllm/config/cache.py Field(default=0.9, gt=0, le=1); wheel 0.20.0: "
        "default 0.92; wheel 0.31.0: vllm/engine/arg_utils.py adds --device-memory-utilization",
        notes=(
            Note(
                _v("0.3.3"),
                "A value above 1 is rejected when the engine config is built (the container exits).",
            ),
            Note(
                _v("0.11.1"),
                "Validated as 0 < value <= 1 by the config dataclass (the team notes said 0.15; the "
                "constraint is already in 0.11.1).",
            ),
            Note(_v("0.20.0"), "Default raised from 0.9 to 0.92."),
        ),
    ),
    FlagSpec(
        name="--max-num-seqs",
        summary="Upper bound on sequences batched per step; low values cap throughput.",
        forms=(
            _F(_v("0.3.3"), _v("0.6.5"), _K.VALUE, _T.INT, default="256"),
            _F(_v("0.6.5"), None, _K.VALUE, _T.INT, default="None"),
        ),
        source="wheel 0.3.3-0.6.4.post1: EngineArgs.max_num_seqs = 256; wheel 0.6.5: Optional, filled by "
        "the engine; wheel 0.8.0 and 0.32.0: vllm/engine/arg_utils.py defaults",
        notes=(
            Note(_v("0.6.5"), "Parser default None; the engine fills 256 (V0 engine) or 1024 (V1 engine)."),
            Note(
                _v("0.8.0"),
                "V1 is the default engine (VLLM_USE_V1 defaults to 1; wheel 0.8.0: vllm/envs.py), so 1024 on "
                "every GPU unless set.",
            ),
            Note(
                _v("0.8.5"),
                "Depends on the GPU for the V1 engine: 1024 with >= 70 GiB of device memory, 256 below "
                "(wheel 0.8.5: vllm/engine/arg_utils.py).",
            ),
            Note(
                _v("0.9.0"),
                "A100s get 256 despite their 80 GiB; still so in 0.32.0, where the CPU build uses 128 x "
                "tensor-parallel size (wheel 0.9.0 and 0.32.0: vllm/engine/arg_utils.py).",
            ),
        ),
    ),
    FlagSpec(
        name="--block-size",
        summary="KV-cache block size in tokens.",
        forms=(
            _F(_v("0.3.3"), _v("0.4.1"), _K.VALUE, _T.INT, choices=("8", "16", "32", "128"), default="16"),
            _F(_v("0.4.1"), _v("0.5.5"), _K.VALUE, _T.INT, choices=("8", "16", "32"), default="16"),
            _F(
                _v("0.5.5"),
                _v("0.6.0"),
                _K.VALUE,
                _T.INT,
                choices=("8", "16", "32", "128", "256", "512", "1024", "2048"),
                default="16",
            ),
            _F(_v("0.6.0"), _v("0.6.4"), _K.VALUE, _T.INT, choices=("8", "16", "32"), default="16"),
            _F(_v("0.6.4"), _v("0.6.5"), _K.VALUE, _T.INT, choices=("8", "16", "32", "64", "128"), default="16"),
            _F(_v("0.6.5"), _v("0.6.6"), _K.VALUE, _T.INT, choices=("8", "16", "32"), default="None"),
            _F(_v("0.6.6"), _v("0.8.5"), _K.VALUE, _T.INT, choices=("8", "16", "32", "64", "128"), default="None"),
            _F(
                _v("0.8.5"),
                _v("0.11.1"),
                _K.VALUE,
                _T.INT,
                choices=("1", "8", "16", "32", "64", "128"),
                default="None",
            ),
            _F(
                _v("0.11.1"),
                _v("0.18.0"),
                _K.VALUE,
                _T.INT,
                choices=("1", "8", "16", "32", "64", "128", "256"),
                default="None",
            ),
            _F(_v("0.18.0"), _v("0.23.0"), _K.VALUE, _T.INT, default="None"),
            _F(_v("0.23.0"), None, _K.VALUE, _T.INT, default="None", gt=0.0),
        ),
        source="wheel 0.3.3-0.8.4: vllm/engine/arg_utils.py choices (0.5.5 and 0.6.4(.post1) widened them, "
        "0.6.0 and 0.6.5 narrowed them again); wheel 0.8.5-0.17.1: the BlockSize Literal in vllm/config.py "
        "/ vllm/config/cache.py; wheel 0.18.0: int; wheel 0.23.0: Field(gt=0)",
        notes=(
            Note(_v("0.6.5"), "Parser default None: the platform picks the size (16 on CUDA)."),
            Note(
                _v("0.18.0"),
                "Any integer is accepted by the parser; attention backends still restrict it (the team "
                "notes say the CPU build wants a multiple of 32; not verified here).",
            ),
        ),
    ),
    FlagSpec(
        name="--swap-space",
        summary="CPU swap space per GPU in GiB (V0 engine preemption).",
        forms=(
            _F(_v("0.3.3"), _v("0.5.5"), _K.VALUE, _T.INT, default="4"),
            _F(_v("0.5.5"), _v("0.18.0"), _K.VALUE, _T.FLOAT, default="4"),
        ),
        source="wheel 0.3.3-0.17.1: vllm/engine/arg_utils.py (type=float from 0.5.5); absent from every "
        "parser from wheel 0.18.0 on (0.18.0 only strips it from LLM(...) kwargs with a warning)",
        replacement="it has no replacement (CPU swap space was dropped with the V0 engine; the V1 engine, "
        "the default since 0.8.0, never used it); remove it",
        notes=(
            Note(
                _v("0.8.0"),
                "No effect on the V1 engine; up to 0.17.1 it is only checked against host RAM (more than "
                "70% of RAM x tensor-parallel size is an error; wheel 0.17.0: vllm/config/cache.py).",
            ),
        ),
    ),
    FlagSpec(
        name="--tensor-parallel-size",
        summary="Number of GPUs to shard each layer across.",
        forms=(_F(_v("0.3.3"), None, _K.VALUE, _T.INT, default="1"),),
        aliases=(Alias("-tp", _v("0.3.3")),),
        source="wheel 0.3.3-0.8.3: vllm/engine/arg_utils.py; later ParallelConfig; 0.32.0 parser",
    ),
    FlagSpec(
        name="--pipeline-parallel-size",
        summary="Number of pipeline stages (GPUs or nodes).",
        forms=(_F(_v("0.3.3"), None, _K.VALUE, _T.INT, default="1"),),
        aliases=(Alias("-pp", _v("0.3.3")),),
        source="wheel 0.3.3-0.8.3: vllm/engine/arg_utils.py; later ParallelConfig; 0.32.0 parser",
    ),
    FlagSpec(
        name="--trust-remote-code",
        summary="Allow the model repository's own Python code to run.",
        forms=(
            _F(_v("0.3.3"), _v("0.9.0"), _K.SWITCH, default="False"),
            _F(_v("0.9.0"), None, _K.BOOL_OPTIONAL, default="False"),
        ),
        source="wheel 0.3.3-0.8.5.post1: action='store_true'; wheel 0.9.0: ModelConfig.trust_remote_code: "
        "bool -> BooleanOptionalAction (get_kwargs in vllm/engine/arg_utils.py)",
    ),
    FlagSpec(
        name="--quantization",
        summary="Quantization method of the weights (e.g. awq, gptq, fp8).",
        forms=(_F(_v("0.3.3"), None, _K.VALUE, default="None"),),
        aliases=(Alias("-q", _v("0.3.3")),),
        source="wheel 0.3.3-0.8.5.post1: vllm/engine/arg_utils.py; from 0.9.0 ModelConfig.quantization",
        notes=(
            Note(
                _v("0.3.3"),
                "Values are not validated here: the accepted methods change with nearly every release "
                "(choices up to 0.12.x, free text from 0.13.0).",
            ),
        ),
    ),
    FlagSpec(
        name="--api-key",
        summary="Key(s) clients must send as a Bearer token; 0.32.0 guards only /v1, /v2 and /inference paths.",
        forms=(
            _F(_v("0.3.3"), _v("0.10.1"), _K.VALUE, default="None"),
            _F(_v("0.10.1"), None, _K.VALUES, default="None"),
        ),
        source="wheel 0.3.3: vllm/entrypoints/openai/api_server.py; wheel 0.4.0-0.9.2: "
        "vllm/entrypoints/openai/cli_args.py; wheel 0.10.0: FrontendArgs.api_key: Optional[str]; "
        "wheel 0.10.1: Optional[list[str]] (nargs='+')",
        notes=(Note(_v("0.3.3"), "The VLLM_API_KEY environment variable is read as well (see the team notes)."),),
    ),
    FlagSpec(
        name="--disable-fastapi-docs",
        summary="Turn off /docs, /redoc and /openapi.json.",
        forms=(
            _F(_v("0.6.2"), _v("0.10.0"), _K.SWITCH, default="False"),
            _F(_v("0.10.0"), None, _K.BOOL_OPTIONAL, default="False"),
        ),
        source="wheel 0.6.1.post2 lacks it; wheel 0.6.2: vllm/entrypoints/openai/cli_args.py store_true; "
        "wheel 0.10.0: FrontendArgs.disable_fastapi_docs: bool -> BooleanOptionalAction",
    ),
    FlagSpec(
        name="--host",
        summary="Address the HTTP server binds; default all interfaces.",
        forms=(_F(_v("0.3.3"), None, _K.VALUE, default="None"),),
        source="wheel 0.3.3: vllm/entrypoints/openai/api_server.py; 0.4.0-0.9.2 cli_args.py; from 0.10.0 "
        "FrontendArgs.host",
    ),
    FlagSpec(
        name="--port",
        summary="HTTP port inside the container.",
        forms=(_F(_v("0.3.3"), None, _K.VALUE, _T.INT, default="8000"),),
        source="wheel 0.3.3: vllm/entrypoints/openai/api_server.py; 0.4.0-0.9.2 cli_args.py; from 0.10.0 "
        "FrontendArgs.port",
    ),
    FlagSpec(
        name="--download-dir",
        summary="Where weights are downloaded; default the Hugging Face cache.",
        forms=(_F(_v("0.3.3"), None, _K.VALUE, default="None"),),
        source="wheel 0.3.3-0.8.3: vllm/engine/arg_utils.py; from 0.8.4 LoadConfig.download_dir",
    ),
    FlagSpec(
        name="--enable-prefix-caching",
        summary="Reuse KV cache across requests sharing a prefix.",
        forms=(
            _F(_v("0.4.0"), _v("0.6.5"), _K.SWITCH, default="False"),
            _F(_v("0.6.5"), None, _K.BOOL_OPTIONAL, default="None"),
        ),
        source="wheel 0.3.3 lacks it; wheel 0.4.0: action='store_true'; wheel 0.6.5: "
        "argparse.BooleanOptionalAction, default None; wheel 0.8.0: vllm/engine/arg_utils.py V1 defaults",
        notes=(
            Note(_v("0.4.0"), "Off unless given."),
            Note(
                _v("0.8.0"),
                "On by default: the V1 engine, now the default, turns it on when unset; "
                "--no-enable-prefix-caching turns it off.",
            ),
        ),
    ),
    FlagSpec(
        name="--generation-config",
        summary="Where default sampling parameters come from: `auto` (the model's generation_config.json), "
        "`vllm` (vLLM's own) or a folder.",
        forms=(
            _F(_v("0.6.6"), _v("0.8.0"), _K.VALUE, default="None"),
            _F(_v("0.8.0"), None, _K.VALUE, default="auto"),
        ),
        source="wheel 0.6.5 lacks it; wheel 0.6.6: vllm/engine/arg_utils.py default None; wheel 0.8.0: default 'auto'",
        notes=(
            Note(
                _v("0.8.0"),
                "Default `auto`: the model's generation_config.json sets default temperature/top_p etc.; "
                "pass `vllm` for the old behaviour.",
            ),
        ),
    ),
    FlagSpec(
        name="--kv-cache-dtype",
        summary="KV-cache storage dtype (`auto` = the model's dtype).",
        forms=(
            _F(_v("0.3.3"), _v("0.4.1"), _K.VALUE, choices=("auto", "fp8_e5m2"), default="auto"),
            _F(_v("0.4.1"), _v("0.4.3"), _K.VALUE, choices=("auto", "fp8"), default="auto"),
            _F(_v("0.4.3"), _v("0.10.0"), _K.VALUE, choices=_KV_FP8, default="auto"),
            _F(_v("0.10.0"), _v("0.11.0"), _K.VALUE, choices=_added(*_KV_FP8, "fp8_inc"), default="auto"),
            _F(
                _v("0.11.0"),
                _v("0.11.1"),
                _K.VALUE,
                choices=_added(*_KV_FP8, "fp8_inc", "bfloat16"),
                default="auto",
            ),
            _F(
                _v("0.11.1"),
                _v("0.18.0"),
                _K.VALUE,
                choices=_added(*_KV_FP8, "fp8_inc", "bfloat16", "fp8_ds_mla"),
                default="auto",
            ),
            _F(
                _v("0.18.0"),
                _v("0.20.0"),
                _K.VALUE,
                choices=_added(*_KV_FP8, "fp8_inc", "bfloat16", "fp8_ds_mla", "float16"),
                default="auto",
            ),
            _F(_v("0.20.0"), _v("0.25.0"), _K.VALUE, choices=_KV_0_20, default="auto"),
            _F(_v("0.25.0"), _v("0.28.0"), _K.VALUE, choices=_added(*_KV_0_20, "int4_per_token_head"), default="auto"),
            _F(
                _v("0.28.0"),
                _v("0.30.0"),
                _K.VALUE,
                choices=_added(*_KV_0_20, "int4_per_token_head", "nvfp4_4over6"),
                default="auto",
            ),
            _F(
                _v("0.30.0"),
                _v("0.32.0"),
                _K.VALUE,
                choices=_added(*_KV_0_20, "int4_per_token_head", "nvfp4_4over6", "nvfp4_ds_mla"),
                default="auto",
            ),
            _F(
                _v("0.32.0"),
                _v("0.33.0"),
                _K.VALUE,
                choices=_added(*_KV_0_20, "int4_per_token_head", "nvfp4_4over6", "nvfp4_ds_mla", "ultraquant_4bit"),
                default="auto",
            ),
            _F(_v("0.33.0"), None, _K.VALUE, default="auto"),
        ),
        source="wheel 0.3.3-0.8.4: vllm/engine/arg_utils.py choices; wheel 0.8.5-0.32.0: the CacheDType "
        "Literal (vllm/config.py, vllm/config/cache.py)",
        notes=(
            Note(
                _v("0.33.0"),
                "The field becomes `CacheDType | str`; whether the parser still restricts the values was "
                "not verified, so values are not checked from 0.33.0 on.",
            ),
        ),
    ),
    FlagSpec(
        name="--enforce-eager",
        summary="Disable CUDA graphs / torch.compile: faster start, slower decode.",
        forms=(
            _F(_v("0.3.3"), _v("0.9.0"), _K.SWITCH, default="False"),
            _F(_v("0.9.0"), None, _K.BOOL_OPTIONAL, default="False"),
        ),
        source="wheel 0.3.3-0.8.5.post1: action='store_true'; wheel 0.9.0: ModelConfig.enforce_eager: bool",
    ),
    FlagSpec(
        name="--max-num-batched-tokens",
        summary="Token budget per scheduler step.",
        forms=(
            _F(_v("0.3.3"), _v("0.9.1"), _K.VALUE, _T.INT, default="None"),
            _F(_v("0.9.1"), None, _K.VALUE, _T.HUMAN_INT, default="None"),
        ),
        source="wheel 0.3.3-0.8.4: type=int; wheel 0.9.1: get_kwargs gives max_num_batched_tokens "
        "human_readable_int (vllm/engine/arg_utils.py)",
    ),
    FlagSpec(
        name="--disable-log-requests",
        summary="Stop logging each request (old default: requests were logged).",
        forms=(
            _F(_v("0.3.3"), _v("0.10.1"), _K.SWITCH, default="False"),
            _F(_v("0.10.1"), _v("0.17.0"), _K.BOOL_OPTIONAL, default="True"),
        ),
        source="wheel 0.3.3-0.10.0: store_true; wheel 0.10.1-0.16.0: vllm/engine/arg_utils.py "
        "BooleanOptionalAction, deprecated=True, next to the new --enable-log-requests; absent from 0.17.0",
        renamed_to="--enable-log-requests",
        renamed_in=_v("0.10.1"),
        deprecated_since=_v("0.10.1"),
        replacement="requests are not logged by default since 0.10.1, so just drop it "
        "(its opposite is --enable-log-requests)",
    ),
    FlagSpec(
        name="--enable-log-requests",
        summary="Log each request (off by default).",
        forms=(_F(_v("0.10.1"), None, _K.BOOL_OPTIONAL, default="False"),),
        source="wheel 0.10.0 lacks it; wheel 0.10.1: vllm/engine/arg_utils.py BooleanOptionalAction",
    ),
    FlagSpec(
        name="--uvicorn-log-level",
        summary="Log level of the HTTP server.",
        forms=(_F(_v("0.4.0"), None, _K.VALUE, choices=_UVICORN_LEVELS, default="info"),),
        source="wheel 0.3.3 lacks it; wheel 0.4.0: vllm/entrypoints/openai/cli_args.py choices; from 0.10.0 "
        "the FrontendArgs Literal",
    ),
    FlagSpec(
        name="--enable-chunked-prefill",
        summary="Split long prompts into chunks batched with decodes.",
        forms=(
            _F(_v("0.4.0"), _v("0.4.1"), _K.BOOL_TYPED_VALUE, default="False"),
            _F(_v("0.4.1"), _v("0.5.3"), _K.SWITCH, default="False"),
            _F(_v("0.5.3"), _v("0.8.5"), _K.OPTIONAL_BOOL_VALUE, choices=("true", "false")),
            _F(_v("0.8.5"), None, _K.BOOL_OPTIONAL, default="None"),
        ),
        source="wheel 0.4.0(.post1): type=bool; wheel 0.4.1: store_true; wheel 0.5.3: StoreBoolean, "
        "nargs='?' (value true/false, case-insensitive); wheel 0.8.5: SchedulerConfig field -> "
        "BooleanOptionalAction",
        notes=(
            Note(
                _v("0.8.0"),
                "The V1 engine (the default from 0.8.0) forces it on; later releases turn it on when unset for "
                "models that support it (wheel 0.32.0: vllm/engine/arg_utils.py).",
            ),
        ),
    ),
    FlagSpec(
        name="--seed",
        summary="Random seed.",
        forms=(
            _F(_v("0.3.3"), _v("0.8.0"), _K.VALUE, _T.INT, default="0"),
            _F(_v("0.8.0"), _v("0.9.0"), _K.VALUE, _T.INT, default="None"),
            _F(_v("0.9.0"), _v("0.12.0"), _K.VALUE, _T.OPTIONAL_INT, default="None"),
            _F(_v("0.12.0"), None, _K.VALUE, _T.INT, default="0"),
        ),
        source="wheel 0.3.3-0.7.3: EngineArgs.seed = 0; wheel 0.8.0: Optional None; wheel 0.9.0: "
        "ModelConfig.seed Optional[int]; wheel 0.12.0: int = 0",
    ),
    FlagSpec(
        name="--load-format",
        summary="Weight file format / loader (auto, safetensors, pt, dummy, ...).",
        forms=(_F(_v("0.3.3"), None, _K.VALUE, default="auto"),),
        source="wheel 0.3.3-0.10.0: vllm/engine/arg_utils.py with choices; wheel 0.10.1: free text "
        "(LoadConfig.load_format: Union[str, LoadFormats])",
        notes=(Note(_v("0.3.3"), "Values are not validated here (the loader list changes between releases)."),),
    ),
    FlagSpec(
        name="--cpu-offload-gb",
        summary="GiB of weights per GPU to keep in CPU memory.",
        forms=(_F(_v("0.5.3"), None, _K.VALUE, _T.FLOAT, default="0"),),
        source="wheel 0.5.2 lacks it; wheel 0.5.3: vllm/engine/arg_utils.py type=float default 0; from 0.8.5 "
        "CacheConfig, from 0.17.0 UVAOffloadConfig",
    ),
)


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


_DATA_DIR = Path(__file__).resolve().parent / "data"


def complete_flag_list_path(version: VllmVersion) -> Path:
    return _DATA_DIR / f"vllm-{version}-server-flags.txt"


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
    errors: list[str] = []
    if version < OLDEST_EXAMINED:
        errors.append(
            f"vLLM {version} is older than the oldest release this table covers ({OLDEST_EXAMINED}); "
            "its flags cannot be checked"
        )
        return errors
    options = complete_flag_list(version)
    serve = version >= SERVE_ENTRYPOINT_SINCE
    entry = " ".join(image_entrypoint(version))
    positionals: list[str] = []
    model_option_given = False
    model_in_argv = any(token == "--model" or token.startswith("--model=") for token in argv)
    index = 0

    def next_value() -> str | None:
        if index + 1 < len(argv) and not _looks_like_option(argv[index + 1]):
            return argv[index + 1]
        return None

    while index < len(argv):
        token = argv[index]
        if token == "--":
            positionals.extend(argv[index + 1 :])
            break
        if not _looks_like_option(token):
            positionals.append(token)
            index += 1
            continue
        option, has_inline, inline = token.partition("=")
        if option.startswith("--") and version >= _UNDERSCORES_ACCEPTED_SINCE:
            option = "--" + option[2:].replace("_", "-")
        shown = option

        if option in ("-h", "--help"):
            errors.append(f"{token}: the server would print its help and exit; remove it")
            index += 1
            continue

        found = _lookup(option, version)
        if found is None and option.startswith("--") and "_" in option:
            dashed = "--" + option[2:].replace("_", "-")
            if _lookup(dashed, version) is not None:
                errors.append(
                    f"{shown}: vLLM {version} does not accept underscores in option names (it does from "
                    f"{_UNDERSCORES_ACCEPTED_SINCE}); write {dashed}"
                )
                option = shown = dashed
                found = _lookup(option, version)
        if found is None:
            index = _check_unknown(argv, index, option, has_inline == "=", version, options, errors)
            continue
        spec, negated = found
        if spec.name == "--model":
            model_option_given = True
        form = spec.form_at(version)
        if form is None:
            if version < spec.added:
                errors.append(
                    f"{shown}: vLLM {version} does not have it (added in {spec.added}); the server would exit "
                    f"with 'unrecognized arguments'; remove it or use a vLLM {spec.added} or newer image"
                )
            else:
                errors.append(_describe_removed(spec, version, shown))
            nearest = spec.forms[0] if version < spec.added else spec.forms[-1]
            value = None if has_inline else next_value()
            takes = nearest.kind in _TAKES_VALUE or (
                nearest.kind is Kind.OPTIONAL_BOOL_VALUE and value is not None and value.lower() in ("true", "false")
            )
            index += 2 if takes and value is not None else 1
            continue
        if option != spec.name and not negated:
            alias = next(a for a in spec.aliases if a.option == option)
            if not alias.covers(version):
                errors.append(
                    f"{shown}: vLLM {version} does not have this spelling (added in {alias.since}); use {spec.name}"
                )
        if negated and form.kind is not Kind.BOOL_OPTIONAL:
            errors.append(
                f"{shown}: vLLM {version} has no {spec.negation} form ("
                + _negation_history(spec)
                + f"); leave {spec.name} out instead"
            )
            index += 1
            continue

        kind = form.kind
        if kind in (Kind.SWITCH, Kind.BOOL_OPTIONAL):
            if has_inline:
                errors.append(f"{shown}: takes no value in vLLM {version} (a boolean flag); drop '={inline}'")
            else:
                stray = next_value()
                # With `vllm serve` a lone positional right after a switch is the model, as argparse reads it.
                model_slot_free = serve and not positionals and not model_in_argv
                if stray is not None and not model_slot_free:
                    errors.append(
                        f"{shown}: takes no value in vLLM {version} (a boolean flag); {stray!r} after it would be "
                        "an unrecognized argument"
                    )
                    index += 1
            index += 1
            continue
        if kind is Kind.OPTIONAL_BOOL_VALUE:
            value = inline if has_inline else next_value()
            if value is not None and value.lower() not in ("true", "false"):
                errors.append(f"{shown}: vLLM {version} accepts only true or false after it, not {value!r}")
            index += 1 if has_inline or value is None else 2
            continue

        # The flag takes one (VALUE, BOOL_TYPED_VALUE) or more (VALUES) values.
        if has_inline:
            values = [inline]
            index += 1
        else:
            values = []
            index += 1
            while index < len(argv) and not _looks_like_option(argv[index]) and argv[index] != "--":
                values.append(argv[index])
                index += 1
                if kind is not Kind.VALUES:
                    break
        if not values:
            errors.append(f"{shown}: needs a value in vLLM {version}, but none follows it")
            continue
        if kind is Kind.BOOL_TYPED_VALUE:
            if values[0].strip().lower() in ("false", "0", "no", "off", ""):
                errors.append(
                    f"{shown} {values[0]}: vLLM {version} parses any non-empty value as True (type=bool); "
                    "leave the flag out to keep it off"
                )
            continue
        for value in values:
            problem = _value_error(value, form)
            if problem is not None:
                errors.append(f"{shown}: {problem} (vLLM {version})")

    errors.extend(_check_positionals(positionals, serve, model_option_given, entry, version))
    return errors


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
        "Generated from `infra/catalog/vllm_flags.py` by `render_markdown()`; do not edit by hand.",
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
        "rewriting it to the positional model with a deprecation warning)",
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
