"""Paths, process helpers and prerequisite checks shared by the real-parts harness."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[3]
# Kept between runs (git-ignored): built images' engine data, the debootstrap root, the tiny model.
BUILD_DIR = REPO_ROOT / "build" / "real-tests"
# Lives only until reboot: per-run keys, configs, sockets and pid files.
RUN_DIR = Path("/run/vllm-endpoint-real-tests")
VLLM_VENV = REPO_ROOT / ".venv-vllm"
TIMINGS_FILE = BUILD_DIR / "timings.jsonl"


def run(
    args: Sequence[str],
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    input: bytes | str | None = None,
    timeout: float | None = 600,
    capture: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure the exception message carries its stdout and stderr."""
    data = input.decode() if isinstance(input, bytes) else input
    proc = subprocess.run(
        list(args), env=dict(env) if env is not None else None, input=data, text=True,
        capture_output=capture, timeout=timeout, check=False,
    )
    if check and proc.returncode != 0:
        raise CommandError(args, proc)
    return proc


class CommandError(RuntimeError):
    def __init__(self, args: Sequence[str], proc: subprocess.CompletedProcess[str]) -> None:
        self.proc = proc
        super().__init__(
            f"command failed with exit {proc.returncode}: {' '.join(map(str, args))}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )


def missing_tools(*names: str) -> list[str]:
    return [n for n in names if shutil.which(n) is None]


def prerequisite_problem(tools: Sequence[str] = (), need_vllm_venv: bool = False) -> str | None:
    """Why the real tier cannot run here (None when it can). Used as a pytest skip reason."""
    if os.geteuid() != 0:
        return "real-parts tests need root (loop devices, network namespaces, dockerd, sshd)"
    gone = missing_tools(*tools)
    if gone:
        return f"missing tools: {', '.join(gone)} (run scripts/setup.sh)"
    if need_vllm_venv and not (VLLM_VENV / "bin" / "python").exists():
        return f"the vLLM CPU venv {VLLM_VENV} is missing (run scripts/setup.sh)"
    return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def stop_pid(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM, wait, then SIGKILL: the process is gone when this returns."""
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def stop_pid_file(pid_file: Path, timeout: float = 30.0) -> None:
    pid = read_pid(pid_file)
    if pid is not None:
        stop_pid(pid, timeout)
    with contextlib.suppress(FileNotFoundError):
        pid_file.unlink()


@contextlib.contextmanager
def try_lock(path: Path) -> Iterator[IO[str] | None]:
    """A non-blocking exclusive flock; yields the open file when taken, None when another holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")  # noqa: SIM115 - kept open for the lock's lifetime
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        yield fh
    finally:
        fh.close()


def lock_is_free(path: Path) -> bool:
    """True when nobody holds the flock on `path` (its owner is gone)."""
    if not path.exists():
        return True
    with try_lock(path) as fh:
        return fh is not None


def wait_for(predicate: object, timeout: float, interval: float = 0.2, what: str = "condition") -> None:
    """Poll `predicate()` until it is truthy; raise TimeoutError naming `what` otherwise."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:  # remembered for the timeout message
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}" +
                       (f" (last error: {last_error})" if last_error else ""))


def record_timing(stage: str, seconds: float, **details: object) -> None:
    """Appends one measurement to build/real-tests/timings.jsonl (the benchmark reads these)."""
    TIMINGS_FILE.parent.mkdir(parents=True, exist_ok=True)
    entry = {"stage": stage, "seconds": round(seconds, 3), "at": time.time(), **details}
    with TIMINGS_FILE.open("a") as fh:
        fh.write(json.dumps(entry) + "\n")
    print(f"[timing] {stage}: {seconds:.2f} s {details or ''}")


def http_status(url: str, api_key: str | None = None) -> int:
    """The HTTP status `url` answers with (0: no answer at all)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0
