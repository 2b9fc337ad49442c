"""Pulumi mocks that answer like the real providers would, and record every resource for assertions."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pulumi

# Recognisable stand-ins for generated secrets: tests search every resource input for them.
MOCK_CLIENT_PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nMOCK-CLIENT-KEY\n-----END OPENSSH PRIVATE KEY-----\n"
MOCK_HOST_PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nMOCK-HOST-KEY\n-----END OPENSSH PRIVATE KEY-----\n"
MOCK_GENERATED_API_KEY_CHAR = "G"
MOCK_PUBLIC_IP = "198.51.100.7"
MOCK_AMI = "ami-0a1b2c3d4e5f60718"
MOCK_ZONES = ["us-east-1a", "us-east-1b", "us-east-1c"]
# What the readiness gate prints (infra/host/readiness-gate.sh): progress while it waits, then its report.
# What infra/host/service-ready.sh prints once the load balancer answered (a fleet's `ready` output).
MOCK_SERVICE_READY_STDOUT = ('ready after 412 s: http://vllm-lb.example/v1/models answered 200 with the key\n'
                             '{"object":"list","data":[{"id":"Qwen/Qwen2.5-1.5B-Instruct","object":"model"}]}\n')
MOCK_GATE_CAPACITY = ("capacity: vLLM reports GPU KV cache size: 600,000 tokens, Maximum concurrency for 32,768 "
                      "tokens per request: 18.31x; the plan's fit estimate: 580,672 tokens, 17.72x for 32,768 "
                      "tokens per request")
MOCK_GATE_STDOUT = ("[+0 s] vLLM starting | container running, health starting, restarts 0 | probe 502 | last log: x\n"
                    "ready: GET http://127.0.0.1:30005/v1/models answered 200 after 60 s\n"
                    f"{MOCK_GATE_CAPACITY}\ncontainer_started 1764000000.0 +0.0 s\nserver_ready 1764000060.0 +60.0 s\n")
# An existing volume id AWS does not know (the getVolume invoke fails, as the provider's would).
MOCK_MISSING_VOLUME = "vol-0ffffffffffffffff"


# ARNs of the fleet's resources (components/fleet.py), up to the name.
_FLEET_ARN_PREFIXES = {
    "aws:ecs/cluster:Cluster": "arn:aws:ecs:us-east-1:123456789012:cluster",
    "aws:ecs/capacityProvider:CapacityProvider": "arn:aws:ecs:us-east-1:123456789012:capacity-provider",
    "aws:ecs/service:Service": "arn:aws:ecs:us-east-1:123456789012:service",
    "aws:ecs/taskDefinition:TaskDefinition": "arn:aws:ecs:us-east-1:123456789012:task-definition",
    "aws:autoscaling/group:Group": "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:0:autoScalingGroupName",
}


# How Pulumi marks a secret value on the wire (and so in what the mocks receive).
SECRET_SIGNATURE = "1b47061264138c4ac30d75fd1eb44270"
_SIG_KEY = "4dabf18193072939515e22adb298388d"


def is_secret_value(value: Any) -> bool:
    return isinstance(value, dict) and value.get(_SIG_KEY) == SECRET_SIGNATURE


def secret_value(value: Any) -> dict[str, Any]:
    """`value` marked secret, as the engine sends it (e.g. a secret output of a referenced stack)."""
    return {_SIG_KEY: SECRET_SIGNATURE, "value": value}


def unwrap(value: Any) -> Any:
    """The plain value, secrets unwrapped, and whole numbers as ints (mocks see every number as float)."""
    if is_secret_value(value):
        return unwrap(value["value"])
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def plaintext_occurrences(value: Any, needle: str, path: str = "") -> list[str]:
    """Paths where `needle` appears in `value` outside any secret."""
    if is_secret_value(value):
        return []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in plaintext_occurrences(v, needle, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in plaintext_occurrences(v, needle, f"{path}[{i}]")]
    return [path] if isinstance(value, str) and needle in value else []


def mock_image_id(reference: str) -> str:
    """The image id a mocked RemoteImage reports for an image reference (containers reference it)."""
    return f"sha256:{hashlib.sha256(reference.encode()).hexdigest()}"


@dataclass
class Recorded:
    typ: str
    name: str
    inputs: dict[str, Any]  # secrets unwrapped
    raw_inputs: dict[str, Any]  # secrets still wrapped, as the engine would receive them
    provider: str | None
    id: str | None = None  # what the mock gave it (usually `<name>-id`; a bucket's is its generated name)


MOCK_ECR_REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
MOCK_ECR_PASSWORD = "ecr-password-" + "x" * 24
# A VPC's IPv4 CIDRs (getVpc): its primary and a secondary one.
MOCK_VPC_CIDRS = ("172.31.0.0/16", "100.64.0.0/16")


class Mocks(pulumi.runtime.Mocks):
    # What every new Mocks starts with in `instances` (a test sets it with monkeypatch).
    default_instances: tuple[tuple[str, str, str], ...] = ()

    def __init__(self, stacks: dict[str, dict[str, Any]] | None = None) -> None:
        self.resources: list[Recorded] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        # Outputs of the stacks a StackReference may read, by fully qualified name; secret ones wrapped
        # with `secret_value`.
        self.stacks = stacks or {}
        # The EC2 instances `aws.ec2.get_instances` finds: (id, state, lifecycle "spot" or "").
        self.instances: list[tuple[str, str, str]] = list(self.default_instances)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        inputs = unwrap(dict(args.inputs))
        self.resources.append(Recorded(args.typ, args.name, inputs, dict(args.inputs), args.provider))
        resource_id, outputs = self._outputs(args, inputs)
        self.resources[-1].id = resource_id
        return resource_id, outputs

    def _outputs(self, args: pulumi.runtime.MockResourceArgs, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The id and outputs AWS (the provider) would give the resource `args` declares (`inputs`: unwrapped)."""
        # Echo the inputs with their secret markers: the engine keeps an input's secretness on the output.
        outputs = dict(args.inputs)
        typ = args.typ
        digest = hashlib.sha256(args.name.encode()).hexdigest()
        if typ == "tls:index/privateKey:PrivateKey":
            pem = MOCK_HOST_PRIVATE_KEY if "host-key" in args.name else MOCK_CLIENT_PRIVATE_KEY
            public = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + base64.b64encode(digest.encode()).decode()[:43]
            outputs |= {"private_key_openssh": pem, "private_key_pem": pem.replace("OPENSSH", "EC"),
                        "public_key_openssh": public + "\n", "public_key_pem": "-----BEGIN PUBLIC KEY-----\n"}
        elif typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = MOCK_GENERATED_API_KEY_CHAR * inputs["length"]
        elif typ == "random:index/randomId:RandomId":
            # A new value when the keepers change, as the provider makes one.
            keepers = json.dumps(unwrap(inputs.get("keepers", {})), sort_keys=True)
            outputs["hex"] = hashlib.sha256((args.name + keepers).encode()).hexdigest()[:2 * int(inputs["byteLength"])]
        elif typ == "aws:ec2/eip:Eip":
            outputs |= {"public_ip": MOCK_PUBLIC_IP, "allocation_id": "eipalloc-0123456789abcdef0"}
        elif typ in ("aws:iam/instanceProfile:InstanceProfile", "aws:iam/role:Role"):
            outputs.setdefault("name", f"{args.name}-{digest[:8]}")  # AWS generates a name when none is given
            outputs["arn"] = f"arn:aws:iam::123456789012:{typ.split('/')[1].split(':')[0]}/{outputs['name']}"
        elif typ == "aws:ssm/parameter:Parameter":
            outputs["arn"] = f"arn:aws:ssm:us-east-1:123456789012:parameter{inputs['name']}"
        elif typ == "aws:ec2/keyPair:KeyPair":
            # AWS names a key pair the program does not name; a new public key is a new key pair.
            outputs["key_name"] = f"{args.name}-{hashlib.sha256(str(inputs['publicKey']).encode()).hexdigest()[:8]}"
        elif typ == "aws:kms/key:Key":
            outputs["arn"] = f"arn:aws:kms:us-east-1:123456789012:key/{digest[:8]}-0000-4000-8000-{digest[8:20]}"
        elif typ == "aws:sns/topic:Topic":
            outputs["arn"] = f"arn:aws:sns:us-east-1:123456789012:{args.name}-{digest[:7]}"
        elif typ == "aws:cloudwatch/metricAlarm:MetricAlarm":
            outputs["arn"] = f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{inputs.get('name', args.name)}"
        elif typ == "aws:secretsmanager/secret:Secret":
            outputs["arn"] = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{args.name}-{digest[:6]}"
        elif typ == "pulumi:pulumi:StackReference":
            # What the engine reads from the referenced stack; a stack that does not exist fails the deploy.
            stack = inputs["name"]
            if stack not in self.stacks:
                raise AssertionError(f"unexpected stack reference {stack}")
            found = self.stacks[stack]
            return stack, {"name": stack, "outputs": found,
                           "secretOutputNames": sorted(k for k, v in found.items() if is_secret_value(v))}
        elif typ == "aws:ec2/subnet:Subnet":
            # Other programs' subnets, for endpoints placed by a subnet Output: ids look like AWS's.
            return f"subnet-0{digest[:16]}", outputs | {"availability_zone": "us-east-1c"}
        elif typ == "aws:ebs/volume:Volume":
            return "vol-0123456789abcdef0", outputs
        elif typ == "aws:ec2/instance:Instance":
            return "i-0123456789abcdef0", outputs
        elif typ == "docker:index/container:Container":
            # Docker gives a container an address on each network it joins (the CloudWatch agent scrapes it).
            networks = [n["name"] for n in inputs.get("networksAdvanced") or []]
            outputs["networkDatas"] = [{"networkName": network, "ipAddress": f"172.18.0.{2 + i}"}
                                       for i, network in enumerate(networks)]
        elif typ == "docker:index/remoteImage:RemoteImage":
            outputs["image_id"] = mock_image_id(inputs["name"])
        elif typ == "aws:ecr/repository:Repository":
            outputs |= {"repositoryUrl": f"{MOCK_ECR_REGISTRY}/{inputs['name']}", "registryId": "123456789012",
                        "arn": f"arn:aws:ecr:us-east-1:123456789012:repository/{inputs['name']}"}
        elif typ == "aws:s3/bucket:Bucket":
            # AWS (the provider) names a bucket from its prefix and a unique suffix.
            name = inputs.get("bucket") or f"{inputs['bucketPrefix']}{digest[:26]}"
            return name, outputs | {"bucket": name, "arn": f"arn:aws:s3:::{name}"}
        elif typ == "docker:index/image:Image" and inputs.get("registry"):
            # A pushed image: the registry's reference by digest (of what was built).
            name = str(inputs["imageName"])
            outputs["repoDigest"] = f"{name.rsplit(':', 1)[0]}@sha256:{hashlib.sha256(name.encode()).hexdigest()}"
        elif typ == "command:remote:Command" and args.name.endswith("-readiness"):
            outputs |= {"stdout": MOCK_GATE_STDOUT, "stderr": ""}
        elif typ == "command:local:Command" and args.name.endswith("-ready"):
            outputs |= {"stdout": MOCK_SERVICE_READY_STDOUT, "stderr": ""}
        elif typ == "command:remote:Command":
            outputs |= {"stdout": f"{args.name} done\nserver_ready 1764000000.0", "stderr": ""}
        elif typ in ("tls:index/selfSignedCert:SelfSignedCert", "tls:index/locallySignedCert:LocallySignedCert"):
            outputs["cert_pem"] = f"-----BEGIN CERTIFICATE-----\n{args.name}\n-----END CERTIFICATE-----\n"
        elif typ == "tls:index/certRequest:CertRequest":
            outputs["cert_request_pem"] = "-----BEGIN CERTIFICATE REQUEST-----\n"
        elif typ in _FLEET_ARN_PREFIXES:
            # The fleet's ECS and Auto Scaling resources: AWS names what the program leaves unnamed.
            outputs.setdefault("name", f"{args.name}-{digest[:7]}")
            outputs["arn"] = f"{_FLEET_ARN_PREFIXES[typ]}/{outputs.get('family', outputs['name'])}"
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        self.calls.append((args.token, unwrap(dict(args.args))))
        token = args.token
        if token == "aws:ssm/getParameter:getParameter":
            return {"name": args.args["name"], "value": MOCK_AMI, "type": "String", "arn": "arn", "id": "p",
                    "insecureValue": MOCK_AMI, "version": 1, "withDecryption": True}, []
        if token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            return {"id": "token", "userName": "AWS", "password": MOCK_ECR_PASSWORD,
                    "authorizationToken": base64.b64encode(f"AWS:{MOCK_ECR_PASSWORD}".encode()).decode(),
                    "proxyEndpoint": f"https://{MOCK_ECR_REGISTRY}", "expiresAt": "2026-12-03T00:00:00Z"}, []
        if token == "aws:ec2/getVpc:getVpc":
            # The default VPC's, or the one of a given subnet (by id): its primary CIDR and a secondary one.
            vpc = args.args.get("id", "vpc-0123456789abcdef0")
            return {"id": vpc, "cidrBlock": "172.31.0.0/16", "default": "id" not in args.args,
                    "cidrBlockAssociations": [
                        {"associationId": f"vpc-cidr-assoc-{n}", "cidrBlock": cidr, "state": "associated"}
                        for n, cidr in enumerate(MOCK_VPC_CIDRS)]}, []
        if token == "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings":
            return {"id": "offerings", "instanceTypes": ["g5.xlarge"] * len(MOCK_ZONES), "locations": MOCK_ZONES,
                    "locationTypes": ["availability-zone"] * len(MOCK_ZONES)}, []
        if token == "aws:ec2/getSubnets:getSubnets":
            zones = [f["values"][0] for f in args.args["filters"] if f["name"] == "availability-zone"]
            # By zone (a single endpoint's subnet), or every default subnet of the default VPC (a fleet's).
            return {"id": "subnets", "ids": [f"subnet-0{zone[-1] * 16}" for zone in zones or MOCK_ZONES]}, []
        if token == "aws:ec2/getSubnet:getSubnet":
            return {"id": args.args["id"], "availabilityZone": "us-east-1b", "vpcId": "vpc-0fedcba9876543210"}, []
        if token == "aws:ebs/getVolume:getVolume":
            # An existing volume (cacheVolumeId): in the zone its id's last character names (a, b or c).
            volume_id = next(f["values"][0] for f in args.args["filters"] if f["name"] == "volume-id")
            if volume_id == MOCK_MISSING_VOLUME:
                # How a provider reports a failed data source: the invoke fails with its reason.
                return {}, [("filters", "Your query returned no results. Please change your search criteria "
                                        "and try again.")]
            return {"id": volume_id, "volumeId": volume_id, "availabilityZone": f"us-east-1{volume_id[-1]}",
                    "size": 150, "volumeType": "gp3", "iops": 4000, "throughput": 250, "encrypted": True,
                    "arn": f"arn:aws:ec2:us-east-1:123456789012:volume/{volume_id}"}, []
        if token == "aws:ec2/getInstances:getInstances":
            # The stack's instances as EC2 has them (components/_instance_state.py): none unless a test puts
            # some in `instances` as (id, state, lifecycle).
            states = set(args.args.get("instanceStateNames") or ())
            spot_only = any(f["name"] == "instance-lifecycle" for f in args.args.get("filters") or ())
            ids = [i for i, state, lifecycle in self.instances
                   if state in states and (not spot_only or lifecycle == "spot")]
            return {"id": "instances", "ids": ids, "privateIps": [], "publicIps": [], "ipv6Addresses": []}, []
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"id": "123456789012", "accountId": "123456789012", "arn": "arn:aws:iam::123456789012:user/dev",
                    "userId": "AIDAEXAMPLE"}, []
        if token == "aws:index/getRegion:getRegion":
            return {"id": "us-east-1", "name": "us-east-1", "region": "us-east-1", "endpoint": "ec2"}, []
        raise AssertionError(f"unexpected invoke {token}")

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str) -> Recorded:
        found = self.of_type(typ)
        assert len(found) == 1, f"{len(found)} resources of type {typ}: {[r.name for r in found]}"
        return found[0]
