"""The fleet's Application Load Balancer played by a real HAProxy, configured from the same spec.

AWS cannot run here, so the real-parts proof of infra/render/load_balancer.py puts HAProxy (Debian's package,
scripts/setup.sh installs it) in front of replicas on test hosts. The product never deploys HAProxy: this
module renders `LoadBalancerSpec` into an haproxy.cfg (`render_haproxy_config`, a pure function), runs it, and
drives its runtime API the way ECS drives a target group (`Haproxy.register` / `Haproxy.deregister`).

How each ALB setting maps (the number always comes from the spec):
- listener rules, by priority -> one `use_backend` line per ForwardRule, in priority order; each path pattern
  becomes an anchored `path_reg` regex (`*` any run, slashes included; `?` one character; everything else
  literal), each method list a `method` ACL. HAProxy's `path` is the raw path up to `?`, case-sensitive,
  neither decoded nor normalised: what ALB compares (`LoadBalancerSpec.route`).
- the listener's default action (fixed 404) -> `default_backend` of a backend that only `http-request return`s
  the spec's status, content type and body.
- `least_outstanding_requests` -> `balance leastconn` (HAProxy counts the requests in flight per server; it
  round-robins among servers with the same count).
- health check path, matcher, interval, timeout, healthy and unhealthy thresholds -> `option httpchk` with
  `http-check send meth GET uri <path>`, `http-check expect status <matcher>` (the same "200", "200,202",
  "200-299" forms), `inter`, `timeout check`, `rise`, `fall`; checks go to the traffic port, as ALB's
  `traffic-port`.
- idle timeout -> `timeout client` and `timeout server` (ALB closes a connection, either side, that sends
  nothing for that long).
- target registration (ECS registers a task's address once it runs) -> servers are rendered `disabled`
  (registered with nothing); `register` enables one as DOWN, so it needs `rise` passing checks like ALB's
  `initial` state. HAProxy's own default would put a server leaving maintenance UP before any check.
- deregistration delay (draining) -> runtime `set server ... state drain` (no new requests, those in flight
  go on), then waiting until the server's current sessions are 0 or the delay has passed (ALB deregisters a
  draining target with none in flight at once), then `state maint` and `shutdown sessions` (what ALB does to
  requests still open when the delay ends). The caller then stops the replica as ECS stops a task: the proxy
  first, then vLLM, each `docker stop` with its container's stop timeout (SIGTERM, then SIGKILL).

What differs, and is not pretended:
- ALB's check timeout bounds the whole check; HAProxy's `timeout check` is the read timeout after connecting
  (the connect itself is bounded by min(`timeout connect`, `inter`)).
- The checks are HTTP/1.0 without a Host header (HAProxy 2.6 cannot put each server's address in one); ALB
  sends HTTP/1.1 with the target's address. The proxy (`server_name _`, default server) answers both alike.
- ALB routes to every target when all are unhealthy ("fail open"); HAProxy answers 503 then.
- ALB's connection timeout towards a target is fixed (ALB_TARGET_CONNECT_TIMEOUT_S); the spec has no setting
  for it, so it lives here. No connection is retried (`retries 0`): ALB documents no retry, and the proof
  must not lean on one.
- Desync mitigation and invalid header fields are not matched: HAProxy refuses malformed requests with 400 (bad
  header names, conflicting Content-Length values) but, given both Content-Length and Transfer-Encoding, drops
  Content-Length as RFC 7230 says, where ALB's `strictest` refuses the request; and it passes header names with
  an underscore, which ALB's drop_invalid_header_fields removes. The proof sends neither.
- TLS, the HTTP->HTTPS redirect and X-Forwarded-Proto/Port are not rendered: the proof runs plain HTTP.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vllm_endpoint.infra.render.load_balancer import ForwardRule, LoadBalancerSpec, path_pattern_regex

from .common import run, stop_pid, wait_for

# AWS, ALB troubleshooting ("HTTP 504: Gateway timeout"): the load balancer failed to establish a connection
# to the target before the connection timeout expired (10 seconds). Not a setting of the spec.
ALB_TARGET_CONNECT_TIMEOUT_S = 10
BACKEND = "replicas"
NOT_FOUND_BACKEND = "fixed_response"
FRONTEND = "listener"
# Every target weighs the same (ALB has no weights within a target group); `register` restores it.
SERVER_WEIGHT = 1
_MATCHER = re.compile(r"^\d{3}(-\d{3})?(,\d{3}(-\d{3})?)*$")
_NAME = re.compile(r"^[a-z0-9_-]+$")
_METHOD = re.compile(r"^[A-Z]+$")


@dataclass(frozen=True)
class Target:
    """A registered target: the HAProxy server's name and the address it listens on (the port is the
    target group's)."""

    name: str
    address: str




def _single_quoted(word: str) -> str:
    # HAProxy's strong quoting: nothing inside is escaped or expanded (a regex keeps its backslashes).
    if "'" in word:
        raise ValueError(f"{word!r}: a quote cannot be rendered inside HAProxy's strong quotes")
    return f"'{word}'"


def _double_quoted(text: str) -> str:
    # Weak quoting expands `$VAR` and takes C escapes: escape those so the text arrives as written.
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def _rule_lines(rule: ForwardRule) -> tuple[list[str], str]:
    """The ACLs of one listener rule and its `use_backend` line (path AND method, as ALB's conditions)."""
    if not _NAME.match(rule.key) or not all(_METHOD.match(m) for m in rule.methods):
        raise ValueError(f"rule {rule.key!r}: a key or method HAProxy cannot name")
    path_acl = f"rule_{rule.key}_path"
    acls = [f"acl {path_acl} path_reg " + " ".join(_single_quoted(path_pattern_regex(p))
                                                   for p in rule.path_patterns)]
    condition = [path_acl]
    if rule.methods:
        acls.append(f"acl rule_{rule.key}_method method {' '.join(rule.methods)}")
        condition.append(f"rule_{rule.key}_method")
    return acls, f"use_backend {BACKEND} if {' '.join(condition)}"


def render_haproxy_config(spec: LoadBalancerSpec, targets: Sequence[Target], bind: tuple[str, int],
                          stats_socket: Path) -> str:
    """haproxy.cfg for `spec`: one listener on `bind`, the target group's servers (all unregistered until
    `Haproxy.register`), and an admin-level runtime socket."""
    group, check = spec.target_group, spec.target_group.health_check
    if check.protocol != "HTTP" or group.protocol != "HTTP":
        raise ValueError("only HTTP targets and checks are rendered")
    if group.algorithm != "least_outstanding_requests":
        raise ValueError(f"{group.algorithm}: no HAProxy form rendered")
    if not _MATCHER.match(check.matcher):
        raise ValueError(f"matcher {check.matcher!r}: not a list of codes or ranges")
    response = spec.default_response
    lines = [
        "global",
        f"    stats socket {stats_socket} mode 600 level admin",
        # Server state changes ("Server replicas/b is UP ...") on HAProxy's stdout, which the runner keeps.
        "    log stdout format raw local0 info",
        "defaults",
        "    mode http",
        "    log global",
        "    retries 0",
        f"    timeout connect {ALB_TARGET_CONNECT_TIMEOUT_S}s",
        f"    timeout client {spec.idle_timeout_s}s",
        f"    timeout server {spec.idle_timeout_s}s",
        f"frontend {FRONTEND}",
        f"    bind {bind[0]}:{bind[1]}",
        # Servers' state changes are the log worth keeping; a line per client connection is not.
        "    no log",
        "    option forwardfor",
    ]
    uses = []
    for rule in sorted(spec.rules, key=lambda r: r.priority):
        acls, use = _rule_lines(rule)
        lines += [f"    {acl}" for acl in acls]
        uses.append(f"    {use}")
    lines += [*uses, f"    default_backend {NOT_FOUND_BACKEND}",
              f"backend {NOT_FOUND_BACKEND}",
              f"    http-request return status {response.status_code} content-type "
              f"{_double_quoted(response.content_type)} string {_double_quoted(response.body)}",
              f"backend {BACKEND}",
              "    balance leastconn",
              "    option httpchk",
              f"    http-check send meth GET uri {_single_quoted(check.path)}",
              f"    http-check expect status {check.matcher}",
              f"    timeout check {check.timeout_s}s",
              f"    default-server check inter {check.interval_s}s rise {check.healthy_threshold} "
              f"fall {check.unhealthy_threshold} weight {SERVER_WEIGHT}"]
    lines += [f"    server {t.name} {t.address}:{group.port} disabled" for t in targets]
    return "\n".join(lines) + "\n"


# --- the running load balancer ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Drained:
    """How a deregistration went: requests in flight when it began, seconds draining, requests still in flight
    when it ended (closed then)."""

    in_flight_at_start: int
    seconds: float
    left_in_flight: int


@dataclass
class Haproxy:
    pid: int
    socket_path: Path
    log_file: Path
    spec: LoadBalancerSpec
    url: str  # the listener, http://127.0.0.1:<port>
    # (monotonic time, server, status) each time `status` saw a server's status change.
    transitions: list[tuple[float, str, str]] = field(default_factory=list)
    _last: dict[str, str] = field(default_factory=dict)

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """`show stat` rows of the target group's servers, by name (status, scur, check_status, ...)."""
        header, *rows = self.command("show stat").splitlines()
        names = header.lstrip("# ").split(",")
        stats = (dict(zip(names, row.split(","), strict=False)) for row in rows if row)
        return {s["svname"]: s for s in stats if s["pxname"] == BACKEND and s["svname"] not in ("FRONTEND",
                                                                                                "BACKEND")}

    def status(self, server: str) -> str:
        current = self.servers()[server]["status"]
        if self._last.get(server) != current:
            self._last[server] = current
            self.transitions.append((time.monotonic(), server, current))
        return current

    def in_flight(self, server: str) -> int:
        return int(self.servers()[server]["scur"] or 0)

    def wait_status(self, server: str, status: str, timeout: float) -> float:
        """Polls until `server` is in `status`; returns the monotonic time it was first seen so."""
        wait_for(lambda: self.status(server) == status, timeout=timeout, interval=0.1,
                 what=f"HAProxy server {server} {status} (log {self.log_file})")
        return next(t for t, s, st in reversed(self.transitions) if (s, st) == (server, status))

    def register(self, server: str) -> None:
        """As ECS registers a running task: the target starts unhealthy and needs `rise` passing checks.
        Weight 0 first, so it takes no request in the instant between leaving maintenance and DOWN."""
        path = f"{BACKEND}/{server}"
        for line in (f"set weight {path} 0", f"set server {path} state ready", f"set server {path} health down",
                     f"set weight {path} {SERVER_WEIGHT}"):
            answer = self.command(line).strip()
            if answer:
                raise RuntimeError(f"HAProxy refused {line!r}: {answer}")

    def deregister(self, server: str) -> Drained:
        """ALB's draining: no new request, those in flight go on until none is left or the delay passed;
        then the target is gone and what is still open is closed."""
        path = f"{BACKEND}/{server}"
        start, at_start = time.monotonic(), self.in_flight(server)
        self.command(f"set server {path} state drain")
        delay = self.spec.target_group.deregistration_delay_s
        while self.in_flight(server) and time.monotonic() - start < delay:
            time.sleep(0.1)
        waited, left = time.monotonic() - start, self.in_flight(server)
        self.command(f"set server {path} state maint")
        self.command(f"shutdown sessions server {path}")
        return Drained(at_start, waited, left)


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_haproxy(spec: LoadBalancerSpec, targets: Sequence[Target], workdir: Path) -> Iterator[Haproxy]:
    """HAProxy in the foreground on 127.0.0.1 with the rendered config (checked by `haproxy -c` first);
    stopped by its pid when the context exits."""
    workdir.mkdir(parents=True, exist_ok=True)
    socket_path, config, log_file = workdir / "haproxy.sock", workdir / "haproxy.cfg", workdir / "haproxy.log"
    socket_path.unlink(missing_ok=True)
    port = free_port()
    config.write_text(render_haproxy_config(spec, targets, ("127.0.0.1", port), socket_path))
    run(["haproxy", "-c", "-q", "-f", str(config)], timeout=30)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(socket_path.exists, timeout=30, what=f"HAProxy's runtime socket (log {log_file})")
        yield Haproxy(proc.pid, socket_path, log_file, spec, f"http://127.0.0.1:{port}")
    finally:
        stop_pid(proc.pid, timeout=10)
        proc.wait(timeout=10)
