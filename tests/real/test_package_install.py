"""The distribution as another program gets it: `pip install <checkout>` into a fresh venv, then, from a
folder outside the checkout, `from vllm_endpoint import VllmEndpoint, VllmEndpointArgs` and a program
with two endpoints built from keyword arguments, under Pulumi mocks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.real.harness.common import BUILD_DIR, REPO_ROOT, record_timing, run

PROGRAM = Path(__file__).resolve().parent / "package" / "two_endpoints_program.py"

pytestmark = pytest.mark.real


def test_the_installed_package_builds_two_endpoints_from_another_folder(tmp_path: Path) -> None:
    venv = BUILD_DIR / "package-install-venv"
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    had_egg_info = (REPO_ROOT / "vllm_endpoint.egg-info").exists()
    started = time.monotonic()
    run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(REPO_ROOT)], timeout=900)
    record_timing("package_install", time.monotonic() - started)
    # setuptools leaves its metadata folder in the source tree it built from; the checkout stays as it was.
    egg_info = REPO_ROOT / "vllm_endpoint.egg-info"
    if not had_egg_info:
        shutil.rmtree(egg_info, ignore_errors=True)
    elsewhere = tmp_path / "app"
    elsewhere.mkdir()
    shutil.copy(PROGRAM, elsewhere / "main.py")
    # HF_HUB_OFFLINE: the plan's Hub read would leave the machine; offline it uses the shipped table.
    result = subprocess.run([str(python), "main.py"], cwd=elsewhere, capture_output=True, text=True,
                            timeout=300, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # The package came from the venv, not from the checkout next door.
    assert seen["package_file"].startswith(str(venv)), seen["package_file"]
    assert seen["generic_names"] == {"infra": False, "components": False}, "no generic top-level names installed"
    top_level = next((venv / "lib").glob("python3*/site-packages/vllm_endpoint-*.dist-info/top_level.txt"))
    assert top_level.read_text().split() == ["vllm_endpoint"]
    assert seen["containers"] == ["chat", "chat-proxy", "small", "small-proxy"]
    assert seen["ports"] == [30005, 30006]
    assert seen["aws_resources"] == 0
    # The console script the distribution declares, from the venv's bin folder.
    cli = subprocess.run([str(venv / "bin" / "vllm-endpoint"), "import-docker-run", "--stack", "x", "--",
                          "docker", "run", "--gpus", '"device=1"', "-p", "30005:8000", "vllm/vllm-openai:v0.32.0",
                          "--model", "Qwen/Qwen2.5-1.5B-Instruct"],
                         cwd=elsewhere, capture_output=True, text=True, timeout=120, check=False)
    assert cli.returncode == 0, cli.stderr
    assert "vllm-endpoint:apiPort:" in cli.stdout and "vllm-endpoint:model: Qwen/Qwen2.5-1.5B-Instruct" in cli.stdout
    shutil.rmtree(venv, ignore_errors=True)
