"""Reading the catalog's data files (infra/catalog/data/): each is read once, when its module is imported.

Every file starts with the same header, `checked` (the date its facts were last read from their sources)
and `sources` (where they come from and how they were read), followed by its entries. A file is
validated by a frozen pydantic model that forbids unknown keys, so a misspelt or missing field fails
the import with one line per problem, naming the file, the entry and the field:

    .../data/gpus.yaml: gpus[1] (A10G): field 'memroy_mib': Extra inputs are not permitted

Stdlib, PyYAML and pydantic only: the vLLM venv imports the flag table through this module (see
tools/vllm_flag_table.py). JSON files are read with the same loader (JSON is YAML).
"""

from __future__ import annotations

import datetime
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Next to this module both in the checkout and in an installed wheel (pyproject's package-data ships
# infra/catalog/data/*); a path, not importlib.resources, because the flag tool imports the catalog
# without installing the package.
DATA_DIR: Final = Path(__file__).resolve().parent / "data"

# Every data model: an unknown key is an error (a typo must not leave a fact at its default), and a
# loaded fact cannot be changed by the code that reads it. Entries that are also the catalog's public
# types are pydantic dataclasses (callers use dataclasses.replace on them), frozen by their decorator.
STRICT: Final = ConfigDict(extra="forbid", frozen=True)
STRICT_ENTRY: Final = ConfigDict(extra="forbid")


class CatalogDataError(ValueError):
    """A data file that cannot be used; `problems` holds one line per problem."""

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class Source(BaseModel):
    """Where a data file's facts come from."""

    model_config = STRICT

    what: str = Field(description="Which facts of the file come from it.")
    where: str = Field(description="URL, or repository + path + commit, or the program that produced them.")
    how: str | None = Field(None, description="How they were read, where that is not obvious from `where`.")


class DataFile(BaseModel):
    """The header every data file carries; a file's model adds its entries."""

    model_config = STRICT

    checked: datetime.date
    sources: tuple[Source, ...] = Field(min_length=1)


M = TypeVar("M", bound=BaseModel)


class _Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)


# libyaml's parser when PyYAML was built with it (several times faster at import), else the Python one.
_SafeLoader: Final[type[yaml.SafeLoader]] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """A safe loader that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def data_path(name: str) -> Path:
    return DATA_DIR / name


def unique_names(entries: tuple[N, ...]) -> tuple[N, ...]:
    """A field validator for a file's entry list: two entries with one name would hide one of them."""
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise ValueError(f"two entries are named {entry.name!r}")
        seen.add(entry.name)
    return entries


def load_data_file(model: type[M], path: Path) -> M:
    """`path` parsed and validated as `model`; CatalogDataError naming every bad entry and field."""
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a safe loader
    except yaml.YAMLError as e:
        raise CatalogDataError(path, [f"{path}: not valid YAML/JSON: {e}"]) from None
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise CatalogDataError(path, [_describe(path, raw, error) for error in e.errors(include_url=False)]) from None


def _describe(path: Path, raw: Any, error: Any) -> str:
    entry, field = _entry_and_field(raw, tuple(error["loc"]))
    where = f"{entry}: " if entry else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    if not field:
        return f"{path}: {where}{message}"
    return f"{path}: {where}field {field!r}: {message}"


def _entry_and_field(raw: Any, loc: tuple[int | str, ...]) -> tuple[str, str]:
    """(`gpus[1] (A10G)`, `memory_mib`) for loc ("gpus", 1, "memory_mib"): the innermost entry that has a
    `name` (or an `id`), and the rest of the location below it."""
    node, walked, entry, entry_end = raw, "", "", 0
    for depth, part in enumerate(loc):
        walked += f"[{part}]" if isinstance(part, int) else (f".{part}" if walked else str(part))
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            name = (node.get("name") or node.get("id")) if isinstance(node, dict) else None
            if name is not None:
                entry, entry_end = f"{walked} ({name})", depth + 1
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            node = None
    rest = loc[entry_end:]
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in rest).lstrip(".")
    return entry, field
