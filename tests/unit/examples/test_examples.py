"""The example projects in examples/: each is complete, declares exactly the config it reads, and builds
under mocks from its own stack file, with the config the Pulumi CLI would hand it (the project's declared
defaults applied, its required keys, types and secrets checked as pulumi/pulumi's pkg/workspace/config.go
does). Each example's test asserts what its README promises."""

from __future__ import annotations

import ast
import json
import re
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from tests.unit.components.test_service_lb import ALB_DNS, LbMocks
from tests.unit.pulumi_mocks import (
    MOCK_AMI,
    MOCK_PUBLIC_IP,
    Mocks,
    Recorded,
    is_secret_value,
    mock_image_id,
    plaintext_occurrences,
    secret_value,
)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
# Each example and the stack its stack file is for.
STACKS = {"aws-dev": "dev", "aws-prod": "prod", "existing-host": "shared-gpu", "two-endpoints": "gpu-box",
          "consumer": "dev", "fleet": "dev"}
FILES = ("Pulumi.yaml", "__main__.py", "requirements.txt", "README.md")

CONTAINER = "docker:index/container:Container"
INSTANCE = "aws:ec2/instance:Instance"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"

# What a user sets with `pulumi config set` before the first deploy (public sample addresses: the settings
# refuse documentation ranges; made-up keys).
SSH_CIDR = "93.184.215.14/32"
API_CIDR = "93.184.216.0/24"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm5xk0pJl1ZkZ4bH2v0b3dJq5s0aQy7Ff2k0Vd7J8yO"
DEPLOY_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nEXAMPLE-DEPLOY-KEY\n-----END OPENSSH PRIVATE KEY-----\n"
ON_EXISTING_HOST = {"hostPublicKey": HOST_KEY, "sshPrivateKey": DEPLOY_KEY}
# Test networks only: the examples ship none of these.
DOCUMENTATION_RANGES = re.compile(r"192\.0\.2\.|198\.51\.100\.|203\.0\.113\.|2001:db8:", re.IGNORECASE)


# ----------------------------------------------------------------------------------------------
# Reading an example, and the config the CLI would hand it.

@dataclass(frozen=True)
class Example:
    folder: Path
    project: str
    declared: dict[str, dict[str, Any]]  # Pulumi.yaml's `config:`
    stack: str
    stack_file: Path
    stack_values: dict[str, Any]  # the stack file's `config:`, keys as written


def load(name: str) -> Example:
    folder = EXAMPLES / name
    project = yaml.safe_load((folder / "Pulumi.yaml").read_text())
    stack_file = folder / f"Pulumi.{STACKS[name]}.yaml"
    stack_values = yaml.safe_load(stack_file.read_text()).get("config") or {}
    return Example(folder, project["name"], project.get("config") or {}, STACKS[name], stack_file, stack_values)


def of_type(value: Any, declaration: dict[str, Any]) -> bool:
    """Whether the CLI accepts `value` for a typed key (workspace.ValidateConfigValue)."""
    typ = declaration["type"]
    if typ == "string":
        return isinstance(value, str)
    if typ == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and value.lstrip("-").isdigit())
    if typ == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    if typ == "object":
        return isinstance(value, dict)
    return typ == "array" and isinstance(value, list) and all(of_type(v, declaration["items"]) for v in value)


def as_text(value: Any) -> str:
    """How the CLI hands a value to the program: scalars as text, lists and maps as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


def cli_config(example: Example, given: dict[str, Any], secret: set[str]) -> tuple[dict[str, str], list[str]]:
    """The config `pulumi up` hands the program: the stack file's values and `given` (what the user set
    with `pulumi config set`, `secret` ones with --secret), the declared default of every key neither
    sets; failing where the CLI would stop before running the program."""
    prefix = f"{example.project}:"
    values = {**example.stack_values, **{prefix + key: value for key, value in given.items()}}
    missing = sorted(k for k, d in example.declared.items() if "default" not in d and prefix + k not in values)
    assert not missing, f"the CLI stops: stack {example.stack!r} is missing configuration values {missing}"
    for key, declaration in example.declared.items():
        if prefix + key not in values:
            values[prefix + key] = declaration["default"]
        elif "type" in declaration:
            assert of_type(values[prefix + key], declaration), f"{key}: not of type {declaration['type']}"
        if declaration.get("secret"):
            assert key in secret, f"{key}: the CLI refuses a secret key's plaintext value"
    return {key: as_text(value) for key, value in values.items()}, [prefix + key for key in secret]


@dataclass
class Run:
    mocks: Mocks
    outputs: dict[str, Any] = field(default_factory=dict)  # stack outputs, secrets unwrapped
    secret_outputs: set[str] = field(default_factory=set)

    def container(self, name: str) -> dict[str, Any]:
        found = [r.inputs for r in self.mocks.of_type(CONTAINER) if r.inputs["name"] == name]
        assert len(found) == 1, [r.inputs["name"] for r in self.mocks.of_type(CONTAINER)]
        return found[0]


def run_example(name: str, home: Path, monkeypatch: pytest.MonkeyPatch, given: dict[str, Any],
                secret: set[str] | None = None, mocks: Mocks | None = None) -> Run:
    """Runs examples/<name>/__main__.py as `pulumi up` would, under mocks, with its stack file's config."""
    example = load(name)
    run = Run(mocks or Mocks())
    config, secret_keys = cli_config(example, given, secret or set())
    pulumi.runtime.set_mocks(run.mocks, project=example.project, stack=example.stack, preview=False)
    pulumi.runtime.set_all_config(config, secret_keys)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(example.folder)
    exported: dict[str, Any] = {}
    export = pulumi.export

    def record(key: str, value: Any) -> None:
        exported[key] = value
        export(key, value)

    monkeypatch.setattr(pulumi, "export", record)

    async def resolve_outputs() -> None:
        for key, value in exported.items():
            output = pulumi.Output.from_input(value)
            run.outputs[key] = await output.future()
            if await output.is_secret():
                run.secret_outputs.add(key)

    @pulumi.runtime.test
    def program() -> Any:
        runpy.run_path(str(example.folder / "__main__.py"), run_name="__main__")
        return resolve_outputs()

    program()
    return run


def flag(container: dict[str, Any], name: str) -> str:
    command = container["command"]
    return str(command[command.index(name) + 1])


def served_model(container: dict[str, Any]) -> str:
    """The model argument: `vllm serve`'s positional first argument, or --model on the older entrypoint."""
    command = container["command"]
    return str(command[0]) if not str(command[0]).startswith("-") else flag(container, "--model")


def assert_nowhere_in_plaintext(mocks: Mocks, value: str) -> None:
    """`value` reaches resources (else this would prove nothing), and only inside secrets."""
    carriers = [r for r in mocks.resources if value in json.dumps(r.inputs)]
    assert carriers, f"no resource received {value[:20]!r}"
    for resource in carriers:
        assert not plaintext_occurrences(resource.raw_inputs, value), resource.name


# ----------------------------------------------------------------------------------------------
# Every example is a complete project.

CONFIG_READ = re.compile(r"(get|require)(_secret)?(_bool|_int|_float|_object)?")


def _is_pulumi_config(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Config"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "pulumi")


def config_reads(program: Path) -> dict[str, str]:
    """The config keys a program reads from `pulumi.Config()`, each with the method reading it."""
    tree = ast.parse(program.read_text())
    configs: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and _is_pulumi_config(node.value):
            assert isinstance(node.value, ast.Call) and not node.value.args, "the project's own config only"
            configs |= {target.id for target in node.targets if isinstance(target, ast.Name)}
    reads: dict[str, str] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        receiver = node.func.value
        if not (_is_pulumi_config(receiver) or (isinstance(receiver, ast.Name) and receiver.id in configs)):
            continue
        method = node.func.attr
        assert CONFIG_READ.fullmatch(method), f"{program}: unexpected config method {method}"
        key = node.args[0] if node.args else None
        # A computed key would hide from this check.
        assert isinstance(key, ast.Constant) and isinstance(key.value, str), f"{program}: {method} with a computed key"
        reads[key.value] = method
    return reads


def test_the_examples_folder_holds_exactly_these_examples() -> None:
    assert sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir() and not p.name.startswith(".")) == sorted(STACKS)
    projects = [load(name).project for name in STACKS]
    root_project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["name"]
    # Their own project names: no stack of an example shares a name or state with another project's.
    assert len(set(projects)) == len(projects) and root_project not in projects


@pytest.mark.parametrize("name", sorted(STACKS))
def test_each_example_is_a_complete_project_declaring_exactly_the_config_it_reads(name: str) -> None:
    example = load(name)
    for file in (*FILES, example.stack_file.name):
        assert (example.folder / file).is_file(), file
    project = yaml.safe_load((example.folder / "Pulumi.yaml").read_text())
    assert project["runtime"]["name"] == "python"
    reads = config_reads(example.folder / "__main__.py")
    assert sorted(reads) == sorted(example.declared)
    for key, declaration in example.declared.items():
        assert declaration.get("description"), key
        assert "type" in declaration, f"{key}: typed, so the CLI checks the stack's value"
        assert declaration["type"] != "array" or "items" in declaration, f"{key}: Pulumi refuses an array without items"
        if "default" in declaration:
            assert of_type(declaration["default"], declaration), key
        # A default lives in Pulumi.yaml only (the CLI passes it): the program requires every key.
        assert reads[key].startswith("require"), f"{key} read with {reads[key]}"
        assert ("_secret" in reads[key]) == bool(declaration.get("secret")), f"{key}: secret in both or neither"
    # The stack file sets this project's declared keys, or a provider's.
    for key in example.stack_values:
        namespace, _, setting = key.partition(":")
        assert (namespace == example.project and setting in example.declared) or namespace == "aws", key
    # Every required key the stack file leaves to the user is named in its `pulumi config set` comments.
    comments = [line for line in example.stack_file.read_text().splitlines()
                if line.lstrip().startswith("#") and "pulumi config set" in line]
    for key, declaration in example.declared.items():
        if "default" not in declaration and f"{example.project}:{key}" not in example.stack_values:
            assert [line for line in comments if re.search(rf"\b{key}\b", line)], f"{key}: no `pulumi config set`"
    readme = (example.folder / "README.md").read_text()
    assert f"pulumi stack init {example.stack}" in readme and "pulumi up" in readme


@pytest.mark.parametrize("name", sorted(STACKS))
def test_requirements_install_the_checkout_or_the_checkouts_own_pins(name: str) -> None:
    pins = {line.split("==")[0].lower(): line for line in (ROOT / "requirements.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    lines = [line.strip() for line in (EXAMPLES / name / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert requirements
    for line in requirements:
        # `-e ../..` is this checkout: Pulumi runs pip in the example's folder.
        assert line == "-e ../.." or pins.get(line.split("==")[0].lower()) == line, line


def test_no_example_ships_a_documentation_address() -> None:
    # What the examples ship, not a user's .venv or caches inside them.
    shipped = [p for p in EXAMPLES.rglob("*") if p.suffix in (".py", ".yaml", ".txt", ".md")
               and not any(part.startswith((".", "__pycache__")) for part in p.relative_to(EXAMPLES).parts)]
    assert shipped
    assert [str(p) for p in shipped if DOCUMENTATION_RANGES.search(p.read_text())] == []


# ----------------------------------------------------------------------------------------------
# aws-dev: the root `dev` stack on the public API, open only to the user's networks.

def test_aws_dev_is_the_root_dev_stack_reachable_only_from_the_users_networks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_example("aws-dev", tmp_path, monkeypatch, {"sshAllowedCidrs": [SSH_CIDR], "apiAllowedCidrs": [API_CIDR]})
    root_dev = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    instance = run.mocks.one(INSTANCE).inputs
    assert instance["instanceType"] == root_dev["vllm-endpoint:instanceType"]
    assert served_model(run.container("vllm")) == root_dev["vllm-endpoint:model"]
    assert instance["tags"]["environment"] == "dev" and instance["tags"]["team"] == "ml-platform"
    rules = {(r.inputs["fromPort"], r.inputs.get("cidrIpv4"), r.inputs.get("cidrIpv6"))
             for r in run.mocks.of_type(INGRESS)}
    assert rules == {(22, SSH_CIDR, None), (30005, API_CIDR, None)}
    assert run.outputs["endpoint_url"] == f"http://{MOCK_PUBLIC_IP}:30005/v1"
    assert run.outputs["model"] == root_dev["vllm-endpoint:model"]
    assert "api_key" in run.secret_outputs


def test_aws_dev_without_the_users_networks_does_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AssertionError, match=r"missing configuration values \['apiAllowedCidrs', 'sshAllowedCidrs'\]"):
        run_example("aws-dev", tmp_path, monkeypatch, {})


# ----------------------------------------------------------------------------------------------
# aws-prod: pinned, https, volumes under the program's KMS key.

DIGEST = "sha256:" + "0f1e2d3c" * 8
REVISION = "a09a35458c702b33eeacc393d103063234e8bc28"
SUBNET = "subnet-0a1b2c3d4e5f67890"


def test_aws_prod_pins_everything_serves_https_and_encrypts_with_its_own_rotating_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ami = "ami-0fedcba9876543210"
    assert ami != MOCK_AMI  # the pinned AMI, not the one the SSM parameter would name
    run = run_example("aws-prod", tmp_path, monkeypatch, {
        "amiId": ami, "imageDigest": DIGEST, "modelRevision": REVISION, "subnetId": SUBNET,
        "sshAllowedCidrs": [SSH_CIDR], "apiAllowedCidrs": [API_CIDR]})
    mocks = run.mocks
    key = mocks.one("aws:kms/key:Key")
    assert key.inputs["enableKeyRotation"] is True
    key_arn = run.outputs["volume_key_arn"]
    assert key_arn.startswith("arn:aws:kms:")
    instance = mocks.one(INSTANCE).inputs
    assert instance["rootBlockDevice"]["kmsKeyId"] == key_arn
    assert mocks.one("aws:ebs/volume:Volume").inputs["kmsKeyId"] == key_arn
    assert instance["ami"] == ami and not [c for c in mocks.calls if c[0] == "aws:ssm/getParameter:getParameter"]
    assert instance["subnetId"] == SUBNET
    # The container runs the image pulled by digest; the stack file's tag is only its label.
    tag = load("aws-prod").stack_values["vllm-aws-prod:imageTag"]
    vllm = run.container("chat")
    assert vllm["image"] == mock_image_id(f"vllm/vllm-openai:{tag}@{DIGEST}")
    assert flag(vllm, "--revision") == REVISION
    # Pulumi.yaml's default, handed over by the CLI: the program states none.
    assert flag(vllm, "--max-model-len") == str(load("aws-prod").declared["maxModelLen"]["default"])
    assert run.outputs["endpoint_url"] == f"https://{MOCK_PUBLIC_IP}:30005/v1"
    assert run.outputs["ca_certificate"].startswith("-----BEGIN CERTIFICATE-----")
    for resource in (key, mocks.one(INSTANCE), mocks.one("aws:ebs/volume:Volume")):
        tags = resource.inputs["tags"]
        assert (tags["environment"], tags["team"], tags["cost-center"]) == ("prod", "ml-platform", "llm"), resource.name
    assert "api_key" in run.secret_outputs


# ----------------------------------------------------------------------------------------------
# existing-host: the original shared GPU box, GPU 1 only, no cloud.

def test_existing_host_is_the_original_command_on_gpu_1_without_any_aws_resource(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_example("existing-host", tmp_path, monkeypatch, ON_EXISTING_HOST, secret={"sshPrivateKey"})
    mocks = run.mocks
    assert mocks.resources and not [r.typ for r in mocks.resources if r.typ.startswith("aws:")]
    assert not [c for c in mocks.calls if c[0].startswith("aws:")]
    vllm = run.container("vllm")
    assert "NVIDIA_VISIBLE_DEVICES=1" in vllm["envs"]
    # The serving flags of the root shared-gpu stack (the original command's), unchanged.
    root = yaml.safe_load((ROOT / "Pulumi.shared-gpu.yaml").read_text())["config"]
    assert served_model(vllm) == root["vllm-endpoint:model"]
    for setting, name in (("gpuMemoryUtilization", "--gpu-memory-utilization"), ("maxNumSeqs", "--max-num-seqs"),
                          ("blockSize", "--block-size")):
        assert flag(vllm, name) == root[f"vllm-endpoint:{setting}"], name
    assert "--swap-space" not in vllm["command"] and "--trust-remote-code" not in vllm["command"]
    assert [p["external"] for p in run.container("vllm-proxy")["ports"]] == [30005]
    assert mocks.one("pulumi:providers:docker").inputs["host"] == "ssh://deploy@gpu-box.internal"
    assert run.outputs["endpoint_url"] == "http://gpu-box.internal:30005/v1"
    assert_nowhere_in_plaintext(mocks, DEPLOY_KEY.splitlines()[1])
    assert "api_key" in run.secret_outputs


# ----------------------------------------------------------------------------------------------
# two-endpoints: one host, two GPUs, two ports, nothing shared.

def test_two_endpoints_run_side_by_side_on_one_host_sharing_no_name_port_or_gpu(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_example("two-endpoints", tmp_path, monkeypatch, ON_EXISTING_HOST, secret={"sshPrivateKey"})
    mocks = run.mocks
    assert not [r.typ for r in mocks.resources if r.typ.startswith("aws:")]
    identities = [(r.typ, r.name) for r in mocks.resources]
    assert len(identities) == len(set(identities))
    assert sorted(r.inputs["name"] for r in mocks.of_type(CONTAINER)) == ["chat", "chat-proxy", "small", "small-proxy"]
    networks = [r.inputs["name"] for r in mocks.of_type("docker:index/network:Network")]
    assert len(networks) == 2 and len(set(networks)) == 2
    assert "NVIDIA_VISIBLE_DEVICES=0" in run.container("chat")["envs"]
    assert "NVIDIA_VISIBLE_DEVICES=1" in run.container("small")["envs"]
    assert served_model(run.container("chat")) != served_model(run.container("small"))
    ports = {name: [p["external"] for p in run.container(f"{name}-proxy")["ports"]] for name in ("chat", "small")}
    assert ports == {"chat": [30005], "small": [30006]}
    for name in ("chat", "small"):
        assert run.outputs[f"{name}_endpoint_url"] == f"http://gpu-box.internal:{ports[name][0]}/v1"
        assert f"{name}_api_key" in run.secret_outputs
    # One generated key per endpoint.
    assert sorted(r.name for r in mocks.of_type("random:index/randomPassword:RandomPassword")) == [
        "chat-api-key", "small-api-key"]
    assert_nowhere_in_plaintext(mocks, DEPLOY_KEY.splitlines()[1])


# ----------------------------------------------------------------------------------------------
# consumer: the endpoint's outputs through a StackReference into a secret only the app may read.

ENDPOINT_STACK = "acme/vllm-aws-prod/prod"
ENDPOINT_KEY = "sk-endpoint-" + "k3y" * 12
ENDPOINT = {"endpoint_url": f"https://{MOCK_PUBLIC_IP}:30005/v1", "model": "Qwen/Qwen2.5-7B-Instruct",
            "ca_certificate": "-----BEGIN CERTIFICATE-----\nendpoint-ca\n-----END CERTIFICATE-----\n"}


@pytest.mark.parametrize("exported_as_secret", [True, False], ids=["key-exported-secret", "key-exported-plain"])
def test_consumer_hands_the_endpoint_to_the_app_with_the_key_secret_end_to_end(
        exported_as_secret: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stack that exported its key in plaintext (not the package's) must not leak it into this one either.
    key = secret_value(ENDPOINT_KEY) if exported_as_secret else ENDPOINT_KEY
    mocks = Mocks(stacks={ENDPOINT_STACK: {**ENDPOINT, "api_key": key}})
    given = {"endpointStack": ENDPOINT_STACK, "appRoleName": "support-bot"}
    run = run_example("consumer", tmp_path, monkeypatch, given, mocks=mocks)
    assert mocks.one("pulumi:pulumi:StackReference").inputs["name"] == ENDPOINT_STACK
    version = mocks.one("aws:secretsmanager/secretVersion:SecretVersion")
    assert is_secret_value(version.raw_inputs["secretString"])
    assert json.loads(version.inputs["secretString"]) == {
        "base_url": ENDPOINT["endpoint_url"], "api_key": ENDPOINT_KEY, "model": ENDPOINT["model"],
        "ca_certificate": ENDPOINT["ca_certificate"]}
    assert_nowhere_in_plaintext(mocks, ENDPOINT_KEY)
    # No stack output holds the key, not even as a secret.
    assert run.outputs and not [k for k, v in run.outputs.items() if ENDPOINT_KEY in json.dumps(v)]
    assert (run.outputs["endpoint_url"], run.outputs["model"]) == (ENDPOINT["endpoint_url"], ENDPOINT["model"])
    # The app's role may read this one secret and nothing else.
    policy: Recorded = mocks.one("aws:iam/rolePolicy:RolePolicy")
    assert policy.inputs["role"] == "support-bot"
    assert json.loads(policy.inputs["policy"])["Statement"] == [
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": run.outputs["secret_arn"]}]
    assert run.outputs["secret_arn"].startswith("arn:aws:secretsmanager:")


# fleet: 2-4 replicas on ECS behind the load balancer, open only to the user's networks.

def test_fleet_serves_from_the_load_balancer_open_only_to_the_users_networks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_example("fleet", tmp_path, monkeypatch, {"apiAllowedCidrs": [API_CIDR]}, mocks=LbMocks())
    assert run.outputs["endpoint_url"] == f"http://{ALB_DNS}/v1"
    assert run.outputs["replicas"] == {"desired": 2, "min": 2, "max": 4}
    assert "api_key" in run.secret_outputs
    assert not run.mocks.of_type(INSTANCE) and not run.mocks.of_type(CONTAINER)  # no VM, no SSH, no pulumi-docker
    listener_rules = {(r.inputs["fromPort"], r.inputs.get("cidrIpv4")) for r in run.mocks.of_type(INGRESS)
                      if r.inputs.get("cidrIpv4") or r.inputs.get("cidrIpv6")}
    assert listener_rules == {(80, API_CIDR)}
    distribution = run.mocks.one("aws:autoscaling/group:Group").inputs["mixedInstancesPolicy"]["instancesDistribution"]
    assert (distribution["onDemandBaseCapacity"], distribution["onDemandPercentageAboveBaseCapacity"]) == (1, 50)
    assert "at the maximum of 4 replicas" in run.outputs["plan"]
    assert_nowhere_in_plaintext(run.mocks, run.outputs["api_key"])


def test_fleet_without_the_users_networks_does_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AssertionError, match=r"missing configuration values \['apiAllowedCidrs'\]"):
        run_example("fleet", tmp_path, monkeypatch, {}, mocks=LbMocks())
