"""The resource graph under Pulumi mocks: what a reviewer would check by hand before `pulumi up`."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_command as command
import pytest
import yaml

from tests.unit.model_folders import write_model_folder
from tests.unit.pulumi_mocks import (
    MOCK_AMI,
    MOCK_CLIENT_PRIVATE_KEY,
    MOCK_GATE_CAPACITY,
    MOCK_GATE_STDOUT,
    MOCK_GENERATED_API_KEY_CHAR,
    MOCK_HOST_PRIVATE_KEY,
    MOCK_PUBLIC_IP,
    Mocks,
    is_secret_value,
    plaintext_occurrences,
    unwrap,
)
from vllm_endpoint.components.vllm_endpoint import VllmEndpoint
from vllm_endpoint.components.vllm_endpoint_args import VllmEndpointArgs
from vllm_endpoint.infra.catalog.names import (
    CONTAINER_CACHE_ROOT,
    CONTAINER_MODEL_DIR,
    HOST_CACHE_MOUNT,
    PROXY_KEY_CHECK_FILE,
    PROXY_KEY_CHECK_PATH,
)
from vllm_endpoint.infra.plan.local_machine import LocalGpu, LocalMachine
from vllm_endpoint.infra.render.proxy import KEY_CHECK_VERSION_LABEL, render_key_check
from vllm_endpoint.infra.render.userdata import decode_user_data
from vllm_endpoint.infra.settings.endpoint_args import settings_kwargs
from vllm_endpoint.infra.settings.models import DEFAULT_AMI_SSM_PARAMETER, load_stack_config, setting_fields

API_KEY = "sk-test-" + "a1b2c3d4" * 5
HF_TOKEN = "hf_MockTokenThatMustNeverLeakIntoPlaintext"
OWN_SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nUSER-OWN-KEY\n-----END OPENSSH PRIVATE KEY-----\n"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm5xk0pJl1ZkZ4bH2v0b3dJq5s0aQy7Ff2k0Vd7J8yO"
AWS = {"sshAllowedCidrs": '["93.184.215.14/32", "2600:1f18:1::/48"]', "apiAllowedCidrs": "93.184.216.0/24"}
EXISTING = {"target": "existing-host", "hostAddress": "10.1.2.3", "hostSshUser": "deploy", "hostPublicKey": HOST_KEY,
            "sshPrivateKey": OWN_SSH_KEY, "hostGpuModel": "A10G", "gpus": '["1"]', "hostCacheDir": "/srv/cache"}
# target=local on the CPU; tests/unit/components/conftest.py stands in for the probe of this machine.
LOCAL = {"target": "local", "localDevice": "cpu"}
LOCAL_MACHINE = LocalMachine(home="/home/dev", user="1000:1000", gpus=(LocalGpu("NVIDIA L4", 22.49, "8.9"),))
OUTPUTS = ("endpoint_url", "api_key", "model", "public_ip", "instance_id", "ssh_command", "cache_volume_id",
           "docker_run", "plan_summary", "deploy_timeline", "ca_certificate", "dashboard_url", "idle_stop")


@dataclass
class Deployed:
    mocks: Mocks
    endpoint: VllmEndpoint
    values: dict[str, Any] = field(default_factory=dict)
    secret: dict[str, bool] = field(default_factory=dict)
    resource_secrets: dict[str, bool] = field(default_factory=dict)
    # Each resource's options as the program declared them (captured by a transformation).
    options: dict[str, pulumi.ResourceOptions] = field(default_factory=dict)

    def containers(self) -> dict[str, dict[str, Any]]:
        return {r.inputs["name"]: r.inputs for r in self.mocks.of_type("docker:index/container:Container")}

    def by_name(self, suffix: str) -> Any:
        matches = [r for r in self.mocks.resources if r.name.endswith(suffix)]
        assert len(matches) == 1, [r.name for r in self.mocks.resources]
        return matches[0]


def deploy(raw: dict[str, str], tmp_path: Path) -> Deployed:
    """The stack config `raw` (camelCase keys, text values, as Pulumi hands them over), deployed the way
    __main__.py does: validated, turned into VllmEndpoint's keyword arguments."""
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, preview=False)
    config = load_stack_config(raw)
    settings: Any = settings_kwargs(config)
    holder: dict[str, Deployed] = {}

    options: dict[str, pulumi.ResourceOptions] = {}

    def capture(args: pulumi.ResourceTransformationArgs) -> None:
        options[args.name] = args.opts

    @pulumi.runtime.test
    def run() -> Any:
        endpoint = VllmEndpoint(config.stack.endpoint_name,
                                VllmEndpointArgs(**settings, ssh_dir=str(tmp_path / "ssh")),
                                opts=pulumi.ResourceOptions(transformations=[capture]))
        deployed = holder.setdefault("d", Deployed(mocks, endpoint, options=options))

        async def collect() -> None:
            for name in OUTPUTS:
                output = getattr(endpoint, name)
                deployed.values[name] = await output.future()
                deployed.secret[name] = await output.is_secret()
            server = endpoint.server
            deployed.resource_secrets["vllm.envs"] = await server.vllm_container.envs.is_secret()
            deployed.resource_secrets["readiness.stdin"] = await server.readiness.stdin.is_secret()
            if isinstance(server.readiness, command.remote.Command):
                deployed.resource_secrets["readiness.connection"] = await server.readiness.connection.is_secret()
            if endpoint.host is not None:
                deployed.resource_secrets["instance.user_data"] = \
                    await endpoint.host.instance.user_data_base64.is_secret()
                deployed.resource_secrets["host.ssh_private_key"] = await endpoint.host.ssh_private_key.is_secret()
            deployed.resource_secrets["proxy_files.stdin"] = await server.proxy_files.stdin.is_secret()

        return collect()

    run()
    return holder["d"]


@pytest.fixture
def aws(tmp_path: Path) -> Deployed:
    return deploy({**AWS, "apiKey": API_KEY, "hfToken": HF_TOKEN}, tmp_path)


# ----------------------------------------------------------------------------------------------
# Network edge.

def test_ingress_is_only_the_api_port_and_ssh_from_the_configured_cidrs(aws: Deployed) -> None:
    rules = aws.mocks.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    seen = {(r.inputs["fromPort"], r.inputs["toPort"], r.inputs.get("cidrIpv4") or r.inputs.get("cidrIpv6"))
            for r in rules}
    assert seen == {(30005, 30005, "93.184.216.0/24"), (22, 22, "93.184.215.14/32"), (22, 22, "2600:1f18:1::/48")}
    for rule in rules:
        assert rule.inputs["ipProtocol"] == "tcp"
        cidr = str(rule.inputs.get("cidrIpv4") or rule.inputs.get("cidrIpv6"))
        assert ipaddress.ip_network(cidr).prefixlen > 0, "nothing open to the world without an opt-in"
    group = aws.mocks.one("aws:ec2/securityGroup:SecurityGroup")
    assert "ingress" not in group.inputs, "rules are separate resources, never inline"


def test_world_open_rules_carry_the_opt_in_marker(tmp_path: Path) -> None:
    deployed = deploy({"sshAllowedCidrs": "0.0.0.0/0", "apiAllowedCidrs": "::/0",
                       "dangerouslyAllowSshFromInternet": "true", "dangerouslyAllowApiFromInternet": "true"}, tmp_path)
    descriptions = sorted(r.inputs["description"]
                          for r in deployed.mocks.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"))
    assert descriptions == ["api from ::/0 (opt-in: dangerouslyAllowApiFromInternet)",
                            "ssh from 0.0.0.0/0 (opt-in: dangerouslyAllowSshFromInternet)"]


# ----------------------------------------------------------------------------------------------
# The instance and its volumes.

def test_instance_requires_imdsv2_with_hop_limit_one_and_encrypts_its_root(aws: Deployed) -> None:
    instance = aws.mocks.one("aws:ec2/instance:Instance").inputs
    assert instance["metadataOptions"]["httpTokens"] == "required"
    assert instance["metadataOptions"]["httpPutResponseHopLimit"] == 1
    assert instance["rootBlockDevice"]["encrypted"] is True
    assert instance["monitoring"] is True
    assert instance["associatePublicIpAddress"] is False
    assert instance["instanceType"] == "g5.xlarge"
    assert instance["ami"] == MOCK_AMI
    ssm = [args for token, args in aws.mocks.calls if token == "aws:ssm/getParameter:getParameter"]
    assert ssm == [{"name": DEFAULT_AMI_SSM_PARAMETER}]
    assert DEFAULT_AMI_SSM_PARAMETER.endswith("/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id")


def test_cache_volume_is_encrypted_retained_and_in_the_instances_zone(aws: Deployed) -> None:
    volume = aws.mocks.one("aws:ebs/volume:Volume")
    assert volume.inputs["encrypted"] is True
    assert volume.inputs["tags"]["vllm-endpoint:role"] == "cache"
    options = aws.options[volume.name]
    # Retained, not protected: `pulumi destroy` completes and keeps it (tests/unit/components/test_teardown.py).
    assert (bool(options.protect), options.retain_on_delete) == (False, True)
    subnet = aws.mocks.one("aws:ec2/instance:Instance").inputs["subnetId"]
    assert volume.inputs["availabilityZone"] == "us-east-1a" and subnet.startswith("subnet-0a")
    attachment = aws.mocks.one("aws:ec2/volumeAttachment:VolumeAttachment").inputs
    assert attachment["volumeId"] == "vol-0123456789abcdef0"
    assert attachment["instanceId"] == "i-0123456789abcdef0"


def test_user_data_mounts_the_cache_volume_by_id_and_holds_no_secret_of_the_app(aws: Deployed) -> None:
    encoded = aws.mocks.one("aws:ec2/instance:Instance").inputs["userDataBase64"]
    document = decode_user_data(encoded)
    parsed = yaml.safe_load(document)
    env_file = next(f for f in parsed["write_files"] if f["path"].endswith("boot.env"))["content"]
    assert "CACHE_VOLUME_ID=vol-0123456789abcdef0" in env_file
    assert f"CACHE_MOUNT_POINT={HOST_CACHE_MOUNT}" in env_file
    assert parsed["ssh_keys"]["ed25519_private"] == MOCK_HOST_PRIVATE_KEY  # the pinned host key, by design
    for secret in (API_KEY, HF_TOKEN, MOCK_CLIENT_PRIVATE_KEY.splitlines()[1]):
        assert secret not in document
    assert aws.resource_secrets["instance.user_data"] is True


def test_user_data_depends_only_on_host_level_settings(tmp_path: Path) -> None:
    def user_data(extra: dict[str, str]) -> str:
        deployed = deploy({**AWS, **extra}, tmp_path / str(len(extra)))
        return str(deployed.mocks.one("aws:ec2/instance:Instance").inputs["userDataBase64"])

    baseline = user_data({})
    container_level = {"model": "Qwen/Qwen2.5-0.5B-Instruct", "maxNumSeqs": "64", "imageTag": "v0.33.0",
                       "gpuMemoryUtilization": "0.8", "extraArgs": '["--enable-chunked-prefill"]', "apiPort": "30006",
                       "modelRevision": "main", "tls": "self-signed", "metricsAllowedCidrs": "10.0.0.0/8"}
    assert user_data(container_level) == baseline


def test_unpinned_ami_never_replaces_the_instance_but_a_pinned_one_is_followed(tmp_path: Path) -> None:
    unpinned = deploy(AWS, tmp_path / "a")
    pinned = deploy({**AWS, "amiId": "ami-0123456789abcdef0"}, tmp_path / "b")
    assert unpinned.options["vllm-host-instance"].ignore_changes == ["ami"]
    assert not pinned.options["vllm-host-instance"].ignore_changes
    assert pinned.mocks.one("aws:ec2/instance:Instance").inputs["ami"] == "ami-0123456789abcdef0"
    assert not [c for c in pinned.mocks.calls if c[0] == "aws:ssm/getParameter:getParameter"]
    # One GPU instance at a time, and the volume moves only after it is detached.
    assert unpinned.options["vllm-host-instance"].delete_before_replace is True
    assert unpinned.options["vllm-host-cache-attachment"].delete_before_replace is True


def test_the_ami_setting_says_what_the_code_does_and_how_to_roll_the_ami(tmp_path: Path) -> None:
    # The description is what the README's settings table and `pulumi config` show the user.
    text = setting_fields()["amiId"].description or ""
    unpinned = deploy(AWS, tmp_path)
    assert unpinned.options["vllm-host-instance"].ignore_changes == ["ami"]
    assert "a newer AMI published later is ignored" in text and "replaces the instance" not in text
    assert "set `amiId` to the new id, e.g. `pulumi config set amiId" in text
    assert "the instance is replaced and the cache volume and Elastic IP move to the new one" in text


def test_elastic_ip_gives_the_endpoint_a_stable_address(aws: Deployed) -> None:
    assert aws.mocks.one("aws:ec2/eip:Eip").inputs["domain"] == "vpc"
    association = aws.mocks.one("aws:ec2/eipAssociation:EipAssociation").inputs
    assert association["instanceId"] == "i-0123456789abcdef0"
    assert aws.values["public_ip"] == MOCK_PUBLIC_IP
    assert aws.values["endpoint_url"] == f"http://{MOCK_PUBLIC_IP}:30005/v1"


def test_host_readiness_waits_for_cloud_init_and_the_nvidia_runtime(aws: Deployed) -> None:
    ready = aws.by_name("-host-ready").inputs
    assert "cloud-init status --wait" in ready["create"]
    assert '"nvidia"' in ready["create"]
    assert ready["connection"]["host"] == MOCK_PUBLIC_IP
    assert ready["connection"]["hostKey"].startswith("ssh-ed25519 ")
    assert aws.endpoint.host is not None
    assert aws.resource_secrets["host.ssh_private_key"] is True


def test_status_alarm_reboots_gpu_instances_which_cannot_be_recovered(aws: Deployed) -> None:
    alarm = aws.by_name("-host-reboot-alarm").inputs  # the host's own (the monitoring's are in test_monitoring)
    # Every current GPU family has instance-store NVMe, which EC2's recover action does not support.
    assert alarm["metricName"] == "StatusCheckFailed_Instance"
    assert alarm["alarmActions"] == ["arn:aws:automate:us-east-1:ec2:reboot"]


# ----------------------------------------------------------------------------------------------
# Docker over SSH and the containers.

def test_docker_provider_connects_over_ssh_with_the_pinned_host_key(aws: Deployed, tmp_path: Path) -> None:
    provider = aws.mocks.one("pulumi:providers:docker").inputs
    assert provider["host"] == f"ssh://ubuntu@{MOCK_PUBLIC_IP}"
    opts = json.loads(provider["sshOpts"]) if isinstance(provider["sshOpts"], str) else provider["sshOpts"]
    assert "StrictHostKeyChecking=yes" in opts and "BatchMode=yes" in opts
    assert not any("StrictHostKeyChecking=no" in o or (o.split("=")[-1] == "/dev/null" and "UserKnown" in o)
                   for o in opts)
    known_hosts = Path(opts[opts.index("-o", opts.index("StrictHostKeyChecking=yes")) + 1].split("=", 1)[1])
    identity = Path(opts[opts.index("-i") + 1])
    assert known_hosts.read_text().startswith(f"{MOCK_PUBLIC_IP} ssh-ed25519 ")
    assert identity.read_text() == MOCK_CLIENT_PRIVATE_KEY
    assert identity.stat().st_mode & 0o777 == 0o600 and known_hosts.parent.stat().st_mode & 0o777 == 0o700


def test_vllm_container_spec(aws: Deployed) -> None:
    vllm = aws.containers()["vllm"]
    assert vllm["gpus"] == "all" and "runtime" not in vllm
    # The instance runs this endpoint alone: a reboot starts even a container stopped by hand.
    assert vllm["restart"] == "always"
    assert vllm["logDriver"] == "json-file" and vllm["logOpts"] == {"max-size": "100m", "max-file": "5"}
    assert vllm["healthcheck"]["tests"][0] == "CMD-SHELL" and "/health" in vllm["healthcheck"]["tests"][1]
    assert vllm["mounts"] == [{"type": "bind", "source": f"{HOST_CACHE_MOUNT}/root-cache",
                               "target": CONTAINER_CACHE_ROOT, "readOnly": False}]
    assert "ports" not in vllm or vllm["ports"] == [], "behind the proxy vLLM publishes nothing"
    assert vllm["user"] == "1000:1000" and vllm["capabilities"] == {"drops": ["ALL"], "adds": []}
    assert vllm["securityOpts"] == ["no-new-privileges:true"]
    assert vllm["ipcMode"] == "private" and vllm["shmSize"] == 4096
    assert vllm["command"][:1] == ["Qwen/Qwen2.5-1.5B-Instruct"]  # `vllm serve`'s positional model
    assert vllm["ulimits"] == [{"name": "nofile", "soft": 65535, "hard": 65535}]
    assert "--disable-fastapi-docs" in vllm["command"]
    assert all(not any(s in arg for s in (API_KEY, HF_TOKEN)) for arg in vllm["command"]), "no secret on the argv"
    assert "--api-key" not in vllm["command"]
    assert f"VLLM_API_KEY={API_KEY}" in vllm["envs"] and f"HF_TOKEN={HF_TOKEN}" in vllm["envs"]
    assert aws.resource_secrets["vllm.envs"] is True
    assert not any("docker.sock" in str(m) for m in vllm["mounts"])


def test_proxy_container_is_the_only_thing_on_the_api_port(aws: Deployed) -> None:
    proxy = aws.containers()["vllm-proxy"]
    assert proxy["ports"] == [{"internal": 8080, "external": 30005, "protocol": "tcp"}] or \
        proxy["ports"] == [{"internal": 8080, "external": 30005}]
    assert proxy["readOnly"] is True and proxy["user"] == "1000:1000"
    assert {m["target"] for m in proxy["mounts"]} == {"/etc/nginx/nginx.conf", PROXY_KEY_CHECK_PATH}
    assert all(m["readOnly"] for m in proxy["mounts"])
    network = aws.mocks.one("docker:index/network:Network").inputs
    # The endpoint's own network, named after it.
    assert proxy["networksAdvanced"][0]["name"] == network["name"] == "vllm-endpoint-vllm"


def test_the_proxy_checks_the_key_from_a_0600_file_and_is_re_created_when_the_key_changes(aws: Deployed) -> None:
    files = aws.by_name("-proxy-files")
    assert f"{PROXY_KEY_CHECK_FILE}' 0600" in files.inputs["create"] or f"{PROXY_KEY_CHECK_FILE} 0600" in \
        files.inputs["create"], files.inputs["create"]
    written = dict(line.split(" ", 1) for line in files.inputs["stdin"].splitlines())  # name base64
    assert base64.b64decode(written[PROXY_KEY_CHECK_FILE]).decode() == render_key_check(API_KEY)
    assert is_secret_value(files.raw_inputs["stdin"])
    proxy = aws.by_name("-proxy")
    # The label that re-creates the proxy for a new key is a random version, kept by the key (a secret).
    version = aws.by_name("-key-check")
    assert is_secret_value(version.raw_inputs["keepers"]) and unwrap(version.raw_inputs["keepers"]) == {
        "api_key": API_KEY}
    labels = {label["label"]: label["value"] for label in proxy.raw_inputs["labels"]}
    assert re.fullmatch(r"[0-9a-f]{16}", labels[KEY_CHECK_VERSION_LABEL]) and API_KEY not in str(labels)


def test_images_are_pinned_and_pulled_through_the_ssh_provider(aws: Deployed) -> None:
    images = {r.inputs["name"]: r for r in aws.mocks.of_type("docker:index/remoteImage:RemoteImage")}
    assert set(images) == {"vllm/vllm-openai:v0.32.0", "nginx:1.29.3-alpine"}
    assert all(r.inputs["keepLocally"] is True for r in images.values())
    assert all(r.provider and "vllm-server-docker" in r.provider for r in images.values())


def test_device_list_uses_the_nvidia_runtime_and_visible_devices(tmp_path: Path) -> None:
    deployed = deploy({**EXISTING}, tmp_path)
    vllm = deployed.containers()["vllm"]
    assert "gpus" not in vllm and vllm["runtime"] == "nvidia"
    assert "NVIDIA_VISIBLE_DEVICES=1" in vllm["envs"]


def test_readiness_gate_sends_the_key_on_stdin_only(aws: Deployed) -> None:
    gate = aws.by_name("-readiness").inputs
    assert gate["stdin"] == API_KEY + "\n"
    assert API_KEY not in gate["create"]
    assert "http://127.0.0.1:30005/v1/models" in gate["create"]
    assert aws.resource_secrets["readiness.stdin"] is True
    assert aws.resource_secrets["readiness.connection"] is True


# ----------------------------------------------------------------------------------------------
# Outputs, parents, secrets.

def test_outputs(aws: Deployed) -> None:
    values = aws.values
    assert values["endpoint_url"] == f"http://{MOCK_PUBLIC_IP}:30005/v1"
    assert values["api_key"] == API_KEY
    assert values["model"] == "Qwen/Qwen2.5-1.5B-Instruct"
    assert values["instance_id"] == "i-0123456789abcdef0"
    assert values["cache_volume_id"] == "vol-0123456789abcdef0"
    assert values["ssh_command"].startswith("ssh -o StrictHostKeyChecking=yes")
    assert values["ssh_command"].endswith(f"ubuntu@{MOCK_PUBLIC_IP}")
    assert "--name vllm \\\n" in values["docker_run"] and "--name vllm-proxy \\\n" in values["docker_run"]
    assert API_KEY not in values["docker_run"] and HF_TOKEN not in values["docker_run"]
    assert "17 concurrent 32768-token sequences; g5.xlarge $1.006/h" in values["plan_summary"]
    assert values["ca_certificate"] is None
    assert aws.secret["api_key"] is True
    assert not aws.secret["endpoint_url"] and not aws.secret["docker_run"]


def test_the_plan_output_gains_vllms_kv_cache_figures_and_the_timeline_drops_the_progress(aws: Deployed) -> None:
    values = aws.values
    assert values["plan_summary"].endswith("\n" + MOCK_GATE_CAPACITY)
    assert "17 concurrent 32768-token sequences" in values["plan_summary"]
    assert values["deploy_timeline"].splitlines() == [line for line in MOCK_GATE_STDOUT.splitlines()
                                                      if not line.startswith("[+")]


def test_generated_api_key_is_long_random_and_secret(tmp_path: Path) -> None:
    deployed = deploy(AWS, tmp_path)
    password = deployed.mocks.one("random:index/randomPassword:RandomPassword").inputs
    assert password["length"] >= 32 and password["special"] is False
    assert deployed.values["api_key"] == MOCK_GENERATED_API_KEY_CHAR * password["length"]
    assert deployed.secret["api_key"] is True


def test_every_child_has_a_parent_in_the_component_tree(aws: Deployed) -> None:
    def walk(resource: pulumi.Resource) -> list[pulumi.Resource]:
        return [resource, *(c for child in getattr(resource, "_childResources", set()) for c in walk(child))]

    tree = walk(aws.endpoint)
    names = {r._name for r in tree}
    recorded = {r.name for r in aws.mocks.resources}
    assert recorded <= names, f"resources outside the component tree: {recorded - names}"


def test_no_secret_appears_in_plaintext_in_any_resource_input(aws: Deployed) -> None:
    secrets = {"api key": API_KEY, "hf token": HF_TOKEN, "client key": MOCK_CLIENT_PRIVATE_KEY.splitlines()[1],
               "host key": MOCK_HOST_PRIVATE_KEY.splitlines()[1]}
    carried = set()
    for label, secret in secrets.items():
        for resource in aws.mocks.resources:
            if secret in json.dumps(resource.inputs):
                carried.add((label, resource.typ))
            leaks = plaintext_occurrences(resource.raw_inputs, secret)
            assert not leaks, f"{label} in plaintext at {resource.name}{leaks}"
    # The scan saw the secrets where they must be (so it cannot pass by looking nowhere).
    assert ("api key", "docker:index/container:Container") in carried
    assert ("api key", "command:remote:Command") in carried
    assert ("hf token", "docker:index/container:Container") in carried
    assert ("client key", "command:remote:Command") in carried
    # The user-data is base64+gzip and secret as a whole; its content is checked decoded elsewhere.
    assert is_secret_value(aws.mocks.one("aws:ec2/instance:Instance").raw_inputs["userDataBase64"])
    assert aws.resource_secrets["proxy_files.stdin"] is True


# ----------------------------------------------------------------------------------------------
# Other targets and model sources.

def test_existing_host_creates_no_aws_resources(tmp_path: Path) -> None:
    deployed = deploy(EXISTING, tmp_path)
    assert not [r for r in deployed.mocks.resources if r.typ.startswith("aws:")]
    assert not [c for c in deployed.mocks.calls if c[0].startswith("aws:")]
    provider = deployed.mocks.one("pulumi:providers:docker").inputs
    assert provider["host"] == "ssh://deploy@10.1.2.3"
    prepare = deployed.by_name("-prepare-host").inputs
    # The endpoint's own folder in hostCacheDir, named after it.
    assert "/srv/cache/vllm/root-cache" in prepare["create"]
    assert deployed.values["endpoint_url"] == "http://10.1.2.3:30005/v1"
    assert deployed.values["instance_id"] is None and deployed.values["cache_volume_id"] is None
    vllm = deployed.containers()["vllm"]
    assert vllm["mounts"][0]["source"] == "/srv/cache/vllm/root-cache"


def test_local_target_runs_every_step_here_on_this_machines_engine(tmp_path: Path) -> None:
    deployed = deploy(LOCAL, tmp_path)
    types = {r.typ for r in deployed.mocks.resources}
    assert not [t for t in types if t.startswith("aws:") or t.startswith("command:remote:")]
    assert not [c for c in deployed.mocks.calls if c[0].startswith("aws:")]
    # No host in the state: the provider reads DOCKER_HOST, else the engine's default socket, at each run.
    assert "host" not in deployed.mocks.one("pulumi:providers:docker").inputs
    steps = {r.name.rsplit("-", 1)[-1] if not r.name.endswith("-host") else "prepare-host": r.inputs
             for r in deployed.mocks.of_type("command:local:Command")}
    assert set(steps) == {"prepare-host", "files", "readiness"}
    assert all(step["interpreter"] == ["/bin/sh", "-c"] for step in steps.values())
    # The caches in the deploying user's home, owned by that user, whom the containers run as.
    assert "/home/dev/.cache/vllm-endpoint/vllm/root-cache" in steps["prepare-host"]["create"]
    assert "CONTAINER_USER=1000:1000" in steps["prepare-host"]["create"]
    assert deployed.resource_secrets["readiness.stdin"] is True
    vllm, proxy = deployed.containers()["vllm"], deployed.containers()["vllm-proxy"]
    assert "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.32.0" in _pulled_images(deployed)
    assert "gpus" not in vllm and "runtime" not in vllm and "VLLM_CPU_KVCACHE_SPACE=4" in vllm["envs"]
    assert proxy["ports"] == [{"internal": 8080, "external": 30005, "ip": "127.0.0.1"}]
    assert deployed.values["endpoint_url"] == "http://127.0.0.1:30005/v1"
    assert deployed.values["public_ip"] == "127.0.0.1"
    assert deployed.values["ssh_command"] is None and deployed.values["instance_id"] is None
    assert deployed.secret["api_key"] is True


def test_a_shared_host_is_checked_for_other_stacks_before_any_container(tmp_path: Path) -> None:
    for raw, host in ((EXISTING, "10.1.2.3"), (LOCAL, "127.0.0.1")):
        deployed = deploy({**raw, "endpointName": "chat", "apiPort": "30011"}, tmp_path)
        prepare = deployed.by_name("-prepare-host").inputs["create"]
        assert "check-host-claims.sh" in prepare and "API_PORT=30011" in prepare
        assert f"HOST_ADDRESS={host}" in prepare and "OWN_CONTAINERS='chat\nchat-proxy'" in prepare
        # Every container says whose it is: what the check of another stack reads.
        for container in deployed.containers().values():
            labels = {label["label"]: label["value"] for label in container["labels"]}
            assert labels["vllm-endpoint:project"] == "project" and labels["vllm-endpoint:stack"] == "stack"
            assert labels["vllm-endpoint:endpoint"] == "chat"
        assert set(deployed.containers()) == {"chat", "chat-proxy"}


def test_local_target_on_this_machines_gpu_sizes_the_fit_from_nvidia_smi(tmp_path: Path) -> None:
    deployed = deploy({"target": "local", "model": "Qwen/Qwen2.5-0.5B-Instruct"}, tmp_path)
    vllm = deployed.containers()["vllm"]
    assert "vllm/vllm-openai:v0.32.0" in _pulled_images(deployed) and vllm["gpus"] == "all"
    # LOCAL_MACHINE's L4 as nvidia-smi describes it (22.49 GiB, 8.9).
    assert "unlisted GPU (22.49 GiB" in deployed.values["plan_summary"]


def _pulled_images(deployed: Deployed) -> set[str]:
    return {r.inputs["name"] for r in deployed.mocks.of_type("docker:index/remoteImage:RemoteImage")}


def test_a_local_fine_tune_is_staged_copied_and_verified_here(tmp_path: Path) -> None:
    model = write_model_folder(tmp_path, "merged-ft")
    deployed = deploy({**LOCAL, "modelPath": str(model)}, tmp_path)
    copy = deployed.by_name("-model-upload")
    assert copy.typ == "command:local:Command"
    assert f"SOURCE_DIR={model}" in copy.inputs["create"] and "copy-local-model.sh" in copy.inputs["create"]
    vllm = deployed.containers()["vllm"]
    mount = next(m for m in vllm["mounts"] if m["target"] == CONTAINER_MODEL_DIR)
    assert mount["source"].startswith("/home/dev/.cache/vllm-endpoint/vllm/models/")
    assert f"STAGING_DIR={mount['source']}.upload" in copy.inputs["create"]
    check = deployed.by_name("-model-check")
    assert check.typ == "command:local:Command" and f"MODEL_DIR={mount['source']}" in check.inputs["create"]


def test_local_fine_tune_is_uploaded_by_digest_and_mounted_read_only(tmp_path: Path) -> None:
    model = write_model_folder(tmp_path, "merged-ft")
    deployed = deploy({**AWS, "modelPath": str(model)}, tmp_path)
    copy = deployed.mocks.one("command:remote:CopyToRemote").inputs
    vllm = deployed.containers()["vllm"]
    mount = next(m for m in vllm["mounts"] if m["target"] == CONTAINER_MODEL_DIR)
    assert mount["source"].startswith(f"{HOST_CACHE_MOUNT}/models/")
    assert mount == {"type": "bind", "source": mount["source"], "target": CONTAINER_MODEL_DIR, "readOnly": True}
    # Copied beside the folder the container mounts, moved in only once verified against the manifest.
    assert copy["remotePath"] == mount["source"] + ".upload"
    stage, check = deployed.by_name("-model-stage").inputs, deployed.by_name("-model-check").inputs
    assert "NEED_BYTES=" in stage["create"] and "raise cacheVolumeSizeGb" in stage["create"]
    assert f"MODEL_DIR={mount['source']}" in check["create"] and "verify-model.sh" in check["create"]
    assert check["stdin"].splitlines()[0].split("\t")[2] == "config.json"
    assert vllm["command"][:3] == [CONTAINER_MODEL_DIR, "--served-model-name", "merged-ft"]
    assert deployed.values["model"] == "merged-ft"


def test_tls_makes_the_endpoint_https_and_exports_the_ca(tmp_path: Path) -> None:
    deployed = deploy({**AWS, "tls": "self-signed"}, tmp_path)
    assert deployed.values["endpoint_url"] == f"https://{MOCK_PUBLIC_IP}:30005/v1"
    assert "BEGIN CERTIFICATE" in deployed.values["ca_certificate"]
    csr = deployed.mocks.one("tls:index/certRequest:CertRequest").inputs
    assert csr["ipAddresses"] == [MOCK_PUBLIC_IP]
    proxy = deployed.containers()["vllm-proxy"]
    assert {m["target"] for m in proxy["mounts"]} == {"/etc/nginx/nginx.conf", PROXY_KEY_CHECK_PATH, "/etc/nginx/tls"}
    assert deployed.resource_secrets["proxy_files.stdin"] is True


def test_a_custom_image_is_built_on_the_host(tmp_path: Path) -> None:
    context = tmp_path / "image"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM vllm/vllm-openai:v0.32.0\nCOPY merged /app/model\n")
    deployed = deploy({**AWS, "imageBuildContext": str(context), "model": "/app/model"}, tmp_path)
    build = deployed.mocks.one("docker:index/image:Image").inputs
    assert build["skipPush"] is True and build["imageName"].startswith("vllm-endpoint-custom:")
    vllm = deployed.containers()["vllm"]
    assert vllm["image"] == build["imageName"]
    assert vllm["command"][:3] == ["/app/model", "--served-model-name", "model"]


# ----------------------------------------------------------------------------------------------
# Fast deploys: boot-time prefetch, the cache volume's speed, where Docker keeps images.

def test_prefetch_is_told_through_instance_tags_not_user_data(aws: Deployed) -> None:
    instance = aws.mocks.one("aws:ec2/instance:Instance").inputs
    assert instance["metadataOptions"]["instanceMetadataTags"] == "enabled"
    assert instance["tags"]["vllm-endpoint:prefetch-image"] == "vllm/vllm-openai:v0.32.0"
    assert instance["tags"]["vllm-endpoint:prefetch-model"] == "Qwen/Qwen2.5-1.5B-Instruct"
    assert "prefetch" not in decode_user_data(instance["userDataBase64"]).split("write_files")[0]


def test_a_gated_models_token_reaches_the_instance_through_ssm_and_its_role_only(aws: Deployed) -> None:
    parameter = aws.mocks.one("aws:ssm/parameter:Parameter")
    assert parameter.inputs["type"] == "SecureString"
    assert is_secret_value(parameter.raw_inputs["value"]) and parameter.inputs["value"] == HF_TOKEN
    instance = aws.mocks.one("aws:ec2/instance:Instance").inputs
    assert instance["tags"]["vllm-endpoint:hf-token-parameter"] == parameter.inputs["name"]
    assert instance["iamInstanceProfile"].startswith("vllm-host-profile-")
    policy = json.loads(aws.mocks.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    arn = f"arn:aws:ssm:us-east-1:123456789012:parameter{parameter.inputs['name']}"
    assert policy["Statement"] == [{"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": arn}]
    assert HF_TOKEN not in decode_user_data(instance["userDataBase64"])


def test_without_a_token_or_metrics_there_is_no_role_and_no_parameter(tmp_path: Path) -> None:
    deployed = deploy({**AWS, "metrics": "false"}, tmp_path)
    assert not deployed.mocks.of_type("aws:ssm/parameter:Parameter")
    assert not deployed.mocks.of_type("aws:iam/role:Role")
    assert "iamInstanceProfile" not in deployed.mocks.one("aws:ec2/instance:Instance").inputs


def test_cache_volume_speed_follows_the_instances_ebs_limit(tmp_path: Path) -> None:
    small = deploy(AWS, tmp_path / "a").mocks.one("aws:ebs/volume:Volume").inputs
    # g5.xlarge reads EBS at up to 3,500 Mbps = 417 MiB/s (burst): 400 MiB/s, and 4 IOPS per MiB/s.
    assert (small["type"], small["throughput"], small["iops"]) == ("gp3", 400, 3000)
    big = deploy({**AWS, "instanceType": "g5.12xlarge", "model": "Qwen/Qwen2.5-7B-Instruct"},
                 tmp_path / "b").mocks.one("aws:ebs/volume:Volume").inputs
    assert (big["throughput"], big["iops"]) == (1000, 4000)
    pinned = deploy({**AWS, "cacheVolumeThroughput": "250", "cacheVolumeIops": "5000"},
                    tmp_path / "c").mocks.one("aws:ebs/volume:Volume").inputs
    assert (pinned["throughput"], pinned["iops"]) == (250, 5000)


def test_docker_can_keep_its_images_on_the_cache_volume(tmp_path: Path) -> None:
    def env_file(raw: dict[str, str], sub: str) -> str:
        encoded = deploy(raw, tmp_path / sub).mocks.one("aws:ec2/instance:Instance").inputs["userDataBase64"]
        files = yaml.safe_load(decode_user_data(encoded))["write_files"]
        return str(next(f["content"] for f in files if f["path"].endswith("boot.env")))

    assert "export DOCKER_DATA_ROOT=''\n" in env_file(AWS, "a")
    assert f"DOCKER_DATA_ROOT={HOST_CACHE_MOUNT}/docker\n" in env_file({**AWS, "dockerDataOnCacheVolume": "true"}, "b")
