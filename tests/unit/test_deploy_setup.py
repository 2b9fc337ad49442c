"""`scripts/deploy.sh` sets up the policy pack's own environment, and the program does not depend on pulumi-policy.

`scripts/setup.sh deploy` runs here for real, in a copy of the checkout's files it reads, with a stand-in
`python3` on the PATH whose venvs hold a pip that only records its arguments: nothing is downloaded.
"""

from __future__ import annotations

import ast
import os
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1].parent

# A `python3` whose `-m venv DIR` makes DIR/bin/python and a DIR/bin/pip that logs "DIR/bin/pip ARGS".
FAKE_PYTHON3 = """#!/usr/bin/env bash
set -eu
echo "python3 $*" >> "$SETUP_LOG"
[ "$1 $2" = "-m venv" ] || exit 3
mkdir -p "$3/bin"
printf '#!/bin/sh\\nexit 0\\n' > "$3/bin/python"
printf '#!/bin/sh\\necho "%s/bin/pip $*" >> "$SETUP_LOG"\\n' "$3" > "$3/bin/pip"
chmod +x "$3/bin/python" "$3/bin/pip"
"""


def _checkout_copy(tmp_path: Path) -> Path:
    tree = tmp_path / "checkout"
    for name in ("scripts/setup.sh", "requirements.txt", "policy/requirements.txt", "infra/catalog/names.py"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tree / name)
    return tree


def _run_setup_deploy(tree: Path, bin_dir: Path, log: Path) -> list[str]:
    before = log.read_text().splitlines() if log.exists() else []
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SETUP_LOG": str(log)}
    subprocess.run(["bash", str(tree / "scripts" / "setup.sh"), "deploy"], env=env, check=True,
                   capture_output=True, text=True, timeout=60)
    return log.read_text().splitlines()[len(before):]


def test_setup_deploy_fills_the_policy_packs_venv_from_its_own_requirements_and_only_checks_the_second_time(
        tmp_path: Path) -> None:
    tree = _checkout_copy(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(FAKE_PYTHON3)
    (bin_dir / "python3").chmod(stat.S_IRWXU)
    log = tmp_path / "setup.log"

    first = _run_setup_deploy(tree, bin_dir, log)
    assert first == [
        "python3 -m venv .venv",
        ".venv/bin/pip install -q --disable-pip-version-check -r requirements.txt",
        "python3 -m venv policy/venv",
        "policy/venv/bin/pip install -q --disable-pip-version-check -r policy/requirements.txt",
    ]
    # Idempotent: the venvs exist, so a second run makes none and pip only confirms the pins.
    second = _run_setup_deploy(tree, bin_dir, log)
    assert second == [line for line in first if not line.startswith("python3 ")]


def test_the_venv_setup_fills_is_the_one_the_policy_pack_runs_from() -> None:
    runtime = yaml.safe_load((ROOT / "policy" / "PulumiPolicy.yaml").read_text())["runtime"]
    assert runtime["name"] == "python"
    # Relative to the pack's folder: policy/venv, what setup.sh creates.
    assert f"policy/{runtime['options']['virtualenv']}/bin/pip install" in (ROOT / "scripts" / "setup.sh").read_text()
    deploy = (ROOT / "scripts" / "deploy.sh").read_text()
    assert "./scripts/setup.sh deploy" in deploy and "--policy-pack policy" in deploy


def _pins(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return {line.split("==")[0].lower(): line for line in lines if "==" in line and not line.startswith("#")}


def test_pulumi_policy_is_a_dependency_of_the_pack_and_the_tests_only() -> None:
    assert "pulumi-policy" not in _pins(ROOT / "requirements.txt")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith("pulumi-policy")]
    # The tests run the pack's own code with the very release the pack pins.
    pack = _pins(ROOT / "policy" / "requirements.txt")["pulumi-policy"]
    assert _pins(ROOT / "requirements-dev.txt")["pulumi-policy"] == pack
    # The pack's SDK must match the program's: both talk to the same CLI.
    assert _pins(ROOT / "policy" / "requirements.txt")["pulumi"] == _pins(ROOT / "requirements.txt")["pulumi"]


def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


def test_the_program_imports_nothing_from_pulumi_policy() -> None:
    sources = [ROOT / "__main__.py", *(ROOT / "infra").rglob("*.py"), *(ROOT / "components").rglob("*.py"),
               *(p for p in (ROOT / "vllm_endpoint").glob("*.py"))]
    assert len(sources) > 20
    assert [str(p) for p in sources if "pulumi_policy" in _imported_modules(p)] == []
    # The check sees imports: the pack's own entry point is one.
    assert "pulumi_policy" in _imported_modules(ROOT / "policy" / "__main__.py")


# A `pulumi` that is not logged in (`whoami` fails) and logs every other command with the backend settings
# it was given.
FAKE_PULUMI = """#!/usr/bin/env bash
[ "$1" = whoami ] && { [ -n "${LOGGED_IN:-}" ] && exit 0; echo "error: not logged in" >&2; exit 255; }
echo "pulumi $* | backend=${PULUMI_BACKEND_URL:-} passphrase_file=${PULUMI_CONFIG_PASSPHRASE_FILE:-}" >> "$SETUP_LOG"
"""


def _run_deploy(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    tree = _checkout_copy(tmp_path)
    shutil.copy2(ROOT / "scripts" / "deploy.sh", tree / "scripts" / "deploy.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("python3", FAKE_PYTHON3), ("pulumi", FAKE_PULUMI)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    log = tmp_path / "setup.log"
    log.unlink(missing_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    proc = subprocess.run(["bash", str(tree / "scripts" / "deploy.sh"), "local"], capture_output=True, text=True,
                          env={**base, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SETUP_LOG": str(log),
                               "HOME": str(tmp_path / "home"), **env}, timeout=60, check=True)
    return proc, [line for line in log.read_text().splitlines() if line.startswith("pulumi ")]


def test_without_a_login_the_first_deploy_keeps_its_state_in_local_files_and_says_where(tmp_path: Path) -> None:
    proc, commands = _run_deploy(tmp_path)
    state = tmp_path / "home" / ".vllm-endpoint" / "pulumi-state"
    passphrase = state / "passphrase"
    assert f"[deploy] not logged in to Pulumi: the stack's state is kept in {state}" in proc.stdout
    assert f"encrypted with the passphrase in {passphrase}" in proc.stdout
    assert commands[0] == f"pulumi stack select --create local | backend=file://{state} passphrase_file={passphrase}"
    assert commands[1].startswith("pulumi up --stack local --policy-pack policy")
    assert stat.S_IMODE(passphrase.stat().st_mode) == 0o600 and len(passphrase.read_text().strip()) >= 40
    # The next deploy reuses the passphrase the stack's secrets were encrypted with.
    first = passphrase.read_text()
    _run_deploy(tmp_path)
    assert passphrase.read_text() == first


def test_a_logged_in_user_or_a_chosen_backend_is_left_alone(tmp_path: Path) -> None:
    proc, commands = _run_deploy(tmp_path, LOGGED_IN="1")
    assert "not logged in" not in proc.stdout
    assert commands[0] == "pulumi stack select --create local | backend= passphrase_file="
    proc, commands = _run_deploy(tmp_path, PULUMI_BACKEND_URL="s3://team-state")
    assert commands[0] == "pulumi stack select --create local | backend=s3://team-state passphrase_file="
