"""What target=local needs to know about the deploying machine: its user, its home and its NVIDIA GPUs.

`probe_local_machine` is the only I/O (it runs `nvidia-smi` when there is one); build_plan takes the
probe as a parameter, so the plan of a given machine is computed, and tested, without that machine.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

NVIDIA_SMI_QUERY = ("--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader,nounits")
NVIDIA_SMI_TIMEOUT_S = 20


@dataclass(frozen=True)
class LocalGpu:
    name: str  # as the driver reports it, e.g. "NVIDIA L4"
    memory_gib: float
    compute_capability: str  # "8.9"


@dataclass(frozen=True)
class LocalMachine:
    home: str  # absolute; `~/` in hostCacheDir means this
    user: str  # "uid:gid" of the deploying user: the containers run as it, so it owns the caches
    gpus: tuple[LocalGpu, ...]
    gpu_probe_note: str = ""  # why no GPU was found, when the probe could not ask
    cpus: int = 0  # logical CPUs (0: unknown); apiServerCount's default on a GPU follows them


def parse_nvidia_smi(text: str) -> tuple[LocalGpu, ...]:
    """`nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv,noheader,nounits` (MiB)."""
    gpus = []
    for row in csv.reader(line for line in text.splitlines() if line.strip()):
        if len(row) != 3:
            raise ValueError(f"unexpected nvidia-smi line: {','.join(row)!r}")
        name, memory_mib, capability = (cell.strip() for cell in row)
        gpus.append(LocalGpu(name, round(float(memory_mib) / 1024, 2), capability))
    return tuple(gpus)


def probe_local_machine() -> LocalMachine:
    user = f"{os.getuid()}:{os.getgid()}"
    home = str(Path.home())
    cpus = os.cpu_count() or 0
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return LocalMachine(home, user, (), "no nvidia-smi on this machine", cpus=cpus)
    try:
        out = subprocess.run([smi, *NVIDIA_SMI_QUERY], capture_output=True, text=True, check=True,
                             timeout=NVIDIA_SMI_TIMEOUT_S).stdout
        return LocalMachine(home, user, parse_nvidia_smi(out), cpus=cpus)
    except (OSError, subprocess.SubprocessError, ValueError) as err:
        # A driver that does not answer means no usable GPU: say why instead of failing the plan.
        return LocalMachine(home, user, (), f"nvidia-smi failed: {err}", cpus=cpus)
