"""The `vllm-endpoint` command as a user runs it: `python -m vllm_endpoint import-docker-run -- docker run ...`
in a subprocess, its standard output a stack file, a bad command exit 2 with the reason."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from tests.unit.infra.settings.test_docker_run_import import KEY, ORIGINAL, original_argv
from vllm_endpoint.cli import main
from vllm_endpoint.infra.settings.docker_run_import import import_docker_run, render_stack_file

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vllm_endpoint", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)


def test_import_prints_the_stack_file_for_the_readme_command() -> None:
    done = run("import-docker-run", "--stack", "shared-gpu", "--", *original_argv())
    assert done.returncode == 0, done.stderr
    assert done.stdout == render_stack_file(import_docker_run(original_argv(), "existing-host"), "shared-gpu")
    assert KEY not in done.stdout + done.stderr
    assert yaml.safe_load(done.stdout)["config"]["vllm-endpoint:apiPort"] == "30005"


def test_the_command_may_be_one_string_or_standard_input() -> None:
    as_words = run("import-docker-run", "--target", "aws", "--", *original_argv()).stdout
    assert run("import-docker-run", "--target", "aws", ORIGINAL.replace("<key>", KEY)).stdout == as_words
    assert run("import-docker-run", "--target", "aws", stdin=ORIGINAL.replace("<key>", KEY)).stdout == as_words
    assert "vllm-endpoint:target: aws" in as_words


def test_a_bad_command_exits_2_with_the_reason() -> None:
    done = run("import-docker-run", "--", "docker", "run", "-p")
    assert done.returncode == 2 and done.stdout == ""
    assert "import-docker-run: error: -p: needs a value, but the command ends there" in done.stderr
    done = run("import-docker-run", "--", "podman", "run", "vllm/vllm-openai:v0.32.0")
    assert done.returncode == 2 and "expected a command starting with `docker run`" in done.stderr
    done = run("import-docker-run", "--target", "gcp", "--", "docker", "run", "x")
    assert done.returncode == 2 and "invalid choice: 'gcp'" in done.stderr


def test_it_is_the_packages_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"vllm-endpoint": "vllm_endpoint.cli:main"}
    assert main(["import-docker-run", "--", "docker", "run", "vllm/vllm-openai:v0.32.0", "--model", "a/b"]) == 0
