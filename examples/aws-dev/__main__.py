"""A development endpoint on AWS: the root project's `dev` stack (Qwen2.5-1.5B-Instruct on one A10G,
a g5.xlarge) written against the package's public API, as your own Pulumi program would be.

Every check (settings, vLLM flags, GPU memory fit) runs when VllmEndpoint is declared, before any
resource is; a bad value stops the program there, with every problem listed.
"""

import pulumi

from vllm_endpoint import VllmEndpoint, VllmEndpointArgs

# Pulumi.yaml declares each key with its default; the CLI passes the defaults, so `require` never
# states one a second time.
config = pulumi.Config()

endpoint = VllmEndpoint(
    "vllm",
    VllmEndpointArgs(
        model=config.require("model"),
        instance_type=config.require("instanceType"),
        # Required, with no default: SSH only from where `pulumi up` runs, the API only from your apps.
        ssh_allowed_cidrs=config.require_object("sshAllowedCidrs"),
        api_allowed_cidrs=config.require_object("apiAllowedCidrs"),
        tags={"environment": pulumi.get_stack(), **config.require_object("tags")},
    ),
)

pulumi.export("endpoint_url", endpoint.endpoint_url)
pulumi.export("api_key", endpoint.api_key)
pulumi.export("model", endpoint.model)
pulumi.export("public_ip", endpoint.public_ip)
pulumi.export("ssh_command", endpoint.ssh_command)
pulumi.export("plan", endpoint.plan_summary)
pulumi.export("deploy_timeline", endpoint.deploy_timeline)
