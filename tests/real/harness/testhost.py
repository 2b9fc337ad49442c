"""A Docker host reached over SSH, made of real parts on this machine.

A network namespace with a veth pair gives the "host" its own address. Inside it run an sshd (its
own host key, one authorized client key) and a dockerd (its own data root, exec root, pid file and
socket). The SSH login is a per-session unprivileged user in the docker group (as `ubuntu` is on the
AWS host), so file ownership, the non-root containers and the 0600 TLS key are exercised as they
are in production. The client side reaches the engine only as pulumi-docker does:
`DOCKER_HOST=ssh://<user>@<address>` with exactly the SSH options of `vllm_endpoint.infra.render.ssh.ssh_options()`,
strict host-key checking against a known_hosts file that pins the generated host key.

How those options reach docker's ssh connection helper: the docker CLI (20.10 and 28.x alike) has no
setting for extra ssh flags (no DOCKER_SSH_OPTS; only the Go API `GetConnectionHelperWithSSHOpts`,
which pulumi-docker's `ssh_opts` uses). The CLI runs plain `ssh` from PATH, so the harness puts a
two-line wrapper named `ssh` first on PATH that execs the real ssh with `ssh_options(...)` in front
of the helper's own arguments -- the same argument order the provider produces.

The remote side of that connection runs `docker system dial-stdio`; sshd's `SetEnv DOCKER_HOST=...`
points it at this engine's socket rather than the machine's default /var/run/docker.sock.

Lifecycle: `start_test_host()` cleans leftovers of crashed runs, takes one of a few "slots" (each slot
has its own persistent engine data root under build/, so built images survive between runs and two
sessions never share an engine), and tears everything down by pid file when the context exits.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vllm_endpoint.infra.render.ssh import docker_host_url, known_hosts_line, ssh_options

from .common import (
    BUILD_DIR,
    RUN_DIR,
    CommandError,
    lock_is_free,
    pid_alive,
    read_pid,
    record_timing,
    run,
    stop_pid,
    stop_pid_file,
    try_lock,
    wait_for,
)

NAME_PREFIX = "vet"  # vllm-endpoint tests: namespaces, veths and run dirs all start with it
SLOTS = 3
# 10.203.160.0/24 .. 10.203.223.0/24: one free /24 is picked per run.
SUBNET_THIRD_OCTETS = range(160, 224)
DOCKERD_START_TIMEOUT = 120.0
# Per-session files the unprivileged SSH user must reach (its authorized key, the engine's socket):
# world-traversable, unlike the 0700 run dir.
PUBLIC_DIR = Path("/run/vet-hosts")
DOCKER_GROUP = "docker"  # created by Debian's docker.io
LOG_DIR = BUILD_DIR / "logs"
KEEP_LOG_RUNS = 5
REQUIRED_TOOLS = ("ip", "nsenter", "dockerd", "docker", "sshd", "ssh", "ssh-keygen", "iptables")


def _docker_cli() -> str:
    path = shutil.which("docker")
    if path is None:
        raise RuntimeError("docker CLI not found on PATH")
    return path


def _real_ssh() -> str:
    path = shutil.which("ssh")
    if path is None:
        raise RuntimeError("ssh not found on PATH")
    return path


def _slot_paths(slot: int) -> tuple[Path, Path]:
    """(persistent engine data root, exec root) of a slot; stable so a crashed run's state is found."""
    return BUILD_DIR / f"docker-s{slot}", Path(f"/run/{NAME_PREFIX}-s{slot}")


@dataclass
class TestHost:
    """One SSH-reachable Docker host. Attributes are what a product test needs to connect to it."""

    __test__ = False  # not a pytest test class

    name: str
    slot: int
    address: str
    gateway: str
    state_dir: Path
    identity_file: Path
    known_hosts_file: Path
    host_public_key: str
    host_key_file: Path
    docker_socket: Path
    ssh_user: str
    uid: int
    gid: int
    ssh_port: int = 22

    @property
    def container_user(self) -> str:
        """`uid:gid` of the SSH user: the product's `containerUser` must match the cache folder's owner."""
        return f"{self.uid}:{self.gid}"

    # --- connection facts -------------------------------------------------------------------
    @property
    def docker_host(self) -> str:
        """The DOCKER_HOST / pulumi-docker `host` value."""
        return docker_host_url(self.ssh_user, self.address, self.ssh_port)

    @property
    def ssh_options(self) -> list[str]:
        """Exactly `infra/render/ssh.py` ssh_options() for this host (what the product passes as ssh_opts)."""
        return ssh_options(str(self.identity_file), str(self.known_hosts_file))

    @property
    def wrapper_dir(self) -> Path:
        return self.state_dir / "bin"

    def url(self, port: int, path: str = "/") -> str:
        return f"http://{self.address}:{port}{path}"

    def docker_env(self, docker_host: str | None = None) -> dict[str, str]:
        """Environment for a docker CLI that reaches the engine over SSH only."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(
            DOCKER_HOST=docker_host or self.docker_host,
            # A private client config: no contexts, credential helpers or proxies of the machine's user.
            DOCKER_CONFIG=str(self.state_dir / "docker-client"),
            PATH=f"{self.wrapper_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
        )
        return env

    # --- helpers ----------------------------------------------------------------------------
    def docker(self, *args: str, check: bool = True, input: str | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this host through SSH (DOCKER_HOST=ssh://...)."""
        return run([_docker_cli(), *args], env=self.docker_env(), check=check, input=input, timeout=timeout)

    def docker_local(self, *args: str, check: bool = True, input: str | None = None,
                     timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI through the engine's local unix socket (image building, clean-up)."""
        return run([_docker_cli(), "-H", f"unix://{self.docker_socket}", *args],
                   env=self.local_docker_env(), check=check, input=input, timeout=timeout)

    def local_docker_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_CONFIG"] = str(self.state_dir / "docker-client")
        return env

    def ssh_argv(self, command: str, port: int | None = None, options: Sequence[str] | None = None) -> list[str]:
        opts = list(options) if options is not None else self.ssh_options
        argv = [_real_ssh(), *opts]
        if (port or self.ssh_port) != 22:
            argv += ["-p", str(port or self.ssh_port)]
        return [*argv, f"{self.ssh_user}@{self.address}", command]

    def ssh(self, command: str, check: bool = True, timeout: float = 120,
            port: int | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a shell command on the host over SSH with the product's strict options."""
        return run(self.ssh_argv(command, port=port), check=check, timeout=timeout, input=input)

    @contextlib.contextmanager
    def extra_sshd(self, port: int, host_key_file: Path) -> Iterator[None]:
        """A second sshd on `port` in the same namespace, presenting `host_key_file`."""
        cfg = self._write_sshd_config(f"sshd-{port}", port, host_key_file)
        pid_file = self.state_dir / f"sshd-{port}.pid"
        try:
            _start_sshd(self.name, cfg, pid_file, self.address, port)
            yield
        finally:
            stop_pid_file(pid_file, timeout=10)

    def _write_sshd_config(self, label: str, port: int, host_key_file: Path) -> Path:
        cfg = self.state_dir / f"{label}_config"
        cfg.write_text(_sshd_config(
            address=self.address, port=port, host_key=host_key_file,
            authorized_keys=self.docker_socket.parent / "authorized_keys",
            pid_file=self.state_dir / f"{label}.pid", docker_socket=self.docker_socket, user=self.ssh_user,
        ))
        return cfg

    def wait_http(self, url: str, *, timeout: float = 60, container: str | None = None,
                  headers: dict[str, str] | None = None, status: int = 200) -> float:
        """Poll `url` until it answers `status`; returns the seconds waited.

        With `container`, fails at once (with the container's log tail) when it stops running, rather
        than waiting out the timeout.
        """
        start = time.monotonic()
        next_check = start
        last = "no answer yet"
        while time.monotonic() - start < timeout:
            request = urllib.request.Request(url, headers=headers or {})
            try:
                with urllib.request.urlopen(request, timeout=5) as resp:
                    if resp.status == status:
                        return time.monotonic() - start
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                if exc.code == status:
                    return time.monotonic() - start
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            if container is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + 5
                state = self.docker("inspect", "--format", "{{.State.Status}}", container, check=False)
                if state.stdout.strip() != "running":
                    logs = self.docker("logs", "--tail", "60", container, check=False)
                    raise RuntimeError(f"container {container} is {state.stdout.strip() or 'gone'} while "
                                       f"waiting for {url}:\n{logs.stdout}{logs.stderr}")
            time.sleep(0.5)
        raise TimeoutError(f"{url} did not answer {status} within {timeout:.0f} s (last: {last})")

    def remove_all_containers(self) -> None:
        ids = self.docker_local("ps", "-aq").stdout.split()
        if ids:
            self.docker_local("rm", "-f", "-v", *ids, timeout=300)

    def restart_engine(self, stop_timeout: float = 120) -> tuple[float, float]:
        """What a reboot does to the engine: dockerd stops (stopping every container with it) and
        starts again with the same arguments; only the containers' restart policies bring them back.
        containerd keeps running, as a restarted docker.service leaves containerd.service alone.
        Returns (seconds to stop, seconds to start)."""
        pid_file = self.state_dir / "dockerd.pid"
        pid = read_pid(pid_file)
        if pid is None or not pid_alive(pid):
            raise RuntimeError(f"dockerd of {self.name} is not running (pid file {pid_file})")
        t0 = time.monotonic()
        # dockerd's own shutdown waits for each container's stop timeout (vLLM's is 60 s) plus a grace.
        stop_pid(pid, timeout=stop_timeout)
        # A clean exit removes the pid file; a killed dockerd leaves its dead pid, which start-up reads.
        pid_file.unlink(missing_ok=True)
        t1 = time.monotonic()
        _spawn(_dockerd_argv(self.name, self.slot, self.state_dir, self.docker_socket),
               self.state_dir / "dockerd.log", None)
        _wait_engine(self.name, self.state_dir, self.docker_socket)
        return t1 - t0, time.monotonic() - t1


def _sshd_config(*, address: str, port: int, host_key: Path, authorized_keys: Path, pid_file: Path,
                 docker_socket: Path, user: str) -> str:
    return "\n".join([
        f"ListenAddress {address}:{port}",
        f"HostKey {host_key}",
        f"PidFile {pid_file}",
        f"AuthorizedKeysFile {authorized_keys}",
        f"AllowUsers {user}",
        "PermitRootLogin no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "X11Forwarding no",
        "PrintMotd no",
        # pulumi-command's CopyToRemote (model uploads) speaks SFTP, as stock sshd configs allow.
        "Subsystem sftp internal-sftp",
        # The remote half of docker's ssh helper (`docker system dial-stdio`) must reach THIS engine.
        f"SetEnv DOCKER_HOST=unix://{docker_socket}",
        # The docker CLI opens a few connections at once; keep the default throttling out of the way.
        "MaxStartups 50:30:100",
        "LogLevel VERBOSE",
        "",
    ])


def _nsenter(netns: str) -> list[str]:
    # nsenter, not `ip netns exec`: the latter remounts /sys in a new mount namespace and dockerd
    # then fails with "Devices cgroup isn't mounted".
    return ["nsenter", f"--net=/var/run/netns/{netns}"]


def _tcp_open(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex((address, port)) == 0


def _start_sshd(netns: str, config: Path, pid_file: Path, address: str, port: int) -> None:
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    log = config.with_suffix(".log")
    run([*_nsenter(netns), "/usr/sbin/sshd", "-f", str(config), "-E", str(log)])
    wait_for(lambda: read_pid(pid_file) is not None and _tcp_open(address, port), timeout=20,
             what=f"sshd on {address}:{port} (log {log})")


# --- leftovers --------------------------------------------------------------------------------

def _netns_list() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_netns_processes(netns: str) -> None:
    pids = run(["ip", "netns", "pids", netns], check=False).stdout.split()
    for pid in pids:
        if pid.isdigit():
            stop_pid(int(pid), timeout=15)


def _unmount_under(prefix: Path) -> None:
    """Unmount what a killed dockerd left mounted below `prefix` (overlay layers, netns files)."""
    out = run(["findmnt", "-rn", "-o", "TARGET"], check=False).stdout
    targets = [t for t in out.splitlines() if t == str(prefix) or t.startswith(str(prefix) + "/")]
    for target in sorted(targets, key=len, reverse=True):
        run(["umount", "-l", target], check=False)


def _kill_slot_shims(exec_root: Path) -> None:
    """Processes of a killed dockerd outlive it: containerd shims (they name the slot's exec root in
    argv) and the containers under them. Containers go first (SIGKILL to a container's init ends its
    whole PID namespace), then the shims."""
    needle = str(exec_root) + "/"
    shims: list[int] = []
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        exe = argv[0].decode(errors="replace").rsplit("/", 1)[-1]
        if exe.startswith(("containerd", "dockerd", "docker-proxy")) and any(
                a.decode(errors="replace").startswith(needle) for a in argv[1:] if a):
            shims.append(int(proc.name))
    for pid, ppid in parents.items():
        if ppid in shims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for pid in shims:
        stop_pid(pid, timeout=10)


def _teardown_state(state: dict[str, object]) -> None:
    netns = str(state["netns"])
    state_dir = Path(str(state["state_dir"]))
    slot = int(str(state["slot"]))
    data_root, exec_root = _slot_paths(slot)
    for pid_file in sorted(state_dir.glob("sshd*.pid")):
        stop_pid_file(pid_file, timeout=10)
    stop_pid_file(state_dir / "dockerd.pid", timeout=60)
    stop_pid_file(state_dir / "containerd.pid", timeout=20)
    _kill_slot_shims(exec_root)
    if netns in _netns_list():
        _kill_netns_processes(netns)
        run(["ip", "netns", "delete", netns], check=False)
    run(["ip", "link", "delete", str(state["veth_host"])], check=False)
    _unmount_under(data_root)
    _unmount_under(exec_root)
    _keep_logs(state_dir)
    user = state.get("user")
    if isinstance(user, str) and user.startswith(f"{NAME_PREFIX}-"):
        _delete_user(user)
    shutil.rmtree(PUBLIC_DIR / netns, ignore_errors=True)
    # The exec root only matters while a run (or the clean-up after its crash) needs its state.
    run(["rm", "-rf", "--one-file-system", str(exec_root)], check=False)
    shutil.rmtree(state_dir, ignore_errors=True)


def _keep_logs(state_dir: Path) -> None:
    """The daemons' logs outlive the run dir in build/real-tests/logs (the last few runs only)."""
    logs = list(state_dir.glob("*.log"))
    if not logs:
        return
    dest = LOG_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{state_dir.name}"
    dest.mkdir(parents=True, exist_ok=True)
    for log in logs:
        with contextlib.suppress(OSError):
            shutil.copy2(log, dest / log.name)
    for old in sorted(LOG_DIR.iterdir())[:-KEEP_LOG_RUNS]:
        shutil.rmtree(old, ignore_errors=True)


def cleanup_leftovers() -> None:
    """Tear down what crashed runs left: their run dirs (lock free = owner gone) and orphan namespaces."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    for state_file in RUN_DIR.glob(f"{NAME_PREFIX}-*/state.json"):
        run_dir = state_file.parent
        if not lock_is_free(run_dir / "lock"):
            continue  # a live session owns it
        with contextlib.suppress(OSError, ValueError, KeyError):
            _teardown_state(json.loads(state_file.read_text()))
        shutil.rmtree(run_dir, ignore_errors=True)
    live = {p.parent.name for p in RUN_DIR.glob(f"{NAME_PREFIX}-*/lock") if not lock_is_free(p)}
    for netns in _netns_list():
        if netns.startswith(f"{NAME_PREFIX}-") and netns not in live:
            _kill_netns_processes(netns)
            run(["ip", "netns", "delete", netns], check=False)
    for line in Path("/etc/passwd").read_text().splitlines():
        user = line.split(":", 1)[0]
        if user.startswith(f"{NAME_PREFIX}-") and user not in live:
            _delete_user(user)
    if PUBLIC_DIR.exists():
        for leftover in PUBLIC_DIR.iterdir():
            if leftover.name not in live:
                shutil.rmtree(leftover, ignore_errors=True)


def _create_user(name: str, home: Path) -> tuple[int, int]:
    """An unprivileged login in the docker group, like the AWS AMI's `ubuntu`: (uid, gid)."""
    # Password "*": no password login, but not "locked" ("!"), which sshd without PAM refuses outright.
    run(["useradd", "--user-group", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh",
         "--groups", DOCKER_GROUP, "--password", "*", name])
    home.mkdir(mode=0o700, exist_ok=True)
    uid, gid = int(run(["id", "-u", name]).stdout), int(run(["id", "-g", name]).stdout)
    os.chown(home, uid, gid)
    return uid, gid


def _delete_user(name: str) -> None:
    run(["userdel", name], check=False)
    run(["groupdel", name], check=False)


# --- start ------------------------------------------------------------------------------------

def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for line in run(["ip", "-4", "-o", "addr", "show"]).stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).network)
    for line in run(["ip", "-4", "route", "show"]).stdout.splitlines():
        dest = line.split()[0]
        if dest != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.IPv4Network(dest, strict=False))
    return nets


def _pick_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    for octet in SUBNET_THIRD_OCTETS:
        candidate = ipaddress.IPv4Network(f"10.203.{octet}.0/24")
        if not any(candidate.overlaps(n) for n in used):
            return candidate
    raise RuntimeError("no free /24 in 10.203.160.0-10.203.223.255 for the test host")


@contextlib.contextmanager
def _take_slot() -> Iterator[tuple[int, IO[str]]]:
    with contextlib.ExitStack() as stack:
        for slot in range(SLOTS):
            fh = stack.enter_context(try_lock(RUN_DIR / f"slot-{slot}.lock"))
            if fh is not None:
                yield slot, fh
                return
        raise RuntimeError(f"all {SLOTS} test-host slots are in use by other live sessions")


def _keygen(path: Path, comment: str) -> str:
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path.with_name(path.name + ".pub").read_text().strip()


def _write_ssh_wrapper(host: TestHost) -> None:
    """`ssh` on PATH for the docker CLI: the real ssh with exactly the product's options first."""
    host.wrapper_dir.mkdir(parents=True, exist_ok=True)
    wrapper = host.wrapper_dir / "ssh"
    wrapper.write_text(
        "#!/bin/sh\n"
        "# docker's ssh:// helper runs `ssh <its args>`; pulumi-docker's ssh_opts put these first.\n"
        f"exec {shlex.join([_real_ssh(), *host.ssh_options])} \"$@\"\n"
    )
    wrapper.chmod(0o755)


def _containerd_config(slot: int) -> str:
    data_root, exec_root = _slot_paths(slot)
    return containerd_config(data_root / "containerd", exec_root / "containerd")


def containerd_config(root: Path, run_dir: Path) -> str:
    """A containerd of its own (not the machine's): its content in `root`, its state and sockets in `run_dir`
    (`containerd.sock`, which dockerd's --containerd names; keep the path short: a unix socket takes 107 bytes)."""
    return "\n".join([
        "version = 2",
        f'root = "{root}"',
        f'state = "{run_dir}/state"',
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        "[grpc]",
        f'  address = "{run_dir}/containerd.sock"',
        "[debug]",
        f'  address = "{run_dir}/debug.sock"',
        '  level = "warn"',
        "",
    ])


def _spawn(args: Sequence[str], log_file: Path, pid_file: Path | None) -> None:
    with log_file.open("ab") as log:
        proc = subprocess.Popen(list(args), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    if pid_file is not None:
        # nsenter joins the namespace and execs the program in place, so this pid is the daemon's.
        pid_file.write_text(f"{proc.pid}\n")


def _start_engine(netns: str, slot: int, state_dir: Path, socket_path: Path) -> None:
    """containerd and dockerd of this slot, both inside the namespace.

    containerd is started explicitly (not left to dockerd) because dockerd 20.10 silently adopts a
    system containerd at /run/containerd/containerd.sock when one runs, which would mix these
    containers with the machine's own.
    """
    data_root, exec_root = _slot_paths(slot)
    data_root.mkdir(parents=True, exist_ok=True)
    (exec_root / "containerd").mkdir(parents=True, exist_ok=True)
    ctr_config = state_dir / "containerd.toml"
    ctr_config.write_text(_containerd_config(slot))
    ctr_socket = exec_root / "containerd" / "containerd.sock"
    ctr_socket.unlink(missing_ok=True)
    _spawn([*_nsenter(netns), "containerd", "--config", str(ctr_config)],
           state_dir / "containerd.log", state_dir / "containerd.pid")
    wait_for(ctr_socket.exists, timeout=30, what=f"containerd socket {ctr_socket}")

    # dockerd writes its own pid file (and refuses to start if a live pid is already in it).
    _spawn(_dockerd_argv(netns, slot, state_dir, socket_path), state_dir / "dockerd.log", None)
    _wait_engine(netns, state_dir, socket_path)


def _dockerd_argv(netns: str, slot: int, state_dir: Path, socket_path: Path) -> list[str]:
    data_root, exec_root = _slot_paths(slot)
    return [
        *_nsenter(netns), "dockerd",
        "--data-root", str(data_root),
        "--exec-root", str(exec_root),
        "--pidfile", str(state_dir / "dockerd.pid"),
        "--host", f"unix://{socket_path}",
        # The socket is root:docker 0660: the SSH user reaches the engine through its group.
        "--group", DOCKER_GROUP,
        "--containerd", str(exec_root / "containerd" / "containerd.sock"),
        "--storage-driver", "overlay2",
        "--log-level", "warn",
    ]


def _wait_engine(netns: str, state_dir: Path, socket_path: Path) -> None:
    docker = _docker_cli()
    env = {**os.environ, "DOCKER_CONFIG": str(state_dir / "docker-client")}

    def ready() -> bool:
        for name in ("containerd", "dockerd"):
            pid = read_pid(state_dir / f"{name}.pid")
            if pid is not None and not pid_alive(pid):
                raise RuntimeError(f"{name} exited during start; see {state_dir / (name + '.log')}")
        proc = run([docker, "-H", f"unix://{socket_path}", "version", "--format", "{{.Server.Version}}"],
                   check=False, timeout=10, env=env)
        return proc.returncode == 0

    try:
        wait_for(ready, timeout=DOCKERD_START_TIMEOUT, interval=0.25, what=f"dockerd in {netns}")
    except (TimeoutError, RuntimeError) as exc:
        tail = (state_dir / "dockerd.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{exc}\n--- dockerd.log (tail) ---\n{tail}") from exc


@contextlib.contextmanager
def start_test_host() -> Iterator[TestHost]:
    """Bring a test host up, yield it, tear it down (also when the body fails)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    RUN_DIR.chmod(0o700)
    cleanup_leftovers()
    with _take_slot() as (slot, _slot_lock):
        run_id = f"{slot}{os.urandom(2).hex()}"
        netns = f"{NAME_PREFIX}-{run_id}"
        state_dir = RUN_DIR / netns
        state_dir.mkdir(mode=0o700)
        with try_lock(state_dir / "lock") as run_lock:
            assert run_lock is not None
            subnet = _pick_subnet()
            gateway, address = (str(subnet.network_address + 1), str(subnet.network_address + 2))
            veth_host, veth_ns = f"{NAME_PREFIX}{run_id}h", f"{NAME_PREFIX}{run_id}n"
            state = {"netns": netns, "state_dir": str(state_dir), "slot": slot, "veth_host": veth_host,
                     "address": address, "user": netns}
            # Written before anything is created, so a crash at any point is cleaned up next time.
            (state_dir / "state.json").write_text(json.dumps(state))
            public_dir = PUBLIC_DIR / netns
            socket_path = public_dir / "docker.sock"
            host_key = state_dir / "ssh_host_ed25519_key"
            identity = state_dir / "id_ed25519"
            host = TestHost(
                name=netns, slot=slot, address=address, gateway=gateway, state_dir=state_dir,
                identity_file=identity, known_hosts_file=state_dir / "known_hosts",
                host_public_key="", host_key_file=host_key, docker_socket=socket_path,
                ssh_user=netns, uid=-1, gid=-1,
            )
            try:
                t0 = time.monotonic()
                PUBLIC_DIR.mkdir(mode=0o755, exist_ok=True)
                public_dir.mkdir(mode=0o755)
                host.uid, host.gid = _create_user(netns, public_dir / "home")
                run(["ip", "netns", "add", netns])
                run(["ip", "link", "add", veth_host, "type", "veth", "peer", "name", veth_ns])
                run(["ip", "link", "set", veth_ns, "netns", netns])
                run(["ip", "addr", "add", f"{gateway}/24", "dev", veth_host])
                run(["ip", "link", "set", veth_host, "up"])
                ns = ["ip", "-n", netns]
                run([*ns, "addr", "add", f"{address}/24", "dev", veth_ns])
                run([*ns, "link", "set", veth_ns, "up"])
                run([*ns, "link", "set", "lo", "up"])
                run([*ns, "route", "add", "default", "via", gateway])

                t1 = time.monotonic()
                _start_engine(netns, slot, state_dir, socket_path)
                record_timing("dockerd_start", time.monotonic() - t1, slot=slot)
                # A crashed run may have left containers (with restart policies) in the slot's data root.
                host.remove_all_containers()
                host.docker_local("volume", "prune", "-f")
                host.docker_local("network", "prune", "-f")

                host.host_public_key = _keygen(host_key, f"{netns}-host")
                _keygen(identity, f"{netns}-client")
                authorized = public_dir / "authorized_keys"
                authorized.write_text(identity.with_name(identity.name + ".pub").read_text())
                authorized.chmod(0o644)
                host.known_hosts_file.write_text(known_hosts_line(address, host.host_public_key) + "\n")
                cfg = host._write_sshd_config("sshd", 22, host_key)
                _start_sshd(netns, cfg, state_dir / "sshd.pid", address, 22)
                _write_ssh_wrapper(host)
                (state_dir / "docker-client").mkdir(exist_ok=True)
                host.ssh("true")
                host.docker("version", "--format", "{{.Server.Version}}")
                record_timing("test_host_ready", time.monotonic() - t0, slot=slot)
                yield host
            finally:
                with contextlib.suppress(CommandError, OSError, RuntimeError):
                    if socket_path.exists():
                        host.remove_all_containers()
                _teardown_state(state)
