"""A fleet instance's cache volume on real block devices (loop devices): infra/host/ecs-host.sh in its `mount`
mode, rendered for the shipped fleet stack's task exactly as the launch template's user data carries it, with
only the device and the mount point pointed at the test's own.

- a new (blank) volume is formatted, mounted, and gets the folders the task bind-mounts, owned by the task's
  user; a second run (the unit at a reboot) keeps it as it is;
- a volume created from a snapshot of a warm cache (a block-level copy of a used volume, taken frozen, as
  scripts/snapshot-cache.sh's snapshot is of a volume in use) is mounted as it is: the cache's files, their
  owners and the filesystem's identity kept, nothing formatted;
- a device that holds something else, or data without a filesystem, is refused and left untouched.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real.harness import loopdev
from tests.real.harness.common import prerequisite_problem, run
from tests.real.harness.fleet import fleet_host_settings
from vllm_endpoint.infra.render.ecs_host import EcsHostSettings, render_ecs_host_script

pytestmark = pytest.mark.real

TOOLS = ("losetup", "blkid", "mkfs.ext4", "mount", "umount", "mountpoint", "findmnt", "fsfreeze", "dd", "cmp")
VOLUME_MIB = 64
# Stands in for a model's files in the warm cache (a random, incompressible body).
MODEL_BYTES = 4 * 1024 * 1024


@pytest.fixture(scope="module", autouse=True)
def _prerequisites() -> Iterator[None]:
    problem = prerequisite_problem(TOOLS)
    if problem:
        pytest.skip(problem)
    loopdev.cleanup_leftovers()
    yield
    loopdev.cleanup_leftovers()


@dataclasses.dataclass
class Instance:
    """One fleet instance's view of its cache volume: the device, and the script its unit runs at boot."""

    settings: EcsHostSettings
    script: Path

    @classmethod
    def on(cls, device: str, root: Path) -> Instance:
        settings = dataclasses.replace(fleet_host_settings(), cache_device=device,
                                       cache_mount_point=str(root / "cache"))
        root.mkdir(parents=True)
        script = root / "ecs-host.sh"
        script.write_text(render_ecs_host_script(settings))
        return cls(settings, script)

    @property
    def mount_point(self) -> Path:
        return Path(self.settings.cache_mount_point)

    def boot(self) -> subprocess.CompletedProcess[str]:
        return run(["bash", str(self.script), "mount"], check=False, timeout=120)

    def mounted(self) -> str | None:
        found = run(["findmnt", "-n", "-o", "SOURCE", "--mountpoint", str(self.mount_point)], check=False)
        return found.stdout.strip() or None

    def owner(self) -> tuple[int, int]:
        user, _, group = self.settings.cache_owner.partition(":")
        return int(user), int(group or user)


@pytest.fixture
def new_volume(tmp_path: Path) -> Iterator[str]:
    with loopdev.loop_device(size_mib=VOLUME_MIB) as device:
        yield device


def uuid_of(device: str) -> str:
    return run(["blkid", "-p", "-o", "value", "-s", "UUID", device]).stdout.strip()


def test_a_new_volume_is_formatted_and_gets_the_task_folders_owned_by_the_task_user(
        new_volume: str, tmp_path: Path) -> None:
    instance = Instance.on(new_volume, tmp_path / "first")
    assert instance.settings.cache_subdirs, "the task bind-mounts folders of the cache volume"
    booted = instance.boot()
    assert booted.returncode == 0, booted.stderr
    assert "is blank: creating an ext4 filesystem" in booted.stdout
    assert instance.mounted() == new_volume
    for sub in instance.settings.cache_subdirs:
        info = (instance.mount_point / sub).stat()
        assert (info.st_uid, info.st_gid) == instance.owner(), sub
    formatted = uuid_of(new_volume)
    again = instance.boot()  # the unit at the next boot
    assert again.returncode == 0, again.stderr
    assert "already holds ext4: keeping it" in again.stdout
    assert uuid_of(new_volume) == formatted


def test_a_volume_restored_from_a_warm_cache_snapshot_is_mounted_as_it_is(new_volume: str, tmp_path: Path) -> None:
    warm = Instance.on(new_volume, tmp_path / "warm")
    assert warm.boot().returncode == 0
    first_sub = warm.mount_point / warm.settings.cache_subdirs[0]
    weights = first_sub / "models--org--tiny" / "model.safetensors"
    weights.parent.mkdir(parents=True)
    body = os.urandom(MODEL_BYTES)
    weights.write_bytes(body)
    os.chown(weights, *warm.owner())
    # The snapshot is of the volume in use (the replica keeps serving): consistent because frozen while taken.
    with loopdev.frozen(str(warm.mount_point)):
        snapshot = loopdev.snapshot(new_volume)
    with loopdev.restored(snapshot) as restored:
        new = Instance.on(restored, tmp_path / "new-instance")
        booted = new.boot()
        assert booted.returncode == 0, booted.stderr
        assert "already holds ext4: keeping it" in booted.stdout
        assert new.mounted() == restored
        assert uuid_of(restored) == uuid_of(new_volume)
        copied = new.mount_point / weights.relative_to(warm.mount_point)
        assert copied.read_bytes() == body
        assert (copied.stat().st_uid, copied.stat().st_gid) == warm.owner()


def test_a_device_with_something_else_on_it_is_refused_and_left_untouched(new_volume: str, tmp_path: Path) -> None:
    instance = Instance.on(new_volume, tmp_path / "other")
    data = os.urandom(64 * 1024)  # no filesystem signature, not blank
    with open(new_volume, "r+b") as device:
        device.write(data)
    refused = instance.boot()
    assert refused.returncode != 0
    assert "has no filesystem signature but is not blank; refusing to format it" in refused.stderr
    assert instance.mounted() is None
    with open(new_volume, "rb") as device:
        assert device.read(len(data)) == data
    run(["mkswap", new_volume])  # a signature of another kind
    refused = instance.boot()
    assert refused.returncode != 0
    assert "holds 'swap', expected ext4 or nothing" in refused.stderr
    assert run(["blkid", "-p", "-o", "value", "-s", "TYPE", new_volume]).stdout.strip() == "swap"


@pytest.mark.parametrize("warm_pool", [False, True])
def test_the_agents_settings_are_written_again_not_appended_and_other_lines_are_kept(
        tmp_path: Path, warm_pool: bool) -> None:
    """With a warm pool the script runs at every boot (it may have been cut short by the stop into the pool):
    each run leaves exactly its own settings in the agent's file, whatever an earlier run wrote, and the
    lines others wrote there."""
    settings = dataclasses.replace(fleet_host_settings(), warm_pool=warm_pool)
    script = tmp_path / "ecs-host.sh"
    script.write_text(render_ecs_host_script(settings))
    config = tmp_path / "etc-ecs" / "ecs.config"
    env = {**os.environ, "ECS_CONFIG_FILE": str(config)}
    config.parent.mkdir()
    config.write_text("ECS_LOGLEVEL=debug\nECS_CLUSTER=a-cluster-of-an-earlier-deploy\n")
    runs = [run(["bash", str(script), "agent-config"], env=env, check=False, timeout=30) for _ in range(3)]
    assert [r.returncode for r in runs] == [0, 0, 0], [r.stderr for r in runs]
    lines = config.read_text().splitlines()
    assert lines[0] == "ECS_LOGLEVEL=debug"  # not this script's
    assert lines.count(f"ECS_CLUSTER={settings.cluster}") == 1 and len([x for x in lines if "CLUSTER" in x]) == 1
    assert lines.count(f"ECS_CONTAINER_STOP_TIMEOUT={settings.stop_timeout_s}s") == 1
    assert ("ECS_WARM_POOLS_CHECK=true" in lines) is warm_pool
    assert len(lines) == len(set(lines)) and oct(config.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in config.parent.iterdir()) == ["ecs.config"]  # no temporary file left
