"""The stack: read and validate config, plan the launch, build one VllmEndpoint, export its outputs.

Every check (settings, vLLM flags for the image's version, GPU memory fit, model folder) runs in
`build_plan` before any resource is declared; a bad value stops here with every problem listed.
"""

import sys
from pathlib import Path

import pulumi

from vllm_endpoint.components.vllm_endpoint import VllmEndpoint, VllmEndpointArgs
from vllm_endpoint.infra.plan.deployment import build_plan
from vllm_endpoint.infra.settings.models import PROJECT, ConfigError
from vllm_endpoint.infra.settings.pulumi_config import read_stack_config

try:
    plan = build_plan(read_stack_config())
except ConfigError as err:
    pulumi.log.error(str(err))
    sys.exit(1)

for warning in plan.warnings:
    pulumi.log.warn(warning)

ssh_dir = Path.home() / ".ssh" / PROJECT / f"{pulumi.get_project()}-{pulumi.get_stack()}"
endpoint = VllmEndpoint("vllm", VllmEndpointArgs(plan=plan, ssh_dir=str(ssh_dir)))

pulumi.export("endpoint_url", endpoint.endpoint_url)
pulumi.export("api_key", endpoint.api_key)
pulumi.export("model", endpoint.model)
pulumi.export("public_ip", endpoint.public_ip)
pulumi.export("instance_id", endpoint.instance_id)
pulumi.export("ssh_command", endpoint.ssh_command)
pulumi.export("cache_volume_id", endpoint.cache_volume_id)
pulumi.export("docker_run", endpoint.docker_run)
pulumi.export("plan", endpoint.plan_summary)
pulumi.export("deploy_timeline", endpoint.deploy_timeline)
pulumi.export("ca_certificate", endpoint.ca_certificate)
