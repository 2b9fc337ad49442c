"""The vllm-endpoint policies: pulumi-policy objects around the pure checks in `rules.py`.

Kept apart from `__main__.py` because constructing `PolicyPack` starts the analyzer's gRPC server and
blocks; this module only builds the policy list, so tests import it and drive each policy's own
`validate`/`remediate` callback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, cast

import rules
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyComplianceFramework,
    PolicyConfigSchema,
    ReportViolation,
    ResourceRemediation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)

POLICY_PACK_NAME: Final = "vllm-endpoint-security"

INGRESS_TYPES: Final = frozenset({rules.SECURITY_GROUP, rules.SECURITY_GROUP_RULE, rules.VPC_INGRESS_RULE})
COMPUTE_TYPES: Final = frozenset({rules.INSTANCE, rules.LAUNCH_TEMPLATE})
STORAGE_TYPES: Final = frozenset({rules.INSTANCE, rules.LAUNCH_TEMPLATE, rules.EBS_VOLUME})
DOCKER_RESOURCE_TYPES: Final = frozenset({rules.CONTAINER, rules.REMOTE_IMAGE})
API_KEY_TYPES: Final = frozenset({rules.RANDOM_PASSWORD, rules.RANDOM_STRING})
SSL_POLICIES_SCHEMA: Final = {
    "type": "array",
    "items": {"type": "string"},
    "minItems": 1,
    "default": list(rules.DEFAULT_ALLOWED_SSL_POLICIES),
}


def _config(args: ResourceValidationArgs | StackValidationArgs, key: str, default: Any) -> Any:
    # The engine may hand over only an enforcement level, so every property has a default here.
    value = args.get_config().get(key)
    return default if value is None else value


def _report_all(report_violation: ReportViolation, messages: list[str]) -> None:
    for message in messages:
        report_violation(message, None)


def _on_types(
    types: frozenset[str], check: Callable[[ResourceValidationArgs], list[str]]
) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type in types:
            _report_all(report_violation, check(args))

    return validate


def _framework(name: str, reference: str) -> PolicyComplianceFramework:
    return PolicyComplianceFramework(name=name, reference=reference)


def _ssh_host_key_check(args: ResourceValidationArgs) -> list[str]:
    if args.resource_type == rules.DOCKER_PROVIDER:
        return rules.check_docker_ssh_opts(args.props)
    if args.resource_type.startswith(rules.REMOTE_COMMAND_PREFIX):
        return rules.check_remote_command_host_key(args.props)
    provider = args.provider
    # A default provider (configured by `docker:sshOpts` stack config) may never be analyzed as a
    # resource of its own, so the resources it deploys carry its findings.
    if (
        args.resource_type in DOCKER_RESOURCE_TYPES
        and provider is not None
        and provider.resource_type == rules.DOCKER_PROVIDER
        and provider.name.startswith("default")
    ):
        return rules.check_docker_ssh_opts(provider.props, f"The default docker provider {provider.urn}")
    return []


def _secret_outputs(args: ResourceValidationArgs) -> frozenset[str]:
    return frozenset(args.opts.additional_secret_outputs or ())


def _remediate_credentials(args: ResourceValidationArgs) -> Mapping[str, Any] | None:
    return rules.secretize_credentials(args.resource_type, args.props, _secret_outputs(args))


def _validate_vllm_images(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    floor = str(_config(args, "minimumVersion", rules.VLLM_SECURITY_FLOOR))
    for urn, message in rules.check_vllm_images(args.resources, floor):
        report_violation(message, urn)


def _reporting(
    check: Callable[[list[Any]], list[tuple[str, str]]]
) -> Callable[[StackValidationArgs, ReportViolation], None]:
    """A stack policy's callback around a check that returns (urn, message) pairs."""

    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        for urn, message in check(args.resources):
            report_violation(message, urn)

    return validate


def _load_balancer_policies() -> list[Policy]:
    """The load balancer in front of the fleet: TLS, redirects, request handling."""
    return [
        ResourceValidationPolicy(
            name="alb-https-listener",
            description="A load balancer listener on port 443 must be HTTPS; an HTTPS listener needs a "
            "certificate and a TLS policy from the allowed list.",
            validate=_on_types(
                rules.LISTENER_TYPES,
                lambda a: rules.check_alb_https_listener(
                    a.props, tuple(_config(a, "allowedSslPolicies", rules.DEFAULT_ALLOWED_SSL_POLICIES))
                ),
            ),
            enforcement_level=EnforcementLevel.MANDATORY,
            severity=Severity.HIGH,
            framework=_framework("Checkov", "CKV_AWS_2; CKV_AWS_103; AWS Security Hub ELB.17"),
            config_schema=PolicyConfigSchema(properties={"allowedSslPolicies": SSL_POLICIES_SCHEMA}),
            tags=["aws", "network", "encryption"],
        ),
        StackValidationPolicy(
            name="alb-http-redirects-to-https",
            description="When a load balancer has an HTTPS listener, its plain HTTP listeners may only "
            "redirect to HTTPS.",
            validate=_reporting(rules.check_http_redirects),
            enforcement_level=EnforcementLevel.MANDATORY,
            severity=Severity.HIGH,
            framework=_framework("AWS Security Hub", "ELB.1; Checkov CKV2_AWS_20"),
            tags=["aws", "network", "encryption"],
        ),
        ResourceValidationPolicy(
            name="alb-request-hygiene",
            description="Application Load Balancers must drop invalid header fields and keep HTTP desync "
            "mitigation at 'defensive' or 'strictest'.",
            validate=_on_types(
                rules.LOAD_BALANCER_TYPES, lambda a: rules.check_alb_request_hygiene(a.resource_type, a.props)
            ),
            enforcement_level=EnforcementLevel.MANDATORY,
            severity=Severity.MEDIUM,
            framework=_framework("AWS Security Hub", "ELB.4; ELB.12; Checkov CKV_AWS_131; CKV_AWS_328"),
            tags=["aws", "network"],
        ),
    ]


def _fleet_policies() -> list[Policy]:
    """The ECS fleet: its task's credentials, and who may reach its instances and tasks."""
    return [
        ResourceValidationPolicy(
            name="ecs-secrets-by-reference",
            description="ECS task definitions take credentials through `secrets` (SSM parameter or Secrets "
            "Manager ARNs), never as plain `environment` values.",
            validate=_on_types(frozenset({rules.ECS_TASK_DEFINITION}), lambda a: rules.check_ecs_task_secrets(a.props)),
            enforcement_level=EnforcementLevel.MANDATORY,
            severity=Severity.HIGH,
            framework=_framework("AWS Security Hub", "ECS.8; CWE-312"),
            tags=["secrets", "aws"],
        ),
        StackValidationPolicy(
            name="fleet-ingress-from-load-balancer-only",
            description="Ingress into the fleet's instance and task security groups must come from a "
            "security group (the load balancer's), never from an address range.",
            validate=_reporting(rules.check_fleet_ingress),
            enforcement_level=EnforcementLevel.MANDATORY,
            severity=Severity.HIGH,
            framework=_framework("AWS Well-Architected", "SEC05-BP02"),
            tags=["aws", "network"],
        ),
        StackValidationPolicy(
            name="s3-bucket-private",
            description="S3 buckets (the fleet's model copy) must block public access with all four "
            "settings, deny requests without TLS in their bucket policy, and grant no public ACL.",
            validate=_reporting(rules.check_s3_buckets_private),
            enforcement_level=EnforcementLevel.MANDATORY,
            severity=Severity.HIGH,
            framework=_framework("AWS Security Hub", "S3.1; S3.5; S3.8; Checkov CKV2_AWS_6"),
            tags=["aws", "storage", "encryption"],
        ),
    ]


def _network_policies() -> list[Policy]:
    """Who may reach the host: ingress rules and public addresses."""
    return [
        ResourceValidationPolicy(
            name="no-ssh-from-internet",
            description="Security groups must not open SSH (port 22) to 0.0.0.0/0 or ::/0 without the "
            "product's explicit opt-in.",
            validate=_on_types(
                INGRESS_TYPES,
                lambda a: rules.check_ssh_ingress(
                    a.resource_type, a.props, str(_config(a, "optInMarker", rules.SSH_OPT_IN_MARKER))
                ),
            ),
            enforcement_level=EnforcementLevel.MANDATORY,
            severity=Severity.CRITICAL,
            framework=_framework("Checkov", "CKV_AWS_24; AWS Security Hub EC2.13"),
            config_schema=PolicyConfigSchema(
                properties={"optInMarker": {"type": "string", "default": rules.SSH_OPT_IN_MARKER}}
            ),
            tags=["network", "aws"],
        ),
        ResourceValidationPolicy(
            name="no-api-from-internet",
            description="Security groups must not open any non-SSH port (the API) to 0.0.0.0/0 or ::/0 "
            "without the product's explicit opt-in.",
            validate=_on_types(
                INGRESS_TYPES,
                lambda a: rules.check_api_ingress(
                    a.resource_type, a.props, str(_config(a, "optInMarker", rules.API_OPT_IN_MARKER))
                ),
            ),
            enforcement_level=EnforcementLevel.MANDATORY,
            severity=Severity.HIGH,
            framework=_framework("AWS Security Hub", "EC2.18; EC2.19; Checkov CKV_AWS_260-style"),
            config_schema=PolicyConfigSchema(
                properties={"optInMarker": {"type": "string", "default": rules.API_OPT_IN_MARKER}}
            ),
            tags=["network", "aws"],
        ),
        ResourceValidationPolicy(
            name="no-ephemeral-public-ip",
            description="Instances should not get an auto-assigned public IP (use an Elastic IP when "
            "they must be reachable); launch-template network interfaces must say associatePublicIpAddress=false.",
            validate=_on_types(COMPUTE_TYPES, lambda a: rules.check_ephemeral_public_ip(a.resource_type, a.props)),
            # The exposure itself is what the ingress policies block; this only flags hygiene.
            enforcement_level=EnforcementLevel.ADVISORY,
            severity=Severity.LOW,
            framework=_framework("Checkov", "CKV_AWS_88; AWS Security Hub EC2.25"),
            tags=["aws", "network"],
        ),
    ]


def _instance_policies() -> list[Policy]:
    """The VM itself: metadata service, disks, monitoring."""
    return [
        ResourceValidationPolicy(
            name="imdsv2-required",
            description="Instances and launch templates must require IMDSv2 tokens with a PUT hop limit "
            "of 1 (or disable the metadata endpoint).",
            validate=_on_types(
                COMPUTE_TYPES,
                lambda a: rules.check_imdsv2(a.props, int(_config(a, "maxHopLimit", rules.DEFAULT_MAX_HOP_LIMIT))),
            ),
            enforcement_level=EnforcementLevel.MANDATORY,
            severity=Severity.HIGH,
            framework=_framework("Checkov", "CKV_AWS_79; AWS Security Hub EC2.8"),
            config_schema=PolicyConfigSchema(
                properties={"maxHopLimit": {"type": "integer", "minimum": 1, "default": rules.DEFAULT_MAX_HOP_LIMIT}}
            ),
            tags=["aws", "credentials"],
        ),
        ResourceValidationPolicy(
            name="ebs-encrypted",
            description="Instance root and EBS block devices, launch-template EBS mappings and EBS "
            "volumes must be encrypted.",
            validate=_on_types(STORAGE_TYPES, lambda a: rules.check_ebs_encryption(a.resource_type, a.props)),
            enforcement_level=EnforcementLevel.MANDATORY,
            severity=Severity.HIGH,
            framework=_framework("Checkov", "CKV_AWS_8; CKV_AWS_3; AWS Security Hub EC2.3"),
            tags=["aws", "encryption"],
        ),
        ResourceValidationPolicy(
            name="detailed-monitoring",
            description="Instances should have detailed (1-minute) CloudWatch monitoring.",
            validate=_on_types(COMPUTE_TYPES, lambda a: rules.check_detailed_monitoring(a.resource_type, a.props)),
            # Observability, not a security boundary: warn, do not block other teams' deploys.
            enforcement_level=EnforcementLevel.ADVISORY,
            severity=Severity.LOW,
            framework=_framework("Checkov", "CKV_AWS_126"),
            tags=["aws", "observability"],
        ),
        ResourceValidationPolicy(
            name="log-retention",
            description="CloudWatch Logs groups should set a retention period (unset keeps events forever).",
            validate=_on_types(frozenset({rules.LOG_GROUP}),
                               lambda a: rules.check_log_retention(a.resource_type, a.props)),
            # Cost and data minimisation, not a security boundary: warn, like detailed-monitoring.
            enforcement_level=EnforcementLevel.ADVISORY,
            severity=Severity.LOW,
            framework=_framework("Checkov", "CKV_AWS_66"),
            tags=["aws", "observability"],
        ),
        ResourceValidationPolicy(
            name="sns-encrypted",
            description="SNS topics must be encrypted at rest with a KMS key.",
            validate=_on_types(frozenset({rules.SNS_TOPIC}),
                               lambda a: rules.check_sns_encrypted(a.resource_type, a.props)),
            enforcement_level=EnforcementLevel.MANDATORY,
            severity=Severity.MEDIUM,
            framework=_framework("Checkov", "CKV_AWS_26"),
            tags=["aws", "encryption"],
        ),
        ResourceValidationPolicy(
            name="kms-key-rotation",
            description="Customer managed KMS keys should rotate their key material.",
            validate=_on_types(frozenset({rules.KMS_KEY}),
                               lambda a: rules.check_kms_key_rotation(a.resource_type, a.props)),
            enforcement_level=EnforcementLevel.ADVISORY,
            severity=Severity.LOW,
            framework=_framework("Checkov", "CKV_AWS_7"),
            tags=["aws", "encryption"],
        ),
    ]


def _secret_policies() -> list[Policy]:
    """Credentials: never in plaintext, always Pulumi secrets, long enough."""
    return [
        ResourceValidationPolicy(
            name="no-plaintext-credentials",
            description="Private keys, Hugging Face tokens and API keys must not appear in user data, "
            "command lines or any input that is not a credential field.",
            validate=lambda a, report: _report_all(
                report,
                rules.check_plaintext_credentials(
                    a.resource_type,
                    a.props,
                    _secret_outputs(a),
                    bool(_config(a, "allowSshHostKeyInUserData", False)),
                ),
            ),
            enforcement_level=EnforcementLevel.MANDATORY,
            severity=Severity.CRITICAL,
            framework=_framework("Checkov", "CKV_AWS_46; CWE-312"),
            config_schema=PolicyConfigSchema(
                properties={"allowSshHostKeyInUserData": {"type": "boolean", "default": False}}
            ),
            tags=["secrets"],
        ),
        ResourceValidationPolicy(
            name="credentials-as-secrets",
            description="Credential inputs (VLLM_API_KEY/HF_TOKEN/... container env vars, SSH private "
            "keys and passwords) are stored as Pulumi secrets.",
            # pulumi-policy shows a policy which values are secrets only on the remediation path, so
            # this policy enforces by encrypting: it wraps every non-secret credential in `Secret`.
            remediate=cast(ResourceRemediation, _remediate_credentials),
            enforcement_level=EnforcementLevel.REMEDIATE,
            severity=Severity.HIGH,
            framework=_framework("CWE", "CWE-312"),
            tags=["secrets"],
        ),
        ResourceValidationPolicy(
            name="api-key-length",
            description="The random API key (a RandomPassword/RandomString named like 'api-key') must "
            "be at least 32 characters.",
            validate=_on_types(
                API_KEY_TYPES,
                lambda a: rules.check_api_key_length(
                    a.name,
                    a.props,
                    int(_config(a, "minimumLength", rules.DEFAULT_API_KEY_MIN_LENGTH)),
                    str(_config(a, "nameContains", rules.DEFAULT_API_KEY_NAME_MARKER)),
                ),
            ),
            enforcement_level=EnforcementLevel.MANDATORY,
            severity=Severity.HIGH,
            framework=_framework("CWE", "CWE-521; CWE-331"),
            config_schema=PolicyConfigSchema(
                properties={
                    "minimumLength": {
                        "type": "integer",
                        "minimum": 16,
                        "default": rules.DEFAULT_API_KEY_MIN_LENGTH,
                    },
                    "nameContains": {"type": "string", "default": rules.DEFAULT_API_KEY_NAME_MARKER},
                }
            ),
            tags=["secrets"],
        ),
    ]


def _deployment_policies() -> list[Policy]:
    """What runs on the host: the cache volume, the image, the SSH connection, the containers."""
    return [
        ResourceValidationPolicy(
            name="cache-volume-protected",
            description=f"The EBS volume tagged {rules.CACHE_ROLE_TAG}={rules.CACHE_ROLE_VALUE} must survive "
            f"`pulumi destroy`: retain_on_delete=True, stated by the tag {rules.ON_DESTROY_TAG}="
            f"{rules.ON_DESTROY_RETAIN}, or protect=True.",
            validate=_on_types(
                frozenset({rules.EBS_VOLUME}),
                lambda a: rules.check_cache_volume_protected(a.props, bool(a.opts.protect)),
            ),
            enforcement_level=EnforcementLevel.MANDATORY,
            severity=Severity.MEDIUM,
            tags=["data-loss"],
        ),
        StackValidationPolicy(
            name="vllm-image-floor",
            description="vLLM images and containers must be pinned to a release at or above the "
            f"security floor (v{rules.VLLM_SECURITY_FLOOR}), unless explicitly opted in behind the proxy.",
            validate=_validate_vllm_images,
            enforcement_level=EnforcementLevel.MANDATORY,
            severity=Severity.CRITICAL,
            framework=_framework("CVE", "; ".join(rules.VLLM_FLOOR_ADVISORY_IDS)),
            config_schema=PolicyConfigSchema(
                properties={"minimumVersion": {"type": "string", "default": rules.VLLM_SECURITY_FLOOR}}
            ),
            tags=["supply-chain", "docker"],
        ),
        ResourceValidationPolicy(
            name="ssh-host-key-verified",
            description="SSH connections that deploy to the host (docker provider sshOpts, "
            "pulumi-command connections) must verify the host key.",
            validate=lambda a, report: _report_all(report, _ssh_host_key_check(a)),
            enforcement_level=EnforcementLevel.MANDATORY,
            severity=Severity.HIGH,
            framework=_framework("CWE", "CWE-322"),
            tags=["ssh", "docker"],
        ),
        ResourceValidationPolicy(
            name="container-isolation",
            description="Containers must not run privileged or mount the Docker socket.",
            validate=_on_types(frozenset({rules.CONTAINER}), lambda a: rules.check_container_isolation(a.props)),
            enforcement_level=EnforcementLevel.MANDATORY,
            severity=Severity.CRITICAL,
            framework=_framework("CIS Docker Benchmark", "5.4; 5.31"),
            tags=["docker"],
        ),
    ]


def build_policies() -> list[Policy]:
    return [
        *_network_policies(),
        *_load_balancer_policies(),
        *_fleet_policies(),
        *_instance_policies(),
        *_secret_policies(),
        *_deployment_policies(),
    ]
