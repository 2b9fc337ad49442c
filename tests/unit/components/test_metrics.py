"""Metrics the user can see, under Pulumi mocks (issue 13): the instance's role and the CloudWatch agent's
policy, the agent's configuration step on the host, the log groups and the proxy's access log."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.unit.components.test_components import API_KEY, AWS, EXISTING, HF_TOKEN, Deployed, deploy
from tests.unit.pulumi_mocks import is_secret_value, plaintext_occurrences
from vllm_endpoint.infra.catalog.names import (
    CLOUDWATCH_AGENT_CONFIG_FILE,
    CLOUDWATCH_AGENT_SCRAPE_FILE,
    CLOUDWATCH_AGENT_SCRIPT,
    METRICS_NAMESPACE,
    METRICS_TAG,
)
from vllm_endpoint.infra.render.cloudwatch_agent import (
    AgentInputs,
    access_log_group,
    prometheus_log_group,
    render_agent_config,
    render_scrape_config,
)
from vllm_endpoint.infra.render.userdata import decode_user_data

ROLE = "aws:iam/role:Role"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
COMMAND = "command:remote:Command"
AGENT_POLICY = "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"
# The address the mocked Docker gives the first container on a network (tests/unit/pulumi_mocks.py).
VLLM_ADDRESS = "172.18.0.2"
STACK = "stack"  # the mocks' stack name


def _env_value(script: str, name: str) -> str:
    """The value the script's env lines (everything before its first file) give `name`, as sh reads them."""
    env = script.split("{ bash -c", 1)[0]
    return subprocess.run(["sh", "-c", f'{env}printf %s "${name}"'], capture_output=True, text=True,
                          check=True).stdout


def _agent_command(deployed: Deployed) -> dict[str, object]:
    return deployed.by_name("-cloudwatch-agent").inputs if deployed.mocks.of_type(COMMAND) else {}


def test_metrics_on_by_default_give_the_instance_a_role_with_the_agents_managed_policy(tmp_path: Path) -> None:
    deployed = deploy(AWS, tmp_path)
    assert len(deployed.mocks.of_type(ROLE)) == 1
    attachment = deployed.mocks.one(ATTACHMENT).inputs
    assert attachment["policyArn"] == AGENT_POLICY
    instance = deployed.mocks.one("aws:ec2/instance:Instance").inputs
    assert instance["iamInstanceProfile"].startswith("vllm-host-profile-")
    assert instance["tags"][METRICS_TAG], "boot.sh sets the agent up only with this tag"
    # No token: no parameter and no read policy, only the agent's.
    assert not deployed.mocks.of_type("aws:ssm/parameter:Parameter")
    assert not deployed.mocks.of_type("aws:iam/rolePolicy:RolePolicy")


def test_a_token_and_metrics_share_one_role(tmp_path: Path) -> None:
    deployed = deploy({**AWS, "hfToken": HF_TOKEN}, tmp_path)
    role = deployed.mocks.one(ROLE)
    assert deployed.mocks.one(ATTACHMENT).inputs["role"] == deployed.mocks.one(
        "aws:iam/instanceProfile:InstanceProfile").inputs["role"]
    assert deployed.mocks.one("aws:iam/rolePolicy:RolePolicy").inputs["role"] == f"{role.name}-id"
    statement = json.loads(deployed.mocks.one("aws:iam/rolePolicy:RolePolicy").inputs["policy"])["Statement"]
    assert [s["Action"] for s in statement] == ["ssm:GetParameter"]


def test_metrics_off_attach_no_agent_policy_create_no_log_group_and_leave_the_agent_alone(tmp_path: Path) -> None:
    deployed = deploy({**AWS, "hfToken": HF_TOKEN, "metrics": "false"}, tmp_path)
    assert len(deployed.mocks.of_type(ROLE)) == 1, "the token still needs its role"
    assert not deployed.mocks.of_type(ATTACHMENT)
    assert not deployed.mocks.of_type(LOG_GROUP)
    assert METRICS_TAG not in deployed.mocks.one("aws:ec2/instance:Instance").inputs["tags"]
    assert not [r for r in deployed.mocks.of_type(COMMAND) if r.name.endswith("-cloudwatch-agent")]
    proxy = deployed.containers()["vllm-proxy"]
    assert proxy["logDriver"] == "json-file"


def test_user_data_is_the_same_with_metrics_on_or_off(tmp_path: Path) -> None:
    """Turning metrics on or off changes a tag and the role, never user-data (which would restart the instance)."""
    on = deploy(AWS, tmp_path / "on").mocks.one("aws:ec2/instance:Instance").inputs["userDataBase64"]
    off = deploy({**AWS, "metrics": "false"}, tmp_path / "off").mocks.one("aws:ec2/instance:Instance").inputs[
        "userDataBase64"]
    assert on == off
    files = {f["path"]: f for f in yaml.safe_load(decode_user_data(on))["write_files"]}
    assert files[CLOUDWATCH_AGENT_SCRIPT]["permissions"] == "0755"
    env = next(f["content"] for path, f in files.items() if path.endswith("boot.env"))
    assert ("export AGENT_PACKAGE_URL=https://amazoncloudwatch-agent-us-east-1.s3.us-east-1.amazonaws.com/"
            "ubuntu/amd64/latest/amazon-cloudwatch-agent.deb\n") in env


def test_the_agent_step_writes_the_rendered_configuration_for_the_vllm_containers_address(tmp_path: Path) -> None:
    deployed = deploy(AWS, tmp_path)
    step = _agent_command(deployed)
    # The instance's id (the mocks' instance id) labels the idle-stop alarm's metric.
    inputs = AgentInputs(stack=STACK, namespace=METRICS_NAMESPACE, vllm_address=VLLM_ADDRESS,
                         instance_id="i-0123456789abcdef0")
    create = str(step["create"])
    # The configs travel as env lines; the scrape target is the vLLM container's address.
    assert f"{VLLM_ADDRESS}:8000" in render_scrape_config(inputs)
    assert _env_value(create, "AGENT_CONFIG") == render_agent_config(inputs)
    assert _env_value(create, "SCRAPE_CONFIG") == render_scrape_config(inputs)
    assert f"export AGENT_CONFIG_FILE={CLOUDWATCH_AGENT_CONFIG_FILE}\n" in create
    assert f"export SCRAPE_CONFIG_FILE={CLOUDWATCH_AGENT_SCRAPE_FILE}\n" in create
    assert "fetch-config -m ec2 -s -c" in create
    assert "-a stop" in str(step["delete"])
    vllm = deployed.by_name("vllm-server-vllm")
    assert step["triggers"] == [f"{vllm.name}-id", VLLM_ADDRESS], "a re-created container is scraped afresh"
    assert API_KEY not in create
    # Replaced (a new container): the old step stops the agent before the new one starts it, not after.
    assert deployed.options["vllm-server-cloudwatch-agent"].delete_before_replace


def test_log_groups_keep_their_events_for_the_configured_days(tmp_path: Path) -> None:
    deployed = deploy({**AWS, "logRetentionDays": "14"}, tmp_path)
    groups = {r.inputs["name"]: r.inputs for r in deployed.mocks.of_type(LOG_GROUP)}
    assert set(groups) == {access_log_group(STACK), prometheus_log_group(STACK)}
    assert {g["retentionInDays"] for g in groups.values()} == {14}


def test_the_proxys_access_log_goes_to_its_log_group_through_dockers_awslogs_driver(tmp_path: Path) -> None:
    deployed = deploy(AWS, tmp_path)
    proxy = deployed.containers()["vllm-proxy"]
    assert proxy["logDriver"] == "awslogs"
    assert proxy["logOpts"] == {"awslogs-region": "us-east-1", "awslogs-group": access_log_group(STACK),
                                "mode": "non-blocking", "max-buffer-size": "4m"}
    assert deployed.containers()["vllm"]["logDriver"] == "json-file", "vLLM's own log stays on the host"
    # The `docker_run` output says the same.
    proxy_run = next(cmd for cmd in deployed.values["docker_run"].split("\ndocker run") if "--name vllm-proxy" in cmd)
    for part in ("--log-driver awslogs", "--log-opt awslogs-region=us-east-1",
                 f"--log-opt awslogs-group={access_log_group(STACK)}", "--log-opt mode=non-blocking"):
        assert part in proxy_run, part


def test_secrets_stay_secret_with_metrics_on(tmp_path: Path) -> None:
    deployed = deploy({**AWS, "apiKey": API_KEY, "hfToken": HF_TOKEN}, tmp_path)
    for needle in (API_KEY, HF_TOKEN):
        leaks = [f"{r.typ} {r.name}{path}" for r in deployed.mocks.resources
                 for path in plaintext_occurrences(r.raw_inputs, needle)]
        assert not leaks, leaks
    assert is_secret_value(deployed.mocks.one("aws:ec2/instance:Instance").raw_inputs["userDataBase64"])
    assert not is_secret_value(deployed.by_name("-cloudwatch-agent").raw_inputs["create"]), \
        "the agent's configuration holds no secret, and stays readable in the diff"


def test_an_existing_host_gets_no_cloudwatch_resources(tmp_path: Path) -> None:
    deployed = deploy(EXISTING, tmp_path)
    assert not deployed.mocks.of_type(LOG_GROUP) and not deployed.mocks.of_type(ATTACHMENT)
    assert all(c["logDriver"] == "json-file" for c in deployed.containers().values())
