"""VllmEndpoint: a private OpenAI-compatible vLLM endpoint, from a validated plan to stack outputs.

On `target: aws` it builds a GpuHost and runs the server there; on `target: existing-host` it runs
the same server on a Docker host the user already has, creating no AWS resources at all. `pulumi up`
finishes only when the readiness gate got an answer from `GET /v1/models` with the API key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_random as random
import pulumi_tls as tls

from vllm_endpoint.components._support import IDENTITY_FILE, KNOWN_HOSTS_FILE, secret
from vllm_endpoint.components.gpu_host import GpuHost, GpuHostArgs
from vllm_endpoint.components.vllm_server import SshTarget, TlsMaterial, VllmServer, VllmServerArgs
from vllm_endpoint.infra.catalog.names import PREFETCH_MODEL_TAG
from vllm_endpoint.infra.plan.deployment import DeploymentPlan
from vllm_endpoint.infra.render.container import plan_docker_run
from vllm_endpoint.infra.render.ssh import ssh_command

API_KEY_LENGTH = 48
# Self-signed endpoint certificates: long enough not to surprise anyone, renewed by re-deploying.
TLS_VALIDITY_HOURS = 24 * 365
TLS_EARLY_RENEWAL_HOURS = 24 * 30


@dataclass
class VllmEndpointArgs:
    plan: DeploymentPlan
    # Local folder for the SSH key and known_hosts files pulumi-docker's `ssh` reads.
    ssh_dir: str


class VllmEndpoint(pulumi.ComponentResource):
    endpoint_url: pulumi.Output[str]
    api_key: pulumi.Output[str]
    model: pulumi.Output[str]
    public_ip: pulumi.Output[str]
    instance_id: pulumi.Output[str | None]
    ssh_command: pulumi.Output[str]
    cache_volume_id: pulumi.Output[str | None]
    docker_run: pulumi.Output[str]
    plan_summary: pulumi.Output[str]
    deploy_timeline: pulumi.Output[str]
    ca_certificate: pulumi.Output[str | None]

    def __init__(self, name: str, args: VllmEndpointArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("vllm-endpoint:index:VllmEndpoint", name, None, opts)
        plan = args.plan
        cfg = plan.config
        secrets = cfg.secrets

        if secrets.api_key is not None:
            self.api_key = secret(secrets.api_key.get_secret_value())
        else:
            self.generated_api_key = random.RandomPassword(
                f"{name}-api-key", length=API_KEY_LENGTH, special=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.api_key = secret(self.generated_api_key.result)
        hf_token = (secret(secrets.hf_token.get_secret_value())
                    if secrets.hf_token is not None else None)
        own_ssh_key = (secret(secrets.ssh_private_key.get_secret_value())
                       if secrets.ssh_private_key is not None else None)

        self.host: GpuHost | None = None
        if cfg.target == "aws":
            # build_plan resolves the instance type and the cache volume for AWS
            assert plan.instance is not None and plan.cache_volume is not None
            self.host = GpuHost(
                f"{name}-host",
                GpuHostArgs(
                    aws=cfg.aws, access=cfg.access, instance=plan.instance, api_port=plan.api_port,
                    cache_volume=plan.cache_volume, container_user=cfg.server.container_user,
                    ssh_private_key=own_ssh_key, prefetch_tags=plan.prefetch_tags,
                    hf_token=hf_token if plan.prefetch_tags.get(PREFETCH_MODEL_TAG) else None,
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            target = SshTarget(
                address=self.host.public_ip, user=self.host.ssh_user, port=self.host.ssh_port,
                private_key=self.host.ssh_private_key, host_public_key=self.host.host_public_key,
            )
            depends_on: list[pulumi.Resource] = [self.host.ready]
            self.public_ip = self.host.public_ip
            self.instance_id = self.host.instance_id
            self.cache_volume_id = self.host.cache_volume_id
        else:
            host = cfg.existing_host
            assert host.host_address and host.host_ssh_user and host.host_public_key and own_ssh_key
            target = SshTarget(
                address=host.host_address, user=host.host_ssh_user, port=host.host_ssh_port,
                private_key=own_ssh_key, host_public_key=host.host_public_key,
            )
            depends_on = []
            self.public_ip = pulumi.Output.from_input(host.host_address)
            self.instance_id = pulumi.Output.from_input(None)
            self.cache_volume_id = pulumi.Output.from_input(None)

        tls_material = self._create_tls(name, target.address) if cfg.access.tls == "self-signed" else None

        self.server = VllmServer(
            f"{name}-server",
            VllmServerArgs(
                plan=plan, target=target, api_key=self.api_key, ssh_dir=args.ssh_dir, hf_token=hf_token,
                tls=tls_material, prepare_existing_host=cfg.target == "existing-host", depends_on=depends_on,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

        # Apps can use these only once the gate has seen the server answer.
        ready = self.server.readiness.stdout
        self.endpoint_url = pulumi.Output.all(target.address, ready).apply(
            lambda values: f"{plan.scheme}://{_url_host(values[0])}:{plan.api_port}/v1")
        self.model = ready.apply(lambda _: plan.served_model_name)
        self.deploy_timeline = self.server.deploy_timeline
        self.docker_run = pulumi.Output.from_input(plan_docker_run(plan))
        self.plan_summary = pulumi.Output.from_input(plan.summary)
        self.ssh_command = pulumi.Output.from_input(target.address).apply(
            lambda address: ssh_command(target.user, address, f"{args.ssh_dir}/{IDENTITY_FILE}",
                                        f"{args.ssh_dir}/{KNOWN_HOSTS_FILE}", target.port))
        self.ca_certificate = (self.ca_cert.cert_pem if tls_material is not None
                               else pulumi.Output.from_input(None))
        self.register_outputs({
            "endpoint_url": self.endpoint_url,
            "api_key": self.api_key,
            "model": self.model,
            "public_ip": self.public_ip,
            "instance_id": self.instance_id,
            "ssh_command": self.ssh_command,
            "cache_volume_id": self.cache_volume_id,
            "docker_run": self.docker_run,
            "plan": self.plan_summary,
            "deploy_timeline": self.deploy_timeline,
            "ca_certificate": self.ca_certificate,
        })

    def _create_tls(self, name: str, address: pulumi.Input[str]) -> TlsMaterial:
        """A private CA and a server certificate for the endpoint's address (IP or DNS name)."""
        opts = pulumi.ResourceOptions(parent=self)
        self.ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=opts)
        self.ca_cert = tls.SelfSignedCert(
            f"{name}-ca",
            private_key_pem=self.ca_key.private_key_pem,
            is_ca_certificate=True,
            subject={"common_name": f"{name} vLLM endpoint CA", "organization": "vllm-endpoint"},
            validity_period_hours=TLS_VALIDITY_HOURS * 3,
            allowed_uses=["cert_signing", "crl_signing"],
            opts=opts,
        )
        self.server_key = tls.PrivateKey(f"{name}-server-key", algorithm="ECDSA", ecdsa_curve="P256", opts=opts)
        address_output = pulumi.Output.from_input(address)
        request = tls.CertRequest(
            f"{name}-server-csr",
            private_key_pem=self.server_key.private_key_pem,
            subject={"common_name": address_output},
            ip_addresses=address_output.apply(lambda a: [a] if _is_ip(a) else []),
            dns_names=address_output.apply(lambda a: [] if _is_ip(a) else [a]),
            opts=opts,
        )
        self.server_cert = tls.LocallySignedCert(
            f"{name}-server-cert",
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=self.ca_key.private_key_pem,
            ca_cert_pem=self.ca_cert.cert_pem,
            validity_period_hours=TLS_VALIDITY_HOURS,
            early_renewal_hours=TLS_EARLY_RENEWAL_HOURS,
            allowed_uses=["digital_signature", "key_encipherment", "server_auth"],
            opts=opts,
        )
        chain = pulumi.Output.all(self.server_cert.cert_pem, self.ca_cert.cert_pem).apply(
            lambda pems: pems[0].rstrip("\n") + "\n" + pems[1])
        return TlsMaterial(certificate_pem=chain,
                           private_key_pem=secret(self.server_key.private_key_pem))


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

