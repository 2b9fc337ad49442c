"""The CloudWatch agent's configuration: the GPU figures, exactly the catalog's metrics the agent can carry,
one `stack` dimension, and a scrape target on the private Docker network, never the public endpoint."""

from __future__ import annotations

import configparser
import ipaddress
import json
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

from vllm_endpoint.infra.catalog.names import (
    BOOT_ENV_FILE,
    CLOUDWATCH_AGENT_CONFIG_FILE,
    CLOUDWATCH_AGENT_SCRAPE_FILE,
    CLOUDWATCH_AGENT_SCRIPT,
    DEFAULT_API_PORT,
    DEFAULT_ENDPOINT_NAME,
    LATENCY_EMF_ENDPOINT,
    LATENCY_ENV_FILE,
    LATENCY_SCRIPT,
    LATENCY_SERVICE_FILE,
    LATENCY_SERVICE_NAME,
    LATENCY_STATE_DIRECTORY,
    LATENCY_TIMER_FILE,
    LATENCY_TIMER_NAME,
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
    render_latency_env_file,
    render_scrape_config,
)
from vllm_endpoint.infra.render.host_scripts import read_host_file
from vllm_endpoint.infra.render.latency import (
    latency_script,
    latency_service_unit,
    latency_timer_unit,
    metrics_url,
    render_latency_env,
)

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
    order = [body.index(step) for step in ('"$AGENT_SCRIPT" install', 'write "$SCRAPE_CONFIG_FILE"',
                                           'write "$AGENT_CONFIG_FILE"', "-a fetch-config -m ec2 -s -c")]
    assert order == sorted(order)
    # (tests/unit/infra/host/test_cloudwatch_agent_script.py runs it with stand-ins for sudo and systemctl.)


def test_the_agent_listens_for_the_latency_percentiles_emf_documents() -> None:
    collected = json.loads(render_agent_config(INPUTS))["logs"]["metrics_collected"]
    # `emf: {}`: the listener on 127.0.0.1:25888, TCP and UDP (the CloudWatch user guide's example).
    assert collected["emf"] == {} and LATENCY_EMF_ENDPOINT == "udp://127.0.0.1:25888"


def test_the_deploys_step_installs_the_latency_percentiles_where_their_units_read_them() -> None:
    params = _apply_params()
    assert params["LATENCY_SCRIPT_FILE"] == LATENCY_SCRIPT and params["LATENCY_SCRIPT"] == latency_script()
    assert params["LATENCY_ENV_FILE"] == LATENCY_ENV_FILE
    assert params["LATENCY_SERVICE_FILE"] == LATENCY_SERVICE_FILE == f"/etc/systemd/system/{LATENCY_SERVICE_NAME}"
    assert params["LATENCY_TIMER_FILE"] == LATENCY_TIMER_FILE == f"/etc/systemd/system/{LATENCY_TIMER_NAME}"
    assert params["LATENCY_SERVICE"] == latency_service_unit() and params["LATENCY_TIMER"] == latency_timer_unit()
    assert params["LATENCY_TIMER_NAME"] == LATENCY_TIMER_NAME
    env = dict(line.split("=", 1) for line in params["LATENCY_ENV"].splitlines())
    # The same vLLM as the agent scrapes, the same namespace and `stack` value, the Prometheus log group (which
    # the stack creates with its retention).
    (target,) = _scrape_job()["static_configs"][0]["targets"]
    assert env == {"VLLM_METRICS_URL": f"http://{target}{METRICS_PATH}", "METRICS_NAMESPACE": "VllmEndpoint",
                   "METRICS_STACK": "dev", "EMF_ENDPOINT": LATENCY_EMF_ENDPOINT,
                   "EMF_LOG_GROUP": prometheus_log_group("dev")}
    assert metrics_url("172.18.0.2") == "http://172.18.0.2:8000/metrics"
    # Where cloudwatch-agent.sh's boot-time retarget looks for it: vllm-latency.env next to boot.env.
    assert PurePosixPath(LATENCY_ENV_FILE) == PurePosixPath(BOOT_ENV_FILE).parent / "vllm-latency.env"
    assert 'dirname -- "$BOOT_ENV_FILE")/vllm-latency.env' in read_host_file("cloudwatch-agent.sh")


def _apply_params() -> dict[str, str]:
    """The parameters of the deploy's step, read back from its command's export lines."""
    script = agent_apply_script(INPUTS)
    exports = script.split("{ bash -c", 1)[0]
    proc = subprocess.run(["sh", "-c", exports + "env -0"], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin"})
    return dict(item.split("=", 1) for item in proc.stdout.split("\0") if "=" in item)


def test_an_env_file_value_systemd_would_read_otherwise_is_refused() -> None:
    for bad in ("dev stack", 'a"b', "a$b", ""):
        with pytest.raises(ValueError):
            render_latency_env(vllm_address="172.18.0.2", namespace="NS", stack=bad, log_group="/g")
    assert render_latency_env_file(INPUTS).startswith("VLLM_METRICS_URL=http://172.18.0.2:8000/metrics\n")


def _unit(text: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(text)
    return unit


def test_the_timer_runs_the_service_every_minute_and_the_service_runs_unprivileged() -> None:
    timer, service = _unit(latency_timer_unit()), _unit(latency_service_unit())
    assert timer["Timer"]["OnCalendar"] == "*-*-* *:*:00" and timer["Timer"]["Unit"] == LATENCY_SERVICE_NAME
    assert timer["Install"]["WantedBy"] == "timers.target"
    assert service["Service"]["Type"] == "oneshot" and service["Service"]["ExecStart"] == LATENCY_SCRIPT
    assert service["Service"]["EnvironmentFile"] == LATENCY_ENV_FILE
    assert service["Service"]["DynamicUser"] == "yes"
    assert service["Service"]["StateDirectory"] == LATENCY_STATE_DIRECTORY
    assert service["Service"]["Environment"] == f"LATENCY_STATE_FILE=/var/lib/{LATENCY_STATE_DIRECTORY}/counts.json"
    # A run ends before the next one is due.
    assert int(service["Service"]["TimeoutStartSec"]) < 60


def test_systemd_accepts_the_latency_service_and_timer(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing (Debian's systemd package)")
    script = tmp_path / "vllm-latency.py"
    script.write_text(latency_script())
    script.chmod(0o755)
    env_file = tmp_path / "vllm-latency.env"
    env_file.write_text(render_latency_env_file(INPUTS))
    service = tmp_path / LATENCY_SERVICE_NAME
    service.write_text(latency_service_unit().replace(f"ExecStart={LATENCY_SCRIPT}", f"ExecStart={script}")
                       .replace(f"EnvironmentFile={LATENCY_ENV_FILE}", f"EnvironmentFile={env_file}"))
    timer = tmp_path / LATENCY_TIMER_NAME
    timer.write_text(latency_timer_unit())
    proc = subprocess.run([analyze, "verify", str(service), str(timer)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
