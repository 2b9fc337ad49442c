"""The vLLM metrics catalog: what the product publishes, typed as vLLM exposes them, and checked when loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vllm_endpoint.infra.catalog.data_files import CatalogDataError, load_data_file
from vllm_endpoint.infra.catalog.names import DEFAULT_VLLM_VERSION
from vllm_endpoint.infra.catalog.vllm_metrics import (
    AGENT_TYPES,
    METRICS_VLLM_VERSION,
    UP_METRIC,
    VLLM_METRICS,
    VLLM_METRICS_FILE,
    VllmMetricsFile,
    agent_publishes,
)


def _raw() -> dict:
    return yaml.safe_load(VLLM_METRICS_FILE.read_text(encoding="utf-8"))


def _load_changed(tmp_path: Path, change: dict) -> VllmMetricsFile:
    raw = _raw()
    raw |= change
    path = tmp_path / "vllm-metrics.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_data_file(VllmMetricsFile, path)


def test_the_file_describes_the_pinned_vllm() -> None:
    assert METRICS_VLLM_VERSION == DEFAULT_VLLM_VERSION


def test_every_figure_issue_13_asks_for_has_a_metric_of_the_right_kind() -> None:
    by_use: dict[str, set[str]] = {}
    for metric in VLLM_METRICS:
        by_use.setdefault(metric.use, set()).add(metric.name)
    # requests running and waiting, KV-cache usage; prompt and generation tokens per second; TTFT and e2e latency.
    assert len(by_use["value"]) >= 3 and len(by_use["rate"]) >= 2 and len(by_use["percentiles"]) >= 2
    assert all(m.type == {"value": "gauge", "rate": "counter", "percentiles": "histogram"}[m.use] for m in VLLM_METRICS)


def test_the_up_signal_is_a_gauge_the_agent_carries() -> None:
    assert UP_METRIC.type == "gauge" and agent_publishes(UP_METRIC)
    assert sum(m.up for m in VLLM_METRICS) == 1


def test_the_agent_drops_histograms_and_carries_gauges_and_counters() -> None:
    assert "histogram" not in AGENT_TYPES and {"gauge", "counter"} <= AGENT_TYPES


def test_a_use_that_does_not_fit_the_type_fails_the_load(tmp_path: Path) -> None:
    metrics = _raw()["metrics"]
    metrics[0] = metrics[0] | {"use": "rate"}  # a gauge cannot be a per-second rate
    bad_use = r"metrics\[0\] \(vllm:num_requests_running\).*use 'rate' needs a counter"
    with pytest.raises(CatalogDataError, match=bad_use):
        _load_changed(tmp_path, {"metrics": metrics})


def test_a_counter_without_its_exposed_suffix_fails_the_load(tmp_path: Path) -> None:
    metrics = [m | {"name": m["name"].removesuffix("_total")} if m["type"] == "counter" else m
               for m in _raw()["metrics"]]
    with pytest.raises(CatalogDataError, match="a counter is exposed as <name>_total"):
        _load_changed(tmp_path, {"metrics": metrics})


def test_two_up_signals_or_a_duplicate_or_an_unknown_key_fail_the_load(tmp_path: Path) -> None:
    metrics = _raw()["metrics"]
    with pytest.raises(CatalogDataError, match="exactly one metric must be the server's `up` signal"):
        _load_changed(tmp_path, {"metrics": [m | {"up": True} if m["type"] == "gauge" else m for m in metrics]})
    with pytest.raises(CatalogDataError, match="two entries are named"):
        _load_changed(tmp_path, {"metrics": [*metrics, metrics[1]]})
    with pytest.raises(CatalogDataError, match="field 'unit': Extra inputs are not permitted"):
        _load_changed(tmp_path, {"metrics": [metrics[0] | {"unit": "s"}, *metrics[1:]]})
