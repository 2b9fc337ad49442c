"""VllmServer: the vLLM container (and its reverse proxy) on a Docker host reached over SSH, or on this
machine's own engine.

The host is the AWS GpuHost or a server the user already has; this component only needs an address,
an SSH user and key, and the host's public key to pin. With no SSH target (target=local) the same
steps run as local commands and the Docker provider uses the local engine (DOCKER_HOST, else its default
socket). Every container argument comes from the deployment plan's ContainerSpec
(infra/render/container.py); this file wires resources and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_command as command
import pulumi_docker as docker
import pulumi_random as random

from vllm_endpoint.components._support import SshTarget, secret, write_ssh_files
from vllm_endpoint.infra.catalog.names import LOCAL_API_ADDRESS, PROJECT, SECRET_API_KEY_ENV, SECRET_HF_TOKEN_ENV
from vllm_endpoint.infra.plan.deployment import DeploymentPlan
from vllm_endpoint.infra.plan.spec import Owner, owned_by, with_awslogs
from vllm_endpoint.infra.render.cloudwatch_agent import AgentInputs, agent_apply_script, agent_stop_script
from vllm_endpoint.infra.render.container import to_container_args
from vllm_endpoint.infra.render.host_scripts import (
    existing_host_prepare_script,
    gate_report,
    host_claims,
    local_model_copy_script,
    model_stage_script,
    model_verify_script,
    readiness_gate_script,
    write_files_script,
    write_files_stdin,
)
from vllm_endpoint.infra.render.proxy import KEY_CHECK_VERSION_LABEL, proxy_files, proxy_spec
from vllm_endpoint.infra.render.ssh import docker_host_url, known_hosts_line, ssh_options


@dataclass
class TlsMaterial:
    certificate_pem: pulumi.Input[str]  # server certificate followed by the CA certificate
    private_key_pem: pulumi.Input[str]  # secret


@dataclass(frozen=True)
class MetricsArgs:
    """The CloudWatch side on an AWS host (metrics on): the metrics' scope (`stack` dimension) and namespace,
    and the log group (created by the GpuHost) the proxy's access log goes to, in `region`."""

    scope: str
    namespace: str
    access_log_group: str
    region: str
    instance_id: pulumi.Input[str]  # the idle-stop alarm's metric is published per instance


@dataclass
class VllmServerArgs:
    plan: DeploymentPlan
    target: SshTarget | None  # None: this machine (target=local)
    api_key: pulumi.Input[str]  # secret
    ssh_dir: str  # where the docker connection's key and known_hosts files are written locally
    hf_token: pulumi.Input[str] | None = None  # secret
    tls: TlsMaterial | None = None
    prepare_existing_host: bool = False
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    metrics: MetricsArgs | None = None  # AWS only: needs the instance's role and the agent from its user-data


# A step that runs on the host: over SSH, or here with target=local.
HostCommand = command.remote.Command | command.local.Command


class VllmServer(pulumi.ComponentResource):
    vllm_container: docker.Container
    proxy_container: docker.Container
    readiness: HostCommand
    deploy_timeline: pulumi.Output[str]

    def __init__(self, name: str, args: VllmServerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PROJECT}:docker:VllmServer", name, None, opts)
        plan = args.plan
        # Labels on both containers: which project, stack and endpoint they belong to, for the host check of
        # another stack sharing the host (and for anyone reading `docker ps`).
        self.owner = Owner(pulumi.get_project(), pulumi.get_stack(), plan.names.endpoint)
        self.host_prepare = self._prepare_existing_host(name, args) if args.prepare_existing_host else None
        depends_on: list[pulumi.Resource] = [self.host_prepare] if self.host_prepare else list(args.depends_on)

        self.provider = self._create_docker_provider(name, args, depends_on)
        docker_opts = pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=depends_on)
        self.model_copy, self.model_upload = self._upload_model(name, args, depends_on)
        self.proxy_files = self._write_proxy_files(name, args, depends_on)
        # A random value that changes with the key (its keeper, a secret): a label that says nothing about
        # the key, unlike a digest of it, which would let a weak key be guessed offline from the state.
        self.key_check_version = random.RandomId(f"{name}-key-check", byte_length=8,
                                                 keepers={"api_key": secret(args.api_key)},
                                                 opts=pulumi.ResourceOptions(parent=self))
        self.image = self._image(name, plan, docker_opts)
        self.network = docker.Network(f"{name}-network", name=plan.network, driver="bridge", opts=docker_opts)
        self.vllm_container = self._create_vllm_container(
            name, args, _image_id(self.image), self.network, pulumi.ResourceOptions(
                parent=self, provider=self.provider, delete_before_replace=True,
                depends_on=[*depends_on, *([self.model_upload] if self.model_upload is not None else [])]))
        self.proxy_image = docker.RemoteImage(
            f"{name}-proxy-image", name=plan.proxy.image, keep_locally=True, opts=docker_opts,
        )
        proxy = owned_by(proxy_spec(plan), self.owner)
        if args.metrics is not None:
            # The access log (paths only, never query strings: nginx.conf.template) to CloudWatch Logs.
            proxy = with_awslogs(proxy, args.metrics.access_log_group, args.metrics.region)
        self.proxy_container = docker.Container(
            f"{name}-proxy",
            **_with_key_version(to_container_args(proxy, image=self.proxy_image.image_id, secret_env_values={},
                                                  network_id=self.network.name), self.key_check_version),
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider,
                                        depends_on=[*depends_on, self.proxy_files], delete_before_replace=True),
        )
        self.readiness = self._create_readiness_gate(name, args, [self.vllm_container, self.proxy_container])
        self.cloudwatch_agent = self._configure_agent(name, args, args.metrics) if args.metrics is not None else None
        # The gate's report without the progress lines it streamed while it waited.
        self.deploy_timeline = self.readiness.stdout.apply(gate_report)
        self.register_outputs({"deploy_timeline": self.deploy_timeline})

    # ------------------------------------------------------------------------------------------

    def _host_command(self, resource_name: str, args: VllmServerArgs, opts: pulumi.ResourceOptions,
                      **inputs: Any) -> HostCommand:
        """A pulumi-command step on the host: remote over SSH, or here. The text is POSIX sh either way
        (host_command), so the local one runs it with /bin/sh as a remote login shell might."""
        if args.target is None:
            return command.local.Command(resource_name, interpreter=["/bin/sh", "-c"], **inputs, opts=opts)
        return command.remote.Command(resource_name, connection=args.target.connection(), **inputs, opts=opts)

    def _prepare_existing_host(self, name: str, args: VllmServerArgs) -> HostCommand:
        """The cache folders and Docker checked, and, since other stacks may share the host, that none of
        them holds this endpoint's apiPort, GPUs or container names (it re-runs when any of them changes)."""
        plan = args.plan
        address = args.target.address if args.target is not None else LOCAL_API_ADDRESS
        require_nvidia = plan.vllm.runtime == "nvidia" or plan.vllm.gpus is not None
        return self._host_command(
            f"{name}-prepare-host", args,
            pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
            create=pulumi.Output.from_input(address).apply(lambda host: existing_host_prepare_script(
                plan.host_cache_dir, require_nvidia, plan.config.server.container_user,
                host_claims(plan, self.owner, host), open_files=plan.config.server.container_open_files,
                room=plan.model_room)),
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
            **to_container_args(owned_by(args.plan.vllm, self.owner), image=image_id, secret_env_values=secret_env,
                                network_id=network.name),
            opts=opts,
        )

    def _configure_agent(self, name: str, args: VllmServerArgs, metrics: MetricsArgs) -> command.remote.Command:
        """The CloudWatch agent's configuration written and applied once the vLLM container exists, and again
        when it is re-created: its scrape target is the container's address on the endpoint's network.

        That address is the one Docker gave the container (`network_datas`), not a fixed one: `--ip` needs a
        network with a subnet the program chose, which could overlap the VPC's or another network's ranges
        (Docker checks the host's routes only for subnets it picks itself), and changing the network would
        re-create every container of existing stacks. Docker keeps a re-created or restarted container's
        address only by chance; a boot, which starts vLLM and the proxy together, may swap them, so the
        host's boot step (infra/host/cloudwatch-agent.sh retarget) points the agent at the new address."""
        target = args.target
        if target is None:
            raise ValueError("metrics: the CloudWatch agent runs on an AWS host only")
        network = args.plan.network
        address = self.vllm_container.network_datas.apply(lambda data: _address_on(data, network))
        return command.remote.Command(
            f"{name}-cloudwatch-agent",
            connection=target.connection(),
            create=pulumi.Output.all(address, metrics.instance_id).apply(lambda values: agent_apply_script(
                AgentInputs(stack=metrics.scope, namespace=metrics.namespace, vllm_address=values[0],
                            instance_id=values[1]))),
            delete=agent_stop_script(),
            # A re-created container, even one that got its predecessor's address, is scraped afresh.
            triggers=[self.vllm_container.id, address],
            # The old step's delete (stop the agent) before the new one's create (start it), not after.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.vllm_container], delete_before_replace=True),
        )

    def _create_readiness_gate(self, name: str, args: VllmServerArgs,
                               containers: list[docker.Container]) -> HostCommand:
        gate = args.plan.readiness_gate
        timeout = f"{gate.timeout_s // 60 + 5}m"
        return self._host_command(
            f"{name}-readiness", args,
            pulumi.ResourceOptions(
                parent=self, depends_on=containers,
                custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout),
            ),
            create=readiness_gate_script(gate),
            # The key reaches the probe on stdin only.
            stdin=secret(args.api_key).apply(lambda key: key + "\n"),
            triggers=[c.id for c in containers],
        )

    def _create_docker_provider(self, name: str, args: VllmServerArgs,
                                depends_on: list[pulumi.Resource]) -> docker.Provider:
        target = args.target
        if target is None:
            # No `host`: the provider reads DOCKER_HOST at every run, else uses the engine's default socket,
            # so nothing about this machine's engine is kept in the state.
            return docker.Provider(f"{name}-docker", opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on))
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
            pulumi.CustomResource | None, HostCommand | None]:
        """(the copy, the check that moves it into place once it matches the source), for a local fine-tune.

        Stage (room checked, an empty staging folder), copy, verify file by file and rename: the folder
        the container mounts is never a partial copy. Each step runs once per content digest: the folder
        name is the digest, so a changed model is a new folder (and a new container mount), an unchanged
        one is never sent again. A copy that failed is retried by the next `pulumi up` into the same
        staging folder, where it replaces what the failed one left.
        """
        plan, upload = args.plan, args.plan.model_upload
        if upload is None:
            return None, None
        copy_opts = pulumi.ResourceOptions(parent=self, depends_on=depends_on,
                                           custom_timeouts=pulumi.CustomTimeouts(create="60m"))
        copy: pulumi.CustomResource
        if args.target is None:
            copy = self._host_command(f"{name}-model-upload", args, copy_opts,
                                      create=local_model_copy_script(plan), triggers=[upload.digest])
        else:
            stage = self._host_command(f"{name}-model-stage", args,
                                       pulumi.ResourceOptions(parent=self, depends_on=depends_on),
                                       create=model_stage_script(plan), triggers=[upload.digest])
            copy = command.remote.CopyToRemote(
                f"{name}-model-upload",
                connection=args.target.connection(),
                source=pulumi.FileArchive(str(upload.local_dir)),
                remote_path=upload.staging_dir,
                triggers=[upload.digest],
                opts=pulumi.ResourceOptions.merge(copy_opts, pulumi.ResourceOptions(depends_on=[stage])),
            )
        manifest = upload.contents.manifest()
        return copy, self._host_command(
            f"{name}-model-check", args, pulumi.ResourceOptions(parent=self, depends_on=[copy]),
            create=copy.urn.apply(lambda urn: model_verify_script(plan, urn)[0]), stdin=manifest,
            triggers=[upload.digest],
        )

    def _write_proxy_files(self, name: str, args: VllmServerArgs,
                           depends_on: list[pulumi.Resource]) -> HostCommand:
        plan = args.plan
        tls = args.tls
        modes, contents = proxy_files(plan, secret(args.api_key), tls.certificate_pem if tls else None,
                                      tls.private_key_pem if tls else None)
        names = sorted(contents)
        stdin = secret(pulumi.Output.all(*(contents[n] for n in names)).apply(
            lambda values: write_files_stdin(dict(zip(names, values, strict=True)))))
        return self._host_command(
            f"{name}-proxy-files", args, pulumi.ResourceOptions(parent=self, depends_on=depends_on),
            create=write_files_script(plan.proxy_dir, modes),
            # A changed file arrives as changed stdin, which re-runs the command.
            stdin=stdin,
        )


def _with_key_version(container_args: dict[str, Any], version: random.RandomId) -> dict[str, Any]:
    """The proxy's arguments with the key check's version as a label: nginx reads the key at start, so a new
    key (a new version) re-creates the proxy."""
    labels = [*container_args["labels"], {"label": KEY_CHECK_VERSION_LABEL, "value": version.hex}]
    return {**container_args, "labels": labels}


def _address_on(network_data: Any, network: str) -> str:
    """The container's IPv4 address on `network`, from pulumi-docker's `network_datas`."""
    for entry in network_data or []:
        get = entry.get if isinstance(entry, dict) else lambda key, e=entry: getattr(e, key, None)
        if get("network_name") == network and get("ip_address"):
            return str(get("ip_address"))
    raise ValueError(f"the vLLM container has no IPv4 address on the network {network}")


def _image_id(image: docker.RemoteImage | docker.Image) -> pulumi.Output[str]:
    if isinstance(image, docker.Image):
        return image.image_name
    return image.image_id
