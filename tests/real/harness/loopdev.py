"""Loop devices standing in for EBS volumes, attached and detached by the tests themselves."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .common import BUILD_DIR, run

# Every backing file lives here, so leftovers of a crashed run are recognisable by path alone.
LOOP_DIR = BUILD_DIR / "loop"


def _mounts_of(device: str) -> list[str]:
    out = run(["findmnt", "-rn", "-o", "TARGET", "-S", device], check=False).stdout
    # Deepest first, so nested mounts come off before their parents.
    return sorted((line for line in out.splitlines() if line), key=len, reverse=True)


def unmount_all(device: str) -> None:
    for target in _mounts_of(device):
        # findmnt escapes spaces etc. as \x20; our mount points never contain them.
        run(["umount", target], check=False)
    leftover = _mounts_of(device)
    if leftover:
        for target in leftover:
            run(["umount", "-l", target], check=False)


def detach(device: str) -> None:
    unmount_all(device)
    run(["losetup", "-d", device], check=False)


def cleanup_leftovers() -> None:
    """Detach loop devices whose backing file is one of ours (left by a run that crashed)."""
    out = run(["losetup", "-l", "-n", "--raw", "-O", "NAME,BACK-FILE"], check=False).stdout
    prefix = str(LOOP_DIR) + "/"
    for line in out.splitlines():
        name, _, back = line.partition(" ")
        # A deleted backing file shows as "<path> (deleted)".
        if back.startswith(prefix):
            detach(name)
    if LOOP_DIR.exists():
        for f in LOOP_DIR.glob("*.img"):
            f.unlink(missing_ok=True)


@contextlib.contextmanager
def loop_device(size_mib: int = 64) -> Iterator[str]:
    """A fresh, all-zero block device (like a new EBS volume); detached and deleted afterwards."""
    LOOP_DIR.mkdir(parents=True, exist_ok=True)
    backing = LOOP_DIR / f"vol-{os.getpid()}-{os.urandom(4).hex()}.img"
    with backing.open("wb") as fh:
        fh.truncate(size_mib * 1024 * 1024)
    device = ""
    try:
        device = run(["losetup", "--find", "--show", str(backing)]).stdout.strip()
        yield device
    finally:
        if device:
            detach(device)
        backing.unlink(missing_ok=True)


def snapshot(device: str) -> Path:
    """A block-level copy of `device` in a file, as an EBS snapshot holds a volume's blocks (sparse: unwritten
    blocks stay holes). Take it with the filesystem frozen or unmounted: a snapshot is only as consistent as the
    filesystem was. `restored` attaches it (and deletes it afterwards)."""
    LOOP_DIR.mkdir(parents=True, exist_ok=True)
    backing = LOOP_DIR / f"snap-{os.getpid()}-{os.urandom(4).hex()}.img"
    run(["dd", f"if={device}", f"of={backing}", "bs=1M", "conv=sparse", "status=none"], timeout=1800)
    return backing


@contextlib.contextmanager
def restored(snapshot_file: Path) -> Iterator[str]:
    """A device holding the snapshot's blocks, as a volume created from a snapshot; detached and the file
    deleted afterwards."""
    device = ""
    try:
        device = run(["losetup", "--find", "--show", str(snapshot_file)]).stdout.strip()
        yield device
    finally:
        if device:
            detach(device)
        snapshot_file.unlink(missing_ok=True)


@contextlib.contextmanager
def frozen(mount_point: str) -> Iterator[None]:
    """The filesystem at `mount_point` flushed and frozen (fsfreeze), as for a consistent snapshot of a volume in
    use; thawed afterwards."""
    run(["fsfreeze", "--freeze", mount_point])
    try:
        yield
    finally:
        run(["fsfreeze", "--unfreeze", mount_point])
