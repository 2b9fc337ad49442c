"""VllmEndpoint as other Pulumi programs use it: keyword arguments, Outputs of other resources as inputs,
and two endpoints in one program (one AWS account, or one existing host) that share nothing."""

from __future__ import annotations

import gc
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_command as command
import pulumi_random as random
import pulumi_tls as tls
import pytest
from pulumi.provider.experimental.analyzer import Analyzer

from tests.unit.components.test_components import HOST_KEY, OWN_SSH_KEY, Deployed
from tests.unit.model_folders import write_model_folder
from tests.unit.policy.test_policy_on_program import violations
from tests.unit.pulumi_mocks import (
    MOCK_CLIENT_PRIVATE_KEY,
    MOCK_PUBLIC_IP,
    Mocks,
    Recorded,
    is_secret_value,
    plaintext_occurrences,
)
from vllm_endpoint import VllmEndpoint, VllmEndpointArgs
from vllm_endpoint.infra.catalog.names import ENDPOINT_TAG
from vllm_endpoint.infra.settings.endpoint_args import _STAND_INS, COMPONENT_KEYS, INPUT_SETTINGS
from vllm_endpoint.infra.settings.models import ConfigError, config_keys, load_stack_config

HF_TOKEN = "hf_TokenFromAnotherResourceThatMustStaySecret"
CONTAINER = "docker:index/container:Container"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
PREFIX_LIST = "aws:ec2/managedPrefixList:ManagedPrefixList"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default SSH folders go under HOME: a temporary one."""
    folder = tmp_path / "home"
    monkeypatch.setenv("HOME", str(folder))
    return folder


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """A program that fails while Outputs resolve leaves pending asyncio tasks; finalized at a random later
    moment they can run inside CPython 3.11.7's AST constructor (pytest's assertion rewriting of a module
    imported later) and break it ("AST constructor recursion depth mismatch"). Finalize them here."""
    yield
    gc.collect()


def run_program(program: Callable[[], Any]) -> Mocks:
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="apps", stack="prod", preview=False)
    pulumi.runtime.test(program)()
    return mocks


def on_aws(**settings: Any) -> VllmEndpointArgs:
    defaults: dict[str, Any] = {"ssh_allowed_cidrs": ["93.184.215.14/32"], "api_allowed_cidrs": ["93.184.216.0/24"]}
    merged: Any = {**defaults, **settings}
    return VllmEndpointArgs(**merged)


def on_existing_host(**settings: Any) -> VllmEndpointArgs:
    defaults: dict[str, Any] = {"host_address": "10.1.2.3", "host_public_key": HOST_KEY, "gpus": ["1"]}
    merged: Any = {**defaults, **settings}
    return VllmEndpointArgs(target="existing-host", host_ssh_user="deploy", ssh_private_key=OWN_SSH_KEY,
                            host_gpu_model="A10G", host_cache_dir="/srv/cache", **merged)


def endpoint_of(resource: Recorded, names: tuple[str, ...]) -> str:
    owner = [name for name in names if resource.name == name or resource.name.startswith(f"{name}-")]
    assert len(owner) == 1, f"{resource.name} belongs to none or several of {names}"
    return owner[0]


def duplicates(values: list[Any]) -> list[Any]:
    return [value for value, count in Counter(values).items() if count > 1]


# ----------------------------------------------------------------------------------------------
# Two endpoints in one program.

def physical_names(resource: Recorded) -> list[str]:
    """The names a resource takes in the AWS account (the ones the program gives; AWS names the others)."""
    found = [resource.inputs[key] for key in ("name", "keyName", "namePrefix", "alarmName")
             if isinstance(resource.inputs.get(key), str)]
    tags = resource.inputs.get("tags") or {}
    return found + ([tags["Name"]] if "Name" in tags else [])


def test_two_aws_endpoints_in_one_program_share_no_name() -> None:
    names = ("chat", "embed")
    mocks = run_program(lambda: [
        VllmEndpoint("chat", on_aws(hf_token=HF_TOKEN)),
        VllmEndpoint("embed", on_aws(hf_token=HF_TOKEN, model="Qwen/Qwen2.5-0.5B-Instruct",
                                     api_allowed_cidrs=pulumi.Output.from_input(["10.0.0.0/8"]))),
    ])
    # Every child is named after its endpoint, so Pulumi names cannot meet.
    owners = {r.name: endpoint_of(r, names) for r in mocks.resources}
    assert not duplicates([(r.typ, r.name) for r in mocks.resources])
    aws_resources = [r for r in mocks.resources if r.typ.startswith("aws:")]
    physical = [name for r in aws_resources for name in physical_names(r)]
    assert not duplicates(physical), physical
    parameters = sorted(r.inputs["name"] for r in mocks.of_type("aws:ssm/parameter:Parameter"))
    assert parameters == ["/vllm-endpoint/apps/prod/chat/hf-token", "/vllm-endpoint/apps/prod/embed/hf-token"]
    assert len(mocks.of_type(PREFIX_LIST)) == 2, "embed's Output list: one prefix list per family"
    # Names AWS generates from the resource name stay generated (a given name would be one per account).
    for r in aws_resources:
        if r.typ in ("aws:iam/role:Role", "aws:iam/instanceProfile:InstanceProfile", "aws:ec2/keyPair:KeyPair",
                     "aws:ec2/securityGroup:SecurityGroup"):
            assert not {"name", "keyName", "namePrefix"} & set(r.inputs), r.name
    # Tags say which endpoint a resource belongs to.
    tagged = [r for r in aws_resources if "tags" in r.inputs]
    assert tagged and all(r.inputs["tags"][ENDPOINT_TAG] == owners[r.name] for r in tagged)
    containers = [r.inputs["name"] for r in mocks.of_type(CONTAINER)]
    networks = [r.inputs["name"] for r in mocks.of_type("docker:index/network:Network")]
    assert sorted(containers) == ["chat", "chat-proxy", "embed", "embed-proxy"]
    assert sorted(networks) == ["vllm-endpoint-chat", "vllm-endpoint-embed"]
    # Each endpoint's SSH key and known_hosts files in its own local folder.
    for provider in mocks.of_type("pulumi:providers:docker"):
        assert f"/.ssh/vllm-endpoint/apps-prod/{owners[provider.name]}/id_ed25519" in json.dumps(provider.inputs)


HOST_PATH = re.compile(r"/srv/cache/[^\s'\"\\]*")


def host_paths(resource: Recorded) -> list[str]:
    """Every path under hostCacheDir a resource puts on the host or reads there."""
    return HOST_PATH.findall(json.dumps(resource.inputs, default=str))


def test_two_endpoints_on_one_existing_host_share_no_container_network_port_or_folder(tmp_path: Path) -> None:
    model = write_model_folder(tmp_path, "merged-ft")
    names = ("chat", "embed")
    mocks = run_program(lambda: [
        VllmEndpoint("chat", on_existing_host(gpus=["0"], model_path=str(model))),
        VllmEndpoint("embed", on_existing_host(gpus=["1"], model_path=str(model), api_port=30006)),
    ])
    assert not duplicates([(r.typ, r.name) for r in mocks.resources])
    containers = mocks.of_type(CONTAINER)
    assert not duplicates([c.inputs["name"] for c in containers])
    assert not duplicates([r.inputs["name"] for r in mocks.of_type("docker:index/network:Network")])
    ports = [p["external"] for c in containers for p in c.inputs.get("ports", [])]
    assert sorted(ports) == [30005, 30006]
    # Every host path an endpoint uses is in its own folder: caches, uploads, proxy files, the timeline.
    seen: dict[str, set[str]] = {name: set() for name in names}
    for resource in mocks.resources:
        paths = host_paths(resource)
        owner = endpoint_of(resource, names)
        assert all(p.startswith(f"/srv/cache/{owner}/") or p == f"/srv/cache/{owner}" for p in paths), paths
        seen[owner] |= set(paths)
    assert {"/srv/cache/chat/root-cache", "/srv/cache/chat/proxy"} <= seen["chat"]
    uploads = sorted(r.inputs["remotePath"] for r in mocks.of_type("command:remote:CopyToRemote"))
    assert [u.split("/")[3] for u in uploads] == ["chat", "embed"], uploads
    labels = {c.inputs["name"]: {label["label"]: label["value"] for label in c.inputs["labels"]} for c in containers}
    assert labels["embed-proxy"][ENDPOINT_TAG] == "embed" and labels["chat"][ENDPOINT_TAG] == "chat"


def test_two_endpoints_asking_for_one_port_on_one_host_are_refused_before_the_second_declares_anything() -> None:
    errors: list[ConfigError] = []

    def program() -> None:
        VllmEndpoint("chat", on_existing_host(host_address="gpu-box.internal"))
        with pytest.raises(ConfigError) as info:
            # The same host, written otherwise.
            VllmEndpoint("embed", on_existing_host(host_address="GPU-Box.Internal", gpus=["0"]))
        errors.append(info.value)

    mocks = run_program(program)
    assert errors[0].problems == [
        "apiPort: endpoints 'chat' and 'embed' both ask for port 30005 on host GPU-Box.Internal; give one of "
        "them another apiPort"
    ]
    assert not [r for r in mocks.resources if r.name.startswith("embed")]


def test_endpoint_names_whose_containers_meet_on_one_host_are_refused() -> None:
    errors: list[ConfigError] = []

    def program() -> None:
        VllmEndpoint("chat", on_existing_host())
        with pytest.raises(ConfigError) as info:
            VllmEndpoint("chat-proxy", on_existing_host(api_port=30006, gpus=["0"]))
        errors.append(info.value)

    run_program(program)
    assert errors[0].problems == [
        "name: endpoints 'chat' and 'chat-proxy' would both run a container named 'chat-proxy' on host 10.1.2.3; "
        "rename one of the endpoints"
    ]


def test_one_port_on_a_host_whose_address_is_an_output_fails_when_the_address_resolves() -> None:
    def program() -> None:
        box = aws.ec2.Eip("gpu-box", domain="vpc")
        VllmEndpoint("chat", on_existing_host(host_address=box.public_ip))
        VllmEndpoint("embed", on_existing_host(host_address=MOCK_PUBLIC_IP))

    with pytest.raises(ConfigError) as info:
        run_program(program)
    assert info.value.problems == [
        f"apiPort: endpoints 'embed' and 'chat' both ask for port 30005 on host {MOCK_PUBLIC_IP}; give one of "
        "them another apiPort"
    ]


def test_two_endpoints_of_one_name_under_different_parents_are_refused() -> None:
    class Team(pulumi.ComponentResource):
        def __init__(self, name: str) -> None:
            super().__init__("acme:index:Team", name)

    errors: list[ConfigError] = []

    def program() -> None:
        VllmEndpoint("vllm", on_aws(), opts=pulumi.ResourceOptions(parent=Team("search")))
        with pytest.raises(ConfigError) as info:
            VllmEndpoint("vllm", on_aws(), opts=pulumi.ResourceOptions(parent=Team("support")))
        errors.append(info.value)

    run_program(program)
    assert errors[0].problems[0].startswith("name: two endpoints of this program are named 'vllm'")


# ----------------------------------------------------------------------------------------------
# Inputs from other resources.

def test_subnet_cidrs_keys_and_secrets_can_come_from_other_resources() -> None:
    held: dict[str, Any] = {}

    def program() -> Any:
        vpc = aws.ec2.Vpc("apps", cidr_block="10.20.0.0/16")
        subnet = aws.ec2.Subnet("gpu", vpc_id=vpc.id, cidr_block="10.20.1.0/24")
        kms = aws.kms.Key("volumes")
        deploy_key = tls.PrivateKey("deploy-key", algorithm="ED25519")
        api_key = random.RandomPassword("endpoint-key", length=40, special=False)
        endpoint = VllmEndpoint("chat", VllmEndpointArgs(
            subnet_id=subnet.id,
            kms_key_id=kms.arn,
            # A list with an Output in it, and an Output list.
            api_allowed_cidrs=[vpc.cidr_block, "2600:1f18:2::/48"],
            ssh_allowed_cidrs=vpc.cidr_block.apply(lambda cidr: [cidr]),
            ssh_private_key=deploy_key.private_key_openssh,
            ssh_public_key=deploy_key.public_key_openssh.apply(str.strip),
            api_key=api_key.result,
            # Not secret where it comes from: the endpoint makes it secret.
            hf_token=pulumi.Output.from_input(HF_TOKEN),
        ))
        held["endpoint"] = endpoint
        return _secrecy(endpoint, held)

    mocks = run_program(program)
    instance = mocks.one("aws:ec2/instance:Instance").inputs
    assert instance["subnetId"].startswith("subnet-0") and instance["subnetId"] != _STAND_INS["subnet_id"]
    assert ("aws:ec2/getSubnet:getSubnet", {"id": instance["subnetId"]}) in mocks.calls
    assert mocks.one("aws:ebs/volume:Volume").inputs["availabilityZone"] == "us-east-1b"  # the subnet's zone
    assert mocks.one("aws:ec2/securityGroup:SecurityGroup").inputs["vpcId"] == "vpc-0fedcba9876543210"
    assert mocks.one("aws:ebs/volume:Volume").inputs["kmsKeyId"].startswith("arn:aws:kms:us-east-1:123456789012:")
    assert mocks.one("aws:ec2/keyPair:KeyPair").inputs["publicKey"].startswith("ssh-ed25519 ")
    # Output CIDR lists: prefix lists per family, one rule per port and list, no rule per CIDR.
    lists = {r.inputs["name"].rsplit("-", 2)[-2] + "-" + r.inputs["addressFamily"]: r.inputs.get("entries", [])
             for r in mocks.of_type(PREFIX_LIST)}
    assert lists == {
        "api-IPv4": [{"cidr": "10.20.0.0/16", "description": "api from 10.20.0.0/16"}],
        "api-IPv6": [{"cidr": "2600:1f18:2::/48", "description": "api from 2600:1f18:2::/48"}],
        "ssh-IPv4": [{"cidr": "10.20.0.0/16", "description": "ssh from 10.20.0.0/16"}],
        "ssh-IPv6": [],
    }
    rules = mocks.of_type(INGRESS)
    assert sorted((r.inputs["fromPort"], "prefixListId" in r.inputs) for r in rules) == [
        (22, True), (22, True), (30005, True), (30005, True)]
    assert not [r for r in rules if "cidrIpv4" in r.inputs or "cidrIpv6" in r.inputs]
    # Secrets stay secret on every input that carries them, and in the api_key output.
    assert held["secret"] == {name: True for name in held["secret"]}, held["secret"]
    for secret_value in (HF_TOKEN, "G" * 40, MOCK_CLIENT_PRIVATE_KEY.splitlines()[1]):
        carriers = [r for r in mocks.resources if secret_value in json.dumps(r.inputs)]
        assert carriers, secret_value
        for resource in carriers:
            assert not plaintext_occurrences(resource.raw_inputs, secret_value), resource.name
    assert is_secret_value(mocks.one("aws:ssm/parameter:Parameter").raw_inputs["value"])
    _assert_no_stand_in(mocks)


def test_an_existing_hosts_address_and_host_key_can_come_from_other_resources() -> None:
    held: dict[str, Any] = {}

    def program() -> Any:
        address = aws.ec2.Eip("gpu-box", domain="vpc").public_ip
        host_key = tls.PrivateKey("gpu-box-host-key", algorithm="ED25519")
        endpoint = VllmEndpoint("chat", on_existing_host(
            host_address=address, host_public_key=host_key.public_key_openssh.apply(str.strip)))
        held["endpoint"] = endpoint
        return _secrecy(endpoint, held)

    mocks = run_program(program)
    assert mocks.one("pulumi:providers:docker").inputs["host"] == f"ssh://deploy@{MOCK_PUBLIC_IP}"
    assert held["values"]["endpoint_url"] == f"http://{MOCK_PUBLIC_IP}:30005/v1"
    gate = next(r for r in mocks.of_type("command:remote:Command") if r.name.endswith("-readiness")).inputs
    assert gate["connection"]["host"] == MOCK_PUBLIC_IP and gate["connection"]["hostKey"].startswith("ssh-ed25519 ")
    assert held["secret"]["api_key output"] is True
    _assert_no_stand_in(mocks)


def _secrecy(endpoint: VllmEndpoint, held: dict[str, Any]) -> Any:
    """Collects, once the program ran, whether each secret-carrying input and the api_key output is secret."""

    async def collect() -> None:
        server = endpoint.server
        checks: dict[str, pulumi.Output[Any]] = {
            "api_key output": endpoint.api_key,
            "vllm container env": server.vllm_container.envs,
            "readiness stdin": server.readiness.stdin,
            "proxy files stdin": server.proxy_files.stdin,
        }
        if isinstance(server.readiness, command.remote.Command):
            checks["readiness connection"] = server.readiness.connection
        if endpoint.host is not None:
            checks["host ssh key"] = endpoint.host.ssh_private_key
            checks["host-ready connection"] = endpoint.host.ready.connection
        held["secret"] = {name: await output.is_secret() for name, output in checks.items()}
        held["values"] = {"endpoint_url": await endpoint.endpoint_url.future()}

    return collect()


def _assert_no_stand_in(mocks: Mocks) -> None:
    """The values that stand in for Outputs while the plan is made never reach a resource."""
    texts = {json.dumps(value) for value in _STAND_INS.values() if not isinstance(value, list)}
    texts |= {json.dumps(item) for value in _STAND_INS.values() if isinstance(value, list) for item in value}
    for resource in mocks.resources:
        dumped = json.dumps(resource.inputs)
        assert not [t for t in texts if t.strip('"') in dumped], resource.name


def test_a_bad_value_in_an_output_fails_when_it_resolves_naming_the_setting() -> None:
    def program() -> None:
        vpc = aws.ec2.Vpc("apps", cidr_block="10.20.0.0/16")
        VllmEndpoint("chat", on_aws(api_allowed_cidrs=vpc.cidr_block.apply(lambda c: [c.split("/")[0]])))

    with pytest.raises(ConfigError) as info:
        run_program(program)
    assert info.value.problems == [
        "apiAllowedCidrs[0]: '10.20.0.0' has no prefix length: write 10.20.0.0/32 (got '10.20.0.0')"]


def test_an_output_world_open_list_needs_the_opt_in_as_a_plain_one_does() -> None:
    def program() -> None:
        VllmEndpoint("chat", on_aws(ssh_allowed_cidrs=pulumi.Output.from_input(["0.0.0.0/0"])))

    with pytest.raises(ConfigError) as info:
        run_program(program)
    assert info.value.problems[0].startswith("sshAllowedCidrs: 0.0.0.0/0 or ::/0 opens SSH to the whole internet")


def test_two_endpoints_with_output_inputs_pass_the_shipped_policy_pack() -> None:
    options: dict[str, pulumi.ResourceOptions] = {}

    def capture(args: pulumi.ResourceTransformationArgs) -> None:
        options[args.name] = args.opts

    opts = pulumi.ResourceOptions(transformations=[capture])
    held: dict[str, VllmEndpoint] = {}

    def program() -> None:
        vpc = aws.ec2.Vpc("apps", cidr_block="10.20.0.0/16")
        held["chat"] = VllmEndpoint("chat", on_aws(api_allowed_cidrs=[vpc.cidr_block], hf_token=HF_TOKEN,
                                                   api_key=random.RandomPassword("k", length=40).result), opts=opts)
        VllmEndpoint("embed", on_existing_host(host_address=aws.ec2.Eip("box", domain="vpc").public_ip), opts=opts)

    mocks = run_program(program)
    assert mocks.of_type(PREFIX_LIST)
    assert violations(Deployed(mocks, held["chat"], options=options)) == []


# ----------------------------------------------------------------------------------------------
# Bad keyword arguments: the stack config's messages, before any resource.

def test_bad_keyword_arguments_get_the_stack_configs_messages_and_declare_nothing() -> None:
    errors: list[ConfigError] = []

    def program() -> None:
        with pytest.raises(ConfigError) as info:
            VllmEndpoint("chat", VllmEndpointArgs(api_allowed_cidrs=["10.0.0.1"], ssh_allowed_cidrs=["0.0.0.0/0"],
                                                  max_num_seqs=0, **{"max_model_lenght": 4096}))  # type: ignore[typeddict-unknown-key]
        errors.append(info.value)

    mocks = run_program(program)
    assert mocks.resources == [] and mocks.calls == []
    with pytest.raises(ConfigError) as from_stack:
        load_stack_config({"apiAllowedCidrs": '["10.0.0.1"]', "sshAllowedCidrs": "0.0.0.0/0", "maxNumSeqs": "0",
                           "maxModelLenght": "4096"})
    # The same problems, each naming the camelCase setting; an unknown key is named as it was written.
    assert errors[0].problems == [
        "max_model_lenght: unknown setting; did you mean 'max_model_len'?",
        *(p for p in from_stack.value.problems if not p.startswith("maxModelLenght")),
    ]
    assert "maxModelLenght: unknown setting; did you mean 'maxModelLen'?" in from_stack.value.problems
    assert any(p.startswith("apiAllowedCidrs[0]: '10.0.0.1' has no prefix length") for p in errors[0].problems)


def test_an_output_where_the_plan_needs_the_value_is_refused() -> None:
    errors: list[ConfigError] = []

    def program() -> None:
        with pytest.raises(ConfigError) as info:
            VllmEndpoint("chat", on_aws(max_num_seqs=pulumi.Output.from_input(64)))
        errors.append(info.value)

    run_program(program)
    assert errors[0].problems[0].startswith(
        "maxNumSeqs: cannot be a Pulumi Output: the plan needs its value before any resource exists")


def test_a_name_that_cannot_name_containers_and_folders_is_refused() -> None:
    errors: list[ConfigError] = []

    def program() -> None:
        with pytest.raises(ConfigError) as info:
            VllmEndpoint("my endpoint", on_aws())
        errors.append(info.value)

    run_program(program)
    assert errors[0].problems[0].startswith("name: 'my endpoint' cannot name an endpoint")


# ----------------------------------------------------------------------------------------------
# The component package's schema.

def test_pulumis_component_analyzer_reads_every_setting_with_its_description() -> None:
    definition = Analyzer("vllm-endpoint").analyze([VllmEndpoint])["component_definitions"]["VllmEndpoint"]
    # endpointName is the stack program's own setting: a component is named by its resource name.
    assert set(definition.inputs) == {*config_keys(), "target", *(_camel(k) for k in COMPONENT_KEYS)} - {
        "endpointName"}
    for key, prop in definition.inputs.items():
        assert prop.optional and prop.description, key
    # Settings that take Outputs are not plain in the schema; every other one is.
    takes_outputs = {key for key, prop in definition.inputs.items() if not prop.plain}
    assert takes_outputs == {_camel(k) for k in INPUT_SETTINGS}
    assert definition.inputs["apiAllowedCidrs"].items is not None
    assert set(definition.outputs) >= {"endpointUrl", "apiKey", "model", "publicIp", "deployTimeline"}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def test_the_args_are_a_plain_dict() -> None:
    args = VllmEndpointArgs(model="Qwen/Qwen2.5-7B-Instruct", gpus=["1"])
    assert args == {"model": "Qwen/Qwen2.5-7B-Instruct", "gpus": ["1"]} and type(args) is dict
