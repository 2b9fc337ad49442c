"""The CloudWatch agent's configuration: the GPU figures, exactly the catalog's metrics the agent can carry,
one `stack` dimension, and a scrape target on the private Docker network, never the public endpoint."""

from __future__ import annotations

import ipaddress
import json
import re

import pytest
import yaml

from vllm_endpoint.infra.catalog.names import (
    CLOUDWATCH_AGENT_CONFIG_FILE,
    CLOUDWATCH_AGENT_SCRAPE_FILE,
    CLOUDWATCH_AGENT_SCRIPT,
    DEFAULT_API_PORT,
    DEFAULT_ENDPOINT_NAME,
    METRICS_PATH,
    PROXY_CONTAINER_PORT,
    VLLM_CONTAINER_PORT,
)
from vllm_endpoint.infra.catalog.vllm_metrics import VLLM_METRICS
from vllm_endpoint.infra.render.cloudwatch_agent import (
    AgentInputs,
    access_log_group,
    agent_apply_script,
    agent_metrics,
    cloudwatch_agent_package_url,
    metrics_scope,
    metrics_the_agent_drops,
    prometheus_log_group,
    render_agent_config,
    render_scrape_config,
)
from vllm_endpoint.infra.render.host_scripts import read_host_file

INPUTS = AgentInputs(stack="dev", namespace="VllmEndpoint", vllm_address="172.18.0.2", interval_s=30)


def _declaration() -> dict:
    prometheus = json.loads(render_agent_config(INPUTS))["logs"]["metrics_collected"]["prometheus"]
    (declaration,) = prometheus["emf_processor"]["metric_declaration"]
    return declaration


def _scrape_job() -> dict:
    config = yaml.safe_load(render_scrape_config(INPUTS))
    (job,) = config["scrape_configs"]
    return job


def test_the_gpu_section_collects_utilization_and_memory_with_the_stack() -> None:
    metrics = json.loads(render_agent_config(INPUTS))["metrics"]
    assert metrics["namespace"] == "VllmEndpoint"
    gpu = metrics["metrics_collected"]["nvidia_gpu"]
    assert set(gpu["measurement"]) == {"utilization_gpu", "memory_used", "memory_total"}
    assert gpu["append_dimensions"] == {"stack": "dev"} and gpu["metrics_collection_interval"] == 30
    # A roll-up by the stack alone: the host name the agent adds changes with every replacement instance.
    assert metrics["aggregation_dimensions"] == [["stack"]]


def test_the_prometheus_section_points_at_the_scrape_config_and_the_namespace() -> None:
    prometheus = json.loads(render_agent_config(INPUTS))["logs"]["metrics_collected"]["prometheus"]
    assert prometheus["prometheus_config_path"] == CLOUDWATCH_AGENT_SCRAPE_FILE
    assert prometheus["emf_processor"]["metric_namespace"] == "VllmEndpoint"
    assert prometheus["log_group_name"] == prometheus_log_group("dev") != prometheus_log_group("prod")
    assert json.loads(render_agent_config(INPUTS, "/x.yaml"))["logs"]["metrics_collected"]["prometheus"][
        "prometheus_config_path"] == "/x.yaml"


def test_the_declaration_selects_exactly_the_catalog_metrics_the_agent_carries() -> None:
    declaration = _declaration()
    selectors = declaration["metric_selectors"]
    published = {m.name for m in agent_metrics()}
    every_name = {m.name for m in VLLM_METRICS}
    # Each selector matches one catalog metric and nothing else the catalog names.
    assert {name for name in every_name if any(re.search(s, name) for s in selectors)} == published
    assert all(sum(bool(re.search(s, name)) for name in every_name) == 1 for s in selectors)
    assert not any(re.search(s, f"{name}_x") or re.search(s, f"x{name}") for s in selectors for name in every_name)
    # What is left out is exactly the histograms, handed back to the caller.
    assert {m.name for m in metrics_the_agent_drops()} == every_name - published
    assert {m.type for m in metrics_the_agent_drops()} == {"histogram"}


def test_the_declaration_matches_the_scrape_job_and_has_the_stack_dimension() -> None:
    declaration, job = _declaration(), _scrape_job()
    assert declaration["source_labels"] == ["job"]
    assert re.search(declaration["label_matcher"], job["job_name"])
    assert declaration["dimensions"] == [["stack"]]
    (static,) = job["static_configs"]
    assert static["labels"] == {"stack": "dev"}


def test_the_scrape_config_keeps_only_the_published_metrics() -> None:
    (relabel,) = _scrape_job()["metric_relabel_configs"]
    assert relabel["action"] == "keep" and relabel["source_labels"] == ["__name__"]
    names = {m.name for m in VLLM_METRICS} | {"vllm:request_success_total", "python_gc_objects_collected_total"}
    assert {n for n in names if re.fullmatch(relabel["regex"], n)} == {m.name for m in agent_metrics()}


def test_the_scrape_target_is_vllm_on_the_private_network_not_the_public_endpoint() -> None:
    job = _scrape_job()
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.rsplit(":", 1)
    assert int(port) == VLLM_CONTAINER_PORT and int(port) not in (DEFAULT_API_PORT, PROXY_CONTAINER_PORT)
    assert ipaddress.ip_address(host).is_private
    assert job["metrics_path"] == METRICS_PATH and job["scheme"] == "http"
    scrape = yaml.safe_load(render_scrape_config(INPUTS))["global"]
    assert scrape["scrape_interval"] == "30s"


@pytest.mark.parametrize("address", ["203.0.113.7", "8.8.8.8", "127.0.0.1", "169.254.169.254", "fd00::2", "vllm"])
def test_an_address_that_is_not_a_container_on_a_bridge_is_refused(address: str) -> None:
    with pytest.raises(ValueError):
        AgentInputs(stack="dev", namespace="VllmEndpoint", vllm_address=address)


def test_an_interval_below_the_scrape_timeout_or_an_empty_name_is_refused() -> None:
    with pytest.raises(ValueError, match="below the scrape timeout"):
        AgentInputs(stack="dev", namespace="NS", vllm_address="172.18.0.2", interval_s=5)
    with pytest.raises(ValueError, match="must not be empty"):
        AgentInputs(stack="", namespace="NS", vllm_address="172.18.0.2")


# ----------------------------------------------------------------------------------------------
# Where things go: the package, the log groups, the deploy's step on the host.

def test_the_package_comes_from_the_instances_own_region() -> None:
    assert cloudwatch_agent_package_url("eu-central-1") == (
        "https://amazoncloudwatch-agent-eu-central-1.s3.eu-central-1.amazonaws.com/ubuntu/amd64/latest/"
        "amazon-cloudwatch-agent.deb")
    for bad in ("", "us-east-1/../x", "US-EAST-1"):
        with pytest.raises(ValueError, match="region"):
            cloudwatch_agent_package_url(bad)


def test_each_endpoint_of_a_stack_has_its_own_scope_and_log_groups() -> None:
    assert metrics_scope("dev", DEFAULT_ENDPOINT_NAME) == "dev"
    assert metrics_scope("dev", "chat") == "dev-chat"
    groups = {access_log_group("dev"), prometheus_log_group("dev"), access_log_group("dev-chat")}
    assert len(groups) == 3
    # CloudWatch Logs group names: 1-512 of [.-_/#A-Za-z0-9].
    assert all(re.fullmatch(r"[\w./#-]{1,512}", g) for g in groups)


def test_the_deploys_step_installs_writes_both_files_and_restarts_the_agent() -> None:
    script = agent_apply_script(INPUTS)
    assert f"export AGENT_SCRIPT={CLOUDWATCH_AGENT_SCRIPT}\n" in script
    assert f"export AGENT_CONFIG_FILE={CLOUDWATCH_AGENT_CONFIG_FILE}\n" in script
    assert f"export SCRAPE_CONFIG_FILE={CLOUDWATCH_AGENT_SCRAPE_FILE}\n" in script
    body = read_host_file("cloudwatch-agent-apply.sh")
    # Installed first (a no-op when boot did it), then the files, then the agent restarted with them.
    order = [body.index(step) for step in ('"$AGENT_SCRIPT" install', '"$SCRAPE_CONFIG_FILE"',
                                           '"$AGENT_CONFIG_FILE" >/dev/null', "-a fetch-config -m ec2 -s -c")]
    assert order == sorted(order)
