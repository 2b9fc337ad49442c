"""The CloudWatch agent's configuration on an AWS host: the GPU's utilization and memory, and vLLM's metrics.

Two files: the agent's JSON (`metrics.metrics_collected.nvidia_gpu`, and `logs.metrics_collected.prometheus`
whose `emf_processor` turns the scraped vLLM metrics into CloudWatch metrics of the stack's namespace with a
`stack` dimension), and the Prometheus scrape config that JSON points at.

Where the agent scrapes: vLLM's own port (VLLM_CONTAINER_PORT) at the vLLM container's address on the
endpoint's private Docker network, from the host. vLLM publishes no port, but that network is a plain
bridge whose interface is in the host's network namespace, so the host reaches the container's address
directly, and nothing outside the host can (the address is not routed beyond it). The alternatives are
worse: the public API port passes through the proxy, which answers /metrics only to metricsAllowedCidrs,
and a connection from the host to the proxy's published port reaches nginx from the Docker network's
gateway (docker-proxy or hairpin NAT), not from 127.0.0.1, so admitting it means allowing that gateway
on the public listener, and with TLS the agent would also need the self-signed certificate; publishing
vLLM's port on the host's loopback would give every local process vLLM's unguarded paths (`/invocations`
is full inference without the key). Scraping on the bridge adds no listener and changes no rule; what it
needs is the container's current address (Docker assigns it when the container is created).

What the agent cannot carry is not pretended: its Prometheus -> EMF pipeline drops histograms
(catalog AGENT_TYPES, with its source), so the latency histograms are left out of the declarations and
listed by `metrics_the_agent_drops()` for the caller to publish another way. Counters are sent as their
increase since the previous scrape, so a rate is that sum over the period divided by its seconds.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Final

import yaml

from vllm_endpoint.infra.catalog.names import (
    CLOUDWATCH_AGENT_SCRAPE_FILE,
    METRICS_PATH,
    PROJECT,
    VLLM_CONTAINER_PORT,
)
from vllm_endpoint.infra.catalog.vllm_metrics import VLLM_METRICS, VllmMetric, agent_publishes

# The Prometheus job, and the label the scrape config puts on every sample: the declaration matches the
# job, and the label becomes the metrics' one dimension.
SCRAPE_JOB: Final = "vllm"
STACK_DIMENSION: Final = "stack"
# The GPU figures the product shows (the agent names them nvidia_smi_<measurement> in CloudWatch).
GPU_MEASUREMENTS: Final = ("utilization_gpu", "memory_used", "memory_total")
# A scrape that takes longer than this is abandoned; vLLM answers /metrics in milliseconds.
SCRAPE_TIMEOUT_S: Final = 10
# RFC 1918: where Docker takes its bridge networks' subnets (its default address pools are inside these).
_BRIDGE_RANGES: Final = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


@dataclass(frozen=True)
class AgentInputs:
    """`vllm_address`: the vLLM container's IPv4 address on the endpoint's private Docker network."""

    stack: str
    namespace: str
    vllm_address: str
    interval_s: int = 60

    def __post_init__(self) -> None:
        # Loopback, link-local or a public address would be something else than the container on the bridge
        # (a published port, IMDS, the public endpoint).
        try:
            address = ipaddress.ip_address(self.vllm_address)
        except ValueError:
            address = None
        if address is None or not any(address in network for network in _BRIDGE_RANGES):
            raise ValueError(f"vllm_address {self.vllm_address}: not a container address on a Docker bridge "
                             "network (an RFC 1918 IPv4 address)")
        if self.interval_s < SCRAPE_TIMEOUT_S:
            raise ValueError(f"interval_s {self.interval_s}: below the scrape timeout of {SCRAPE_TIMEOUT_S} s")
        if not self.stack or not self.namespace:
            raise ValueError("stack and namespace must not be empty")

    @property
    def scrape_target(self) -> str:
        return f"{self.vllm_address}:{VLLM_CONTAINER_PORT}"


def agent_metrics() -> tuple[VllmMetric, ...]:
    """The catalog's metrics the agent publishes."""
    return tuple(m for m in VLLM_METRICS if agent_publishes(m))


def metrics_the_agent_drops() -> tuple[VllmMetric, ...]:
    """The catalog's metrics of a type the agent's Prometheus pipeline drops (the latency histograms)."""
    return tuple(m for m in VLLM_METRICS if not agent_publishes(m))


def _exact(name: str) -> str:
    return f"^{re.escape(name)}$"


def prometheus_log_group(stack: str) -> str:
    """The log group the agent writes the scraped samples to (the caller creates it, with a retention)."""
    return f"/{PROJECT}/{stack}/prometheus"


def render_agent_config(inputs: AgentInputs, scrape_config_path: str = CLOUDWATCH_AGENT_SCRAPE_FILE) -> str:
    """The agent's JSON configuration (`amazon-cloudwatch-agent-ctl -a fetch-config -c file:PATH`)."""
    config: dict[str, Any] = {
        "agent": {"metrics_collection_interval": inputs.interval_s},
        "metrics": {
            "namespace": inputs.namespace,
            # The GPU metrics also carry the host name and the GPU's index and model; a replacement instance
            # has another host name, so alarms and the dashboard read this roll-up by the stack alone.
            "aggregation_dimensions": [[STACK_DIMENSION]],
            "metrics_collected": {
                "nvidia_gpu": {
                    "measurement": list(GPU_MEASUREMENTS),
                    "metrics_collection_interval": inputs.interval_s,
                    "append_dimensions": {STACK_DIMENSION: inputs.stack},
                },
            },
        },
        "logs": {
            "metrics_collected": {
                "prometheus": {
                    "cluster_name": inputs.stack,
                    # The agent sends the scraped samples as log events here; CloudWatch extracts the metrics.
                    "log_group_name": prometheus_log_group(inputs.stack),
                    "prometheus_config_path": scrape_config_path,
                    "emf_processor": {
                        "metric_declaration_dedup": True,
                        "metric_namespace": inputs.namespace,
                        "metric_declaration": [{
                            "source_labels": ["job"],
                            "label_matcher": _exact(SCRAPE_JOB),
                            "dimensions": [[STACK_DIMENSION]],
                            "metric_selectors": [_exact(m.name) for m in agent_metrics()],
                        }],
                    },
                },
            },
        },
    }
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def render_scrape_config(inputs: AgentInputs) -> str:
    """The Prometheus scrape config: vLLM's /metrics on the private network, only the catalog's metrics kept
    (every scraped sample becomes a log event the account pays to ingest)."""
    config = {
        "global": {"scrape_interval": f"{inputs.interval_s}s", "scrape_timeout": f"{SCRAPE_TIMEOUT_S}s"},
        "scrape_configs": [{
            "job_name": SCRAPE_JOB,
            "scheme": "http",
            "metrics_path": METRICS_PATH,
            "static_configs": [{"targets": [inputs.scrape_target], "labels": {STACK_DIMENSION: inputs.stack}}],
            "metric_relabel_configs": [{
                "source_labels": ["__name__"],
                "regex": "|".join(re.escape(m.name) for m in agent_metrics()),
                "action": "keep",
            }],
        }],
    }
    return yaml.safe_dump(config, sort_keys=False)
