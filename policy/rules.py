"""Pure checks behind the vllm-endpoint policy pack.

Each check takes a resource's properties (plain mappings, or the read-only proxies pulumi-policy hands
to a policy) and returns one message per violation, so the policy callbacks in `policies.py` and the
unit tests share a single implementation. Nothing here talks to the Pulumi engine.

Messages say what is wrong and how to fix it, and end with the anchor (Checkov id, AWS Security Hub
control, CVE, ...) that the rule answers to. They never repeat a credential they found.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import ipaddress
import json
import pathlib
import posixpath
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final, Protocol

from pulumi_policy import Secret
from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    UnknownValueError,
)

# Resource type tokens, as the engine reports them.
SECURITY_GROUP: Final = "aws:ec2/securityGroup:SecurityGroup"
SECURITY_GROUP_RULE: Final = "aws:ec2/securityGroupRule:SecurityGroupRule"
VPC_INGRESS_RULE: Final = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
INSTANCE: Final = "aws:ec2/instance:Instance"
LAUNCH_TEMPLATE: Final = "aws:ec2/launchTemplate:LaunchTemplate"
EBS_VOLUME: Final = "aws:ebs/volume:Volume"
CONTAINER: Final = "docker:index/container:Container"
REMOTE_IMAGE: Final = "docker:index/remoteImage:RemoteImage"
DOCKER_PROVIDER: Final = "pulumi:providers:docker"
RANDOM_PASSWORD: Final = "random:index/randomPassword:RandomPassword"
RANDOM_STRING: Final = "random:index/randomString:RandomString"
SSM_PARAMETER: Final = "aws:ssm/parameter:Parameter"
LOG_GROUP: Final = "aws:cloudwatch/logGroup:LogGroup"
SNS_TOPIC: Final = "aws:sns/topic:Topic"
KMS_KEY: Final = "aws:kms/key:Key"
LISTENER_TYPES: Final = frozenset({"aws:lb/listener:Listener", "aws:alb/listener:Listener"})
LOAD_BALANCER_TYPES: Final = frozenset({"aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer"})
S3_BUCKET_TYPES: Final = frozenset({"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"})
S3_PUBLIC_ACCESS_BLOCK: Final = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
S3_BUCKET_POLICY: Final = "aws:s3/bucketPolicy:BucketPolicy"
ECS_TASK_DEFINITION: Final = "aws:ecs/taskDefinition:TaskDefinition"
REMOTE_COMMAND_PREFIX: Final = "command:remote:"

# The product's names (tags, labels, opt-in settings) live once, in infra/catalog/names.py, which needs
# only the standard library: the pack, run from the checkout in its own venv, loads that file by path.
_NAMES_FILE: Final = pathlib.Path(__file__).resolve().parent.parent / "infra/catalog/names.py"


def _load_names() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vllm_endpoint_catalog_names", _NAMES_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_NAMES: Final = _load_names()

# The product writes these markers into a rule's description when the operator set the matching
# `dangerously...` config; a rule that carries one is an explicit, reviewed decision.
SSH_OPT_IN_MARKER: Final = f"{_NAMES.OPT_IN_MARKER_PREFIX}{_NAMES.SSH_WORLD_OPT_IN}"
API_OPT_IN_MARKER: Final = f"{_NAMES.OPT_IN_MARKER_PREFIX}{_NAMES.API_WORLD_OPT_IN}"

# Label/tag keys the product puts on its resources.
CACHE_ROLE_TAG: Final[str] = _NAMES.ROLE_TAG
CACHE_ROLE_VALUE: Final[str] = _NAMES.CACHE_ROLE
ON_DESTROY_TAG: Final[str] = _NAMES.ON_DESTROY_TAG
ON_DESTROY_RETAIN: Final[str] = _NAMES.ON_DESTROY_RETAIN
ROLE_LABEL: Final[str] = _NAMES.ROLE_TAG
PROXY_ROLE_VALUE: Final[str] = _NAMES.PROXY_ROLE
VLLM_VERSION_LABEL: Final[str] = _NAMES.VLLM_VERSION_LABEL
INSECURE_IMAGE_OPT_IN_LABEL: Final[str] = _NAMES.INSECURE_IMAGE_OPT_IN_LABEL

SSH_PORT: Final = 22
DEFAULT_MAX_HOP_LIMIT: Final = 1
# The vLLM image floor and its advisories live once, in the catalog's data file, which the program reads
# too (infra/catalog/security.py validates it). The pack runs from the checkout (`--policy-pack policy`),
# so it reads the file by its path; JSON, because this venv pins only pulumi and pulumi-policy.
SECURITY_FACTS_FILE: Final = pathlib.Path(__file__).resolve().parent.parent / "infra/catalog/data/security.json"


@dataclass(frozen=True)
class SecurityFloor:
    version: str
    advisory_ids: tuple[str, ...]
    advisories: str  # for messages: "CVE-a (what it is), CVE-b and CVE-c"


def read_security_floor(path: pathlib.Path = SECURITY_FACTS_FILE) -> SecurityFloor:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        version = data["vllm_security_floor"]
        listed = [(entry["id"], entry.get("summary")) for entry in data["advisories_below_floor"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: no usable vllm_security_floor / advisories_below_floor ({e!r}); "
                         "importing infra/catalog/security.py names the bad field") from None
    if not isinstance(version, str) or not listed:
        raise ValueError(f"{path}: vllm_security_floor must be a version text and advisories_below_floor non-empty")
    texts = [f"{advisory} ({summary})" if summary else str(advisory) for advisory, summary in listed]
    advisories = texts[0] if len(texts) == 1 else f"{', '.join(texts[:-1])} and {texts[-1]}"
    return SecurityFloor(version, tuple(str(advisory) for advisory, _ in listed), advisories)


_FLOOR: Final = read_security_floor()
VLLM_SECURITY_FLOOR: Final = _FLOOR.version
VLLM_FLOOR_ADVISORIES: Final = _FLOOR.advisories
VLLM_FLOOR_ADVISORY_IDS: Final = _FLOOR.advisory_ids
DEFAULT_API_KEY_MIN_LENGTH: Final = 32
DEFAULT_API_KEY_NAME_MARKER: Final = "api-key"

# Env var names whose values are credentials: the product's own, plus the usual suffixes, so a
# differently named token is still treated as one.
CREDENTIAL_ENV_NAMES: Final = frozenset({"VLLM_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"})
_CREDENTIAL_ENV_NAME_RE: Final = re.compile(
    r"(?:^|_)(?:TOKEN|API_KEY|APIKEY|SECRET|SECRET_KEY|PASSWORD|PASSWD|ACCESS_KEY|PRIVATE_KEY)(?:_|$)"
)
# Property names that providers use for credentials; a value there is expected to be a Pulumi secret.
CREDENTIAL_PROPERTY_NAMES: Final = frozenset(
    {"privateKey", "privateKeyPem", "caPrivateKeyPem", "privateKeyPassword", "password", "keyMaterial"}
)

_PEM_PRIVATE_KEY_RE: Final = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
# Hugging Face user access tokens: `hf_` and 34 letters/digits (30+ so a future length still matches,
# while names like `hf_transfer` do not).
_HF_TOKEN_RE: Final = re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,}")
# `NAME=value` / `NAME: value` in a script or cloud-config. A value that starts with `$` is read at run
# time (`$(aws ssm get-parameter ...)`, `${VAR}`), which is the fix, so it is not a finding.
_SCRIPT_CREDENTIAL_RE: Final = re.compile(
    r"(?<![$\w{])(VLLM_API_KEY|HF_TOKEN|HUGGING_FACE_HUB_TOKEN)[ \t]*[=:][ \t]*[\"']?([^\s\"'$][^\s\"']*)"
)
_API_KEY_FLAG_RE: Final = re.compile(r"--api-key(?:=|[ \t]+)[\"']?([^\s\"'$-][^\s\"']*)")

_UNKNOWN_SENTINELS: Final = frozenset(
    {
        UNKNOWN_ARCHIVE_VALUE,
        UNKNOWN_ARRAY_VALUE,
        UNKNOWN_ASSET_VALUE,
        UNKNOWN_BOOLEAN_VALUE,
        UNKNOWN_NUMBER_VALUE,
        UNKNOWN_OBJECT_VALUE,
        UNKNOWN_STRING_VALUE,
    }
)

Props = Mapping[str, Any]
Path = tuple[str | int, ...]


def anchor(*ids: str) -> str:
    return f"[anchor: {', '.join(ids)}]"


def _is_seq(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _seq(value: Any) -> Sequence[Any]:
    return value if _is_seq(value) else ()


def _as_int(value: Any) -> int | None:
    # The engine's protobuf Struct carries every number as a float.
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _is_true(value: Any) -> bool:
    # Launch templates carry booleans as the strings "true"/"false".
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _is_unknown(value: Any) -> bool:
    return isinstance(value, str) and value in _UNKNOWN_SENTINELS


def raw(value: Any) -> Any:
    """The container behind a pulumi-policy proxy, or the value itself.

    pulumi-policy wraps props in `_DictProxy`/`_DictSecretsProxy` (and lists in `_ListProxy`), which
    raise on unknown values or unwrap secrets on access. Each answers the key "__target" with the
    container it wraps (its own serializer relies on that), which lets a check walk the values
    without tripping over preview-time unknowns and, on the remediation path, see `Secret` wrappers.
    """
    if isinstance(value, Mapping) and "__target" in value:
        return value["__target"]
    if _is_seq(value) and not isinstance(value, list | tuple):
        try:
            return value["__target"]
        except (KeyError, TypeError, IndexError):
            return value
    return value


# --------------------------------------------------------------------------------------------------
# Security-group ingress (policies: no-ssh-from-internet, no-api-from-internet)


@dataclass(frozen=True)
class Ingress:
    where: str
    protocol: str
    from_port: int | None
    to_port: int | None
    cidrs: tuple[str, ...]
    markers: tuple[str, ...]


_PROTOCOLS: Final = {
    "-1": "all",
    "all": "all",
    "6": "tcp",
    "tcp": "tcp",
    "17": "udp",
    "udp": "udp",
    "1": "icmp",
    "icmp": "icmp",
    "58": "icmpv6",
    "icmpv6": "icmpv6",
}
_PORTLESS: Final = frozenset({"icmp", "icmpv6"})


def _protocol(value: Any) -> str:
    text = str(value).strip().lower() if value is not None else "all"
    if text.endswith(".0"):  # numbers arrive as floats
        text = text[:-2]
    return _PROTOCOLS.get(text, f"protocol {text}")


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(v for v in _seq(value) if isinstance(v, str))


def _markers(props: Props) -> tuple[str, ...]:
    found = []
    description = props.get("description")
    if isinstance(description, str):
        found.append(description)
    tags = props.get("tags")
    if isinstance(tags, Mapping):
        found.extend(v for v in tags.values() if isinstance(v, str))
    return tuple(found)


def ingress_rules(resource_type: str, props: Props) -> list[Ingress]:
    """Every ingress permission a resource grants, whichever of the three AWS forms it uses."""
    if resource_type == VPC_INGRESS_RULE:
        cidrs = tuple(c for c in (props.get("cidrIpv4"), props.get("cidrIpv6")) if isinstance(c, str))
        return [
            Ingress(
                "this rule",
                _protocol(props.get("ipProtocol")),
                _as_int(props.get("fromPort")),
                _as_int(props.get("toPort")),
                cidrs,
                _markers(props),
            )
        ]
    if resource_type == SECURITY_GROUP_RULE:
        if props.get("type") != "ingress":
            return []
        return [
            Ingress(
                "this rule",
                _protocol(props.get("protocol")),
                _as_int(props.get("fromPort")),
                _as_int(props.get("toPort")),
                _strings(props.get("cidrBlocks")) + _strings(props.get("ipv6CidrBlocks")),
                _markers(props),
            )
        ]
    if resource_type == SECURITY_GROUP:
        rules = []
        for i, block in enumerate(_seq(props.get("ingress"))):
            if not isinstance(block, Mapping):
                continue
            rules.append(
                Ingress(
                    f"inline ingress[{i}]",
                    _protocol(block.get("protocol")),
                    _as_int(block.get("fromPort")),
                    _as_int(block.get("toPort")),
                    _strings(block.get("cidrBlocks")) + _strings(block.get("ipv6CidrBlocks")),
                    _markers(block),
                )
            )
        return rules
    return []


def is_world(cidr: str) -> bool:
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False).prefixlen == 0
    except ValueError:
        return False


def _port_range(rule: Ingress) -> tuple[int, int] | None:
    if rule.protocol in _PORTLESS:
        return None
    if rule.protocol not in ("tcp", "udp"):
        return (0, 65535)
    low = rule.from_port if rule.from_port is not None and rule.from_port >= 0 else 0
    high = rule.to_port if rule.to_port is not None and rule.to_port >= 0 else 65535
    return (low, high)


def _describe(rule: Ingress) -> str:
    ports = _port_range(rule)
    if rule.protocol == "all":
        return "all protocols and ports"
    if ports is None:
        return rule.protocol
    low, high = ports
    return f"{rule.protocol} port {low}" if low == high else f"{rule.protocol} ports {low}-{high}"


def _opted_in(rule: Ingress, marker: str) -> bool:
    return any(marker in text for text in rule.markers)


def check_ssh_ingress(resource_type: str, props: Props, opt_in_marker: str = SSH_OPT_IN_MARKER) -> list[str]:
    messages = []
    for rule in ingress_rules(resource_type, props):
        world = [c for c in rule.cidrs if is_world(c)]
        ports = _port_range(rule)
        if not world or rule.protocol not in ("all", "tcp") or ports is None:
            continue
        if not ports[0] <= SSH_PORT <= ports[1] or _opted_in(rule, opt_in_marker):
            continue
        messages.append(
            f"{rule.where} opens SSH ({_describe(rule)}) to {' and '.join(world)}. Allow only the "
            "addresses that administer the host (e.g. your /32), or reach it through SSM/a bastion. "
            "If internet-wide SSH is really intended, set the product's config "
            "`dangerouslyAllowSshFromInternet`, which marks the rule's description with "
            f"`{opt_in_marker}`. {anchor('Checkov CKV_AWS_24', 'AWS Security Hub EC2.13')}"
        )
    return messages


def check_api_ingress(resource_type: str, props: Props, opt_in_marker: str = API_OPT_IN_MARKER) -> list[str]:
    """Any world-open ingress that is not exactly SSH counts as exposing the API."""
    messages = []
    for rule in ingress_rules(resource_type, props):
        world = [c for c in rule.cidrs if is_world(c)]
        ports = _port_range(rule)
        if not world or ports is None or _opted_in(rule, opt_in_marker):
            continue
        if rule.protocol == "tcp" and ports == (SSH_PORT, SSH_PORT):
            continue
        messages.append(
            f"{rule.where} opens {_describe(rule)} to {' and '.join(world)}. The vLLM API key guards only "
            "/v1-style paths (/invocations, /metrics, /docs stay open), so list the client CIDRs that "
            "call the endpoint instead. If a public endpoint is really intended, set the product's "
            "config `dangerouslyAllowApiFromInternet`, which marks the rule's description with "
            f"`{opt_in_marker}`. "
            f"{anchor('AWS Security Hub EC2.18', 'AWS Security Hub EC2.19', 'Checkov CKV_AWS_260-style')}"
        )
    return messages


# --------------------------------------------------------------------------------------------------
# Instance metadata (policy: imdsv2-required)


def check_imdsv2(props: Props, max_hop_limit: int = DEFAULT_MAX_HOP_LIMIT) -> list[str]:
    fix = (
        "Set metadataOptions={'httpTokens': 'required', 'httpPutResponseHopLimit': "
        f"{max_hop_limit}, 'httpEndpoint': 'enabled'}} (or disable the endpoint)."
    )
    tail = anchor("Checkov CKV_AWS_79", "AWS Security Hub EC2.8")
    options = props.get("metadataOptions")
    if not isinstance(options, Mapping):
        return [
            "metadataOptions is not set, so IMDSv1 stays available unless the AMI or the account "
            f"says otherwise, and a container can reach the instance role's credentials. {fix} {tail}"
        ]
    if str(options.get("httpEndpoint", "enabled")).lower() == "disabled":
        return []
    messages = []
    tokens = options.get("httpTokens")
    if tokens != "required":
        messages.append(
            f"metadataOptions.httpTokens is {tokens!r}, so IMDSv1 (no session token) answers "
            f"SSRF-style requests. {fix} {tail}"
        )
    hop = _as_int(options.get("httpPutResponseHopLimit"))
    if hop is None or hop > max_hop_limit:
        shown = "unset (AMIs that declare IMDSv2 default to 2)" if hop is None else str(hop)
        messages.append(
            f"metadataOptions.httpPutResponseHopLimit is {shown}; above {max_hop_limit} a process in "
            f"a bridge-networked container can fetch the instance role's credentials. {fix} {tail}"
        )
    return messages


# --------------------------------------------------------------------------------------------------
# Encryption at rest (policy: ebs-encrypted)


def check_ebs_encryption(resource_type: str, props: Props) -> list[str]:
    instance_tail = anchor("Checkov CKV_AWS_8", "AWS Security Hub EC2.3")
    volume_tail = anchor("Checkov CKV_AWS_3", "AWS Security Hub EC2.3")
    messages = []
    if resource_type == INSTANCE:
        root = props.get("rootBlockDevice")
        if not isinstance(root, Mapping) or not _is_true(root.get("encrypted")):
            messages.append(
                "rootBlockDevice.encrypted is not true, so the root volume (model cache, logs, the "
                "docker data root) is stored unencrypted. Set rootBlockDevice={'encrypted': True, ...} "
                f"(optionally with kmsKeyId). {instance_tail}"
            )
        for i, device in enumerate(_seq(props.get("ebsBlockDevices"))):
            if not isinstance(device, Mapping) or not _is_true(device.get("encrypted")):
                name = device.get("deviceName") if isinstance(device, Mapping) else None
                messages.append(
                    f"ebsBlockDevices[{i}] ({name or 'unnamed'}) is not encrypted. Set encrypted=True "
                    f"on every EBS block device. {instance_tail}"
                )
    elif resource_type == EBS_VOLUME:
        if not _is_true(props.get("encrypted")):
            messages.append(
                "This EBS volume is not encrypted; a snapshot or a detached copy exposes its data. "
                f"Set encrypted=True (optionally with kmsKeyId). {volume_tail}"
            )
    elif resource_type == LAUNCH_TEMPLATE:
        for i, mapping in enumerate(_seq(props.get("blockDeviceMappings"))):
            ebs = mapping.get("ebs") if isinstance(mapping, Mapping) else None
            # A volume made from a snapshot takes the snapshot's encryption, and EC2 refuses an encryption
            # value with a snapshot: the fleet's warm-cache snapshots are taken only of encrypted volumes
            # (scripts/snapshot-cache.sh refuses others).
            from_snapshot = isinstance(ebs, Mapping) and bool(raw(ebs.get("snapshotId")))
            if isinstance(ebs, Mapping) and not from_snapshot and not _is_true(ebs.get("encrypted")):
                messages.append(
                    f"blockDeviceMappings[{i}].ebs.encrypted is not 'true'. Set it on every EBS "
                    f"mapping. {instance_tail}"
                )
    return messages


# --------------------------------------------------------------------------------------------------
# Detailed monitoring (policy: detailed-monitoring)


def check_detailed_monitoring(resource_type: str, props: Props) -> list[str]:
    if resource_type == INSTANCE:
        enabled = _is_true(props.get("monitoring"))
    elif resource_type == LAUNCH_TEMPLATE:
        monitoring = props.get("monitoring")
        enabled = isinstance(monitoring, Mapping) and _is_true(monitoring.get("enabled"))
    else:
        return []
    if enabled:
        return []
    return [
        "Detailed (1-minute) CloudWatch monitoring is off, so a GPU host that stops answering shows up "
        f"5 minutes late in metrics and alarms. Set monitoring=True. {anchor('Checkov CKV_AWS_126')}"
    ]


# --------------------------------------------------------------------------------------------------
# Log retention (policy: log-retention)


def check_log_retention(resource_type: str, props: Props) -> list[str]:
    """A CloudWatch Logs group must say how long it keeps its events (unset or 0: forever)."""
    if resource_type != LOG_GROUP:
        return []
    days = raw(props).get("retentionInDays") if isinstance(raw(props), Mapping) else None
    if _is_unknown(days) or (_as_int(days) or 0) > 0:
        return []
    return [
        "retentionInDays is not set (or 0): CloudWatch Logs keeps every event forever, and the account pays "
        "for it every month; an access log also keeps client addresses with no end. Set retentionInDays "
        f"(the product sets logRetentionDays, 30 by default). {anchor('Checkov CKV_AWS_66')}"
    ]


# --------------------------------------------------------------------------------------------------
# Encrypted notifications (policies: sns-encrypted, kms-key-rotation)


def check_sns_encrypted(resource_type: str, props: Props) -> list[str]:
    """An SNS topic must be encrypted at rest (its messages name the stack, its alarms and their reasons)."""
    if resource_type != SNS_TOPIC:
        return []
    key = raw(props).get("kmsMasterKeyId") if isinstance(raw(props), Mapping) else None
    if _is_unknown(key) or (isinstance(key, str) and key.strip()):
        return []
    return [
        "kmsMasterKeyId is not set: the topic's messages are stored unencrypted. Give it a KMS key whose policy "
        "lets the services that publish use it (CloudWatch cannot publish to a topic under SNS's AWS managed key, "
        f"alias/aws/sns). {anchor('Checkov CKV_AWS_26')}"
    ]


def check_kms_key_rotation(resource_type: str, props: Props) -> list[str]:
    """A customer managed KMS key should rotate its key material every year."""
    if resource_type != KMS_KEY:
        return []
    rotation = raw(props).get("enableKeyRotation") if isinstance(raw(props), Mapping) else None
    if _is_unknown(rotation) or rotation is True:
        return []
    return [f"enableKeyRotation is not true: the key's material never changes. {anchor('Checkov CKV_AWS_7')}"]


# --------------------------------------------------------------------------------------------------
# Ephemeral public addresses (policy: no-ephemeral-public-ip)


def check_ephemeral_public_ip(resource_type: str, props: Props) -> list[str]:
    if resource_type == INSTANCE:
        places = [("associatePublicIpAddress", props.get("associatePublicIpAddress"))]
    elif resource_type == LAUNCH_TEMPLATE:
        return _launch_template_public_ips(props)
    else:
        return []
    return [
        f"{where} is true: the instance gets an ephemeral public address that changes on every stop/start "
        "and is easy to leave out of reviews. If it must be reachable, give it an Elastic IP (as the "
        "product does) and keep exposure to the security-group allowlists; otherwise set it to False. "
        f"{anchor('Checkov CKV_AWS_88')}"
        for where, value in places
        if _is_true(value)
    ]


def _is_false(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def _launch_template_public_ips(props: Props) -> list[str]:
    """Every interface a launch template declares must say "false": unset, the subnet's
    mapPublicIpOnLaunch decides, and an Auto Scaling group's instances cannot get an Elastic IP instead."""
    messages = []
    for i, nic in enumerate(_seq(raw(props).get("networkInterfaces"))):
        nic = raw(nic)
        value = nic.get("associatePublicIpAddress") if isinstance(nic, Mapping) else None
        if _is_false(value) or _is_unknown(value):
            continue
        shown = "true" if _is_true(value) else "not set (the subnet's mapPublicIpOnLaunch decides)"
        messages.append(
            f"This launch template's networkInterfaces[{i}].associatePublicIpAddress is {shown}: every "
            "instance launched from it may get an ephemeral public address, and instances of an Auto Scaling "
            "group cannot use an Elastic IP instead. Set associatePublicIpAddress='false' and reach the "
            "instances through a load balancer (or SSM). "
            f"{anchor('Checkov CKV_AWS_88', 'AWS Security Hub EC2.25')}"
        )
    return messages


# --------------------------------------------------------------------------------------------------
# Credentials in inputs (policies: no-plaintext-credentials, credentials-as-secrets)


def _env_name(entry: str) -> str:
    return entry.split("=", 1)[0].strip()


def is_credential_env_name(name: str) -> bool:
    upper = name.upper()
    return upper in CREDENTIAL_ENV_NAMES or _CREDENTIAL_ENV_NAME_RE.search(upper) is not None


def is_credential_slot(
    resource_type: str, path: Path, value: Any, secret_outputs: frozenset[str] = frozenset()
) -> bool:
    """Whether a string at `path` is a place built to carry a credential.

    Such values are fine as long as they are Pulumi secrets; the remediation policy makes sure of
    that. Anywhere else, a key or token is a leak whatever its secretness. `secret_outputs` is the
    resource's additionalSecretOutputs option: generated provider SDKs list there every property their
    schema marks secret (pulumi-command's `connection`, SSM `value`, Secrets Manager `secretString`),
    and it is the one secrecy signal a validate callback can see.
    """
    if not path:
        return False
    if isinstance(path[0], str) and path[0] in secret_outputs:
        return True
    last = path[-1]
    if isinstance(last, str) and last in CREDENTIAL_PROPERTY_NAMES:
        return True
    if resource_type == CONTAINER and len(path) == 2 and path[0] == "envs" and isinstance(value, str):
        return is_credential_env_name(_env_name(value))
    if (
        resource_type == CONTAINER
        and len(path) == 3
        and path[0] == "uploads"
        and path[2] == "content"
        and isinstance(value, str)
    ):
        # A file uploaded into a container (a proxy's TLS key) may be a key; only then is it a slot.
        return bool(_credential_kinds(value))
    if resource_type.startswith("command:"):
        if path == ("stdin",):
            return True
        if len(path) == 2 and path[0] == "environment" and isinstance(path[1], str):
            return is_credential_env_name(path[1])
    return False


def _has_value(resource_type: str, path: Path, value: str) -> bool:
    if _is_unknown(value):
        return False
    if resource_type == CONTAINER and path[:1] == ("envs",):
        return bool(value.split("=", 1)[1].strip()) if "=" in value else False
    return bool(value.strip())


def iter_strings(value: Any, path: Path = ()) -> Iterator[tuple[Path, str]]:
    """Every string leaf with its path, seen through proxies and secrets without raising on unknowns."""
    value = raw(value)
    if isinstance(value, Secret):
        yield from iter_strings(value.value, path)
    elif isinstance(value, str):
        if not _is_unknown(value):
            yield path, value
    elif isinstance(value, Mapping):
        for key in value:
            yield from iter_strings(value[key], (*path, key))
    elif _is_seq(value):
        for i, item in enumerate(value):
            yield from iter_strings(item, (*path, i))


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(root)"


def _credential_kinds(text: str) -> list[str]:
    kinds = []
    if _PEM_PRIVATE_KEY_RE.search(text):
        kinds.append("private key material (-----BEGIN ... PRIVATE KEY-----)")
    if _HF_TOKEN_RE.search(text):
        kinds.append("a Hugging Face token (hf_...)")
    return kinds


_GZIP_MAGIC: Final = b"\x1f\x8b"
# EC2 takes 16 KiB of user data; cloud-init documents rarely inflate past a few hundred KiB, and the
# cap keeps a hostile gzip from exhausting the analyzer.
_MAX_INFLATED_USER_DATA: Final = 4 * 1024 * 1024


def _decode_base64(text: str) -> str | None:
    """Text of base64 user data, gunzipped when it is gzip (cloud-init accepts both)."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if data.startswith(_GZIP_MAGIC):
        try:
            data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, _MAX_INFLATED_USER_DATA)
        except zlib.error:
            return None
    return data.decode("utf-8", errors="replace")


# cloud-init's `ssh_keys:` entries that install a host key: `ed25519_private: |` (block) or
# `ed25519_private: '-----BEGIN...` (quoted, as yaml.safe_dump writes it), and the like.
_HOST_KEY_ENTRY_RE: Final = re.compile(r"(?:rsa|dsa|ecdsa|ed25519)_private:[ \t]*(?:[|>][-+]?[ \t]*\n[ \t]*|[\"']?)$")


def _only_host_keys(text: str) -> bool:
    """Whether every private key in a cloud-init document is an `ssh_keys` host key."""
    starts = [m.start() for m in _PEM_PRIVATE_KEY_RE.finditer(text)]
    return bool(starts) and all(_HOST_KEY_ENTRY_RE.search(text, 0, start) for start in starts)


def _user_data_texts(resource_type: str, props: Props) -> list[tuple[str, str]]:
    source = raw(props)
    texts = []
    if resource_type == INSTANCE:
        plain = source.get("userData")
        if isinstance(plain, str) and not _is_unknown(plain):
            texts.append(("userData", plain))
        encoded = source.get("userDataBase64")
        if isinstance(encoded, str) and (decoded := _decode_base64(encoded)) is not None:
            texts.append(("userDataBase64", decoded))
    elif resource_type == LAUNCH_TEMPLATE:
        encoded = source.get("userData")
        if isinstance(encoded, str) and (decoded := _decode_base64(encoded)) is not None:
            texts.append(("userData", decoded))
    return texts


def check_plaintext_credentials(
    resource_type: str,
    props: Props,
    secret_outputs: frozenset[str] = frozenset(),
    allow_host_key_in_user_data: bool = False,
) -> list[str]:
    tail_user_data = anchor("Checkov CKV_AWS_46")
    source = raw(props)
    messages = []
    for where, text in _user_data_texts(resource_type, props):
        host_keys_only = _only_host_keys(text)
        findings = [] if allow_host_key_in_user_data and host_keys_only else _credential_kinds(text)
        findings += [f"an inline {m.group(1)} value" for m in _SCRIPT_CREDENTIAL_RE.finditer(text)]
        findings += ["an inline --api-key value" for _ in _API_KEY_FLAG_RE.finditer(text)]
        if findings:
            host_key_note = (
                " The key is a cloud-init `ssh_keys` host key: if you accept that the holders of "
                "ec2:DescribeInstanceAttribute and the host's own processes can read it (IMDSv2 with hop "
                "limit 1 keeps containers out), set this policy's `allowSshHostKeyInUserData: true`."
                if host_keys_only and not allow_host_key_in_user_data
                else ""
            )
            messages.append(
                f"{where} contains {', '.join(dict.fromkeys(findings))}. User data is not encrypted even "
                "when the Pulumi value is a secret: anyone with ec2:DescribeInstanceAttribute and every "
                "process on the host (via IMDS) can read it. Hand the key to the container through the "
                "docker provider (envs as a Pulumi secret), or fetch it at boot from SSM Parameter "
                f"Store/Secrets Manager.{host_key_note} {tail_user_data}"
            )
    user_data_keys = {"userData", "userDataBase64"} if resource_type in (INSTANCE, LAUNCH_TEMPLATE) else set()
    for path, text in iter_strings(source):
        if path[:1] and path[0] in user_data_keys:
            continue  # reported above with the user-data specific advice
        if is_credential_slot(resource_type, path, text, secret_outputs):
            continue
        kinds = _credential_kinds(text)
        if kinds:
            messages.append(
                f"{_dotted(path)} contains {' and '.join(kinds)}. It would be stored in the Pulumi state "
                "and shown in diffs and logs, and this field is not meant to carry credentials. Pass keys "
                "only through credential inputs (connection.privateKey, a container env var such as "
                "HF_TOKEN) wrapped in pulumi.Output.secret / a secret config value. "
                f"{anchor('Checkov CKV_AWS_46', 'CWE-312')}"
            )
    if resource_type == CONTAINER:
        for key in ("command", "entrypoints"):
            argv = " ".join(s for _, s in iter_strings(source.get(key)))
            if _API_KEY_FLAG_RE.search(argv):
                messages.append(
                    f"{key} passes --api-key on the command line, where `docker inspect` and `ps` on the "
                    "host show it. Set VLLM_API_KEY in envs (as a Pulumi secret) instead; vLLM reads it. "
                    f"{anchor('CWE-214')}"
                )
    if resource_type == SSM_PARAMETER and source.get("type") != "SecureString":
        value = source.get("value")
        inner = value.value if isinstance(value, Secret) else value
        if isinstance(inner, str) and _credential_kinds(inner):
            messages.append(
                f"This SSM parameter holds {' and '.join(_credential_kinds(inner))} but its type is "
                f"{source.get('type')!r}, so AWS stores and returns it unencrypted. Set type='SecureString' "
                f"(optionally with keyId). {anchor('CWE-312')}"
            )
    return messages


def secretize_credentials(
    resource_type: str, props: Props, secret_outputs: frozenset[str] = frozenset()
) -> dict[str, Any] | None:
    """Props with every non-secret value in a credential slot wrapped in `Secret`, or None if none.

    Only the remediation path shows a policy which values are secrets (see README), so this runs
    there: the engine then stores and displays those values encrypted, as for any Pulumi secret.
    """
    changed = False

    def walk(value: Any, path: Path) -> Any:
        nonlocal changed
        value = raw(value)
        if isinstance(value, Secret) or value is None or _is_unknown(value):
            return value
        if len(path) == 1 and path[0] in secret_outputs and not isinstance(value, str):
            # A whole object the resource declares secret (pulumi-command's `connection`).
            changed = True
            return Secret(walk_plain(value))
        if isinstance(value, str):
            if is_credential_slot(resource_type, path, value, secret_outputs) and _has_value(
                resource_type, path, value
            ):
                changed = True
                return Secret(value)
            return value
        if isinstance(value, Mapping):
            return {key: walk(value[key], (*path, key)) for key in value}
        if _is_seq(value):
            return [walk(item, (*path, i)) for i, item in enumerate(value)]
        return value

    def walk_plain(value: Any) -> Any:
        # Unwrap proxies only; the engine reads one Secret around the whole object.
        value = raw(value)
        if isinstance(value, Mapping):
            return {key: walk_plain(value[key]) for key in value}
        if _is_seq(value):
            return [walk_plain(item) for item in value]
        return value

    result = walk(props, ())
    return result if changed else None


# --------------------------------------------------------------------------------------------------
# Cache volume protection (policy: cache-volume-protected)


def is_cache_volume(props: Props) -> bool:
    tags = props.get("tags")
    return isinstance(tags, Mapping) and tags.get(CACHE_ROLE_TAG) == CACHE_ROLE_VALUE


def check_cache_volume_protected(props: Props, protect: bool) -> list[str]:
    """The cache volume must survive `pulumi destroy` and replacements: `protect` (destroy refused), or
    retain_on_delete (destroy keeps it in AWS). Policy packs are not shown retain_on_delete, so the
    program states it with the on-destroy tag; its unit tests check the option goes with the tag."""
    if not is_cache_volume(props) or protect:
        return []
    tags = props.get("tags")
    if isinstance(tags, Mapping) and tags.get(ON_DESTROY_TAG) == ON_DESTROY_RETAIN:
        return []
    return [
        f"This volume is tagged {CACHE_ROLE_TAG}={CACHE_ROLE_VALUE} (the Hugging Face/vLLM cache, tens "
        "of GB that take long to download and compile again) but is neither protected nor marked retained, "
        "so `pulumi destroy` or a replacement deletes it. Create it with "
        "pulumi.ResourceOptions(retain_on_delete=True) and the tag "
        f"{ON_DESTROY_TAG}={ON_DESTROY_RETAIN} (policy packs cannot see retain_on_delete), or with protect=True. "
        f"{anchor('product requirement: the cache volume outlives the stack (issues 5, 11)')}"
    ]


# --------------------------------------------------------------------------------------------------
# vLLM image floor (policy: vllm-image-floor)


@dataclass(frozen=True)
class ImageRef:
    repository: str
    tag: str | None
    digest: str | None


def parse_image_ref(ref: str) -> ImageRef:
    name, _, digest = ref.strip().partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return ImageRef(name[:colon], name[colon + 1 :], digest or None)
    return ImageRef(name, None, digest or None)


def is_vllm_openai_image(ref: str) -> bool:
    # Mirrors keep the last path component (registry.example.com/mirror/vllm-openai).
    repository = parse_image_ref(ref).repository.lower()
    return repository.rsplit("/", 1)[-1] == "vllm-openai"


_VERSION_RE: Final = re.compile(r"^v?(\d+(?:\.\d+)*)(.*)$")
_PRERELEASE_RE: Final = re.compile(r"^[.-]?(?:rc|a|alpha|b|beta|dev|pre)", re.IGNORECASE)


def parse_version(text: str) -> tuple[tuple[int, ...], bool] | None:
    """(release numbers, is_prerelease) of `v0.10.1.1`, `0.32.0`, `v0.22.0rc1`; None if not a version."""
    match = _VERSION_RE.match(text.strip())
    if not match:
        return None
    numbers = tuple(int(n) for n in match.group(1).split("."))
    return numbers, bool(_PRERELEASE_RE.match(match.group(2)))


def _below(version: tuple[tuple[int, ...], bool], floor: tuple[tuple[int, ...], bool]) -> bool:
    width = max(len(version[0]), len(floor[0]))
    mine = version[0] + (0,) * (width - len(version[0]))
    theirs = floor[0] + (0,) * (width - len(floor[0]))
    return mine < theirs or (mine == theirs and version[1] and not floor[1])


@dataclass(frozen=True)
class ImageProblem:
    what: str
    below_floor: bool  # only a below-floor version can be accepted with the insecure-image opt-in


def version_problem(version_text: str, floor: str, what: str) -> ImageProblem | None:
    floor_version = parse_version(floor)
    if floor_version is None:
        raise ValueError(f"minimumVersion {floor!r} is not a version")
    version = parse_version(version_text)
    if version is None:
        return ImageProblem(f"{what} is not pinned to a release ({version_text!r})", False)
    if _below(version, floor_version):
        return ImageProblem(f"{what} is vLLM {version_text}, below the security floor {floor}", True)
    return None


def image_problem(ref: str, floor: str) -> ImageProblem | None:
    parsed = parse_image_ref(ref)
    if parsed.tag is None or parsed.tag.lower() in ("latest", "nightly"):
        pinned = "only by digest, so its version is unknown" if parsed.digest else "to no release"
        shown = parsed.tag or "no tag"
        return ImageProblem(f"image {ref} ({shown}) is pinned {pinned}", False)
    return version_problem(parsed.tag, floor, f"image {ref}")


def image_floor_advice(floor: str) -> str:
    return (
        f"vLLM releases before {floor} carry {VLLM_FLOOR_ADVISORIES}. Use a pinned tag at or above the "
        f"floor, e.g. vllm/vllm-openai:v0.32.0 (add @sha256:... to pin the bytes). To run an older "
        f"release knowingly, label the container {INSECURE_IMAGE_OPT_IN_LABEL}=true AND deploy the "
        f"product's proxy container (label {ROLE_LABEL}={PROXY_ROLE_VALUE}) in front of it. "
        f"{anchor(*VLLM_FLOOR_ADVISORY_IDS)}"
    )


UNPINNED_ADVICE: Final = (
    "An unpinned image changes under the stack at every pull and cannot be checked against the "
    "security floor. Pin a release tag such as vllm/vllm-openai:v0.32.0 (optionally @sha256:...). "
    + anchor("vLLM security floor", "Checkov CKV_DOCKER_7 (no latest tag)")
)


class StackResource(Protocol):
    """What the stack checks read from pulumi-policy's `PolicyResource`."""

    resource_type: str
    urn: str
    name: str

    @property
    def props(self) -> Mapping[str, Any]: ...

    @property
    def dependencies(self) -> Sequence[Any]: ...

    @property
    def property_dependencies(self) -> Mapping[str, Sequence[Any]]: ...


def _known(props: Props, key: str) -> Any:
    # A stack check must not abort on one value that preview cannot know yet.
    try:
        return props.get(key)
    except UnknownValueError:
        return None


def container_labels(props: Props) -> dict[str, str]:
    labels = _known(props, "labels")
    if isinstance(labels, Mapping):
        return {str(k): str(v) for k, v in labels.items()}
    out = {}
    for item in _seq(labels):
        if isinstance(item, Mapping) and isinstance(item.get("label"), str):
            out[item["label"]] = str(item.get("value", ""))
    return out


def _depends_on(resource: StackResource, target: StackResource) -> bool:
    related = list(resource.dependencies)
    for deps in resource.property_dependencies.values():
        related.extend(deps)
    return any(getattr(r, "urn", None) == target.urn for r in related)


def check_vllm_images(resources: Sequence[StackResource], floor: str = VLLM_SECURITY_FLOOR) -> list[tuple[str, str]]:
    """(urn, message) for every vLLM image or container below the floor or unpinned."""
    containers = [r for r in resources if r.resource_type == CONTAINER]
    labels = {c.urn: container_labels(c.props) for c in containers}
    proxy_present = any(lbl.get(ROLE_LABEL) == PROXY_ROLE_VALUE for lbl in labels.values())

    def accepted(problem: ImageProblem, users: Sequence[StackResource]) -> bool:
        return (
            problem.below_floor
            and proxy_present
            and bool(users)
            and all(labels[u.urn].get(INSECURE_IMAGE_OPT_IN_LABEL, "").lower() == "true" for u in users)
        )

    def explain(problem: ImageProblem) -> str:
        if not problem.below_floor:
            return f"{problem.what}. {UNPINNED_ADVICE}"
        return f"{problem.what}. {image_floor_advice(floor)}"

    found: list[tuple[str, str]] = []
    for container in containers:
        problems = []
        version = labels[container.urn].get(VLLM_VERSION_LABEL)
        if version is not None:
            problem = version_problem(version, floor, f"container label {VLLM_VERSION_LABEL}={version}")
            if problem:
                problems.append(problem)
        image = _known(container.props, "image")
        if isinstance(image, str) and is_vllm_openai_image(image):
            problem = image_problem(image, floor)
            if problem:
                problems.append(problem)
        found += [(container.urn, explain(p)) for p in problems if not accepted(p, [container])]

    for image_resource in (r for r in resources if r.resource_type == REMOTE_IMAGE):
        name = _known(image_resource.props, "name")
        if not isinstance(name, str) or not is_vllm_openai_image(name):
            continue
        problem = image_problem(name, floor)
        if problem is None:
            continue
        users = [c for c in containers if _depends_on(c, image_resource) or _known(c.props, "image") == name]
        if not accepted(problem, users):
            found.append((image_resource.urn, explain(problem)))
    return found


# --------------------------------------------------------------------------------------------------
# SSH host-key checking and container isolation (policies: ssh-host-key-verified, container-isolation)

_HOST_KEY_OFF: Final = (
    (
        re.compile(r"StrictHostKeyChecking\s*[= ]\s*[\"']?(no|off|accept-new)\b", re.IGNORECASE),
        "StrictHostKeyChecking={value}",
    ),
    (
        re.compile(r"UserKnownHostsFile\s*[= ]\s*[\"']?(/dev/null)\b", re.IGNORECASE),
        "UserKnownHostsFile={value}",
    ),
)
_HOST_KEY_TAIL: Final = anchor("CWE-322 (key exchange without entity authentication)", "MITRE ATT&CK T1557")


def _ssh_opts(value: Any) -> list[str]:
    # pulumi-docker sends provider inputs that are not strings JSON-encoded (`pulumi.runtime.to_json`),
    # and stack config (`docker:sshOpts`) is a string too; accept a real list as well.
    value = raw(value)
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return [value]
        value = decoded if isinstance(decoded, list) else [value]
    return [s for _, s in iter_strings(value)]


def check_docker_ssh_opts(provider_props: Props, subject: str = "This docker provider") -> list[str]:
    opts = " ".join(_ssh_opts(raw(provider_props).get("sshOpts")))
    found = []
    for pattern, shown in _HOST_KEY_OFF:
        for match in pattern.finditer(opts):
            found.append(shown.format(value=match.group(1)))
    if not found:
        return []
    return [
        f"{subject} passes ssh options {', '.join(found)}, which accept any host key: whoever "
        "intercepts the connection gets the Docker API (root on the host) and every secret sent to it. "
        "Pin the host key instead: write it to a known_hosts file and pass "
        "['-o', 'StrictHostKeyChecking=yes', '-o', 'UserKnownHostsFile=<that file>']. "
        f"{_HOST_KEY_TAIL}"
    ]


def check_remote_command_host_key(props: Props) -> list[str]:
    messages = []
    connection = props.get("connection")
    hops: list[tuple[str, Any]] = [("connection", connection)]
    if isinstance(connection, Mapping) and isinstance(connection.get("proxy"), Mapping):
        hops.append(("connection.proxy", connection.get("proxy")))
    for where, hop in hops:
        if not isinstance(hop, Mapping):
            continue
        host_key = hop.get("hostKey")
        if not (isinstance(host_key, str) and host_key.strip()):
            messages.append(
                f"{where}.hostKey is not set, and pulumi-command then accepts any host key, so a "
                "man-in-the-middle receives the commands and the private key's signature. Set hostKey "
                f"to the server's public host key (e.g. from the tls.PrivateKey you install as host key). "
                f"{_HOST_KEY_TAIL}"
            )
    return messages


_DOCKER_SOCKETS: Final = ("/var/run/docker.sock", "/run/docker.sock")


def _exposes_docker_socket(host_path: str) -> bool:
    # The socket itself or any directory above it (/, /run, /var/run) hands over the Docker API.
    path = posixpath.normpath(host_path.strip())
    if not path.startswith("/"):
        return False
    return path == "/" or any(sock == path or sock.startswith(path + "/") for sock in _DOCKER_SOCKETS)


def check_container_isolation(props: Props) -> list[str]:
    tail = anchor("CIS Docker Benchmark 5.4 (privileged)", "CIS Docker Benchmark 5.31 (docker socket)")
    messages = []
    if _is_true(props.get("privileged")):
        messages.append(
            "privileged=True gives the container every capability and all host devices, i.e. root on "
            "the GPU host. Remove it; GPUs are passed with `gpus`/device requests, not privileged mode. "
            f"{tail}"
        )
    sources: list[tuple[str, Any]] = []
    sources += [
        (f"mounts[{i}].source", m.get("source"))
        for i, m in enumerate(_seq(props.get("mounts")))
        if isinstance(m, Mapping)
    ]
    sources += [
        (f"volumes[{i}].hostPath", v.get("hostPath"))
        for i, v in enumerate(_seq(props.get("volumes")))
        if isinstance(v, Mapping)
    ]
    for where, source in sources:
        if isinstance(source, str) and _exposes_docker_socket(source):
            messages.append(
                f"{where} mounts {source}, which exposes the Docker socket: any process in the container "
                f"can start a privileged container and own the host. Do not mount it. {tail}"
            )
    return messages


# --------------------------------------------------------------------------------------------------
# API key strength (policy: api-key-length)


def check_api_key_length(
    resource_name: str,
    props: Props,
    min_length: int = DEFAULT_API_KEY_MIN_LENGTH,
    name_marker: str = DEFAULT_API_KEY_NAME_MARKER,
) -> list[str]:
    if name_marker.lower() not in resource_name.lower():
        return []
    length = _as_int(props.get("length"))
    if length is not None and length >= min_length:
        return []
    return [
        f"The API key {resource_name!r} is {length} characters long; the endpoint is reachable from the "
        f"allowed networks and a short key can be guessed. Set length={min_length} or more. "
        f"{anchor('CWE-521 (weak credentials)', 'CWE-331 (insufficient entropy)')}"
    ]


# --------------------------------------------------------------------------------------------------
# Load balancer TLS and request handling (policies: alb-https-listener, alb-http-redirects-to-https,
# alb-request-hygiene)

HTTPS_PORT: Final = 443
# ELB's TLS 1.2+ policies with only forward-secret AEAD ciphers (no CBC, no SHA-1): the recommended
# policy, which the product's ServiceLoadBalancer uses, its restricted variant, and TLS 1.3 only.
DEFAULT_ALLOWED_SSL_POLICIES: Final = (
    "ELBSecurityPolicy-TLS13-1-2-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
    "ELBSecurityPolicy-TLS13-1-3-2021-06",
)
DESYNC_MODES_ALLOWED: Final = frozenset({"defensive", "strictest"})
_HTTPS_TAIL: Final = anchor("Checkov CKV_AWS_2", "Checkov CKV_AWS_103", "AWS Security Hub ELB.17")


def _known_text(props: Props, key: str) -> str | None:
    """A string property, or None when it is unset, not a string or unknown at preview."""
    value = raw(props).get(key) if isinstance(raw(props), Mapping) else None
    return value if isinstance(value, str) and not _is_unknown(value) else None


def _listener_protocol(props: Props) -> str:
    # An Application Load Balancer's listener speaks HTTP unless told otherwise.
    return (_known_text(props, "protocol") or "HTTP").upper()


def check_alb_https_listener(
    props: Props, allowed_policies: Sequence[str] = DEFAULT_ALLOWED_SSL_POLICIES
) -> list[str]:
    """Port 443 speaks HTTPS, and an HTTPS listener has a certificate and an allowed TLS policy."""
    protocol = _listener_protocol(props)
    port = _as_int(raw(props).get("port"))
    if protocol not in ("HTTP", "HTTPS"):
        return []  # a Network Load Balancer's TCP/TLS/UDP listener
    if protocol == "HTTP":
        if port != HTTPS_PORT:
            return []
        return [
            "This listener serves plain HTTP on port 443: clients that expect TLS send the API key and the "
            "prompts in clear text. Set protocol='HTTPS' with certificateArn (an ACM certificate for your "
            f"domain) and sslPolicy='{DEFAULT_ALLOWED_SSL_POLICIES[0]}'. {_HTTPS_TAIL}"
        ]
    messages = []
    certificate = raw(props).get("certificateArn")
    if not _is_unknown(certificate) and not (isinstance(certificate, str) and certificate.strip()):
        messages.append(
            "This HTTPS listener has no certificateArn, so AWS refuses it or it serves no certificate "
            "clients can verify. Set certificateArn to an issued ACM certificate for the endpoint's domain "
            f"(the CertificateValidation's certificateArn, so the listener waits for issuance). {_HTTPS_TAIL}"
        )
    policy = raw(props).get("sslPolicy")
    if not _is_unknown(policy) and policy not in allowed_policies:
        shown = "not set (AWS then uses ELBSecurityPolicy-2016-08, which accepts TLS 1.0)" if policy is None \
            else repr(policy)
        recommended = next(iter(allowed_policies), DEFAULT_ALLOWED_SSL_POLICIES[0])
        messages.append(
            f"This HTTPS listener's sslPolicy is {shown}, not one of the allowed policies "
            f"({', '.join(allowed_policies)}). Set sslPolicy='{recommended}' (TLS 1.2 and 1.3 with "
            f"forward-secret ciphers only). {_HTTPS_TAIL}"
        )
    return messages


def check_alb_request_hygiene(resource_type: str, props: Props) -> list[str]:
    """An Application Load Balancer drops invalid headers and mitigates HTTP desync."""
    if resource_type not in LOAD_BALANCER_TYPES or (_known_text(props, "loadBalancerType") or "application") != \
            "application":
        return []
    messages = []
    drop = raw(props).get("dropInvalidHeaderFields")
    if not _is_unknown(drop) and not _is_true(drop):
        messages.append(
            "dropInvalidHeaderFields is not true: headers that are not valid HTTP reach the targets, where a "
            "proxy and vLLM may read them differently (request smuggling, header injection). Set "
            f"dropInvalidHeaderFields=True. {anchor('Checkov CKV_AWS_131', 'AWS Security Hub ELB.4')}"
        )
    mode = raw(props).get("desyncMitigationMode")
    if isinstance(mode, str) and not _is_unknown(mode) and mode.lower() not in DESYNC_MODES_ALLOWED:
        messages.append(
            f"desyncMitigationMode is {mode!r}: requests that are ambiguous under RFC 7230 (HTTP desync) are "
            "passed to the targets. Set desyncMitigationMode='strictest' (or 'defensive', AWS's default). "
            f"{anchor('Checkov CKV_AWS_328', 'AWS Security Hub ELB.12')}"
        )
    return messages


def _redirects_to_https(action: Any) -> bool:
    action = raw(action)
    if not isinstance(action, Mapping) or action.get("type") != "redirect":
        return False
    redirect = raw(action.get("redirect"))
    return isinstance(redirect, Mapping) and str(redirect.get("protocol", "")).upper() == "HTTPS"


def _linked_urns(resource: StackResource, key: str) -> list[str]:
    return [str(getattr(r, "urn", "")) for r in resource.property_dependencies.get(key, ())]


def _load_balancer_key(listener: StackResource) -> str:
    """Which load balancer a listener belongs to: the engine's link (known at preview too), else the ARN,
    else the stack as a whole."""
    linked = _linked_urns(listener, "loadBalancerArn")
    return linked[0] if linked else _known_text(listener.props, "loadBalancerArn") or "(stack)"


def check_http_redirects(resources: Sequence[StackResource]) -> list[tuple[str, str]]:
    """(urn, message) for each plain HTTP listener beside an HTTPS one that does anything but redirect."""
    listeners = [r for r in resources if r.resource_type in LISTENER_TYPES]
    keys = {r.urn: _load_balancer_key(r) for r in listeners}
    if "(stack)" in keys.values():  # one listener's load balancer is unknown: judge the stack as a whole
        keys = dict.fromkeys(keys, "(stack)")
    with_https = {keys[r.urn] for r in listeners if _listener_protocol(r.props) == "HTTPS"}
    found = []
    for listener in listeners:
        if _listener_protocol(listener.props) != "HTTP" or keys[listener.urn] not in with_https:
            continue
        actions = raw(raw(listener.props).get("defaultActions"))
        if _is_unknown(actions) or (_seq(actions) and all(_redirects_to_https(a) for a in _seq(actions))):
            continue
        found.append((
            listener.urn,
            f"The HTTP listener {listener.name!r} does more than redirect to HTTPS although its load balancer has "
            "an HTTPS listener: requests (with the API key) can still travel in clear text. Give it one "
            "default action, type='redirect' with redirect={'protocol': 'HTTPS', 'port': '443', "
            f"'statusCode': 'HTTP_301'}}, and no rules. {anchor('AWS Security Hub ELB.1', 'Checkov CKV2_AWS_20')}",
        ))
    return found


# --------------------------------------------------------------------------------------------------
# ECS task secrets (policy: ecs-secrets-by-reference)

_SECRET_REFERENCE_RE: Final = re.compile(
    r"^arn:aws[a-z-]*:(?:ssm:[a-z0-9-]+:\d{12}:parameter/\S+|secretsmanager:[a-z0-9-]+:\d{12}:secret:\S+)$"
)
_SECRETS_TAIL: Final = anchor("AWS Security Hub ECS.8", "CWE-312")


def container_definitions(props: Props) -> list[Mapping[str, Any]] | None:
    """The task's container definitions, or None when unknown at preview or not JSON."""
    text = raw(props).get("containerDefinitions") if isinstance(raw(props), Mapping) else None
    if not isinstance(text, str) or _is_unknown(text):
        return None
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return [d for d in parsed if isinstance(d, Mapping)] if isinstance(parsed, list) else None


def _container_env_problems(where: str, definition: Mapping[str, Any]) -> list[str]:
    return [
        f"{where} sets {entry.get('name')} in `environment`, as a plain value that the task definition, "
        "DescribeTaskDefinition and the Pulumi state all show. Move it to `secrets` as "
        "{'name': ..., 'valueFrom': <SSM SecureString parameter or Secrets Manager ARN>}. "
        f"{_SECRETS_TAIL}"
        for entry in _seq(definition.get("environment"))
        if isinstance(entry, Mapping)
        and isinstance(entry.get("name"), str)
        and is_credential_env_name(entry["name"])
        and str(entry.get("value") or "").strip()
    ]


def _container_secret_problems(where: str, definition: Mapping[str, Any]) -> list[str]:
    # The value is never repeated: a wrong `valueFrom` may be the credential itself.
    return [
        f"{where}'s secret {entry.get('name')!r} has a valueFrom that is not an SSM parameter ARN "
        "(arn:aws:ssm:REGION:ACCOUNT:parameter/NAME) or a Secrets Manager ARN "
        "(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME). Reference the parameter by its full ARN, which "
        f"the execution role's policy grants. {_SECRETS_TAIL}"
        for entry in _seq(definition.get("secrets"))
        if isinstance(entry, Mapping)
        and not _SECRET_REFERENCE_RE.match(str(entry.get("valueFrom") or "").strip())
    ]


def check_ecs_task_secrets(props: Props) -> list[str]:
    messages: list[str] = []
    for i, definition in enumerate(container_definitions(props) or ()):
        where = f"containerDefinitions[{i}] ({definition.get('name') or 'unnamed'})"
        messages += _container_env_problems(where, definition)
        messages += _container_secret_problems(where, definition)
    return messages


# --------------------------------------------------------------------------------------------------
# Fleet ingress (policy: fleet-ingress-from-load-balancer-only)

# The security groups of the fleet's instances and tasks: the components tag them with their role.
FLEET_ROLE_VALUES: Final = frozenset({_NAMES.FLEET_INSTANCES_ROLE, _NAMES.FLEET_TASKS_ROLE})
_FLEET_TAIL: Final = anchor(
    "AWS Well-Architected SEC05-BP02", "product requirement: replicas reachable only through the load balancer"
)


def is_fleet_group(props: Props) -> bool:
    tags = raw(props).get("tags")
    return isinstance(raw(tags), Mapping) and raw(tags).get(ROLE_LABEL) in FLEET_ROLE_VALUES


@dataclass(frozen=True)
class GroupIngress:
    where: str
    target_keys: tuple[str, ...]  # the property naming the group the rule admits into
    cidrs: tuple[str, ...]  # CIDRs and prefix lists: any address range
    source_group: Any  # the referenced group's id (may be unknown), or None


def _shown(value: Any) -> str:
    return "(a range unknown at preview)" if _is_unknown(value) else str(value)


def _vpc_ingress(props: Props) -> GroupIngress:
    source = raw(props)
    ranges = tuple(_shown(source[k]) for k in ("cidrIpv4", "cidrIpv6", "prefixListId") if source.get(k) is not None)
    return GroupIngress("this rule", ("securityGroupId",), ranges, source.get("referencedSecurityGroupId"))


def _classic_ingress(where: str, block: Mapping[str, Any], source_key: str) -> GroupIngress:
    block = raw(block)
    ranges = tuple(
        _shown(c) for k in ("cidrBlocks", "ipv6CidrBlocks", "prefixListIds") for c in _seq(raw(block.get(k)))
    )
    source = block.get(source_key)
    if source is None and _is_true(block.get("self")):
        source = "self"
    elif _is_seq(raw(source)):
        source = next(iter(_seq(raw(source))), None)
    return GroupIngress(where, ("securityGroupId",), ranges, source)


def group_ingress(resource_type: str, props: Props) -> list[GroupIngress]:
    if resource_type == VPC_INGRESS_RULE:
        return [_vpc_ingress(props)]
    if resource_type == SECURITY_GROUP_RULE and raw(props).get("type") == "ingress":
        return [_classic_ingress("this rule", props, "sourceSecurityGroupId")]
    if resource_type == SECURITY_GROUP:
        return [
            _classic_ingress(f"inline ingress[{i}]", block, "securityGroups")
            for i, block in enumerate(_seq(raw(raw(props).get("ingress"))))
            if isinstance(raw(block), Mapping)
        ]
    return []


def _resource_id(resource: StackResource) -> str | None:
    return _known_text(resource.props, "id")


def _load_balancer_groups(resources: Sequence[StackResource]) -> set[str]:
    found: set[str] = set()
    for balancer in (r for r in resources if r.resource_type in LOAD_BALANCER_TYPES):
        found.update(g for g in _seq(raw(raw(balancer.props).get("securityGroups"))) if isinstance(g, str)
                     and not _is_unknown(g))
    return found


def _fleet_target(rule: StackResource, groups: Sequence[StackResource]) -> StackResource | None:
    """The fleet group a rule admits into: the engine's link (known at preview), else the group's id."""
    linked = set(_linked_urns(rule, "securityGroupId"))
    target_id = _known_text(rule.props, "securityGroupId")
    for group in groups:
        if group.urn in linked or (target_id is not None and target_id == _resource_id(group)):
            return group
    return None


def _ingress_problem(rule: GroupIngress, lb_groups: set[str]) -> str | None:
    if rule.cidrs:
        return f"admits the address range(s) {', '.join(rule.cidrs)}"
    if rule.source_group is None:
        return "names no source security group"
    source = rule.source_group
    if lb_groups and isinstance(source, str) and not _is_unknown(source) and source != "self" \
            and source not in lb_groups:
        return f"admits the security group {source}, which is not a load balancer's"
    return None


def check_fleet_ingress(resources: Sequence[StackResource]) -> list[tuple[str, str]]:
    """(urn, message) for each ingress into a fleet group that is not from the load balancer's group."""
    groups = [r for r in resources if r.resource_type == SECURITY_GROUP and is_fleet_group(r.props)]
    lb_groups = _load_balancer_groups(resources)
    found = []
    for resource in resources:
        if resource.resource_type == SECURITY_GROUP:
            target = resource if resource in groups else None
        elif resource.resource_type in (VPC_INGRESS_RULE, SECURITY_GROUP_RULE):
            target = _fleet_target(resource, groups)
        else:
            continue
        if target is None:
            continue
        for rule in group_ingress(resource.resource_type, resource.props):
            problem = _ingress_problem(rule, lb_groups)
            if problem:
                found.append((resource.urn, (
                    f"{rule.where} of {resource.name!r} {problem}, into the fleet's security group {target.name!r}: "
                    "the instances and tasks must be reachable only through the load balancer. Remove the "
                    "address range and set referencedSecurityGroupId (sourceSecurityGroupId for "
                    f"aws.ec2.SecurityGroupRule) to the load balancer's security group. {_FLEET_TAIL}"
                )))
    return found


# --------------------------------------------------------------------------------------------------
# Private buckets (policy: s3-bucket-private)

# BucketPublicAccessBlock's four settings: together they refuse public ACLs and public bucket policies.
PUBLIC_ACCESS_BLOCK_KEYS: Final = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
PUBLIC_CANNED_ACLS: Final = frozenset({"public-read", "public-read-write", "authenticated-read"})
_S3_TAIL: Final = anchor("AWS Security Hub S3.1, S3.5, S3.8", "Checkov CKV2_AWS_6")


def _targets_bucket(companion: StackResource, bucket: StackResource) -> bool:
    """A companion resource names the bucket: the engine's link on `bucket` (known at preview), else the known
    name or id."""
    if bucket.urn in _linked_urns(companion, "bucket"):
        return True
    named = _known_text(companion.props, "bucket")
    return named is not None and named in {_known_text(bucket.props, "bucket"), _resource_id(bucket)}


def _statements(policy_text: str) -> list[Mapping[str, Any]]:
    try:
        document = json.loads(policy_text)
    except ValueError:
        return []
    found = raw(document).get("Statement") if isinstance(raw(document), Mapping) else None
    found = [found] if isinstance(found, Mapping) else found
    return [s for s in _seq(found) if isinstance(s, Mapping)]


def _denies_plain_http(statement: Mapping[str, Any]) -> bool:
    condition = statement.get("Condition")
    bool_condition = condition.get("Bool") if isinstance(condition, Mapping) else None
    secure = bool_condition.get("aws:SecureTransport") if isinstance(bool_condition, Mapping) else None
    return statement.get("Effect") == "Deny" and str(secure).lower() == "false"


def _public_access_problem(blocks: list[StackResource]) -> str | None:
    if not blocks:
        return "has no BucketPublicAccessBlock"
    for block in blocks:
        open_keys = [k for k in PUBLIC_ACCESS_BLOCK_KEYS
                     if not _is_unknown(raw(block.props).get(k)) and not _is_true(raw(block.props).get(k))]
        if not open_keys:
            return None
    return f"has a BucketPublicAccessBlock that leaves {', '.join(open_keys)} off"


def _tls_problem(policies_: list[StackResource]) -> str | None:
    for policy in policies_:
        text = raw(policy.props).get("policy")
        if _is_unknown(text) or (isinstance(text, str) and any(_denies_plain_http(s) for s in _statements(text))):
            return None
    return ("has no bucket policy denying requests without TLS (a Deny statement with the condition "
            '{"Bool": {"aws:SecureTransport": "false"}})')


def check_s3_buckets_private(resources: Sequence[StackResource]) -> list[tuple[str, str]]:
    """(urn, message) for each S3 bucket that is not blocked from public access or that accepts plain HTTP."""
    found = []
    for bucket in (r for r in resources if r.resource_type in S3_BUCKET_TYPES):
        companions = [r for r in resources if r.resource_type in (S3_PUBLIC_ACCESS_BLOCK, S3_BUCKET_POLICY)
                      and _targets_bucket(r, bucket)]
        acl = _known_text(bucket.props, "acl")
        problems = [
            _public_access_problem([r for r in companions if r.resource_type == S3_PUBLIC_ACCESS_BLOCK]),
            _tls_problem([r for r in companions if r.resource_type == S3_BUCKET_POLICY]),
            f"grants the canned ACL {acl!r}" if acl in PUBLIC_CANNED_ACLS else None,
        ]
        for problem in filter(None, problems):
            found.append((bucket.urn, (
                f"The S3 bucket {bucket.name!r} {problem}. Buckets of the stack hold the model and must stay "
                "private and TLS-only: add an aws.s3.BucketPublicAccessBlock with all four settings true, a "
                "BucketPolicy denying s3:* when aws:SecureTransport is false, and no public ACL (as "
                f"components/fleet_model.py does). {_S3_TAIL}"
            )))
    return found
