"""VllmService under mocks, from stack settings as __main__.py builds it: the whole graph of a fleet stack (the
secrets as SecureString parameters referenced by the task, the load balancer in front of the fleet, the wait on
the load balancer), its outputs, and the policy pack over it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pulumi
import pytest

from tests.unit.components.test_components import Deployed
from tests.unit.components.test_service_lb import ALB as ALB_TYPE
from tests.unit.components.test_service_lb import ALB_DNS, LbMocks, arn_suffix
from tests.unit.components.test_service_lb import TARGET_GROUP as TARGET_GROUP_TYPE
from tests.unit.model_folders import write_model_folder
from tests.unit.policy.test_policy_on_program import violations
from tests.unit.pulumi_mocks import (
    MOCK_ECR_PASSWORD,
    MOCK_ECR_REGISTRY,
    MOCK_SERVICE_READY_STDOUT,
    MOCK_VPC_CIDRS,
    Mocks,
    is_secret_value,
    plaintext_occurrences,
)
from vllm_endpoint import VllmEndpoint, VllmEndpointArgs, VllmService, VllmServiceArgs
from vllm_endpoint.infra.catalog.names import (
    DEFAULT_ENDPOINT_NAME,
    METRICS_NAMESPACE,
    PROXY_CONFIG_ENV,
    PROXY_KEY_CHECK_ENV,
    SECRET_API_KEY_ENV,
    SECRET_HF_TOKEN_ENV,
)
from vllm_endpoint.infra.plan.costs import MONITORING
from vllm_endpoint.infra.plan.deployment import build_plan
from vllm_endpoint.infra.plan.model_files import folder_contents
from vllm_endpoint.infra.render.cloudwatch_agent import metrics_scope
from vllm_endpoint.infra.render.fleet_monitoring import LOAD_BALANCER_DIMENSION, TARGET_GROUP_DIMENSION, fleet_alarms
from vllm_endpoint.infra.render.proxy import render_key_check
from vllm_endpoint.infra.settings.endpoint_args import settings_kwargs
from vllm_endpoint.infra.settings.models import ConfigError
from vllm_endpoint.infra.settings.pulumi_config import load_stack_config

API_KEY = "s" * 40
HF_TOKEN = "hf_" + "FleetToken" * 4
FLEET = {"replicas": "2", "maxReplicas": "4", "spotWeight": "1", "apiAllowedCidrs": "93.184.216.0/24"}
PARAMETER = "aws:ssm/parameter:Parameter"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
SERVICE = "aws:ecs/service:Service"
OUTPUTS = ("endpoint_url", "api_key", "model", "load_balancer_dns_name", "cluster_name", "service_name",
           "log_group_name", "replicas", "plan_summary", "ready", "dashboard_url")
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
DASHBOARD = "aws:cloudwatch/dashboard:Dashboard"
TOPIC = "aws:sns/topic:Topic"


@dataclass
class Service:
    mocks: Mocks
    service: VllmService
    values: dict[str, Any] = field(default_factory=dict)
    secret: dict[str, bool] = field(default_factory=dict)
    options: dict[str, pulumi.ResourceOptions] = field(default_factory=dict)

    def inputs(self, typ: str) -> dict[str, Any]:
        return self.mocks.one(typ).inputs


def deploy_service(raw: dict[str, str]) -> Service:
    """The stack config `raw` deployed as __main__.py does when it sets replicas."""
    mocks = LbMocks()  # the project's mocks with what AWS reports for the load balancer
    pulumi.runtime.set_mocks(mocks, preview=False)
    config = load_stack_config(raw)
    settings: Any = settings_kwargs(config)
    holder: dict[str, Service] = {}
    options: dict[str, pulumi.ResourceOptions] = {}

    def capture(args: pulumi.ResourceTransformationArgs) -> None:
        options[args.name] = args.opts

    @pulumi.runtime.test
    def run() -> Any:
        service = VllmService(config.stack.endpoint_name, VllmServiceArgs(**settings),
                              opts=pulumi.ResourceOptions(transformations=[capture]))
        deployed = holder.setdefault("s", Service(mocks, service, options=options))

        async def collect() -> None:
            for name in OUTPUTS:
                output = getattr(service, name)
                deployed.values[name] = await output.future()
                deployed.secret[name] = await output.is_secret()
            for env, parameter in service.parameters.items():
                deployed.secret[f"parameter:{env}"] = await parameter.value.is_secret()
            deployed.secret["ready.stdin"] = await service.readiness.stdin.is_secret()

        return collect()

    run()
    return holder["s"]


@pytest.fixture(scope="module")
def fleet() -> Service:
    return deploy_service({**FLEET, "apiKey": API_KEY, "hfToken": HF_TOKEN})


def test_every_secret_of_the_task_is_a_secure_string_it_references_by_arn(fleet: Service) -> None:
    parameters = {p.inputs["name"]: p.inputs for p in fleet.mocks.of_type(PARAMETER)}
    assert sorted(parameters) == sorted(f"/vllm-endpoint/project/stack/vllm/{s}"
                                        for s in ("vllm-api-key", "hf-token", "proxy-key-check"))
    assert {p["type"] for p in parameters.values()} == {"SecureString"}
    by_env = {"vllm-api-key": API_KEY, "hf-token": HF_TOKEN, "proxy-key-check": render_key_check(API_KEY)}
    for name, value in by_env.items():
        assert parameters[f"/vllm-endpoint/project/stack/vllm/{name}"]["value"] == value
    containers = json.loads(fleet.inputs(TASK)["containerDefinitions"])
    referenced = {s["name"]: s["valueFrom"] for c in containers for s in c.get("secrets", ())}
    assert set(referenced) == {SECRET_API_KEY_ENV, SECRET_HF_TOKEN_ENV, PROXY_KEY_CHECK_ENV}
    assert all(arn.startswith("arn:aws:ssm:us-east-1:123456789012:parameter/vllm-endpoint/") for arn in
               referenced.values())


def test_no_secret_value_is_in_any_resource_but_its_parameter_and_all_are_secret(fleet: Service) -> None:
    for resource in fleet.mocks.resources:
        if resource.typ == PARAMETER:
            continue
        for needle in (API_KEY, HF_TOKEN):
            assert plaintext_occurrences(resource.raw_inputs, needle) == [], resource.name
    assert all(fleet.secret[f"parameter:{env}"] for env in fleet.service.parameters)
    assert fleet.secret["api_key"] and fleet.secret["ready.stdin"]


def test_the_service_sits_behind_the_load_balancer_and_waits_for_its_listener(fleet: Service) -> None:
    service = fleet.inputs(SERVICE)
    target_group = fleet.mocks.one("aws:lb/targetGroup:TargetGroup")
    assert service["loadBalancers"][0]["containerPort"] == target_group.inputs["port"]
    depends = fleet.options["vllm-fleet-service"].depends_on
    assert fleet.service.load_balancer.listener in cast(list[Any], depends)
    # Only the load balancer's security group reaches the tasks.
    assert service["networkConfiguration"]["securityGroups"] == ["vllm-task-sg-id"]


def test_default_vpc_subnets_are_used_when_none_are_given(fleet: Service) -> None:
    service = fleet.inputs(SERVICE)
    assert service["networkConfiguration"]["subnets"] == [f"subnet-0{z * 16}" for z in "abc"]
    assert fleet.inputs("aws:lb/loadBalancer:LoadBalancer")["subnets"] == [f"subnet-0{z * 16}" for z in "abc"]


def test_given_subnets_place_replicas_and_load_balancer_apart() -> None:
    private = ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"]
    public = ["subnet-0cccccccccccccccc", "subnet-0dddddddddddddddd"]
    fleet = deploy_service({**FLEET, "subnetIds": ",".join(private), "loadBalancerSubnetIds": ",".join(public)})
    assert fleet.inputs(SERVICE)["networkConfiguration"]["subnets"] == private
    assert fleet.inputs("aws:lb/loadBalancer:LoadBalancer")["subnets"] == public
    assert fleet.inputs("aws:lb/targetGroup:TargetGroup")["vpcId"] == "vpc-0fedcba9876543210"  # the subnets' VPC


def test_outputs_are_what_apps_and_operators_read(fleet: Service) -> None:
    values = fleet.values
    assert values["endpoint_url"] == f"http://{ALB_DNS}/v1"
    assert values["load_balancer_dns_name"] == ALB_DNS
    assert values["api_key"] == API_KEY
    assert values["model"] == "Qwen/Qwen2.5-1.5B-Instruct"
    assert values["replicas"] == {"desired": 2, "min": 2, "max": 4}
    assert values["ready"] == MOCK_SERVICE_READY_STDOUT
    assert "at the minimum of 2 replicas" in values["plan_summary"]
    assert "at the maximum of 4 replicas" in values["plan_summary"]
    assert values["cluster_name"] and values["service_name"] and values["log_group_name"]


def test_the_wait_probes_the_load_balancer_with_the_key_on_stdin_only(fleet: Service) -> None:
    ready = fleet.mocks.one("command:local:Command").inputs
    assert ready["stdin"] == API_KEY + "\n"
    assert ready["environment"]["PROBE_URL"] == fleet.values["endpoint_url"] + "/models"
    assert API_KEY not in json.dumps({k: v for k, v in ready.items() if k != "stdin"})
    assert int(ready["environment"]["TIMEOUT_S"]) > 900


def test_a_generated_key_is_kept_secret_and_reaches_the_parameters() -> None:
    fleet = deploy_service(FLEET)
    assert fleet.secret["api_key"]
    key = fleet.values["api_key"]
    values = {p.inputs["name"].rsplit("/", 1)[1]: p.inputs["value"] for p in fleet.mocks.of_type(PARAMETER)}
    assert values["vllm-api-key"] == key and values["proxy-key-check"] == render_key_check(key)
    assert "hf-token" not in values


def test_https_with_a_domain() -> None:
    fleet = deploy_service({**FLEET, "domain": "llm.example.com", "hostedZoneId": "Z0123456789ABCDEFGHIJ"})
    assert fleet.values["endpoint_url"] == "https://llm.example.com/v1"
    assert fleet.mocks.of_type("aws:acm/certificate:Certificate")


def test_every_child_is_parented_and_the_policy_pack_passes(fleet: Service) -> None:
    for name, opts in fleet.options.items():
        if name != "vllm":
            assert opts.parent is not None, name
    assert violations(Deployed(fleet.mocks, cast(Any, None), options=fleet.options)) == []


def test_a_fleet_is_not_an_endpoint_and_an_endpoint_is_not_a_fleet(tmp_path: Path) -> None:
    pulumi.runtime.set_mocks(Mocks(), preview=False)
    with pytest.raises(ConfigError, match="VllmService"):
        VllmEndpoint("vllm", VllmEndpointArgs(replicas=2, api_allowed_cidrs=["93.184.216.0/24"]))
    with pytest.raises(ConfigError, match="replicas"):
        VllmService("single", VllmServiceArgs(api_allowed_cidrs=["93.184.216.0/24"],
                                            ssh_allowed_cidrs=["93.184.216.0/24"]))


def test_a_warm_cache_snapshot_seeds_new_instances_cache_volumes() -> None:
    fleet = deploy_service({**FLEET, "cacheSnapshotId": "snap-0123456789abcdef0"})
    mappings = fleet.inputs("aws:ec2/launchTemplate:LaunchTemplate")["blockDeviceMappings"]
    cache = next(m["ebs"] for m in mappings if m["deviceName"] == "/dev/xvdf")
    assert (cache["snapshotId"], cache["volumeInitializationRate"]) == ("snap-0123456789abcdef0", 300)
    assert "encrypted" not in cache  # EC2 refuses it with a snapshot: the volume takes the snapshot's
    root = next(m["ebs"] for m in mappings if m["deviceName"] == "/dev/xvda")
    assert root["encrypted"] == "true"
    assert violations(Deployed(fleet.mocks, cast(Any, None), options=fleet.options)) == []


def test_an_initialization_rate_without_a_snapshot_is_refused() -> None:
    with pytest.raises(ConfigError, match="cacheInitializationRate: applies to volumes made from cacheSnapshotId"):
        deploy_service({**FLEET, "cacheInitializationRate": "200"})


def test_settings_of_one_vm_are_refused_on_a_fleet_each_with_its_reason() -> None:
    with pytest.raises(ConfigError) as info:
        load_stack_config({**FLEET, "sshAllowedCidrs": "93.184.215.14/32", "capacity": "spot",
                           "metricsAllowedCidrs": "10.1.0.0/16", "tls": "self-signed", "gpus": "0"})
    problems = info.value.problems
    assert any(p.startswith("sshAllowedCidrs: has no effect on a fleet: a fleet has no SSH") for p in problems)
    assert any(p.startswith("capacity: has no effect on a fleet: a fleet mixes spot") for p in problems)
    assert any(p.startswith("metricsAllowedCidrs: has no effect on a fleet") for p in problems)
    assert any(p.startswith("tls: has no effect on a fleet") and "domain and hostedZoneId" in p for p in problems)
    assert any(p.startswith("gpus: a fleet replica takes all the GPUs") for p in problems)


def test_fleet_settings_without_replicas_are_refused_before_anything() -> None:
    with pytest.raises(ConfigError, match=r"maxReplicas: sets up a fleet .* set replicas"):
        load_stack_config({"sshAllowedCidrs": "93.184.215.14/32", "apiAllowedCidrs": "93.184.216.0/24",
                           "maxReplicas": "4"})
    with pytest.raises(ConfigError, match=r"replicas: need minReplicas \(3\) <= replicas \(2\)"):
        load_stack_config({**FLEET, "minReplicas": "3"})
    with pytest.raises(ConfigError, match="domain and hostedZoneId: give both"):
        load_stack_config({**FLEET, "domain": "llm.example.com"})


def test_the_fleet_alarms_read_its_own_load_balancer_and_replicas_and_the_dashboard_links_them(fleet: Service) -> None:
    suffixes = {TARGET_GROUP_DIMENSION: arn_suffix(TARGET_GROUP_TYPE, fleet.mocks.one(TARGET_GROUP_TYPE).name),
                LOAD_BALANCER_DIMENSION: arn_suffix(ALB_TYPE, fleet.mocks.one(ALB_TYPE).name)}
    alarms = [a.inputs for a in fleet.mocks.of_type(ALARM)]
    # The scope the task's sidecar publishes with (the stack's name for its default endpoint).
    specs = fleet_alarms(METRICS_NAMESPACE, metrics_scope(pulumi.get_stack(), DEFAULT_ENDPOINT_NAME))
    assert len(alarms) == len(specs) == MONITORING.fleet_alarms
    for spec in specs:
        (alarm,) = [a for a in alarms if a["name"].endswith(f"-{spec.key}")]
        assert (alarm["namespace"], alarm["metricName"]) == (spec.metric.namespace, spec.metric.metric_name)
        assert alarm["dimensions"] == {k: suffixes.get(k, v) for k, v in spec.metric.dimensions}, spec.key
        assert all(alarm["dimensions"].values())
        assert alarm["alarmActions"] == []  # no alarmEmail
    text = fleet.mocks.one(DASHBOARD).inputs["dashboardBody"]
    assert all(suffix in text for suffix in suffixes.values()) and fleet.values["cluster_name"] in text
    assert fleet.values["dashboard_url"].startswith("https://us-east-1.console.aws.amazon.com/cloudwatch/")


def test_an_alarm_email_gets_the_fleet_alarms_through_an_encrypted_topic() -> None:
    deployed = deploy_service({**FLEET, "apiKey": API_KEY, "alarmEmail": "oncall@example.com"})
    topic = deployed.mocks.one(TOPIC)
    assert topic.inputs["kmsMasterKeyId"]
    assert all(a.inputs["alarmActions"] and a.inputs["okActions"] for a in deployed.mocks.of_type(ALARM))
    assert "5 alarms, 1 KMS key" in deployed.values["plan_summary"]


def test_without_metrics_there_is_no_sidecar_dashboard_or_alarm() -> None:
    deployed = deploy_service({**FLEET, "apiKey": API_KEY, "metrics": "false"})
    assert deployed.mocks.of_type(ALARM) == [] and deployed.mocks.of_type(DASHBOARD) == []
    assert deployed.values["dashboard_url"] is None
    assert "CloudWatch" not in deployed.values["plan_summary"]


def test_the_task_proxy_trusts_the_load_balancers_x_forwarded_for_from_the_vpc_only(fleet: Service) -> None:
    definitions = json.loads(fleet.inputs(TASK)["containerDefinitions"])
    (conf,) = [e["value"] for d in definitions for e in d.get("environment", []) if e["name"] == PROXY_CONFIG_ENV]
    trusted = [line.split()[1].rstrip(";") for line in conf.splitlines() if line.strip().startswith("set_real_ip_from")]
    assert sorted(trusted) == sorted(MOCK_VPC_CIDRS)  # the VPC's primary and secondary CIDRs
    assert "real_ip_header X-Forwarded-For;" in conf


def test_a_custom_image_is_built_here_pushed_to_the_stacks_ecr_repository_and_run_by_digest(tmp_path: Path) -> None:
    context = tmp_path / "finetune"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM vllm/vllm-openai:v0.32.0\nCOPY model /app/model\n")
    key = "arn:aws:kms:us-east-1:123456789012:key/0a1b2c3d-0000-4000-8000-0a1b2c3d4e5f"
    deployed = deploy_service({**FLEET, "apiKey": API_KEY, "imageBuildContext": str(context), "model": "/app/model",
                               "kmsKeyId": key})
    repository = deployed.inputs("aws:ecr/repository:Repository")
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repository["encryptionConfigurations"] == [{"encryptionType": "KMS", "kmsKey": key}]
    assert json.loads(deployed.inputs("aws:ecr/lifecyclePolicy:LifecyclePolicy")["policy"])["rules"][0]["action"] == {
        "type": "expire"}
    image = deployed.mocks.one("docker:index/image:Image")
    assert image.inputs["build"]["context"] == str(context) and image.inputs["build"]["platform"] == "linux/amd64"
    assert image.inputs["imageName"].startswith(f"{MOCK_ECR_REGISTRY}/{repository['name']}:")
    registry = image.raw_inputs["registry"]
    assert is_secret_value(registry) or is_secret_value(registry["password"])
    definitions = json.loads(deployed.inputs(TASK)["containerDefinitions"])
    (vllm,) = [d for d in definitions if d["name"] == "vllm"]
    assert vllm["image"].startswith(f"{MOCK_ECR_REGISTRY}/{repository['name']}@sha256:")
    assert [p for r in deployed.mocks.resources for p in plaintext_occurrences(r.raw_inputs, MOCK_ECR_PASSWORD)] == []
    assert all(opts.parent is not None for name, opts in deployed.options.items() if name != "vllm")
    assert violations(Deployed(deployed.mocks, cast(Any, None), options=deployed.options)) == []


def test_a_fine_tune_folder_goes_to_a_private_bucket_and_each_task_copies_exactly_it(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path, "my-finetune")
    key = "arn:aws:kms:us-east-1:123456789012:key/0a1b2c3d-0000-4000-8000-0a1b2c3d4e5f"
    deployed = deploy_service({**FLEET, "apiKey": API_KEY, "modelPath": str(folder), "kmsKeyId": key})
    contents = folder_contents(folder)
    bucket = deployed.mocks.one("aws:s3/bucket:Bucket")
    name = bucket.inputs["bucketPrefix"]
    assert bucket.inputs["forceDestroy"] is True and name.startswith("vllm-endpoint-stack-models-")
    assert deployed.inputs("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock") | {"bucket": None} == {
        "bucket": None, "blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True,
        "restrictPublicBuckets": True}
    (rule,) = deployed.inputs("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
                              )["rules"]
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": key}
    (deny,) = json.loads(deployed.inputs("aws:s3/bucketPolicy:BucketPolicy")["policy"])["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    prefix = f"models/{contents.digest}"
    objects = {o.inputs["key"]: o.raw_inputs["source"]
               for o in deployed.mocks.of_type("aws:s3/bucketObjectv2:BucketObjectv2")}
    assert sorted(objects) == sorted(f"{prefix}/{e.path}" for e in contents.files)
    assert all(Path(asset.path) == folder / k.removeprefix(f"{prefix}/") for k, asset in objects.items())
    # A changed folder takes these out of the stack but not out of the bucket: a rollback to the task definition
    # that names them still finds its files. Nothing else is retained; `destroy` deletes the bucket with them.
    retained = sorted(n for n, opts in deployed.options.items() if opts.retain_on_delete)
    assert retained == sorted(f"vllm-model-{contents.digest[:16]}-{e.path}" for e in contents.files)
    # The task: the sync container first, vLLM after its SUCCESS, reading this version's objects only.
    definitions = json.loads(deployed.inputs(TASK)["containerDefinitions"])
    sync, vllm = definitions[0], definitions[1]
    assert (sync["name"], sync["essential"], vllm["name"]) == ("model-sync", False, "vllm")
    assert vllm["dependsOn"] == [{"containerName": "model-sync", "condition": "SUCCESS"}]
    env = {e["name"]: e["value"] for e in sync["environment"]}
    assert env["MODEL_BUCKET"].startswith(name) and env["MODEL_PREFIX"] == prefix
    assert env["MANIFEST"] == contents.manifest() and env["DIGEST"] == contents.digest
    policies = {p.name: json.loads(p.inputs["policy"]) for p in deployed.mocks.of_type("aws:iam/rolePolicy:RolePolicy")}
    (read,) = [p for n, p in policies.items() if n.endswith("-task-model-read")]
    assert read["Statement"] == [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{env['MODEL_BUCKET']}/{prefix}/*"},
        {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": key}]
    service = deployed.options[next(n for n in deployed.options if n.endswith("-service"))]
    assert {r._name for r in service.depends_on if hasattr(r, "_name")} >= {  # type: ignore[union-attr]
        f"vllm-model-{contents.digest[:16]}-{e.path}" for e in contents.files}
    assert all(opts.parent is not None for n, opts in deployed.options.items() if n != "vllm")
    assert violations(Deployed(deployed.mocks, cast(Any, None), options=deployed.options)) == []


def test_cache_images_needs_room_for_the_image_on_the_cache_volume() -> None:
    # The default model (about 2.9 GiB) and the image (VLLM_IMAGE_DISK_GIB) in 20 GiB: refused before any resource.
    with pytest.raises(ConfigError, match=r"cacheVolumeSizeGb: the model's weights need .* GiB and the vLLM image "
                       r"\(cacheImages\) about 25 GiB; the cache volume is 20 GiB: raise cacheVolumeSizeGb "
                       r"\(e\.g\. to 50\)"):
        build_plan(load_stack_config({**FLEET, "apiKey": API_KEY, "cacheImages": "true", "cacheVolumeSizeGb": "20"}),
                   hub_fetcher=None)
    # Without cacheImages the model alone fits; with the default 100 GiB both do.
    build_plan(load_stack_config({**FLEET, "apiKey": API_KEY, "cacheVolumeSizeGb": "20"}), hub_fetcher=None)
    build_plan(load_stack_config({**FLEET, "apiKey": API_KEY, "cacheImages": "true"}), hub_fetcher=None)


def test_a_warm_pool_is_on_demand_only_priced_by_its_volumes_and_reaches_the_group() -> None:
    with pytest.raises(ConfigError, match=r"warmPoolSize: EC2 Auto Scaling keeps no warm pool .* spotWeight to 0"):
        load_stack_config({**FLEET, "warmPoolSize": "1"})  # FLEET buys spot
    with pytest.raises(ConfigError, match="warmPoolSize"):
        load_stack_config({**FLEET, "spotWeight": "0", "extraInstanceTypes": '["g5.2xlarge"]', "warmPoolSize": "1"})
    deployed = deploy_service({**FLEET, "apiKey": API_KEY, "spotWeight": "0", "warmPoolSize": "2"})
    group = deployed.inputs("aws:autoscaling/group:Group")
    assert group["warmPool"]["minSize"] == group["warmPool"]["maxGroupPreparedCapacity"] == 2
    summary = deployed.values["plan_summary"]
    assert "a warm pool of 2 stopped instances (their volumes only: $" in summary
    on_demand = {**FLEET, "apiKey": API_KEY, "spotWeight": "0"}
    without, warm = (build_plan(load_stack_config(raw), hub_fetcher=None).fleet
                     for raw in (on_demand, {**on_demand, "warmPoolSize": "2"}))
    assert without is not None and warm is not None
    assert warm.costs.usd_per_month(2) - without.costs.usd_per_month(2) == pytest.approx(
        2 * warm.costs.volumes_usd_per_month)
