"""The stack: read the stack config, build one VllmEndpoint from it (or a VllmService when it sets `replicas`),
export its outputs.

The stack config becomes the component's keyword arguments (VllmEndpointArgs, which VllmService takes too);
every check (settings, vLLM flags for the image's version, GPU memory fit, model folder) runs when the endpoint
is declared, before any resource is; a bad value stops here with every problem listed.
"""

import sys
from typing import Any

import pulumi

from vllm_endpoint import VllmEndpoint, VllmEndpointArgs, VllmService, VllmServiceArgs
from vllm_endpoint.components._instance_state import EndpointStoppedError
from vllm_endpoint.infra.settings.endpoint_args import settings_kwargs
from vllm_endpoint.infra.settings.models import ConfigError
from vllm_endpoint.infra.settings.pulumi_config import read_stack_config


def export_endpoint(endpoint: VllmEndpoint) -> None:
    pulumi.export("public_ip", endpoint.public_ip)
    pulumi.export("instance_id", endpoint.instance_id)
    pulumi.export("ssh_command", endpoint.ssh_command)
    pulumi.export("cache_volume_id", endpoint.cache_volume_id)
    pulumi.export("retained_on_destroy", endpoint.retained_on_destroy)
    pulumi.export("docker_run", endpoint.docker_run)
    pulumi.export("deploy_timeline", endpoint.deploy_timeline)
    pulumi.export("ca_certificate", endpoint.ca_certificate)
    pulumi.export("dashboard_url", endpoint.dashboard_url)
    pulumi.export("idle_stop", endpoint.idle_stop)


def export_service(service: VllmService) -> None:
    pulumi.export("load_balancer_dns_name", service.load_balancer_dns_name)
    pulumi.export("cluster_name", service.cluster_name)
    pulumi.export("service_name", service.service_name)
    pulumi.export("log_group_name", service.log_group_name)
    pulumi.export("replicas", service.replicas)
    pulumi.export("ready", service.ready)
    pulumi.export("dashboard_url", service.dashboard_url)


try:
    # Plain values; the component checks each against its setting.
    config = read_stack_config()
    settings: Any = settings_kwargs(config)
    name = config.stack.endpoint_name
    component = (VllmService(name, VllmServiceArgs(**settings)) if config.fleet.replicas is not None
                 else VllmEndpoint(name, VllmEndpointArgs(**settings)))
except (ConfigError, EndpointStoppedError) as err:
    pulumi.log.error(str(err))
    sys.exit(1)

# What apps use, from either kind: the URL, the key and the model name.
pulumi.export("endpoint_url", component.endpoint_url)
pulumi.export("api_key", component.api_key)
pulumi.export("model", component.model)
pulumi.export("plan", component.plan_summary)
# What scripts/wake.sh needs (with instance_id, endpoint_url and api_key): the instance's region.
pulumi.export("region", pulumi.Config("aws").get("region"))
if isinstance(component, VllmService):
    export_service(component)
else:
    export_endpoint(component)
