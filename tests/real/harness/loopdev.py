"""Loop devices standing in for EBS volumes, attached and detached by the tests themselves."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

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
