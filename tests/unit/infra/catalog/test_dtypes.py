"""The dtype lists live once, in data/dtypes.yaml; the settings, the fit check and the model facts use them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vllm_endpoint.infra.catalog import models
from vllm_endpoint.infra.catalog.dtypes import (
    DTYPE_ALIASES,
    DTYPE_BYTES,
    DTYPE_CHOICES,
    DTYPES,
    KV_CACHE_DTYPE_BYTES,
    KV_CACHE_DTYPE_CHOICES,
    canonical_dtype,
)
from vllm_endpoint.infra.catalog.names import DEFAULT_VLLM_VERSION
from vllm_endpoint.infra.catalog.vllm_flags import VllmVersion, flag_spec
from vllm_endpoint.infra.settings.models import ServerSettings

PINNED = VllmVersion.parse(DEFAULT_VLLM_VERSION)


def test_bytes_and_spellings() -> None:
    assert dict(DTYPE_BYTES) == {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4}
    assert dict(KV_CACHE_DTYPE_BYTES) == {"fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}
    assert [canonical_dtype(name) for name in ("half", "float", "bfloat16", "int8")] == [
        "float16", "float32", "bfloat16", "int8"]
    assert set(DTYPE_ALIASES.values()) <= set(DTYPES)


def test_model_facts_use_the_catalog_table() -> None:
    assert models.DTYPE_BYTES is DTYPE_BYTES


@pytest.mark.parametrize(("flag", "choices"), [
    ("--dtype", DTYPE_CHOICES), ("--kv-cache-dtype", KV_CACHE_DTYPE_CHOICES),
])
def test_every_choice_is_accepted_by_the_pinned_vllm(flag: str, choices: tuple[str, ...]) -> None:
    # The product must never offer a value the default image's parser would reject.
    form = flag_spec(flag).form_at(PINNED)
    assert form is not None and form.choices is not None
    assert set(choices) <= set(form.choices)


@pytest.mark.parametrize(("field", "choices", "outside"), [
    ("dtype", DTYPE_CHOICES, "float64"), ("kv_cache_dtype", KV_CACHE_DTYPE_CHOICES, "int4"),
])
def test_the_settings_accept_exactly_the_catalogs_choices(field: str, choices: tuple[str, ...], outside: str) -> None:
    for choice in choices:
        assert getattr(ServerSettings.model_validate({field: choice}), field) == choice
    with pytest.raises(ValidationError, match=f"must be one of {', '.join(map(repr, choices))}"):
        ServerSettings.model_validate({field: outside})
