"""The user data of a fleet instance: infra/host/ecs-host.sh with the fleet's values filled in.

The script joins the ECS cluster (the agent's /etc/ecs/ecs.config) and mounts the model cache volume, through
a systemd unit ordered before the agent, at every boot; its header says why a unit and not cloud-init's
bootcmd. With a warm pool the user data is a MIME multi-part that runs the script at every boot
(warm_pool_user_data says why). Pure: the caller passes the cluster's name once it is known.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final

from vllm_endpoint.infra.catalog.names import HOST_CACHE_MOUNT, PROJECT
from vllm_endpoint.infra.plan.deployment import DeploymentPlan
from vllm_endpoint.infra.render.ecs import STOP_TIMEOUT_MAX_S, EcsTask
from vllm_endpoint.infra.render.host_scripts import fill_template, read_host_file

ECS_HOST_FILE: Final = "ecs-host.sh"
# Where the script installs itself, and the unit that runs it at every boot.
ECS_MOUNT_SCRIPT: Final = f"/usr/local/sbin/{PROJECT}-ecs-cache"
ECS_MOUNT_UNIT: Final = f"{PROJECT}-ecs-cache.service"
# The cache volume's block device mapping (the launch template's second volume); the root is /dev/xvda.
ECS_CACHE_DEVICE: Final = "/dev/xvdf"
# A mapping's volume is attached before the instance boots; the wait covers udev naming it late.
ECS_CACHE_WAIT_SECONDS: Final = 120
# What the ECS agent gives a container without its own stopTimeout between SIGTERM and SIGKILL (its default).
ECS_AGENT_STOP_TIMEOUT_S: Final = 30
# ECS_CLUSTER accepts letters, numbers, hyphens and underscores (CreateCluster's clusterName).
_CLUSTER_NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_SUBDIR: Final = re.compile(r"^[A-Za-z0-9._-]+$")
_OWNER: Final = re.compile(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$")
# With cacheImages: Docker's data root, a folder of the cache volume (a snapshot of the volume then holds the
# pulled images with their repository digests, which `docker save`/`load` would lose).
DOCKER_DATA_SUBDIR: Final = "docker"
# With a warm pool: cloud-init's final stage runs user scripts at every boot, not once per instance.
WARM_POOL_CLOUD_CONFIG: Final = "#cloud-config\ncloud_final_modules:\n- [scripts-user, always]\n"
_BOUNDARY: Final = "==vllm-endpoint-user-data=="


@dataclass(frozen=True)
class EcsHostSettings:
    cluster: str
    cache_mount_point: str
    cache_subdirs: tuple[str, ...]  # folders directly below the mount point that the task bind-mounts
    cache_owner: str  # user[:group] of the task's containers (numeric in the product: 1000:1000)
    stop_timeout_s: int = ECS_AGENT_STOP_TIMEOUT_S
    cache_device: str = ECS_CACHE_DEVICE
    # The group keeps a warm pool: the agent waits until the instance is in service (ECS_WARM_POOLS_CHECK), and
    # the script runs at every boot (an instance is stopped into the pool without waiting for it to finish).
    warm_pool: bool = False
    # Docker's data root on the cache volume (cacheImages), or None: Docker keeps the AMI's (the root disk).
    docker_data_root: str | None = None


def cache_subdirs(mount_point: str, host_paths: Sequence[str]) -> tuple[str, ...]:
    """The first folder below `mount_point` of each task volume's host path (sorted, each once); a path outside
    the mount point is refused: it would land on the root disk."""
    mount = PurePosixPath(mount_point)
    found = set()
    for path in host_paths:
        pure = PurePosixPath(path)
        if pure == mount or mount not in pure.parents:
            raise ValueError(f"task volume {path} is not below the cache volume's mount point {mount_point}")
        found.add(pure.relative_to(mount).parts[0])
    return tuple(sorted(found))


def ecs_host_settings(plan: DeploymentPlan, task: EcsTask, cluster: str, warm_pool: bool = False,
                      cache_images: bool = False) -> EcsHostSettings:
    """What the instance's boot script needs from the task: the folders it bind-mounts below the cache mount,
    their owner (the vLLM container's user), and the agent's default stop timeout (the longest container's);
    `warm_pool`: the group keeps one; `cache_images`: Docker's image store goes on the cache volume."""
    mount = plan.host_cache_dir or HOST_CACHE_MOUNT
    subdirs = cache_subdirs(mount, [v["host"]["sourcePath"] for v in task.volumes])
    stops = [int(d["stopTimeout"]) for d in task.container_definitions if "stopTimeout" in d]
    stop = min(STOP_TIMEOUT_MAX_S, max([ECS_AGENT_STOP_TIMEOUT_S, *stops]))
    docker_root = str(PurePosixPath(mount) / DOCKER_DATA_SUBDIR) if cache_images else None
    return EcsHostSettings(cluster, mount, subdirs, plan.vllm.user or "root", stop, warm_pool=warm_pool,
                           docker_data_root=docker_root)


def _check_docker_data_root(settings: EcsHostSettings) -> None:
    """Docker's data root: a folder directly below the mount point that no task bind-mounts (the containers
    would see Docker's own files)."""
    if settings.docker_data_root is None:
        return
    root = PurePosixPath(settings.docker_data_root)
    if root.parent != PurePosixPath(settings.cache_mount_point) or root.name in settings.cache_subdirs:
        raise ValueError(f"Docker's data root {settings.docker_data_root} must be a folder directly below "
                         f"{settings.cache_mount_point} that no task mounts ({list(settings.cache_subdirs)})")


def render_ecs_host_script(settings: EcsHostSettings) -> str:
    if not _CLUSTER_NAME.match(settings.cluster):
        raise ValueError(f"{settings.cluster!r} is not an ECS cluster name")
    if not settings.cache_mount_point.startswith("/") or settings.cache_mount_point.rstrip("/") == "":
        raise ValueError(f"{settings.cache_mount_point!r}: the mount point must be an absolute path below /")
    bad = [s for s in settings.cache_subdirs if not _SUBDIR.match(s) or s in (".", "..")]
    if bad or not settings.cache_subdirs:
        raise ValueError(f"cache subfolders {list(settings.cache_subdirs)}: give folder names (no / or ..)")
    if not _OWNER.match(settings.cache_owner):
        raise ValueError(f"{settings.cache_owner!r} is not a user[:group]")
    if not 0 < settings.stop_timeout_s <= 3600:
        raise ValueError(f"stop timeout {settings.stop_timeout_s} s is outside 1-3600")
    _check_docker_data_root(settings)
    return fill_template(read_host_file(ECS_HOST_FILE), {
        "CLUSTER": shlex.quote(settings.cluster),
        "CACHE_DEVICE": shlex.quote(settings.cache_device),
        "CACHE_MOUNT_POINT": shlex.quote(settings.cache_mount_point.rstrip("/")),
        "CACHE_SUBDIRS": " ".join(shlex.quote(s) for s in settings.cache_subdirs),
        "CACHE_OWNER": shlex.quote(settings.cache_owner),
        "CACHE_WAIT_SECONDS": str(ECS_CACHE_WAIT_SECONDS),
        "STOP_TIMEOUT": str(settings.stop_timeout_s),
        "MOUNT_SCRIPT": shlex.quote(ECS_MOUNT_SCRIPT),
        "MOUNT_UNIT": shlex.quote(ECS_MOUNT_UNIT),
        "WARM_POOL": "true" if settings.warm_pool else "false",
        "DOCKER_DATA_ROOT": shlex.quote(settings.docker_data_root or ""),
    })


def ecs_host_user_data(settings: EcsHostSettings) -> str:
    """The user data, base64-encoded as a launch template's `user_data` takes it: the script (cloud-init runs a
    user data that starts with #! once per instance), or with a warm pool the script in a MIME multi-part
    whose cloud-config part makes cloud-init run it at every boot (warm_pool_user_data)."""
    script = render_ecs_host_script(settings)
    return base64.b64encode((warm_pool_user_data(script) if settings.warm_pool else script).encode()).decode()


def warm_pool_user_data(script: str) -> str:
    """EC2 Auto Scaling stops an instance launched into a warm pool as soon as it runs, without waiting for its
    user data (Amazon EC2 Auto Scaling User Guide, "Use lifecycle hooks with a warm pool": it "can interrupt a
    script that is still running"), and cloud-init runs user data once per instance. Of the guide's remedies
    this takes "run user data at every boot" (its warm pool prerequisites: the `scripts-user` module with
    frequency `always`), which needs no lifecycle hook and no API call from the instance: the script is
    idempotent, and at the boot that takes the instance out of the pool it runs whole before the agent starts
    (ecs.service is ordered after cloud-final.service, where user scripts run)."""
    parts = [("text/cloud-config", WARM_POOL_CLOUD_CONFIG), ("text/x-shellscript", script)]
    lines = ["MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{_BOUNDARY}"', ""]
    for content_type, body in parts:
        lines += [f"--{_BOUNDARY}", f'Content-Type: {content_type}; charset="us-ascii"', "MIME-Version: 1.0",
                  "Content-Transfer-Encoding: 7bit", "", body.rstrip("\n"), ""]
    return "\n".join([*lines, f"--{_BOUNDARY}--", ""])
