"""A fleet's fine-tune: the folder Pulumi uploaded to the stack's S3 bucket, copied into each instance's cache by a
container of the replica's task before vLLM starts.

The single endpoint copies `modelPath` to its one host over SSH (components/vllm_server.py); a fleet has no SSH
and instances come and go, so each task copies the folder itself: a container run from the vLLM image (so it
needs no image of its own, and no pull beyond vLLM's) starts `infra/host/s3-model-sync.py`, which reads the
objects `<prefix>/<path>` with the task role's credentials, checks every file against the plan's manifest (size
and sha256) and moves the folder into place with one rename. vLLM's container depends on it with condition
SUCCESS: it starts only once the copy is whole, and a copy that fails stops the task (ECS agent 1.62+ stops a
container whose dependency can never resolve, amazon-ecs-agent PR #3218), so the service tries again
elsewhere and its circuit breaker sees the failures. The next task on the same instance finds the folder in
place (its marker holds the digest) and reads nothing from S3.

The container is the vLLM container's twin in what it may do: the same user, no capabilities, no new
privileges, a read-only root filesystem; it writes only the cache's models folder, the one mount it has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final

from vllm_endpoint.infra.catalog.names import CACHE_SUBDIR_MODELS, ENDPOINT_TAG
from vllm_endpoint.infra.plan.deployment import DeploymentPlan, ModelUpload
from vllm_endpoint.infra.plan.spec import ContainerSpec, Mount
from vllm_endpoint.infra.render.userdata import shipped_script

MODEL_SYNC_CONTAINER: Final = "model-sync"
MODEL_SYNC_SCRIPT: Final = "s3-model-sync.py"
# ECS's ContainerDependency condition: the dependency exited with status 0.
SUCCESS: Final = "SUCCESS"
# Where the sync container sees the cache's models folder (it renames inside it, so it mounts the folder
# that holds both the staging copy and the model).
SYNC_MODELS_MOUNT: Final = "/cache-models"
SYNC_STOP_TIMEOUT_S: Final = 10  # nothing to drain: a copy cut short is removed at the next start
# Replaces the image's entry point (vllm serve, or the API server module): `python3 -c SCRIPT`.
SYNC_ENTRY_POINT: Final = ("python3",)


@dataclass(frozen=True)
class ModelSource:
    """Where the fleet's copy of the fine-tune lives: s3://`bucket`/`prefix`/<relative path> in `region`."""

    bucket: str
    prefix: str
    region: str


def model_prefix(upload: ModelUpload) -> str:
    """The objects' key prefix: one per content digest, so a changed folder is new objects (and a new task
    definition), never an overwrite of the ones running replicas were started from."""
    return f"{CACHE_SUBDIR_MODELS}/{upload.digest}"


def model_object_keys(upload: ModelUpload) -> dict[str, str]:
    """Each file's object key, by its path relative to the folder."""
    prefix = model_prefix(upload)
    return {entry.path: f"{prefix}/{entry.path}" for entry in upload.contents.files}


def model_sync_spec(plan: DeploymentPlan, source: ModelSource) -> ContainerSpec:
    """The sync container of the plan's task (module docstring). ValueError when the plan uploads no model."""
    upload = plan.model_upload
    if upload is None:
        raise ValueError("the plan has no modelPath: its task has nothing to copy from S3")
    model_dir = PurePosixPath(upload.remote_dir)
    vllm = plan.vllm
    script = shipped_script(MODEL_SYNC_SCRIPT)  # without its comment lines: a task definition holds 64 KiB
    return ContainerSpec(
        name=MODEL_SYNC_CONTAINER,
        image=vllm.image,
        # `python3 -c TEXT`: the vLLM image has python3 and no copy of this file; arguments after the text are
        # the script's, and none are needed (everything is in the environment).
        args=("-c", script),
        env=(
            ("MODEL_BUCKET", source.bucket),
            ("MODEL_PREFIX", source.prefix),
            ("AWS_REGION", source.region),
            ("MODEL_DIR", f"{SYNC_MODELS_MOUNT}/{model_dir.name}"),
            ("DIGEST", upload.digest),
            ("MANIFEST", upload.contents.manifest()),
        ),
        mounts=(Mount(str(model_dir.parent), SYNC_MODELS_MOUNT),),
        restart="no",
        log_opts=vllm.log_opts,
        labels=((ENDPOINT_TAG, plan.names.endpoint),),
        user=vllm.user,
        read_only_root=True,
        cap_drop=("ALL",),
        security_opts=vllm.security_opts,
        init=True,
        stop_timeout_s=SYNC_STOP_TIMEOUT_S,
    )


def model_read_policy(bucket_arn: str, prefix: str, kms_key_id: str | None) -> str:
    """The task role's policy: read the objects of this folder version, nothing else (and decrypt them with the
    stack's key when it has one)."""
    statements: list[dict[str, object]] = [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{bucket_arn}/{prefix}/*"}]
    if kms_key_id:
        statements.append({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": kms_key_id})
    return json.dumps({"Version": "2012-10-17", "Statement": statements})
