"""ServiceLoadBalancer: the Application Load Balancer in front of a VllmService's tasks.

Two security groups (the load balancer's: the listener ports from the configured CIDRs only, one rule per
CIDR, and out only to the tasks; the tasks': the proxy's port from the load balancer's group only), an
internet-facing ALB, an `ip` target group for awsvpc tasks with vLLM's readiness as health check, and the
listeners: with a domain, HTTPS (an ACM certificate validated through records in the hosted zone), HTTP
redirecting to it and an alias record; without one, HTTP only. The listener forwards `/v1/*` and
`GET|HEAD /health` and answers everything else with a fixed 404. What it forwards, the health check and the
draining are infra/render/load_balancer.py's spec (its docstring says how ALB matches paths, and why the
nginx proxy stays in each task behind it). Everything it knows comes from its args; it reads no config.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from vllm_endpoint.components._network import egress_anywhere
from vllm_endpoint.infra.catalog.names import (
    API_WORLD_OPT_IN,
    ENDPOINT_TAG,
    FLEET_TASKS_ROLE,
    FORWARDED_PREFIX,
    OPT_IN_MARKER_PREFIX,
    PROJECT,
    PROXY_CONTAINER_PORT,
    ROLE_TAG,
    STACK_TAG,
)
from vllm_endpoint.infra.render.load_balancer import (
    DEFAULT_DEREGISTRATION_DELAY_S,
    DEREGISTRATION_DELAY_RANGE_S,
    DESYNC_MITIGATION_MODE,
    HTTP_PORT,
    HTTPS_PORT,
    SSL_POLICY,
    ForwardRule,
    LoadBalancerSpec,
    load_balancer_spec,
)
from vllm_endpoint.infra.settings.models import DOMAIN_PATTERN, ConfigError

_LB_NAME_PATTERN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class ServiceLoadBalancerArgs:
    name: str  # the service's name: in tags
    vpc_id: pulumi.Input[str]
    # At least two, in two Availability Zones (ALB's requirement); public subnets, the load balancer faces
    # the internet. An Output is taken as it is (AWS refuses fewer zones at creation).
    subnet_ids: Sequence[str] | pulumi.Output[Sequence[str]]
    api_allowed_cidrs: Sequence[str]
    target_port: int = PROXY_CONTAINER_PORT  # the proxy's port inside each task
    domain: str | None = None  # with hosted_zone_id: HTTPS, a certificate and an alias record
    hosted_zone_id: pulumi.Input[str] | None = None
    deregistration_delay_s: int = DEFAULT_DEREGISTRATION_DELAY_S
    dangerously_allow_api_from_internet: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Certificate:
    certificate: aws.acm.Certificate
    validation_record: aws.route53.Record
    validation: aws.acm.CertificateValidation


class ServiceLoadBalancer(pulumi.ComponentResource):
    url: pulumi.Output[str]
    dns_name: pulumi.Output[str]
    target_group_arn: pulumi.Output[str]
    task_security_group_id: pulumi.Output[str]
    alb_security_group_id: pulumi.Output[str]
    listener_arn: pulumi.Output[str]

    def __init__(self, name: str, args: ServiceLoadBalancerArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        problems = args_problems(args)
        if not _LB_NAME_PATTERN.match(name):
            # The load balancer's and target group's AWS names are made from it (with a random suffix).
            problems.append(f"{name!r}: a load balancer's name takes only letters, digits and inner hyphens; "
                            "name the service so")
        if problems:
            raise ConfigError(problems)
        super().__init__(f"{PROJECT}:aws:ServiceLoadBalancer", name, None, opts)
        self.spec = load_balancer_spec(args.target_port, args.deregistration_delay_s)
        tags = {**args.tags, STACK_TAG: pulumi.get_stack(), ENDPOINT_TAG: args.name}
        https = args.domain is not None
        # With a domain, port 80 stays open to the same networks: it only redirects to HTTPS.
        ports = (HTTP_PORT, HTTPS_PORT) if https else (HTTP_PORT,)

        self.alb_security_group, self.task_security_group = self._create_security_groups(name, args.vpc_id, tags)
        self.ingress_rules = self._create_alb_ingress(name, args, ports, tags)
        self.alb_egress_rule, self.task_ingress_rule = self._create_alb_to_tasks(name, args.target_port, tags)
        self.task_egress_rules = self._create_task_egress(name, tags)
        self.target_group = self._create_target_group(name, args.vpc_id, self.spec, tags)
        self.load_balancer = self._create_load_balancer(name, args, tags)
        self.certificate = self._create_certificate(name, args, tags) if https else None
        self.listener, self.redirect_listener = self._create_listeners(name, self.spec, tags)
        self.listener_rules = self._create_rules(name, self.spec.rules, tags)
        self.alias_records = self._create_alias_records(name, args) if https else []

        self.dns_name = self.load_balancer.dns_name
        host: pulumi.Input[str] = args.domain if args.domain is not None else self.dns_name
        scheme = "https" if https else "http"
        self.url = pulumi.Output.concat(f"{scheme}://", host, FORWARDED_PREFIX.rstrip("/"))
        self.target_group_arn = self.target_group.arn
        # Their metrics' LoadBalancer and TargetGroup dimensions (AWS/ApplicationELB).
        self.load_balancer_arn_suffix = self.load_balancer.arn_suffix
        self.target_group_arn_suffix = self.target_group.arn_suffix
        self.task_security_group_id = self.task_security_group.id
        self.alb_security_group_id = self.alb_security_group.id
        self.listener_arn = self.listener.arn
        self.register_outputs({
            "url": self.url,
            "dns_name": self.dns_name,
            "target_group_arn": self.target_group_arn,
            "task_security_group_id": self.task_security_group_id,
            "alb_security_group_id": self.alb_security_group_id,
            "listener_arn": self.listener_arn,
        })

    # ------------------------------------------------------------------------------------------

    def _create_security_groups(self, name: str, vpc_id: pulumi.Input[str], tags: dict[str, str]) -> tuple[
            aws.ec2.SecurityGroup, aws.ec2.SecurityGroup]:
        # No inline rules: the provider removes AWS's default allow-all egress, and each rule below is a
        # resource of its own (one CIDR added or removed touches one rule).
        alb = aws.ec2.SecurityGroup(
            f"{name}-alb-sg",
            vpc_id=vpc_id,
            description="vLLM service load balancer: listener ports from configured networks, out to the tasks only",
            tags={**tags, "Name": f"{name}-alb-sg"},
            opts=pulumi.ResourceOptions(parent=self),
        )
        task = aws.ec2.SecurityGroup(
            f"{name}-task-sg",
            vpc_id=vpc_id,
            description="vLLM service tasks: the proxy port from the load balancer only",
            tags={**tags, "Name": f"{name}-task-sg", ROLE_TAG: FLEET_TASKS_ROLE},
            opts=pulumi.ResourceOptions(parent=self),
        )
        return alb, task

    def _create_alb_ingress(self, name: str, args: ServiceLoadBalancerArgs, ports: Sequence[int],
                            tags: dict[str, str]) -> list[aws.vpc.SecurityGroupIngressRule]:
        rules = []
        for port in ports:
            for cidr in args.api_allowed_cidrs:
                network = ipaddress.ip_network(cidr)
                rules.append(aws.vpc.SecurityGroupIngressRule(
                    # Named after the CIDR, so adding or removing one network never touches the others.
                    f"{name}-alb-{port}-{re.sub(r'[^0-9a-zA-Z]+', '-', cidr).strip('-')}",
                    security_group_id=self.alb_security_group.id,
                    ip_protocol="tcp",
                    from_port=port,
                    to_port=port,
                    cidr_ipv4=cidr if network.version == 4 else None,
                    cidr_ipv6=cidr if network.version == 6 else None,
                    description=_description(f"load balancer port {port}", cidr),
                    tags=tags,
                    opts=pulumi.ResourceOptions(parent=self),
                ))
        return rules

    def _create_alb_to_tasks(self, name: str, target_port: int, tags: dict[str, str]) -> tuple[
            aws.vpc.SecurityGroupEgressRule, aws.vpc.SecurityGroupIngressRule]:
        """The load balancer reaches the tasks' proxy port (requests and health checks), and nothing else;
        the tasks accept that port from the load balancer's group only, never from an address range."""
        egress = aws.vpc.SecurityGroupEgressRule(
            f"{name}-alb-to-tasks",
            security_group_id=self.alb_security_group.id,
            referenced_security_group_id=self.task_security_group.id,
            ip_protocol="tcp",
            from_port=target_port,
            to_port=target_port,
            description="requests and health checks to the tasks' proxy",
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        ingress = aws.vpc.SecurityGroupIngressRule(
            f"{name}-task-from-alb",
            security_group_id=self.task_security_group.id,
            referenced_security_group_id=self.alb_security_group.id,
            ip_protocol="tcp",
            from_port=target_port,
            to_port=target_port,
            description="the proxy port from the service's load balancer only",
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return egress, ingress

    def _create_task_egress(self, name: str, tags: dict[str, str]) -> list[aws.vpc.SecurityGroupEgressRule]:
        # Outbound from the task's own interface (awsvpc): model downloads and the Hugging Face API, through
        # the subnets' NAT or VPC endpoints.
        return egress_anywhere(f"{name}-task-egress", self.task_security_group.id, "outbound: model downloads",
                               tags, self)

    def _create_target_group(self, name: str, vpc_id: pulumi.Input[str], spec: LoadBalancerSpec,
                             tags: dict[str, str]) -> aws.lb.TargetGroup:
        group, check = spec.target_group, spec.target_group.health_check
        return aws.lb.TargetGroup(
            f"{name}-tg",
            vpc_id=vpc_id,
            target_type=group.target_type,
            protocol=group.protocol,
            port=group.port,
            load_balancing_algorithm_type=group.algorithm,
            deregistration_delay=group.deregistration_delay_s,
            # No slow start: a replica that passes /health has its model loaded and compiled; ramping it
            # up would only leave the others queueing longer.
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                enabled=True,
                protocol=check.protocol,
                path=check.path,
                port="traffic-port",  # the proxy, so a replica is in service only when proxy and vLLM answer
                matcher=check.matcher,
                interval=check.interval_s,
                timeout=check.timeout_s,
                healthy_threshold=check.healthy_threshold,
                unhealthy_threshold=check.unhealthy_threshold,
            ),
            tags=tags,
            # Port, protocol and target type replace the group; the listener rules then move to the new one
            # before the old is deleted (the autonamed group may exist twice meanwhile).
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _create_load_balancer(self, name: str, args: ServiceLoadBalancerArgs,
                              tags: dict[str, str]) -> aws.lb.LoadBalancer:
        ipv6 = any(ipaddress.ip_network(c).version == 6 for c in args.api_allowed_cidrs)
        return aws.lb.LoadBalancer(
            f"{name}-alb",
            load_balancer_type="application",
            internal=False,
            # An IPv6 client network needs an IPv6 address to call; dualstack needs subnets with IPv6 ranges.
            ip_address_type="dualstack" if ipv6 else "ipv4",
            security_groups=[self.alb_security_group.id],
            subnets=args.subnet_ids,
            # Headers that are not valid HTTP are removed, not passed to nginx (Security Hub ELB.4).
            drop_invalid_header_fields=True,
            desync_mitigation_mode=DESYNC_MITIGATION_MODE,
            idle_timeout=self.spec.idle_timeout_s,
            # Access logs stay off: they need an S3 bucket whose policy admits the region's ELB account, which
            # this component does not own yet; the tasks' proxy logs every request to CloudWatch already.
            # Deletion protection off: `pulumi destroy` removes the whole service, as for the single endpoint.
            enable_deletion_protection=False,
            tags={**tags, "Name": f"{name}-alb"},
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _create_certificate(self, name: str, args: ServiceLoadBalancerArgs, tags: dict[str, str]) -> _Certificate:
        certificate = aws.acm.Certificate(
            f"{name}-certificate",
            domain_name=str(args.domain),
            validation_method="DNS",
            tags=tags,
            # A new domain is a new certificate, created (Pulumi's create-before-replace) and validated before
            # the listener lets go of the old one.
            opts=pulumi.ResourceOptions(parent=self),
        )
        # One domain name, no alternative names: ACM asks for exactly one validation record. Indexing the
        # Output (not creating records inside `.apply()`) keeps the record visible to preview and tests.
        option = certificate.domain_validation_options[0]
        record = aws.route53.Record(
            f"{name}-certificate-validation",
            zone_id=args.hosted_zone_id or "",
            name=option.resource_record_name,
            type=option.resource_record_type,
            records=[option.resource_record_value],
            ttl=60,
            # ACM gives the same record for the same domain in any account: a stack re-created for the same
            # domain finds it in the zone already.
            allow_overwrite=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        validation = aws.acm.CertificateValidation(
            f"{name}-certificate-issued",
            certificate_arn=certificate.arn,
            validation_record_fqdns=[record.fqdn],
            opts=pulumi.ResourceOptions(parent=self),
        )
        return _Certificate(certificate, record, validation)

    def _create_listeners(self, name: str, spec: LoadBalancerSpec, tags: dict[str, str]) -> tuple[
            aws.lb.Listener, aws.lb.Listener | None]:
        """The listener the rules hang on (HTTPS with a domain, else HTTP), and with a domain the HTTP one
        that only redirects. Its default action is the 404: a request no rule forwards never reaches a task."""
        response = spec.default_response
        not_found = aws.lb.ListenerDefaultActionArgs(
            type="fixed-response",
            fixed_response=aws.lb.ListenerDefaultActionFixedResponseArgs(
                status_code=str(response.status_code), content_type=response.content_type,
                message_body=response.body),
        )
        if self.certificate is None:
            return aws.lb.Listener(
                f"{name}-http",
                load_balancer_arn=self.load_balancer.arn,
                port=HTTP_PORT,
                protocol="HTTP",
                default_actions=[not_found],
                tags=tags,
                opts=pulumi.ResourceOptions(parent=self),
            ), None
        https = aws.lb.Listener(
            f"{name}-https",
            load_balancer_arn=self.load_balancer.arn,
            port=HTTPS_PORT,
            protocol="HTTPS",
            ssl_policy=SSL_POLICY,
            # The validation's ARN, not the certificate's: the listener waits until ACM has issued it.
            certificate_arn=self.certificate.validation.certificate_arn,
            default_actions=[not_found],
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        redirect = aws.lb.Listener(
            f"{name}-http-redirect",
            load_balancer_arn=self.load_balancer.arn,
            port=HTTP_PORT,
            protocol="HTTP",
            # Permanent: clients that follow it learn the https URL; nothing is forwarded over plain HTTP.
            default_actions=[aws.lb.ListenerDefaultActionArgs(
                type="redirect",
                redirect=aws.lb.ListenerDefaultActionRedirectArgs(
                    protocol="HTTPS", port=str(HTTPS_PORT), status_code="HTTP_301"),
            )],
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return https, redirect

    def _create_rules(self, name: str, rules: Sequence[ForwardRule], tags: dict[str, str]) -> list[aws.lb.ListenerRule]:
        created = []
        for rule in rules:
            conditions = [aws.lb.ListenerRuleConditionArgs(
                path_pattern=aws.lb.ListenerRuleConditionPathPatternArgs(values=list(rule.path_patterns)))]
            if rule.methods:
                conditions.append(aws.lb.ListenerRuleConditionArgs(
                    http_request_method=aws.lb.ListenerRuleConditionHttpRequestMethodArgs(
                        values=list(rule.methods))))
            created.append(aws.lb.ListenerRule(
                f"{name}-rule-{rule.key}",
                listener_arn=self.listener.arn,
                priority=rule.priority,
                conditions=conditions,
                actions=[aws.lb.ListenerRuleActionArgs(type="forward", target_group_arn=self.target_group.arn)],
                tags=tags,
                opts=pulumi.ResourceOptions(parent=self),
            ))
        return created

    def _create_alias_records(self, name: str, args: ServiceLoadBalancerArgs) -> list[aws.route53.Record]:
        types = ["A", "AAAA"] if any(ipaddress.ip_network(c).version == 6 for c in args.api_allowed_cidrs) else ["A"]
        return [
            aws.route53.Record(
                f"{name}-alias-{record_type.lower()}",
                zone_id=args.hosted_zone_id or "",
                name=str(args.domain),
                type=record_type,
                aliases=[aws.route53.RecordAliasArgs(
                    name=self.load_balancer.dns_name,
                    zone_id=self.load_balancer.zone_id,
                    # Route 53 answers with the load balancer only while it has a healthy target.
                    evaluate_target_health=True,
                )],
                opts=pulumi.ResourceOptions(parent=self),
            )
            for record_type in types
        ]


def args_problems(args: ServiceLoadBalancerArgs) -> list[str]:
    """Every problem with the args at once, one line each, named by the setting."""
    problems = []
    if not isinstance(args.subnet_ids, pulumi.Output) and len(set(args.subnet_ids)) < 2:
        problems.append(
            f"subnetIds: an Application Load Balancer needs subnets in at least two Availability Zones; got "
            f"{len(set(args.subnet_ids))} ({', '.join(args.subnet_ids) or 'none'})")
    if isinstance(args.api_allowed_cidrs, str):
        problems.append("apiAllowedCidrs: a list of CIDRs, not one text")
        return problems
    if not args.api_allowed_cidrs:
        problems.append("apiAllowedCidrs: required: the networks your apps call the load balancer from")
    world = False
    for cidr in args.api_allowed_cidrs:
        try:
            world = world or ipaddress.ip_network(cidr).prefixlen == 0
        except ValueError:
            problems.append(f"apiAllowedCidrs: {cidr!r} is not a CIDR (e.g. 203.0.113.0/24) with its host bits zero")
    if world and not args.dangerously_allow_api_from_internet:
        problems.append("apiAllowedCidrs: 0.0.0.0/0 or ::/0 exposes the GPU endpoint to the whole internet; list "
                        f"your apps' networks or set {API_WORLD_OPT_IN}=true")
    if args.domain is not None and not DOMAIN_PATTERN.match(args.domain):
        problems.append(f"domain: {args.domain!r} is not a lowercase DNS name such as api.example.com")
    if (args.domain is None) != (args.hosted_zone_id is None):
        problems.append("domain and hostedZoneId: set both (the certificate is validated and the name published "
                        "in that Route 53 zone) or neither (plain HTTP on the load balancer's own name)")
    low, high = DEREGISTRATION_DELAY_RANGE_S
    if not low <= args.deregistration_delay_s <= high:
        problems.append(f"deregistrationDelaySeconds: {args.deregistration_delay_s} is outside ALB's {low}-{high} s")
    if not 1 <= args.target_port <= 65535:
        problems.append(f"targetPort: {args.target_port} is not a TCP port")
    return problems


def _description(purpose: str, cidr: str) -> str:
    """Says where the rule admits from; world-open ones carry the opt-in marker policy packs look for."""
    if ipaddress.ip_network(cidr).prefixlen == 0:
        return f"{purpose} from {cidr} ({OPT_IN_MARKER_PREFIX}{API_WORLD_OPT_IN})"
    return f"{purpose} from {cidr}"
