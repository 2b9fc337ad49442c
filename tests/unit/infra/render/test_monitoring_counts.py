"""The plan prices `metrics` before anything is rendered, from the counts in infra/plan/costs.py (MONITORING):
each count is what the renderers actually publish or create, so a metric or alarm added there without the count
fails here instead of going unpriced."""

from __future__ import annotations

import json

from vllm_endpoint.infra.plan.costs import MONITORING
from vllm_endpoint.infra.render.alarms import endpoint_alarms
from vllm_endpoint.infra.render.cloudwatch_agent import (
    GPU_MEASUREMENTS,
    INSTANCE_DIMENSION,
    TASK_LOCAL_ADDRESS,
    AgentInputs,
    agent_metrics,
    render_agent_config,
)
from vllm_endpoint.infra.render.fleet_monitoring import fleet_alarms
from vllm_endpoint.infra.render.latency import latency_metric_names
from vllm_endpoint.infra.render.log_metrics import access_log_metric_filters


def test_the_counts_the_plan_prices_are_what_the_renderers_publish() -> None:
    config = json.loads(render_agent_config(AgentInputs("dev", "NS", "172.18.0.2", instance_id="i-0123456789abcdef0")))
    declarations = config["logs"]["metrics_collected"]["prometheus"]["emf_processor"]["metric_declaration"]
    per_stack = [d for d in declarations if d["dimensions"] == [["stack"]]]
    per_instance = [d for d in declarations if d["dimensions"] == [[INSTANCE_DIMENSION]]]
    assert MONITORING.vllm_metrics == len(agent_metrics()) == sum(len(d["metric_selectors"]) for d in per_stack)
    assert MONITORING.per_instance_metrics == sum(len(d["metric_selectors"]) for d in per_instance)
    assert MONITORING.gpu_measurements == len(GPU_MEASUREMENTS) == len(
        config["metrics"]["metrics_collected"]["nvidia_gpu"]["measurement"])
    assert MONITORING.latency_metrics == len(latency_metric_names())
    assert MONITORING.log_metrics == len(access_log_metric_filters("dev", "NS"))
    assert MONITORING.endpoint_alarms == len(endpoint_alarms("NS", "dev"))
    assert MONITORING.fleet_alarms == len(fleet_alarms("NS", "dev"))
    # A task's sidecar publishes the vLLM metrics only, by the stack alone (no GPU, no instance).
    sidecar = json.loads(render_agent_config(AgentInputs("dev", "NS", TASK_LOCAL_ADDRESS, in_task=True)))
    declarations = sidecar["logs"]["metrics_collected"]["prometheus"]["emf_processor"]["metric_declaration"]
    assert "metrics" not in sidecar
    assert [d["dimensions"] for d in declarations] == [[["stack"]]] * len(declarations)
    assert MONITORING.fleet_usage(alarm_email=False).custom_metrics == sum(
        len(d["metric_selectors"]) for d in declarations)


def test_a_one_gpu_stack_with_every_option() -> None:
    usage = MONITORING.usage(1, idle_stop=True, alarm_email=True, recovery_alarm=True)
    # 5 vLLM + 1 per instance + 3 GPU x (1 GPU + the roll-up) + 6 latency + 2 from the access log
    assert (usage.custom_metrics, usage.dashboards, usage.alarms, usage.kms_keys) == (20, 1, 6, 1)
    assert usage.line().usd_per_month == 20 * 0.30 + 3.00 + 6 * 0.10 + 1.00


def test_a_fleet_with_an_alarm_email() -> None:
    usage = MONITORING.fleet_usage(alarm_email=True)
    assert (usage.custom_metrics, usage.dashboards, usage.alarms, usage.kms_keys) == (5, 1, 5, 1)
    assert usage.line().usd_per_month == 5 * 0.30 + 3.00 + 5 * 0.10 + 1.00
