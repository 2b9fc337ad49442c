"""The data types the product accepts for `--dtype` and `--kv-cache-dtype`, from data/dtypes.yaml.

Every list of dtype names in the program is derived from here: the `dtype` and `kvCacheDtype`
settings' choices, the fit check's bytes per element, the checkpoint dtypes `config.json` may name.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Final

from pydantic import BaseModel, Field, field_validator

from vllm_endpoint.infra.catalog.data_files import STRICT, DataFile, data_path, load_data_file, unique_names

DTYPES_FILE: Final = data_path("dtypes.yaml")
# vLLM's own choice (the checkpoint's dtype, or the model's dtype for the KV cache); always accepted.
AUTO: Final = "auto"


class DtypeEntry(BaseModel):
    model_config = STRICT

    name: str
    bytes: Annotated[int, Field(gt=0)]
    aliases: tuple[str, ...] = ()


class DtypesFile(DataFile):
    dtypes: tuple[DtypeEntry, ...] = Field(min_length=1)
    kv_cache_dtypes: tuple[DtypeEntry, ...] = Field(min_length=1)

    _unique = field_validator("dtypes", "kv_cache_dtypes")(unique_names)


_DATA: Final = load_data_file(DtypesFile, DTYPES_FILE)

# Canonical names, in vLLM's order of preference (see dtypes.yaml).
DTYPES: Final[tuple[str, ...]] = tuple(d.name for d in _DATA.dtypes)
# `half` -> `float16`, `float` -> `float32`.
DTYPE_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {alias: d.name for d in _DATA.dtypes for alias in d.aliases}
)
# Bytes per element by every spelling (canonical and alias).
DTYPE_BYTES: Final[Mapping[str, int]] = MappingProxyType(
    {spelling: d.bytes for d in _DATA.dtypes for spelling in (d.name, *d.aliases)}
)
# What the `dtype` setting accepts.
DTYPE_CHOICES: Final[tuple[str, ...]] = (AUTO, *DTYPE_BYTES)

KV_CACHE_DTYPE_BYTES: Final[Mapping[str, int]] = MappingProxyType(
    {spelling: d.bytes for d in _DATA.kv_cache_dtypes for spelling in (d.name, *d.aliases)}
)
# What the `kvCacheDtype` setting accepts.
KV_CACHE_DTYPE_CHOICES: Final[tuple[str, ...]] = (AUTO, *KV_CACHE_DTYPE_BYTES)


def canonical_dtype(name: str) -> str:
    """`half` -> `float16`; a canonical name or an unknown one comes back unchanged."""
    return DTYPE_ALIASES.get(name, name)
