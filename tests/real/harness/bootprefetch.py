"""boot.sh's prefetch section run for real on this machine: a stand-in IMDSv2 (token PUT, tags GET) on
loopback, a stand-in AWS CLI for the SSM read of the token, the test host's Docker engine for the image
job and a Hub stand-in (fakehub) for the model job, which runs as the test host's unprivileged user with
the Hub client boot.sh installs (`boot.sh install-hf-client`) from the wheels scripts/setup.sh downloaded.

The scripts run as user-data ships them (`boot_script`, `shipped_script`: comments stripped, boot.sh
with its env file's path on top) with a boot.env rendered by `boot_env`, so what is exercised is what
runs on an instance; only the paths in boot.env point into the test's folder. Only the jobs a run
started are ever stopped (by their pid files).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from vllm_endpoint.infra.catalog.names import CACHE_SUBDIR_ROOT
from vllm_endpoint.infra.render.host_scripts import env_lines
from vllm_endpoint.infra.render.userdata import HostBootSettings, boot_env_values, boot_script, shipped_script

from .common import REPO_ROOT
from .fakehub import NoLookupHTTPServer
from .testhost import TestHost

REGION = "us-test-1"
TOKEN_PARAMETER = "/vllm-endpoint/prefetch-test/stack/hf-token"
JOBS = ("image", "model")
# scripts/setup.sh downloads the Hub client's wheels (HF_CLIENT_PACKAGES) here: the test host reaches no registry.
HF_CLIENT_WHEELHOUSE = REPO_ROOT / "build" / "wheelhouse" / "hf-client"


def install_scripts(work: Path) -> None:
    """hf-prefetch.py as user-data carries it, where the test host's user can read it. (Each run installs
    its own boot.sh: the path of its env file is part of the script.)"""
    (work / "hf-prefetch.py").write_text(shipped_script("hf-prefetch.py"))
    (work / "hf-prefetch.py").chmod(0o755)


def client_venv(work: Path) -> Path:
    """The Hub client's venv every boot run below `work` shares (HF_CLIENT_VENV)."""
    return work / "hf-client"


def wheelhouse_problem() -> str | None:
    if not any(HF_CLIENT_WHEELHOUSE.glob("huggingface_hub-*.whl")):
        return f"no Hub client wheels in {HF_CLIENT_WHEELHOUSE} (run scripts/setup.sh test)"
    return None


def write_boot_files(ssh_user: str, base: Path, cache: Path, overrides: dict[str, str]) -> Path:
    """boot.env as user-data renders it (paths in `overrides` pointing into the test's folder) and boot.sh as
    user-data installs it, in `base`; returns boot.sh."""
    values = boot_env_values(HostBootSettings("vol-0123456789abcdef0", ssh_user, "", "",
                                              cache_mount_point=str(cache)))
    values |= {"HF_CLIENT_VENV": str(client_venv(base.parent)), **overrides}
    env_file = base / "boot.env"
    env_file.write_text(env_lines(values))
    script = base / "boot.sh"
    script.write_text(boot_script(str(env_file)))
    script.chmod(0o755)
    return script


@dataclass
class ClientInstall:
    python: Path  # the venv's interpreter
    seconds: float
    output: str


def install_hf_client(work: Path) -> ClientInstall:
    """`boot.sh install-hf-client` into `client_venv(work)`, from the wheelhouse (a no-op when it is there).
    It runs as root, as on an instance, and reads no user or volume (boot.env names the root user)."""
    base = work / "client-install"
    base.mkdir(exist_ok=True)
    base.chmod(0o755)
    script = write_boot_files("root", base, base / "cache", {"PREFETCH_STATE_DIR": str(base / "state"),
                                                           "PREFETCH_LOG": str(base / "prefetch.log")})
    start = time.monotonic()
    proc = subprocess.run([str(script), "install-hf-client"], capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                               "HF_CLIENT_WHEELHOUSE": str(HF_CLIENT_WHEELHOUSE)})
    if proc.returncode != 0:
        raise RuntimeError(f"boot.sh install-hf-client failed:\n{proc.stdout}{proc.stderr}")
    return ClientInstall(client_venv(work) / "bin" / "python", time.monotonic() - start, proc.stdout + proc.stderr)


def traced(argv: list[str], env: dict[str, str], exec_log: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Runs `argv` under strace, which writes every program started in the process tree (detached jobs
    included, until they end) with its full argument list and environment to `exec_log`."""
    return subprocess.run(["strace", "-f", "-qq", "-v", "-s", "1000000", "-e", "trace=execve", "-o", str(exec_log),
                           *argv], env=env, capture_output=True, text=True, timeout=timeout)


@dataclass
class FakeImds:
    """IMDSv2 on loopback: a session token from PUT /latest/api/token, required on every GET."""

    tags: dict[str, str]
    session: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    requests: list[tuple[str, str, int]] = field(default_factory=list)

    def answer(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        if method == "PUT":
            if path != "/latest/api/token" or "X-aws-ec2-metadata-token-ttl-seconds" not in headers:
                return 400, ""
            return 200, self.session
        if headers.get("X-aws-ec2-metadata-token") != self.session:
            return 401, ""
        if path == "/latest/meta-data/placement/region":
            return 200, REGION
        prefix = "/latest/meta-data/tags/instance/"
        if path.startswith(prefix) and path[len(prefix):] in self.tags:
            return 200, self.tags[path[len(prefix):]]
        return 404, ""

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        imds = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _do(self) -> None:
                status, body = imds.answer(self.command, self.path, dict(self.headers.items()))
                imds.requests.append((self.command, self.path, status))
                payload = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = _do

        server = NoLookupHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


@dataclass
class BootRun:
    state: Path
    timeline: Path
    log: Path
    cache: Path
    seconds: float
    imds: FakeImds
    execs: str  # every program the run started, with its arguments and environment (strace)
    # With `watch_for`: how often every process's /proc/<pid>/cmdline and environ were read while the jobs
    # ran, and where the watched text was seen ("<pid> <file>").
    proc_scans: int = 0
    proc_hits: list[str] = field(default_factory=list)


class ProcWatch:
    """Reads every process's command line and environment over and over, noting where `text` shows up."""

    def __init__(self, text: str) -> None:
        self.needle = text.encode()
        self.scans = 0
        self.hits: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                for name in ("cmdline", "environ"):
                    with contextlib.suppress(OSError):
                        if self.needle in (proc / name).read_bytes():
                            self.hits.append(f"{proc.name} {name}")
            self.scans += 1
            self._stop.wait(0.02)

    def __enter__(self) -> ProcWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def fake_aws(bin_dir: Path, token_store: Path, parameter: str) -> None:
    """A stand-in for the AWS CLI that answers exactly the call boot.sh makes for the token."""
    expected = (f"ssm get-parameter --name {parameter} --with-decryption --query Parameter.Value "
                "--output text")
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "aws").write_text(f"""#!/bin/sh
[ "$*" = "{expected}" ] || {{ echo "fake aws: unexpected call: $*" >&2; exit 2; }}
[ "$AWS_DEFAULT_REGION" = "{REGION}" ] || {{ echo "fake aws: region $AWS_DEFAULT_REGION" >&2; exit 3; }}
cat {token_store}
""")
    (bin_dir / "aws").chmod(0o755)


def make_volume_root(host: TestHost, cache: Path) -> Path:
    """A folder as prepare-cache-volume.sh leaves the mounted volume for the boot prefetch: its
    CACHE_SUBDIR_ROOT owned by the SSH user (the containers' user)."""
    (cache / CACHE_SUBDIR_ROOT).mkdir(parents=True)
    cache.chmod(0o755)
    os.chown(cache / CACHE_SUBDIR_ROOT, host.uid, host.gid)
    return cache


def stop_jobs(state: Path) -> None:
    """Ends the jobs this run started (their pids are in its state folder), and nothing else."""
    for job in JOBS:
        with contextlib.suppress(OSError, ValueError):
            pid = int((state / f"prefetch-{job}.pid").read_text())
            if f"prefetch-{job}-job".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.killpg(pid, 9)  # the job leads its own session (setsid): its children go too


def run_boot_prefetch(host: TestHost, work: Path, name: str, tags: dict[str, str], hub_endpoint: str, *,
                      secret: str | None = None, cache: Path | None = None, timeline: Path | None = None,
                      trace: bool = True, timeout: float = 120, venv: Path | None = None,
                      watch_for: str | None = None) -> BootRun:
    """`boot.sh prefetch` with the instance tags `tags` (keys: the tag names without their prefix), waiting
    for the jobs it starts. `cache` is the mounted cache volume (default: a fresh folder with CACHE_SUBDIR_ROOT
    owned by the test host's user); `timeline` the deploy timeline (default: a fresh file). With `trace`,
    every program started is recorded by strace (`BootRun.execs`). `venv` replaces the shared Hub client venv
    (a fresh one: the job installs the client first); with `watch_for`, /proc is searched for that text while
    the jobs run."""
    base = work / name
    state, bin_dir = base / "state", base / "bin"
    state.mkdir(parents=True)
    base.chmod(0o755)
    if cache is None:
        cache = make_volume_root(host, base / "cache")
    if timeline is None:
        timeline = state / "timeline"
        timeline.touch()
        os.chown(timeline, host.uid, host.gid)
    log = base / "prefetch.log"
    token_store = base / "ssm-value"
    token_store.touch(mode=0o600)
    token_store.write_text((secret or "") + "\n")
    fake_aws(bin_dir, token_store, TOKEN_PARAMETER)
    script = write_boot_files(host.ssh_user, base, cache, {
        "DEPLOY_TIMELINE_FILE": str(timeline), "PREFETCH_STATE_DIR": str(state), "PREFETCH_LOG": str(log),
        "HF_PREFETCH_SCRIPT": str(work / "hf-prefetch.py"), **({"HF_CLIENT_VENV": str(venv)} if venv else {})})
    values = boot_env_values(HostBootSettings("vol-0123456789abcdef0", host.ssh_user, "", ""))
    tag_names = {"prefetch-image": values["PREFETCH_IMAGE_TAG"], "prefetch-model": values["PREFETCH_MODEL_TAG"],
                 "prefetch-revision": values["PREFETCH_REVISION_TAG"],
                 "hf-token-parameter": values["HF_TOKEN_PARAMETER_TAG"]}
    imds = FakeImds({str(tag_names[k]): v for k, v in tags.items()})
    env = {"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin", "PREFETCH_RETRY_DELAY": "1", "HF_ENDPOINT": hub_endpoint,
           "DOCKER_HOST": f"unix://{host.docker_socket}", "DOCKER_CONFIG": str(host.state_dir / "docker-client"),
           "NO_PROXY": "*", "HF_CLIENT_WHEELHOUSE": str(HF_CLIENT_WHEELHOUSE)}
    jobs = [job for job in JOBS if f"prefetch-{job}" in tags]
    exec_log = base / "execs.log"
    watch = ProcWatch(watch_for) if watch_for else contextlib.nullcontext()
    with imds.serve() as url, watch:
        start = time.monotonic()
        argv = [str(script), "prefetch"]
        env["VLLM_ENDPOINT_IMDS_URL"] = url
        # Under strace this returns once the detached jobs have ended too.
        proc = (traced(argv, env, exec_log, timeout) if trace
                else subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60))
        if proc.returncode != 0:
            raise RuntimeError(f"boot.sh prefetch failed:\n{proc.stdout}{proc.stderr}")
        started = sorted(p.name for p in state.glob("*.started"))
        if started != sorted(f"prefetch-{j}.started" for j in jobs):
            raise RuntimeError(f"expected jobs {jobs}, started: {started}")
        while not all((state / f"prefetch-{j}.done").exists() or (state / f"prefetch-{j}.failed").exists()
                      for j in jobs):
            if time.monotonic() - start > timeout:
                stop_jobs(state)
                raise TimeoutError(f"prefetch jobs did not finish; log:\n{log.read_text()}")
            time.sleep(0.05)
        seconds = time.monotonic() - start
    return BootRun(state, timeline, log, cache, seconds, imds, exec_log.read_text() if trace else "",
                   *((watch.scans, watch.hits) if isinstance(watch, ProcWatch) else (0, [])))
