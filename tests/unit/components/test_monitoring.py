"""The dashboard, the alarms, their e-mail topic, the idle stop and the access log's metric filters under mocks:
present exactly when the settings ask, with the thresholds and the action infra/render/alarms.py specifies and
the patterns infra/render/log_metrics.py renders, and the policy pack passes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.components.test_components import AWS, EXISTING, Deployed, deploy
from tests.unit.policy.test_policy_on_program import violations
from tools import gen_diagrams
from vllm_endpoint.infra.catalog.names import METRICS_NAMESPACE
from vllm_endpoint.infra.render.alarms import IDLE_METRIC, INSTANCE_DIMENSION, endpoint_alarms
from vllm_endpoint.infra.render.cloudwatch_agent import STACK_DIMENSION, access_log_group
from vllm_endpoint.infra.render.log_metrics import access_log_metric_filters, latency_metric, proxy_5xx_metric
from vllm_endpoint.infra.settings.models import ConfigError, load_stack_config

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
DASHBOARD = "aws:cloudwatch/dashboard:Dashboard"
TOPIC = "aws:sns/topic:Topic"
SUBSCRIPTION = "aws:sns/topicSubscription:TopicSubscription"
KEY = "aws:kms/key:Key"
LOG_METRIC_FILTER = "aws:cloudwatch/logMetricFilter:LogMetricFilter"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
INSTANCE_ID = "i-0123456789abcdef0"  # the mocks' instance
EMAIL = "oncall@example.com"


def monitoring_alarms(d: Deployed) -> dict[str, dict[str, Any]]:
    """The endpoint's own alarms by key (not the host's status-check alarm, which reads AWS/EC2)."""
    return {r.name.rsplit("-monitoring-", 1)[1]: r.inputs for r in d.mocks.of_type(ALARM) if "-monitoring-" in r.name}


def test_metrics_on_by_default_gives_a_dashboard_and_the_alarms_without_a_topic(tmp_path: Path) -> None:
    d = deploy(AWS, tmp_path)
    alarms = monitoring_alarms(d)
    assert set(alarms) == {spec.key for spec in endpoint_alarms(METRICS_NAMESPACE, "x")}
    for key, inputs in alarms.items():
        assert inputs["namespace"] == METRICS_NAMESPACE
        # The mocks' stack name, default endpoint; the access log's metric has it in its name instead.
        assert inputs.get("dimensions") == ({STACK_DIMENSION: "stack"} if key != "proxy-5xx" else {}), key
        assert not inputs.get("alarmActions"), "no topic, no action: they show on the dashboard"
    assert alarms["not-ready"]["treatMissingData"] == "breaching"
    dashboard = d.mocks.one(DASHBOARD).inputs
    body = json.loads(str(dashboard["dashboardBody"]))
    assert {w["type"] for w in body["widgets"]} == {"text", "metric", "alarm"}
    assert d.values["dashboard_url"] == ("https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1"
                                         f"#dashboards:name={dashboard['dashboardName']}")
    assert d.values["idle_stop"] is None
    assert not d.mocks.of_type(TOPIC) and not d.mocks.of_type(SUBSCRIPTION)


def test_an_alarm_email_gets_an_encrypted_topic_that_cloudwatch_may_publish_to(tmp_path: Path) -> None:
    d = deploy({**AWS, "alarmEmail": EMAIL}, tmp_path)
    topic, key = d.mocks.one(TOPIC), d.mocks.one(KEY)
    assert topic.inputs["kmsMasterKeyId"].startswith("arn:aws:kms:")
    policy = json.loads(str(key.inputs["policy"]))
    cloudwatch = next(s for s in policy["Statement"] if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"})
    assert set(cloudwatch["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert key.inputs["enableKeyRotation"] is True
    subscription = d.mocks.one(SUBSCRIPTION).inputs
    assert (subscription["protocol"], subscription["endpoint"]) == ("email", EMAIL)
    topic_arn = subscription["topic"]
    for name, inputs in monitoring_alarms(d).items():
        assert inputs["alarmActions"] == [topic_arn] and inputs["okActions"] == [topic_arn], name


def test_idle_stop_adds_the_alarm_that_stops_the_instance(tmp_path: Path) -> None:
    d = deploy({**AWS, "idleStopMinutes": "45", "alarmEmail": EMAIL}, tmp_path)
    idle = monitoring_alarms(d)["idle-stop"]
    assert idle["alarmActions"][0] == "arn:aws:automate:us-east-1:ec2:stop"
    assert idle["alarmActions"][1:] == [d.mocks.one(SUBSCRIPTION).inputs["topic"]]
    assert not idle.get("okActions")
    assert (idle["metricName"], idle["statistic"], idle["dimensions"]) == (IDLE_METRIC, "Sum",
                                                                           {INSTANCE_DIMENSION: INSTANCE_ID})
    assert (idle["period"], idle["evaluationPeriods"], idle["datapointsToAlarm"]) == (60, 45, 45)
    assert (idle["comparisonOperator"], idle["threshold"], idle["treatMissingData"]) == (
        "LessThanOrEqualToThreshold", 0, "notBreaching")
    assert "stopped after 45 minutes" in d.values["idle_stop"] and "wake.sh" in d.values["idle_stop"]
    assert "Stops when idle" in str(d.mocks.one(DASHBOARD).inputs["dashboardBody"])


def test_long_idle_spans_use_hour_periods(tmp_path: Path) -> None:
    idle = monitoring_alarms(deploy({**AWS, "idleStopMinutes": "2880"}, tmp_path))["idle-stop"]
    assert (idle["period"], idle["evaluationPeriods"]) == (3600, 48)


def test_metrics_off_means_no_dashboard_and_no_alarms(tmp_path: Path) -> None:
    d = deploy({**AWS, "metrics": "false"}, tmp_path)
    assert not monitoring_alarms(d) and not d.mocks.of_type(DASHBOARD)
    assert d.values["dashboard_url"] is None and d.values["idle_stop"] is None


def test_existing_host_has_no_cloudwatch_resources(tmp_path: Path) -> None:
    d = deploy(EXISTING, tmp_path)
    assert not d.mocks.of_type(ALARM) and not d.mocks.of_type(DASHBOARD) and d.values["dashboard_url"] is None


@pytest.mark.parametrize("key, value", [("idleStopMinutes", "30"), ("alarmEmail", EMAIL)])
def test_idle_stop_and_alarm_email_need_metrics(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_stack_config({**AWS, "metrics": "false", key: value})
    assert f"{key}: needs metrics" in str(info.value) and "metrics is false" in str(info.value)


def test_the_policy_pack_passes_the_monitored_stack(tmp_path: Path) -> None:
    assert violations(deploy({**AWS, "idleStopMinutes": "30", "alarmEmail": EMAIL}, tmp_path)) == []


# ----------------------------------------------------------------------------------------------
# The access log's metric filters and the 5xx alarm.

def test_the_access_log_gets_the_5xx_and_latency_metric_filters(tmp_path: Path) -> None:
    d = deploy(AWS, tmp_path)
    filters = {r.inputs["name"]: r.inputs for r in d.mocks.of_type(LOG_METRIC_FILTER)}
    dashboard = d.mocks.one(DASHBOARD).inputs["dashboardName"]
    specs = access_log_metric_filters("stack", METRICS_NAMESPACE)
    assert set(filters) == {f"{dashboard}-{spec.key}-filter" for spec in specs}
    groups = {r.inputs["name"] for r in d.mocks.of_type(LOG_GROUP)}
    for spec in specs:
        inputs = filters[f"{dashboard}-{spec.key}-filter"]
        assert inputs["logGroupName"] == access_log_group("stack") and inputs["logGroupName"] in groups
        assert inputs["pattern"] == spec.pattern
        transformation = inputs["metricTransformation"]
        assert (transformation["name"], transformation["namespace"], transformation["value"],
                transformation["unit"]) == (spec.metric_name, METRICS_NAMESPACE, spec.value, spec.unit)
        assert "defaultValue" not in transformation and not transformation.get("dimensions")
    five, latency = (filters[f"{dashboard}-{key}-filter"] for key in ("proxy-5xx", "request-latency"))
    assert "status = 5*" in five["pattern"] and five["metricTransformation"]["name"] == proxy_5xx_metric("stack")
    assert latency["metricTransformation"] == {**latency["metricTransformation"], "name": latency_metric("stack"),
                                               "value": "$request_time", "unit": "Seconds"}
    body = str(d.mocks.one(DASHBOARD).inputs["dashboardBody"])
    assert latency_metric("stack") in body and '"p99"' in body


def test_the_5xx_alarm_reads_the_filters_metric(tmp_path: Path) -> None:
    d = deploy({**AWS, "alarmEmail": EMAIL}, tmp_path)
    alarm = monitoring_alarms(d)["proxy-5xx"]
    assert (alarm["namespace"], alarm["metricName"], alarm["statistic"]) == (
        METRICS_NAMESPACE, proxy_5xx_metric("stack"), "Sum")
    assert (alarm["period"], alarm["evaluationPeriods"], alarm["datapointsToAlarm"]) == (60, 5, 3)
    assert (alarm["comparisonOperator"], alarm["threshold"], alarm["treatMissingData"]) == (
        "GreaterThanOrEqualToThreshold", 5, "notBreaching")
    assert alarm["alarmActions"] == [d.mocks.one(SUBSCRIPTION).inputs["topic"]]


@pytest.mark.parametrize("config", [{**AWS, "metrics": "false"}, EXISTING])
def test_no_metric_filters_without_metrics(config: dict[str, str], tmp_path: Path) -> None:
    assert not deploy(config, tmp_path).mocks.of_type(LOG_METRIC_FILTER)


def test_each_metric_filter_waits_for_the_access_log_group() -> None:
    """In a real `pulumi up`, PutMetricFilter on a group not yet created fails: the filter's logGroupName comes
    from the group's Output, so the engine creates the group first (recorded as the engine would receive it)."""
    graph = gen_diagrams.collect(gen_diagrams.stack_config("aws"))
    access = next(r.urn for r in graph.resources.values()
                  if r.type == LOG_GROUP and r.inputs.get("name", "").endswith("/access"))
    filters = [r for r in graph.resources.values() if r.type == LOG_METRIC_FILTER]
    assert len(filters) == 2
    for resource in filters:
        assert access in resource.property_deps["logGroupName"], resource.name
