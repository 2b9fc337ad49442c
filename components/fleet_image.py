"""FleetImage: a custom vLLM image (`imageBuildContext`, e.g. a fine-tune baked in `FROM vllm/vllm-openai`) built
on the deploying machine and pushed to a private ECR repository of the stack, for a fleet's instances to pull.

The single endpoint builds on its host over SSH; a fleet has many hosts and no SSH, so the image goes to a
registry they can all reach. The repository keeps tags immutable (a tag is the build context's digest: the
same folder, the same image), scans each push, is encrypted with `kmsKeyId` when set (else AES-256), and
keeps the newest images only (a lifecycle policy). The task runs the image by digest, so what was built is
what runs. `pulumi destroy` deletes the repository with its images: each is rebuilt from the folder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker

from vllm_endpoint.infra.catalog.names import PROJECT
from vllm_endpoint.infra.plan.deployment import ImageBuild

# Images kept in the repository: the running one, the one before it (a rollback) and a spare.
KEPT_IMAGES: Final = 3
# The instances are x86-64 (every GPU instance type in the catalog).
PLATFORM: Final = "linux/amd64"


@dataclass(frozen=True)
class FleetImageArgs:
    name: str  # the endpoint's: the repository is <project>-<stack>-<name>
    build: ImageBuild
    kms_key_id: pulumi.Input[str] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class FleetImage(pulumi.ComponentResource):
    image_ref: pulumi.Output[str]
    """The pushed image by digest (`<registry>/<repository>@sha256:...`): what the task runs."""
    repository_url: pulumi.Output[str]

    def __init__(self, name: str, args: FleetImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PROJECT}:aws:FleetImage", name, None, opts)
        self.repository = self._create_repository(name, args)
        self.lifecycle_policy = aws.ecr.LifecyclePolicy(
            f"{name}-lifecycle", repository=self.repository.name, policy=_lifecycle_policy(),
            opts=pulumi.ResourceOptions(parent=self))
        token = aws.ecr.get_authorization_token_output(registry_id=self.repository.registry_id)
        tag = args.build.tag.rsplit(":", 1)[1]
        self.image = docker.Image(
            f"{name}-image",
            image_name=pulumi.Output.concat(self.repository.repository_url, ":", tag),
            build=docker.DockerBuildArgs(context=str(args.build.context), platform=PLATFORM),
            registry=docker.RegistryArgs(server=self.repository.repository_url, username=token.user_name,
                                         password=pulumi.Output.secret(token.password)),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.image_ref = self.image.repo_digest
        self.repository_url = self.repository.repository_url
        self.register_outputs({"image_ref": self.image_ref, "repository_url": self.repository_url})

    def _create_repository(self, name: str, args: FleetImageArgs) -> aws.ecr.Repository:
        encryption = (aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="KMS", kms_key=args.kms_key_id)
                      if args.kms_key_id is not None else
                      aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256"))
        return aws.ecr.Repository(
            f"{name}-repository",
            name=repository_name(pulumi.get_stack(), args.name),
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            encryption_configurations=[encryption],
            # The images are built from the user's folder; nothing in them is lost with the stack.
            force_delete=True,
            tags=dict(args.tags),
            opts=pulumi.ResourceOptions(parent=self),
        )


def repository_name(stack: str, endpoint: str) -> str:
    """ECR's repository names: lowercase letters, digits and . _ - / (2-256 characters)."""
    raw = f"{PROJECT}-{stack}-{endpoint}".lower()
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in raw)[:256]


def _lifecycle_policy() -> str:
    return json.dumps({"rules": [{
        "rulePriority": 1,
        "description": f"keep the newest {KEPT_IMAGES} images",
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": KEPT_IMAGES},
        "action": {"type": "expire"},
    }]})
