"""The catalog's data files: each loads, carries its sources, and a broken copy is refused by name.

Broken copies are written to tmp_path and read through the very loader and model the catalog module
uses at import, so what is checked here is what a typo in the committed file would do.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from vllm_endpoint.infra.catalog import (
    dtypes,
    gpus,
    models,
    prices,
    reserved_networks,
    security,
    vllm_flags,
    vllm_metrics,
)
from vllm_endpoint.infra.catalog.data_files import DATA_DIR, CatalogDataError, DataFile, load_data_file

# Every data file and the model its catalog module validates it with.
LOADERS: dict[str, type[DataFile]] = {
    "gpus.yaml": gpus.GpusFile,
    "instance-types.yaml": gpus.InstanceTypesFile,
    "models.yaml": models.ModelsFile,
    "dtypes.yaml": dtypes.DtypesFile,
    "vllm-flags.yaml": vllm_flags.VllmFlagsFile,
    "security.json": security.SecurityFile,
    "reserved-networks.yaml": reserved_networks.ReservedNetworksFile,
    "ebs-prices.yaml": prices.PricesFile,
    "vllm-metrics.yaml": vllm_metrics.VllmMetricsFile,
}
# Written by tools/vllm_flag_table.py --write from vLLM's own parser, in vLLM's terms (OPTION<TAB>ARITY).
GENERATED = {"vllm-0.32.0-server-flags.txt"}


def test_every_file_in_data_is_validated_by_a_loader() -> None:
    # A new data file without a loader would be read unchecked, or not at all.
    assert {p.name for p in DATA_DIR.iterdir()} == set(LOADERS) | GENERATED


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_each_data_file_loads_with_its_sources_and_date(name: str) -> None:
    data = load_data_file(LOADERS[name], DATA_DIR / name)
    assert datetime.date(2026, 1, 1) <= data.checked <= datetime.date.today()
    assert data.sources and all(source.what.strip() and source.where.strip() for source in data.sources)


def test_the_modules_expose_what_the_files_hold() -> None:
    assert len(gpus.GPU_MODELS) == 14 and len(gpus.INSTANCE_TYPES) == 57
    assert len(models.KNOWN_MODELS) == 14
    assert len(vllm_flags.FLAGS) == 33 and len(vllm_flags.EXAMINED_RELEASES) == 80
    assert security.SECURITY_FLOOR == "0.22.0"
    assert dtypes.DTYPES == ("bfloat16", "float16", "float32")


# ------------------------------------------------------------------------------------------------
# Broken copies


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())


def _broken_copy(tmp_path: Path, name: str, change: Callable[[Any], None]) -> Path:
    data = _read(DATA_DIR / name)
    change(data)
    path = tmp_path / name
    path.write_text(json.dumps(data) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False))
    return path


def _entry(data: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    return next(entry for entry in data[section] if entry["name"] == name)


def _rename(entry: dict[str, Any], old: str, new: str) -> None:
    entry[new] = entry.pop(old)


def _problems(model: type[BaseModel], path: Path) -> list[str]:
    with pytest.raises(CatalogDataError) as err:
        load_data_file(model, path)
    assert err.value.path == path
    assert str(err.value) == "\n".join(err.value.problems)
    return err.value.problems


# (file, what to break, the entry and the field the error must name)
TYPOS = [
    ("gpus.yaml", lambda d: _rename(_entry(d, "gpus", "A10G"), "memory_mib", "memroy_mib"), "A10G", "memroy_mib"),
    ("instance-types.yaml", lambda d: _rename(_entry(d, "instance_types", "g5.xlarge"), "vcpus", "vcpu"),
     "g5.xlarge", "vcpu"),
    ("models.yaml", lambda d: _rename(_entry(d, "models", "Qwen/Qwen3-8B"), "head_dim", "head_dims"),
     "Qwen/Qwen3-8B", "head_dims"),
    ("dtypes.yaml", lambda d: _rename(_entry(d, "dtypes", "float16"), "aliases", "alias"), "float16", "alias"),
    ("vllm-flags.yaml", lambda d: _rename(_entry(d, "flags", "--dtype")["forms"][0], "kind", "knid"),
     "--dtype", "forms[0].knid"),
    ("security.json", lambda d: _rename(d["advisories_below_floor"][1], "summary", "sumary"),
     "advisories_below_floor[1] (CVE-2025-59425)", "sumary"),
]


@pytest.mark.parametrize(("name", "change", "entry", "field"), TYPOS, ids=[t[0] for t in TYPOS])
def test_a_misspelt_field_is_named_with_file_and_entry(
    tmp_path: Path, name: str, change: Callable[[Any], None], entry: str, field: str
) -> None:
    path = _broken_copy(tmp_path, name, change)
    problems = _problems(LOADERS[name], path)
    assert any(p.startswith(f"{path}: ") and entry in p and f"field {field!r}" in p for p in problems), problems


MISSING = [
    ("gpus.yaml", lambda d: _entry(d, "gpus", "L4").pop("fp8"), "L4", "fp8"),
    ("instance-types.yaml", lambda d: _entry(d, "instance_types", "g6.xlarge").pop("ebs_baseline_mbps"),
     "g6.xlarge", "ebs_baseline_mbps"),
    ("models.yaml", lambda d: _entry(d, "models", "Qwen/Qwen2.5-7B-Instruct").pop("vocab_size"),
     "Qwen/Qwen2.5-7B-Instruct", "vocab_size"),
    ("dtypes.yaml", lambda d: _entry(d, "kv_cache_dtypes", "fp8").pop("bytes"), "fp8", "bytes"),
    ("vllm-flags.yaml", lambda d: _entry(d, "flags", "--seed").pop("source"), "--seed", "source"),
    ("security.json", lambda d: d.pop("vllm_security_floor"), "", "vllm_security_floor"),
]


@pytest.mark.parametrize(("name", "change", "entry", "field"), MISSING, ids=[t[0] for t in MISSING])
def test_a_missing_field_is_named_with_file_and_entry(
    tmp_path: Path, name: str, change: Callable[[Any], None], entry: str, field: str
) -> None:
    path = _broken_copy(tmp_path, name, change)
    problems = _problems(LOADERS[name], path)
    assert any(p.startswith(f"{path}: ") and entry in p and f"field {field!r}" in p for p in problems), problems


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    def two_typos(data: Any) -> None:
        _rename(_entry(data, "gpus", "T4"), "bf16", "bf61")
        _entry(data, "gpus", "H100-80GB")["memory_mib"] = "lots"

    problems = _problems(gpus.GpusFile, _broken_copy(tmp_path, "gpus.yaml", two_typos))
    assert any("gpus[0] (T4)" in p and "'bf61'" in p for p in problems), problems
    assert any("gpus[0] (T4)" in p and "'bf16'" in p for p in problems), problems
    assert any("gpus[6] (H100-80GB)" in p and "'memory_mib'" in p for p in problems), problems


@pytest.mark.parametrize(("name", "change", "needles"), [
    ("instance-types.yaml", lambda d: _entry(d, "instance_types", "p5.4xlarge").update(gpu="GH200"),
     ["p5.4xlarge", "field 'gpu'", "'GH200' is not a GPU in gpus.yaml"]),
    ("instance-types.yaml", lambda d: _entry(d, "instance_types", "p5en.48xlarge").update(
        prices_usd_per_hour={"us-west-2": 63.296}),
     ["no us-east-1 (price_region) price for p5en.48xlarge"]),
    ("instance-types.yaml", lambda d: _entry(d, "instance_types", "g5.xlarge").update(prices_usd_per_hour={}),
     ["g5.xlarge", "prices_usd_per_hour is empty: say in source_note why there is no on-demand price"]),
    ("instance-types.yaml", lambda d: _entry(d, "instance_types", "g5.xlarge").update(
        prices_usd_per_hour={"us-east-1": 1.006, "Ireland": 1.123}),
     ["g5.xlarge", "field 'prices_usd_per_hour.Ireland.[key]'", "should match pattern"]),
    ("instance-types.yaml", lambda d: _entry(d, "instance_types", "g6e.xlarge").update(
        prices_usd_per_hour={"us-east-1": 0}),
     ["g6e.xlarge", "field 'prices_usd_per_hour.us-east-1'", "greater than 0"]),
    ("instance-types.yaml", lambda d: d["refused_families"].update(g7e="why not"),
     ["refused_families lists g7e, which instance_types also lists"]),
    ("gpus.yaml", lambda d: _entry(d, "gpus", "H200").update(memory_mib=None),
     ["gpus[7] (H200)", "memory_mib is null: say in source_note why"]),
    ("gpus.yaml", lambda d: _entry(d, "gpus", "B200").update(aliases=["h100"]),
     ["field 'gpus'", "the name 'h100' is used by both H100-80GB and B200"]),
    ("instance-types.yaml", lambda d: _entry(d, "instance_types", "p5.4xlarge").pop("source_note"),
     ["p5.4xlarge", "say in source_note why"]),
    ("gpus.yaml", lambda d: _entry(d, "gpus", "L4").update(compute_capability=8.9),
     ["L4", "field 'compute_capability'"]),
    ("gpus.yaml", lambda d: d["gpus"].append(dict(d["gpus"][0])), ["field 'gpus'", "two entries are named 'T4'"]),
    ("vllm-flags.yaml", lambda d: _entry(d, "flags", "--seed")["forms"][1].update(since="0.8.1"),
     ["--seed", "one ends at 0.8.0, the next starts at 0.8.1"]),
    ("vllm-flags.yaml", lambda d: _entry(d, "flags", "--seed")["forms"][0].update(since=0.1),
     ["--seed", "field 'forms[0].since'", "write the release as text"]),
    ("vllm-flags.yaml", lambda d: _entry(d, "flags", "--swap-space").pop("replacement"),
     ["--swap-space", "needs `replacement`"]),
    ("vllm-flags.yaml", lambda d: _entry(d, "flags", "--dtype")["forms"][0].update(choices=[8, 16]),
     ["--dtype", "field 'forms[0].choices[0]'"]),
    ("security.json", lambda d: d.update(vllm_security_floor="0.17.1"),
     ["vllm_security_floor 0.17.1 is below the fix of CVE-2026-48746 (fixed in 0.22.0), "
      "CVE-2026-27893 (fixed in 0.18.0)"]),
    ("security.json", lambda d: d.update(vllm_security_floor="latest"),
     ["field 'vllm_security_floor'", "'latest' is not a released vLLM version"]),
], ids=lambda value: value if isinstance(value, str) else "")
def test_a_wrong_value_is_named(tmp_path: Path, name: str, change: Callable[[Any], None], needles: list[str]) -> None:
    problems = _problems(LOADERS[name], _broken_copy(tmp_path, name, change))
    assert any(all(needle in p for needle in needles) for p in problems), problems


def test_a_key_given_twice_is_refused_not_overwritten(tmp_path: Path) -> None:
    # PyYAML alone would keep the second value silently.
    text = (DATA_DIR / "dtypes.yaml").read_text().replace("    bytes: 4\n", "    bytes: 4\n    bytes: 8\n", 1)
    path = tmp_path / "dtypes.yaml"
    path.write_text(text)
    problems = _problems(dtypes.DtypesFile, path)
    assert len(problems) == 1 and "key 'bytes' appears twice" in problems[0] and str(path) in problems[0]


def test_a_file_that_is_not_yaml_is_named(tmp_path: Path) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text("gpus: [unclosed\n")
    assert _problems(gpus.GpusFile, path)[0].startswith(f"{path}: not valid YAML/JSON")
