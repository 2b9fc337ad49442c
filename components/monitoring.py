"""EndpointMonitoring: the CloudWatch dashboard and alarms of an AWS endpoint, and what they notify or do;
ServiceMonitoring: a fleet's (infra/render/fleet_monitoring.py says what each alarm and graph reads).

The dashboard and the alarms read what the host's CloudWatch agent publishes (infra/render/cloudwatch_agent.py),
and two metrics this component makes from the proxy's access log with CloudWatch Logs metric filters (5xx
responses and the `/v1/` requests' latency, infra/render/log_metrics.py); what they contain is rendered by
infra/render/dashboard.py, infra/render/alarms.py and infra/render/log_metrics.py, without Pulumi. The access
log group is GpuHost's: its name comes in as the group's Output, so each filter is created after the group
(PutMetricFilter on a group that does not exist yet fails). With an
alarm e-mail, an SNS topic takes the alarms' notifications to it (AWS mails a confirmation link first). With an
idle stop, one more alarm stops the instance (EC2's stop action: the volumes, the Elastic IP and the instance
stay; `scripts/wake.sh` starts it again).

The topic is encrypted with a key of its own: CloudWatch can publish to an encrypted topic only when the key's
policy lets the CloudWatch service use it, and the policy of SNS's AWS managed key (alias/aws/sns) cannot be
changed (Amazon SNS Developer Guide, "Enable compatibility between event sources from AWS services and
encrypted topics"): with that key, every notification would be dropped without an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from vllm_endpoint.infra.catalog.names import METRICS_NAMESPACE, PROJECT
from vllm_endpoint.infra.render.alarms import AlarmSpec, endpoint_alarms, idle_stop_alarm, stop_action_arn
from vllm_endpoint.infra.render.dashboard import DashboardInputs, dashboard_url, render_dashboard
from vllm_endpoint.infra.render.fleet_monitoring import (
    LOAD_BALANCER_DIMENSION,
    TARGET_GROUP_DIMENSION,
    FleetDashboardInputs,
    fleet_alarms,
    render_fleet_dashboard,
)
from vllm_endpoint.infra.render.log_metrics import LogMetricFilterSpec, access_log_metric_filters


@dataclass(frozen=True)
class EndpointMonitoringArgs:
    region: str
    scope: str  # the `stack` dimension's value the agent publishes with (cloudwatch_agent.metrics_scope)
    name: str  # the dashboard's name, and the prefix of the alarms' names (unique in the account and region)
    instance_id: pulumi.Input[str]
    # The access log group's name (cloudwatch_agent.access_log_group(scope)), as the Output of the group GpuHost
    # creates: the metric filters on it then depend on the group.
    access_log_group: pulumi.Input[str]
    alarm_email: str | None = None
    idle_stop_minutes: int | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class EndpointMonitoring(pulumi.ComponentResource):
    dashboard_url: pulumi.Output[str]
    alarm_topic_arn: pulumi.Output[str | None]

    def __init__(self, name: str, args: EndpointMonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PROJECT}:aws:EndpointMonitoring", name, None, opts)
        tags = dict(args.tags)
        self.topic_key, self.topic, self.subscription = (
            alarm_topic(self, name, args.alarm_email, tags) if args.alarm_email is not None else (None, None, None))
        notify = [self.topic.arn] if self.topic is not None else []
        self.log_metric_filters = {spec.key: self._create_log_metric_filter(name, args, spec)
                                   for spec in access_log_metric_filters(args.scope, METRICS_NAMESPACE)}
        self.alarms = {spec.key: metric_alarm(self, name, args.name, args.region, spec, spec.metric.dimensions,
                                              notify, tags)
                       for spec in endpoint_alarms(METRICS_NAMESPACE, args.scope)}
        self.idle_stop_alarm: aws.cloudwatch.MetricAlarm | None = None
        if args.idle_stop_minutes is not None:
            spec = idle_stop_alarm(METRICS_NAMESPACE, "", args.idle_stop_minutes)
            # The instance's id is known only once it exists: the dimension's value is an Output.
            dimensions = tuple((key, args.instance_id) for key, _ in spec.metric.dimensions)
            self.idle_stop_alarm = metric_alarm(self, name, args.name, args.region, spec, dimensions, notify, tags)
        every = [*self.alarms.values(), *([self.idle_stop_alarm] if self.idle_stop_alarm else [])]
        body = pulumi.Output.all(args.instance_id, *(a.arn for a in every)).apply(
            lambda values: render_dashboard(DashboardInputs(
                region=args.region, namespace=METRICS_NAMESPACE, stack=args.scope, instance_id=values[0],
                alarm_arns=tuple(values[1:]), idle_stop_minutes=args.idle_stop_minutes)))
        self.dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard", dashboard_name=args.name, dashboard_body=body,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.dashboard_url = self.dashboard.dashboard_name.apply(lambda n: dashboard_url(args.region, n))
        self.alarm_topic_arn = (self.topic.arn if self.topic is not None
                                else pulumi.Output.from_input(None))
        self.register_outputs({"dashboard_url": self.dashboard_url, "alarm_topic_arn": self.alarm_topic_arn})

    def _create_log_metric_filter(self, name: str, args: EndpointMonitoringArgs,
                                  spec: LogMetricFilterSpec) -> aws.cloudwatch.LogMetricFilter:
        return aws.cloudwatch.LogMetricFilter(
            # "-filter": the alarm on the 5xx metric has the key's name (the account's names must not clash).
            f"{name}-{spec.key}-filter",
            name=f"{args.name}-{spec.key}-filter",
            log_group_name=args.access_log_group,
            pattern=spec.pattern,
            metric_transformation=aws.cloudwatch.LogMetricFilterMetricTransformationArgs(
                name=spec.metric_name,
                namespace=spec.namespace,
                value=spec.value,
                unit=spec.unit,
                default_value=None if spec.default_value is None else str(spec.default_value),
                dimensions=dict(spec.dimensions) or None,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )



@dataclass(frozen=True)
class ServiceMonitoringArgs:
    region: str
    scope: str  # the `stack` dimension's value the agent sidecars publish with
    name: str  # the dashboard's name, and the prefix of the alarms' names
    load_balancer: pulumi.Input[str]  # the load balancer's ARN suffix (its metrics' LoadBalancer dimension)
    target_group: pulumi.Input[str]  # the target group's ARN suffix (TargetGroup)
    cluster_name: pulumi.Input[str]
    service_name: pulumi.Input[str]
    waiting_per_replica: float
    min_replicas: int
    max_replicas: int
    alarm_email: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class ServiceMonitoring(pulumi.ComponentResource):
    """A fleet's dashboard and alarms (infra/render/fleet_monitoring.py), and the alarm e-mail's topic."""

    dashboard_url: pulumi.Output[str]
    alarm_topic_arn: pulumi.Output[str | None]

    def __init__(self, name: str, args: ServiceMonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PROJECT}:aws:ServiceMonitoring", name, None, opts)
        tags = dict(args.tags)
        self.topic_key, self.topic, self.subscription = (
            alarm_topic(self, name, args.alarm_email, tags) if args.alarm_email is not None else (None, None, None))
        notify = [self.topic.arn] if self.topic is not None else []
        resources: dict[str, pulumi.Input[str]] = {LOAD_BALANCER_DIMENSION: args.load_balancer,
                                                   TARGET_GROUP_DIMENSION: args.target_group}
        self.alarms = {
            spec.key: metric_alarm(self, name, args.name, args.region, spec,
                                   tuple((key, resources.get(key, value)) for key, value in spec.metric.dimensions),
                                   notify, tags)
            for spec in fleet_alarms(METRICS_NAMESPACE, args.scope)}
        body = pulumi.Output.all(args.load_balancer, args.target_group, args.cluster_name, args.service_name,
                                 *(a.arn for a in self.alarms.values())).apply(
            lambda v: render_fleet_dashboard(FleetDashboardInputs(
                region=args.region, namespace=METRICS_NAMESPACE, stack=args.scope, load_balancer=v[0],
                target_group=v[1], cluster=v[2], service=v[3], waiting_per_replica=args.waiting_per_replica,
                min_replicas=args.min_replicas, max_replicas=args.max_replicas, alarm_arns=tuple(v[4:]))))
        self.dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard", dashboard_name=args.name, dashboard_body=body,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.dashboard_url = self.dashboard.dashboard_name.apply(lambda n: dashboard_url(args.region, n))
        self.alarm_topic_arn = self.topic.arn if self.topic is not None else pulumi.Output.from_input(None)
        self.register_outputs({"dashboard_url": self.dashboard_url, "alarm_topic_arn": self.alarm_topic_arn})

def alarm_topic(parent: pulumi.Resource, name: str, email: str, tags: dict[str, str]) -> tuple[
        aws.kms.Key | None, aws.sns.Topic | None, aws.sns.TopicSubscription | None]:
    """The alarms' SNS topic with its own key (the module's docstring says why) and the e-mail subscription."""
    opts = pulumi.ResourceOptions(parent=parent)
    account = aws.get_caller_identity_output().account_id
    key = aws.kms.Key(
        f"{name}-alarms-key",
        description="vLLM endpoint: encrypts the alarm notifications' SNS topic",
        enable_key_rotation=True,
        deletion_window_in_days=7,
        policy=account.apply(lambda acct: json.dumps({
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "AccountAdministersTheKey", "Effect": "Allow",
                 "Principal": {"AWS": f"arn:aws:iam::{acct}:root"}, "Action": "kms:*", "Resource": "*"},
                {"Sid": "CloudWatchAlarmsPublishToTheTopic", "Effect": "Allow",
                 "Principal": {"Service": "cloudwatch.amazonaws.com"},
                 "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*",
                 "Condition": {"StringEquals": {"aws:SourceAccount": acct}}},
            ],
        })),
        tags=tags,
        opts=opts,
    )
    topic = aws.sns.Topic(f"{name}-alarms", kms_master_key_id=key.arn, tags=tags, opts=opts)
    subscription = aws.sns.TopicSubscription(f"{name}-alarms-email", topic=topic.arn, protocol="email",
                                             endpoint=email, opts=opts)
    return key, topic, subscription


def metric_alarm(parent: pulumi.Resource, name: str, prefix: str, region: str, spec: AlarmSpec,
                 dimensions: tuple[tuple[str, pulumi.Input[str]], ...], notify: list[pulumi.Output[str]],
                 tags: dict[str, str]) -> aws.cloudwatch.MetricAlarm:
    """The alarm `spec` says, named `<prefix>-<key>` in the account, notifying `notify`."""
    stop = [stop_action_arn(region)] if spec.action == "stop" else []
    return aws.cloudwatch.MetricAlarm(
        f"{name}-{spec.key}",
        name=f"{prefix}-{spec.key}",
        alarm_description=spec.description,
        namespace=spec.metric.namespace,
        metric_name=spec.metric.metric_name,
        dimensions=dict(dimensions),
        statistic=spec.metric.statistic,
        period=spec.period_s,
        evaluation_periods=spec.evaluation_periods,
        datapoints_to_alarm=spec.datapoints_to_alarm,
        comparison_operator=spec.comparison,
        threshold=spec.threshold,
        treat_missing_data=spec.treat_missing_data,
        alarm_actions=[*stop, *notify],
        # Back to OK is news for the notifying alarms; for the stop, the stopped instance's OK is not.
        ok_actions=notify if spec.action == "notify" else [],
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent),
    )
