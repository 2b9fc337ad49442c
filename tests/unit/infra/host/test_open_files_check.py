"""check-open-files.sh: the deploy stops, naming containerOpenFiles and the value to set, when the host's
Docker could not give the containers their open-files limit (their start would fail with "error setting
rlimit type 7: operation not permitted"). Run against a real process with a lowered hard limit and no
capabilities, standing in for dockerd (a `pgrep` on the PATH names it)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vllm_endpoint.infra.render.host_scripts import host_command

ENGINE_HARD_LIMIT = 2048


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Path]:
    """A `pgrep` that answers with a process whose hard open-files limit is ENGINE_HARD_LIMIT and which
    holds no capability (an unprivileged user's process when the tests run as root)."""
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    process = subprocess.Popen(["prlimit", f"--nofile={ENGINE_HARD_LIMIT}:{ENGINE_HARD_LIMIT}", *drop,
                                "sleep", "120"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pgrep").write_text(f'#!/bin/sh\n[ "$2" = dockerd ] && echo {process.pid}\nexit 0\n')
    (bin_dir / "pgrep").chmod(0o755)
    try:
        yield bin_dir
    finally:
        process.kill()
        process.wait()


def check(open_files: int, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    script = f"PATH={bin_dir}:$PATH; export PATH\n" + host_command({"OPEN_FILES": open_files}, "check-open-files.sh")
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30)


def test_a_limit_above_what_the_engine_may_grant_stops_the_deploy_with_the_value_to_set(engine: Path) -> None:
    refused = check(65535, engine)
    assert refused.returncode == 1
    assert refused.stderr.startswith(
        "containerOpenFiles: Docker on this host cannot give containers 65535 open files: dockerd's own hard "
        f"limit is {ENGINE_HARD_LIMIT} and it may not raise it (no CAP_SYS_RESOURCE). Set containerOpenFiles "
        f"to {ENGINE_HARD_LIMIT}")
    assert "LimitNOFILE=1048576" in refused.stderr


def test_a_limit_the_engine_can_grant_passes(engine: Path) -> None:
    granted = check(ENGINE_HARD_LIMIT, engine)
    assert granted.returncode == 0
    assert granted.stdout.strip() == f"open files: Docker can give the containers {ENGINE_HARD_LIMIT}"


def test_without_a_visible_engine_process_nothing_is_refused(tmp_path: Path) -> None:
    # Rootless Docker in another user's namespace, or a remote engine: the start itself is the check then.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pgrep").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "pgrep").chmod(0o755)
    assert check(65535, bin_dir).returncode == 0
