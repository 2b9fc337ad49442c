"""VllmEndpoint: a private OpenAI-compatible vLLM endpoint, from keyword settings to outputs.

    from vllm_endpoint import VllmEndpoint, VllmEndpointArgs
    endpoint = VllmEndpoint("chat", VllmEndpointArgs(target="existing-host", host_address=vm.private_ip, ...))

On `target: aws` it builds a GpuHost and runs the server there; on `target: existing-host` it runs
the same server on a Docker host the user already has, and on `target: local` on this machine's own
Docker engine, creating no AWS resources at all. `pulumi up`
finishes only when the readiness gate got an answer from `GET /v1/models` with the API key.

No `from __future__ import annotations` here: Pulumi's component analyzer (a later step publishes this as
a component package) reads the annotations of `__init__` and of the outputs as objects.
"""

import ipaddress
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_tls as tls

from vllm_endpoint.components._endpoint_settings import EndpointSettings, load_settings
from vllm_endpoint.components._instance_state import check_instance
from vllm_endpoint.components._support import IDENTITY_FILE, KNOWN_HOSTS_FILE, SshTarget, endpoint_api_key, secret
from vllm_endpoint.components.gpu_host import GpuHost, GpuHostArgs, IngressArgs, SshKeyArgs
from vllm_endpoint.components.monitoring import EndpointMonitoring, EndpointMonitoringArgs
from vllm_endpoint.components.vllm_endpoint_args import VllmEndpointArgs
from vllm_endpoint.components.vllm_server import MetricsArgs, TlsMaterial, VllmServer, VllmServerArgs
from vllm_endpoint.infra.catalog.names import (
    ENDPOINT_TAG,
    LOCAL_API_ADDRESS,
    METRICS_NAMESPACE,
    PREFETCH_MODEL_TAG,
    PROJECT,
    STACK_TAG,
)
from vllm_endpoint.infra.render.cloudwatch_agent import access_log_group, metrics_scope
from vllm_endpoint.infra.render.container import plan_docker_run
from vllm_endpoint.infra.render.dashboard import dashboard_name
from vllm_endpoint.infra.render.host_scripts import summary_with_capacity
from vllm_endpoint.infra.render.ssh import ssh_command
from vllm_endpoint.infra.settings.models import ConfigError

__all__ = ["VllmEndpoint", "VllmEndpointArgs"]

# Self-signed endpoint certificates: long enough not to surprise anyone, renewed by re-deploying.
TLS_VALIDITY_HOURS = 24 * 365
TLS_EARLY_RENEWAL_HOURS = 24 * 30


@dataclass(frozen=True)
class _Host:
    """Where the server runs: the SSH target (None: this machine), what must be ready first, what the
    outputs report."""

    target: SshTarget | None
    depends_on: list[pulumi.Resource]
    public_ip: pulumi.Output[str]
    instance_id: pulumi.Output[str | None]
    cache_volume_id: pulumi.Output[str | None]


class VllmEndpoint(pulumi.ComponentResource):
    """A private, OpenAI-compatible vLLM endpoint on an AWS GPU VM or an existing Docker host."""

    endpoint_url: pulumi.Output[str]
    """Base URL for OpenAI clients (`https?://host:port/v1`); known once the server answered."""
    api_key: pulumi.Output[str]
    """(secret) The key apps send as `Authorization: Bearer`."""
    model: pulumi.Output[str]
    """The model name apps put in requests; known once the server answered."""
    public_ip: pulumi.Output[str]
    """The host's address: the Elastic IP on AWS, `hostAddress` on an existing host, 127.0.0.1 locally."""
    instance_id: pulumi.Output[str | None]
    """The EC2 instance (AWS only)."""
    ssh_command: pulumi.Output[str | None]
    """An `ssh` command line to the host with the pinned host key (None with target local)."""
    cache_volume_id: pulumi.Output[str | None]
    """The retained EBS cache volume (AWS only)."""
    retained_on_destroy: pulumi.Output[dict[str, Any] | None]
    """What `pulumi destroy` leaves in AWS (the cache volume: id, zone, monthly cost, the commands to delete
    or adopt it); None on an existing host."""
    docker_run: pulumi.Output[str]
    """The same containers as `docker run` commands (secrets from the environment), for reading."""
    plan_summary: pulumi.Output[str]
    """What runs, how much fits on the GPU, what it costs, and any warnings."""
    deploy_timeline: pulumi.Output[str]
    """When each deploy stage finished, as the readiness gate saw it."""
    ca_certificate: pulumi.Output[str | None]
    """The private CA's certificate with `tls: self-signed` (trust it in clients)."""
    dashboard_url: pulumi.Output[str | None]
    """The stack's CloudWatch dashboard in the AWS console (AWS with `metrics` on; else None)."""
    idle_stop: pulumi.Output[str | None]
    """With `idleStopMinutes`: that the endpoint may be stopped when idle, and how to start it; else None."""

    def __init__(self, name: str, args: VllmEndpointArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        # Every check first: a bad setting stops the program before any resource exists.
        settings = load_settings(name, args)
        if settings.plan.fleet is not None:
            raise ConfigError(["replicas: builds a fleet on ECS, which is a VllmService (same keyword arguments); "
                               "VllmEndpoint is one GPU VM or an existing host: unset replicas for it"])
        # A stopped instance (idle stop, spot interruption) stops the program here, before any resource.
        state_warnings = check_instance(pulumi.get_stack(), name, settings.plan.config.aws.capacity) \
            if settings.plan.config.target == "aws" else []
        super().__init__(f"{PROJECT}:index:VllmEndpoint", name, None, opts)
        plan = settings.plan
        for warning in [*plan.warnings, *state_warnings]:
            pulumi.log.warn(warning, resource=self)
        self.api_key, self.generated_api_key = endpoint_api_key(self, name, settings.inputs.api_key)
        self.host = self._create_gpu_host(name, settings) if plan.config.target == "aws" else None
        self.metrics = self._metrics(name, self.host)
        host = self._host(settings, self.host)
        self.tls = self._create_tls(name, host.target.address if host.target else LOCAL_API_ADDRESS) \
            if plan.scheme == "https" else None
        self.server = VllmServer(
            f"{name}-server",
            VllmServerArgs(
                plan=plan, target=host.target, api_key=self.api_key, ssh_dir=settings.ssh_dir,
                hf_token=settings.inputs.hf_token, tls=self.tls.material if self.tls else None,
                prepare_existing_host=self.host is None, depends_on=host.depends_on,
                metrics=self.metrics,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.monitoring = self._create_monitoring(name, settings, self.host)
        self._set_outputs(settings, host)
        self.register_outputs({
            "endpoint_url": self.endpoint_url,
            "api_key": self.api_key,
            "model": self.model,
            "public_ip": self.public_ip,
            "instance_id": self.instance_id,
            "ssh_command": self.ssh_command,
            "cache_volume_id": self.cache_volume_id,
            "retained_on_destroy": self.retained_on_destroy,
            "docker_run": self.docker_run,
            "plan": self.plan_summary,
            "deploy_timeline": self.deploy_timeline,
            "ca_certificate": self.ca_certificate,
            "dashboard_url": self.dashboard_url,
            "idle_stop": self.idle_stop,
        })

    def _create_gpu_host(self, name: str, settings: EndpointSettings) -> GpuHost:
        plan, inputs = settings.plan, settings.inputs
        aws_settings = plan.config.aws
        # build_plan resolves the instance type and the cache volume for AWS
        assert plan.instance is not None and plan.cache_volume is not None
        return GpuHost(
            f"{name}-host",
            GpuHostArgs(
                endpoint=name, instance=plan.instance, cache_volume=plan.cache_volume,
                ingress=IngressArgs(api_port=plan.api_port, api_cidrs=inputs.api_allowed_cidrs,
                                    ssh_cidrs=inputs.ssh_allowed_cidrs),
                container_user=plan.config.server.container_user,
                container_open_files=plan.config.server.container_open_files, ssh_user=aws_settings.ssh_user,
                ami_id=aws_settings.ami_id, ami_ssm_parameter=aws_settings.ami_ssm_parameter,
                root_volume_size_gb=aws_settings.root_volume_size_gb, subnet_id=inputs.subnet_id,
                availability_zone=aws_settings.availability_zone, kms_key_id=inputs.kms_key_id,
                tags=aws_settings.tags, detailed_monitoring=aws_settings.detailed_monitoring,
                recovery_alarm=aws_settings.recovery_alarm,
                docker_data_on_cache_volume=aws_settings.docker_data_on_cache_volume,
                ssh_key=SshKeyArgs(private_key=inputs.ssh_private_key, public_key=inputs.ssh_public_key,
                                   key_pair_name=aws_settings.ssh_key_pair_name),
                prefetch_tags=plan.prefetch_tags,
                hf_token=inputs.hf_token if plan.prefetch_tags.get(PREFETCH_MODEL_TAG) else None,
                hf_token_parameter=plan.names.hf_token_parameter(pulumi.get_project(), pulumi.get_stack()),
                cache_volume_id=aws_settings.cache_volume_id,
                protect_cache_volume=aws_settings.protect_cache_volume,
                region=plan.costs.region if plan.costs is not None else None,
                metrics=aws_settings.metrics, log_retention_days=aws_settings.log_retention_days,
                metrics_scope=metrics_scope(pulumi.get_stack(), name),
                capacity=aws_settings.capacity,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

    @staticmethod
    def _metrics(name: str, gpu_host: GpuHost | None) -> MetricsArgs | None:
        """What the server needs for the CloudWatch agent and the access log: AWS with metrics on."""
        if gpu_host is None or not gpu_host.log_groups:
            return None
        scope = metrics_scope(pulumi.get_stack(), name)
        return MetricsArgs(scope=scope, namespace=METRICS_NAMESPACE, access_log_group=access_log_group(scope),
                           region=gpu_host.region, instance_id=gpu_host.instance_id)

    def _create_monitoring(self, name: str, settings: EndpointSettings,
                           gpu_host: GpuHost | None) -> EndpointMonitoring | None:
        """The dashboard and the alarms (with their e-mail and the idle stop): AWS with metrics on."""
        aws_settings = settings.plan.config.aws
        if gpu_host is None or not aws_settings.metrics:
            return None
        scope = metrics_scope(pulumi.get_stack(), name)
        # The access log group's name as an Output of GpuHost's log groups: the metric filters on it are then
        # created after the group exists.
        access_group = pulumi.Output.all(*(g.name for g in gpu_host.log_groups)).apply(
            lambda names: next(n for n in names if n == access_log_group(scope)))
        return EndpointMonitoring(
            f"{name}-monitoring",
            EndpointMonitoringArgs(
                region=gpu_host.region, scope=scope,
                name=dashboard_name(pulumi.get_project(), pulumi.get_stack(), name),
                instance_id=gpu_host.instance_id, access_log_group=access_group,
                alarm_email=aws_settings.alarm_email,
                idle_stop_minutes=aws_settings.idle_stop_minutes,
                tags={**aws_settings.tags, STACK_TAG: pulumi.get_stack(), ENDPOINT_TAG: name},
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

    @staticmethod
    def _host(settings: EndpointSettings, gpu_host: GpuHost | None) -> _Host:
        if gpu_host is not None:
            # The log groups first: Docker's awslogs driver needs the proxy's to exist.
            return _Host(gpu_host.ssh_target, [gpu_host.ready, *gpu_host.log_groups], gpu_host.public_ip,
                         gpu_host.instance_id, gpu_host.cache_volume_id)
        if settings.plan.config.target == "local":
            return _Host(None, [], pulumi.Output.from_input(LOCAL_API_ADDRESS),
                         pulumi.Output.from_input(None), pulumi.Output.from_input(None))
        inputs, existing = settings.inputs, settings.plan.config.existing_host
        # Required with target=existing-host (the settings checked it).
        assert inputs.host_address is not None and inputs.host_public_key is not None
        assert existing.host_ssh_user is not None and inputs.ssh_private_key is not None
        target = SshTarget(address=inputs.host_address, user=existing.host_ssh_user, port=existing.host_ssh_port,
                           private_key=inputs.ssh_private_key, host_public_key=inputs.host_public_key)
        return _Host(target, [], pulumi.Output.from_input(inputs.host_address),
                     pulumi.Output.from_input(None), pulumi.Output.from_input(None))

    def _set_outputs(self, settings: EndpointSettings, host: _Host) -> None:
        plan, target, ssh_dir = settings.plan, host.target, settings.ssh_dir
        # Apps can use these only once the gate has seen the server answer.
        ready = self.server.readiness.stdout
        self.endpoint_url = pulumi.Output.all(target.address if target else LOCAL_API_ADDRESS, ready).apply(
            lambda values: f"{plan.scheme}://{_url_host(values[0])}:{plan.api_port}/v1")
        self.model = ready.apply(lambda _: plan.served_model_name)
        self.public_ip = host.public_ip
        self.instance_id = host.instance_id
        self.cache_volume_id = host.cache_volume_id
        self.retained_on_destroy = (self.host.retained_on_destroy if self.host is not None
                                    else pulumi.Output.from_input(None))
        self.deploy_timeline = self.server.deploy_timeline
        self.docker_run = pulumi.Output.from_input(plan_docker_run(
            plan, self.server.owner,
            (self.metrics.access_log_group, self.metrics.region) if self.metrics is not None else None))
        # vLLM's own KV cache figures join the plan's estimate once the gate saw the server ready; the
        # output is therefore unknown in a preview, so the plan (what runs, the fit, the costs) is also
        # printed as a diagnostic: `pulumi preview` shows it before anything is paid for.
        pulumi.log.info(plan.summary, resource=self)
        self.plan_summary = ready.apply(lambda out: summary_with_capacity(plan.summary, out))
        self.ssh_command = pulumi.Output.from_input(None) if target is None else (
            pulumi.Output.from_input(target.address).apply(
                lambda address: ssh_command(target.user, address, f"{ssh_dir}/{IDENTITY_FILE}",
                                            f"{ssh_dir}/{KNOWN_HOSTS_FILE}", target.port)))
        self.ca_certificate = (self.tls.ca_cert.cert_pem if self.tls is not None
                               else pulumi.Output.from_input(None))
        self.dashboard_url = (self.monitoring.dashboard_url if self.monitoring is not None
                              else pulumi.Output.from_input(None))
        self.idle_stop = pulumi.Output.from_input(_idle_stop_note(plan.config.aws.idle_stop_minutes)
                                                  if self.monitoring is not None else None)

    def _create_tls(self, name: str, address: pulumi.Input[str]) -> "_Tls":
        """A private CA and a server certificate for the endpoint's address (IP or DNS name)."""
        opts = pulumi.ResourceOptions(parent=self)
        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=opts)
        ca_cert = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=ca_key.private_key_pem,
            is_ca_certificate=True,
            subject={"common_name": f"{name} vLLM endpoint CA", "organization": PROJECT},
            validity_period_hours=TLS_VALIDITY_HOURS * 3,
            allowed_uses=["cert_signing", "crl_signing"],
            opts=opts,
        )
        server_key = tls.PrivateKey(f"{name}-server-key", algorithm="ECDSA", ecdsa_curve="P256", opts=opts)
        address_output = pulumi.Output.from_input(address)
        request = tls.CertRequest(
            f"{name}-server-csr",
            private_key_pem=server_key.private_key_pem,
            subject={"common_name": address_output},
            ip_addresses=address_output.apply(lambda a: [a] if _is_ip(a) else []),
            dns_names=address_output.apply(lambda a: [] if _is_ip(a) else [a]),
            opts=opts,
        )
        server_cert = tls.LocallySignedCert(
            f"{name}-server-cert",
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=ca_key.private_key_pem,
            ca_cert_pem=ca_cert.cert_pem,
            validity_period_hours=TLS_VALIDITY_HOURS,
            early_renewal_hours=TLS_EARLY_RENEWAL_HOURS,
            allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
            opts=opts,
        )
        chain = pulumi.Output.all(server_cert.cert_pem, ca_cert.cert_pem).apply(
            lambda pems: pems[0].rstrip("\n") + "\n" + pems[1])
        material = TlsMaterial(certificate_pem=chain, private_key_pem=secret(server_key.private_key_pem))
        return _Tls(ca_key, ca_cert, server_key, request, server_cert, material)


@dataclass(frozen=True)
class _Tls:
    ca_key: tls.PrivateKey
    ca_cert: tls.SelfSignedCert
    server_key: tls.PrivateKey
    request: tls.CertRequest
    server_cert: tls.LocallySignedCert
    material: TlsMaterial


def _idle_stop_note(minutes: int | None) -> str | None:
    if minutes is None:
        return None
    return (f"The instance is stopped after {minutes} minutes without a request (a CloudWatch alarm); the cache "
            "volume and the Elastic IP stay. While it is stopped the endpoint refuses connections: apps should "
            "retry with backoff, and `scripts/wake.sh <stack>` (or `aws ec2 start-instances --instance-ids "
            "<instance_id>`) starts it; it serves again once /v1/models answers, a few minutes later.")


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _url_host(address: str) -> str:
    if _is_ip(address) and ipaddress.ip_address(address).version == 6:
        return f"[{address}]"
    return address
