"""VllmFleet: the ECS capacity and service of a VllmService, N replicas of the endpoint's task on GPU instances.

An ECS cluster whose capacity is an Auto Scaling group of GPU instances (ECS GPU-optimized AMI, IMDSv2 with hop
limit 1, encrypted root and cache volumes, no public IPs, spot and on-demand mixed), registered as a capacity
provider with managed scaling, termination protection and draining; the endpoint's task (infra/render/ecs.py,
the same container spec as the single endpoint's `docker run`), with its secrets by SSM reference; the service
(rolling deployment with circuit breaker and rollback, spread over zones, behind the load balancer's target
group when given); and Application Auto Scaling on vLLM's queue length per replica. The load balancer is
another component: its target group and the tasks' security group come in as plain arguments, both optional
so the fleet can be built and tested alone. Everything it knows comes from its args; it reads no config.

Subnets: private ones are recommended (the instances and the tasks have no public address). Pulls from a
private subnet need a way out: a NAT gateway, or VPC endpoints for ecr.api, ecr.dkr, s3 (a gateway endpoint,
ECR's layers are in S3), logs, ssm and secretsmanager, plus a NAT anyway for images on Docker Hub and models on
the Hugging Face Hub, which no VPC endpoint reaches.

Scaling fallback (documented, not created): when vLLM's metric is not published, a target-tracking policy on
the predefined metric ALBRequestCountPerTarget (resource label `<alb arn suffix>/<target group arn suffix>`)
scales on requests per replica per minute instead; it sees arrivals, not the queue, so its target must be
measured per model (a replica's sustainable requests per minute at the wanted latency).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from vllm_endpoint.components._network import egress_anywhere
from vllm_endpoint.infra.catalog.gpus import GpuInstanceType
from vllm_endpoint.infra.catalog.names import (
    CLOUDWATCH_AGENT_POLICY_ARN,
    DEFAULT_WAITING_PER_REPLICA,
    ECS_GPU_AMI_SSM_PARAMETER,
    ENDPOINT_TAG,
    FLEET_INSTANCES_ROLE,
    FLEET_TASKS_ROLE,
    LOG_GROUP_PREFIX,
    METRICS_NAMESPACE,
    PROJECT,
    PROXY_CONTAINER_PORT,
    ROLE_TAG,
    STACK_TAG,
)
from vllm_endpoint.infra.plan.deployment import DeploymentPlan
from vllm_endpoint.infra.plan.fleet import (
    DeploymentPercents,
    ReplicaBounds,
    SpotSplit,
    TaskReservations,
    deployment_percents,
    fleet_instance_types,
    max_instances,
    replica_bounds,
    spot_split,
    task_reservations,
)
from vllm_endpoint.infra.render.alarms import WAITING
from vllm_endpoint.infra.render.cloudwatch_agent import STACK_DIMENSION, prometheus_log_group
from vllm_endpoint.infra.render.ecs import AwsLogs, check_definitions_size, plan_ecs_task, task_secret_names
from vllm_endpoint.infra.render.ecs_host import ECS_CACHE_DEVICE, ecs_host_settings, ecs_host_user_data
from vllm_endpoint.infra.render.ecs_metrics import metrics_sidecar, with_sidecar
from vllm_endpoint.infra.render.model_sync import ModelSource, model_prefix, model_read_policy
from vllm_endpoint.infra.render.proxy import proxy_spec

# AWS managed policies of the instance role: the ECS agent's (register the instance, poll for tasks, pull from
# ECR, write the agent's logs) and Session Manager's (a shell on a replica without SSH or an open port).
ECS_INSTANCE_POLICY_ARN = "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
SSM_CORE_POLICY_ARN = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
# The tag ECS requires on an Auto Scaling group that a capacity provider with managed scaling drives.
ECS_MANAGED_TAG = "AmazonECSManaged"
# Managed scaling keeps the group at what the tasks need, no spare (one task per instance: a spare is a whole
# idle GPU); a deployment's or a scale-out's new tasks wait in PROVISIONING while the instances launch.
MANAGED_SCALING_TARGET_CAPACITY = 100
# A new GPU instance boots, starts Docker and registers within a few minutes; CloudWatch ignores its metrics
# for scaling meanwhile.
INSTANCE_WARMUP_S = 300
# Target tracking: out quickly (a new replica takes minutes before it serves: instance launch, image pull,
# model load, CUDA graph capture; starting late makes the queue longer), in slowly (a replica removed too soon
# is a cold start the next burst waits for: scaling in and out again thrashes). Application Auto Scaling also
# waits for 15 minutes of datapoints below the target before it scales in.
SCALE_OUT_COOLDOWN_S = 60
SCALE_IN_COOLDOWN_S = 600
STREAM_PREFIX = "replica"
# Stand-ins for the secret ARNs while the task's shape (volumes, grace period, names) is read: the real
# ARNs may be Outputs, and only the container definitions need them.
_PLACEHOLDER_ARN = "arn:aws:ssm:us-east-1:000000000000:parameter/placeholder/{}"
_PLACEHOLDER_BUCKET = "placeholder"
_LaunchTemplateSpecification = aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateLaunchTemplateSpecificationArgs


@dataclass(frozen=True)
class VllmFleetArgs:
    name: str  # the endpoint's name: tags, the task family and the log group
    plan: DeploymentPlan
    instance: GpuInstanceType
    subnet_ids: pulumi.Input[Sequence[pulumi.Input[str]]]  # private subnets recommended (module docstring)
    # SSM SecureString parameter ARN of each secret environment variable of the task (ecs.task_secret_names).
    secret_parameter_arns: Mapping[str, pulumi.Input[str]]
    replicas: int = 1  # desired count at creation; autoscaling owns it afterwards
    min_replicas: int = 1
    max_replicas: int = 1
    # Spot: the first `on_demand_base` instances on demand, above them on demand : spot by these weights.
    on_demand_base: int = 1
    spot_weight: int = 0
    on_demand_weight: int = 1
    extra_instance_types: tuple[GpuInstanceType, ...] = ()  # same GPU, same count (more spot pools)
    cache_volume_size_gb: int = 100
    root_volume_size_gb: int = 100  # the vLLM image's layers land on the root disk
    kms_key_id: pulumi.Input[str] | None = None  # a key ARN: the EBS volumes, and kms:Decrypt of the parameters
    log_retention_days: int = 30
    tags: Mapping[str, str] = field(default_factory=dict)
    # From the load balancer component; None: no load balancer (tests), and an egress-only task group.
    target_group_arn: pulumi.Input[str] | None = None
    task_security_group_id: pulumi.Input[str] | None = None
    vpc_id: pulumi.Input[str] | None = None  # None: the first subnet's VPC
    ami_id: str | None = None  # pinned AMI; None: ami_ssm_parameter's value at each `pulumi up`
    ami_ssm_parameter: str = ECS_GPU_AMI_SSM_PARAMETER
    # True: the group may double the fleet during a deployment (no capacity lost); False: never an extra instance.
    surge_on_deploy: bool = True
    # Stopped on-demand instances kept ready beside the fleet (an EC2 Auto Scaling warm pool); 0: none.
    warm_pool_size: int = 0
    # Docker's image store on the cache volume (a snapshot of it then carries the image).
    cache_images: bool = False
    waiting_per_replica: float = DEFAULT_WAITING_PER_REPLICA
    metrics_scope: str = ""  # the metrics' `stack` dimension value (cloudwatch_agent.metrics_scope); "": stack
    # What the service waits for: ECS refuses a target group that no listener uses yet.
    service_depends_on: Sequence[pulumi.Resource] = ()
    # A snapshot of a warm cache each new instance's cache volume starts from, and the rate EBS fills it at.
    cache_snapshot_id: str | None = None
    cache_initialization_rate_mib_s: int = 300
    # Each task's CloudWatch agent sidecar publishes vLLM's metrics (infra/render/ecs_metrics.py); the scaling
    # policy reads them. False: no sidecar, no task role, and the scaling policy has no data.
    metrics: bool = True
    # The networks the load balancer's nodes are in (the VPC's CIDRs): the task's proxy takes the client's
    # address from their X-Forwarded-For (infra/render/proxy.py `_real_ip_lines`). Empty: the peer's address.
    trusted_proxy_cidrs: pulumi.Input[Sequence[str]] = ()
    # The vLLM image the task runs instead of the plan's (a custom image pushed to ECR: FleetImage's image_ref).
    vllm_image: pulumi.Input[str] | None = None
    # The bucket the plan's modelPath was uploaded to (FleetModel): each task copies it (model_sync.py), with
    # a task role that reads exactly those objects. Required with a modelPath.
    model_bucket: pulumi.Input[str] | None = None
    model_bucket_arn: pulumi.Input[str] | None = None


@dataclass(frozen=True)
class _Roles:
    instance_role: aws.iam.Role
    instance_policies: list[aws.iam.RolePolicyAttachment]
    instance_profile: aws.iam.InstanceProfile
    execution_role: aws.iam.Role
    execution_policy: aws.iam.RolePolicy


class VllmFleet(pulumi.ComponentResource):
    cluster_name: pulumi.Output[str]
    service_name: pulumi.Output[str]
    log_group_name: pulumi.Output[str]
    bounds: ReplicaBounds
    percents: DeploymentPercents
    reservations: TaskReservations
    spot: SpotSplit

    def __init__(self, name: str, args: VllmFleetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PROJECT}:aws:VllmFleet", name, None, opts)
        tags = {**args.tags, STACK_TAG: pulumi.get_stack(), ENDPOINT_TAG: args.name}
        if args.plan.instance is not None and args.plan.instance.name != args.instance.name:
            raise ValueError(f"VllmFleet {args.name}: the plan is for {args.plan.instance.name}, the fleet for "
                             f"{args.instance.name}")
        # Every number is decided before any resource: a bad combination fails here, naming its settings.
        self.instance_types = fleet_instance_types(args.instance, args.extra_instance_types)
        self.bounds = replica_bounds(args.replicas, args.min_replicas, args.max_replicas)
        self.max_instances = max_instances(self.bounds, args.surge_on_deploy)
        self.percents = deployment_percents(self.bounds, self.max_instances)
        self.reservations = task_reservations(self.instance_types)
        self.spot = spot_split(args.on_demand_base, args.spot_weight, args.on_demand_weight)
        if args.warm_pool_size and (args.spot_weight or args.extra_instance_types):
            raise ValueError(f"VllmFleet {args.name}: warm_pool_size: EC2 Auto Scaling keeps no warm pool for a "
                             "group that buys spot or mixes instance types")
        region = aws.get_region().region
        account = aws.get_caller_identity().account_id
        scope = args.metrics_scope or pulumi.get_stack()
        logs = AwsLogs(f"{LOG_GROUP_PREFIX}/{scope}/tasks", region, STREAM_PREFIX)
        if (args.plan.model_upload is None) != (args.model_bucket is None):
            raise ValueError(f"VllmFleet {args.name}: give model_bucket (FleetModel's) exactly when the plan has a "
                             "modelPath")
        # The task's shape; the container definitions are rendered again with the real ARNs (_container_definitions).
        self.task = plan_ecs_task(args.plan, logs=logs, secret_arns={
            n: _PLACEHOLDER_ARN.format(n) for n in task_secret_names(args.plan)},
            model_source=_model_source(args.plan, _PLACEHOLDER_BUCKET, region))
        if args.metrics:  # the sidecar counts towards the task definition's size too
            check_definitions_size(with_sidecar(self.task.container_definitions_json(), metrics_sidecar(scope, logs)))

        vpc_id = args.vpc_id if args.vpc_id is not None else aws.ec2.get_subnet_output(
            id=pulumi.Output.from_input(args.subnet_ids).apply(lambda ids: ids[0])).vpc_id
        self.instance_security_group = self._create_egress_only_group(
            f"{name}-instances", vpc_id, "vLLM fleet instances: no inbound; tasks have their own interfaces",
            {**tags, ROLE_TAG: FLEET_INSTANCES_ROLE})
        self.task_security_group: aws.ec2.SecurityGroup | None = None
        task_group_id: pulumi.Input[str]
        if args.task_security_group_id is not None:
            task_group_id = args.task_security_group_id
        else:
            self.task_security_group = self._create_egress_only_group(
                f"{name}-tasks", vpc_id, "vLLM fleet tasks: no inbound without a load balancer",
                {**tags, ROLE_TAG: FLEET_TASKS_ROLE})
            task_group_id = self.task_security_group.id

        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-tasks-log",
            name=logs.group,
            retention_in_days=args.log_retention_days,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        log_group_arn = f"arn:aws:logs:{region}:{account}:log-group:{logs.group}"
        roles = self._create_roles(name, args, log_group_arn, account, tags)
        self.instance_role, self.instance_profile = roles.instance_role, roles.instance_profile
        self.execution_role, self.execution_policy = roles.execution_role, roles.execution_policy
        self.task_role: aws.iam.Role | None = None
        if args.metrics or args.model_bucket is not None:
            self.task_role = aws.iam.Role(
                f"{name}-task-role", assume_role_policy=_assume_role("ecs-tasks.amazonaws.com"), tags=tags,
                opts=pulumi.ResourceOptions(parent=self))
        self.metrics_log_group: aws.cloudwatch.LogGroup | None = None
        if self.task_role is not None and args.metrics:
            self.metrics_log_group = self._create_metrics_publishing(name, args, self.task_role, scope, tags)
        self.model_read_policy: aws.iam.RolePolicy | None = None
        if self.task_role is not None and args.model_bucket_arn is not None:
            self.model_read_policy = self._create_model_read_policy(name, args, self.task_role)

        self.cluster = aws.ecs.Cluster(
            f"{name}-cluster",
            # Per-task CPU, memory, network and restarts in CloudWatch (Container Insights).
            settings=[{"name": "containerInsights", "value": "enabled"}],
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.launch_template = self._create_launch_template(name, args, roles, tags)
        self.auto_scaling_group = self._create_auto_scaling_group(name, args, tags)
        self.capacity_provider = self._create_capacity_provider(name, tags)
        self.cluster_capacity_providers = aws.ecs.ClusterCapacityProviders(
            f"{name}-cluster-capacity",
            cluster_name=self.cluster.name,
            capacity_providers=[self.capacity_provider.name],
            default_capacity_provider_strategies=[{"capacity_provider": self.capacity_provider.name, "weight": 1}],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.task_definition = aws.ecs.TaskDefinition(
            f"{name}-task",
            **{**self.task.task_definition_args(), "container_definitions": _container_definitions(args, logs, scope)},
            family=_family(args.name),
            execution_role_arn=self.execution_role.arn,
            task_role_arn=self.task_role.arn if self.task_role is not None else None,
            # The task's hard limits and the scheduler's reservation: what the smallest type leaves after the
            # host's share (infra/plan/fleet.py, task_reservations).
            cpu=str(self.reservations.cpu_units),
            memory=str(self.reservations.memory_mib),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.service = self._create_service(name, args, task_group_id, tags)
        self.scalable_target, self.scaling_policy = self._create_autoscaling(name, args, scope, tags)

        self.cluster_name = self.cluster.name
        self.service_name = self.service.name
        self.log_group_name = self.log_group.name
        self.register_outputs({
            "cluster_name": self.cluster_name,
            "service_name": self.service_name,
            "log_group_name": self.log_group_name,
            "replicas": {"desired": self.bounds.desired, "min": self.bounds.minimum, "max": self.bounds.maximum},
        })

    # ------------------------------------------------------------------------------------------

    def _create_egress_only_group(self, name: str, vpc_id: pulumi.Input[str], description: str,
                                  tags: dict[str, str]) -> aws.ec2.SecurityGroup:
        group = aws.ec2.SecurityGroup(
            f"{name}-sg", vpc_id=vpc_id, description=description, tags={**tags, "Name": f"{name}-sg"},
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Outbound only: the ECS and SSM endpoints, image pulls and model downloads.
        egress_anywhere(f"{name}-egress", group.id, "outbound: ECS, image pulls and model downloads", tags, self)
        return group

    def _create_metrics_publishing(self, name: str, args: VllmFleetArgs, role: aws.iam.Role, scope: str,
                                   tags: dict[str, str]) -> aws.cloudwatch.LogGroup:
        """The task role's right to publish (the metrics sidecar writes with it), and the log group its scraped
        samples go to (CloudWatch extracts the metrics from them; kept as long as the task logs)."""
        opts = pulumi.ResourceOptions(parent=self)
        self.task_role_policy = aws.iam.RolePolicyAttachment(
            f"{name}-task-cloudwatch-agent", role=role.name, policy_arn=CLOUDWATCH_AGENT_POLICY_ARN, opts=opts)
        return aws.cloudwatch.LogGroup(f"{name}-prometheus-log", name=prometheus_log_group(scope),
                                       retention_in_days=args.log_retention_days, tags=tags, opts=opts)

    def _create_model_read_policy(self, name: str, args: VllmFleetArgs, role: aws.iam.Role) -> aws.iam.RolePolicy:
        """The sync container reads the fine-tune's objects with the task role: this folder version's only."""
        assert args.plan.model_upload is not None
        prefix = model_prefix(args.plan.model_upload)
        return aws.iam.RolePolicy(
            f"{name}-task-model-read", role=role.id,
            policy=pulumi.Output.all(args.model_bucket_arn, args.kms_key_id).apply(
                lambda v: model_read_policy(v[0], prefix, v[1])),
            opts=pulumi.ResourceOptions(parent=self))

    def _create_roles(self, name: str, args: VllmFleetArgs, log_group_arn: str, account: str,
                      tags: dict[str, str]) -> _Roles:
        opts = pulumi.ResourceOptions(parent=self)
        instance_role = aws.iam.Role(
            f"{name}-instance-role",
            assume_role_policy=_assume_role("ec2.amazonaws.com"),
            tags=tags,
            opts=opts,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(f"{name}-instance-{short}", role=instance_role.name, policy_arn=arn, opts=opts)
            for short, arn in (("ecs", ECS_INSTANCE_POLICY_ARN), ("ssm", SSM_CORE_POLICY_ARN))
        ]
        profile = aws.iam.InstanceProfile(f"{name}-instance-profile", role=instance_role.name, tags=tags, opts=opts)
        # The agent fetches the task's secrets and creates its log streams with this role, never the instance's.
        execution_role = aws.iam.Role(
            f"{name}-execution-role",
            assume_role_policy=_assume_role("ecs-tasks.amazonaws.com"),
            tags=tags,
            opts=opts,
        )
        parameters = list(_secret_arns(args).values())
        policy = aws.iam.RolePolicy(
            f"{name}-execution-policy",
            role=execution_role.id,
            policy=pulumi.Output.all(args.kms_key_id, *parameters).apply(
                lambda values: _execution_policy(values[1:], values[0], log_group_arn, account)),
            opts=opts,
        )
        return _Roles(instance_role, attachments, profile, execution_role, policy)

    def _create_launch_template(self, name: str, args: VllmFleetArgs, roles: _Roles,
                                tags: dict[str, str]) -> aws.ec2.LaunchTemplate:
        # Unpinned, each `pulumi up` reads the parameter: a new AMI makes a new template version, which only
        # instances launched afterwards use (running replicas are never replaced by it).
        ami: pulumi.Input[str] = args.ami_id or aws.ssm.get_parameter_output(name=args.ami_ssm_parameter).value
        cache = args.plan.cache_volume
        gp3 = cache is not None and cache.type == "gp3"

        def encrypted(size_gb: int, iops: int | None = None, throughput: int | None = None,
                      ) -> aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs:
            return aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                encrypted="true", kms_key_id=args.kms_key_id, volume_type="gp3", delete_on_termination="true",
                volume_size=size_gb, iops=iops, throughput=throughput)

        return aws.ec2.LaunchTemplate(
            f"{name}-launch-template",
            description=f"vLLM fleet {args.name}: ECS GPU instances",
            image_id=ami,
            # The type comes from the group's overrides, except with a warm pool (no mixed instances policy).
            instance_type=args.instance.name if args.warm_pool_size else None,
            iam_instance_profile=aws.ec2.LaunchTemplateIamInstanceProfileArgs(arn=roles.instance_profile.arn),
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",  # IMDSv2 only: CKV_AWS_79, Security Hub EC2.8
                # Hop limit 1: a container one hop away cannot reach the instance role. awsvpc tasks need no
                # IMDS: the agent serves their credentials at 169.254.170.2 (and ECS_AWSVPC_BLOCK_IMDS is set).
                http_put_response_hop_limit=1,
            ),
            monitoring={"enabled": True},  # CKV_AWS_126
            ebs_optimized="true",
            network_interfaces=[aws.ec2.LaunchTemplateNetworkInterfaceArgs(
                device_index=0,
                # Private: pulls go out through a NAT or VPC endpoints (module docstring). CKV_AWS_88.
                associate_public_ip_address="false",
                delete_on_termination="true",
                security_groups=[self.instance_security_group.id],
            )],
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(device_name="/dev/xvda",
                                                             ebs=encrypted(args.root_volume_size_gb)),
                # The model cache, per instance and gone with it: a replacement downloads the model again
                # unless it starts from a snapshot of a warm cache (cache_snapshot_id). Its speed is the plan's,
                # sized to the instance's EBS bandwidth.
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(device_name=ECS_CACHE_DEVICE, ebs=_cache_device(
                    encrypted(args.cache_volume_size_gb, cache.iops if gp3 and cache else None,
                              cache.throughput_mib_s if gp3 and cache else None), args)),
            ],
            user_data=self.cluster.name.apply(
                lambda cluster: ecs_host_user_data(ecs_host_settings(
                    args.plan, self.task, cluster, warm_pool=args.warm_pool_size > 0,
                    cache_images=args.cache_images))),
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind, tags={**tags, "Name": f"{name}-replica"})
                for kind in ("instance", "volume", "network-interface")],
            update_default_version=True,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _create_auto_scaling_group(self, name: str, args: VllmFleetArgs, tags: dict[str, str]) -> aws.autoscaling.Group:
        return aws.autoscaling.Group(
            f"{name}-asg",
            min_size=0,  # managed scaling sets the desired capacity from the tasks
            max_size=self.max_instances,
            vpc_zone_identifiers=args.subnet_ids,
            **self._instances(args),
            # A spot instance at elevated risk of interruption is replaced before the notice; ECS drains it.
            capacity_rebalance=args.warm_pool_size == 0,
            # Managed termination protection needs it: ECS lifts the protection from instances without tasks.
            protect_from_scale_in=True,
            health_check_type="EC2",
            default_instance_warmup=INSTANCE_WARMUP_S,
            tags=[aws.autoscaling.GroupTagArgs(key=k, value=v, propagate_at_launch=True)
                  for k, v in {ECS_MANAGED_TAG: "true", **tags}.items()],
            # `pulumi destroy` must end protected instances too (the service is deleted first, so they hold no task).
            force_delete=True,
            opts=pulumi.ResourceOptions(
                parent=self,
                # ECS managed scaling owns the desired capacity; a deploy must not reset it.
                ignore_changes=["desiredCapacity"],
            ),
        )

    def _instances(self, args: VllmFleetArgs) -> dict[str, Any]:
        """What the group launches: with a warm pool, the template itself (its instance type; EC2 Auto Scaling
        keeps no warm pool for a mixed instances policy) and exactly `warm_pool_size` stopped instances (the
        pool holds max_group_prepared_capacity less the group's desired capacity, at least min_size). Not
        returned to the pool on scale-in: ECS does not allow it (its warm pool page)."""
        if args.warm_pool_size:
            return {
                "launch_template": aws.autoscaling.GroupLaunchTemplateArgs(
                    id=self.launch_template.id, version="$Latest"),
                "warm_pool": aws.autoscaling.GroupWarmPoolArgs(
                    pool_state="Stopped", min_size=args.warm_pool_size,
                    max_group_prepared_capacity=args.warm_pool_size,
                    instance_reuse_policy=aws.autoscaling.GroupWarmPoolInstanceReusePolicyArgs(
                        reuse_on_scale_in=False)),
            }
        return {"mixed_instances_policy": aws.autoscaling.GroupMixedInstancesPolicyArgs(
                launch_template=aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateArgs(
                    # $Latest: instances launched after a template change use it; running ones keep theirs.
                    launch_template_specification=_LaunchTemplateSpecification(
                        launch_template_id=self.launch_template.id, version="$Latest"),
                    # The primary type first: on demand follows this order ("prioritized").
                    overrides=[aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateOverrideArgs(instance_type=t.name)
                               for t in self.instance_types],
                ),
                instances_distribution=aws.autoscaling.GroupMixedInstancesPolicyInstancesDistributionArgs(
                    on_demand_base_capacity=self.spot.on_demand_base_capacity,
                    on_demand_percentage_above_base_capacity=self.spot.on_demand_percentage_above_base_capacity,
                    on_demand_allocation_strategy="prioritized",
                    # Pools with spare capacity first, then the cheapest: fewer interruptions than lowest-price.
                    spot_allocation_strategy="price-capacity-optimized",
                ),
            )}

    def _create_capacity_provider(self, name: str, tags: dict[str, str]) -> aws.ecs.CapacityProvider:
        return aws.ecs.CapacityProvider(
            f"{name}-capacity",
            auto_scaling_group_provider={
                "auto_scaling_group_arn": self.auto_scaling_group.arn,
                "managed_scaling": {
                    "status": "ENABLED",
                    "target_capacity": MANAGED_SCALING_TARGET_CAPACITY,
                    "minimum_scaling_step_size": 1,
                    "maximum_scaling_step_size": self.max_instances,
                    "instance_warmup_period": INSTANCE_WARMUP_S,
                },
                # Scale-in never ends an instance that still runs a replica.
                "managed_termination_protection": "ENABLED",
                # An instance leaving the group (scale-in, rebalance, spot notice) drains its task first.
                "managed_draining": "ENABLED",
            },
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _create_service(self, name: str, args: VllmFleetArgs, task_group_id: pulumi.Input[str],
                        tags: dict[str, str]) -> aws.ecs.Service:
        load_balancers = [] if args.target_group_arn is None else [aws.ecs.ServiceLoadBalancerArgs(
            target_group_arn=args.target_group_arn,
            # The proxy sidecar answers the load balancer, as it answers clients on the single endpoint.
            container_name=proxy_spec(args.plan).name,
            container_port=PROXY_CONTAINER_PORT,
        )]
        return aws.ecs.Service(
            f"{name}-service",
            cluster=self.cluster.arn,
            task_definition=self.task_definition.arn,
            desired_count=self.bounds.desired,
            capacity_provider_strategies=[aws.ecs.ServiceCapacityProviderStrategyArgs(
                capacity_provider=self.capacity_provider.name, weight=1)],
            deployment_circuit_breaker={"enable": True, "rollback": True},
            # infra/plan/fleet.py, deployment_percents: no capacity lost when the group has room for a second
            # fleet, else old tasks stop first (and never a deadlock at the smallest count).
            deployment_minimum_healthy_percent=self.percents.minimum_healthy_percent,
            deployment_maximum_percent=self.percents.maximum_percent,
            # Replicas in different zones: one zone's outage or spot reclaim takes only its share. No binpack
            # after it: a task takes all the GPUs of its instance, so no instance ever holds two to pack.
            ordered_placement_strategies=[{"type": "spread", "field": "attribute:ecs.availability-zone"}],
            # A cold start (image pull, model download, compile) outlasts ECS's 300 s start period: the
            # scheduler ignores failing health checks this long (infra/render/ecs.py, HEALTH).
            health_check_grace_period_seconds=self.task.health_check_grace_period_s or None,
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                subnets=args.subnet_ids,
                security_groups=[task_group_id],
                assign_public_ip=False,
            ),
            load_balancers=load_balancers,
            enable_ecs_managed_tags=True,
            propagate_tags="SERVICE",
            # No shell into replicas (no SSH either): logs and metrics are the way in.
            enable_execute_command=False,
            # `pulumi up` does not block on the rollout here: a cold start takes many minutes per replica, and
            # the VllmService waits for the load balancer to answer /v1/models with progress instead.
            wait_for_steady_state=False,
            tags=tags,
            opts=pulumi.ResourceOptions(
                parent=self,
                # The strategy names the capacity provider, which must be the cluster's first.
                depends_on=[self.cluster_capacity_providers, *args.service_depends_on],
                # Application Auto Scaling owns the desired count once the service exists.
                ignore_changes=["desiredCount"],
            ),
        )

    def _create_autoscaling(self, name: str, args: VllmFleetArgs, scope: str,
                            tags: dict[str, str]) -> tuple[aws.appautoscaling.Target, aws.appautoscaling.Policy]:
        target = aws.appautoscaling.Target(
            f"{name}-scaling-target",
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=pulumi.Output.concat("service/", self.cluster.name, "/", self.service.name),
            min_capacity=self.bounds.minimum,
            max_capacity=self.bounds.maximum,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        policy = aws.appautoscaling.Policy(
            f"{name}-waiting-per-replica",
            policy_type="TargetTrackingScaling",
            service_namespace=target.service_namespace,
            scalable_dimension=target.scalable_dimension,
            resource_id=target.resource_id,
            target_tracking_scaling_policy_configuration={
                "target_value": args.waiting_per_replica,
                # Every replica publishes its gauge with the same `stack` dimension (the CloudWatch agent's
                # scrape of its /metrics): the Average over the period is the queue per replica.
                "customized_metric_specification": {
                    "metric_name": WAITING,
                    "namespace": METRICS_NAMESPACE,
                    "dimensions": [{"name": STACK_DIMENSION, "value": scope}],
                    "statistic": "Average",
                },
                "scale_out_cooldown": SCALE_OUT_COOLDOWN_S,
                "scale_in_cooldown": SCALE_IN_COOLDOWN_S,
                "disable_scale_in": False,
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        return target, policy


def _cache_device(blank: aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs,
                  args: VllmFleetArgs) -> aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs:
    """The cache volume's mapping: blank and encrypted, or from the warm-cache snapshot. EC2 refuses an
    encryption value with a snapshot (the volume takes the snapshot's: scripts/snapshot-cache.sh snapshots only
    encrypted volumes), and fills it at the provisioned rate before the instance reads it, instead of fetching
    each block from S3 on its first read (the model load would run at S3's pace)."""
    if args.cache_snapshot_id is None:
        return blank
    return aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
        snapshot_id=args.cache_snapshot_id, volume_initialization_rate=args.cache_initialization_rate_mib_s,
        volume_type="gp3", delete_on_termination="true", volume_size=args.cache_volume_size_gb,
        iops=blank.iops, throughput=blank.throughput)


def _secret_arns(args: VllmFleetArgs) -> dict[str, pulumi.Input[str]]:
    """The ARN of every secret the task takes, in the task's order; a missing one is refused by name."""
    needed = task_secret_names(args.plan)
    missing = [env for env in needed if env not in args.secret_parameter_arns]
    if missing:
        raise ValueError(f"VllmFleet {args.name}: the task takes {missing} as secrets; give their SSM parameter ARNs "
                         "in secret_parameter_arns")
    return {env: args.secret_parameter_arns[env] for env in needed}


def _container_definitions(args: VllmFleetArgs, logs: AwsLogs, scope: str) -> pulumi.Output[str]:
    """The task's container definitions with the real ARNs (validated by the renderer), once they are known, and
    the metrics sidecar when metrics are on."""
    needed = list(_secret_arns(args).items())
    names = [env for env, _ in needed]

    def render(values: list[Any]) -> str:
        *arns, trusted, image, bucket = values
        plan = args.plan if image is None else dataclasses.replace(
            args.plan, vllm=dataclasses.replace(args.plan.vllm, image=image))
        task = plan_ecs_task(plan, secret_arns=dict(zip(names, arns, strict=True)), logs=logs,
                             trusted_proxies=list(trusted), model_source=_model_source(plan, bucket, logs.region))
        definitions = task.container_definitions_json()
        return with_sidecar(definitions, metrics_sidecar(scope, logs)) if args.metrics else definitions

    return pulumi.Output.all(*(arn for _, arn in needed), args.trusted_proxy_cidrs, args.vllm_image,
                             args.model_bucket).apply(render)


def _model_source(plan: DeploymentPlan, bucket: str | None, region: str) -> ModelSource | None:
    if plan.model_upload is None or bucket is None:
        return None
    return ModelSource(bucket, model_prefix(plan.model_upload), region)


def _execution_policy(parameter_arns: Sequence[Any], kms_key_id: Any, log_group_arn: str, account: str) -> str:
    statements: list[dict[str, Any]] = [
        # Exactly the task's parameters: the agent calls GetParameters for a task's `secrets`.
        {"Effect": "Allow", "Action": "ssm:GetParameters", "Resource": sorted(str(a) for a in parameter_arns)},
        {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": f"{log_group_arn}:*"},
        # An image in ECR (a fine-tune baked into an image of the user's): the agent pulls with this role.
        # GetAuthorizationToken takes no resource; the pulls are limited to the account's repositories.
        {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Effect": "Allow", "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
         "Resource": f"arn:aws:ecr:*:{account}:repository/*"},
    ]
    if kms_key_id:
        statements.append({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": str(kms_key_id)})
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def _assume_role(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": service}}]})


def _family(endpoint: str) -> str:
    """The task definition family: letters, digits, hyphens and underscores, up to 255."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"{PROJECT}-{pulumi.get_stack()}-{endpoint}")[:255]
