"""infra/catalog/vllm_flags.py: version parsing, the flag table's shape, and check_server_args across releases."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools import gen_docs
from vllm_endpoint.infra.catalog.names import DEFAULT_VLLM_VERSION
from vllm_endpoint.infra.catalog.vllm_flags import (
    EXAMINED_RELEASES,
    FLAGS,
    NEWEST_EXAMINED,
    OLDEST_EXAMINED,
    FlagSpec,
    Form,
    Kind,
    ValueType,
    VllmVersion,
    check_server_args,
    complete_flag_list,
    flag_available,
    flag_spec,
    image_entrypoint,
    model_is_positional,
    render_markdown,
    runs_several_api_servers,
)

V = VllmVersion.parse
PINNED = V(DEFAULT_VLLM_VERSION)

# The command users ran against vllm/vllm-openai:v0.4.2.
ORIGINAL = [
    "--model", "Qwen/Qwen2.5-1.5B-Instruct", "--swap-space", "4", "--block-size", "16", "--max-num-seqs", "16",
    "--gpu-memory-utilization", "0.7", "--trust-remote-code", "--api-key", "secret",
]  # fmt: skip


def flags_named(errors: list[str]) -> list[str]:
    return [error.split(":", 1)[0].split(" ", 1)[0] for error in errors]


# ------------------------------------------------------------------------------------------------
# Versions


@pytest.mark.parametrize(
    ("text", "release", "post", "shown"),
    [
        ("0.32.0", (0, 32, 0), 0, "0.32.0"),
        ("v0.32.0", (0, 32, 0), 0, "0.32.0"),
        ("v0.8.5.post1", (0, 8, 5), 1, "0.8.5.post1"),
        ("0.4.2", (0, 4, 2), 0, "0.4.2"),
        ("0.10.1.1", (0, 10, 1, 1), 0, "0.10.1.1"),
        (" v0.9.0.1 ", (0, 9, 0, 1), 0, "0.9.0.1"),
    ],
)
def test_parse_accepts_release_tags(text: str, release: tuple[int, ...], post: int, shown: str) -> None:
    version = V(text)
    assert (version.release, version.post, str(version)) == (release, post, shown)


@pytest.mark.parametrize(
    "text", ["latest", "nightly", "", "v", "0.32", "32", "v0.6.0rc1", "0.11.0.dev12", "0.32.0+cpu", "0.x.1"]
)
def test_parse_refuses_tags_that_are_not_releases(text: str) -> None:
    with pytest.raises(ValueError, match="not a released vLLM version"):
        V(text)


def test_versions_order_like_releases() -> None:
    ordered = ["0.4.2", "0.8.5", "0.8.5.post1", "0.9.0", "0.9.0.1", "0.9.1", "0.10.1", "0.10.1.1", "0.10.2", "0.32.0"]
    assert sorted(V(text) for text in reversed(ordered)) == [V(text) for text in ordered]
    assert VllmVersion((0, 10, 1, 0)) == V("0.10.1")
    assert list(EXAMINED_RELEASES) == sorted(set(EXAMINED_RELEASES))
    assert [str(OLDEST_EXAMINED), str(NEWEST_EXAMINED)] == ["0.3.3", "0.33.0"]
    assert PINNED in EXAMINED_RELEASES


# ------------------------------------------------------------------------------------------------
# The table's shape

_BRIEF_FLAGS_TEXT = """--model --served-model-name --revision --tokenizer --dtype --max-model-len
--gpu-memory-utilization --max-num-seqs --block-size --swap-space --tensor-parallel-size --pipeline-parallel-size
--trust-remote-code
--quantization --api-key --disable-fastapi-docs --disable-uvicorn-access-log --host --port --download-dir
--enable-prefix-caching
--generation-config --kv-cache-dtype --enforce-eager --max-num-batched-tokens --disable-log-requests
--uvicorn-log-level --enable-chunked-prefill --seed --load-format --cpu-offload-gb"""
BRIEF_FLAGS = _BRIEF_FLAGS_TEXT.split()


def test_table_has_every_flag_the_product_needs_once() -> None:
    names = [spec.name for spec in FLAGS]
    assert len(names) == len(set(names))
    assert set(BRIEF_FLAGS) <= set(names)


@pytest.mark.parametrize("spec", FLAGS, ids=lambda spec: spec.name)
def test_forms_are_contiguous_and_consistent(spec: FlagSpec) -> None:
    assert spec.forms[0].since >= OLDEST_EXAMINED
    for before, after in zip(spec.forms, spec.forms[1:], strict=False):
        assert before.until == after.since
    for form in spec.forms:
        assert form.until is None or form.since < form.until
        if form.choices is not None and form.value_type is ValueType.INT:
            assert all(choice.isdigit() for choice in form.choices)
    assert spec.source
    if spec.removed is not None:
        assert spec.replacement, "a removed flag needs advice for the error message"
    if spec.renamed_to is not None:
        assert flag_spec(spec.renamed_to).added == spec.renamed_in


# ------------------------------------------------------------------------------------------------
# The original command across releases


@pytest.mark.parametrize(
    ("version", "rejected"),
    [
        ("0.4.2", []),
        ("0.6.3", []),
        ("0.8.5.post1", []),
        ("0.17.0", []),
        ("0.17.1", []),
        ("0.18.0", ["--swap-space"]),
        ("0.22.0", ["--swap-space"]),
        ("0.32.0", ["--swap-space"]),
    ],
)
def test_original_command(version: str, rejected: list[str]) -> None:
    errors = check_server_args(ORIGINAL, V(version))
    assert flags_named(errors) == rejected
    for error in errors:
        assert f"vLLM {version}" in error
        assert "removed in 0.18.0" in error
        assert "no replacement" in error
        assert "remove it" in error


# ------------------------------------------------------------------------------------------------
# Flags that come and go


@pytest.mark.parametrize(
    ("argv", "version", "needles"),
    [
        (["--disable-log-requests"], "0.17.0", ["removed in 0.17.0", "--enable-log-requests", "0.10.1"]),
        (["--disable-log-requests"], "0.32.0", ["removed in 0.17.0", "drop it"]),
        (["--no-disable-log-requests"], "0.17.0", ["removed in 0.17.0"]),
        (["--swap-space", "4"], "0.18.0", ["removed in 0.18.0"]),
        (["--disable-fastapi-docs"], "0.4.2", ["added in 0.6.2", "unrecognized"]),
        (["--disable-fastapi-docs"], "0.6.1.post2", ["added in 0.6.2"]),
        (["--generation-config", "auto"], "0.6.5", ["added in 0.6.6"]),
        (["--enable-log-requests"], "0.10.0", ["added in 0.10.1"]),
        (["--cpu-offload-gb", "4"], "0.5.2", ["added in 0.5.3"]),
        (["--enable-prefix-caching"], "0.3.3", ["added in 0.4.0"]),
        (["--device-memory-utilization", "0.5"], "0.30.0", ["added in 0.31.0", "--gpu-memory-utilization"]),
    ],
)
def test_flag_outside_its_releases_is_an_error(argv: list[str], version: str, needles: list[str]) -> None:
    errors = check_server_args(argv, V(version))
    assert len(errors) == 1
    assert errors[0].startswith(argv[0])
    assert f"vLLM {version}" in errors[0]
    for needle in needles:
        assert needle in errors[0]


@pytest.mark.parametrize(
    ("argv", "version"),
    [
        (["--disable-log-requests"], "0.16.0"),
        (["--disable-log-requests"], "0.4.2"),
        (["--swap-space", "4"], "0.17.1"),
        (["--disable-fastapi-docs"], "0.6.2"),
        (["--generation-config", "vllm"], "0.6.6"),
        (["--enable-log-requests"], "0.10.1"),
        (["--device-memory-utilization", "0.5"], "0.31.0"),
        (["-tp", "2", "-pp", "1", "-q", "awq"], "0.4.2"),
    ],
)
def test_flag_inside_its_releases_passes(argv: list[str], version: str) -> None:
    assert check_server_args(argv, V(version)) == []


def test_removed_flag_with_value_does_not_swallow_the_next_flag() -> None:
    for argv in (["--swap-space", "4", "--max-num-seqs", "x"], ["--swap-space=4", "--max-num-seqs", "x"]):
        assert flags_named(check_server_args(argv, V("0.32.0"))) == ["--swap-space", "--max-num-seqs"]


# ------------------------------------------------------------------------------------------------
# Values, booleans, negations


@pytest.mark.parametrize(
    ("argv", "version", "ok"),
    [
        (["--max-num-seqs=16"], "0.4.2", True),
        (["--max-num-seqs"], "0.32.0", False),
        (["--max-num-seqs", "--trust-remote-code"], "0.32.0", False),
        (["--max-num-seqs", "sixteen"], "0.4.2", False),
        (["--max-num-seqs", "-16"], "0.32.0", True),  # the parser takes it; it is a number
        (["--served-model-name", "-my model"], "0.32.0", True),  # argparse: a space makes it a value
        (["--api-key=a b"], "0.32.0", True),
        (["--api-key", "-k"], "0.32.0", False),  # an option-like token is not a value
        (["--api-key"], "0.32.0", False),
        (["--api-key", "a", "b"], "0.32.0", True),
        (["--api-key", "a", "b"], "0.10.0", False),  # one key only: 'b' is a stray argument
        (["--served-model-name", "a", "b"], "0.4.1", True),
        (["--block-size", "48"], "0.4.2", False),
        (["--block-size=48"], "0.4.2", False),
        (["--block-size", "64"], "0.6.4.post1", True),
        (["--block-size", "64"], "0.6.5", False),
        (["--block-size", "256"], "0.17.1", True),
        (["--block-size", "48"], "0.17.1", False),
        (["--block-size", "48"], "0.18.0", True),
        (["--block-size", "0"], "0.23.0", False),
        (["--dtype", "float64"], "0.32.0", False),
        (["--dtype", "bfloat16"], "0.4.2", True),
        (["--kv-cache-dtype", "fp8"], "0.4.0", False),
        (["--kv-cache-dtype", "fp8"], "0.4.2", True),
        (["--kv-cache-dtype", "anything"], "0.33.0", True),  # choices not known from 0.33.0
        (["--uvicorn-log-level", "verbose"], "0.32.0", False),
        (["--uvicorn-log-level", "trace"], "0.4.0", True),
        (["--gpu-memory-utilization", "1.5"], "0.4.2", False),
        (["--gpu-memory-utilization", "0"], "0.11.0", True),  # not validated before 0.11.1
        (["--gpu-memory-utilization", "0"], "0.11.1", False),
        (["--gpu-memory-utilization", "1"], "0.32.0", True),
        (["--gpu-memory-utilization", "most"], "0.32.0", False),
        (["--max-model-len", "4k"], "0.8.3", False),
        (["--max-model-len", "4k"], "0.8.4", True),
        (["--max-model-len", "1.5K"], "0.8.4", False),
        (["--max-model-len", "auto"], "0.13.0", False),
        (["--max-model-len", "auto"], "0.14.0", True),
        (["--max-num-batched-tokens", "8k"], "0.9.0.1", False),
        (["--max-num-batched-tokens", "8k"], "0.9.1", True),
        (["--seed", "None"], "0.9.0", True),
        (["--seed", "None"], "0.12.0", False),
        (["--trust-remote-code=true"], "0.32.0", False),
        (["--trust-remote-code", "true", "--model", "m"], "0.32.0", False),
        (["--trust-remote-code", "true"], "0.4.2", False),
        (["--no-trust-remote-code"], "0.8.5.post1", False),
        (["--no-trust-remote-code"], "0.9.0", True),
        (["--no-enable-prefix-caching"], "0.6.4.post1", False),
        (["--no-enable-prefix-caching"], "0.6.5", True),
        (["--no-disable-fastapi-docs"], "0.9.2", False),
        (["--no-disable-fastapi-docs"], "0.10.0", True),
        (["--enable-chunked-prefill", "True"], "0.4.0", True),
        (["--enable-chunked-prefill", "False"], "0.4.0", False),  # type=bool reads it as True
        (["--enable-chunked-prefill"], "0.4.0", False),
        (["--enable-chunked-prefill"], "0.4.1", True),
        (["--enable-chunked-prefill", "false"], "0.4.1", False),
        (["--enable-chunked-prefill", "false"], "0.5.3", True),
        (["--enable-chunked-prefill=FALSE"], "0.8.4", True),
        (["--enable-chunked-prefill", "maybe"], "0.6.0", False),
        (["--enable-chunked-prefill", "false"], "0.8.5", False),
        (["--no-enable-chunked-prefill"], "0.8.5", True),
    ],
)
def test_values_and_booleans(argv: list[str], version: str, ok: bool) -> None:
    errors = check_server_args(argv, V(version))
    assert (errors == []) == ok, errors
    if errors:
        assert errors[0].startswith(argv[0].split("=")[0]) or errors[0].startswith(repr(argv[-1]))


def test_negation_error_says_what_to_do() -> None:
    [error] = check_server_args(["--no-enable-prefix-caching"], V("0.4.2"))
    assert "added in 0.6.5" in error
    assert "leave --enable-prefix-caching out" in error


# ------------------------------------------------------------------------------------------------
# Spellings, typos, positionals


@pytest.mark.parametrize(
    ("argv", "version", "ok"),
    [
        (["--max_num_seqs", "16"], "0.32.0", True),
        (["--max_num_seqs=16"], "0.5.1", True),
        (["--max_num_seqs", "16"], "0.5.0", False),
        (["--trust_remote_code"], "0.4.2", False),
        (["--swap_space", "4"], "0.32.0", False),
    ],
)
def test_underscore_spelling(argv: list[str], version: str, ok: bool) -> None:
    assert (check_server_args(argv, V(version)) == []) == ok


def test_typo_on_the_pinned_version_names_the_intended_flag() -> None:
    [error] = check_server_args(["--max-nm-seqs", "16"], PINNED)
    assert error.startswith("--max-nm-seqs:") and "did you mean --max-num-seqs?" in error


def test_abbreviation_on_the_pinned_version_is_refused() -> None:
    # argparse would expand it (allow_abbrev); a later flag could make it ambiguous, so spell it out.
    [error] = check_server_args(["--max-num-seq", "16", "--trust-remote-code"], PINNED)
    assert error.startswith("--max-num-seq:") and "abbreviation of --max-num-seqs" in error


def test_ambiguous_abbreviation_on_the_pinned_version() -> None:
    [error] = check_server_args(["--enable-prefix", "--model", "m"], PINNED)
    assert "ambiguous" in error


def test_unknown_flag_is_accepted_where_no_complete_list_exists() -> None:
    assert complete_flag_list(V("0.22.0")) is None
    assert check_server_args(["--max-nm-seqs", "16", "--model", "m"], V("0.22.0")) == []
    assert flags_named(check_server_args(["--max-nm-seqs", "16", "--model", "m"], PINNED)) == ["--max-nm-seqs"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--disable-log-stats"],
        ["--compilation-config", '{"mode": 3}'],
        ["--compilation-config.mode", "3"],
        ["-O3"],
        ["-O", "3"],
        ["-dp", "1", "--enable-expert-parallel"],
        ["--config", "serve.yaml"],
    ],
)
def test_flags_of_the_complete_list_pass_on_the_pinned_version(argv: list[str]) -> None:
    assert check_server_args(["--model", "m", *argv], PINNED) == []


def test_complete_list_flag_missing_its_value() -> None:
    [error] = check_server_args(["--compilation-config", "--model", "m"], PINNED)
    assert error.startswith("--compilation-config: needs a value")


@pytest.mark.parametrize(
    ("argv", "version", "ok"),
    [
        (["--model", "m", "extra"], "0.4.2", False),
        (["m"], "0.11.0", False),
        (["m", "--max-num-seqs", "8"], "0.11.1", True),
        (["--trust-remote-code", "m"], "0.32.0", True),  # argparse reads m as the positional model
        (["--model", "m", "other"], "0.32.0", False),
        (["m", "other"], "0.32.0", False),
        (["--help"], "0.32.0", False),
        (["-h"], "0.4.2", False),
    ],
)
def test_positionals_and_help(argv: list[str], version: str, ok: bool) -> None:
    assert (check_server_args(argv, V(version)) == []) == ok


def test_versions_older_than_the_table_are_reported() -> None:
    [error] = check_server_args(["--model", "m"], V("0.2.7"))
    assert "older than the oldest release" in error


# ------------------------------------------------------------------------------------------------
# flag_available, entrypoints, the option list, the docs


@pytest.mark.parametrize(
    ("flag", "version", "available"),
    [
        ("--disable-fastapi-docs", "0.4.2", False),
        ("--disable-fastapi-docs", "0.6.2", True),
        ("--swap-space", "0.17.1", True),
        ("--swap-space", "0.18.0", False),
        ("--no-enable-prefix-caching", "0.6.4", False),
        ("--no-enable-prefix-caching", "0.6.5", True),
        ("--no-swap-space", "0.4.2", False),
        ("-tp", "0.4.2", True),
        ("--device-memory-utilization", "0.30.0", False),
        ("--device-memory-utilization", "0.31.0", True),
        ("--disable-log-stats", "0.32.0", True),
        ("--no-such-flag", "0.32.0", False),
    ],
)
def test_flag_available(flag: str, version: str, available: bool) -> None:
    assert flag_available(flag, V(version)) is available


def test_flag_available_refuses_to_guess() -> None:
    with pytest.raises(ValueError, match="not in the vLLM flag table"):
        flag_available("--disable-log-stats", V("0.22.0"))


@pytest.mark.parametrize(
    ("version", "entrypoint"),
    [
        ("0.4.2", ("python3", "-m", "vllm.entrypoints.openai.api_server")),
        ("0.11.0", ("python3", "-m", "vllm.entrypoints.openai.api_server")),
        ("0.11.1", ("vllm", "serve")),
        ("0.32.0", ("vllm", "serve")),
    ],
)
def test_image_entrypoint(version: str, entrypoint: tuple[str, ...]) -> None:
    assert image_entrypoint(V(version)) == entrypoint


def test_pinned_option_list_holds_every_table_flag_of_that_version() -> None:
    options = complete_flag_list(PINNED)
    assert options is not None and len(options) > 300
    for spec in FLAGS:
        form = spec.form_at(PINNED)
        assert (spec.name in options) == (form is not None), spec.name
        if form is not None:
            assert (spec.negation in options) == (form.kind is Kind.BOOL_OPTIONAL), spec.name


def test_committed_docs_match_the_table() -> None:
    assert gen_docs.problems(paths=["docs/vllm-flags.md"]) == []


# ------------------------------------------------------------------------------------------------
# Properties

_SAFE_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789/._", min_size=1, max_size=12)


def _value(form: Form) -> st.SearchStrategy[str]:
    if form.choices is not None:
        return st.sampled_from(form.choices)
    if form.value_type in (ValueType.INT, ValueType.OPTIONAL_INT):
        return st.integers(1, 100_000).map(str)
    if form.value_type is ValueType.FLOAT:
        high = form.le if form.le is not None else 1000.0
        return st.floats(0.01, high, allow_nan=False).map(repr)
    human = st.one_of(st.integers(1, 10**6).map(str), st.integers(1, 64).map(lambda n: f"{n}k"))
    if form.value_type is ValueType.HUMAN_INT:
        return human
    if form.value_type is ValueType.HUMAN_INT_OR_AUTO:
        return st.one_of(human, st.sampled_from(["auto", "-1"]))
    return _SAFE_TEXT


@st.composite
def _tokens(draw: st.DrawFn, spec: FlagSpec, form: Form, version: VllmVersion) -> list[str]:
    names = [spec.name, *(alias.option for alias in spec.aliases if alias.covers(version))]
    name = draw(st.sampled_from(names))
    kind = form.kind
    if kind is Kind.SWITCH:
        return [name]
    if kind is Kind.BOOL_OPTIONAL:
        return [draw(st.sampled_from([name, spec.negation]))]
    if kind is Kind.OPTIONAL_BOOL_VALUE:
        return draw(st.sampled_from([[name], [name, "true"], [name, "False"], [f"{name}=TRUE"]]))
    if kind is Kind.BOOL_TYPED_VALUE:
        return [name, "True"]
    if kind is Kind.VALUES:
        values = draw(st.lists(_value(form), min_size=1, max_size=3))
        return [name, *values]
    value = draw(_value(form))
    return draw(st.sampled_from([[name, value], [f"{name}={value}"]]))


@st.composite
def _valid_command(draw: st.DrawFn) -> tuple[VllmVersion, list[list[str]]]:
    version = draw(st.sampled_from(EXAMINED_RELEASES))
    present = [(spec, form) for spec in FLAGS if (form := spec.form_at(version)) is not None]
    chosen = draw(st.lists(st.sampled_from(present), unique_by=lambda pair: pair[0].name, max_size=len(present)))
    groups = [draw(_tokens(spec, form, version)) for spec, form in chosen]
    return version, draw(st.permutations(groups))


@settings(max_examples=300, deadline=None)
@given(_valid_command())
def test_any_valid_command_passes(command: tuple[VllmVersion, list[list[str]]]) -> None:
    version, groups = command
    argv = [token for group in groups for token in group]
    assert check_server_args(argv, version) == []


@settings(max_examples=300, deadline=None)
@given(_valid_command(), st.data())
def test_a_flag_outside_its_releases_fails_naming_it(
    command: tuple[VllmVersion, list[list[str]]], data: st.DataObject
) -> None:
    version, groups = command
    absent = [spec for spec in FLAGS if spec.form_at(version) is None]
    if not absent:
        return
    spec = data.draw(st.sampled_from(absent))
    # Spell it the way it last (or first) existed, with a value where it took one.
    nearest = spec.forms[-1] if spec.removed is not None and version >= spec.removed else spec.forms[0]
    inserted = data.draw(_tokens(spec, nearest, nearest.since))
    position = data.draw(st.integers(0, len(groups)))
    argv = [token for group in [*groups[:position], inserted, *groups[position:]] for token in group]
    errors = check_server_args(argv, version)
    assert len(errors) == 1, errors
    assert errors[0].startswith(inserted[0].split("=")[0])
    assert f"vLLM {version}" in errors[0]
    expected = f"removed in {spec.removed}" if spec.removed and version >= spec.removed else f"added in {spec.added}"
    assert expected in errors[0]


# Read from the wheels (issue 15): `--api-server-count` was a `vllm serve`-only option in 0.9.1 and 0.9.2 (the
# api_server module those images run refuses it), joined the shared parser in 0.10.0, and starts several
# servers only where the image runs `vllm serve` (0.11.1 on).
@pytest.mark.parametrize(("version", "accepted", "several", "positional"), [
    ("0.9.2", False, False, False),
    ("0.10.0", True, False, False),
    ("0.11.0", True, False, False),
    ("0.11.1", True, True, True),
    ("0.32.0", True, True, True),
])
def test_api_server_count_and_the_positional_model_by_release(version: str, accepted: bool, several: bool,
                                                              positional: bool) -> None:
    argv = ["--model", "a/b", "--api-server-count", "2"]
    assert (check_server_args(argv, V(version)) == []) is accepted
    assert flag_available("-asc", V(version)) is accepted
    assert runs_several_api_servers(V(version)) is several
    assert model_is_positional(V(version)) is positional
    if positional:
        assert check_server_args(["a/b", "-asc", "4"], V(version)) == []
    else:
        assert check_server_args(["a/b", "--max-num-seqs", "4"], V(version)) != []


def test_the_model_option_is_recorded_as_deprecated_where_vllm_serve_runs() -> None:
    spec = flag_spec("--model")
    assert spec.deprecated_since == V("0.11.1") and spec.removed is None
    assert "- deprecated from 0.11.1" in render_markdown()
    assert check_server_args(["--api-server-count", "0.5"], PINNED) == [
        "--api-server-count: '0.5' is not an integer (vLLM 0.32.0)"]
