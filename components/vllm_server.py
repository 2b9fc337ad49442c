"""VllmServer: the vLLM container (and its reverse proxy) on any Docker host reached over SSH.

The host is the AWS GpuHost or a server the user already has; this component only needs an address,
an SSH user and key, and the host's public key to pin. Every container argument comes from the
deployment plan's ContainerSpec (infra/render/container.py); this file wires resources and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from vllm_endpoint.components._support import SshTarget, secret, write_ssh_files
from vllm_endpoint.infra.catalog.names import PROJECT, SECRET_API_KEY_ENV, SECRET_HF_TOKEN_ENV
from vllm_endpoint.infra.plan.deployment import DeploymentPlan
from vllm_endpoint.infra.render.container import to_container_args
from vllm_endpoint.infra.render.host_scripts import (
    existing_host_prepare_script,
    gate_report,
    model_check_script,
    readiness_gate_script,
    write_files_script,
    write_files_stdin,
)
from vllm_endpoint.infra.render.proxy import proxy_files, proxy_spec
from vllm_endpoint.infra.render.ssh import docker_host_url, known_hosts_line, ssh_options


@dataclass
class TlsMaterial:
    certificate_pem: pulumi.Input[str]  # server certificate followed by the CA certificate
    private_key_pem: pulumi.Input[str]  # secret


@dataclass
class VllmServerArgs:
    plan: DeploymentPlan
    target: SshTarget
    api_key: pulumi.Input[str]  # secret
    ssh_dir: str  # where the docker connection's key and known_hosts files are written locally
    hf_token: pulumi.Input[str] | None = None  # secret
    tls: TlsMaterial | None = None
    prepare_existing_host: bool = False
    depends_on: list[pulumi.Resource] = field(default_factory=list)


class VllmServer(pulumi.ComponentResource):
    vllm_container: docker.Container
    proxy_container: docker.Container
    readiness: command.remote.Command
    deploy_timeline: pulumi.Output[str]

    def __init__(self, name: str, args: VllmServerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PROJECT}:docker:VllmServer", name, None, opts)
        plan = args.plan
        self.host_prepare = self._prepare_existing_host(name, args) if args.prepare_existing_host else None
        depends_on: list[pulumi.Resource] = [self.host_prepare] if self.host_prepare else list(args.depends_on)

        self.provider = self._create_docker_provider(name, args, depends_on)
        docker_opts = pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=depends_on)
        self.model_copy, self.model_upload = self._upload_model(name, args, depends_on)
        self.proxy_files = self._write_proxy_files(name, args, depends_on)
        self.image = self._image(name, plan, docker_opts)
        self.network = docker.Network(f"{name}-network", name=plan.network, driver="bridge", opts=docker_opts)
        self.vllm_container = self._create_vllm_container(
            name, args, _image_id(self.image), self.network, pulumi.ResourceOptions(
                parent=self, provider=self.provider, delete_before_replace=True,
                depends_on=[*depends_on, *([self.model_upload] if self.model_upload is not None else [])]))
        self.proxy_image = docker.RemoteImage(
            f"{name}-proxy-image", name=plan.proxy.image, keep_locally=True, opts=docker_opts,
        )
        self.proxy_container = docker.Container(
            f"{name}-proxy",
            **to_container_args(proxy_spec(plan), image=self.proxy_image.image_id, secret_env_values={},
                                network_id=self.network.name),
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider,
                                        depends_on=[*depends_on, self.proxy_files], delete_before_replace=True),
        )
        self.readiness = self._create_readiness_gate(name, args, [self.vllm_container, self.proxy_container])
        # The gate's report without the progress lines it streamed while it waited.
        self.deploy_timeline = self.readiness.stdout.apply(gate_report)
        self.register_outputs({"deploy_timeline": self.deploy_timeline})

    # ------------------------------------------------------------------------------------------

    def _prepare_existing_host(self, name: str, args: VllmServerArgs) -> command.remote.Command:
        plan = args.plan
        return command.remote.Command(
            f"{name}-prepare-host",
            connection=args.target.connection(),
            create=existing_host_prepare_script(
                plan.host_cache_dir, plan.vllm.runtime == "nvidia" or plan.vllm.gpus is not None,
                plan.config.server.container_user),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )

    def _create_vllm_container(self, name: str, args: VllmServerArgs, image_id: pulumi.Output[str],
                               network: docker.Network, opts: pulumi.ResourceOptions) -> docker.Container:
        secret_env = {SECRET_API_KEY_ENV: secret(args.api_key)}
        if args.hf_token is not None:
            secret_env[SECRET_HF_TOKEN_ENV] = secret(args.hf_token)
        # Container names are fixed (the proxy finds vLLM by name) and the proxy holds the host port: an
        # old container goes before its replacement starts (delete_before_replace in `opts`). The gap is
        # the new one's start (README).
        return docker.Container(
            f"{name}-vllm",
            **to_container_args(args.plan.vllm, image=image_id, secret_env_values=secret_env,
                                network_id=network.name),
            opts=opts,
        )

    def _create_readiness_gate(self, name: str, args: VllmServerArgs,
                               containers: list[docker.Container]) -> command.remote.Command:
        gate = args.plan.readiness_gate
        timeout = f"{gate.timeout_s // 60 + 5}m"
        return command.remote.Command(
            f"{name}-readiness",
            connection=args.target.connection(),
            create=readiness_gate_script(gate),
            # The key reaches the probe on stdin only.
            stdin=secret(args.api_key).apply(lambda key: key + "\n"),
            triggers=[c.id for c in containers],
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=containers,
                custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout),
            ),
        )

    def _create_docker_provider(self, name: str, args: VllmServerArgs,
                                depends_on: list[pulumi.Resource]) -> docker.Provider:
        target = args.target
        files = pulumi.Output.all(target.private_key, target.address, target.host_public_key).apply(
            lambda values: write_ssh_files(
                args.ssh_dir, values[0], known_hosts_line(values[1], values[2], target.port))
        )
        return docker.Provider(
            f"{name}-docker",
            host=pulumi.Output.from_input(target.address).apply(
                lambda address: docker_host_url(target.user, address, target.port)),
            ssh_opts=files.apply(lambda paths: ssh_options(identity_file=paths[0], known_hosts_file=paths[1])),
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )

    def _image(self, name: str, plan: DeploymentPlan,
               docker_opts: pulumi.ResourceOptions) -> docker.RemoteImage | docker.Image:
        if plan.image_build is not None:
            return docker.Image(
                f"{name}-custom-image",
                image_name=plan.image_build.tag,
                build=docker.DockerBuildArgs(context=str(plan.image_build.context), platform="linux/amd64"),
                skip_push=True,
                opts=docker_opts,
            )
        # keep_locally: the image (~25 GB unpacked) stays on the host when the reference changes, so a
        # rollback does not pull it again.
        return docker.RemoteImage(f"{name}-vllm-image", name=plan.image_ref, keep_locally=True, opts=docker_opts)

    def _upload_model(self, name: str, args: VllmServerArgs, depends_on: list[pulumi.Resource]) -> tuple[
            command.remote.CopyToRemote | None, command.remote.Command | None]:
        """(the copy, the check that it left the files where vLLM expects them), for a local fine-tune."""
        upload = args.plan.model_upload
        if upload is None:
            return None, None
        # Copied once per content digest: the folder name is the digest, so a changed model is a new
        # folder (and a new container mount), an unchanged one is never sent again.
        copy = command.remote.CopyToRemote(
            f"{name}-model-upload",
            connection=args.target.connection(),
            source=pulumi.FileArchive(str(upload.local_dir)),
            remote_path=upload.remote_dir,
            triggers=[upload.digest],
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on,
                                        custom_timeouts=pulumi.CustomTimeouts(create="60m")),
        )
        return copy, command.remote.Command(
            f"{name}-model-check",
            connection=args.target.connection(),
            create=model_check_script(upload.remote_dir),
            triggers=[upload.digest],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[copy]),
        )

    def _write_proxy_files(self, name: str, args: VllmServerArgs,
                           depends_on: list[pulumi.Resource]) -> command.remote.Command:
        plan = args.plan
        tls = args.tls
        modes, contents = proxy_files(plan, tls.certificate_pem if tls else None, tls.private_key_pem if tls else None)
        names = sorted(contents)
        stdin = secret(pulumi.Output.all(*(contents[n] for n in names)).apply(
            lambda values: write_files_stdin(dict(zip(names, values, strict=True)))))
        return command.remote.Command(
            f"{name}-proxy-files",
            connection=args.target.connection(),
            create=write_files_script(plan.proxy_dir, modes),
            # A changed file arrives as changed stdin, which re-runs the command.
            stdin=stdin,
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )


def _image_id(image: docker.RemoteImage | docker.Image) -> pulumi.Output[str]:
    if isinstance(image, docker.Image):
        return image.image_name
    return image.image_id
