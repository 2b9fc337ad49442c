"""tools/gen_docs.py: the one generator of every generated file, and its CI check, on a temporary copy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools import gen_docs

BLOCK_OPENINGS = {"README.md": "<!-- generated:settings -->\n", "Pulumi.yaml": gen_docs.PULUMI_CONFIG_OPEN + "\n"}
PATHS = [path for path, _ in gen_docs.GENERATORS]


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The generated files in a temporary root, current (whatever the state of this checkout)."""
    for path in PATHS:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(gen_docs.ROOT / path, tmp_path / path)
    gen_docs.write(tmp_path)
    return tmp_path


def edit_by_hand(root: Path, path: str) -> None:
    file = root / path
    text = file.read_text()
    opening = BLOCK_OPENINGS.get(path)
    if opening is None:
        text = text.replace("\n", "\nedited by hand\n", 1)
    else:
        text = text.replace(opening, opening + "edited by hand\n", 1)
    file.write_text(text)


def test_every_generated_file_is_current() -> None:
    assert gen_docs.problems() == []


def test_the_generated_files_include_the_docs_and_the_pulumi_config() -> None:
    assert {"README.md", "Pulumi.yaml", "docs/gpu-catalog.md", "docs/vllm-flags.md"} <= set(PATHS)


@pytest.mark.parametrize("path", PATHS)
def test_check_fails_naming_a_hand_edited_file_and_the_command(path: str, copy: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    generated = (copy / path).read_text()
    assert gen_docs.main(["--check", "--root", str(copy)]) == 0
    edit_by_hand(copy, path)
    assert gen_docs.main(["--check", "--root", str(copy)]) == 1
    err = capsys.readouterr().err
    assert err == f"{path} is out of date: run .venv/bin/python tools/gen_docs.py\n"
    assert gen_docs.main(["--root", str(copy)]) == 0
    assert gen_docs.main(["--check", "--root", str(copy)]) == 0
    assert (copy / path).read_text() == generated


def test_text_outside_the_generated_blocks_is_kept(copy: Path) -> None:
    for path in BLOCK_OPENINGS:
        file = copy / path
        file.write_text("hand-written line\n" + file.read_text())
    assert gen_docs.problems(copy) == []
    gen_docs.write(copy)
    assert all((copy / path).read_text().startswith("hand-written line\n") for path in BLOCK_OPENINGS)


def test_a_lost_block_marker_is_reported(copy: Path) -> None:
    pulumi_yaml = copy / "Pulumi.yaml"
    pulumi_yaml.write_text(pulumi_yaml.read_text().replace(gen_docs.PULUMI_CONFIG_CLOSE, ""))
    assert gen_docs.problems(copy) == [
        "Pulumi.yaml has no `# generated:config` ... `# /generated:config` block: restore the markers, then run "
        ".venv/bin/python tools/gen_docs.py"
    ]


def test_the_command_line_exits_1_on_a_stale_file(copy: Path) -> None:
    edit_by_hand(copy, "docs/vllm-flags.md")
    run = subprocess.run([sys.executable, str(gen_docs.ROOT / "tools" / "gen_docs.py"), "--check", "--root", str(copy)],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 1
    assert run.stderr == "docs/vllm-flags.md is out of date: run .venv/bin/python tools/gen_docs.py\n"
