"""The policy pack in policy/: every policy, with a passing and a violating resource.

The Pulumi CLI cannot run here, so each resource is handed to the policy the way pulumi-policy 1.21.0's
analyzer servicer does it (policy.py `Analyze`/`AnalyzeStack`/`Remediate`): the properties travel as a
protobuf Struct (numbers become floats, secrets carry the engine's secret signature), are turned back
with `json_format.MessageToDict` + `deserialize_properties` (secrets kept as `Secret` only on the
remediation path) and wrapped in `unknown_checking_proxy`, then the policy's own `validate`/`remediate`
callback runs. The last test starts `policy/__main__.py` as the CLI would and talks gRPC to it.
"""

from __future__ import annotations

import base64
import gzip
import json
import select
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime import proto
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Secret,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import (
    SPECIAL_SECRET_SIG,
    SPECIAL_SIG_KEY,
    deserialize_properties,
    serialize_properties,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

POLICY_DIR = Path(__file__).resolve().parents[3] / "policy"
# The CLI runs the pack as `python policy/`, which puts policy/ first on sys.path; do the same.
if str(POLICY_DIR) not in sys.path:
    sys.path.insert(0, str(POLICY_DIR))

import policies  # noqa: E402
import rules  # noqa: E402

POLICIES = {p.name: p for p in policies.build_policies()}

PEM_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
HF_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKz0b3VyLWhvc3Qta2V5LWZvci10ZXN0cw"
SSH_OPT_IN = "SSH from anywhere (opt-in: dangerouslyAllowSshFromInternet)"
API_OPT_IN = "vLLM API from anywhere (opt-in: dangerouslyAllowApiFromInternet)"


def secret(value: Any) -> dict[str, Any]:
    """A value as the engine marshals a secret (MarshalOptions KeepSecrets: true)."""
    return {SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG, "value": value}


def _over_the_wire(props: Mapping[str, Any]) -> dict[str, Any]:
    struct = struct_pb2.Struct()
    struct.update(props)
    return json_format.MessageToDict(struct)


def analyze_props(props: Mapping[str, Any]) -> Any:
    """What `Analyze`/`AnalyzeStack` hand a validate callback: secrets unwrapped, unknowns guarded."""
    return unknown_checking_proxy(deserialize_properties(_over_the_wire(props)))


def remediate_props(props: Mapping[str, Any]) -> Any:
    """What `Remediate` hands a remediation: the same, but secrets kept as `Secret` underneath."""
    return unknown_checking_proxy(deserialize_properties(_over_the_wire(props), True))


def options(protect: bool = False, secret_outputs: tuple[str, ...] = ()) -> PolicyResourceOptions:
    return PolicyResourceOptions(protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), list(secret_outputs), None)


def docker_ssh_opts(*opts: str) -> str:
    """sshOpts as pulumi-docker 5.2.0's Provider sends it: JSON-encoded (`pulumi.runtime.to_json`)."""
    return json.dumps(list(opts))


def urn(resource_type: str, name: str) -> str:
    return f"urn:pulumi:dev::vllm-endpoint::{resource_type}::{name}"


def docker_provider(name: str, ssh_opts: str) -> PolicyProviderResource:
    props = {"host": "ssh://ubuntu@203.0.113.10", "sshOpts": ssh_opts}
    return PolicyProviderResource(rules.DOCKER_PROVIDER, analyze_props(props), urn(rules.DOCKER_PROVIDER, name), name)


def resource_args(
    resource_type: str,
    props: Mapping[str, Any],
    *,
    name: str = "res",
    protect: bool = False,
    provider: PolicyProviderResource | None = None,
    config: Mapping[str, Any] | None = None,
    remediation: bool = False,
    secret_outputs: tuple[str, ...] = (),
) -> ResourceValidationArgs:
    wrapped = remediate_props(props) if remediation else analyze_props(props)
    return ResourceValidationArgs(
        resource_type,
        wrapped,
        urn(resource_type, name),
        name,
        options(protect, secret_outputs),
        provider,
        config,
        {},
    )


def validate_resource(policy_name: str, args: ResourceValidationArgs) -> list[str]:
    policy = POLICIES[policy_name]
    assert isinstance(policy, ResourceValidationPolicy)
    messages: list[str] = []

    def report(message: str, _urn: str | None = None) -> None:
        messages.append(message)

    assert policy.validate(args, report) is None
    return messages


# --------------------------------------------------------------------------------------------------
# Resource policies, table-driven: (policy, resource) -> no violation, or a violation naming `expect`.


@dataclass(frozen=True)
class Case:
    id: str
    policy: str
    resource_type: str
    props: dict[str, Any]
    expect: tuple[str, ...] = ()  # empty: must pass; otherwise every string appears in the messages
    name: str = "res"
    protect: bool = False
    provider: PolicyProviderResource | None = None
    config: dict[str, Any] | None = None
    absent: tuple[str, ...] = field(default=())  # must NOT appear in any message (e.g. the secret)
    secret_outputs: tuple[str, ...] = ()


def vpc_rule(cidr: str, from_port: int, to_port: int, protocol: str = "tcp", description: str = "") -> dict[str, Any]:
    key = "cidrIpv6" if ":" in cidr else "cidrIpv4"
    return {
        "securityGroupId": "sg-0123456789abcdef0",
        "ipProtocol": protocol,
        "fromPort": from_port,
        "toPort": to_port,
        key: cidr,
        "description": description,
    }


INSTANCE_OK: dict[str, Any] = {
    "ami": "ami-0abcdef1234567890",
    "instanceType": "g6.xlarge",
    "metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 1, "httpEndpoint": "enabled"},
    "rootBlockDevice": {"encrypted": True, "volumeSize": 100, "volumeType": "gp3"},
    "monitoring": True,
    # The product reaches the host at an Elastic IP, so no auto-assigned address.
    "associatePublicIpAddress": False,
    "userData": "#cloud-config\nruncmd:\n  - [nvidia-ctk, runtime, configure, --runtime=docker]\n",
}


def gzip_user_data(document: str) -> str:
    """`userDataBase64` as the program sends it: gzip + base64 (cloud-init inflates it)."""
    return base64.b64encode(gzip.compress(document.encode(), mtime=0)).decode()


CLOUD_CONFIG_HOST_KEY = (
    "#cloud-config\nssh_deletekeys: true\nssh_keys:\n  ed25519_private: |\n    "
    + PEM_KEY.rstrip("\n").replace("\n", "\n    ")
    + "\n  ed25519_public: "
    + HOST_KEY
    + "\n"
)


def instance(**changes: Any) -> dict[str, Any]:
    props = dict(INSTANCE_OK)
    for key, value in changes.items():
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    return props


VLLM_CONTAINER: dict[str, Any] = {
    "name": "vllm",
    "image": "sha256:4f1c0e7a5d9b",
    "envs": [
        secret("VLLM_API_KEY=" + "k" * 48),
        secret(f"HF_TOKEN={HF_TOKEN}"),
        "HF_HOME=/root/.cache/huggingface",
    ],
    "command": ["--model", "Qwen/Qwen2.5-1.5B-Instruct", "--max-model-len", "8192"],
    "ipcMode": "host",
    "mounts": [{"target": "/root/.cache", "source": "/opt/vllm-endpoint/cache", "type": "bind"}],
    "labels": [{"label": "vllm-endpoint:vllm-version", "value": "0.32.0"}],
}


def container(**changes: Any) -> dict[str, Any]:
    props = dict(VLLM_CONTAINER)
    props.update(changes)
    return props


# A launch template as the product's VllmFleet writes it (booleans as strings, as the provider takes them).
LAUNCH_TEMPLATE_OK: dict[str, Any] = {
    "imageId": "ami-0abcdef1234567890",
    "metadataOptions": {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1},
    "monitoring": {"enabled": True},
    "networkInterfaces": [{"deviceIndex": 0, "associatePublicIpAddress": "false", "securityGroups": ["sg-1"]}],
    "blockDeviceMappings": [
        {"deviceName": "/dev/xvda", "ebs": {"encrypted": "true", "volumeSize": 100, "volumeType": "gp3"}},
        {"deviceName": "/dev/xvdb", "ebs": {"encrypted": "true", "volumeSize": 100, "kmsKeyId": "arn:aws:kms:x"}},
    ],
}


def launch_template(**changes: Any) -> dict[str, Any]:
    props = json.loads(json.dumps(LAUNCH_TEMPLATE_OK))
    props.update(changes)
    return props


LISTENER = "aws:lb/listener:Listener"
ALB = "aws:lb/loadBalancer:LoadBalancer"
ALB_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/svc/0123456789abcdef"
CERT_ARN = "arn:aws:acm:us-east-1:123456789012:certificate/0123abcd-0000-4000-8000-0123456789ab"
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
NOT_FOUND = {"type": "fixed-response", "fixedResponse": {"statusCode": "404", "contentType": "text/plain"}}
REDIRECT = {"type": "redirect", "redirect": {"protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"}}


def listener(port: int, protocol: str, actions: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"loadBalancerArn": ALB_ARN, "port": port, "protocol": protocol,
            "defaultActions": actions or [NOT_FOUND], **extra}


HTTPS_LISTENER = listener(443, "HTTPS", sslPolicy=TLS_POLICY, certificateArn=CERT_ARN)
ALB_OK: dict[str, Any] = {"loadBalancerType": "application", "dropInvalidHeaderFields": True,
                          "desyncMitigationMode": "strictest", "internal": False}
SSM_ARN = "arn:aws:ssm:us-east-1:123456789012:parameter/vllm-endpoint/dev/api-key"
SECRETS_MANAGER_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:vllm/hf-token-AbCdEf"


def task_definition(environment: list[dict[str, str]] | None = None,
                    secrets: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """An ECS task definition; containerDefinitions is a JSON text, as the provider takes it."""
    vllm = {
        "name": "vllm",
        "image": "vllm/vllm-openai:v0.32.0",
        "environment": environment if environment is not None else [{"name": "HF_HOME", "value": "/root/.cache/hf"}],
        "secrets": secrets if secrets is not None else [
            {"name": "VLLM_API_KEY", "valueFrom": SSM_ARN},
            {"name": "HF_TOKEN", "valueFrom": SECRETS_MANAGER_ARN},
        ],
    }
    return {"family": "vllm", "networkMode": "awsvpc", "containerDefinitions": json.dumps([vllm])}


CASES = [
    # 1. no-ssh-from-internet
    Case(
        "ssh-from-admin-cidr",
        "no-ssh-from-internet",
        rules.VPC_INGRESS_RULE,
        vpc_rule("203.0.113.7/32", 22, 22),
    ),
    Case(
        "ssh-world-opted-in",
        "no-ssh-from-internet",
        rules.VPC_INGRESS_RULE,
        vpc_rule("0.0.0.0/0", 22, 22, description=SSH_OPT_IN),
    ),
    Case(
        "ssh-world-v4",
        "no-ssh-from-internet",
        rules.VPC_INGRESS_RULE,
        vpc_rule("0.0.0.0/0", 22, 22),
        (
            "this rule opens SSH (tcp port 22) to 0.0.0.0/0",
            "dangerouslyAllowSshFromInternet",
            "CKV_AWS_24",
            "EC2.13",
        ),
    ),
    Case(
        "ssh-world-v6",
        "no-ssh-from-internet",
        rules.VPC_INGRESS_RULE,
        vpc_rule("::/0", 22, 22),
        ("opens SSH (tcp port 22) to ::/0",),
    ),
    Case(
        "ssh-world-api-marker-is-not-ssh-opt-in",
        "no-ssh-from-internet",
        rules.VPC_INGRESS_RULE,
        vpc_rule("0.0.0.0/0", 22, 22, description=API_OPT_IN),
        ("opens SSH",),
    ),
    Case(
        "ssh-world-all-protocols",
        "no-ssh-from-internet",
        rules.VPC_INGRESS_RULE,
        vpc_rule("0.0.0.0/0", -1, -1, protocol="-1"),
        ("opens SSH (all protocols and ports)",),
    ),
    Case(
        "ssh-legacy-inline-range",
        "no-ssh-from-internet",
        rules.SECURITY_GROUP,
        {"ingress": [{"protocol": "tcp", "fromPort": 0, "toPort": 65535, "cidrBlocks": ["0.0.0.0/0"]}]},
        ("inline ingress[0] opens SSH (tcp ports 0-65535)",),
    ),
    Case(
        "ssh-legacy-inline-admin",
        "no-ssh-from-internet",
        rules.SECURITY_GROUP,
        {"ingress": [{"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["10.0.0.0/8"]}]},
    ),
    Case(
        "ssh-legacy-rule-v6",
        "no-ssh-from-internet",
        rules.SECURITY_GROUP_RULE,
        {
            "type": "ingress",
            "protocol": "-1",
            "fromPort": 0,
            "toPort": 0,
            "ipv6CidrBlocks": ["::/0"],
            "securityGroupId": "sg-1",
        },
        ("opens SSH", "::/0"),
    ),
    Case(
        "ssh-legacy-rule-egress",
        "no-ssh-from-internet",
        rules.SECURITY_GROUP_RULE,
        {
            "type": "egress",
            "protocol": "-1",
            "fromPort": 0,
            "toPort": 0,
            "cidrBlocks": ["0.0.0.0/0"],
            "securityGroupId": "sg-1",
        },
    ),
    # 2. no-api-from-internet
    Case(
        "api-from-client-cidr",
        "no-api-from-internet",
        rules.VPC_INGRESS_RULE,
        vpc_rule("198.51.100.0/24", 30005, 30005),
    ),
    Case(
        "api-world-opted-in",
        "no-api-from-internet",
        rules.VPC_INGRESS_RULE,
        vpc_rule("0.0.0.0/0", 30005, 30005, description=API_OPT_IN),
    ),
    Case(
        "api-world",
        "no-api-from-internet",
        rules.VPC_INGRESS_RULE,
        vpc_rule("0.0.0.0/0", 30005, 30005),
        ("opens tcp port 30005 to 0.0.0.0/0", "dangerouslyAllowApiFromInternet", "EC2.18", "EC2.19"),
    ),
    Case("api-world-is-not-ssh", "no-api-from-internet", rules.VPC_INGRESS_RULE, vpc_rule("0.0.0.0/0", 22, 22)),
    Case(
        "api-world-udp-22",
        "no-api-from-internet",
        rules.VPC_INGRESS_RULE,
        vpc_rule("0.0.0.0/0", 22, 22, protocol="udp"),
        ("opens udp port 22",),
    ),
    Case("api-world-icmp", "no-api-from-internet", rules.VPC_INGRESS_RULE, vpc_rule("0.0.0.0/0", 8, 0, "icmp")),
    Case(
        "api-legacy-inline-v6",
        "no-api-from-internet",
        rules.SECURITY_GROUP,
        {
            "ingress": [
                {
                    "protocol": "tcp",
                    "fromPort": 443,
                    "toPort": 443,
                    "cidrBlocks": [],
                    "ipv6CidrBlocks": ["::/0"],
                    "description": "https",
                }
            ]
        },
        ("inline ingress[0] opens tcp port 443 to ::/0",),
    ),
    Case(
        "api-world-all-protocols",
        "no-api-from-internet",
        rules.VPC_INGRESS_RULE,
        vpc_rule("0.0.0.0/0", -1, -1, protocol="-1"),
        ("opens all protocols and ports",),
    ),
    # 3. imdsv2-required
    Case("imds-v2-hop-1", "imdsv2-required", rules.INSTANCE, instance()),
    Case(
        "imds-endpoint-disabled",
        "imdsv2-required",
        rules.INSTANCE,
        instance(metadataOptions={"httpEndpoint": "disabled", "httpTokens": "optional"}),
    ),
    Case(
        "imds-missing",
        "imdsv2-required",
        rules.INSTANCE,
        instance(metadataOptions=None),
        ("metadataOptions is not set", "CKV_AWS_79", "EC2.8"),
    ),
    Case(
        "imds-v1-allowed",
        "imdsv2-required",
        rules.INSTANCE,
        instance(metadataOptions={"httpTokens": "optional", "httpPutResponseHopLimit": 1}),
        ("httpTokens is 'optional'",),
    ),
    Case(
        "imds-hop-2",
        "imdsv2-required",
        rules.INSTANCE,
        instance(metadataOptions={"httpTokens": "required", "httpPutResponseHopLimit": 2}),
        ("httpPutResponseHopLimit is 2",),
    ),
    Case(
        "imds-hop-unset",
        "imdsv2-required",
        rules.INSTANCE,
        instance(metadataOptions={"httpTokens": "required"}),
        ("httpPutResponseHopLimit is unset",),
    ),
    Case(
        "imds-hop-2-allowed-by-config",
        "imdsv2-required",
        rules.INSTANCE,
        instance(metadataOptions={"httpTokens": "required", "httpPutResponseHopLimit": 2}),
        config={"maxHopLimit": 2},
    ),
    Case(
        "imds-launch-template",
        "imdsv2-required",
        rules.LAUNCH_TEMPLATE,
        {"metadataOptions": {"httpTokens": "optional", "httpPutResponseHopLimit": 1}},
        ("httpTokens",),
    ),
    Case("imds-launch-template-as-the-fleet-writes-it", "imdsv2-required", rules.LAUNCH_TEMPLATE, launch_template()),
    Case(
        "imds-launch-template-hop-2",
        "imdsv2-required",
        rules.LAUNCH_TEMPLATE,
        launch_template(metadataOptions={"httpTokens": "required", "httpPutResponseHopLimit": 2}),
        ("httpPutResponseHopLimit is 2", "CKV_AWS_79"),
    ),
    Case(
        "imds-launch-template-unset",
        "imdsv2-required",
        rules.LAUNCH_TEMPLATE,
        launch_template(metadataOptions=None),
        ("metadataOptions is not set",),
    ),
    # 4. ebs-encrypted
    Case(
        "ebs-instance-encrypted",
        "ebs-encrypted",
        rules.INSTANCE,
        instance(ebsBlockDevices=[{"deviceName": "/dev/sdf", "encrypted": True, "volumeSize": 200}]),
    ),
    Case(
        "ebs-root-unencrypted",
        "ebs-encrypted",
        rules.INSTANCE,
        instance(rootBlockDevice={"encrypted": False, "volumeSize": 100}),
        ("rootBlockDevice.encrypted is not true", "CKV_AWS_8"),
    ),
    Case(
        "ebs-root-missing",
        "ebs-encrypted",
        rules.INSTANCE,
        instance(rootBlockDevice=None),
        ("rootBlockDevice.encrypted is not true",),
    ),
    Case(
        "ebs-extra-device-unencrypted",
        "ebs-encrypted",
        rules.INSTANCE,
        instance(
            ebsBlockDevices=[
                {"deviceName": "/dev/sdf", "encrypted": True},
                {"deviceName": "/dev/sdg", "volumeSize": 50},
            ]
        ),
        ("ebsBlockDevices[1] (/dev/sdg) is not encrypted",),
    ),
    Case(
        "ebs-volume-encrypted",
        "ebs-encrypted",
        rules.EBS_VOLUME,
        {
            "availabilityZone": "us-east-1a",
            "size": 200,
            "encrypted": True,
            "kmsKeyId": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        },
    ),
    Case(
        "ebs-volume-plain",
        "ebs-encrypted",
        rules.EBS_VOLUME,
        {"availabilityZone": "us-east-1a", "size": 200},
        ("volume is not encrypted", "CKV_AWS_3"),
    ),
    Case(
        "ebs-launch-template-string-true",
        "ebs-encrypted",
        rules.LAUNCH_TEMPLATE,
        {"blockDeviceMappings": [{"deviceName": "/dev/sda1", "ebs": {"encrypted": "true"}}]},
    ),
    Case(
        "ebs-launch-template-string-false",
        "ebs-encrypted",
        rules.LAUNCH_TEMPLATE,
        {"blockDeviceMappings": [{"deviceName": "/dev/sda1", "ebs": {"encrypted": "false"}}]},
        ("blockDeviceMappings[0].ebs.encrypted",),
    ),
    Case("ebs-launch-template-as-the-fleet-writes-it", "ebs-encrypted", rules.LAUNCH_TEMPLATE, launch_template()),
    Case(
        "ebs-launch-template-cache-unencrypted",
        "ebs-encrypted",
        rules.LAUNCH_TEMPLATE,
        launch_template(blockDeviceMappings=[
            LAUNCH_TEMPLATE_OK["blockDeviceMappings"][0], {"deviceName": "/dev/xvdb", "ebs": {"volumeSize": 100}}]),
        ("blockDeviceMappings[1].ebs.encrypted is not 'true'", "CKV_AWS_8"),
    ),
    # A cache volume from a warm-cache snapshot takes the snapshot's encryption (EC2 refuses a value with it).
    Case(
        "ebs-launch-template-cache-from-a-snapshot",
        "ebs-encrypted",
        rules.LAUNCH_TEMPLATE,
        launch_template(blockDeviceMappings=[
            LAUNCH_TEMPLATE_OK["blockDeviceMappings"][0],
            {"deviceName": "/dev/xvdf", "ebs": {"snapshotId": "snap-0123456789abcdef0", "volumeSize": 100}}]),
    ),
    # 5. detailed-monitoring
    Case("monitoring-on", "detailed-monitoring", rules.INSTANCE, instance()),
    Case(
        "monitoring-off",
        "detailed-monitoring",
        rules.INSTANCE,
        instance(monitoring=False),
        ("Set monitoring=True", "CKV_AWS_126"),
    ),
    Case("monitoring-unset", "detailed-monitoring", rules.INSTANCE, instance(monitoring=None), ("CKV_AWS_126",)),
    # 5b. log-retention (CKV_AWS_66, advisory)
    Case("log-group-30-days", "log-retention", rules.LOG_GROUP, {"name": "/vllm-endpoint/dev/access",
                                                                 "retentionInDays": 30}),
    Case("log-group-forever", "log-retention", rules.LOG_GROUP, {"name": "/x"}, ("Set retentionInDays", "CKV_AWS_66")),
    Case("log-group-zero", "log-retention", rules.LOG_GROUP, {"name": "/x", "retentionInDays": 0}, ("CKV_AWS_66",)),
    # 5c. sns-encrypted (CKV_AWS_26) and kms-key-rotation (CKV_AWS_7, advisory)
    Case("topic-with-key", "sns-encrypted", rules.SNS_TOPIC, {"kmsMasterKeyId": "arn:aws:kms:us-east-1:1:key/x"}),
    Case("topic-without-key", "sns-encrypted", rules.SNS_TOPIC, {"name": "alarms"}, ("kmsMasterKeyId", "CKV_AWS_26")),
    Case("topic-empty-key", "sns-encrypted", rules.SNS_TOPIC, {"kmsMasterKeyId": " "}, ("CKV_AWS_26",)),
    Case("key-rotating", "kms-key-rotation", rules.KMS_KEY, {"enableKeyRotation": True}),
    Case("key-not-rotating", "kms-key-rotation", rules.KMS_KEY, {"description": "x"}, ("CKV_AWS_7",)),
    # 6. no-ephemeral-public-ip (CKV_AWS_88, advisory)
    Case("public-ip-via-eip-only", "no-ephemeral-public-ip", rules.INSTANCE, instance()),
    Case(
        "public-ip-auto-assigned",
        "no-ephemeral-public-ip",
        rules.INSTANCE,
        instance(associatePublicIpAddress=True),
        ("associatePublicIpAddress is true", "Elastic IP", "CKV_AWS_88"),
    ),
    Case(
        "public-ip-launch-template",
        "no-ephemeral-public-ip",
        rules.LAUNCH_TEMPLATE,
        {"networkInterfaces": [{"deviceIndex": 0, "associatePublicIpAddress": "true"}]},
        ("networkInterfaces[0].associatePublicIpAddress is true", "EC2.25"),
    ),
    Case("public-ip-launch-template-false", "no-ephemeral-public-ip", rules.LAUNCH_TEMPLATE, launch_template()),
    Case(
        "public-ip-launch-template-unset",
        "no-ephemeral-public-ip",
        rules.LAUNCH_TEMPLATE,
        launch_template(networkInterfaces=[{"deviceIndex": 0, "securityGroups": ["sg-1"]}]),
        ("networkInterfaces[0].associatePublicIpAddress is not set", "associatePublicIpAddress='false'"),
    ),
    Case(
        "public-ip-launch-template-bool-false",
        "no-ephemeral-public-ip",
        rules.LAUNCH_TEMPLATE,
        launch_template(networkInterfaces=[{"deviceIndex": 0, "associatePublicIpAddress": False}]),
    ),
    # 6. no-plaintext-credentials
    Case("creds-container-secret-envs", "no-plaintext-credentials", rules.CONTAINER, container()),
    Case(
        "creds-user-data-fetches-at-boot",
        "no-plaintext-credentials",
        rules.INSTANCE,
        instance(
            userData='#!/bin/sh\nHF_TOKEN="$(aws ssm get-parameter --name /vllm/hf --with-decryption)"\n'
            "export VLLM_API_KEY=${VLLM_API_KEY}\n"
        ),
    ),
    Case(
        "creds-user-data-api-key",
        "no-plaintext-credentials",
        rules.INSTANCE,
        instance(userData="#!/bin/sh\necho VLLM_API_KEY=s3cr3t-value-123 > /etc/vllm.env\n"),
        ("userData contains an inline VLLM_API_KEY value", "CKV_AWS_46"),
        absent=("s3cr3t-value-123",),
    ),
    Case(
        "creds-user-data-host-key",
        "no-plaintext-credentials",
        rules.INSTANCE,
        instance(userData="#cloud-config\nssh_keys:\n  ed25519_private: |\n    " + PEM_KEY.replace("\n", "\n    ")),
        ("userData contains private key material", "SSM Parameter Store"),
        absent=("b3BlbnNzaC1rZXkt",),
    ),
    Case(
        "creds-gzip-user-data-host-key",
        "no-plaintext-credentials",
        rules.INSTANCE,
        instance(userData=None, userDataBase64=secret(gzip_user_data(CLOUD_CONFIG_HOST_KEY))),
        (
            "userDataBase64 contains private key material",
            "cloud-init `ssh_keys` host key",
            "allowSshHostKeyInUserData: true",
            "CKV_AWS_46",
        ),
        absent=("b3BlbnNzaC1rZXkt",),
    ),
    Case(
        "creds-gzip-user-data-host-key-accepted",
        "no-plaintext-credentials",
        rules.INSTANCE,
        instance(userData=None, userDataBase64=secret(gzip_user_data(CLOUD_CONFIG_HOST_KEY))),
        config={"allowSshHostKeyInUserData": True},
    ),
    Case(
        # yaml.safe_dump (infra/render/userdata.py) writes the key as a single-quoted scalar.
        "creds-gzip-user-data-quoted-host-key-accepted",
        "no-plaintext-credentials",
        rules.INSTANCE,
        instance(
            userData=None,
            userDataBase64=gzip_user_data(
                "#cloud-config\nssh_keys:\n  ed25519_private: '" + PEM_KEY.replace("\n", "\n\n    ") + "'\n"
            ),
        ),
        config={"allowSshHostKeyInUserData": True},
    ),
    Case(
        "creds-host-key-opt-in-does-not-cover-api-key",
        "no-plaintext-credentials",
        rules.INSTANCE,
        instance(
            userData=None,
            userDataBase64=gzip_user_data(CLOUD_CONFIG_HOST_KEY + "runcmd:\n  - echo VLLM_API_KEY=abc123def > /x\n"),
        ),
        ("userDataBase64 contains an inline VLLM_API_KEY value",),
        config={"allowSshHostKeyInUserData": True},
    ),
    Case(
        "creds-host-key-opt-in-does-not-cover-other-keys",
        "no-plaintext-credentials",
        rules.INSTANCE,
        instance(
            userData="#cloud-config\nwrite_files:\n  - path: /root/.ssh/id_ed25519\n    content: |\n      "
            + PEM_KEY.replace("\n", "\n      ")
        ),
        ("userData contains private key material",),
        config={"allowSshHostKeyInUserData": True},
    ),
    Case(
        "creds-launch-template-base64",
        "no-plaintext-credentials",
        rules.LAUNCH_TEMPLATE,
        {"userData": base64.b64encode(f"#!/bin/sh\nexport HF_TOKEN={HF_TOKEN}\n".encode()).decode()},
        ("userData contains a Hugging Face token (hf_...), an inline HF_TOKEN value",),
        absent=(HF_TOKEN,),
    ),
    Case(
        "creds-token-in-tags",
        "no-plaintext-credentials",
        rules.INSTANCE,
        instance(tags={"Name": "vllm", "note": f"token {HF_TOKEN}"}),
        ("tags.note contains a Hugging Face token", "CWE-312"),
        absent=(HF_TOKEN,),
    ),
    Case(
        "creds-key-in-container-label",
        "no-plaintext-credentials",
        rules.CONTAINER,
        container(labels=[{"label": "debug", "value": PEM_KEY}]),
        ("labels[0].value contains private key material",),
    ),
    Case(
        "creds-token-in-odd-env-name",
        "no-plaintext-credentials",
        rules.CONTAINER,
        container(envs=[f"HUB_CREDS={HF_TOKEN}"]),
        ("envs[0] contains a Hugging Face token",),
    ),
    Case(
        "creds-api-key-flag",
        "no-plaintext-credentials",
        rules.CONTAINER,
        container(command=["--model", "m", "--api-key", "plain-key-value"]),
        ("command passes --api-key", "CWE-214"),
    ),
    Case(
        "creds-remote-command-connection-key",
        "no-plaintext-credentials",
        "command:remote:Command",
        {
            "connection": {
                "host": "203.0.113.10",
                "user": "ubuntu",
                "privateKey": secret(PEM_KEY),
                "hostKey": HOST_KEY,
            },
            "create": "sudo systemctl restart docker",
        },
    ),
    Case(
        # pulumi-command wraps `connection` in Output.secret and lists it in additionalSecretOutputs.
        "creds-connection-declared-secret",
        "no-plaintext-credentials",
        "command:remote:Command",
        {"connection": {"host": "203.0.113.10", "privateKey": PEM_KEY, "hostKey": HOST_KEY}, "create": "true"},
        secret_outputs=("connection",),
    ),
    Case(
        "creds-ssm-secure-string",
        "no-plaintext-credentials",
        rules.SSM_PARAMETER,
        {"name": "/vllm-endpoint/host-key", "type": "SecureString", "value": secret(PEM_KEY)},
        secret_outputs=("value", "valueWo"),
    ),
    Case(
        "creds-ssm-plain-string",
        "no-plaintext-credentials",
        rules.SSM_PARAMETER,
        {"name": "/vllm-endpoint/host-key", "type": "String", "value": secret(PEM_KEY)},
        ("SSM parameter holds private key material", "its type is 'String'", "SecureString"),
        secret_outputs=("value", "valueWo"),
    ),
    Case(
        "creds-remote-command-script-key",
        "no-plaintext-credentials",
        "command:remote:Command",
        {
            "connection": {"host": "203.0.113.10", "user": "ubuntu", "hostKey": HOST_KEY},
            "create": f"cat > /etc/ssh/ssh_host_ed25519_key <<'EOF'\n{PEM_KEY}EOF",
        },
        ("create contains private key material",),
    ),
    # 7. cache-volume-protected
    Case(
        "cache-protected",
        "cache-volume-protected",
        rules.EBS_VOLUME,
        {"size": 200, "encrypted": True, "tags": {"vllm-endpoint:role": "cache"}},
        protect=True,
    ),
    Case(
        "other-volume-unprotected",
        "cache-volume-protected",
        rules.EBS_VOLUME,
        {"size": 20, "encrypted": True, "tags": {"vllm-endpoint:role": "scratch"}},
    ),
    Case(
        # What the program creates: retain_on_delete (invisible to policies), stated by the tag.
        "cache-retained",
        "cache-volume-protected",
        rules.EBS_VOLUME,
        {"size": 200, "encrypted": True, "tags": {"vllm-endpoint:role": "cache", "vllm-endpoint:on-destroy": "retain"}},
    ),
    Case(
        "cache-unprotected",
        "cache-volume-protected",
        rules.EBS_VOLUME,
        {"size": 200, "encrypted": True, "tags": {"vllm-endpoint:role": "cache"}},
        ("neither protected nor marked retained", "retain_on_delete=True", "vllm-endpoint:on-destroy=retain",
         "protect=True", "issues 5, 11"),
    ),
    Case(
        "cache-on-destroy-delete",
        "cache-volume-protected",
        rules.EBS_VOLUME,
        {"size": 200, "encrypted": True, "tags": {"vllm-endpoint:role": "cache", "vllm-endpoint:on-destroy": "delete"}},
        ("neither protected nor marked retained",),
    ),
    # 9a. ssh-host-key-verified
    Case(
        "docker-provider-pinned",
        "ssh-host-key-verified",
        rules.DOCKER_PROVIDER,
        {
            "host": "ssh://ubuntu@203.0.113.10",
            "sshOpts": docker_ssh_opts(
                "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=/home/op/.vllm/known_hosts"
            ),
        },
    ),
    Case(
        # infra/render/ssh.py ssh_options(): its own known_hosts file, GlobalKnownHostsFile=/dev/null is fine.
        "docker-provider-as-the-program-sets-it",
        "ssh-host-key-verified",
        rules.DOCKER_PROVIDER,
        {
            "host": "ssh://ubuntu@203.0.113.10",
            "sshOpts": docker_ssh_opts(
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "UserKnownHostsFile=/tmp/vllm/known_hosts",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-i",
                "/tmp/vllm/id_ed25519",
                "-o",
                "ConnectTimeout=15",
                "-o",
                "ServerAliveInterval=30",
            ),
        },
    ),
    Case(
        "docker-provider-no-check",
        "ssh-host-key-verified",
        rules.DOCKER_PROVIDER,
        {"host": "ssh://ubuntu@203.0.113.10", "sshOpts": docker_ssh_opts("-o", "StrictHostKeyChecking=no")},
        ("StrictHostKeyChecking=no", "CWE-322"),
    ),
    Case(
        "docker-provider-dev-null",
        "ssh-host-key-verified",
        rules.DOCKER_PROVIDER,
        {"host": "ssh://ubuntu@203.0.113.10", "sshOpts": docker_ssh_opts("-oUserKnownHostsFile=/dev/null")},
        ("UserKnownHostsFile=/dev/null",),
    ),
    Case(
        "docker-provider-accept-new",
        "ssh-host-key-verified",
        rules.DOCKER_PROVIDER,
        {"host": "ssh://ubuntu@203.0.113.10", "sshOpts": ["-o StrictHostKeyChecking accept-new"]},
        ("StrictHostKeyChecking=accept-new",),
    ),
    Case(
        "container-on-bad-default-provider",
        "ssh-host-key-verified",
        rules.CONTAINER,
        container(),
        ("default docker provider", "StrictHostKeyChecking=no"),
        provider=docker_provider("default_5_2_0", docker_ssh_opts("-o", "StrictHostKeyChecking=no")),
    ),
    Case(
        "container-on-explicit-provider",
        "ssh-host-key-verified",
        rules.CONTAINER,
        container(),
        provider=docker_provider("gpu-host", docker_ssh_opts("-o", "StrictHostKeyChecking=no")),
    ),
    Case(
        "remote-command-host-key",
        "ssh-host-key-verified",
        "command:remote:Command",
        {"connection": {"host": "203.0.113.10", "user": "ubuntu", "hostKey": HOST_KEY}, "create": "true"},
    ),
    Case(
        "remote-command-no-host-key",
        "ssh-host-key-verified",
        "command:remote:Command",
        {"connection": {"host": "203.0.113.10", "user": "ubuntu"}, "create": "true"},
        ("connection.hostKey is not set",),
    ),
    Case(
        "remote-command-proxy-no-host-key",
        "ssh-host-key-verified",
        "command:remote:CopyToRemote",
        {"connection": {"host": "10.0.0.5", "hostKey": HOST_KEY, "proxy": {"host": "203.0.113.10"}}},
        ("connection.proxy.hostKey is not set",),
    ),
    # 9b. container-isolation
    Case("container-isolated", "container-isolation", rules.CONTAINER, container()),
    Case(
        "container-privileged",
        "container-isolation",
        rules.CONTAINER,
        container(privileged=True),
        ("privileged=True", "CIS Docker Benchmark 5.4"),
    ),
    Case(
        "container-docker-socket",
        "container-isolation",
        rules.CONTAINER,
        container(mounts=[{"target": "/var/run/docker.sock", "source": "/var/run/docker.sock", "type": "bind"}]),
        ("mounts[0].source mounts /var/run/docker.sock", "5.31"),
    ),
    Case(
        "container-run-dir",
        "container-isolation",
        rules.CONTAINER,
        container(volumes=[{"containerPath": "/host-run", "hostPath": "/run/"}]),
        ("volumes[0].hostPath mounts /run/",),
    ),
    # 10. api-key-length
    Case(
        "api-key-long",
        "api-key-length",
        rules.RANDOM_PASSWORD,
        {"length": 48, "special": False},
        name="vllm-api-key",
    ),
    Case(
        "api-key-short",
        "api-key-length",
        rules.RANDOM_PASSWORD,
        {"length": 16, "special": False},
        ("is 16 characters long", "length=32", "CWE-521"),
        name="vllm-api-key",
    ),
    # ecs-secrets-by-reference
    Case("ecs-secrets-by-arn", "ecs-secrets-by-reference", rules.ECS_TASK_DEFINITION, task_definition()),
    Case(
        "ecs-token-in-environment",
        "ecs-secrets-by-reference",
        rules.ECS_TASK_DEFINITION,
        task_definition(environment=[{"name": "HF_TOKEN", "value": HF_TOKEN}, {"name": "HF_HOME", "value": "/x"}]),
        ("containerDefinitions[0] (vllm) sets HF_TOKEN in `environment`", "Move it to `secrets`", "ECS.8"),
        absent=(HF_TOKEN, "HF_HOME"),
    ),
    Case(
        "ecs-odd-credential-name-in-environment",
        "ecs-secrets-by-reference",
        rules.ECS_TASK_DEFINITION,
        task_definition(environment=[{"name": "OPENAI_API_KEY", "value": "sk-plain"}]),
        ("sets OPENAI_API_KEY in `environment`",),
        absent=("sk-plain",),
    ),
    Case(
        "ecs-empty-credential-env-passes",
        "ecs-secrets-by-reference",
        rules.ECS_TASK_DEFINITION,
        task_definition(environment=[{"name": "HF_TOKEN", "value": ""}]),
    ),
    Case(
        "ecs-secret-value-not-a-reference",
        "ecs-secrets-by-reference",
        rules.ECS_TASK_DEFINITION,
        task_definition(secrets=[{"name": "VLLM_API_KEY", "valueFrom": "k" * 40},
                                 {"name": "HF_TOKEN", "valueFrom": "arn:aws:s3:::bucket/token"}]),
        ("secret 'VLLM_API_KEY' has a valueFrom that is not an SSM parameter ARN", "secret 'HF_TOKEN'"),
        absent=("k" * 40, "bucket/token"),
    ),
    Case(
        "ecs-definitions-unknown-at-preview",
        "ecs-secrets-by-reference",
        rules.ECS_TASK_DEFINITION,
        {"family": "vllm", "containerDefinitions": UNKNOWN_STRING_VALUE},
    ),
    # alb-https-listener
    Case("alb-https-with-tls13-policy", "alb-https-listener", LISTENER, HTTPS_LISTENER),
    Case("alb-https-certificate-pending", "alb-https-listener", LISTENER,
         {**HTTPS_LISTENER, "certificateArn": UNKNOWN_STRING_VALUE}),
    Case("alb-http-on-80", "alb-https-listener", LISTENER, listener(80, "HTTP")),
    Case(
        "alb-http-on-443",
        "alb-https-listener",
        LISTENER,
        listener(443, "HTTP"),
        ("plain HTTP on port 443", "protocol='HTTPS'", "CKV_AWS_2"),
    ),
    Case(
        "alb-https-old-policy",
        "alb-https-listener",
        LISTENER,
        {**HTTPS_LISTENER, "sslPolicy": "ELBSecurityPolicy-2016-08"},
        ("sslPolicy is 'ELBSecurityPolicy-2016-08'", f"sslPolicy='{TLS_POLICY}'", "CKV_AWS_103"),
    ),
    Case(
        "alb-https-no-policy-no-certificate",
        "alb-https-listener",
        "aws:alb/listener:Listener",
        listener(443, "HTTPS"),
        ("no certificateArn", "sslPolicy is not set"),
    ),
    Case(
        "alb-https-policy-allowed-by-config",
        "alb-https-listener",
        LISTENER,
        {**HTTPS_LISTENER, "sslPolicy": "ELBSecurityPolicy-TLS13-1-2-Ext1-2021-06"},
        config={"allowedSslPolicies": ["ELBSecurityPolicy-TLS13-1-2-Ext1-2021-06"]},
    ),
    Case("nlb-tls-ignored", "alb-https-listener", LISTENER, listener(443, "TCP")),
    # alb-request-hygiene
    Case("alb-drops-invalid-headers", "alb-request-hygiene", ALB, ALB_OK),
    Case("alb-desync-default", "alb-request-hygiene", ALB, {**ALB_OK, "desyncMitigationMode": None}),
    Case(
        "alb-keeps-invalid-headers",
        "alb-request-hygiene",
        "aws:alb/loadBalancer:LoadBalancer",
        {**ALB_OK, "dropInvalidHeaderFields": False},
        ("dropInvalidHeaderFields is not true", "ELB.4"),
    ),
    Case(
        "alb-desync-monitor",
        "alb-request-hygiene",
        ALB,
        {**ALB_OK, "desyncMitigationMode": "monitor"},
        ("desyncMitigationMode is 'monitor'", "desyncMitigationMode='strictest'", "ELB.12"),
    ),
    Case("nlb-not-an-alb", "alb-request-hygiene", ALB, {"loadBalancerType": "network"}),
    Case("other-password-short", "api-key-length", rules.RANDOM_PASSWORD, {"length": 8}, name="db-password"),
    Case(
        "api-key-config-floor",
        "api-key-length",
        rules.RANDOM_STRING,
        {"length": 48},
        ("length=64",),
        name="vllm-api-key",
        config={"minimumLength": 64},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_resource_policy(case: Case) -> None:
    args = resource_args(
        case.resource_type,
        case.props,
        name=case.name,
        protect=case.protect,
        provider=case.provider,
        config=case.config,
        secret_outputs=case.secret_outputs,
    )
    messages = validate_resource(case.policy, args)
    if not case.expect:
        assert messages == []
        return
    assert messages, f"{case.policy} passed a violating resource"
    text = "\n".join(messages)
    for fragment in case.expect:
        assert fragment in text
    for fragment in case.absent:
        assert fragment not in text
    assert all("[anchor: " in m for m in messages)


def test_every_resource_policy_has_a_passing_and_a_violating_case() -> None:
    resource_policies = {
        n for n, p in POLICIES.items() if isinstance(p, ResourceValidationPolicy) and p.has_validation()
    }
    passing = {c.policy for c in CASES if not c.expect}
    violating = {c.policy for c in CASES if c.expect}
    assert resource_policies <= passing
    assert resource_policies <= violating


def test_unknown_values_at_preview_surface_as_the_engine_expects() -> None:
    """A value preview cannot know makes pulumi-policy report 'can't run during preview', not a pass."""
    from pulumi_policy.proxy import UnknownValueError

    args = resource_args(rules.VPC_INGRESS_RULE, vpc_rule(UNKNOWN_STRING_VALUE, 22, 22))
    with pytest.raises(UnknownValueError):
        validate_resource("no-ssh-from-internet", args)
    # The credential scan reads through unknowns instead, so one unknown field does not hide a leak.
    leaky = instance(ami=UNKNOWN_STRING_VALUE, tags={"note": HF_TOKEN})
    assert validate_resource("no-plaintext-credentials", resource_args(rules.INSTANCE, leaky))


# --------------------------------------------------------------------------------------------------
# How pulumi-policy 1.21.0 shows secrets, and the remediation that relies on it


def test_validate_path_sees_secrets_as_plain_values() -> None:
    props = analyze_props({"envs": [secret("VLLM_API_KEY=abc"), "HF_HOME=/x"]})
    assert list(props["envs"]) == ["VLLM_API_KEY=abc", "HF_HOME=/x"]
    assert not any(isinstance(v, Secret) for v in rules.raw(rules.raw(props)["envs"]))


def test_remediation_path_keeps_secret_wrappers_under_the_proxy() -> None:
    props = remediate_props({"envs": [secret("VLLM_API_KEY=abc"), "HF_HOME=/x"]})
    assert list(props["envs"]) == ["VLLM_API_KEY=abc", "HF_HOME=/x"]  # plain access unwraps
    raw_envs = rules.raw(props)["envs"]
    assert isinstance(raw_envs[0], Secret) and raw_envs[0].value == "VLLM_API_KEY=abc"
    assert raw_envs[1] == "HF_HOME=/x"


def _remediate(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any] | None:
    policy = POLICIES["credentials-as-secrets"]
    assert isinstance(policy, ResourceValidationPolicy)
    result = policy.remediate(resource_args(resource_type, props, remediation=True))
    assert not hasattr(result, "__await__")
    return result


def test_credentials_policy_is_remediation_only() -> None:
    policy = POLICIES["credentials-as-secrets"]
    assert isinstance(policy, ResourceValidationPolicy)
    assert policy.enforcement_level is EnforcementLevel.REMEDIATE
    assert policy.has_remediation() and not policy.has_validation()
    assert "stored as Pulumi secrets" in policy.description


def test_remediation_encrypts_plaintext_container_credentials() -> None:
    remediated = _remediate(
        rules.CONTAINER,
        container(envs=["VLLM_API_KEY=plain-key", f"HF_TOKEN={HF_TOKEN}", "HF_HOME=/root/.cache", "VLLM_API_KEY="]),
    )
    assert remediated is not None
    wire = serialize_properties(remediated)
    assert wire["envs"] == [
        secret("VLLM_API_KEY=plain-key"),
        secret(f"HF_TOKEN={HF_TOKEN}"),
        "HF_HOME=/root/.cache",
        "VLLM_API_KEY=",
    ]
    # Everything else goes back to the engine unchanged.
    assert wire["labels"] == VLLM_CONTAINER["labels"]
    assert wire["command"] == VLLM_CONTAINER["command"]


def test_remediation_encrypts_an_object_the_resource_declares_secret() -> None:
    connection = {"host": "203.0.113.10", "user": "ubuntu", "privateKey": PEM_KEY, "hostKey": HOST_KEY}
    policy = POLICIES["credentials-as-secrets"]
    assert isinstance(policy, ResourceValidationPolicy)
    plain = resource_args(
        "command:remote:Command",
        {"connection": connection, "create": "true"},
        remediation=True,
        secret_outputs=("connection",),
    )
    remediated = policy.remediate(plain)
    assert isinstance(remediated, Mapping)
    assert serialize_properties(remediated) == {"connection": secret(connection), "create": "true"}
    # What pulumi-command 1.2.1 really sends: the whole connection already secret -> nothing to do.
    as_sent = resource_args(
        "command:remote:Command",
        {"connection": secret(connection), "create": "true"},
        remediation=True,
        secret_outputs=("connection",),
    )
    assert policy.remediate(as_sent) is None


def test_remediation_leaves_secret_credentials_alone() -> None:
    assert _remediate(rules.CONTAINER, container()) is None
    assert _remediate(rules.CONTAINER, container(envs=secret(["VLLM_API_KEY=k", "HF_TOKEN=t"]))) is None


def test_remediation_encrypts_a_plaintext_ssh_private_key() -> None:
    props = {
        "connection": {"host": "203.0.113.10", "user": "ubuntu", "privateKey": PEM_KEY, "hostKey": HOST_KEY},
        "create": "true",
        "environment": {"HF_TOKEN": HF_TOKEN, "LANG": "C"},
    }
    remediated = _remediate("command:remote:Command", props)
    assert remediated is not None
    wire = serialize_properties(remediated)
    assert wire["connection"] == {
        "host": "203.0.113.10",
        "user": "ubuntu",
        "privateKey": secret(PEM_KEY),
        "hostKey": HOST_KEY,
    }
    assert wire["environment"] == {"HF_TOKEN": secret(HF_TOKEN), "LANG": "C"}
    assert wire["create"] == "true"


# --------------------------------------------------------------------------------------------------
# 8. vllm-image-floor (a stack policy)


def stack_resource(
    resource_type: str, name: str, props: Mapping[str, Any], depends_on: list[PolicyResource] | None = None
) -> PolicyResource:
    deps = depends_on or []
    return PolicyResource(
        resource_type,
        analyze_props(props),
        urn(resource_type, name),
        name,
        options(),
        None,
        None,
        list(deps),
        {"image": list(deps)} if deps else {},
    )


def remote_image(tag_ref: str) -> PolicyResource:
    return stack_resource(rules.REMOTE_IMAGE, "vllm-image", {"name": tag_ref, "keepLocally": True})


def vllm_container(
    image: PolicyResource | None,
    version: str | None = "0.32.0",
    opt_in: bool = False,
    image_ref: str = "sha256:4f1c0e7a5d9b",
) -> PolicyResource:
    labels = [] if version is None else [{"label": "vllm-endpoint:vllm-version", "value": version}]
    if opt_in:
        labels.append({"label": "vllm-endpoint:insecure-image-opt-in", "value": "true"})
    return stack_resource(rules.CONTAINER, "vllm", {"image": image_ref, "labels": labels}, [image] if image else None)


PROXY = stack_resource(
    rules.CONTAINER,
    "proxy",
    {"image": "sha256:9e1d", "labels": [{"label": "vllm-endpoint:role", "value": "proxy"}]},
)


def validate_stack(resources: list[PolicyResource], config: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    policy = POLICIES["vllm-image-floor"]
    assert isinstance(policy, StackValidationPolicy)
    found: list[tuple[str, str]] = []

    def report(message: str, urn_: str | None = None) -> None:
        found.append((urn_ or "", message))

    assert policy.validate(StackValidationArgs(resources, config, {}), report) is None
    return found


def _stack(ref: str, version: str | None, opt_in: bool = False, proxy: bool = False) -> list[PolicyResource]:
    image = remote_image(ref)
    return [image, vllm_container(image, version, opt_in), *([PROXY] if proxy else [])]


STACK_CASES = [
    ("current-pinned-digest", _stack("vllm/vllm-openai:v0.32.0@sha256:" + "a" * 64, "0.32.0"), ()),
    ("exactly-the-floor", _stack("vllm/vllm-openai:v0.22.0", "0.22.0"), ()),
    (
        "below-floor",
        _stack("vllm/vllm-openai:v0.21.0", "0.21.0"),
        (
            "image vllm/vllm-openai:v0.21.0 is vLLM v0.21.0, below the security floor 0.22.0",
            "CVE-2026-48746",
            "container label vllm-endpoint:vllm-version=0.21.0",
        ),
    ),
    (
        "floor-release-candidate",
        _stack("vllm/vllm-openai:v0.22.0rc1", "0.22.0"),
        ("below the security floor",),
    ),
    (
        "latest",
        _stack("vllm/vllm-openai:latest", "0.32.0"),
        ("(latest) is pinned to no release", "CKV_DOCKER_7"),
    ),
    ("nightly", _stack("vllm/vllm-openai:nightly", "0.32.0"), ("(nightly)",)),
    ("no-tag", _stack("vllm/vllm-openai", "0.32.0"), ("(no tag) is pinned to no release",)),
    ("digest-only", _stack("vllm/vllm-openai@sha256:" + "b" * 64, "0.32.0"), ("pinned only by digest",)),
    (
        "mirror-below-floor",
        _stack("registry.example.com:5000/mirror/vllm-openai:v0.9.0", "0.9.0"),
        ("below the security floor",),
    ),
    ("old-opted-in-behind-proxy", _stack("vllm/vllm-openai:v0.10.1", "0.10.1", opt_in=True, proxy=True), ()),
    (
        "old-opted-in-without-proxy",
        _stack("vllm/vllm-openai:v0.10.1", "0.10.1", opt_in=True),
        ("below the security floor", "vllm-endpoint:role=proxy"),
    ),
    (
        "old-behind-proxy-without-opt-in",
        _stack("vllm/vllm-openai:v0.10.1", "0.10.1", proxy=True),
        ("vllm-endpoint:insecure-image-opt-in=true",),
    ),
    (
        "unpinned-cannot-be-opted-in",
        _stack("vllm/vllm-openai:latest", None, opt_in=True, proxy=True),
        ("pinned to no release",),
    ),
    ("other-images-ignored", [remote_image("nginx:latest"), PROXY], ()),
]


@pytest.mark.parametrize(("resources", "expect"), [c[1:] for c in STACK_CASES], ids=[c[0] for c in STACK_CASES])
def test_vllm_image_floor(resources: list[PolicyResource], expect: tuple[str, ...]) -> None:
    found = validate_stack(resources)
    if not expect:
        assert found == []
        return
    text = "\n".join(m for _, m in found)
    for fragment in expect:
        assert fragment in text
    urns = {r.urn for r in resources}
    assert all(u in urns for u, _ in found)  # each violation points at the resource to fix


def test_vllm_image_floor_reports_on_the_image_resource() -> None:
    image = remote_image("vllm/vllm-openai:v0.21.0")
    found = validate_stack([image, vllm_container(image, version=None)])
    assert [u for u, _ in found] == [image.urn]


def test_vllm_image_floor_is_configurable() -> None:
    resources = _stack("vllm/vllm-openai:v0.32.0", "0.32.0")
    assert validate_stack(resources) == []
    assert validate_stack(resources, {"minimumVersion": "0.33.0"})


def test_vllm_image_floor_checks_a_container_image_reference_and_survives_preview_unknowns() -> None:
    direct = vllm_container(None, version=None, image_ref="vllm/vllm-openai:v0.4.2")
    assert "image vllm/vllm-openai:v0.4.2 is vLLM v0.4.2" in validate_stack([direct])[0][1]
    image = remote_image("vllm/vllm-openai:v0.21.0")
    pending = vllm_container(image, version=None, image_ref=UNKNOWN_STRING_VALUE)
    assert [u for u, _ in validate_stack([image, pending])] == [image.urn]


# --------------------------------------------------------------------------------------------------
# Stack policies on the load balancer and the fleet: alb-http-redirects-to-https,
# fleet-ingress-from-load-balancer-only


def linked(
    resource_type: str, name: str, props: Mapping[str, Any], links: Mapping[str, list[PolicyResource]] | None = None
) -> PolicyResource:
    """A stack resource with the engine's property dependencies (`securityGroupId` -> the group's resource)."""
    resource = stack_resource(resource_type, name, props)
    resource.property_dependencies = {key: list(deps) for key, deps in (links or {}).items()}
    return resource


def run_stack_policy(policy_name: str, resources: list[PolicyResource]) -> list[tuple[str, str]]:
    policy = POLICIES[policy_name]
    assert isinstance(policy, StackValidationPolicy)
    found: list[tuple[str, str]] = []

    def report(message: str, urn_: str | None = None) -> None:
        found.append((urn_ or "", message))

    assert policy.validate(StackValidationArgs(resources, {}, {}), report) is None
    return found


def _listeners(http_actions: list[dict[str, Any]], *, https: bool = True, arn: str = ALB_ARN) -> list[PolicyResource]:
    plain = linked(LISTENER, "svc-http", {**listener(80, "HTTP", http_actions), "loadBalancerArn": arn})
    return [plain, linked(LISTENER, "svc-https", HTTPS_LISTENER)] if https else [plain]


REDIRECT_CASES = [
    ("redirect-only", _listeners([REDIRECT]), ()),
    ("http-only-stack", _listeners([NOT_FOUND], https=False), ()),
    ("http-serves-beside-https", _listeners([NOT_FOUND]), ("'svc-http' does more than redirect", "ELB.1")),
    (
        "redirect-keeps-http",
        _listeners([{"type": "redirect", "redirect": {"protocol": "#{protocol}", "port": "443"}}]),
        ("does more than redirect",),
    ),
    ("other-load-balancer", _listeners([NOT_FOUND], arn=ALB_ARN.replace("svc", "other")), ()),
    (
        "load-balancer-unknown-at-preview",
        _listeners([NOT_FOUND], arn=UNKNOWN_STRING_VALUE),
        ("does more than redirect",),
    ),
]


@pytest.mark.parametrize(("resources", "expect"), [c[1:] for c in REDIRECT_CASES], ids=[c[0] for c in REDIRECT_CASES])
def test_alb_http_redirects_to_https(resources: list[PolicyResource], expect: tuple[str, ...]) -> None:
    assert_one_finding(run_stack_policy("alb-http-redirects-to-https", resources), resources[0], expect)


def assert_one_finding(found: list[tuple[str, str]], culprit: PolicyResource, expect: tuple[str, ...]) -> None:
    """No finding when nothing is expected; else exactly one, on `culprit`, with each fragment and an anchor."""
    if not expect:
        assert found == []
        return
    assert [u for u, _ in found] == [culprit.urn]
    for fragment in expect:
        assert fragment in found[0][1]
    assert "[anchor: " in found[0][1]


def test_the_redirect_check_groups_listeners_by_the_engines_link_at_preview() -> None:
    other = linked(ALB, "other-alb", ALB_OK)
    mine = linked(ALB, "svc-alb", ALB_OK)
    unknown = {"loadBalancerArn": UNKNOWN_STRING_VALUE}
    plain = linked(LISTENER, "other-http", {**listener(80, "HTTP"), **unknown}, {"loadBalancerArn": [other]})
    https = linked(LISTENER, "svc-https", {**HTTPS_LISTENER, **unknown}, {"loadBalancerArn": [mine]})
    assert run_stack_policy("alb-http-redirects-to-https", [other, mine, plain, https]) == []
    same = linked(LISTENER, "svc-http", {**listener(80, "HTTP"), **unknown}, {"loadBalancerArn": [mine]})
    assert [u for u, _ in run_stack_policy("alb-http-redirects-to-https", [mine, same, https])] == [same.urn]


TASK_GROUP = linked(rules.SECURITY_GROUP, "svc-task-sg", {
    "id": "sg-0task", "description": "vLLM service tasks: the proxy port from the load balancer only",
    "tags": {"vllm-endpoint:role": "fleet-tasks"}})
INSTANCE_GROUP = linked(rules.SECURITY_GROUP, "vllm-instances-sg", {
    "description": "some group", "tags": {"vllm-endpoint:role": "fleet-instances"}})
ALB_GROUP = linked(rules.SECURITY_GROUP, "svc-alb-sg", {
    "id": "sg-0alb", "description": "vLLM service load balancer: listener ports from configured networks"})
BALANCER = linked(ALB, "svc-alb", {**ALB_OK, "securityGroups": ["sg-0alb"]})


def _into(group: PolicyResource, **rule: Any) -> PolicyResource:
    props = {"ipProtocol": "tcp", "fromPort": 8080, "toPort": 8080, "securityGroupId": UNKNOWN_STRING_VALUE, **rule}
    return linked(rules.VPC_INGRESS_RULE, "rule", props, {"securityGroupId": [group]})


def _fleet_stack(*rules_: PolicyResource) -> list[PolicyResource]:
    return [TASK_GROUP, INSTANCE_GROUP, ALB_GROUP, BALANCER, *rules_]


FLEET_CASES = [
    ("from-the-alb-group", _fleet_stack(_into(TASK_GROUP, referencedSecurityGroupId="sg-0alb")), ()),
    ("from-a-group-unknown-at-preview",
     _fleet_stack(_into(TASK_GROUP, referencedSecurityGroupId=UNKNOWN_STRING_VALUE)), ()),
    ("cidr-into-the-alb-group-is-not-the-fleets", _fleet_stack(_into(ALB_GROUP, cidrIpv4="93.184.216.0/24")), ()),
    (
        "cidr-into-the-task-group",
        _fleet_stack(_into(TASK_GROUP, cidrIpv4="10.0.0.0/8")),
        ("admits the address range(s) 10.0.0.0/8", "'svc-task-sg'", "referencedSecurityGroupId"),
    ),
    (
        "ipv6-into-the-instance-group-by-role-tag",
        _fleet_stack(_into(INSTANCE_GROUP, cidrIpv6="2600:1f18::/32")),
        ("2600:1f18::/32", "'vllm-instances-sg'"),
    ),
    (
        "prefix-list-into-the-task-group",
        _fleet_stack(_into(TASK_GROUP, prefixListId="pl-0123456789abcdef0")),
        ("pl-0123456789abcdef0",),
    ),
    (
        "another-group-into-the-task-group",
        _fleet_stack(_into(TASK_GROUP, referencedSecurityGroupId="sg-0other")),
        ("sg-0other, which is not a load balancer's",),
    ),
    (
        "classic-rule-matched-by-id",
        _fleet_stack(linked(rules.SECURITY_GROUP_RULE, "rule", {
            "type": "ingress", "securityGroupId": "sg-0task", "protocol": "tcp", "fromPort": 8080, "toPort": 8080,
            "cidrBlocks": ["172.16.0.0/12"]})),
        ("172.16.0.0/12",),
    ),
    (
        "classic-rule-from-the-alb-group",
        _fleet_stack(linked(rules.SECURITY_GROUP_RULE, "rule", {
            "type": "ingress", "securityGroupId": "sg-0task", "protocol": "tcp", "fromPort": 8080, "toPort": 8080,
            "sourceSecurityGroupId": "sg-0alb"})),
        (),
    ),
    (
        "inline-ingress-on-a-fleet-group",
        [linked(rules.SECURITY_GROUP, "vllm-tasks-sg", {
            "description": "vLLM fleet tasks: no inbound without a load balancer",
            "tags": {"vllm-endpoint:role": "fleet-tasks"},
            "ingress": [{"protocol": "tcp", "fromPort": 8080, "toPort": 8080, "cidrBlocks": ["10.1.0.0/16"]}]})],
        ("inline ingress[0] of 'vllm-tasks-sg' admits the address range(s) 10.1.0.0/16",),
    ),
]


@pytest.mark.parametrize(("resources", "expect"), [c[1:] for c in FLEET_CASES], ids=[c[0] for c in FLEET_CASES])
def test_fleet_ingress_from_load_balancer_only(resources: list[PolicyResource], expect: tuple[str, ...]) -> None:
    assert_one_finding(run_stack_policy("fleet-ingress-from-load-balancer-only", resources), resources[-1], expect)


BUCKET = linked("aws:s3/bucket:Bucket", "vllm-model-bucket", {
    "id": "vllm-endpoint-dev-models-0a1b2c", "bucket": "vllm-endpoint-dev-models-0a1b2c", "forceDestroy": True})
BLOCK_ALL = {k: True for k in rules.PUBLIC_ACCESS_BLOCK_KEYS}
TLS_ONLY = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
    "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})


def _block(**props: Any) -> PolicyResource:
    return linked(rules.S3_PUBLIC_ACCESS_BLOCK, "vllm-model-public-access-block",
                  {"bucket": UNKNOWN_STRING_VALUE, **BLOCK_ALL, **props}, {"bucket": [BUCKET]})


def _policy(text: str, bucket: Any = UNKNOWN_STRING_VALUE) -> PolicyResource:
    links = {"bucket": [BUCKET]} if bucket == UNKNOWN_STRING_VALUE else None
    return linked(rules.S3_BUCKET_POLICY, "vllm-model-tls-only", {"bucket": bucket, "policy": text}, links)


S3_CASES = [
    ("blocked-and-tls-only", [BUCKET, _block(), _policy(TLS_ONLY)], ()),
    ("policy-unknown-at-preview", [BUCKET, _block(), _policy(UNKNOWN_STRING_VALUE)], ()),
    ("companions-matched-by-bucket-name", [BUCKET, _block(), _policy(TLS_ONLY, "vllm-endpoint-dev-models-0a1b2c")],
     ()),
    ("no-public-access-block", [BUCKET, _policy(TLS_ONLY)], ("has no BucketPublicAccessBlock",)),
    ("a-block-left-open", [BUCKET, _block(restrictPublicBuckets=False), _policy(TLS_ONLY)],
     ("leaves restrictPublicBuckets off",)),
    ("no-bucket-policy", [BUCKET, _block()], ("denying requests without TLS",)),
    ("a-policy-that-allows-plain-http", [BUCKET, _block(), _policy(TLS_ONLY.replace('"Deny"', '"Allow"'))],
     ("denying requests without TLS",)),
    ("another-buckets-policy", [BUCKET, _block(), _policy(TLS_ONLY, "someone-elses-bucket")],
     ("denying requests without TLS",)),
    ("a-public-canned-acl",
     [linked("aws:s3/bucket:Bucket", "vllm-model-bucket", {"bucket": "b", "acl": "public-read"}),
      linked(rules.S3_PUBLIC_ACCESS_BLOCK, "block", {"bucket": "b", **BLOCK_ALL}),
      linked(rules.S3_BUCKET_POLICY, "tls", {"bucket": "b", "policy": TLS_ONLY})],
     ("grants the canned ACL 'public-read'",)),
]


@pytest.mark.parametrize(("resources", "expect"), [c[1:] for c in S3_CASES], ids=[c[0] for c in S3_CASES])
def test_s3_bucket_private(resources: list[PolicyResource], expect: tuple[str, ...]) -> None:
    found = run_stack_policy("s3-bucket-private", resources)
    assert_one_finding(found, resources[0], (*expect, "'vllm-model-bucket'") if expect else ())


def test_every_stack_policy_has_cases() -> None:
    stack_policies = {n for n, p in POLICIES.items() if isinstance(p, StackValidationPolicy)}
    assert stack_policies == {
        "vllm-image-floor", "alb-http-redirects-to-https", "fleet-ingress-from-load-balancer-only",
        "s3-bucket-private"}


# --------------------------------------------------------------------------------------------------
# The pack as a whole

EXPECTED_LEVELS = {
    "no-ssh-from-internet": EnforcementLevel.MANDATORY,
    "no-api-from-internet": EnforcementLevel.MANDATORY,
    "imdsv2-required": EnforcementLevel.MANDATORY,
    "ebs-encrypted": EnforcementLevel.MANDATORY,
    "detailed-monitoring": EnforcementLevel.ADVISORY,
    "log-retention": EnforcementLevel.ADVISORY,
    "sns-encrypted": EnforcementLevel.MANDATORY,
    "kms-key-rotation": EnforcementLevel.ADVISORY,
    "no-ephemeral-public-ip": EnforcementLevel.ADVISORY,
    "no-plaintext-credentials": EnforcementLevel.MANDATORY,
    "credentials-as-secrets": EnforcementLevel.REMEDIATE,
    "cache-volume-protected": EnforcementLevel.MANDATORY,
    "vllm-image-floor": EnforcementLevel.MANDATORY,
    "ssh-host-key-verified": EnforcementLevel.MANDATORY,
    "container-isolation": EnforcementLevel.MANDATORY,
    "api-key-length": EnforcementLevel.MANDATORY,
    "alb-https-listener": EnforcementLevel.MANDATORY,
    "alb-http-redirects-to-https": EnforcementLevel.MANDATORY,
    "alb-request-hygiene": EnforcementLevel.MANDATORY,
    "fleet-ingress-from-load-balancer-only": EnforcementLevel.MANDATORY,
    "ecs-secrets-by-reference": EnforcementLevel.MANDATORY,
    "s3-bucket-private": EnforcementLevel.MANDATORY,
}


def test_policy_list_and_levels() -> None:
    built = policies.build_policies()
    assert len({p.name for p in built}) == len(built)
    assert {p.name: p.enforcement_level for p in built} == EXPECTED_LEVELS


def _read_port(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else b""
    if not line.strip():
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"policy pack did not print its port: {err.decode(errors='replace')}")
    return int(line)


def _struct(props: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(props)
    return struct


def test_main_serves_the_pack_over_grpc() -> None:
    """`python policy/` as the language host runs it: builds the PolicyPack and answers the engine's RPCs."""
    proc = subprocess.Popen(
        [sys.executable, "-u", str(POLICY_DIR), "127.0.0.1:1"],  # the engine address argument is unused
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        port = _read_port(proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = proto.AnalyzerStub(channel)
            info = stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
            assert info.name == policies.POLICY_PACK_NAME and info.supportsConfig
            levels = {p.name: p.enforcementLevel for p in info.policies}
            assert levels["no-ssh-from-internet"] == proto.MANDATORY
            assert levels["detailed-monitoring"] == proto.ADVISORY
            assert levels["credentials-as-secrets"] == proto.REMEDIATE
            assert set(levels) == set(EXPECTED_LEVELS)

            request = proto.AnalyzeRequest(
                type=rules.VPC_INGRESS_RULE,
                urn=urn(rules.VPC_INGRESS_RULE, "ssh"),
                name="ssh",
                properties=_struct(vpc_rule("0.0.0.0/0", 22, 22)),
                options=proto.AnalyzerResourceOptions(),
            )
            diagnostics = stub.Analyze(request, timeout=30).diagnostics
            ssh = [d for d in diagnostics if d.policyName == "no-ssh-from-internet"]
            assert len(ssh) == 1 and ssh[0].enforcementLevel == proto.MANDATORY
            assert "CKV_AWS_24" in ssh[0].message

            # The operator's policy config lowers a level without touching the pack.
            stub.Configure(
                proto.ConfigureAnalyzerRequest(
                    policyConfig={"no-ssh-from-internet": proto.PolicyConfig(enforcementLevel=proto.ADVISORY)}
                ),
                timeout=30,
            )
            ssh = [d for d in stub.Analyze(request, timeout=30).diagnostics if d.policyName == "no-ssh-from-internet"]
            assert ssh[0].enforcementLevel == proto.ADVISORY

            remediation = stub.Remediate(
                proto.AnalyzeRequest(
                    type=rules.CONTAINER,
                    urn=urn(rules.CONTAINER, "vllm"),
                    name="vllm",
                    properties=_struct({"envs": ["VLLM_API_KEY=plain", secret("HF_TOKEN=x")]}),
                    options=proto.AnalyzerResourceOptions(),
                ),
                timeout=30,
            ).remediations
            assert [r.policyName for r in remediation] == ["credentials-as-secrets"]
            envs = json_format.MessageToDict(remediation[0].properties)["envs"]
            assert envs == [secret("VLLM_API_KEY=plain"), secret("HF_TOKEN=x")]

            old = proto.AnalyzerResource(
                type=rules.REMOTE_IMAGE,
                urn=urn(rules.REMOTE_IMAGE, "img"),
                name="img",
                properties=_struct({"name": "vllm/vllm-openai:v0.21.0"}),
                options=proto.AnalyzerResourceOptions(),
            )
            stack = stub.AnalyzeStack(proto.AnalyzeStackRequest(resources=[old]), timeout=30).diagnostics
            assert [(d.policyName, d.urn) for d in stack] == [("vllm-image-floor", old.urn)]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
