"""infra/host/prepare-cache-volume.sh against a real block device (a loop device).

The device is presented the way a Nitro instance presents an EBS volume: a by-id link named after
the volume id, in a temporary CACHE_DEVICE_DIR. fstab and the mount point are temporary too, so the
machine's own /etc/fstab is never touched.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.real.harness import loopdev
from tests.real.harness.common import REPO_ROOT, prerequisite_problem, record_timing, run
from vllm_endpoint.infra.catalog.names import CACHE_SUBDIR_MODELS, CACHE_SUBDIR_ROOT
from vllm_endpoint.infra.render.host_scripts import CACHE_SUBDIRS, env_strings
from vllm_endpoint.infra.render.userdata import HostBootSettings, boot_env_values

pytestmark = pytest.mark.real

SCRIPT = REPO_ROOT / "infra" / "host" / "prepare-cache-volume.sh"
# The folders boot.env tells the script to create, as user-data renders them.
SUBDIRS_ENV = env_strings(boot_env_values(HostBootSettings("vol-0123456789abcdef0", "ubuntu", "", "")))[
    "CACHE_SUBDIRS"]
TOOLS = ("losetup", "blkid", "mkfs.ext4", "findmnt", "mountpoint", "lsblk", "mount", "umount", "bash",
         "sfdisk", "mkswap", "dd", "cmp")


@pytest.fixture(scope="module", autouse=True)
def _prerequisites() -> Iterator[None]:
    problem = prerequisite_problem(TOOLS)
    if problem:
        pytest.skip(problem)
    loopdev.cleanup_leftovers()
    yield
    loopdev.cleanup_leftovers()


@dataclass
class Volume:
    """One simulated EBS volume plus the instance-side paths the script is pointed at."""

    volume_id: str
    device: str
    root: Path

    @property
    def device_dir(self) -> Path:
        return self.root / "by-id"

    @property
    def link(self) -> Path:
        return self.device_dir / f"nvme-Amazon_Elastic_Block_Store_{self.volume_id.replace('-', '')}"

    @property
    def mount_point(self) -> Path:
        return self.root / "mnt" / "cache"

    @property
    def fstab(self) -> Path:
        return self.root / "fstab"

    @property
    def timeline(self) -> Path:
        return self.root / "timeline"

    def attach(self) -> None:
        """What udev does when the attachment appears."""
        self.device_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.link.with_name(self.link.name + ".tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(self.device, self.device_dir))
        tmp.rename(self.link)

    def run_script(self, wait_seconds: int = 20, **extra: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CACHE_VOLUME_ID": self.volume_id,
            "CACHE_MOUNT_POINT": str(self.mount_point),
            "CACHE_SUBDIRS": SUBDIRS_ENV,
            "CACHE_WAIT_SECONDS": str(wait_seconds),
            "CACHE_DEVICE_DIR": str(self.device_dir),
            "CACHE_FSTAB": str(self.fstab),
            "DEPLOY_TIMELINE_FILE": str(self.timeline),
            **extra,
        }
        return run(["bash", str(SCRIPT)], env=env, check=False, timeout=wait_seconds + 120)

    def uuid(self) -> str:
        return run(["blkid", "-p", "-o", "value", "-s", "UUID", self.device]).stdout.strip()

    def mounted_source(self) -> str | None:
        proc = run(["findmnt", "-n", "-o", "SOURCE", "--mountpoint", str(self.mount_point)], check=False)
        return proc.stdout.strip() or None

    def fstab_entries(self) -> list[list[str]]:
        if not self.fstab.exists():
            return []
        return [line.split() for line in self.fstab.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]

    def entries_for_mount_point(self) -> list[list[str]]:
        return [e for e in self.fstab_entries() if e[1] == str(self.mount_point)]


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Volume]:
    with loopdev.loop_device(size_mib=64) as device:
        vol = Volume(volume_id="vol-" + os.urandom(9).hex()[:17], device=device, root=tmp_path)
        try:
            yield vol
        finally:
            # The loop device context unmounts too; this also covers a mount the device left behind
            # under tmp_path after being detached by a failing test.
            run(["umount", str(vol.mount_point)], check=False)


def _assert_ready(vol: Volume, proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"script failed:\n{proc.stdout}\n{proc.stderr}"
    assert vol.mounted_source() == vol.device
    entries = vol.entries_for_mount_point()
    assert len(entries) == 1, vol.fstab.read_text()
    source, _target, fstype, options, _dump, _pass = entries[0]
    assert source == f"UUID={vol.uuid()}"
    assert fstype == "ext4"
    opts = options.split(",")
    assert "nofail" in opts
    assert any(o.startswith("x-systemd.device-timeout=") for o in opts)
    assert sorted(p.name for p in vol.mount_point.iterdir() if p.name != "lost+found") == sorted(CACHE_SUBDIRS)
    for sub in CACHE_SUBDIRS:
        path = vol.mount_point / sub
        st = path.stat()
        assert stat.S_ISDIR(st.st_mode)
        assert not st.st_mode & stat.S_IWOTH, f"{path} is world-writable"
        # On the volume itself, not on the disk underneath the mount point.
        assert st.st_dev == vol.mount_point.stat().st_dev
    assert not vol.mount_point.stat().st_mode & stat.S_IWOTH


def test_first_boot_formats_mounts_and_records_fstab_once(volume: Volume) -> None:
    volume.attach()
    start = time.monotonic()
    proc = volume.run_script()
    elapsed = time.monotonic() - start
    _assert_ready(volume, proc)
    assert run(["blkid", "-p", "-o", "value", "-s", "LABEL", volume.device]).stdout.strip() == "vllm-cache"
    assert "creating an ext4 filesystem" in proc.stdout
    timeline = volume.timeline.read_text().splitlines()
    assert len(timeline) == 1
    assert re.fullmatch(r"cache_volume_mounted \d+\.\d+", timeline[0])
    assert abs(float(timeline[0].split()[1]) - time.time()) < 60
    record_timing("cache_volume_script_first_boot", elapsed, device="loop 64 MiB")


def test_second_run_keeps_filesystem_and_data(volume: Volume) -> None:
    volume.attach()
    _assert_ready(volume, volume.run_script())
    uuid = volume.uuid()
    marker = volume.mount_point / CACHE_SUBDIR_ROOT / "kept.txt"
    marker.write_text("compiled kernels")

    start = time.monotonic()
    proc = volume.run_script()
    elapsed = time.monotonic() - start
    _assert_ready(volume, proc)
    assert volume.uuid() == uuid, "the second run re-created the filesystem"
    assert marker.read_text() == "compiled kernels"
    assert "creating" not in proc.stdout
    assert len(volume.fstab_entries()) == 1
    record_timing("cache_volume_script_rerun", elapsed, device="loop 64 MiB")


def test_replacement_instance_mounts_existing_volume_with_data(volume: Volume, tmp_path: Path) -> None:
    volume.attach()
    _assert_ready(volume, volume.run_script())
    uuid = volume.uuid()
    (volume.mount_point / CACHE_SUBDIR_MODELS / "weights.bin").write_bytes(b"\x01" * 4096)
    run(["umount", str(volume.mount_point)])

    # The new instance has its own root disk: a fresh fstab, here with an unrelated entry and a stale
    # one for the same mount point, left by a volume that no longer exists.
    volume.fstab.write_text(
        "# /etc/fstab of a replacement instance\n"
        "LABEL=cloudimg-rootfs / ext4 discard,errors=remount-ro 0 1\n"
        f"UUID=00000000-1111-2222-3333-444444444444 {volume.mount_point} ext4 defaults,nofail 0 2\n"
    )
    proc = volume.run_script()
    _assert_ready(volume, proc)
    assert volume.uuid() == uuid
    assert "creating" not in proc.stdout
    assert (volume.mount_point / CACHE_SUBDIR_MODELS / "weights.bin").read_bytes() == b"\x01" * 4096
    entries = volume.fstab_entries()
    assert ["LABEL=cloudimg-rootfs", "/", "ext4", "discard,errors=remount-ro", "0", "1"] in entries
    assert not any(e[0].startswith("UUID=00000000") for e in entries)
    assert len(entries) == 2


def test_cache_owner_applies_to_the_container_subdirectories(volume: Volume) -> None:
    volume.attach()
    proc = volume.run_script(CACHE_OWNER="1234:2345")
    _assert_ready(volume, proc)
    for sub in CACHE_SUBDIRS:
        st = (volume.mount_point / sub).stat()
        assert (st.st_uid, st.st_gid) == (1234, 2345)
    # The mount point itself stays root's.
    assert volume.mount_point.stat().st_uid == 0


def test_missing_volume_fails_loudly_without_mounting_anything(volume: Volume) -> None:
    # No attach(): the link never appears.
    proc = volume.run_script(wait_seconds=2)
    assert proc.returncode != 0
    assert volume.volume_id in proc.stderr
    assert str(volume.link) in proc.stderr
    assert volume.mounted_source() is None
    assert not any((volume.mount_point / sub).exists() for sub in CACHE_SUBDIRS)
    assert volume.fstab_entries() == []
    assert not volume.timeline.exists()
    # Nothing was written to the device either.
    assert run(["blkid", "-p", volume.device], check=False).returncode == 2


def test_volume_that_appears_late_is_waited_for(volume: Volume) -> None:
    timer = threading.Timer(2.0, volume.attach)
    timer.start()
    try:
        start = time.monotonic()
        proc = volume.run_script(wait_seconds=30)
        elapsed = time.monotonic() - start
    finally:
        timer.cancel()
        timer.join()
    _assert_ready(volume, proc)
    assert elapsed >= 2.0
    assert "waiting for volume" in proc.stdout


@pytest.mark.parametrize(
    ("label", "prepare"),
    [
        pytest.param("partition table", lambda dev: run(["sfdisk", "--quiet", dev], input="label: gpt\n,\n"),
                     id="partition-table"),
        pytest.param("swap signature", lambda dev: run(["mkswap", dev]), id="swap"),
        pytest.param("unidentified data", lambda dev: run(
            ["dd", "if=/dev/urandom", f"of={dev}", "bs=4096", "count=16", "conv=notrunc,fsync"]),
            id="random-data"),
    ],
)
def test_refuses_device_holding_something_else(volume: Volume, label: str, prepare: object) -> None:
    assert callable(prepare)
    prepare(volume.device)
    before = run(["blkid", "-p", "-o", "export", volume.device], check=False).stdout
    volume.attach()
    proc = volume.run_script()
    assert proc.returncode != 0, f"{label}: the script accepted it:\n{proc.stdout}"
    assert volume.volume_id in proc.stderr
    assert "refusing" in proc.stderr
    assert run(["blkid", "-p", "-o", "export", volume.device], check=False).stdout == before
    assert volume.mounted_source() is None
    assert not any((volume.mount_point / sub).exists() for sub in CACHE_SUBDIRS)


def test_refuses_to_mount_over_another_filesystem(volume: Volume) -> None:
    volume.attach()
    volume.mount_point.mkdir(parents=True)
    run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(volume.mount_point)])
    try:
        proc = volume.run_script()
        assert proc.returncode != 0
        assert "another filesystem" in proc.stderr
        assert not any((volume.mount_point / sub).exists() for sub in CACHE_SUBDIRS)
    finally:
        run(["umount", str(volume.mount_point)], check=False)


def test_a_folder_name_that_would_leave_the_volume_is_refused(volume: Volume) -> None:
    volume.attach()
    proc = volume.run_script(CACHE_SUBDIRS=f"{SUBDIRS_ENV}\n../escaped")
    assert proc.returncode != 0 and "CACHE_SUBDIRS holds '../escaped'" in proc.stderr
    assert volume.mounted_source() is None
    assert not (volume.root / "mnt" / "escaped").exists()

