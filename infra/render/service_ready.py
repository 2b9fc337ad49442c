"""The wait that ends a fleet's `pulumi up` (infra/host/service-ready.sh, run on the deploying machine): its
environment and its time limit.

The single endpoint's readiness gate runs on its host and watches the container; a fleet has no host to log
into, so the deploying machine asks the load balancer, as an app would: `GET /v1/models` with the key. The
load balancer answers 503 until a replica passed its health checks, so the first 200 means one replica serves.
"""

from __future__ import annotations

from typing import Final

from vllm_endpoint.infra.plan.deployment import DeploymentPlan
from vllm_endpoint.infra.render.host_scripts import read_host_file

POLL_INTERVAL_S: Final = 10
PROGRESS_INTERVAL_S: Final = 30
# Before the first replica's container starts: the Auto Scaling group launches a GPU instance (1-3 min), it
# boots and registers with ECS (1-2 min), and the agent pulls the vLLM image (about 10 GB compressed: minutes
# from Docker Hub, less from ECR in the region). readinessTimeoutSeconds covers the rest, as on one host.
FLEET_LAUNCH_ALLOWANCE_S: Final = 900
SCRIPT: Final = "service-ready.sh"


def service_ready_timeout_s(plan: DeploymentPlan) -> int:
    return plan.config.server.readiness_timeout_seconds + FLEET_LAUNCH_ALLOWANCE_S


def service_ready_script() -> str:
    return read_host_file(SCRIPT)


def service_ready_environment(url: str, timeout_s: int, logs_hint: str, ca_bundle: str = "") -> dict[str, str]:
    """`url` is the endpoint's base URL (…/v1); the probe asks for its model list, as an OpenAI client would."""
    return {"PROBE_URL": f"{url.rstrip('/')}/models", "TIMEOUT_S": str(timeout_s),
            "POLL_INTERVAL_S": str(POLL_INTERVAL_S), "PROGRESS_INTERVAL_S": str(PROGRESS_INTERVAL_S),
            "LOGS_HINT": logs_hint, "CA_BUNDLE": ca_bundle}
