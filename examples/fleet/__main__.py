"""A fleet: the endpoint as 2-4 replicas on Amazon ECS behind an Application Load Balancer, scaled on vLLM's
queue, with spot instances above one on-demand base, written against the package's public API.

VllmService takes VllmEndpoint's keyword arguments with `replicas` set: the same settings, plan, fit check and
flag table; every check runs when it is declared, before any resource is.
"""

import pulumi

from vllm_endpoint import VllmService, VllmServiceArgs

# Pulumi.yaml declares each key with its default; the CLI passes the defaults, so `require` never states one
# a second time.
config = pulumi.Config()

args = VllmServiceArgs(
    model=config.require("model"),
    instance_type=config.require("instanceType"),
    replicas=config.require_int("minReplicas"),
    min_replicas=config.require_int("minReplicas"),
    max_replicas=config.require_int("maxReplicas"),
    # One replica always on demand; above it, one spot instance for each on-demand one.
    on_demand_base=1,
    spot_weight=1,
    on_demand_weight=1,
    # Required, with no default: the API only from your apps (the load balancer's listeners).
    api_allowed_cidrs=config.require_object("apiAllowedCidrs"),
    tags={"environment": pulumi.get_stack(), **config.require_object("tags")},
)
# Empty (the defaults): the default VPC's subnets, and HTTP on the load balancer's own name.
if subnet_ids := config.require_object("subnetIds"):
    args["subnet_ids"] = subnet_ids
if load_balancer_subnet_ids := config.require_object("loadBalancerSubnetIds"):
    args["load_balancer_subnet_ids"] = load_balancer_subnet_ids
if domain := config.require("domain"):
    args["domain"] = domain
    args["hosted_zone_id"] = config.require("hostedZoneId")

service = VllmService("chat", args)

pulumi.export("endpoint_url", service.endpoint_url)
pulumi.export("api_key", service.api_key)
pulumi.export("model", service.model)
pulumi.export("load_balancer_dns_name", service.load_balancer_dns_name)
pulumi.export("cluster_name", service.cluster_name)
pulumi.export("service_name", service.service_name)
pulumi.export("replicas", service.replicas)
pulumi.export("plan", service.plan_summary)
