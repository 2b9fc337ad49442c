"""VllmService: the endpoint as a fleet, N replicas on Amazon ECS behind an Application Load Balancer.

    from vllm_endpoint import VllmService, VllmServiceArgs
    service = VllmService("chat", VllmServiceArgs(replicas=2, max_replicas=4, api_allowed_cidrs=["10.0.0.0/16"]))

The same settings, plan, fit check, flag table and secrets as VllmEndpoint (its keyword arguments, with
`replicas` set): the container spec that renders the single endpoint's `docker run` renders the task. It wires
three things: the task's secrets as SSM SecureString parameters (the task references them by ARN), a
ServiceLoadBalancer (components/service_lb.py) and a VllmFleet (components/fleet.py); then `pulumi up` waits on
the deploying machine until the load balancer answers `GET /v1/models` with the key (infra/render/service_ready.py).

No `from __future__ import annotations` here: Pulumi's component analyzer reads the annotations as objects.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_command as command

from vllm_endpoint.components._endpoint_settings import EndpointSettings, load_settings
from vllm_endpoint.components._support import endpoint_api_key, secret
from vllm_endpoint.components.fleet import VllmFleet, VllmFleetArgs
from vllm_endpoint.components.fleet_image import FleetImage, FleetImageArgs
from vllm_endpoint.components.fleet_model import FleetModel, FleetModelArgs
from vllm_endpoint.components.monitoring import ServiceMonitoring, ServiceMonitoringArgs
from vllm_endpoint.components.service_lb import ServiceLoadBalancer, ServiceLoadBalancerArgs
from vllm_endpoint.components.vllm_endpoint_args import VllmEndpointArgs
from vllm_endpoint.infra.catalog.names import ECS_GPU_AMI_SSM_PARAMETER, ENDPOINT_TAG, PROJECT, STACK_TAG
from vllm_endpoint.infra.plan.fleet import FleetPlan
from vllm_endpoint.infra.render.cloudwatch_agent import metrics_scope
from vllm_endpoint.infra.render.dashboard import dashboard_name
from vllm_endpoint.infra.render.ecs import task_secret_names, task_secret_values
from vllm_endpoint.infra.render.service_ready import (
    service_ready_environment,
    service_ready_script,
    service_ready_timeout_s,
)
from vllm_endpoint.infra.settings.models import AwsSettings, ConfigError

__all__ = ["VllmService", "VllmServiceArgs"]

# The same keyword arguments as VllmEndpoint: every stack setting by its snake_case name, `replicas` required.
VllmServiceArgs = VllmEndpointArgs


@dataclass(frozen=True)
class _Network:
    vpc_id: pulumi.Input[str]
    replica_subnet_ids: pulumi.Input[Sequence[str]]
    load_balancer_subnet_ids: Sequence[str] | pulumi.Output[Sequence[str]]


class VllmService(pulumi.ComponentResource):
    """A private, OpenAI-compatible vLLM endpoint served by N replicas on ECS behind a load balancer."""

    endpoint_url: pulumi.Output[str]
    """Base URL for OpenAI clients (`https?://<domain or load balancer>/v1`); known once a replica answered."""
    api_key: pulumi.Output[str]
    """(secret) The key apps send as `Authorization: Bearer`."""
    model: pulumi.Output[str]
    """The model name apps put in requests; known once a replica answered."""
    load_balancer_dns_name: pulumi.Output[str]
    """The load balancer's own DNS name (point a CNAME at it when not using `domain`)."""
    cluster_name: pulumi.Output[str]
    """The ECS cluster."""
    service_name: pulumi.Output[str]
    """The ECS service (`aws ecs describe-services --cluster <cluster> --services <service>`)."""
    log_group_name: pulumi.Output[str]
    """The replicas' logs in CloudWatch Logs."""
    replicas: pulumi.Output[dict[str, int]]
    """desired (at creation), min and max replicas."""
    dashboard_url: pulumi.Output[str | None]
    """The fleet's CloudWatch dashboard (`metrics` on; None otherwise)."""
    plan_summary: pulumi.Output[str]
    """What runs, how much fits on the GPU, and what the fleet costs at its minimum and maximum."""
    ready: pulumi.Output[str]
    """What the wait saw: how long until the load balancer answered, and the models it listed."""

    def __init__(self, name: str, args: VllmServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        settings = load_settings(name, args)
        fleet_plan = _fleet_plan(settings)
        super().__init__(f"{PROJECT}:index:VllmService", name, None, opts)
        plan = settings.plan
        for warning in plan.warnings:
            pulumi.log.warn(warning, resource=self)
        pulumi.log.info(plan.summary, resource=self)
        aws_settings, fleet = plan.config.aws, plan.config.fleet
        tags = {**aws_settings.tags, STACK_TAG: pulumi.get_stack(), ENDPOINT_TAG: name}
        self.api_key, self.generated_api_key = endpoint_api_key(self, name, settings.inputs.api_key)
        self.parameters = self._create_secret_parameters(name, settings, tags)
        network = _network(settings)
        self.image = None if plan.image_build is None else FleetImage(
            f"{name}-image", FleetImageArgs(name=name, build=plan.image_build, kms_key_id=settings.inputs.kms_key_id,
                                            tags=aws_settings.tags),
            opts=pulumi.ResourceOptions(parent=self))
        self.model_upload = None if plan.model_upload is None else FleetModel(
            f"{name}-model", FleetModelArgs(upload=plan.model_upload, kms_key_id=settings.inputs.kms_key_id,
                                            tags=aws_settings.tags),
            opts=pulumi.ResourceOptions(parent=self))
        self.load_balancer = ServiceLoadBalancer(
            _load_balancer_name(name),
            ServiceLoadBalancerArgs(
                name=name, vpc_id=network.vpc_id, subnet_ids=network.load_balancer_subnet_ids,
                api_allowed_cidrs=_plain_cidrs(settings.inputs.api_allowed_cidrs), domain=fleet.domain,
                hosted_zone_id=fleet.hosted_zone_id, deregistration_delay_s=fleet.deregistration_delay_seconds,
                dangerously_allow_api_from_internet=plan.config.access.dangerously_allow_api_from_internet,
                tags=aws_settings.tags,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        assert plan.instance is not None  # a fleet plan has its instance type
        self.fleet = VllmFleet(
            f"{name}-fleet",
            VllmFleetArgs(
                name=name, plan=plan, instance=plan.instance, subnet_ids=network.replica_subnet_ids,
                secret_parameter_arns={env: p.arn for env, p in self.parameters.items()},
                replicas=fleet_plan.bounds.desired, min_replicas=fleet_plan.bounds.minimum,
                max_replicas=fleet_plan.bounds.maximum, on_demand_base=fleet.on_demand_base,
                spot_weight=fleet.spot_weight, on_demand_weight=fleet.on_demand_weight,
                extra_instance_types=fleet_plan.instance_types[1:],
                cache_volume_size_gb=aws_settings.cache_volume_size_gb,
                root_volume_size_gb=aws_settings.root_volume_size_gb, kms_key_id=settings.inputs.kms_key_id,
                log_retention_days=aws_settings.log_retention_days, tags=aws_settings.tags,
                target_group_arn=self.load_balancer.target_group_arn,
                task_security_group_id=self.load_balancer.task_security_group_id, vpc_id=network.vpc_id,
                ami_id=aws_settings.ami_id, ami_ssm_parameter=_ami_parameter(aws_settings),
                cache_snapshot_id=fleet.cache_snapshot_id,
                cache_initialization_rate_mib_s=fleet.cache_initialization_rate,
                surge_on_deploy=fleet.surge_on_deploy, waiting_per_replica=fleet.waiting_per_replica,
                warm_pool_size=fleet.warm_pool_size, cache_images=fleet.cache_images,
                metrics_scope=metrics_scope(pulumi.get_stack(), name), metrics=aws_settings.metrics,
                trusted_proxy_cidrs=_vpc_cidrs(network.vpc_id),
                vllm_image=self.image.image_ref if self.image is not None else None,
                model_bucket=self.model_upload.bucket_name if self.model_upload is not None else None,
                model_bucket_arn=self.model_upload.bucket_arn if self.model_upload is not None else None,
                # The tasks start once the listener routes to them and the fine-tune's objects are all there.
                service_depends_on=[self.load_balancer.listener, *self.load_balancer.listener_rules,
                                    *(self.model_upload.objects if self.model_upload is not None else ())],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.monitoring = self._create_monitoring(name, settings, fleet_plan) if aws_settings.metrics else None
        self.readiness = self._create_readiness_wait(name, settings)
        self._set_outputs(settings, fleet_plan)
        self.register_outputs({
            "endpoint_url": self.endpoint_url,
            "api_key": self.api_key,
            "model": self.model,
            "load_balancer_dns_name": self.load_balancer_dns_name,
            "cluster_name": self.cluster_name,
            "service_name": self.service_name,
            "log_group_name": self.log_group_name,
            "replicas": self.replicas,
            "dashboard_url": self.dashboard_url,
            "plan": self.plan_summary,
            "ready": self.ready,
        })

    def _create_secret_parameters(self, name: str, settings: EndpointSettings,
                                  tags: dict[str, str]) -> dict[str, aws.ssm.Parameter]:
        """One SecureString per secret the task takes (the key, the proxy's key check, the Hub token): ECS
        injects them by ARN, so no value is in the task definition."""
        plan, inputs = settings.plan, settings.inputs
        values = pulumi.Output.all(self.api_key, inputs.hf_token).apply(
            lambda v: task_secret_values(plan, v[0], v[1]))
        return {
            env: aws.ssm.Parameter(
                f"{name}-{env.lower().replace('_', '-')}",
                name=plan.names.secret_parameter(pulumi.get_project(), pulumi.get_stack(), env),
                type="SecureString",
                value=secret(values.apply(lambda v, env=env: v[env])),  # type: ignore[misc]
                key_id=inputs.kms_key_id,
                description=f"vLLM fleet {name}: {env} of its task",
                tags=tags,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for env in task_secret_names(plan)
        }

    def _create_readiness_wait(self, name: str, settings: EndpointSettings) -> command.local.Command:
        plan = settings.plan
        timeout_s = service_ready_timeout_s(plan)
        logs_hint = pulumi.Output.concat("the replicas' logs in CloudWatch log group ", self.fleet.log_group_name,
                                         " and `aws ecs describe-services --cluster ", self.fleet.cluster_name,
                                         " --services ", self.fleet.service_name, "`")
        environment = pulumi.Output.all(self.load_balancer.url, logs_hint).apply(
            lambda v: service_ready_environment(v[0], timeout_s, v[1]))
        timeout = f"{timeout_s // 60 + 5}m"
        return command.local.Command(
            f"{name}-ready",
            create=service_ready_script(),
            interpreter=["/bin/bash", "-c"],
            environment=environment,
            # The key reaches the probe on stdin only.
            stdin=secret(self.api_key).apply(lambda key: key + "\n"),
            # Each new task definition (a rollout) is waited for again.
            triggers=[self.fleet.task_definition.arn],
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.fleet.service, *self.load_balancer.listener_rules],
                custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout),
            ),
        )

    def _set_outputs(self, settings: EndpointSettings, fleet_plan: FleetPlan) -> None:
        plan = settings.plan
        ready = self.readiness.stdout
        self.ready = ready
        self.endpoint_url = pulumi.Output.all(self.load_balancer.url, ready).apply(lambda v: v[0])
        self.model = ready.apply(lambda _: plan.served_model_name)
        self.load_balancer_dns_name = self.load_balancer.dns_name
        self.cluster_name = self.fleet.cluster_name
        self.service_name = self.fleet.service_name
        self.log_group_name = self.fleet.log_group_name
        bounds = fleet_plan.bounds
        self.replicas = pulumi.Output.from_input(
            {"desired": bounds.desired, "min": bounds.minimum, "max": bounds.maximum})
        self.plan_summary = pulumi.Output.from_input(plan.summary)
        self.dashboard_url = (self.monitoring.dashboard_url if self.monitoring is not None
                              else pulumi.Output.from_input(None))

    def _create_monitoring(self, name: str, settings: EndpointSettings, fleet_plan: FleetPlan) -> ServiceMonitoring:
        """The dashboard and the alarms (with their e-mail): they read the agent sidecars' metrics."""
        aws_settings, fleet = settings.plan.config.aws, settings.plan.config.fleet
        return ServiceMonitoring(
            f"{name}-monitoring",
            ServiceMonitoringArgs(
                region=aws.get_region().region, scope=metrics_scope(pulumi.get_stack(), name),
                name=dashboard_name(pulumi.get_project(), pulumi.get_stack(), name),
                load_balancer=self.load_balancer.load_balancer_arn_suffix,
                target_group=self.load_balancer.target_group_arn_suffix,
                cluster_name=self.fleet.cluster_name, service_name=self.fleet.service_name,
                waiting_per_replica=fleet.waiting_per_replica, min_replicas=fleet_plan.bounds.minimum,
                max_replicas=fleet_plan.bounds.maximum, alarm_email=aws_settings.alarm_email,
                tags={**aws_settings.tags, STACK_TAG: pulumi.get_stack(), ENDPOINT_TAG: name},
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )


def _vpc_cidrs(vpc_id: pulumi.Input[str]) -> pulumi.Output[list[str]]:
    """Every IPv4 CIDR of the VPC (its primary and any secondary): the load balancer's nodes have their addresses
    in it, and the replicas' security group admits only the load balancer's."""
    associations = aws.ec2.get_vpc_output(id=vpc_id).cidr_block_associations
    return associations.apply(lambda found: sorted({a.cidr_block for a in found}))


def _fleet_plan(settings: EndpointSettings) -> FleetPlan:
    plan = settings.plan
    if plan.config.target != "aws" or plan.fleet is None:
        raise ConfigError(["replicas: a VllmService is a fleet on AWS: set replicas (and target aws), or build a "
                           "VllmEndpoint for one GPU VM or an existing host"])
    return plan.fleet


def _network(settings: EndpointSettings) -> _Network:
    """The replicas' subnets and the load balancer's: the settings', else the default VPC's default subnets."""
    fleet = settings.plan.config.fleet
    if fleet.subnet_ids:
        vpc_id: pulumi.Input[str] = aws.ec2.get_subnet_output(id=fleet.subnet_ids[0]).vpc_id
        replicas: pulumi.Input[Sequence[str]] = list(fleet.subnet_ids)
    else:
        vpc = aws.ec2.get_vpc(default=True)
        vpc_id = vpc.id
        replicas = aws.ec2.get_subnets(filters=[
            aws.ec2.GetSubnetsFilterArgs(name="vpc-id", values=[vpc.id]),
            aws.ec2.GetSubnetsFilterArgs(name="default-for-az", values=["true"]),
        ]).ids
    balancer: Sequence[str] | pulumi.Output[Sequence[str]] = (
        list(fleet.load_balancer_subnet_ids) or pulumi.Output.from_input(replicas))
    return _Network(vpc_id, replicas, balancer)


def _ami_parameter(aws_settings: AwsSettings) -> str:
    """amiSsmParameter when the stack sets it; else the fleet's own default (the ECS GPU AMI), not the
    single endpoint's Deep Learning AMI."""
    if "ami_ssm_parameter" in aws_settings.model_fields_set:
        return aws_settings.ami_ssm_parameter
    return ECS_GPU_AMI_SSM_PARAMETER


def _plain_cidrs(cidrs: Any) -> Sequence[str]:
    if isinstance(cidrs, pulumi.Output):
        raise ConfigError(["apiAllowedCidrs: a fleet needs plain CIDRs (one load balancer rule each is decided "
                           "before any resource exists); pass a list of strings"])
    return list(cidrs)


def _load_balancer_name(endpoint: str) -> str:
    """A load balancer's names take letters, digits and inner hyphens: the endpoint's name made so."""
    return re.sub(r"[^A-Za-z0-9]+", "-", endpoint).strip("-") or "vllm"
