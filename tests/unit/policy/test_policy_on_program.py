"""The policy pack passes the program's own stacks, and catches the program's unsafe variants.

Every resource the program declares under mocks is handed to every policy the way the engine would
(props over the wire, resource options, the shipped policy config), so a change to the program that
breaks a security property fails here, not at a user's `pulumi up --policy-pack`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pulumi
import pytest
from pulumi_policy import (
    PolicyResource,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

import vllm_endpoint.infra.catalog.names as names
import vllm_endpoint.infra.catalog.security as security_module
from tests.unit.components.test_components import AWS, EXISTING, LOCAL, Deployed, deploy
from tests.unit.policy import test_policy_pack as pack
from tests.unit.pulumi_mocks import Recorded, mock_image_id

rules = pack.rules
CONFIG_FILE = Path(__file__).resolve().parents[3] / "policy" / "vllm-endpoint.policy-config.json"
SHIPPED_CONFIG: dict[str, dict[str, Any]] = json.loads(CONFIG_FILE.read_text())


def violations(deployed: Deployed, config: dict[str, dict[str, Any]] | None = None) -> list[str]:
    config = SHIPPED_CONFIG if config is None else config
    found: list[str] = []
    stack: list[PolicyResource] = []
    # Containers reference their image by the RemoteImage's id: rebuild that dependency for the stack (by
    # provider too: two endpoints of a program may pull the same image, each through its own provider).
    remote_images = deployed.mocks.of_type("docker:index/remoteImage:RemoteImage")
    by_name = {r.name: pack.stack_resource(r.typ, r.name, r.inputs) for r in remote_images}
    images = {(r.provider, mock_image_id(r.inputs["name"])): by_name[r.name] for r in remote_images}
    for resource in deployed.mocks.resources:
        props = json.loads(json.dumps(resource.raw_inputs, default=str))
        options = deployed.options.get(resource.name)
        # What each provider SDK declares secret (pulumi-command's `connection`, SSM's `value`, ...).
        secret_outputs = tuple(options.additional_secret_outputs or ()) if options else ()
        if resource.typ == "docker:index/remoteImage:RemoteImage":
            stack.append(by_name[resource.name])
        else:
            image = images.get((resource.provider, str(resource.inputs.get("image"))))
            stack.append(pack.stack_resource(resource.typ, resource.name, props, [image] if image else None))
        for name, policy in pack.POLICIES.items():
            if not isinstance(policy, ResourceValidationPolicy):
                continue
            args = pack.resource_args(resource.typ, props, name=resource.name,
                                      protect=bool(options and options.protect), config=config.get(name, {}),
                                      secret_outputs=secret_outputs)
            found += [f"{name} on {resource.name}: {m}" for m in pack.validate_resource(name, args)]
    _link_by_id(deployed.mocks.resources, stack)
    for name, policy in pack.POLICIES.items():
        if isinstance(policy, StackValidationPolicy):
            def report(message: str, urn: str | None = None, name: str = name) -> None:
                found.append(f"{name}: {message}")
            policy.validate(StackValidationArgs(stack, config.get(name, {}), {}), report)
    return found


def _link_by_id(recorded: list[Recorded], stack: list[PolicyResource]) -> None:
    """The engine's property dependencies (`securityGroupId` -> the group it names, ...): a property whose
    value is another resource's id (the mocks' `<name>-id`, a bucket's generated name) depends on that resource."""
    by_id = {r.id: resource for r, resource in zip(recorded, stack, strict=True) if r.id}
    for resource in stack:
        links: dict[str, list[PolicyResource]] = {}
        for key, value in rules.raw(resource.props).items():
            values = rules.raw(value) if isinstance(rules.raw(value), list) else [value]
            targets = [by_id[v] for v in values if isinstance(v, str) and v in by_id]
            if targets:
                links[key] = targets
        resource.property_dependencies = {**links, **resource.property_dependencies}


@pytest.mark.parametrize("raw", [
    {**AWS},
    {**AWS, "tls": "self-signed", "metricsAllowedCidrs": "10.0.0.0/8", "hfToken": "hf_" + "x" * 34},
    {**AWS, "alarmEmail": "oncall@example.com", "idleStopMinutes": "60", "capacity": "spot"},
    {**EXISTING},
    {**LOCAL},
], ids=["aws", "aws-tls", "aws-alarms-idle-spot", "existing-host", "local"])
def test_the_programs_own_stacks_pass_every_policy(raw: dict[str, str], tmp_path: Path) -> None:
    deployed = deploy(raw, tmp_path)
    assert violations(deployed) == []


def test_the_shipped_config_only_accepts_the_cloud_init_host_key(tmp_path: Path) -> None:
    deployed = deploy(AWS, tmp_path)
    strict = violations(deployed, config={})
    assert len(strict) == 1 and strict[0].startswith("no-plaintext-credentials on vllm-host-instance")
    assert SHIPPED_CONFIG == {"no-plaintext-credentials": {"allowSshHostKeyInUserData": True}}


def test_world_open_rules_pass_only_with_the_programs_opt_in_marker(tmp_path: Path) -> None:
    deployed = deploy({"sshAllowedCidrs": "0.0.0.0/0", "apiAllowedCidrs": "0.0.0.0/0",
                       "dangerouslyAllowSshFromInternet": "true", "dangerouslyAllowApiFromInternet": "true"},
                      tmp_path)
    assert violations(deployed) == []
    for rule in deployed.mocks.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        rule.raw_inputs["description"] = rule.raw_inputs["description"].split(" (opt-in")[0]
    found = violations(deployed)
    assert any(v.startswith("no-ssh-from-internet") for v in found)
    assert any(v.startswith("no-api-from-internet") for v in found)


def test_an_image_below_the_floor_passes_only_with_opt_in_and_proxy(tmp_path: Path) -> None:
    deployed = deploy({**AWS, "imageTag": "v0.21.0", "allowInsecureImage": "true"}, tmp_path)
    assert violations(deployed) == []
    for container in deployed.mocks.of_type("docker:index/container:Container"):
        container.raw_inputs["labels"] = [label for label in container.raw_inputs["labels"]
                                          if label["label"] != names.INSECURE_IMAGE_OPT_IN_LABEL]
    assert any(v.startswith("vllm-image-floor") for v in violations(deployed))


def test_the_pack_and_the_program_share_markers_and_the_floor() -> None:
    # The pack reads the program's own names file (it cannot import the package from its venv).
    assert f"{names.OPT_IN_MARKER_PREFIX}{names.SSH_WORLD_OPT_IN}" == rules.SSH_OPT_IN_MARKER
    assert f"{names.OPT_IN_MARKER_PREFIX}{names.API_WORLD_OPT_IN}" == rules.API_OPT_IN_MARKER
    assert (rules.ROLE_LABEL, rules.CACHE_ROLE_VALUE, rules.PROXY_ROLE_VALUE) == (
        names.ROLE_TAG, names.CACHE_ROLE, names.PROXY_ROLE)
    assert (rules.VLLM_VERSION_LABEL, rules.INSECURE_IMAGE_OPT_IN_LABEL) == (
        names.VLLM_VERSION_LABEL, names.INSECURE_IMAGE_OPT_IN_LABEL)
    assert rules.VLLM_SECURITY_FLOOR == security_module.SECURITY_FLOOR


# --------------------------------------------------------------------------------------------------
# The ECS fleet behind its load balancer (VllmFleet + ServiceLoadBalancer), with and without a domain.

LISTENER = "aws:lb/listener:Listener"
LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"


def deploy_fleet(domain: bool) -> Deployed:
    """The two components wired as a VllmService wires them: the fleet's tasks in the load balancer's task
    group and target group. Built with the components' own test arguments and mocks."""
    # Imported here: those modules import `violations` from this one. The components come through them, so
    # this follows wherever the components' own tests find them.
    from tests.unit.components import test_service_lb as lb_tests
    from tests.unit.components import test_vllm_fleet as fleet_tests

    lb_args = replace(lb_tests.ARGS, domain=lb_tests.DOMAIN, hosted_zone_id=lb_tests.ZONE_ID) if domain \
        else lb_tests.ARGS
    mocks = lb_tests.LbMocks()
    pulumi.runtime.set_mocks(mocks, preview=False)
    options: dict[str, pulumi.ResourceOptions] = {}

    def capture(a: pulumi.ResourceTransformationArgs) -> None:
        options[a.name] = a.opts

    @pulumi.runtime.test
    def run() -> Any:
        opts = pulumi.ResourceOptions(transformations=[capture])
        lb = lb_tests.ServiceLoadBalancer("svc", lb_args, opts=opts)
        fleet = fleet_tests.VllmFleet("vllm", fleet_tests.fleet_args(
            target_group_arn=lb.target_group_arn, task_security_group_id=lb.task_security_group_id,
            vpc_id=lb_args.vpc_id), opts=opts)
        return pulumi.Output.all(fleet.cluster_name, fleet.task_definition.container_definitions, lb.url)

    run()
    return Deployed(mocks, cast(Any, None), options=options)


@pytest.fixture(scope="module", params=[False, True], ids=["http", "https"])
def fleet_stack(request: pytest.FixtureRequest) -> Deployed:
    return deploy_fleet(request.param)


def _one(deployed: Deployed, name: str) -> Recorded:
    found = [r for r in deployed.mocks.resources if r.name == name]
    assert len(found) == 1, [r.name for r in deployed.mocks.resources]
    return found[0]


def _changed(deployed: Deployed, change: Callable[[Deployed], None]) -> list[str]:
    bad = Deployed(copy.deepcopy(deployed.mocks), cast(Any, None), options=deployed.options)
    change(bad)
    return violations(bad)


def test_the_fleet_behind_its_load_balancer_passes_every_policy(fleet_stack: Deployed) -> None:
    types = {r.typ for r in fleet_stack.mocks.resources}
    assert {LISTENER, LOAD_BALANCER, rules.ECS_TASK_DEFINITION, rules.LAUNCH_TEMPLATE, rules.LOG_GROUP} <= types
    assert violations(fleet_stack) == []


def test_the_pack_recognises_the_fleets_groups_and_catches_a_cidr_into_them(fleet_stack: Deployed) -> None:
    def open_tasks(d: Deployed) -> None:
        rule = _one(d, "svc-task-from-alb").raw_inputs
        rule.pop("referencedSecurityGroupId")
        rule["cidrIpv4"] = "10.0.0.0/8"

    def open_instances(d: Deployed) -> None:
        inputs = {"securityGroupId": "vllm-instances-sg-id", "ipProtocol": "tcp", "fromPort": 8080, "toPort": 8080,
                  "cidrIpv4": "10.0.0.0/16", "description": "debugging"}
        d.mocks.resources.append(Recorded(rules.VPC_INGRESS_RULE, "vllm-debug", inputs, dict(inputs), None))

    def from_another_group(d: Deployed) -> None:
        _one(d, "svc-task-from-alb").raw_inputs["referencedSecurityGroupId"] = "sg-0abcdef0123456789"

    for change, rule in ((open_tasks, "svc-task-from-alb"), (open_instances, "vllm-debug"),
                         (from_another_group, "svc-task-from-alb")):
        found = _changed(fleet_stack, change)
        assert [v for v in found if v.startswith("fleet-ingress-from-load-balancer-only")], found
        assert all(rule in v for v in found if v.startswith("fleet-ingress")), found


def test_the_pack_sees_the_task_definitions_secrets(fleet_stack: Deployed) -> None:
    def plain_token(d: Deployed) -> None:
        task = _one(d, "vllm-task").raw_inputs
        definitions = json.loads(task["containerDefinitions"])
        definitions[0]["environment"].append({"name": "HF_TOKEN", "value": "hf_" + "x" * 34})
        definitions[0]["secrets"][0]["valueFrom"] = "not-a-reference"
        task["containerDefinitions"] = json.dumps(definitions)

    found = [v for v in _changed(fleet_stack, plain_token) if v.startswith("ecs-secrets-by-reference on vllm-task")]
    assert len(found) == 2 and "x" * 34 not in "".join(found), found


def test_the_pack_sees_the_launch_template_and_the_log_group(fleet_stack: Deployed) -> None:
    def weaken(d: Deployed) -> None:
        template = _one(d, "vllm-launch-template").raw_inputs
        template["networkInterfaces"][0].pop("associatePublicIpAddress")
        template["metadataOptions"]["httpTokens"] = "optional"
        template["blockDeviceMappings"][1]["ebs"]["encrypted"] = "false"
        _one(d, "vllm-tasks-log").raw_inputs.pop("retentionInDays")

    found = _changed(fleet_stack, weaken)
    for policy in ("no-ephemeral-public-ip", "imdsv2-required", "ebs-encrypted"):
        assert any(v.startswith(f"{policy} on vllm-launch-template") for v in found), (policy, found)
    assert any(v.startswith("log-retention on vllm-tasks-log") for v in found), found


def test_the_pack_sees_the_load_balancer(fleet_stack: Deployed) -> None:
    def weaken(d: Deployed) -> None:
        balancer = _one(d, "svc-alb").raw_inputs
        balancer["dropInvalidHeaderFields"] = False
        balancer["desyncMitigationMode"] = "monitor"

    found = _changed(fleet_stack, weaken)
    assert len([v for v in found if v.startswith("alb-request-hygiene on svc-alb")]) == 2, found


def test_with_a_domain_the_pack_sees_the_tls_policy_and_the_redirect() -> None:
    deployed = deploy_fleet(domain=True)
    assert _one(deployed, "svc-https").inputs["sslPolicy"] in rules.DEFAULT_ALLOWED_SSL_POLICIES

    def weaken(d: Deployed) -> None:
        _one(d, "svc-https").raw_inputs["sslPolicy"] = "ELBSecurityPolicy-2016-08"
        redirect = _one(d, "svc-http-redirect").raw_inputs
        redirect["defaultActions"] = _one(d, "svc-https").raw_inputs["defaultActions"]

    found = _changed(deployed, weaken)
    assert any(v.startswith("alb-https-listener on svc-https") for v in found), found
    assert any(v.startswith("alb-http-redirects-to-https") and "svc-http-redirect" in v for v in found), found
