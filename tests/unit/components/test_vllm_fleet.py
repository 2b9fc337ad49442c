"""VllmFleet under mocks: the launch template's metadata, volumes and addresses, the task's secrets by reference,
the service's deployment and placement, the capacity provider, the spot split and the scaling policy, and the
policy pack over every resource."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, cast

import pulumi
import pytest
import yaml

from tests.unit.components.test_components import Deployed
from tests.unit.infra.render.test_ecs import stack_plan
from tests.unit.policy.test_policy_on_program import violations
from tests.unit.pulumi_mocks import MOCK_AMI, Mocks, plaintext_occurrences
from vllm_endpoint.components.fleet import (
    ECS_MANAGED_TAG,
    SCALE_IN_COOLDOWN_S,
    SCALE_OUT_COOLDOWN_S,
    VllmFleet,
    VllmFleetArgs,
)
from vllm_endpoint.infra.catalog.gpus import INSTANCE_TYPES
from vllm_endpoint.infra.catalog.names import (
    CLOUDWATCH_AGENT_IMAGE,
    CLOUDWATCH_AGENT_POLICY_ARN,
    ECS_GPU_AMI_SSM_PARAMETER,
    HOST_CACHE_MOUNT,
    METRICS_NAMESPACE,
    PROXY_CONTAINER_PORT,
    PROXY_KEY_CHECK_ENV,
    SECRET_API_KEY_ENV,
    SECRET_HF_TOKEN_ENV,
    VLLM_CONTAINER_PORT,
)
from vllm_endpoint.infra.render.cloudwatch_agent import STACK_DIMENSION
from vllm_endpoint.infra.render.ecs_metrics import METRICS_SIDECAR

API_KEY = "k" * 40
HF_TOKEN = "hf_" + "SeCrEt" * 6
API_ARN = "arn:aws:ssm:us-east-1:123456789012:parameter/vllm-endpoint/stack/api-key"
HF_ARN = "arn:aws:ssm:us-east-1:123456789012:parameter/vllm-endpoint/stack/hf-token"
KEY_CHECK_ARN = "arn:aws:ssm:us-east-1:123456789012:parameter/vllm-endpoint/stack/proxy-key-check"
ARNS = {SECRET_API_KEY_ENV: API_ARN, SECRET_HF_TOKEN_ENV: HF_ARN, PROXY_KEY_CHECK_ENV: KEY_CHECK_ARN}
KMS = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
TG = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/vllm/0123456789abcdef"
SUBNETS = ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"]
G5 = INSTANCE_TYPES["g5.xlarge"]

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
ASG = "aws:autoscaling/group:Group"
CAPACITY = "aws:ecs/capacityProvider:CapacityProvider"
SERVICE = "aws:ecs/service:Service"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
POLICY = "aws:appautoscaling/policy:Policy"
TARGET = "aws:appautoscaling/target:Target"


@dataclass
class Fleet:
    mocks: Mocks
    fleet: VllmFleet
    options: dict[str, pulumi.ResourceOptions] = field(default_factory=dict)

    def inputs(self, typ: str) -> dict[str, Any]:
        return self.mocks.one(typ).inputs


def digest(name: str) -> str:
    """The mocks' suffix of a name AWS generates (tests/unit/pulumi_mocks.py)."""
    return hashlib.sha256(name.encode()).hexdigest()[:8]


def fleet_args(**changes: Any) -> VllmFleetArgs:
    plan = stack_plan("dev", apiKey=API_KEY, hfToken=HF_TOKEN)
    args = VllmFleetArgs(name="vllm", plan=plan, instance=G5, subnet_ids=SUBNETS, secret_parameter_arns=ARNS,
                         replicas=2, min_replicas=2, max_replicas=4,
                         on_demand_base=1, spot_weight=3, on_demand_weight=1,
                         extra_instance_types=(INSTANCE_TYPES["g5.2xlarge"],), kms_key_id=KMS,
                         target_group_arn=TG, task_security_group_id="sg-0123456789abcdef0")
    return replace(args, **changes)


def build(args: VllmFleetArgs) -> Fleet:
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, preview=False)
    options: dict[str, pulumi.ResourceOptions] = {}

    def capture(a: pulumi.ResourceTransformationArgs) -> None:
        options[a.name] = a.opts

    holder: dict[str, Fleet] = {}

    @pulumi.runtime.test
    def run() -> Any:
        fleet = VllmFleet("vllm", args, opts=pulumi.ResourceOptions(transformations=[capture]))
        holder["f"] = Fleet(mocks, fleet, options)
        return pulumi.Output.all(fleet.cluster_name, fleet.service_name, fleet.task_definition.container_definitions,
                                 fleet.launch_template.user_data, fleet.scaling_policy.id)

    run()
    return holder["f"]


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return build(fleet_args())


def test_instances_require_imdsv2_with_hop_limit_1_and_get_no_public_ip(fleet: Fleet) -> None:
    template = fleet.inputs(LAUNCH_TEMPLATE)
    assert template["metadataOptions"] == {"httpEndpoint": "enabled", "httpTokens": "required",
                                           "httpPutResponseHopLimit": 1}
    assert [n["associatePublicIpAddress"] for n in template["networkInterfaces"]] == ["false"]
    assert template["imageId"] == MOCK_AMI
    assert ("aws:ssm/getParameter:getParameter", {"name": ECS_GPU_AMI_SSM_PARAMETER}) in \
        [(t, {"name": a.get("name")}) for t, a in fleet.mocks.calls]
    assert fleet.inputs(SERVICE)["networkConfiguration"]["assignPublicIp"] is False


def test_a_pinned_ami_reads_no_parameter() -> None:
    pinned = build(fleet_args(ami_id="ami-0123456789abcdef0"))
    assert pinned.inputs(LAUNCH_TEMPLATE)["imageId"] == "ami-0123456789abcdef0"
    assert "aws:ssm/getParameter:getParameter" not in [t for t, _ in pinned.mocks.calls]


def test_root_and_cache_volumes_are_encrypted_gp3_with_the_key(fleet: Fleet) -> None:
    mappings = fleet.inputs(LAUNCH_TEMPLATE)["blockDeviceMappings"]
    assert [m["deviceName"] for m in mappings] == ["/dev/xvda", "/dev/xvdf"]
    for m in mappings:
        assert (m["ebs"]["encrypted"], m["ebs"]["kmsKeyId"], m["ebs"]["volumeType"]) == ("true", KMS, "gp3")
    assert mappings[1]["ebs"]["volumeSize"] == 100


def test_the_user_data_joins_this_cluster_and_mounts_the_cache_before_the_agent(fleet: Fleet) -> None:
    script = base64.b64decode(fleet.inputs(LAUNCH_TEMPLATE)["userData"]).decode()
    # The cluster's name as AWS gave it (the mocks: the resource name and a digest).
    assert re.search(r"\nreadonly CLUSTER=vllm-cluster-[0-9a-f]{7}\n", script)
    assert "local needed_by=ecs.service" in script and "Before=${needed_by}" in script
    assert "ECS_ENABLE_SPOT_INSTANCE_DRAINING=true" in script
    assert "\nreadonly DOCKER_DATA_ROOT=''\n" in script  # Docker's images stay on the root disk
    # Only the vLLM caches: the proxy writes its config into its own tmpfs from the task (no host folder).
    assert "readonly -a CACHE_SUBDIRS=(root-cache)" in script
    assert "readonly STOP_TIMEOUT=60" in script  # the vLLM container's stopTimeout


def test_the_task_takes_its_secrets_by_reference_and_no_secret_value_is_anywhere(fleet: Fleet) -> None:
    task = fleet.inputs(TASK)
    definitions = json.loads(task["containerDefinitions"])
    vllm, proxy, agent = definitions
    assert "secrets" not in agent
    assert vllm["secrets"] == [{"name": SECRET_API_KEY_ENV, "valueFrom": API_ARN},
                               {"name": SECRET_HF_TOKEN_ENV, "valueFrom": HF_ARN}]
    assert proxy["secrets"] == [{"name": PROXY_KEY_CHECK_ENV, "valueFrom": KEY_CHECK_ARN}]
    assert (task["networkMode"], task["requiresCompatibilities"]) == ("awsvpc", ["EC2"])
    assert (task["cpu"], task["memory"]) == ("3584", "14720")  # g5.xlarge, the smaller of the two types
    for resource in fleet.mocks.resources:
        for needle in (API_KEY, HF_TOKEN):
            assert plaintext_occurrences(resource.raw_inputs, needle) == [], resource.name
    policy = json.loads(fleet.inputs("aws:iam/rolePolicy:RolePolicy")["policy"])
    by_action = {json.dumps(s["Action"]): s["Resource"] for s in policy["Statement"]}
    assert by_action['"ssm:GetParameters"'] == sorted(ARNS.values())
    assert by_action['"kms:Decrypt"'] == KMS
    assert by_action['["logs:CreateLogStream", "logs:PutLogEvents"]'] == \
        "arn:aws:logs:us-east-1:123456789012:log-group:/vllm-endpoint/stack/tasks:*"
    assert {g.inputs["retentionInDays"] for g in fleet.mocks.of_type("aws:cloudwatch/logGroup:LogGroup")} == {30}


def test_the_service_rolls_with_circuit_breaker_room_and_zone_spread(fleet: Fleet) -> None:
    service = fleet.inputs(SERVICE)
    assert service["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    # max 4 replicas, the group may hold 8: new tasks start before old ones stop.
    assert (service["deploymentMinimumHealthyPercent"], service["deploymentMaximumPercent"]) == (100, 200)
    assert service["orderedPlacementStrategies"] == [{"type": "spread", "field": "attribute:ecs.availability-zone"}]
    assert service["healthCheckGracePeriodSeconds"] == 600
    assert service["loadBalancers"] == [{"targetGroupArn": TG, "containerName": "vllm-proxy",
                                         "containerPort": PROXY_CONTAINER_PORT}]
    assert service["networkConfiguration"]["securityGroups"] == ["sg-0123456789abcdef0"]
    assert (service["desiredCount"], service["propagateTags"], service["enableEcsManagedTags"]) == (2, "SERVICE", True)
    assert service["waitForSteadyState"] is False
    assert "desiredCount" in (fleet.options["vllm-service"].ignore_changes or [])
    assert fleet.inputs(ASG)["maxSize"] == 8


def test_without_surge_the_fleet_never_adds_an_instance_for_a_deployment() -> None:
    tight = build(fleet_args(surge_on_deploy=False, target_group_arn=None, task_security_group_id=None))
    service = tight.inputs(SERVICE)
    assert (service["deploymentMinimumHealthyPercent"], service["deploymentMaximumPercent"]) == (50, 100)
    assert tight.inputs(ASG)["maxSize"] == 4
    assert not service.get("loadBalancers")
    # No load balancer, no task group given: the tasks get one that admits nothing.
    groups = tight.mocks.of_type("aws:ec2/securityGroup:SecurityGroup")
    assert len(groups) == 2 and not tight.mocks.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")


def test_the_capacity_provider_scales_protects_and_drains(fleet: Fleet) -> None:
    provider = fleet.inputs(CAPACITY)["autoScalingGroupProvider"]
    assert provider["managedScaling"]["status"] == "ENABLED"
    assert provider["managedScaling"]["targetCapacity"] == 100
    assert (provider["managedTerminationProtection"], provider["managedDraining"]) == ("ENABLED", "ENABLED")
    group = fleet.inputs(ASG)
    assert group["protectFromScaleIn"] is True and group["capacityRebalance"] is True
    assert {"key": ECS_MANAGED_TAG, "value": "true", "propagateAtLaunch": True} in group["tags"]
    strategies = fleet.inputs(SERVICE)["capacityProviderStrategies"]
    assert [s["capacityProvider"] for s in strategies] == [fleet.inputs("aws:ecs/clusterCapacityProviders:"
                                                                        "ClusterCapacityProviders")["capacityProviders"][0]]


def test_the_spot_split_and_the_same_gpu_types(fleet: Fleet) -> None:
    policy = fleet.inputs(ASG)["mixedInstancesPolicy"]
    distribution = policy["instancesDistribution"]
    assert distribution["onDemandBaseCapacity"] == 1
    assert distribution["onDemandPercentageAboveBaseCapacity"] == 25  # on demand 1 : spot 3
    assert distribution["spotAllocationStrategy"] == "price-capacity-optimized"
    assert [o["instanceType"] for o in policy["launchTemplate"]["overrides"]] == ["g5.xlarge", "g5.2xlarge"]


def test_scaling_tracks_waiting_requests_per_replica(fleet: Fleet) -> None:
    target = fleet.inputs(TARGET)
    assert (target["minCapacity"], target["maxCapacity"]) == (2, 4)
    assert target["scalableDimension"] == "ecs:service:DesiredCount"
    config = fleet.inputs(POLICY)["targetTrackingScalingPolicyConfiguration"]
    metric = config["customizedMetricSpecification"]
    assert (metric["metricName"], metric["namespace"], metric["statistic"]) == (
        "vllm:num_requests_waiting", METRICS_NAMESPACE, "Average")
    assert metric["dimensions"] == [{"name": STACK_DIMENSION, "value": "stack"}]
    assert (config["scaleOutCooldown"], config["scaleInCooldown"]) == (SCALE_OUT_COOLDOWN_S, SCALE_IN_COOLDOWN_S)
    assert config.get("disableScaleIn", False) is False
    assert fleet.inputs(POLICY)["policyType"] == "TargetTrackingScaling"


def test_the_instance_role_has_the_ecs_and_ssm_policies_and_the_task_role_the_agents(fleet: Fleet) -> None:
    attachments = fleet.mocks.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
    by_role: dict[str, set[str]] = {}
    for r in attachments:
        by_role.setdefault(r.inputs["role"], set()).add(r.inputs["policyArn"])
    instance_role, task_role = fleet.fleet.instance_role, fleet.fleet.task_role
    assert task_role is not None
    assert by_role == {
        f"{instance_role._name}-{digest(instance_role._name)}": {
            "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role",
            "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"},
        f"{task_role._name}-{digest(task_role._name)}": {CLOUDWATCH_AGENT_POLICY_ARN}}
    assert fleet.inputs(TASK)["taskRoleArn"].endswith(f"role/{task_role._name}-{digest(task_role._name)}")


def test_each_task_publishes_vllms_metrics_from_an_agent_sidecar(fleet: Fleet) -> None:
    agent = json.loads(fleet.inputs(TASK)["containerDefinitions"])[2]
    assert (agent["name"], agent["image"], agent["essential"]) == (METRICS_SIDECAR, CLOUDWATCH_AGENT_IMAGE, False)
    env = {e["name"]: e["value"] for e in agent["environment"]}
    scrape = yaml.safe_load(env["PROMETHEUS_CONFIG_CONTENT"])["scrape_configs"][0]
    assert scrape["static_configs"][0]["targets"] == [f"127.0.0.1:{VLLM_CONTAINER_PORT}"]
    assert scrape["static_configs"][0]["labels"] == {STACK_DIMENSION: "stack"}  # what the scaling policy reads
    assert re.search(re.escape("vllm:num_requests_waiting"), scrape["metric_relabel_configs"][0]["regex"])
    config = json.loads(env["CW_CONFIG_CONTENT"])
    prometheus = config["logs"]["metrics_collected"]["prometheus"]
    assert prometheus["prometheus_config_path"] == "env:PROMETHEUS_CONFIG_CONTENT"
    assert prometheus["emf_processor"]["metric_namespace"] == METRICS_NAMESPACE
    assert "metrics" not in config  # no GPU in the sidecar
    groups = {g.inputs["name"]: g.inputs["retentionInDays"]
              for g in fleet.mocks.of_type("aws:cloudwatch/logGroup:LogGroup")}
    assert groups[prometheus["log_group_name"]] == 30


def test_without_metrics_there_is_no_sidecar_and_no_task_role() -> None:
    built = build(fleet_args(metrics=False))
    assert [d["name"] for d in json.loads(built.inputs(TASK)["containerDefinitions"])] == ["vllm", "vllm-proxy"]
    assert built.fleet.task_role is None and "taskRoleArn" not in built.inputs(TASK)


def test_every_child_is_parented_to_the_fleet(fleet: Fleet) -> None:
    for name, opts in fleet.options.items():
        if name != "vllm":
            assert opts.parent is fleet.fleet, name


def test_a_missing_secret_arn_is_refused_by_name() -> None:
    for env in ARNS:
        with pytest.raises(ValueError, match=env):
            build(fleet_args(secret_parameter_arns={e: a for e, a in ARNS.items() if e != env}))


def test_the_policy_pack_passes_the_fleet(fleet: Fleet) -> None:
    deployed = Deployed(fleet.mocks, cast(Any, None), options=fleet.options)
    assert violations(deployed) == []


def test_the_policy_pack_sees_the_launch_template(fleet: Fleet) -> None:
    # The pass above is not vacuous: the same template with a hop limit of 2 and a public address is caught.
    bad = copy.deepcopy(fleet.mocks)
    template = next(r for r in bad.resources if r.typ == LAUNCH_TEMPLATE)
    template.raw_inputs["metadataOptions"]["httpPutResponseHopLimit"] = 2
    template.raw_inputs["networkInterfaces"][0]["associatePublicIpAddress"] = "true"
    found = violations(Deployed(bad, cast(Any, None), options=fleet.options))
    assert any(v.startswith("imdsv2-required on vllm-launch-template") for v in found), found
    assert any(v.startswith("no-ephemeral-public-ip on vllm-launch-template") for v in found), found


def test_a_warm_pool_keeps_stopped_on_demand_instances_that_join_the_cluster_only_in_service() -> None:
    warm = build(fleet_args(spot_weight=0, extra_instance_types=(), warm_pool_size=2))
    group = warm.inputs(ASG)
    assert "mixedInstancesPolicy" not in group  # EC2 Auto Scaling keeps no warm pool for one
    assert group["launchTemplate"]["version"] == "$Latest" and group["capacityRebalance"] is False
    assert group["warmPool"] == {"poolState": "Stopped", "minSize": 2, "maxGroupPreparedCapacity": 2,
                                 "instanceReusePolicy": {"reuseOnScaleIn": False}}
    template = warm.inputs(LAUNCH_TEMPLATE)
    assert template["instanceType"] == "g5.xlarge"
    user_data = base64.b64decode(template["userData"]).decode()
    assert "cloud_final_modules:\n- [scripts-user, always]" in user_data  # the script at every boot
    assert "\nreadonly WARM_POOL=true\n" in user_data and "echo ECS_WARM_POOLS_CHECK=true" in user_data
    # Without a pool: the mixed instances policy, no instance type in the template, the script alone.
    group = build(fleet_args()).inputs(ASG)
    assert "warmPool" not in group and "mixedInstancesPolicy" in group


def test_cache_images_moves_dockers_image_store_onto_the_cache_volume() -> None:
    template = build(fleet_args(cache_images=True)).inputs(LAUNCH_TEMPLATE)
    script = base64.b64decode(template["userData"]).decode()
    assert f"\nreadonly DOCKER_DATA_ROOT={HOST_CACHE_MOUNT}/docker\n" in script
    assert "readonly -a CACHE_SUBDIRS=(root-cache)" in script  # no task mounts Docker's folder


def test_a_warm_pool_with_spot_or_several_types_is_refused() -> None:
    for changes in ({"spot_weight": 3}, {"spot_weight": 0}):
        with pytest.raises(ValueError, match="warm_pool_size: EC2 Auto Scaling keeps no warm pool"):
            build(fleet_args(warm_pool_size=1, **changes))
