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
listed by `metrics_the_agent_drops()`: their percentiles come from infra/host/vllm-latency.py (infra/render/
latency.py), which a timer runs every minute and which sends them to the agent's EMF listener, turned on here
(`logs.metrics_collected.emf`). Counters are sent as their increase since the previous scrape, so a rate is
that sum over the period divided by its seconds.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Final

import yaml

from vllm_endpoint.infra.catalog.names import (
    BOOT_ENV_FILE,
    CLOUDWATCH_AGENT_CONFIG_FILE,
    CLOUDWATCH_AGENT_CTL,
    CLOUDWATCH_AGENT_SCRAPE_FILE,
    CLOUDWATCH_AGENT_SCRIPT,
    DEFAULT_ENDPOINT_NAME,
    LATENCY_ENV_FILE,
    LATENCY_SCRIPT,
    LATENCY_SERVICE_FILE,
    LATENCY_TIMER_FILE,
    LATENCY_TIMER_NAME,
    LOG_GROUP_PREFIX,
    METRICS_PATH,
    VLLM_CONTAINER_PORT,
)
from vllm_endpoint.infra.catalog.vllm_metrics import VLLM_METRICS, VllmMetric, agent_publishes
from vllm_endpoint.infra.render.host_scripts import host_command
from vllm_endpoint.infra.render.latency import (
    latency_script,
    latency_service_unit,
    latency_timer_unit,
    render_latency_env,
)

# The Prometheus job, and the label the scrape config puts on every sample: the declaration matches the
# job, and the label becomes the metrics' one dimension.
SCRAPE_JOB: Final = "vllm"
# In an ECS task (awsvpc) the containers share one network namespace: vLLM is at loopback.
TASK_LOCAL_ADDRESS: Final = "127.0.0.1"
# The agent's container image reads its JSON config from CW_CONFIG_CONTENT and, with prometheus_config_path
# `env:NAME`, the Prometheus scrape config from that variable (CloudWatch user guide, "Install the CloudWatch
# agent with Prometheus metrics collection on Amazon ECS clusters").
TASK_AGENT_CONFIG_ENV: Final = "CW_CONFIG_CONTENT"
TASK_SCRAPE_CONFIG_ENV: Final = "PROMETHEUS_CONFIG_CONTENT"
STACK_DIMENSION: Final = "stack"
# One metric is also published per instance, with the instance's id as its one dimension: CloudWatch runs an
# alarm's EC2 actions (the idle stop, infra/render/alarms.py) only on a metric with an InstanceId dimension.
# Generated tokens: every request makes at least one, so a minute with none is a minute without requests.
INSTANCE_DIMENSION: Final = "InstanceId"
PER_INSTANCE_METRIC: Final = "vllm:generation_tokens_total"
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
    # The EC2 instance's id (`i-...`): PER_INSTANCE_METRIC is published with it. None: not published.
    instance_id: str | None = None
    # The agent runs as a sidecar in vLLM's ECS task (awsvpc: one network namespace, vLLM at 127.0.0.1), with no
    # GPU of its own: no GPU metrics, and the scrape config comes from the container's environment.
    in_task: bool = False

    def __post_init__(self) -> None:
        if self.in_task and self.vllm_address != TASK_LOCAL_ADDRESS:
            raise ValueError(f"vllm_address {self.vllm_address}: a sidecar reaches vLLM at {TASK_LOCAL_ADDRESS}")
        # Loopback, link-local or a public address would be something else than the container on the bridge
        # (a published port, IMDS, the public endpoint).
        try:
            address = ipaddress.ip_address(self.vllm_address)
        except ValueError:
            address = None
        if self.in_task:
            pass
        elif address is None or not any(address in network for network in _BRIDGE_RANGES):
            raise ValueError(f"vllm_address {self.vllm_address}: not a container address on a Docker bridge "
                             "network (an RFC 1918 IPv4 address)")
        if self.interval_s < SCRAPE_TIMEOUT_S:
            raise ValueError(f"interval_s {self.interval_s}: below the scrape timeout of {SCRAPE_TIMEOUT_S} s")
        if not self.stack or not self.namespace:
            raise ValueError("stack and namespace must not be empty")
        if self.instance_id is not None and not re.fullmatch(r"i-[0-9a-f]{8,17}", self.instance_id):
            raise ValueError(f"instance_id {self.instance_id!r}: not an EC2 instance id")

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


def cloudwatch_agent_package_url(region: str) -> str:
    """The agent's Ubuntu x86-64 package in AWS's download bucket of the instance's own region (the CloudWatch
    user guide, "Download and install the CloudWatch agent package": amazoncloudwatch-agent-<region>.s3.
    <region>.amazonaws.com/ubuntu/amd64/latest/amazon-cloudwatch-agent.deb; GPU instances are x86-64)."""
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-[0-9]", region):
        raise ValueError(f"{region!r} is not an AWS region name")
    return f"https://amazoncloudwatch-agent-{region}.s3.{region}.amazonaws.com/ubuntu/amd64/latest/amazon-cloudwatch-agent.deb"


def metrics_scope(stack: str, endpoint: str) -> str:
    """The `stack` dimension's value and the log groups' middle part: the stack's name for the program's
    default endpoint, `<stack>-<endpoint>` for another (each endpoint on AWS has its own instance, and two of
    one stack must not share metrics or log groups)."""
    return stack if endpoint == DEFAULT_ENDPOINT_NAME else f"{stack}-{endpoint}"


def prometheus_log_group(stack: str) -> str:
    """The log group the agent writes the scraped samples to (the caller creates it, with a retention)."""
    return f"{LOG_GROUP_PREFIX}/{stack}/prometheus"


def access_log_group(stack: str) -> str:
    """The log group of the proxy's access log (Docker's awslogs driver writes it; the caller creates it)."""
    return f"{LOG_GROUP_PREFIX}/{stack}/access"


def render_agent_config(inputs: AgentInputs, scrape_config_path: str = CLOUDWATCH_AGENT_SCRAPE_FILE) -> str:
    """The agent's JSON configuration (`amazon-cloudwatch-agent-ctl -a fetch-config -c file:PATH`; in a task, the
    container's CW_CONFIG_CONTENT, with the scrape config in TASK_SCRAPE_CONFIG_ENV)."""
    if inputs.in_task:
        scrape_config_path = f"env:{TASK_SCRAPE_CONFIG_ENV}"
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
                        "metric_declaration": _declarations(inputs),
                    },
                },
                # The EMF listener (127.0.0.1:25888, TCP and UDP) infra/host/vllm-latency.py sends the latency
                # percentiles to; its documents name their log group (the Prometheus one, which has a retention).
                "emf": {},
            },
        },
    }
    if inputs.in_task:
        del config["metrics"]  # no GPU in the sidecar; Container Insights reports the task's CPU and memory
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def _declarations(inputs: AgentInputs) -> list[dict[str, Any]]:
    """Which scraped metrics become CloudWatch metrics, with which dimensions (each a label of the sample)."""
    declarations: list[dict[str, Any]] = [{
        "source_labels": ["job"],
        "label_matcher": _exact(SCRAPE_JOB),
        "dimensions": [[STACK_DIMENSION]],
        "metric_selectors": [_exact(m.name) for m in agent_metrics()],
    }]
    if inputs.instance_id is not None:
        declarations.append({
            "source_labels": ["job"],
            "label_matcher": _exact(SCRAPE_JOB),
            "dimensions": [[INSTANCE_DIMENSION]],
            "metric_selectors": [_exact(PER_INSTANCE_METRIC)],
        })
    return declarations


def _scrape_labels(inputs: AgentInputs) -> dict[str, str]:
    labels = {STACK_DIMENSION: inputs.stack}
    if inputs.instance_id is not None:
        labels[INSTANCE_DIMENSION] = inputs.instance_id
    return labels


def render_scrape_config(inputs: AgentInputs) -> str:
    """The Prometheus scrape config: vLLM's /metrics on the private network, only the catalog's metrics kept
    (every scraped sample becomes a log event the account pays to ingest)."""
    config = {
        "global": {"scrape_interval": f"{inputs.interval_s}s", "scrape_timeout": f"{SCRAPE_TIMEOUT_S}s"},
        "scrape_configs": [{
            "job_name": SCRAPE_JOB,
            "scheme": "http",
            "metrics_path": METRICS_PATH,
            "static_configs": [{"targets": [inputs.scrape_target], "labels": _scrape_labels(inputs)}],
            "metric_relabel_configs": [{
                "source_labels": ["__name__"],
                "regex": "|".join(re.escape(m.name) for m in agent_metrics()),
                "action": "keep",
            }],
        }],
    }
    return yaml.safe_dump(config, sort_keys=False)


def render_latency_env_file(inputs: AgentInputs) -> str:
    """The env file of the latency percentiles' service: vLLM's address, the namespace, the stack, and the
    log group the agent writes their documents to."""
    return render_latency_env(vllm_address=inputs.vllm_address, namespace=inputs.namespace, stack=inputs.stack,
                              log_group=prometheus_log_group(inputs.stack))


def agent_apply_script(inputs: AgentInputs) -> str:
    """The deploy's step on the host (components/vllm_server.py): installs the agent unless it is there,
    writes both files and (re)starts the agent with them, then installs the latency percentiles' script,
    env file, service and timer, and (re)starts the timer (infra/host/cloudwatch-agent-apply.sh)."""
    return host_command({
        "AGENT_SCRIPT": CLOUDWATCH_AGENT_SCRIPT,
        "BOOT_ENV_FILE": BOOT_ENV_FILE,
        "AGENT_CTL": CLOUDWATCH_AGENT_CTL,
        "AGENT_CONFIG_FILE": CLOUDWATCH_AGENT_CONFIG_FILE,
        "AGENT_CONFIG": render_agent_config(inputs),
        "SCRAPE_CONFIG_FILE": CLOUDWATCH_AGENT_SCRAPE_FILE,
        "SCRAPE_CONFIG": render_scrape_config(inputs),
        "LATENCY_SCRIPT_FILE": LATENCY_SCRIPT,
        "LATENCY_SCRIPT": latency_script(),
        "LATENCY_ENV_FILE": LATENCY_ENV_FILE,
        "LATENCY_ENV": render_latency_env_file(inputs),
        "LATENCY_SERVICE_FILE": LATENCY_SERVICE_FILE,
        "LATENCY_SERVICE": latency_service_unit(),
        "LATENCY_TIMER_FILE": LATENCY_TIMER_FILE,
        "LATENCY_TIMER": latency_timer_unit(),
        "LATENCY_TIMER_NAME": LATENCY_TIMER_NAME,
    }, "cloudwatch-agent-apply.sh")


def agent_stop_script() -> str:
    """What removing the step does (metrics turned off): the agent and the latency timer stop, and stay stopped
    at boot."""
    return host_command({"AGENT_CTL": CLOUDWATCH_AGENT_CTL, "LATENCY_TIMER_NAME": LATENCY_TIMER_NAME},
                        "cloudwatch-agent-stop.sh")
