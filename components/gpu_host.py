"""GpuHost: the AWS GPU VM the endpoint runs on.

Security group (separate rules for the API port and SSH, each limited to configured CIDRs), SSH
client and host keys, the instance (IMDSv2 only, hop limit 1, encrypted root), an encrypted cache
volume that outlives the instance and the stack (or an existing one, adopted by id), an Elastic IP,
and a readiness step that waits until cloud-init prepared the VM. Everything it knows comes from its
args; it reads no config.

`pulumi destroy` deletes everything but the cache volume: the attachment detaches it (the instance is
stopped first), the instance and its root disk go, the Elastic IP is released, and the volume leaves
the stack but stays in AWS (`retain_on_delete`). `retained_on_destroy` says which volume that is, what
it costs a month, and how to delete or adopt it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import pulumi
import pulumi_aws as aws
import pulumi_command as command
import pulumi_tls as tls

from vllm_endpoint.components._network import egress_anywhere
from vllm_endpoint.components._support import SshTarget, secret
from vllm_endpoint.infra.catalog.gpus import GpuInstanceType
from vllm_endpoint.infra.catalog.names import (
    API_WORLD_OPT_IN,
    CACHE_ROLE,
    CLOUDWATCH_AGENT_POLICY_ARN,
    ENDPOINT_TAG,
    HF_TOKEN_PARAMETER_TAG,
    HOST_CACHE_MOUNT,
    METRICS_TAG,
    ON_DESTROY_RETAIN,
    ON_DESTROY_TAG,
    OPT_IN_MARKER_PREFIX,
    PROJECT,
    ROLE_TAG,
    SSH_WORLD_OPT_IN,
    STACK_TAG,
)
from vllm_endpoint.infra.catalog.prices import PRICES_CHECKED, prices_for
from vllm_endpoint.infra.plan.costs import VolumeSpec, volume_usd_per_month
from vllm_endpoint.infra.plan.deployment import CacheVolume
from vllm_endpoint.infra.render.cloudwatch_agent import (
    access_log_group,
    cloudwatch_agent_package_url,
    prometheus_log_group,
)
from vllm_endpoint.infra.render.host_scripts import host_ready_script
from vllm_endpoint.infra.render.ssh import DEFAULT_SSH_PORT
from vllm_endpoint.infra.render.userdata import HostBootSettings, encode_user_data, render_user_data
from vllm_endpoint.infra.settings.models import ConfigError

# The attachment's device name; Nitro instances show the volume as NVMe whatever this says, and the
# boot script finds it by volume id instead.
CACHE_DEVICE_NAME = "/dev/sdf"

# A CIDR list given as an Output is unknown while resources are declared, and one rule per CIDR needs the
# list then (resources declared inside `.apply()` are invisible to preview, tests and policy packs). Such a
# list goes into managed prefix lists instead, one per address family (a prefix list holds one), each with
# one rule for the port; later changes of the Output change the entries in place. A plain list keeps one
# rule per CIDR. A rule referencing a prefix list counts as its maximum size against the security group's
# 60 rules per family: two lists of 20 leave room for the plain rules and the egress rule.
PREFIX_LIST_MAX_ENTRIES = 20


@dataclass(frozen=True)
class IngressArgs:
    api_port: int
    api_cidrs: Sequence[str] | pulumi.Output[Sequence[str]]  # validated; a plain list or an Output of one
    ssh_cidrs: Sequence[str] | pulumi.Output[Sequence[str]]


@dataclass(frozen=True)
class SshKeyArgs:
    """The user's own key (private key secret, with the public key or a key pair name), or None: generated."""

    private_key: pulumi.Input[str] | None = None
    public_key: pulumi.Input[str] | None = None
    key_pair_name: str | None = None


@dataclass(frozen=True)
class GpuHostArgs:
    endpoint: str  # the VllmEndpoint's name: in tags and the SSM parameter's path
    instance: GpuInstanceType
    cache_volume: CacheVolume
    ingress: IngressArgs
    container_user: str
    container_open_files: int  # what the host check makes sure Docker can grant the containers
    ssh_user: str
    ami_id: str | None  # None: the latest AMI from ami_ssm_parameter, followed only at creation
    ami_ssm_parameter: str
    root_volume_size_gb: int
    subnet_id: pulumi.Input[str] | None = None  # None: a default subnet of the default VPC
    availability_zone: str | None = None
    kms_key_id: pulumi.Input[str] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    detailed_monitoring: bool = True
    recovery_alarm: bool = True
    docker_data_on_cache_volume: bool = False
    ssh_key: SshKeyArgs = SshKeyArgs()
    # What the boot script fetches while the instance comes up (instance tags, see DeploymentPlan).
    prefetch_tags: Mapping[str, str] = field(default_factory=dict)
    # A gated model's token, for the boot-time download: kept in SSM at this path, read by the instance's role.
    hf_token: pulumi.Input[str] | None = None
    hf_token_parameter: str = ""
    # An existing cache volume to attach instead of creating one (validated `vol-` id); its zone decides
    # the instance's.
    cache_volume_id: str | None = None
    # Pulumi's `protect` on the created volume: destroy and replacing updates are refused while it is on.
    protect_cache_volume: bool = False
    region: str | None = None  # the stack's region, for the prices in `retained_on_destroy`
    # The CloudWatch agent on the instance (installed at boot, configured by the VllmServer), the proxy's
    # access log and the agent's samples in log groups that keep them `log_retention_days`. `metrics_scope`:
    # the log groups' and metrics' name for this endpoint (cloudwatch_agent.metrics_scope).
    metrics: bool = False
    log_retention_days: int = 30
    metrics_scope: str = ""
    # "spot": a persistent spot request that stops the instance on interruption (see _market_options).
    capacity: str = "on-demand"


@dataclass(frozen=True)
class _Placement:
    subnet_id: pulumi.Input[str]
    availability_zone: pulumi.Input[str]
    vpc_id: pulumi.Input[str]


@dataclass(frozen=True)
class _SshKeys:
    host_key: tls.PrivateKey
    host_public_key: pulumi.Output[str]
    private_key: pulumi.Output[str]  # secret
    key_name: pulumi.Input[str] | None
    client_key: tls.PrivateKey | None
    key_pair: aws.ec2.KeyPair | None


@dataclass(frozen=True)
class _InstanceRole:
    """The instance's one role: the HF token's read policy and/or the CloudWatch agent's managed policy."""

    role: aws.iam.Role
    profile: aws.iam.InstanceProfile
    agent_policy: aws.iam.RolePolicyAttachment | None


@dataclass(frozen=True)
class _TokenAccess:
    parameter: aws.ssm.Parameter
    policy: aws.iam.RolePolicy


@dataclass(frozen=True)
class _InstanceParts:
    placement: _Placement
    security_group: aws.ec2.SecurityGroup
    keys: _SshKeys
    cache_volume_id: pulumi.Input[str]
    token_access: _TokenAccess | None
    instance_role: _InstanceRole | None = None


@dataclass(frozen=True)
class _AdoptedVolume:
    """An existing cache volume, as AWS describes it."""

    id: str
    availability_zone: str
    spec: VolumeSpec
    encrypted: bool


class GpuHost(pulumi.ComponentResource):
    public_ip: pulumi.Output[str]
    instance_id: pulumi.Output[str]
    cache_volume_id: pulumi.Output[str]
    retained_on_destroy: pulumi.Output[dict[str, object]]
    ssh_user: str
    ssh_port: int
    ssh_private_key: pulumi.Output[str]
    host_public_key: pulumi.Output[str]
    ready: command.remote.Command

    def __init__(self, name: str, args: GpuHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PROJECT}:aws:GpuHost", name, None, opts)
        tags = {**args.tags, STACK_TAG: pulumi.get_stack(), ENDPOINT_TAG: args.endpoint}
        adopted = _adopted_volume(args.cache_volume_id) if args.cache_volume_id else None
        if adopted is not None and not adopted.encrypted:
            pulumi.log.warn(f"cacheVolumeId: {adopted.id} is not encrypted; the volumes this program creates "
                            "are", resource=self)
        placement = self._placement(args, adopted)
        self.security_group, self.egress_rules = self._create_security_group(name, placement.vpc_id, tags)
        self.ingress_rules, self.prefix_lists = self._create_ingress(name, args, self.security_group, tags)
        keys = self._create_ssh_keys(name, args.ssh_key, tags)
        self.host_key, self.client_key, self.key_pair = keys.host_key, keys.client_key, keys.key_pair
        self.cache_volume: aws.ebs.Volume | None = None
        volume_id: pulumi.Input[str]
        if adopted is not None:
            volume_id = adopted.id
        else:
            self.cache_volume = self._create_cache_volume(name, args, placement.availability_zone, tags)
            volume_id = self.cache_volume.id
        self.instance_role = self._create_role(name, args, tags) \
            if args.metrics or args.hf_token is not None else None
        self.token_access = self._create_token_access(name, args, self.instance_role, tags) \
            if self.instance_role is not None and args.hf_token is not None else None
        self.log_groups = self._create_log_groups(name, args, tags) if args.metrics else []
        self.region = aws.get_region().region
        # Metrics on: the instance tag boot.sh reads to set up the CloudWatch agent (a tag changes in place).
        instance_args = replace(args, prefetch_tags={**args.prefetch_tags, METRICS_TAG: "cloudwatch-agent"}) \
            if args.metrics else args
        self.instance = self._create_instance(name, instance_args, _InstanceParts(
            placement, self.security_group, keys, volume_id, self.token_access, self.instance_role), tags)
        self.cache_volume_attachment, self.elastic_ip, self.elastic_ip_association = self._attach(
            name, self.instance, volume_id, tags)
        self.status_alarm = self._create_status_alarm(name, args, self.instance, tags)

        self.ssh_user = args.ssh_user
        self.ssh_port = DEFAULT_SSH_PORT
        self.ssh_private_key = keys.private_key
        self.host_public_key = keys.host_public_key
        self.public_ip = self.elastic_ip.public_ip
        self.instance_id = self.instance.id
        self.cache_volume_id = pulumi.Output.from_input(volume_id)
        self.retained_on_destroy = _retained_on_destroy(args, adopted, self.cache_volume_id,
                                                        placement.availability_zone)
        self.ssh_target = SshTarget(address=self.public_ip, user=self.ssh_user, port=self.ssh_port,
                                    private_key=self.ssh_private_key, host_public_key=self.host_public_key)
        self.ready = self._create_ready(name, args, self.ssh_target, self.instance,
                                        [self.cache_volume_attachment, self.elastic_ip_association])
        self.register_outputs({
            "public_ip": self.public_ip,
            "instance_id": self.instance_id,
            "cache_volume_id": self.cache_volume_id,
            "retained_on_destroy": self.retained_on_destroy,
            "host_public_key": self.host_public_key,
        })

    # ------------------------------------------------------------------------------------------

    def _placement(self, args: GpuHostArgs, adopted: _AdoptedVolume | None) -> _Placement:
        """(subnet, availability zone, VPC). The zone must offer the instance type, and it must stay
        the same across deploys: the cache volume lives in it (an adopted volume's zone decides it)."""
        if args.subnet_id is not None:
            if adopted is not None:
                return _subnet_in_zone(args.subnet_id, adopted)
            # An Output (a subnet another resource creates) works too: nothing here decides what exists.
            subnet = aws.ec2.get_subnet_output(id=args.subnet_id)
            return _Placement(subnet.id, subnet.availability_zone, subnet.vpc_id)
        instance_type = args.instance.name
        vpc = aws.ec2.get_vpc(default=True)
        offered = aws.ec2.get_instance_type_offerings(
            location_type="availability-zone",
            filters=[{"name": "instance-type", "values": [instance_type]}],
        ).locations
        wanted = adopted.availability_zone if adopted is not None else args.availability_zone
        zones = [wanted] if wanted else sorted(offered)
        for zone in zones:
            if zone not in offered:
                where = f"{', '.join(sorted(offered)) or 'no zone of this region'}"
                if adopted is not None:
                    raise ConfigError([
                        f"cacheVolumeId: {adopted.id} is in {zone}, where {instance_type} is not offered (offered "
                        f"in {where}); a volume cannot change zones: snapshot it and create a volume from the "
                        "snapshot in one of those zones, or choose another instanceType"
                    ])
                raise ValueError(f"availabilityZone: {instance_type} is not offered in {zone}; offered in {where}")
            subnets = aws.ec2.get_subnets(filters=[
                {"name": "vpc-id", "values": [vpc.id]},
                {"name": "default-for-az", "values": ["true"]},
                {"name": "availability-zone", "values": [zone]},
            ]).ids
            if subnets:
                return _Placement(sorted(subnets)[0], zone, vpc.id)
        raise ValueError(
            f"subnetId: the default VPC {vpc.id} has no default subnet in a zone offering "
            f"{instance_type}; set subnetId"
        )

    def _create_security_group(self, name: str, vpc_id: pulumi.Input[str], tags: dict[str, str]) -> tuple[
            aws.ec2.SecurityGroup, list[aws.vpc.SecurityGroupEgressRule]]:
        group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=vpc_id,
            description="vLLM endpoint: API port and SSH from configured networks only",
            tags={**tags, "Name": f"{name}-sg"},
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Outbound: image pulls, model downloads and OS updates need the internet.
        egress = egress_anywhere(f"{name}-egress", group.id, "outbound: image pulls and model downloads", tags, self)
        return group, egress

    def _create_ingress(self, name: str, args: GpuHostArgs, group: aws.ec2.SecurityGroup,
                        tags: dict[str, str]) -> tuple[list[aws.vpc.SecurityGroupIngressRule],
                                                       list[aws.ec2.ManagedPrefixList]]:
        ingress = args.ingress
        rules: list[aws.vpc.SecurityGroupIngressRule] = []
        lists: list[aws.ec2.ManagedPrefixList] = []
        for purpose, port, cidrs, setting, opt_in in (
            ("api", ingress.api_port, ingress.api_cidrs, "apiAllowedCidrs", API_WORLD_OPT_IN),
            ("ssh", DEFAULT_SSH_PORT, ingress.ssh_cidrs, "sshAllowedCidrs", SSH_WORLD_OPT_IN),
        ):
            rule = _IngressRule(self, name, group, purpose, port, opt_in, tags)
            if isinstance(cidrs, pulumi.Output):
                for family in ("IPv4", "IPv6"):
                    prefix_list = rule.prefix_list(args.endpoint, family, _family_cidrs(cidrs, family, setting))
                    lists.append(prefix_list)
                    rules.append(rule.for_prefix_list(prefix_list, family, setting))
            else:
                rules += [rule.for_cidr(cidr) for cidr in cidrs]
        return rules, lists

    def _create_ssh_keys(self, name: str, own: SshKeyArgs, tags: dict[str, str]) -> _SshKeys:
        # The host key is made here and installed by cloud-init, so the deploying side pins it
        # before the first connection instead of trusting whatever key answers.
        host_key = tls.PrivateKey(f"{name}-ssh-host-key", algorithm="ED25519", opts=pulumi.ResourceOptions(parent=self))
        host_public_key = host_key.public_key_openssh.apply(lambda k: " ".join(k.split()[:2]))
        if own.private_key is not None:
            key_pair = None
            key_name: pulumi.Input[str] | None = own.key_pair_name
            if own.public_key is not None:
                key_pair = aws.ec2.KeyPair(f"{name}-key-pair", public_key=own.public_key, tags=tags,
                                           opts=pulumi.ResourceOptions(parent=self))
                key_name = key_pair.key_name
            return _SshKeys(host_key, host_public_key, secret(own.private_key), key_name, None, key_pair)
        client_key = tls.PrivateKey(f"{name}-ssh-client-key", algorithm="ED25519",
                                    opts=pulumi.ResourceOptions(parent=self))
        key_pair = aws.ec2.KeyPair(f"{name}-key-pair", public_key=client_key.public_key_openssh, tags=tags,
                                   opts=pulumi.ResourceOptions(parent=self))
        return _SshKeys(host_key, host_public_key, secret(client_key.private_key_openssh), key_pair.key_name,
                        client_key, key_pair)

    def _create_cache_volume(self, name: str, args: GpuHostArgs, availability_zone: pulumi.Input[str],
                             tags: dict[str, str]) -> aws.ebs.Volume:
        volume = args.cache_volume
        return aws.ebs.Volume(
            f"{name}-cache",
            availability_zone=availability_zone,
            size=volume.size_gb,
            type=volume.type,
            # Sized to the instance's own EBS bandwidth: at gp3's base 125 MiB/s, reading a 3 GB model
            # alone takes ~25 s. Size, IOPS and throughput change in place.
            iops=volume.iops,
            throughput=volume.throughput_mib_s,
            encrypted=True,  # CKV_AWS_3
            kms_key_id=args.kms_key_id,
            # The on-destroy tag states the retain_on_delete below for policy packs (which see `protect`
            # only) and finds the kept volume after a destroy.
            tags={**tags, ROLE_TAG: CACHE_ROLE, ON_DESTROY_TAG: ON_DESTROY_RETAIN, "Name": f"{name}-hf-cache"},
            # Models, compile caches and uploaded fine-tunes outlive any instance and the stack: `pulumi
            # destroy` and replacements drop the volume from the stack but keep it in AWS (retain_on_delete),
            # without blocking the destroy as `protect` does; that stays an opt-in (protectCacheVolume).
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect_cache_volume, retain_on_delete=True),
        )

    def _create_instance(self, name: str, args: GpuHostArgs, parts: _InstanceParts,
                         tags: dict[str, str]) -> aws.ec2.Instance:
        token_access = parts.token_access
        if args.ami_id:
            ami: pulumi.Input[str] = args.ami_id
        else:
            ami = aws.ssm.get_parameter_output(name=args.ami_ssm_parameter).value
        instance_tags: dict[str, pulumi.Input[str]] = {**tags, **args.prefetch_tags, "Name": f"{name}-gpu"}
        if token_access is not None:
            instance_tags[HF_TOKEN_PARAMETER_TAG] = token_access.parameter.name
        return aws.ec2.Instance(
            f"{name}-instance",
            ami=ami,
            instance_type=args.instance.name,
            subnet_id=parts.placement.subnet_id,
            vpc_security_group_ids=[parts.security_group.id],
            key_name=parts.keys.key_name,
            # The SSH host private key is in it (by design, see infra/render/userdata.py).
            user_data_base64=secret(_user_data(args, parts)),
            # Host-level changes stop and start the same instance instead of replacing it.
            user_data_replace_on_change=False,
            # The Elastic IP is the address; no second, ephemeral public address (CKV_AWS_88).
            associate_public_ip_address=False,
            metadata_options={
                "http_endpoint": "enabled",
                "http_tokens": "required",  # IMDSv2 only: CKV_AWS_79, Security Hub EC2.8
                # Hop limit 1: containers (one hop away) cannot reach instance credentials or user-data.
                "http_put_response_hop_limit": 1,
                # The boot script reads what to prefetch from the instance's tags.
                "instance_metadata_tags": "enabled",
            },
            iam_instance_profile=parts.instance_role.profile.name if parts.instance_role else None,
            root_block_device={
                "encrypted": True,  # CKV_AWS_8
                "kms_key_id": args.kms_key_id,
                "volume_type": "gp3",
                "volume_size": args.root_volume_size_gb,
                "delete_on_termination": True,
            },
            monitoring=args.detailed_monitoring,  # CKV_AWS_126
            ebs_optimized=True,
            instance_market_options=_market_options(args.capacity),
            tags=instance_tags,
            opts=pulumi.ResourceOptions(
                parent=self,
                # One GPU instance at a time: quotas rarely allow two, and the cache volume can be
                # attached to only one of them.
                delete_before_replace=True,
                # Unpinned, the AMI follows the SSM parameter; a newly published AMI must not replace
                # a running endpoint. Pin `amiId` to move to a new one deliberately.
                ignore_changes=[] if args.ami_id else ["ami"],
                # EC2 cannot change a spot instance's type, even stopped (the provider's stop/modify/start
                # would fail): on spot a new instance type is a new instance.
                replace_on_changes=["instanceType"] if args.capacity == "spot" else None,
            ),
        )

    def _attach(self, name: str, instance: aws.ec2.Instance, volume_id: pulumi.Input[str],
                tags: dict[str, str]) -> tuple[aws.ec2.VolumeAttachment, aws.ec2.Eip, aws.ec2.EipAssociation]:
        """The cache volume and the Elastic IP, attached to the instance."""
        attachment = aws.ec2.VolumeAttachment(
            f"{name}-cache-attachment",
            device_name=CACHE_DEVICE_NAME,
            volume_id=volume_id,
            instance_id=instance.id,
            # Deleting the attachment (destroy, instance replacement) stops the instance first: the OS
            # flushes and unmounts the cache, and the detach never hangs on a volume in use.
            stop_instance_before_detaching=True,
            # Destroy really detaches: the kept volume is `available` at once, for the next stack's
            # cacheVolumeId (skipped, it would stay attached until the instance's termination freed it).
            skip_destroy=False,
            # The volume attaches to one instance at a time: detach before attaching elsewhere.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        eip = aws.ec2.Eip(f"{name}-eip", domain="vpc", tags={**tags, "Name": f"{name}-endpoint"},
                          opts=pulumi.ResourceOptions(parent=self))
        association = aws.ec2.EipAssociation(
            f"{name}-eip-association", allocation_id=eip.allocation_id, instance_id=instance.id,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return attachment, eip, association

    def _create_role(self, name: str, args: GpuHostArgs, tags: dict[str, str]) -> _InstanceRole:
        """The instance's role and profile: for the HF token's read policy, the CloudWatch agent's, or both."""
        opts = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                               "Principal": {"Service": "ec2.amazonaws.com"}}],
            }),
            tags=tags,
            opts=opts,
        )
        agent_policy = aws.iam.RolePolicyAttachment(
            f"{name}-cloudwatch-agent-policy", role=role.name, policy_arn=CLOUDWATCH_AGENT_POLICY_ARN, opts=opts,
        ) if args.metrics else None
        profile = aws.iam.InstanceProfile(f"{name}-profile", role=role.name, tags=tags, opts=opts)
        return _InstanceRole(role, profile, agent_policy)

    def _create_token_access(self, name: str, args: GpuHostArgs, instance_role: _InstanceRole,
                             tags: dict[str, str]) -> _TokenAccess:
        """The HF token in an encrypted SSM parameter, readable by this instance's role and nothing more:
        the boot-time model download gets it without it ever entering user-data."""
        opts = pulumi.ResourceOptions(parent=self)
        parameter = aws.ssm.Parameter(
            f"{name}-hf-token",
            name=args.hf_token_parameter,
            type="SecureString",
            value=secret(args.hf_token or ""),
            key_id=args.kms_key_id,
            description="Hugging Face token for the vLLM endpoint's boot-time model download",
            tags=tags,
            opts=opts,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-read-hf-token",
            role=instance_role.role.id,
            policy=pulumi.Output.all(parameter.arn, args.kms_key_id).apply(lambda values: json.dumps({
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": values[0]},
                    *([{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": values[1]}] if values[1] else []),
                ],
            })),
            opts=opts,
        )
        return _TokenAccess(parameter, policy)

    def _create_log_groups(self, name: str, args: GpuHostArgs, tags: dict[str, str]) -> list[aws.cloudwatch.LogGroup]:
        """The proxy's access log and the CloudWatch agent's samples (CloudWatch turns them into metrics at
        ingestion), each kept `log_retention_days`. Created here, so neither writer creates one that keeps
        its events forever. CloudWatch Logs encrypts them at rest; kmsKeyId is not used for them (its key
        policy would have to admit the CloudWatch Logs service)."""
        scope = args.metrics_scope or pulumi.get_stack()
        return [
            aws.cloudwatch.LogGroup(
                f"{name}-{kind}-log",
                name=group,
                retention_in_days=args.log_retention_days,
                tags=tags,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for kind, group in (("access", access_log_group(scope)), ("metrics", prometheus_log_group(scope)))
        ]

    def _create_status_alarm(self, name: str, args: GpuHostArgs, instance: aws.ec2.Instance,
                             tags: dict[str, str]) -> aws.cloudwatch.MetricAlarm | None:
        """Recover (new hardware, same instance) where the type supports it; else reboot on a failed
        instance status check. EC2's recover action excludes instances with instance-store volumes,
        which every current GPU family has."""
        if not args.recovery_alarm:
            return None
        region = aws.get_region().region
        if args.instance.supports_recovery:
            metric, action = "StatusCheckFailed_System", "recover"
        else:
            metric, action = "StatusCheckFailed_Instance", "reboot"
        return aws.cloudwatch.MetricAlarm(
            f"{name}-{action}-alarm",
            alarm_description=f"{action} the vLLM endpoint instance when {metric} fails",
            namespace="AWS/EC2",
            metric_name=metric,
            dimensions={"InstanceId": instance.id},
            statistic="Maximum",
            period=60,
            evaluation_periods=3,
            comparison_operator="GreaterThanThreshold",
            threshold=0,
            alarm_actions=[f"arn:aws:automate:{region}:ec2:{action}"],
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _create_ready(self, name: str, args: GpuHostArgs, target: SshTarget, instance: aws.ec2.Instance,
                      attached: list[pulumi.Resource]) -> command.remote.Command:
        return command.remote.Command(
            f"{name}-host-ready",
            # A new VM takes a while to answer SSH at all.
            connection=target.connection(dial_error_limit=60),
            # Every GPU instance type runs the containers with the NVIDIA runtime the AMI brings.
            create=host_ready_script(HOST_CACHE_MOUNT, True, args.container_user,
                                     open_files=args.container_open_files),
            # A new instance (or a new boot configuration) is a new host to wait for.
            triggers=[instance.id, instance.user_data_base64],
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=attached,
                # cloud-init, then up to PREFETCH_WAIT_SECONDS for the boot-time model download.
                custom_timeouts=pulumi.CustomTimeouts(create="30m", update="30m"),
            ),
        )


@dataclass(frozen=True)
class _IngressRule:
    """Ingress rules of one purpose (API or SSH): one per CIDR, or one per prefix list."""

    host: GpuHost
    name: str
    group: aws.ec2.SecurityGroup
    purpose: str
    port: int
    opt_in: str
    tags: dict[str, str]

    def for_cidr(self, cidr: str) -> aws.vpc.SecurityGroupIngressRule:
        network = ipaddress.ip_network(cidr)
        return self._rule(
            # Named after the CIDR, so adding or removing one network never touches the others.
            f"{self.name}-{self.purpose}-{re.sub(r'[^0-9a-zA-Z]+', '-', cidr).strip('-')}",
            description=_description(self.purpose, cidr, self.opt_in),
            cidr_ipv4=cidr if network.version == 4 else None,
            cidr_ipv6=cidr if network.version == 6 else None,
        )

    def for_prefix_list(self, prefix_list: aws.ec2.ManagedPrefixList, family: str,
                        setting: str) -> aws.vpc.SecurityGroupIngressRule:
        return self._rule(f"{self.name}-{self.purpose}-{family.lower()}-list",
                          description=f"{self.purpose} from the {family} networks of {setting}",
                          prefix_list_id=prefix_list.id)

    def prefix_list(self, endpoint: str, family: str, cidrs: pulumi.Output[list[str]]) -> aws.ec2.ManagedPrefixList:
        return aws.ec2.ManagedPrefixList(
            f"{self.name}-{self.purpose}-{family.lower()}",
            name=f"{PROJECT}-{pulumi.get_project()}-{pulumi.get_stack()}-{endpoint}-{self.purpose}-{family.lower()}",
            address_family=family,
            max_entries=PREFIX_LIST_MAX_ENTRIES,
            entries=cidrs.apply(lambda values: [aws.ec2.ManagedPrefixListEntryArgs(
                cidr=cidr, description=_description(self.purpose, cidr, self.opt_in)) for cidr in values]),
            tags=self.tags,
            opts=pulumi.ResourceOptions(parent=self.host),
        )

    def _rule(self, resource_name: str, description: str, **source: pulumi.Input[str] | None,
              ) -> aws.vpc.SecurityGroupIngressRule:
        return aws.vpc.SecurityGroupIngressRule(
            resource_name,
            security_group_id=self.group.id,
            ip_protocol="tcp",
            from_port=self.port,
            to_port=self.port,
            description=description,
            tags=self.tags,
            opts=pulumi.ResourceOptions(parent=self.host),
            **source,
        )


def _market_options(capacity: str) -> aws.ec2.InstanceInstanceMarketOptionsArgs | None:
    """`capacity: spot`: a persistent spot request whose interruption stops the instance (EC2 allows stop only
    with a persistent request). The root and cache volumes are EBS and the Elastic IP stays associated, so a
    stopped instance keeps its disk, its cache and its address, and EC2 starts it again when it has capacity.
    No maximum price: up to the on-demand price, EC2's default. On demand: no market options at all."""
    if capacity != "spot":
        return None
    return aws.ec2.InstanceInstanceMarketOptionsArgs(
        market_type="spot",
        spot_options=aws.ec2.InstanceInstanceMarketOptionsSpotOptionsArgs(
            spot_instance_type="persistent",
            instance_interruption_behavior="stop",
        ),
    )

def _user_data(args: GpuHostArgs, parts: _InstanceParts) -> pulumi.Output[str]:
    host_key = parts.keys.host_key
    region = aws.get_region().region
    return pulumi.Output.all(
        parts.cache_volume_id, host_key.private_key_openssh, host_key.public_key_openssh,
    ).apply(lambda values: encode_user_data(render_user_data(HostBootSettings(
        cache_volume_id=values[0],
        ssh_user=args.ssh_user,
        host_private_key_openssh=values[1],
        host_public_key_openssh=values[2],
        docker_data_on_cache_volume=args.docker_data_on_cache_volume,
        # On every instance (metrics on or off), so turning metrics on changes no user-data (no restart).
        agent_package_url=cloudwatch_agent_package_url(region),
    ))))


def _description(purpose: str, cidr: str, opt_in: str) -> str:
    """Says where the rule admits from; world-open ones carry the opt-in marker policy packs look for."""
    if ipaddress.ip_network(cidr).prefixlen == 0:
        return f"{purpose} from {cidr} ({OPT_IN_MARKER_PREFIX}{opt_in})"
    return f"{purpose} from {cidr}"


def _family_cidrs(cidrs: pulumi.Output[Sequence[str]], family: str, setting: str) -> pulumi.Output[list[str]]:
    version = 4 if family == "IPv4" else 6

    def chosen_cidrs(values: Sequence[str]) -> list[str]:
        chosen = [cidr for cidr in values if ipaddress.ip_network(cidr).version == version]
        if len(chosen) > PREFIX_LIST_MAX_ENTRIES:
            raise ConfigError([
                f"{setting}: {len(chosen)} {family} networks; an Output list takes at most "
                f"{PREFIX_LIST_MAX_ENTRIES} per address family (they go into a managed prefix list of that size)"
            ])
        return chosen

    return cidrs.apply(chosen_cidrs)


def _adopted_volume(volume_id: str) -> _AdoptedVolume:
    """The existing volume `cacheVolumeId` names, as AWS describes it."""
    try:
        found = aws.ebs.get_volume(filters=[{"name": "volume-id", "values": [volume_id]}])
    except Exception as err:  # the provider's invoke error: not found, or no permission to look
        raise ConfigError([f"cacheVolumeId: {volume_id} cannot be read in this region: {err}"]) from None
    spec = VolumeSpec(found.volume_type, found.size, found.iops or None, found.throughput or None)
    return _AdoptedVolume(volume_id, found.availability_zone, spec, bool(found.encrypted))


def _subnet_in_zone(subnet_id: pulumi.Input[str], adopted: _AdoptedVolume) -> _Placement:
    """The subnet, refused when it is not in the adopted volume's zone (an instance attaches volumes of
    its own zone only)."""
    def check(zone: str) -> str:
        if zone != adopted.availability_zone:
            raise ConfigError([
                f"subnetId: the subnet is in {zone}, but the cache volume {adopted.id} (cacheVolumeId) is in "
                f"{adopted.availability_zone}; choose a subnet in {adopted.availability_zone}, or unset subnetId"
            ])
        return zone

    if isinstance(subnet_id, str):
        subnet = aws.ec2.get_subnet(id=subnet_id)
        return _Placement(subnet.id, check(subnet.availability_zone), subnet.vpc_id)
    found = aws.ec2.get_subnet_output(id=subnet_id)
    return _Placement(found.id, found.availability_zone.apply(check), found.vpc_id)


def _retained_on_destroy(args: GpuHostArgs, adopted: _AdoptedVolume | None, volume_id: pulumi.Output[str],
                         zone: pulumi.Input[str]) -> pulumi.Output[dict[str, object]]:
    """What `pulumi destroy` leaves in AWS: the cache volume, its monthly cost, how to delete or adopt it."""
    if adopted is not None:
        spec = adopted.spec
    else:
        v = args.cache_volume
        spec = VolumeSpec(v.type, v.size_gb, v.iops, v.throughput_mib_s)
    chosen = prices_for(args.region)
    usd = round(volume_usd_per_month(spec, chosen.prices), 2)
    region = f" --region {args.region}" if args.region else ""
    if adopted is not None:
        why = "adopted by cacheVolumeId: never part of this stack, so destroy leaves it as it was"
    elif args.protect_cache_volume:
        why = ("protectCacheVolume is true: `pulumi destroy` is refused; set it to false and run `pulumi up` "
               "first, then destroy keeps the volume")
    else:
        why = "retained: destroy removes it from the stack and keeps it in AWS with its models and compile cache"

    def describe(values: list[str]) -> dict[str, object]:
        vid, az = values
        return {
            "volume_id": vid,
            "availability_zone": az,
            "volume": spec.describe(),
            "usd_per_month": usd,
            "prices": f"{chosen.prices.name} prices of {PRICES_CHECKED}",
            "why": why,
            "delete": f"aws ec2 delete-volume{region} --volume-id {vid}",
            "adopt": f"pulumi config set cacheVolumeId {vid}",
        }

    return pulumi.Output.all(volume_id, zone).apply(describe)
