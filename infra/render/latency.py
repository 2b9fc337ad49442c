"""vLLM's latency percentiles on an AWS host: what the CloudWatch agent cannot carry (it drops histograms).

infra/host/vllm-latency.py, run once a minute by a systemd timer, reads vLLM's two latency histograms
(`metrics_the_agent_drops()`), estimates p50, p90 and p99 of the minute's requests from their increase, and
sends them to the agent's EMF listener as metrics of the stack's namespace with the `stack` dimension, the
same namespace and dimension as the agent's own. This module renders the service, its timer and the env file
the service reads; infra/render/cloudwatch_agent.py's deploy step writes them with the agent's files.
"""

from __future__ import annotations

from typing import Final

from vllm_endpoint.infra.catalog.names import (
    LATENCY_EMF_ENDPOINT,
    LATENCY_ENV_FILE,
    LATENCY_SCRIPT,
    LATENCY_SERVICE_NAME,
    LATENCY_STATE_DIRECTORY,
    METRICS_PATH,
    VLLM_CONTAINER_PORT,
)
from vllm_endpoint.infra.render.host_scripts import fill_template, read_host_file

SCRIPT_FILE: Final = "vllm-latency.py"
SERVICE_TEMPLATE: Final = "vllm-latency.service"
TIMER_TEMPLATE: Final = "vllm-latency.timer"
# The quantiles published, and the metric name of each (the script's own `metric_name`).
QUANTILES: Final = (0.5, 0.9, 0.99)
LATENCY_HISTOGRAMS: Final = ("vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds")


def latency_metric_name(histogram: str, q: float) -> str:
    """`<histogram>_p50`, `_p90`, `_p99`: in seconds, dimension `stack`."""
    return f"{histogram}_p{round(q * 100):d}"


def latency_metric_names() -> tuple[str, ...]:
    return tuple(latency_metric_name(h, q) for h in LATENCY_HISTOGRAMS for q in QUANTILES)


def metrics_url(vllm_address: str) -> str:
    """vLLM's /metrics where the agent scrapes it (the container's address on the private network)."""
    return f"http://{vllm_address}:{VLLM_CONTAINER_PORT}{METRICS_PATH}"


def render_latency_env(*, vllm_address: str, namespace: str, stack: str, log_group: str) -> str:
    """The service's EnvironmentFile. One `NAME=value` a line, unquoted: every value is a name without
    spaces or quotes (a stack name, a namespace, an address, a log group)."""
    values = {
        "VLLM_METRICS_URL": metrics_url(vllm_address),
        "METRICS_NAMESPACE": namespace,
        "METRICS_STACK": stack,
        "EMF_ENDPOINT": LATENCY_EMF_ENDPOINT,
        "EMF_LOG_GROUP": log_group,
    }
    for name, value in values.items():
        if not value or any(c.isspace() or c in "\"'\\$`" for c in value):
            raise ValueError(f"{name}={value!r}: not a value the env file can hold unquoted")
    return "".join(f"{name}={value}\n" for name, value in values.items())


def latency_service_unit() -> str:
    return fill_template(read_host_file(SERVICE_TEMPLATE), {
        "LATENCY_ENV_FILE": LATENCY_ENV_FILE, "LATENCY_STATE_DIRECTORY": LATENCY_STATE_DIRECTORY,
        "LATENCY_SCRIPT": LATENCY_SCRIPT})


def latency_timer_unit() -> str:
    return fill_template(read_host_file(TIMER_TEMPLATE), {"LATENCY_SERVICE": LATENCY_SERVICE_NAME})


def latency_script() -> str:
    return read_host_file(SCRIPT_FILE)
