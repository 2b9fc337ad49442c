"""A fleet's fine-tune in its task (infra/render/model_sync.py, ecs.py): the sync container's definition, its
place in the task, what the instance's boot script must create for it, and what it renders to on a test host."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from tests.unit.infra.render.test_ecs import ARNS, options_and_tail, stack_settings
from tests.unit.model_folders import write_model_folder
from vllm_endpoint.infra.catalog.names import CONTAINER_MODEL_DIR, HOST_CACHE_MOUNT
from vllm_endpoint.infra.catalog.prices import S3_STORAGE
from vllm_endpoint.infra.plan.deployment import DeploymentPlan, build_plan
from vllm_endpoint.infra.plan.model_files import ManifestEntry
from vllm_endpoint.infra.render.ecs import (
    TASK_DEFINITION_MAX_BYTES,
    AwsLogs,
    EcsRenderError,
    ecs_to_docker_run,
    plan_ecs_task,
    task_secret_names,
)
from vllm_endpoint.infra.render.ecs_host import ecs_host_settings
from vllm_endpoint.infra.render.ecs_metrics import metrics_sidecar, with_sidecar
from vllm_endpoint.infra.render.model_sync import (
    MODEL_SYNC_CONTAINER,
    MODEL_SYNC_SCRIPT,
    SYNC_MODELS_MOUNT,
    ModelSource,
    model_object_keys,
    model_read_policy,
)
from vllm_endpoint.infra.render.userdata import shipped_script
from vllm_endpoint.infra.settings.models import load_stack_config

LOGS = AwsLogs("/vllm-endpoint/fleet/tasks", "eu-west-1", "replica")


def fleet_settings() -> dict[str, str]:
    """The shipped fleet stack's settings with what its header asks the user to set (a fleet has no SSH)."""
    return {k: v for k, v in stack_settings("fleet").items() if k != "sshAllowedCidrs"}


def fleet_plan(folder: Path) -> DeploymentPlan:
    return build_plan(load_stack_config(fleet_settings() | {"modelPath": str(folder)}), hub_fetcher=None)


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> DeploymentPlan:
    return fleet_plan(write_model_folder(tmp_path_factory.mktemp("ft"), "my-finetune"))


def source_of(plan: DeploymentPlan) -> ModelSource:
    assert plan.model_upload is not None
    return ModelSource("vllm-endpoint-fleet-models-0123", f"models/{plan.model_upload.digest}", "eu-west-1")


Definition = dict[str, Any]


def task_of(plan: DeploymentPlan, source: ModelSource | None = None) -> tuple[Definition, Definition, Definition]:
    arns = {n: ARNS[n] for n in task_secret_names(plan)}
    task = plan_ecs_task(plan, secret_arns=arns, logs=LOGS, model_source=source or source_of(plan))
    sync, vllm, proxy = task.container_definitions
    return sync, vllm, proxy


def test_the_sync_container_runs_first_and_vllm_only_after_it_succeeded(plan: DeploymentPlan) -> None:
    sync, vllm, proxy = task_of(plan)
    assert sync["name"] == MODEL_SYNC_CONTAINER and sync["essential"] is False  # ECS: a SUCCESS dependency
    assert vllm["dependsOn"] == [{"containerName": MODEL_SYNC_CONTAINER, "condition": "SUCCESS"}]
    assert proxy["dependsOn"] == [{"containerName": vllm["name"], "condition": "HEALTHY"}]
    assert vllm["essential"] and proxy["essential"]
    # The vLLM image itself runs the script: no other image to pull, no other registry to reach.
    assert sync["image"] == vllm["image"]
    assert sync["entryPoint"] == ["python3"]
    assert sync["command"] == ["-c", shipped_script(MODEL_SYNC_SCRIPT)]
    assert "restartPolicy" not in sync and "healthCheck" not in sync and "resourceRequirements" not in sync
    assert sync["logConfiguration"] == vllm["logConfiguration"]


def test_the_sync_container_may_do_no_more_than_vllm_and_writes_only_the_models_folder(plan: DeploymentPlan) -> None:
    sync, vllm, _ = task_of(plan)
    assert sync["user"] == vllm["user"] and sync["readonlyRootFilesystem"] is True
    assert sync["linuxParameters"]["capabilities"] == {"drop": ["ALL"], "add": []}
    assert sync["dockerSecurityOptions"] == vllm["dockerSecurityOptions"] == ["no-new-privileges"]
    assert sync["secrets"] == [] and sync["portMappings"] == []
    assert plan.model_upload is not None
    model_dir = PurePosixPath(plan.model_upload.remote_dir)
    (mount,) = sync["mountPoints"]
    assert (mount["containerPath"], mount["readOnly"]) == (SYNC_MODELS_MOUNT, False)
    # vLLM mounts the very folder the sync fills, read-only, where its --model points.
    (model_mount,) = [m for m in vllm["mountPoints"] if m["containerPath"] == CONTAINER_MODEL_DIR]
    assert model_mount["readOnly"] is True
    env = {e["name"]: e["value"] for e in sync["environment"]}
    assert env["MODEL_DIR"] == f"{SYNC_MODELS_MOUNT}/{model_dir.name}"
    task = plan_ecs_task(plan, secret_arns={n: ARNS[n] for n in task_secret_names(plan)}, model_source=source_of(plan))
    sources = {v["name"]: v["host"]["sourcePath"] for v in task.volumes}
    assert sources[mount["sourceVolume"]] == str(model_dir.parent)
    assert sources[model_mount["sourceVolume"]] == str(model_dir)
    # The boot script creates the models folder, owned by the task's user, before the agent starts.
    host = ecs_host_settings(plan, task, "vllm-endpoint-fleet")
    assert model_dir.parent == PurePosixPath(HOST_CACHE_MOUNT) / "models"
    assert "models" in host.cache_subdirs and host.cache_owner == vllm["user"]


def test_the_sync_container_is_told_exactly_what_to_copy_and_check(plan: DeploymentPlan) -> None:
    sync, _, _ = task_of(plan)
    assert plan.model_upload is not None
    env = {e["name"]: e["value"] for e in sync["environment"]}
    contents = plan.model_upload.contents
    assert env == {"MODEL_BUCKET": "vllm-endpoint-fleet-models-0123", "MODEL_PREFIX": f"models/{contents.digest}",
                   "AWS_REGION": "eu-west-1", "MODEL_DIR": env["MODEL_DIR"], "DIGEST": contents.digest,
                   "MANIFEST": contents.manifest()}
    keys = model_object_keys(plan.model_upload)
    assert sorted(keys.values()) == sorted(f"models/{contents.digest}/{e.path}" for e in contents.files)


def test_on_a_test_host_the_definition_is_python_on_the_script(plan: DeploymentPlan) -> None:
    sync, _, _ = task_of(plan)
    assert plan.model_upload is not None
    argv = ecs_to_docker_run(sync, [{"name": m["sourceVolume"], "host": {"sourcePath": "/cache/models"}}
                                    for m in sync["mountPoints"]], network_mode="awsvpc",
                             task_network="container:pause")
    options, tail = options_and_tail(argv)
    assert ("--entrypoint", "python3") in options and ("--read-only", "") in options
    assert ("--user", sync["user"]) in options and ("--volume", f"/cache/models:{SYNC_MODELS_MOUNT}") in options
    assert tail == [sync["image"], "-c", shipped_script(MODEL_SYNC_SCRIPT)]


def test_a_task_and_its_model_source_go_together(plan: DeploymentPlan, tmp_path: Path) -> None:
    arns = {n: ARNS[n] for n in task_secret_names(plan)}
    with pytest.raises(EcsRenderError, match="modelPath: the task copies the uploaded folder from S3"):
        plan_ecs_task(plan, secret_arns=arns)
    hub = build_plan(load_stack_config(fleet_settings()), hub_fetcher=None)
    with pytest.raises(EcsRenderError, match="without modelPath"):
        plan_ecs_task(hub, secret_arns={n: ARNS[n] for n in task_secret_names(hub)}, model_source=source_of(plan))


def test_a_manifest_too_long_for_a_task_definition_is_refused_by_name(plan: DeploymentPlan) -> None:
    assert plan.model_upload is not None
    many = tuple(ManifestEntry(f"shard-{i:05d}-of-99999.safetensors", 1 << 30, "0" * 64) for i in range(1200))
    upload = dataclasses.replace(plan.model_upload,
                                 contents=dataclasses.replace(plan.model_upload.contents, files=many))
    big = dataclasses.replace(plan, model_upload=upload)
    with pytest.raises(EcsRenderError, match=rf"at most {TASK_DEFINITION_MAX_BYTES:,} .*modelPath"):
        task_of(big)
    sync, vllm, proxy = task_of(plan)
    # Room for a manifest of about 150 files (a line is about 100 bytes) next to the metrics sidecar.
    room = TASK_DEFINITION_MAX_BYTES - len(with_sidecar(json.dumps([sync, vllm, proxy]),
                                                         metrics_sidecar("fleet", LOGS)).encode())
    assert room > 150 * 100


def test_the_task_role_reads_this_folder_version_only() -> None:
    policy = json.loads(model_read_policy("arn:aws:s3:::b", "models/abc", None))
    assert policy["Statement"] == [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/models/abc/*"}]
    with_key = json.loads(model_read_policy("arn:aws:s3:::b", "models/abc", "arn:aws:kms:eu-west-1:1:key/k"))
    assert with_key["Statement"][1] == {"Effect": "Allow", "Action": "kms:Decrypt",
                                        "Resource": "arn:aws:kms:eu-west-1:1:key/k"}


def test_the_plan_counts_the_folders_copy_in_s3(plan: DeploymentPlan) -> None:
    assert plan.fleet is not None and plan.model_upload is not None
    costs = plan.fleet.costs
    assert costs.model_copy_bytes == plan.model_upload.contents.total_bytes > 0
    without = dataclasses.replace(costs, model_copy_bytes=0)
    fifty_gb = dataclasses.replace(costs, model_copy_bytes=50_000_000_000)
    assert fifty_gb.usd_per_month(2) - without.usd_per_month(2) == pytest.approx(50 * S3_STORAGE.standard_gb_month)
    described = dataclasses.replace(plan.fleet, costs=fifty_gb).describe()[0]
    assert "the modelPath folder's copy in S3 (50.00 GB) $1.15/month" in described
    assert "copy in S3" not in dataclasses.replace(plan.fleet, costs=without).describe()[0]
