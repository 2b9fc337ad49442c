"""Stand-in executables for the scripts' tests (scripts/wake.sh, scripts/snapshot-cache.sh): small bash programs
put on a PATH of their own in place of the real `pulumi` and `aws`."""

from __future__ import annotations

import stat
from collections.abc import Mapping
from pathlib import Path


def install_stand_ins(tmp_path: Path, programs: Mapping[str, str]) -> Path:
    """Writes each program (name -> script text) into tmp_path/bin, executable by the owner; returns the folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in programs.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    return bin_dir
