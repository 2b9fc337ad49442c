"""The stack: read the stack config, build one VllmEndpoint from it, export its outputs.

The stack config becomes the component's keyword arguments (VllmEndpointArgs); every check (settings,
vLLM flags for the image's version, GPU memory fit, model folder) runs when the endpoint is declared,
before any resource is; a bad value stops here with every problem listed.
"""

import sys
from typing import Any

import pulumi

from vllm_endpoint import VllmEndpoint, VllmEndpointArgs
from vllm_endpoint.components._instance_state import EndpointStoppedError
from vllm_endpoint.infra.settings.endpoint_args import settings_kwargs
from vllm_endpoint.infra.settings.models import ConfigError
from vllm_endpoint.infra.settings.pulumi_config import read_stack_config

try:
    # Plain values; the component checks each against its setting.
    config = read_stack_config()
    settings: Any = settings_kwargs(config)
    endpoint = VllmEndpoint(config.stack.endpoint_name, VllmEndpointArgs(**settings))
except (ConfigError, EndpointStoppedError) as err:
    pulumi.log.error(str(err))
    sys.exit(1)

pulumi.export("endpoint_url", endpoint.endpoint_url)
pulumi.export("api_key", endpoint.api_key)
pulumi.export("model", endpoint.model)
pulumi.export("public_ip", endpoint.public_ip)
pulumi.export("instance_id", endpoint.instance_id)
# What scripts/wake.sh needs (with instance_id, endpoint_url and api_key): the instance's region.
pulumi.export("region", pulumi.Config("aws").get("region"))
pulumi.export("ssh_command", endpoint.ssh_command)
pulumi.export("cache_volume_id", endpoint.cache_volume_id)
pulumi.export("retained_on_destroy", endpoint.retained_on_destroy)
pulumi.export("docker_run", endpoint.docker_run)
pulumi.export("plan", endpoint.plan_summary)
pulumi.export("deploy_timeline", endpoint.deploy_timeline)
pulumi.export("ca_certificate", endpoint.ca_certificate)
pulumi.export("dashboard_url", endpoint.dashboard_url)
pulumi.export("idle_stop", endpoint.idle_stop)
