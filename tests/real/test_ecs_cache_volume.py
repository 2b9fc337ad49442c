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

import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real.harness import loopdev
from tests.real.harness.common import prerequisite_problem, run, wait_for
from tests.real.harness.fleet import fleet_host_settings
from tests.real.harness.testhost import containerd_config
from vllm_endpoint.infra.render.ecs_host import DOCKER_DATA_SUBDIR, EcsHostSettings, render_ecs_host_script

pytestmark = pytest.mark.real

TOOLS = ("losetup", "blkid", "mkfs.ext4", "mount", "umount", "mountpoint", "findmnt", "fsfreeze", "dd", "cmp",
         "containerd", "dockerd", "docker", "tar", "python3")
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
    def on(cls, device: str, root: Path, docker_data_root: str | None = None) -> Instance:
        settings = dataclasses.replace(fleet_host_settings(), cache_device=device,
                                       cache_mount_point=str(root / "cache"), docker_data_root=docker_data_root)
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


# --- cacheImages: Docker's image store on the cache volume ---------------------------------------------------

TINY_IMAGE = "vllm-endpoint-test/busybox:cache-images"
# What the AMI may already have in Docker's daemon.json (the script must keep it).
AMI_DAEMON_JSON = {"runtimes": {"nvidia": {"path": "/etc/docker-runtimes.d/nvidia"}}, "log-driver": "json-file"}


@dataclasses.dataclass
class LocalDocker:
    """A containerd and a dockerd of the test's own (sockets and state in `state`, not the machine's), started
    from a daemon.json as the instance's Docker reads its /etc/docker/daemon.json; no network."""

    state: Path

    @property
    def socket(self) -> Path:
        return self.state / "docker.sock"

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["docker", "-H", f"unix://{self.socket}", *args], check=check, timeout=120,
                   env={**os.environ, "DOCKER_CONFIG": str(self.state / "client")})

    @contextlib.contextmanager
    def running(self, daemon_json: Path) -> Iterator[LocalDocker]:
        (self.state / "containerd").mkdir(parents=True, exist_ok=True)
        ctr_socket = self.state / "containerd" / "containerd.sock"
        (self.state / "containerd.toml").write_text(containerd_config(self.state / "containerd-root",
                                                                      self.state / "containerd"))
        logs = (self.state / "containerd.log").open("ab"), (self.state / "dockerd.log").open("ab")
        daemons = [subprocess.Popen(["containerd", "--config", str(self.state / "containerd.toml")],
                                    stdout=logs[0], stderr=logs[0], start_new_session=True)]
        try:
            wait_for(ctr_socket.exists, timeout=30, what="the test's containerd")
            daemons.append(subprocess.Popen([
                "dockerd", "--config-file", str(daemon_json), "--exec-root", str(self.state / "exec"),
                "--pidfile", str(self.state / "dockerd.pid"), "--host", f"unix://{self.socket}",
                "--containerd", str(ctr_socket), "--bridge", "none", "--iptables=false", "--ip-masq=false",
                "--storage-driver", "overlay2", "--log-level", "warn"],
                stdout=logs[1], stderr=logs[1], start_new_session=True))
            wait_for(lambda: self.docker("version", check=False).returncode == 0, timeout=60,
                     what=f"the test's dockerd (log: {self.state / 'dockerd.log'})")
            yield self
        finally:
            for daemon in reversed(daemons):
                daemon.terminate()
                daemon.wait(timeout=60)
            for log in logs:
                log.close()


def tiny_image(docker: LocalDocker, workdir: Path) -> str:
    """A one-binary image (the machine's static busybox), imported into `docker`; its id."""
    rootfs = workdir / "rootfs"
    rootfs.mkdir()
    shutil.copy2("/bin/busybox", rootfs / "busybox")
    run(["sh", "-c", f"tar -C {shlex.quote(str(rootfs))} -c . | docker -H unix://{shlex.quote(str(docker.socket))} "
         f"import - {TINY_IMAGE}"], timeout=120, env={**os.environ, "DOCKER_CONFIG": str(docker.state / "client")})
    return docker.docker("image", "inspect", "--format", "{{.Id}}", TINY_IMAGE).stdout.strip()


def test_with_cache_images_dockers_store_is_on_the_volume_and_a_restored_copy_runs_its_image(
        new_volume: str, tmp_path: Path) -> None:
    """The script puts Docker's data root on the cache volume (keeping the AMI's other daemon settings); a real
    dockerd keeps its images there; a block-level copy of the volume taken while it runs (the snapshot) gives a
    new instance the same image, which runs without a pull."""
    root = tmp_path / "instance"
    mount_point = root / "cache"
    instance = Instance.on(new_volume, root, docker_data_root=str(mount_point / DOCKER_DATA_SUBDIR))
    data_root = Path(str(instance.settings.docker_data_root))
    booted = instance.boot()
    assert booted.returncode == 0, booted.stderr
    assert oct(data_root.stat().st_mode & 0o777) == "0o710" and data_root.parent == mount_point
    daemon_json = tmp_path / "etc-docker" / "daemon.json"
    daemon_json.parent.mkdir()
    daemon_json.write_text(json.dumps(AMI_DAEMON_JSON))
    env = {**os.environ, "DOCKER_DAEMON_JSON_FILE": str(daemon_json)}
    configured = [run(["bash", str(instance.script), "docker-config"], env=env, check=False, timeout=30)
                  for _ in range(2)]
    assert [c.returncode for c in configured] == [0, 0], [c.stderr for c in configured]
    assert json.loads(daemon_json.read_text()) == {**AMI_DAEMON_JSON, "data-root": str(data_root)}
    assert sorted(p.name for p in daemon_json.parent.iterdir()) == ["daemon.json"]  # no temporary file left
    short = Path(tempfile.mkdtemp(prefix="dk-", dir="/tmp"))  # unix sockets take at most 107 bytes of path
    try:
        with LocalDocker(short / "first").running(daemon_json) as docker:
            assert docker.docker("info", "--format", "{{.DockerRootDir}}").stdout.strip() == str(data_root)
            image_id = tiny_image(docker, tmp_path)
            ran = docker.docker("run", "--rm", "--network", "none", TINY_IMAGE, "/busybox", "echo", "served")
            assert ran.stdout.strip() == "served"
            assert (data_root / "overlay2").is_dir() and (data_root / "image").is_dir()
            # The snapshot: of the volume in use, with Docker running, consistent because frozen while taken.
            with loopdev.frozen(str(mount_point)):
                snapshot = loopdev.snapshot(new_volume)
        run(["umount", str(mount_point)])
        with loopdev.restored(snapshot) as restored:
            # The new instance: the same mount point and daemon.json, its volume made from the snapshot.
            new = dataclasses.replace(instance, settings=dataclasses.replace(instance.settings, cache_device=restored))
            new.script.write_text(render_ecs_host_script(new.settings))
            booted = new.boot()
            assert booted.returncode == 0, booted.stderr
            assert "already holds ext4: keeping it" in booted.stdout
            try:
                with LocalDocker(short / "second").running(daemon_json) as docker:
                    inspected = docker.docker("image", "inspect", "--format", "{{.Id}}", TINY_IMAGE)
                    assert inspected.stdout.strip() == image_id
                    ran = docker.docker("run", "--rm", "--pull", "never", "--network", "none", TINY_IMAGE,
                                        "/busybox", "echo", "served again")
                    assert ran.stdout.strip() == "served again"
            finally:
                run(["umount", str(mount_point)], check=False)
    finally:
        run(["umount", str(mount_point)], check=False)
        shutil.rmtree(short, ignore_errors=True)
