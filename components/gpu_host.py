"""GpuHost: the AWS GPU VM the endpoint runs on.

Security group (separate rules for the API port and SSH, each limited to configured CIDRs), SSH
client and host keys, the instance (IMDSv2 only, hop limit 1, encrypted root), an encrypted cache
volume that outlives the instance, an Elastic IP, and a readiness step that waits until cloud-init
prepared the VM. Everything it knows comes from its args; it reads no config.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_command as command
import pulumi_tls as tls

from vllm_endpoint.components._support import secret
from vllm_endpoint.infra.catalog.gpus import GpuInstanceType
from vllm_endpoint.infra.catalog.names import HF_TOKEN_PARAMETER_TAG, HOST_CACHE_MOUNT
from vllm_endpoint.infra.plan.deployment import CacheVolume
from vllm_endpoint.infra.render.host_scripts import host_ready_script
from vllm_endpoint.infra.render.ssh import DEFAULT_SSH_PORT
from vllm_endpoint.infra.render.userdata import HostBootSettings, encode_user_data, render_user_data
from vllm_endpoint.infra.settings.models import API_WORLD_OPT_IN, SSH_WORLD_OPT_IN, AccessSettings, AwsSettings

# The attachment's device name; Nitro instances show the volume as NVMe whatever this says, and the
# boot script finds it by volume id instead.
CACHE_DEVICE_NAME = "/dev/sdf"
ROLE_TAG = "vllm-endpoint:role"


@dataclass
class GpuHostArgs:
    aws: AwsSettings
    access: AccessSettings
    instance: GpuInstanceType
    cache_volume: CacheVolume
    api_port: int
    container_user: str
    require_nvidia_runtime: bool = True
    ssh_private_key: pulumi.Input[str] | None = None  # the user's own key (secret); None = generate
    # What the boot script fetches while the instance comes up (instance tags, see DeploymentPlan).
    prefetch_tags: dict[str, str] = field(default_factory=dict)
    # A gated model's token, for the boot-time download: kept in SSM, read by the instance's role.
    hf_token: pulumi.Input[str] | None = None


class GpuHost(pulumi.ComponentResource):
    public_ip: pulumi.Output[str]
    instance_id: pulumi.Output[str]
    cache_volume_id: pulumi.Output[str]
    ssh_user: str
    ssh_port: int
    ssh_private_key: pulumi.Output[str]
    host_public_key: pulumi.Output[str]
    ready: command.remote.Command

    def __init__(self, name: str, args: GpuHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-endpoint:aws:GpuHost", name, None, opts)
        self._args = args
        self._tags = {**args.aws.tags, "vllm-endpoint:stack": pulumi.get_stack()}
        self.ssh_user = args.aws.ssh_user
        self.ssh_port = DEFAULT_SSH_PORT

        subnet_id, availability_zone, vpc_id = self._placement(args.aws)
        self.security_group = self._create_security_group(name, vpc_id)
        self._create_ingress_rules(name)
        self._create_ssh_keys(name)
        self.cache_volume = self._create_cache_volume(name, availability_zone)
        self.token_parameter: aws.ssm.Parameter | None = None
        self.instance_profile = self._create_token_access(name) if args.hf_token is not None else None
        self.instance = self._create_instance(name, subnet_id)
        self.cache_volume_attachment = aws.ec2.VolumeAttachment(
            f"{name}-cache-attachment",
            device_name=CACHE_DEVICE_NAME,
            volume_id=self.cache_volume.id,
            instance_id=self.instance.id,
            # Lets the OS flush and unmount before the volume leaves (instance replacement).
            stop_instance_before_detaching=True,
            # The volume attaches to one instance at a time: detach before attaching elsewhere.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        self.elastic_ip = aws.ec2.Eip(
            f"{name}-eip", domain="vpc", tags={**self._tags, "Name": f"{name}-endpoint"},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.elastic_ip_association = aws.ec2.EipAssociation(
            f"{name}-eip-association", allocation_id=self.elastic_ip.allocation_id, instance_id=self.instance.id,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.status_alarm = self._create_status_alarm(name)

        self.public_ip = self.elastic_ip.public_ip
        self.instance_id = self.instance.id
        self.cache_volume_id = self.cache_volume.id
        self.ready = command.remote.Command(
            f"{name}-host-ready",
            connection=self.connection(),
            create=host_ready_script(HOST_CACHE_MOUNT, args.require_nvidia_runtime, args.container_user),
            # A new instance (or a new boot configuration) is a new host to wait for.
            triggers=[self.instance.id, self.instance.user_data_base64],
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.cache_volume_attachment, self.elastic_ip_association],
                # cloud-init, then up to PREFETCH_WAIT_SECONDS for the boot-time model download.
                custom_timeouts=pulumi.CustomTimeouts(create="30m", update="30m"),
            ),
        )
        self.register_outputs({
            "public_ip": self.public_ip,
            "instance_id": self.instance_id,
            "cache_volume_id": self.cache_volume_id,
            "host_public_key": self.host_public_key,
        })

    def connection(self) -> command.remote.ConnectionArgs:
        """How every SSH step reaches this host: its fixed address, the program's key, its pinned host key."""
        return command.remote.ConnectionArgs(
            host=self.public_ip,
            port=self.ssh_port,
            user=self.ssh_user,
            private_key=self.ssh_private_key,
            host_key=self.host_public_key,
            dial_error_limit=60,
            per_dial_timeout=10,
        )

    # ------------------------------------------------------------------------------------------

    def _placement(self, settings: AwsSettings) -> tuple[str, str, str]:
        """(subnet, availability zone, VPC). The zone must offer the instance type, and it must stay
        the same across deploys: the cache volume lives in it."""
        if settings.subnet_id:
            subnet = aws.ec2.get_subnet(id=settings.subnet_id)
            return subnet.id, subnet.availability_zone, subnet.vpc_id
        vpc = aws.ec2.get_vpc(default=True)
        offered = aws.ec2.get_instance_type_offerings(
            location_type="availability-zone",
            filters=[{"name": "instance-type", "values": [settings.instance_type]}],
        ).locations
        zones = [settings.availability_zone] if settings.availability_zone else sorted(offered)
        for zone in zones:
            if zone not in offered:
                raise ValueError(
                    f"availabilityZone: {settings.instance_type} is not offered in {zone}; offered in "
                    f"{', '.join(sorted(offered)) or 'no zone of this region'}"
                )
            subnets = aws.ec2.get_subnets(filters=[
                {"name": "vpc-id", "values": [vpc.id]},
                {"name": "default-for-az", "values": ["true"]},
                {"name": "availability-zone", "values": [zone]},
            ]).ids
            if subnets:
                return sorted(subnets)[0], zone, vpc.id
        raise ValueError(
            f"subnetId: the default VPC {vpc.id} has no default subnet in a zone offering "
            f"{settings.instance_type}; set subnetId"
        )

    def _create_security_group(self, name: str, vpc_id: str) -> aws.ec2.SecurityGroup:
        group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=vpc_id,
            description="vLLM endpoint: API port and SSH from configured networks only",
            tags={**self._tags, "Name": f"{name}-sg"},
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Outbound: image pulls, model downloads and OS updates need the internet.
        for family, cidr in (("ipv4", "0.0.0.0/0"), ("ipv6", "::/0")):
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-egress-{family}",
                security_group_id=group.id,
                ip_protocol="-1",
                cidr_ipv4=cidr if family == "ipv4" else None,
                cidr_ipv6=cidr if family == "ipv6" else None,
                description="outbound: image pulls and model downloads",
                tags=self._tags,
                opts=pulumi.ResourceOptions(parent=self),
            )
        return group

    def _create_ingress_rules(self, name: str) -> None:
        access = self._args.access
        rules = [("api", self._args.api_port, cidr, API_WORLD_OPT_IN) for cidr in access.api_allowed_cidrs]
        rules += [("ssh", DEFAULT_SSH_PORT, cidr, SSH_WORLD_OPT_IN) for cidr in access.ssh_allowed_cidrs]
        self.ingress_rules: list[aws.vpc.SecurityGroupIngressRule] = []
        for purpose, port, cidr, opt_in in rules:
            network = ipaddress.ip_network(cidr)
            description = f"{purpose} from {cidr}"
            if network.prefixlen == 0:
                description += f" (opt-in: {opt_in})"
            self.ingress_rules.append(aws.vpc.SecurityGroupIngressRule(
                # Named after the CIDR, so adding or removing one network never touches the others.
                f"{name}-{purpose}-{re.sub(r'[^0-9a-zA-Z]+', '-', cidr).strip('-')}",
                security_group_id=self.security_group.id,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                cidr_ipv4=cidr if network.version == 4 else None,
                cidr_ipv6=cidr if network.version == 6 else None,
                description=description,
                tags=self._tags,
                opts=pulumi.ResourceOptions(parent=self),
            ))

    def _create_ssh_keys(self, name: str) -> None:
        settings = self._args.aws
        # The host key is made here and installed by cloud-init, so the deploying side pins it
        # before the first connection instead of trusting whatever key answers.
        self.host_key = tls.PrivateKey(f"{name}-ssh-host-key", algorithm="ED25519",
                                       opts=pulumi.ResourceOptions(parent=self))
        self.host_public_key = self.host_key.public_key_openssh.apply(lambda k: " ".join(k.split()[:2]))
        self.client_key: tls.PrivateKey | None = None
        self.key_pair: aws.ec2.KeyPair | None = None
        if self._args.ssh_private_key is not None:
            self.ssh_private_key = secret(self._args.ssh_private_key)
            self.key_name: pulumi.Input[str] | None = settings.ssh_key_pair_name
            if settings.ssh_public_key:
                self.key_pair = aws.ec2.KeyPair(f"{name}-key-pair", public_key=settings.ssh_public_key,
                                                tags=self._tags, opts=pulumi.ResourceOptions(parent=self))
                self.key_name = self.key_pair.key_name
            return
        self.client_key = tls.PrivateKey(f"{name}-ssh-client-key", algorithm="ED25519",
                                         opts=pulumi.ResourceOptions(parent=self))
        self.ssh_private_key = secret(self.client_key.private_key_openssh)
        self.key_pair = aws.ec2.KeyPair(f"{name}-key-pair", public_key=self.client_key.public_key_openssh,
                                        tags=self._tags, opts=pulumi.ResourceOptions(parent=self))
        self.key_name = self.key_pair.key_name

    def _create_cache_volume(self, name: str, availability_zone: str) -> aws.ebs.Volume:
        settings, volume = self._args.aws, self._args.cache_volume
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
            kms_key_id=settings.kms_key_id,
            tags={**self._tags, ROLE_TAG: "cache", "Name": f"{name}-hf-cache"},
            # Models, compile caches and uploaded fine-tunes outlive any instance: `pulumi destroy`
            # and replacements keep the volume (delete it by hand when you are done with it).
            opts=pulumi.ResourceOptions(parent=self, protect=True, retain_on_delete=True),
        )

    def _create_instance(self, name: str, subnet_id: str) -> aws.ec2.Instance:
        settings = self._args.aws
        if settings.ami_id:
            ami: pulumi.Input[str] = settings.ami_id
        else:
            ami = aws.ssm.get_parameter_output(name=settings.ami_ssm_parameter).value
        user_data = pulumi.Output.all(
            self.cache_volume.id, self.host_key.private_key_openssh, self.host_key.public_key_openssh,
        ).apply(lambda values: encode_user_data(render_user_data(HostBootSettings(
            cache_volume_id=values[0],
            ssh_user=settings.ssh_user,
            host_private_key_openssh=values[1],
            host_public_key_openssh=values[2],
            docker_data_on_cache_volume=settings.docker_data_on_cache_volume,
        ))))
        tags: dict[str, pulumi.Input[str]] = {**self._tags, **self._args.prefetch_tags, "Name": f"{name}-gpu"}
        if self.token_parameter is not None:
            tags[HF_TOKEN_PARAMETER_TAG] = self.token_parameter.name
        return aws.ec2.Instance(
            f"{name}-instance",
            ami=ami,
            instance_type=settings.instance_type,
            subnet_id=subnet_id,
            vpc_security_group_ids=[self.security_group.id],
            key_name=self.key_name,
            # The SSH host private key is in it (by design, see infra/render/userdata.py).
            user_data_base64=secret(user_data),
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
            iam_instance_profile=self.instance_profile.name if self.instance_profile else None,
            root_block_device={
                "encrypted": True,  # CKV_AWS_8
                "kms_key_id": settings.kms_key_id,
                "volume_type": "gp3",
                "volume_size": settings.root_volume_size_gb,
                "delete_on_termination": True,
            },
            monitoring=settings.detailed_monitoring,  # CKV_AWS_126
            ebs_optimized=True,
            tags=tags,
            opts=pulumi.ResourceOptions(
                parent=self,
                # One GPU instance at a time: quotas rarely allow two, and the cache volume can be
                # attached to only one of them.
                delete_before_replace=True,
                # Unpinned, the AMI follows the SSM parameter; a newly published AMI must not replace
                # a running endpoint. Pin `amiId` to move to a new one deliberately.
                ignore_changes=[] if settings.ami_id else ["ami"],
            ),
        )

    def _create_token_access(self, name: str) -> aws.iam.InstanceProfile:
        """The HF token in an encrypted SSM parameter, readable by this instance's role and nothing more:
        the boot-time model download gets it without it ever entering user-data."""
        settings = self._args.aws
        opts = pulumi.ResourceOptions(parent=self)
        self.token_parameter = aws.ssm.Parameter(
            f"{name}-hf-token",
            name=f"/vllm-endpoint/{pulumi.get_project()}/{pulumi.get_stack()}/hf-token",
            type="SecureString",
            value=secret(self._args.hf_token or ""),
            key_id=settings.kms_key_id,
            description="Hugging Face token for the vLLM endpoint's boot-time model download",
            tags=self._tags,
            opts=opts,
        )
        role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=json.dumps({
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                               "Principal": {"Service": "ec2.amazonaws.com"}}],
            }),
            tags=self._tags,
            opts=opts,
        )
        aws.iam.RolePolicy(
            f"{name}-read-hf-token",
            role=role.id,
            policy=self.token_parameter.arn.apply(lambda arn: json.dumps({
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": arn},
                    *([{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": settings.kms_key_id}]
                      if settings.kms_key_id else []),
                ],
            })),
            opts=opts,
        )
        return aws.iam.InstanceProfile(f"{name}-profile", role=role.name, tags=self._tags, opts=opts)

    def _create_status_alarm(self, name: str) -> aws.cloudwatch.MetricAlarm | None:
        """Recover (new hardware, same instance) where the type supports it; else reboot on a failed
        instance status check. EC2's recover action excludes instances with instance-store volumes,
        which every current GPU family has."""
        settings, instance = self._args.aws, self._args.instance
        if not settings.recovery_alarm:
            return None
        region = aws.get_region().region
        if instance.supports_recovery:
            metric, action = "StatusCheckFailed_System", "recover"
        else:
            metric, action = "StatusCheckFailed_Instance", "reboot"
        return aws.cloudwatch.MetricAlarm(
            f"{name}-{action}-alarm",
            alarm_description=f"{action} the vLLM endpoint instance when {metric} fails",
            namespace="AWS/EC2",
            metric_name=metric,
            dimensions={"InstanceId": self.instance.id},
            statistic="Maximum",
            period=60,
            evaluation_periods=3,
            comparison_operator="GreaterThanThreshold",
            threshold=0,
            alarm_actions=[f"arn:aws:automate:{region}:ec2:{action}"],
            tags=self._tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
