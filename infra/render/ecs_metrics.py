"""The CloudWatch agent as a sidecar of each replica's ECS task: it scrapes vLLM's /metrics at 127.0.0.1 (awsvpc:
the task's containers share one network namespace, so nothing is opened to the VPC) and publishes the same
metrics as the single endpoint's host agent, with the `stack` dimension every replica shares. The average of
`vllm:num_requests_waiting` over that dimension is the queue per replica, which the fleet's target tracking
scales on (components/fleet.py).

The agent's config is the host agent's (infra/render/cloudwatch_agent.py, `in_task`): the same metric
selection and declarations, without the GPU section (the sidecar has no GPU). Both configs travel in the
container's environment (CW_CONFIG_CONTENT, PROMETHEUS_CONFIG_CONTENT); neither holds a secret. The agent writes
with the task role's credentials (CloudWatchAgentServerPolicy), which the ECS agent serves to the task.
"""

from __future__ import annotations

import json
from typing import Any, Final

from vllm_endpoint.infra.catalog.names import CLOUDWATCH_AGENT_IMAGE, METRICS_NAMESPACE
from vllm_endpoint.infra.render.cloudwatch_agent import (
    TASK_AGENT_CONFIG_ENV,
    TASK_LOCAL_ADDRESS,
    TASK_SCRAPE_CONFIG_ENV,
    AgentInputs,
    render_agent_config,
    render_scrape_config,
)
from vllm_endpoint.infra.render.ecs import AwsLogs

METRICS_SIDECAR: Final = "cloudwatch-agent"
# What the agent needs at most (it scrapes one target once a minute); a reservation, not a limit of the task's.
SIDECAR_MEMORY_RESERVATION_MIB: Final = 128


def metrics_sidecar(scope: str, logs: AwsLogs, image: str = CLOUDWATCH_AGENT_IMAGE,
                    namespace: str = METRICS_NAMESPACE) -> dict[str, Any]:
    """The agent's container definition. Not essential: a replica whose agent stops still serves (its metrics
    stop, and an alarm on missing data says so); the ECS agent restarts it."""
    inputs = AgentInputs(stack=scope, namespace=namespace, vllm_address=TASK_LOCAL_ADDRESS, in_task=True)
    return {
        "name": METRICS_SIDECAR,
        "image": image,
        "essential": False,
        "memoryReservation": SIDECAR_MEMORY_RESERVATION_MIB,
        "environment": [
            {"name": TASK_AGENT_CONFIG_ENV, "value": render_agent_config(inputs)},
            {"name": TASK_SCRAPE_CONFIG_ENV, "value": render_scrape_config(inputs)},
        ],
        "restartPolicy": {"enabled": True},
        "logConfiguration": {"logDriver": "awslogs", "options": {
            "awslogs-group": logs.group, "awslogs-region": logs.region, "awslogs-stream-prefix": logs.stream_prefix}},
    }


def with_sidecar(container_definitions_json: str, sidecar: dict[str, Any]) -> str:
    """The task's container definitions with `sidecar` added last (ECS stops containers in reverse of their
    dependencies; the sidecar depends on none)."""
    definitions = json.loads(container_definitions_json)
    if any(d["name"] == sidecar["name"] for d in definitions):
        raise ValueError(f"the task already has a container named {sidecar['name']}")
    return json.dumps([*definitions, sidecar])
