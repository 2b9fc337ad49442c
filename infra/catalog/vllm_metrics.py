"""The vLLM Prometheus metrics the product publishes and alarms on, from data/vllm-metrics.yaml.

Each has its exact name and type as vLLM's /metrics exposes them (the real-parts tier checks the file
against the real server), what it means, and what the product shows of it. Which of them the CloudWatch
agent can carry is a fact of the agent (`AGENT_TYPES`): its Prometheus -> EMF pipeline drops histograms.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from vllm_endpoint.infra.catalog.data_files import STRICT, DataFile, data_path, load_data_file, unique_names

VLLM_METRICS_FILE: Final = data_path("vllm-metrics.yaml")

PrometheusType = Literal["gauge", "counter", "histogram", "summary"]
# What the product shows of a metric; each goes with one type (a rate of a gauge would mean nothing).
_USE_OF_TYPE: Final = {"value": "gauge", "rate": "counter", "percentiles": "histogram"}


class VllmMetric(BaseModel):
    model_config = STRICT

    # vLLM prefixes every metric of its own with `vllm:`; the prefix also keeps a typo from matching a
    # Python process metric of the same server.
    name: Annotated[str, Field(pattern=r"^vllm:[a-z0-9_]+$")]
    type: PrometheusType
    meaning: Annotated[str, Field(min_length=1)]
    use: Literal["value", "rate", "percentiles"]
    up: bool = False

    @model_validator(mode="after")
    def _use_fits_type(self) -> VllmMetric:
        if _USE_OF_TYPE[self.use] != self.type:
            raise ValueError(f"use {self.use!r} needs a {_USE_OF_TYPE[self.use]}, not a {self.type}")
        # prometheus_client names a counter's samples (and its TYPE line) <declared name>_total.
        if self.type == "counter" and not self.name.endswith("_total"):
            raise ValueError("a counter is exposed as <name>_total: give that name")
        return self


class VllmMetricsFile(DataFile):
    vllm_version: Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+$")]
    agent_types: tuple[PrometheusType, ...] = Field(min_length=1)
    metrics: tuple[VllmMetric, ...] = Field(min_length=1)

    _unique = field_validator("metrics")(unique_names)

    @model_validator(mode="after")
    def _one_up_signal(self) -> VllmMetricsFile:
        up = [m.name for m in self.metrics if m.up]
        if len(up) != 1:
            raise ValueError(f"exactly one metric must be the server's `up` signal, not {up}")
        if next(m for m in self.metrics if m.up).type != "gauge":
            raise ValueError("the `up` signal must be a gauge (reported at every scrape, not only on change)")
        return self


_DATA: Final = load_data_file(VllmMetricsFile, VLLM_METRICS_FILE)

# The vLLM release whose /metrics the file was read from (the real tier checks it against the pinned one).
METRICS_VLLM_VERSION: Final[str] = _DATA.vllm_version
VLLM_METRICS: Final[tuple[VllmMetric, ...]] = _DATA.metrics
AGENT_TYPES: Final[frozenset[str]] = frozenset(_DATA.agent_types)
# The metric that is present in every successful scrape: no datapoint of it means the server is not answering.
UP_METRIC: Final[VllmMetric] = next(m for m in VLLM_METRICS if m.up)


def agent_publishes(metric: VllmMetric) -> bool:
    """Whether the CloudWatch agent's Prometheus pipeline carries this metric's type at all."""
    return metric.type in AGENT_TYPES
