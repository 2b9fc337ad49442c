"""The service's load balancer under mocks: it forwards only `/v1/*` and `GET|HEAD /health` and answers
everything else with 404, nothing is open to the world without the opt-in, a domain brings HTTPS with a
validated certificate, a redirect and an alias record, the tasks admit only the load balancer, and the
policy pack passes what it declares."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, cast

import pulumi
import pytest

from tests.unit.components.test_components import Deployed
from tests.unit.policy.test_policy_on_program import violations
from tests.unit.pulumi_mocks import Mocks, Recorded
from vllm_endpoint.components.service_lb import ServiceLoadBalancer, ServiceLoadBalancerArgs
from vllm_endpoint.infra.catalog.names import API_WORLD_OPT_IN, HEALTH_PATH, PROXY_CONTAINER_PORT
from vllm_endpoint.infra.render.load_balancer import (
    DESYNC_MITIGATION_MODE,
    IDLE_TIMEOUT_S,
    SSL_POLICY,
    load_balancer_spec,
)
from vllm_endpoint.infra.settings.models import ConfigError

SG = "aws:ec2/securityGroup:SecurityGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
ALB = "aws:lb/loadBalancer:LoadBalancer"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"
LISTENER = "aws:lb/listener:Listener"
RULE = "aws:lb/listenerRule:ListenerRule"
CERTIFICATE = "aws:acm/certificate:Certificate"
VALIDATION = "aws:acm/certificateValidation:CertificateValidation"
RECORD = "aws:route53/record:Record"

ALB_DNS = "svc-alb-123456789.us-east-1.elb.amazonaws.com"
ALB_ZONE = "Z35SXDOTRQ7X7K"
DOMAIN = "llm.example.com"
ZONE_ID = "Z0123456789ABCDEFGHIJ"
ARGS = ServiceLoadBalancerArgs(
    name="svc", vpc_id="vpc-0123456789abcdef0", subnet_ids=["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"],
    api_allowed_cidrs=["93.184.216.0/24", "2600:1f18:1::/48"], tags={"team": "ml"})


def arn_suffix(typ: str, name: str) -> str:
    """What AWS reports as a load balancer's (app/<name>/<id>) or target group's (targetgroup/<name>/<id>) ARN
    suffix, the dimension values of their CloudWatch metrics."""
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{'app' if typ == ALB else 'targetgroup'}/{name}/{digest}"


class LbMocks(Mocks):
    """The project's mocks, plus what AWS reports for the load balancer's resources (ARNs, the ALB's name
    and zone, the certificate's validation record, a record's FQDN)."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        resource_id, outputs = super().new_resource(args)
        digest = hashlib.sha256(args.name.encode()).hexdigest()[:16]
        if args.typ.startswith("aws:lb/"):
            kind = args.typ.split(":")[-1].lower()
            outputs["arn"] = f"arn:aws:elasticloadbalancing:us-east-1:123456789012:{kind}/{args.name}/{digest}"
        if args.typ in (ALB, TARGET_GROUP):
            outputs["arnSuffix"] = arn_suffix(args.typ, args.name)
        if args.typ == ALB:
            outputs |= {"dnsName": ALB_DNS, "zoneId": ALB_ZONE}
        elif args.typ == CERTIFICATE:
            outputs["arn"] = f"arn:aws:acm:us-east-1:123456789012:certificate/{digest}"
            outputs["domainValidationOptions"] = [{
                "domainName": DOMAIN, "resourceRecordName": f"_{digest}.{DOMAIN}.",
                "resourceRecordType": "CNAME", "resourceRecordValue": f"_{digest}.acm-validations.aws."}]
        elif args.typ == RECORD:
            outputs["fqdn"] = str(args.inputs.get("name", "")).rstrip(".")
        return resource_id, outputs


@dataclass
class Built:
    mocks: LbMocks
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, typ: str) -> list[Recorded]:
        return self.mocks.of_type(typ)

    def named(self, suffix: str) -> Recorded:
        found = [r for r in self.mocks.resources if r.name.endswith(suffix)]
        assert len(found) == 1, [r.name for r in self.mocks.resources]
        return found[0]


def build(args: ServiceLoadBalancerArgs = ARGS, name: str = "svc") -> Built:
    mocks = LbMocks()
    pulumi.runtime.set_mocks(mocks, preview=False)
    built = Built(mocks)

    @pulumi.runtime.test
    def run() -> Any:
        lb = ServiceLoadBalancer(name, args)

        async def collect() -> None:
            for name in ("url", "dns_name", "target_group_arn", "task_security_group_id", "alb_security_group_id",
                         "listener_arn"):
                built.outputs[name] = await getattr(lb, name).future()

        return collect()

    run()
    return built


def group_id(built: Built, suffix: str) -> str:
    return f"{built.named(suffix).name}-id"  # the mocks' id of a resource


# ----------------------------------------------------------------------------------------------
# Routing.

@pytest.mark.parametrize("args", [ARGS, replace(ARGS, domain=DOMAIN, hosted_zone_id=ZONE_ID)], ids=["http", "https"])
def test_rules_forward_only_the_api_prefix_and_get_health_and_everything_else_is_404(
        args: ServiceLoadBalancerArgs) -> None:
    built = build(args)
    listener = built.named("-https" if args.domain else "-http")
    assert listener.inputs["defaultActions"] == [{"type": "fixed-response", "fixedResponse": {
        "statusCode": "404", "contentType": "text/plain", "messageBody": "not found\n"}}]
    target_group = f"arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/svc-tg/" \
                   f"{hashlib.sha256(b'svc-tg').hexdigest()[:16]}"
    rules = {r.name: r.inputs for r in built.of_type(RULE)}
    assert set(rules) == {"svc-rule-api", "svc-rule-health"}
    for inputs in rules.values():
        assert inputs["listenerArn"] == built.outputs["listener_arn"]
        assert inputs["actions"] == [{"type": "forward", "targetGroupArn": target_group}]
    assert rules["svc-rule-api"]["conditions"] == [{"pathPattern": {"values": ["/v1/*"]}}]
    assert rules["svc-rule-health"]["conditions"] == [{"pathPattern": {"values": [HEALTH_PATH]}},
                                                      {"httpRequestMethod": {"values": ["GET", "HEAD"]}}]
    assert {r["priority"] for r in rules.values()} == {10, 20}


def test_the_rules_are_the_specs() -> None:
    built = build()
    spec = load_balancer_spec()
    rules = {r.name.removeprefix("svc-rule-"): r.inputs for r in built.of_type(RULE)}
    for rule in spec.rules:
        assert rules[rule.key]["priority"] == rule.priority
        assert rules[rule.key]["conditions"][0]["pathPattern"]["values"] == list(rule.path_patterns)


# ----------------------------------------------------------------------------------------------
# Network edge.

def test_the_load_balancer_admits_only_the_configured_cidrs_on_port_80_without_a_domain() -> None:
    built = build()
    alb_sg = group_id(built, "-alb-sg")
    from_cidrs = [r.inputs for r in built.of_type(INGRESS) if r.inputs["securityGroupId"] == alb_sg]
    seen = {(r["fromPort"], r["toPort"], r.get("cidrIpv4") or r.get("cidrIpv6")) for r in from_cidrs}
    assert seen == {(80, 80, "93.184.216.0/24"), (80, 80, "2600:1f18:1::/48")}
    assert all(r["ipProtocol"] == "tcp" and "opt-in" not in r["description"] for r in from_cidrs)
    egress = [r.inputs for r in built.of_type(EGRESS) if r.inputs["securityGroupId"] == alb_sg]
    assert egress == [{**egress[0], "ipProtocol": "tcp", "fromPort": PROXY_CONTAINER_PORT,
                       "toPort": PROXY_CONTAINER_PORT, "referencedSecurityGroupId": group_id(built, "-task-sg")}]
    assert "cidrIpv4" not in egress[0] and "cidrIpv6" not in egress[0]
    assert all(not g.inputs.get("ingress") and not g.inputs.get("egress") for g in built.of_type(SG))


def test_the_tasks_admit_only_the_load_balancers_group() -> None:
    built = build()
    task_sg = group_id(built, "-task-sg")
    assert built.outputs["task_security_group_id"] == task_sg
    assert built.outputs["alb_security_group_id"] == group_id(built, "-alb-sg")
    into_tasks = [r.inputs for r in built.of_type(INGRESS) if r.inputs["securityGroupId"] == task_sg]
    assert len(into_tasks) == 1
    rule = into_tasks[0]
    assert (rule["ipProtocol"], rule["fromPort"], rule["toPort"], rule["referencedSecurityGroupId"]) == (
        "tcp", PROXY_CONTAINER_PORT, PROXY_CONTAINER_PORT, group_id(built, "-alb-sg"))
    assert "cidrIpv4" not in rule and "cidrIpv6" not in rule and "prefixListId" not in rule


@pytest.mark.parametrize("world", ["0.0.0.0/0", "::/0"])
def test_a_world_open_cidr_is_refused_without_the_opt_in(world: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(replace(ARGS, api_allowed_cidrs=[world]))
    assert f"{API_WORLD_OPT_IN}=true" in str(info.value) and "apiAllowedCidrs" in str(info.value)


def test_the_opt_in_opens_the_listener_to_the_world_with_the_marker_the_pack_accepts() -> None:
    built = build(replace(ARGS, api_allowed_cidrs=["0.0.0.0/0"], dangerously_allow_api_from_internet=True))
    world = [r for r in built.of_type(INGRESS) if r.inputs.get("cidrIpv4") == "0.0.0.0/0"]
    assert len(world) == 1 and f"(opt-in: {API_WORLD_OPT_IN})" in world[0].inputs["description"]
    assert violations(_deployed(built)) == []
    world[0].raw_inputs["description"] = "load balancer port 80 from 0.0.0.0/0"
    assert any(v.startswith("no-api-from-internet on svc-alb-80-0-0-0-0-0") for v in violations(_deployed(built)))


@pytest.mark.parametrize("change, message", [
    ({"subnet_ids": ["subnet-0aaaaaaaaaaaaaaaa"]}, "subnetIds: an Application Load Balancer needs subnets in at "
                                                   "least two Availability Zones; got 1"),
    ({"api_allowed_cidrs": []}, "apiAllowedCidrs: required"),
    ({"api_allowed_cidrs": ["10.0.0.1/8"]}, "apiAllowedCidrs: '10.0.0.1/8' is not a CIDR"),
    ({"domain": DOMAIN}, "domain and hostedZoneId: set both"),
    ({"hosted_zone_id": ZONE_ID}, "domain and hostedZoneId: set both"),
    ({"domain": "LLM.Example.com", "hosted_zone_id": ZONE_ID}, "domain: 'LLM.Example.com' is not"),
    ({"deregistration_delay_s": 3601}, "deregistrationDelaySeconds: 3601 is outside ALB's 0-3600 s"),
])
def test_bad_args_are_refused_with_the_settings_name(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(replace(ARGS, **change))
    assert message in str(info.value)


def test_a_name_aws_would_refuse_for_the_load_balancer_is_refused() -> None:
    with pytest.raises(ConfigError, match="'my_svc': a load balancer's name takes only letters, digits"):
        build(name="my_svc")


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        build(replace(ARGS, subnet_ids=[], api_allowed_cidrs=["0.0.0.0/0"], domain=DOMAIN))
    assert len(info.value.problems) == 3


def test_subnets_given_as_an_output_are_taken_as_they_are() -> None:
    built = build(replace(ARGS, subnet_ids=pulumi.Output.from_input(["subnet-0aaaaaaaaaaaaaaaa"])))
    assert built.of_type(ALB)[0].inputs["subnets"] == ["subnet-0aaaaaaaaaaaaaaaa"]


# ----------------------------------------------------------------------------------------------
# Load balancer, listeners, certificate.

def test_plain_http_without_a_domain() -> None:
    built = build()
    listeners = built.of_type(LISTENER)
    assert [(r.inputs["port"], r.inputs["protocol"]) for r in listeners] == [(80, "HTTP")]
    assert not built.of_type(CERTIFICATE) and not built.of_type(VALIDATION) and not built.of_type(RECORD)
    assert built.outputs["url"] == f"http://{ALB_DNS}/v1"
    assert built.outputs["dns_name"] == ALB_DNS
    assert built.outputs["listener_arn"].split(":")[-1].startswith("listener/svc-http/")


def test_a_domain_brings_https_a_validated_certificate_a_redirect_and_an_alias() -> None:
    built = build(replace(ARGS, domain=DOMAIN, hosted_zone_id=ZONE_ID, api_allowed_cidrs=["93.184.216.0/24"]))
    certificate = built.mocks.one(CERTIFICATE)
    assert (certificate.inputs["domainName"], certificate.inputs["validationMethod"]) == (DOMAIN, "DNS")
    validation_record = built.named("-certificate-validation").inputs
    assert validation_record["zoneId"] == ZONE_ID and validation_record["type"] == "CNAME"
    assert validation_record["name"].startswith("_") and validation_record["records"][0].endswith(
        ".acm-validations.aws.")
    validation = built.mocks.one(VALIDATION).inputs
    assert validation["validationRecordFqdns"] == [validation_record["name"].rstrip(".")]

    listeners = {r.name: r.inputs for r in built.of_type(LISTENER)}
    https, redirect = listeners["svc-https"], listeners["svc-http-redirect"]
    assert (https["port"], https["protocol"], https["sslPolicy"]) == (443, "HTTPS", SSL_POLICY)
    assert https["certificateArn"] == validation["certificateArn"]
    assert redirect["port"] == 80 and redirect["protocol"] == "HTTP"
    assert redirect["defaultActions"] == [{"type": "redirect", "redirect": {
        "protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"}}]
    assert built.outputs["listener_arn"].split(":")[-1].startswith("listener/svc-https/")

    alias = built.named("-alias-a").inputs
    assert (alias["zoneId"], alias["name"], alias["type"]) == (ZONE_ID, DOMAIN, "A")
    assert alias["aliases"] == [{"name": ALB_DNS, "zoneId": ALB_ZONE, "evaluateTargetHealth": True}]
    assert built.outputs["url"] == f"https://{DOMAIN}/v1"
    # Both listener ports from the configured networks only: 80 carries nothing but the redirect.
    seen = {(r.inputs["fromPort"], r.inputs.get("cidrIpv4")) for r in built.of_type(INGRESS)
            if r.inputs["securityGroupId"] == group_id(built, "-alb-sg")}
    assert seen == {(80, "93.184.216.0/24"), (443, "93.184.216.0/24")}


def test_an_ipv6_client_network_gets_a_dualstack_load_balancer_and_an_aaaa_alias() -> None:
    ipv4_only = build(replace(ARGS, api_allowed_cidrs=["93.184.216.0/24"]))
    assert ipv4_only.mocks.one(ALB).inputs["ipAddressType"] == "ipv4"
    built = build(replace(ARGS, domain=DOMAIN, hosted_zone_id=ZONE_ID))
    assert built.mocks.one(ALB).inputs["ipAddressType"] == "dualstack"
    assert {r.inputs["type"] for r in built.of_type(RECORD) if r.inputs.get("aliases")} == {"A", "AAAA"}


def test_the_load_balancer_refuses_ambiguous_requests_and_waits_for_long_generations() -> None:
    alb = build().mocks.one(ALB).inputs
    assert alb["loadBalancerType"] == "application" and alb["internal"] is False
    assert alb["dropInvalidHeaderFields"] is True
    assert alb["desyncMitigationMode"] == DESYNC_MITIGATION_MODE == "strictest"
    assert alb["idleTimeout"] == IDLE_TIMEOUT_S
    assert alb["subnets"] == list(ARGS.subnet_ids)
    assert "accessLogs" not in alb


def test_target_group_routes_to_the_least_busy_ready_task_and_drains() -> None:
    built = build(replace(ARGS, deregistration_delay_s=600))
    group = built.mocks.one(TARGET_GROUP).inputs
    spec = load_balancer_spec(deregistration_delay_s=600).target_group
    check = spec.health_check
    assert (group["targetType"], group["protocol"], group["port"]) == ("ip", "HTTP", PROXY_CONTAINER_PORT)
    assert group["vpcId"] == ARGS.vpc_id
    assert group["loadBalancingAlgorithmType"] == "least_outstanding_requests"
    assert group["deregistrationDelay"] == 600
    assert group["healthCheck"] == {
        "enabled": True, "protocol": "HTTP", "path": HEALTH_PATH, "port": "traffic-port", "matcher": "200",
        "interval": check.interval_s, "timeout": check.timeout_s, "healthyThreshold": check.healthy_threshold,
        "unhealthyThreshold": check.unhealthy_threshold}
    assert "slowStart" not in group and "stickiness" not in group
    assert built.outputs["target_group_arn"].split(":")[-1].startswith("targetgroup/svc-tg/")


def test_everything_is_tagged_with_the_stack_and_the_service() -> None:
    built = build()
    for resource in built.mocks.resources:
        if "tags" in resource.inputs:
            assert {"vllm-endpoint:stack": "stack", "vllm-endpoint:endpoint": "svc", "team": "ml"}.items() \
                <= resource.inputs["tags"].items(), resource.name


# ----------------------------------------------------------------------------------------------
# The policy pack.

def _deployed(built: Built) -> Deployed:
    # `violations` reads only the recorded resources and their options (none are protected here).
    return Deployed(built.mocks, cast(Any, None))


@pytest.mark.parametrize("args", [ARGS, replace(ARGS, domain=DOMAIN, hosted_zone_id=ZONE_ID)], ids=["http", "https"])
def test_the_policy_pack_passes_the_load_balancers_resources(args: ServiceLoadBalancerArgs) -> None:
    assert violations(_deployed(build(args))) == []
