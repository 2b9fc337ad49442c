"""Issue 5, "Locked down by default", checked on real parts: the program's plan deployed to the SSH
test host, the real vLLM server (CPU build) behind the real proxy, probed from outside the host.

Two deployments share the module, one at a time (both publish the API port):
- `plain`: the defaults (proxy, no TLS) with `metricsAllowedCidrs` naming a network the test machine
  is NOT in, so every path outside the allowlist, `/metrics` included, must be refused here;
- `tls`: `tls: self-signed` with certificates made like pulumi-tls makes them, and
  `metricsAllowedCidrs` = the /32 the test machine connects from.

What is refused is not guessed: the routes come from the running server itself, from the route table
vLLM logs at start-up and from `/openapi.json` of a reference container of the same image, model and
args, started without `--disable-fastapi-docs` and with VLLM_SERVER_DEV_MODE=1 (its widest route set).
Asked directly inside the host, vLLM answers those routes without any key; through the proxy each one
must be refused by nginx itself.

Section 6 is issue 14's reliability tier against `plain`: 250 requests at once, request smuggling,
oversize bodies, huge headers and slow clients. What reached vLLM is read from vLLM's own request
counters (its access log is off), so a request that got through is seen whatever it was answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import os
import re
import secrets
import select
import shlex
import shutil
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.real.harness import images, tlsutil
from tests.real.harness.common import BUILD_DIR, record_timing, run
from tests.real.harness.deployer import (
    DEFAULT_NAMES,
    Deployment,
    StageTimes,
    deploy,
    existing_host_config,
    make_cache_dir,
)
from tests.real.harness.testhost import TestHost
from vllm_endpoint.infra.catalog.names import (
    DEFAULT_ENDPOINT_NAME,
    PROXY_CONFIG_FILE,
    PROXY_KEY_CHECK_FILE,
    PROXY_TLS_CERT_FILE,
    PROXY_TLS_KEY_FILE,
    PROXY_TLS_SUBDIR,
    SECRET_API_KEY_ENV,
    VLLM_CONTAINER_PORT,
)
from vllm_endpoint.infra.plan.naming import EndpointNames
from vllm_endpoint.infra.plan.spec import ContainerSpec
from vllm_endpoint.infra.render.container import docker_run_argv
from vllm_endpoint.infra.render.ssh import known_hosts_line, ssh_command
from vllm_endpoint.infra.settings.models import StackConfig

pytestmark = pytest.mark.real

# The containers `deploy` (build_plan's default endpoint) creates.
VLLM_CONTAINER_NAME = EndpointNames(DEFAULT_ENDPOINT_NAME).vllm_container
PROXY_CONTAINER_NAME = EndpointNames(DEFAULT_ENDPOINT_NAME).proxy_container

SERVED_NAME = "tiny-locked"
# A private monitoring network the test machine is certainly not in (test hosts are 10.203.x; the settings
# refuse documentation ranges such as 192.0.2.0/24).
OTHER_MONITORING_CIDR = "10.99.0.0/16"
REFERENCE_CONTAINER = "vllm-routes"
SHM_CONTAINER = "vllm-shm64"
DOCKER_DEFAULT_SHM_BYTES = 64 * 1024 * 1024
# nginx's own error pages end with this line (server_tokens off); vLLM's errors are JSON.
NGINX_PAGE_MARK = b"<hr><center>nginx</center>"
CHAT_BODY = {"model": SERVED_NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
             "prompt": "hi", "text": "hi", "input": "hi", "tokens": [1, 2]}

# Paths the issue names; the ones the running server has are also found from its own route table.
NAMED_PATHS = [
    "/invocations", "/pause", "/resume", "/update_weights", "/tokenize", "/detokenize", "/score", "/pooling",
    "/classify", "/rerank", "/metrics", "/version", "/docs", "/redoc", "/openapi.json", "/ping", "/load",
    "/is_sleeping", "/sleep", "/wake_up", "/collective_rpc", "/server_info", "/v2/models", "/v2/rerank",
    "/inference/v1/generate", "/inference/v1/abort_requests", "/",
]
# Routes vLLM must really answer (non-404) when asked inside the host, so the proxy's refusal is
# what protects them. /docs and /openapi.json are switched off by the program's
# --disable-fastapi-docs, so they are shown on the reference container instead.
MUST_BE_LIVE_IN_DEPLOYMENT = {("POST", "/invocations"), ("POST", "/tokenize"), ("GET", "/metrics"),
                              ("GET", "/version"), ("GET", "/ping"), ("GET", "/load")}
MUST_BE_LIVE_IN_REFERENCE = {("GET", "/docs"), ("GET", "/redoc"), ("GET", "/openapi.json")}

# Run inside a vLLM container with its own python3: asks 127.0.0.1:8000 and prints a JSON map
# "METHOD PATH" -> [status, first bytes of the body]. Argument: JSON list of [method, path, body|null].
PROBE_SCRIPT = f"""
import json, sys, urllib.error, urllib.request
out = {{}}
for method, path, body in json.loads(sys.argv[1]):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request("http://127.0.0.1:{VLLM_CONTAINER_PORT}" + path, data=data, method=method,
                                 headers={{"Content-Type": "application/json"}})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            out[method + " " + path] = [resp.status, resp.read(300).decode(errors="replace")]
    except urllib.error.HTTPError as err:
        out[method + " " + path] = [err.code, err.read(300).decode(errors="replace")]
    except OSError as err:
        out[method + " " + path] = [0, repr(err)]
print(json.dumps(out))
"""


# --------------------------------------------------------------------------------------------------
# HTTP by hand: the exact path bytes and Host header go out as written (no client normalisation).

@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def from_proxy(self) -> bool:
        """An error page nginx made itself, or its refusal of a request without the key (vLLM sends no
        challenge), not something vLLM said."""
        return (NGINX_PAGE_MARK in self.body or (not self.body and self.headers.get("content-type") == "text/html")
                or self.headers.get("www-authenticate", "").startswith("Bearer"))

    def __str__(self) -> str:
        return f"HTTP {self.status} {self.body[:160]!r}"


def http_request(address: str, port: int, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                 body: bytes | None = None, host_header: str | None = None,
                 tls: ssl.SSLContext | None = None) -> Answer:
    conn: http.client.HTTPConnection
    if tls is not None:
        conn = http.client.HTTPSConnection(address, port, timeout=30, context=tls)
    else:
        conn = http.client.HTTPConnection(address, port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host_header or f"{address}:{port}")
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        if body is not None:
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read() if method != "HEAD" else b""
        return Answer(resp.status, data, {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


def _body_for(method: str) -> bytes | None:
    return json.dumps(CHAT_BODY).encode() if method in ("POST", "PUT", "PATCH") else None


def _concrete(path: str) -> str:
    """A route template such as /v1/responses/{response_id} as a requestable path."""
    return re.sub(r"\{[^}]*\}", "x", path)


# --------------------------------------------------------------------------------------------------
# The module's deployments.

@dataclass
class RouteSurvey:
    """What the running server says about its routes."""

    openapi: dict[str, list[str]]  # path -> methods, from the reference container's /openapi.json
    logged: dict[str, list[str]]  # path -> methods, from the deployed server's start-up route table
    direct: dict[str, list[Any]]  # "METHOD PATH" -> [status, body] asked inside the deployed container
    reference_direct: dict[str, list[Any]]  # the same inside the reference container

    def all_routes(self) -> dict[str, set[str]]:
        merged: dict[str, set[str]] = {}
        for table in (self.openapi, self.logged):
            for path, methods in table.items():
                merged.setdefault(path, set()).update(m.upper() for m in methods)
        # The docs pages are routes too, though /openapi.json does not list itself or them.
        for ask, (status, _body) in self.reference_direct.items():
            if status == 200:
                method, path = ask.split(" ", 1)
                merged.setdefault(path, set()).add(method)
        return merged

    def outside_allowlist(self) -> list[tuple[str, str]]:
        """(method, path) of every route that is neither under /v1/ nor /health."""
        return sorted((method, _concrete(path)) for path, methods in self.all_routes().items()
                      if not path.startswith("/v1/") and path != "/health" for method in methods)


@dataclass
class Endpoints:
    """One deployment at a time on the session's test host; tests ask for the one they need."""

    host: TestHost
    tiny_model: Path
    workdir: Path
    cache_dir: Path
    api_key: str = field(default_factory=lambda: secrets.token_urlsafe(36))
    current: str | None = None
    deployments: dict[str, Deployment] = field(default_factory=dict)
    survey: RouteSurvey | None = None
    tls_files: tlsutil.ServerCertificate | None = None

    def config(self, name: str) -> StackConfig:
        settings = {"modelPath": str(self.tiny_model), "servedModelName": SERVED_NAME, "maxModelLen": "512"}
        if name == "plain":
            settings["metricsAllowedCidrs"] = OTHER_MONITORING_CIDR
        else:
            settings |= {"tls": "self-signed", "metricsAllowedCidrs": f"{self.host.gateway}/32"}
        return existing_host_config(self.host, self.cache_dir, **settings)

    def use(self, name: str) -> Deployment:
        if self.current == name:
            return self.deployments[name]
        config = self.config(name)
        images.build_nginx_image(self.host, tag=config.access.proxy_image)
        tls_files = None
        if name == "tls":
            assert self.tls_files is not None
            tls_files = (self.tls_files.chain_pem, self.tls_files.key_pem)
        start = time.monotonic()
        self.current = None
        deployment = deploy(self.host, config, self.api_key, tls_files=tls_files)
        record_timing("security_deploy_" + name, time.monotonic() - start, gate_s=round(deployment.gate_seconds, 1))
        self.deployments[name] = deployment
        self.current = name
        if name == "plain" and self.survey is None:
            start = time.monotonic()
            self.survey = self._survey(deployment)
            record_timing("security_route_survey", time.monotonic() - start)
        return deployment

    # --- the reference server: same image, model and args, docs on, dev-mode routes on -----------------
    def _reference_spec(self, deployment: Deployment) -> ContainerSpec:
        spec = deployment.vllm
        return dataclasses.replace(
            spec, name=REFERENCE_CONTAINER,
            args=tuple(a for a in spec.args if a != "--disable-fastapi-docs"),
            env=(*spec.env, ("VLLM_SERVER_DEV_MODE", "1")),
            network=None, network_aliases=(), ports=(), restart="no", health=None, labels=(),
        )

    def _survey(self, deployment: Deployment) -> RouteSurvey:
        # After the deployed server is ready, not beside it: two vLLM start-ups on 2 cores (each binds
        # its OpenMP threads to the same cores) take longer together than one after the other.
        docker_extra(self.host, self._reference_spec(deployment))
        try:
            wait_inside_health(self.host, REFERENCE_CONTAINER, timeout=300)
            reference_direct = probe_inside(self.host, REFERENCE_CONTAINER,
                                            [(m, p, None) for m, p in sorted(MUST_BE_LIVE_IN_REFERENCE)])
            openapi = json.loads(fetch_inside(self.host, REFERENCE_CONTAINER, "/openapi.json"))
        finally:
            self.host.docker("rm", "-f", REFERENCE_CONTAINER, check=False)
        logs = self.host.docker("logs", VLLM_CONTAINER_NAME)
        logged: dict[str, list[str]] = {}
        for match in re.finditer(r"Route: (\S+), Methods: ([A-Z, ]+)", logs.stdout + logs.stderr):
            methods = logged.setdefault(match.group(1), [])
            methods += [m.strip() for m in match.group(2).split(",") if m.strip() and m.strip() not in methods]
        paths = {p: sorted(ops) for p, ops in openapi["paths"].items()}
        routes = {**paths, **logged}
        # GET on every route outside the API: 405 means the route exists (without running it).
        asks: list[tuple[str, str, Any]] = [("GET", _concrete(p), None)
                                            for p in sorted(set(routes) | {p for _, p in MUST_BE_LIVE_IN_REFERENCE})
                                            if not p.startswith("/v1/")]
        asks += [(m, p, CHAT_BODY) for m, p in sorted(MUST_BE_LIVE_IN_DEPLOYMENT) if m == "POST"]
        direct = probe_inside(self.host, VLLM_CONTAINER_NAME, asks)
        return RouteSurvey({p: [m.upper() for m in ops] for p, ops in paths.items()}, logged, direct,
                           reference_direct)


def docker_extra(host: TestHost, spec: ContainerSpec, api_key: str | None = None) -> None:
    """Runs an extra container rendered exactly like the product's `docker run` (its own key)."""
    argv = docker_run_argv(spec)
    env = host.docker_env()
    env[SECRET_API_KEY_ENV] = api_key or secrets.token_urlsafe(36)
    docker = shutil.which("docker") or "docker"
    run([docker, *argv[1:]], env=env, timeout=300)


def probe_inside(host: TestHost, container: str, asks: list[tuple[str, str, Any]]) -> dict[str, list[Any]]:
    proc = host.docker("exec", "-i", container, "python3", "-", json.dumps(asks), input=PROBE_SCRIPT, timeout=300)
    result: dict[str, list[Any]] = json.loads(proc.stdout)
    return result


def fetch_inside(host: TestHost, container: str, path: str) -> str:
    script = ("import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
              f"'http://127.0.0.1:{VLLM_CONTAINER_PORT}{path}', timeout=30).read().decode())")
    return host.docker("exec", container, "python3", "-c", script).stdout


def wait_inside_health(host: TestHost, container: str, timeout: float) -> float:
    start = time.monotonic()
    check = (f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{VLLM_CONTAINER_PORT}/health', "
             "timeout=3)")
    while time.monotonic() - start < timeout:
        state = host.docker("inspect", "--format", "{{.State.Status}}", container, check=False).stdout.strip()
        if state != "running":
            logs = host.docker("logs", "--tail", "40", container, check=False)
            raise RuntimeError(f"{container} is {state or 'gone'}:\n{logs.stdout}{logs.stderr}")
        if host.docker("exec", container, "python3", "-c", check, check=False).returncode == 0:
            return time.monotonic() - start
        time.sleep(2)
    raise TimeoutError(f"{container} did not answer /health within {timeout:.0f} s")


def inspect(host: TestHost, container: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(host.docker("inspect", container).stdout)[0]
    return data


def container_processes(host: TestHost, container: str) -> dict[int, dict[str, str]]:
    """/proc/<pid>/status of every process of a container, read from this machine: the test host's
    dockerd runs in the machine's PID namespace, so the container's processes are in our /proc."""
    pid = int(host.docker("inspect", "--format", "{{.State.Pid}}", container).stdout)
    namespace = os.readlink(f"/proc/{pid}/ns/pid")
    found: dict[int, dict[str, str]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(proc / "ns" / "pid") != namespace:
                continue
            status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
            found[int(proc.name)] = {k: v.strip() for k, v in status.items()}
    return found


# --------------------------------------------------------------------------------------------------
# Fixtures.

@pytest.fixture(scope="module")
def endpoints(test_host: TestHost, vllm_image: str, tiny_model: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    cache_dir = make_cache_dir(test_host, BUILD_DIR / "host-cache" / f"security-{test_host.name}")
    workdir = tmp_path_factory.mktemp("security")
    ca = tlsutil.make_ca(workdir / "ca", "security-test")
    stack = Endpoints(test_host, tiny_model, workdir, cache_dir)
    stack.tls_files = tlsutil.make_server_certificate(ca, workdir / "server", test_host.address)
    try:
        yield stack
    finally:
        test_host.remove_all_containers()
        test_host.docker("network", "rm", DEFAULT_NAMES.network, check=False)
        shutil.rmtree(cache_dir, ignore_errors=True)


@pytest.fixture
def plain(endpoints: Endpoints) -> Deployment:
    return endpoints.use("plain")


@pytest.fixture
def survey(endpoints: Endpoints) -> RouteSurvey:
    endpoints.use("plain")
    assert endpoints.survey is not None
    return endpoints.survey


@pytest.fixture
def tls_endpoint(endpoints: Endpoints) -> Deployment:
    return endpoints.use("tls")


def _get(d: Deployment, method: str, path: str, **kwargs: Any) -> Answer:
    return http_request(d.host.address, d.plan.api_port, method, path, **kwargs)


def _auth(d: Deployment) -> dict[str, str]:
    return {"Authorization": f"Bearer {d.api_key}"}


# --------------------------------------------------------------------------------------------------
# 1. Exposed endpoints (plain deployment).

def test_the_routes_are_real_vllm_routes_answered_without_a_key_inside_the_host(survey: RouteSurvey) -> None:
    # Printed for the record (pytest -s / -rA): the route table the checks below are driven by.
    print("openapi.json routes:", json.dumps(survey.openapi, sort_keys=True))
    print("start-up route table:", json.dumps(survey.logged, sort_keys=True))
    print("asked inside the deployed container:",
          json.dumps({k: v[0] for k, v in survey.direct.items()}, sort_keys=True))
    for method, path in MUST_BE_LIVE_IN_DEPLOYMENT:
        status, body = survey.direct[f"{method} {path}"]
        assert status not in (0, 401, 404), f"{method} {path} inside the host: {status} {body}"
    # Full inference and the tokenizer, for anyone who reaches vLLM's port: the key guards only /v1.
    assert survey.direct["POST /invocations"][0] == 200
    assert '"chat.completion"' in survey.direct["POST /invocations"][1]
    assert survey.direct["POST /tokenize"][0] == 200
    assert survey.direct["GET /metrics"][1].startswith("# HELP")
    for method, path in MUST_BE_LIVE_IN_REFERENCE:
        assert survey.reference_direct[f"{method} {path}"][0] == 200, (path, survey.reference_direct)
    # The program's --disable-fastapi-docs is in effect on the deployed server.
    assert survey.direct["GET /docs"][0] == 404 and survey.direct["GET /openapi.json"][0] == 404
    outside = {p for _, p in survey.outside_allowlist()}
    assert {"/invocations", "/tokenize", "/metrics", "/version", "/docs", "/openapi.json"} <= outside


def test_every_route_outside_the_allowlist_is_refused_by_the_proxy(plain: Deployment, survey: RouteSurvey) -> None:
    asks = set(survey.outside_allowlist())
    asks |= {(m, p) for p in NAMED_PATHS for m in ("GET", "POST")}
    leaks = []
    for method, path in sorted(asks):
        for headers in ({}, _auth(plain)):  # holding the API key opens nothing outside /v1 either
            answer = _get(plain, method, path, headers=headers, body=_body_for(method))
            if answer.status not in (403, 404) or not answer.from_proxy:
                leaks.append(f"{method} {path} (key: {bool(headers)}): {answer}")
    assert not leaks, "answered by vLLM or not refused:\n" + "\n".join(leaks)
    assert len(asks) >= 40


def test_every_api_route_needs_the_key(plain: Deployment, survey: RouteSurvey) -> None:
    api_routes = sorted((m, _concrete(p)) for p, ms in survey.all_routes().items() if p.startswith("/v1/")
                        for m in ms)
    assert ("GET", "/v1/models") in api_routes and ("POST", "/v1/chat/completions") in api_routes
    for method, path in api_routes:
        for headers in ({}, {"Authorization": "Bearer wrong-" + "x" * 40}):
            answer = _get(plain, method, path, headers=headers, body=_body_for(method))
            assert answer.status == 401, f"{method} {path} (headers {list(headers)}): {answer}"


def test_the_api_works_with_the_key_and_health_needs_none(plain: Deployment) -> None:
    client = openai.OpenAI(base_url=plain.endpoint_url, api_key=plain.api_key, max_retries=0, timeout=60)
    assert [m.id for m in client.models.list().data] == [SERVED_NAME]
    reply = client.chat.completions.create(model=SERVED_NAME, messages=[{"role": "user", "content": "hello"}],
                                           max_tokens=4, temperature=0)
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    wrong = openai.OpenAI(base_url=plain.endpoint_url, api_key="wrong-" + "x" * 40, max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    assert _get(plain, "GET", "/v1/models").status == 401
    health = _get(plain, "GET", "/health")
    assert health.status == 200 and health.body == b""


@pytest.mark.parametrize("path", [
    "/v1/../metrics", "/v1/%2e%2e/metrics", "/v1/%2E%2E/metrics", "//metrics", "/v1/..%2fmetrics", "/%2Fmetrics",
    "/health/../docs", "/v1/../invocations", "/v1/%2e%2e/version", "/v1/models/../../version",
    "/v1/models%2f..%2f..%2fversion", "/v1%2f..%2fversion", "/v1/../../version", "/V1/models", "/v1",
    "/health/", "/metrics/", "/health%00", "/v1%2fmodels", "/%76%31/models", "/v1/./models", "/v1//models",
    "/metrics/../v1/models", "/v1/..;/metrics", "/v1/models;/../../metrics", "/v1/models%3F/../../metrics",
    pytest.param("/v1/" + "a" * 20000, id="v1-path-of-20000-bytes"),
    pytest.param("/" + "m" * 5000, id="root-path-of-5000-bytes"),
])
def test_path_tricks_gain_nothing(plain: Deployment, path: str) -> None:
    answer = _get(plain, "GET", path)
    # Either nginx refused it itself (401: a /v1 path without the key), or it reached vLLM under /v1 and
    # vLLM wanted the key.
    if answer.from_proxy:
        assert answer.status in (301, 400, 401, 403, 404, 414), answer
        if answer.status == 301:  # /v1 -> /v1/: a redirect, nothing forwarded
            assert answer.headers["location"].endswith("/v1/")
    else:
        assert answer.status == 401 and b"Unauthorized" in answer.body, answer


def _smuggle(d: Deployment, inner: str, method: str = "GET") -> Answer:
    """A request whose path carries percent-encoded CR LF: if the proxy forwards the decoded path,
    the upstream connection receives `inner`, i.e. more than one request."""
    return _get(d, method, urllib.parse.quote(inner, safe="/"))


def _vllm_saw(host: TestHost, needle: str, since: str, wait_s: float = 4.0) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        logs = host.docker("logs", "--since", since, VLLM_CONTAINER_NAME, check=False)
        if needle in logs.stdout + logs.stderr:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def _inference_count(host: TestHost) -> float:
    text = fetch_inside(host, VLLM_CONTAINER_NAME, "/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total{"))


def test_encoded_crlf_cannot_split_a_request_to_reach_vllm(plain: Deployment) -> None:
    """A decoded CR LF would make the upstream connection carry a second request: here POST /tokenize,
    which vLLM answers without the key and counts (vLLM's access log is off, so its counters tell)."""
    body = json.dumps({"model": SERVED_NAME, "prompt": "smuggled"})
    before = _vllm_counters(plain.host)
    answer = _smuggle(plain, "/v1/x HTTP/1.1\r\nHost: vllm\r\n\r\n"
                             "POST /tokenize HTTP/1.1\r\nHost: vllm\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(body)}\r\n\r\n{body}GET /health?tail=")
    time.sleep(2)  # vLLM counts a request when it has answered it
    moved = _moved(before, _vllm_counters(plain.host))
    assert "/tokenize" not in moved, (
        f"the proxy forwarded a decoded CR LF: vLLM received a second request POST /tokenize that the "
        f"allowlist refuses (client saw {answer}; vLLM's counters moved {moved})")
    # The counters do see a /tokenize that reaches vLLM (asked inside its container).
    probe_inside(plain.host, VLLM_CONTAINER_NAME, [("POST", "/tokenize", {"model": SERVED_NAME, "prompt": "x"})])
    assert _moved(before, _vllm_counters(plain.host)).get("/tokenize") == 1


def test_encoded_crlf_cannot_run_inference_without_the_key(plain: Deployment) -> None:
    nonce = secrets.token_hex(8)
    body = json.dumps({"messages": [{"role": "user", "content": "smuggled"}], "max_tokens": 3})
    before = _inference_count(plain.host)
    since = str(int(time.time()) - 1)
    # The tail makes the rest of nginx's request line a third, well-formed request.
    answer = _smuggle(plain, "/v1/x HTTP/1.1\r\nHost: vllm\r\n\r\n"
                             f"POST /invocations?smuggled={nonce} HTTP/1.1\r\nHost: vllm\r\n"
                             f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
                             "GET /health?tail=")
    seen = _vllm_saw(plain.host, f"smuggled={nonce}", since, wait_s=8)
    after = _inference_count(plain.host)
    assert not seen and after == before, (
        f"unauthenticated inference through the proxy: vLLM ran POST /invocations?smuggled={nonce} "
        f"(request_success_total {before} -> {after}; client saw {answer})")


def test_health_answers_only_get_and_head(plain: Deployment) -> None:
    assert _get(plain, "GET", "/health").status == 200
    head = _get(plain, "HEAD", "/health")
    # nginx's `limit_except GET` lets HEAD through; vLLM 0.32 routes /health for GET only and says 405.
    assert head.status in (200, 405) and head.body == b"", head
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "TRACE"):
        answer = _get(plain, method, "/health", body=_body_for(method))
        assert answer.status in (403, 405) and answer.from_proxy, f"{method} /health: {answer}"
    for path in ("/v1/models", "/invocations", "/metrics"):
        answer = _get(plain, "TRACE", path, headers=_auth(plain))
        assert answer.status == 405 and answer.from_proxy, f"TRACE {path}: {answer}"


@pytest.mark.parametrize("host_header", ["localhost", "vllm:8000", "127.0.0.1", "vllm", "127.0.0.1:8000"])
def test_a_forged_host_header_gains_nothing(plain: Deployment, host_header: str) -> None:
    for method, path in [("GET", "/metrics"), ("POST", "/invocations"), ("GET", "/version"), ("GET", "/docs"),
                         ("POST", "/tokenize"), ("GET", "/")]:
        honest = _get(plain, method, path, body=_body_for(method))
        forged = _get(plain, method, path, body=_body_for(method), host_header=host_header)
        assert forged.from_proxy and (forged.status, forged.body) == (honest.status, honest.body), (
            f"{method} {path} with Host: {host_header}: {forged} (honest: {honest})")
    assert _get(plain, "GET", "/v1/models", host_header=host_header).status == 401
    models = _get(plain, "GET", "/v1/models", host_header=host_header, headers=_auth(plain))
    assert models.status == 200 and json.loads(models.body)["data"][0]["id"] == SERVED_NAME


def test_metrics_are_refused_to_a_machine_outside_the_monitoring_cidrs(plain: Deployment) -> None:
    conf = (Path(plain.plan.proxy_dir) / PROXY_CONFIG_FILE).read_text()
    assert f"allow {OTHER_MONITORING_CIDR};" in conf  # an ACL exists; it just does not name this machine
    for headers in ({}, _auth(plain)):
        answer = _get(plain, "GET", "/metrics", headers=headers)
        assert answer.status == 403 and answer.from_proxy, answer


# --------------------------------------------------------------------------------------------------
# 3. Hardening, live (plain deployment).

def test_vllm_runs_unprivileged_with_private_ipc_and_the_rendered_shm(plain: Deployment) -> None:
    host = plain.host
    assert host.docker("exec", VLLM_CONTAINER_NAME, "id", "-u").stdout.strip() == str(host.uid) != "0"
    processes = container_processes(host, VLLM_CONTAINER_NAME)
    assert len(processes) >= 2  # docker-init, the API server, the engine core
    for pid, status in processes.items():
        uids = status["Uid"].split()
        assert set(uids) == {str(host.uid)}, (pid, status["Name"], uids)
        for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
            assert int(status[cap], 16) == 0, (pid, status["Name"], cap, status[cap])
        assert status["NoNewPrivs"] == "1", (pid, status["Name"])
    info = inspect(host, VLLM_CONTAINER_NAME)
    hc = info["HostConfig"]
    assert hc["CapDrop"] == ["ALL"] and not hc.get("CapAdd") and not hc["Privileged"]
    assert "no-new-privileges:true" in hc["SecurityOpt"]
    assert hc["IpcMode"] == "private"
    assert plain.vllm.shm_size_mb is not None
    assert hc["ShmSize"] == plain.vllm.shm_size_mb * 1024 * 1024 > DOCKER_DEFAULT_SHM_BYTES
    sockets = [m for m in info["Mounts"] if "docker" in m["Source"] or "docker.sock" in m["Destination"]]
    assert sockets == [], sockets
    looked = host.docker("exec", VLLM_CONTAINER_NAME, "python3", "-c",
                         "import glob, os; print(sorted(glob.glob('/run/docker*') + glob.glob('/var/run/docker*')"
                         f" + glob.glob('/run/vet-hosts*')), os.path.exists('{host.docker_socket}'))").stdout
    assert looked.strip() == "[] False"


def test_vllm_does_not_start_with_dockers_default_64mib_shm(plain: Deployment) -> None:
    spec = dataclasses.replace(plain.vllm, name=SHM_CONTAINER, shm_size_mb=None, network=None,
                               network_aliases=(), ports=(), restart="no", health=None, labels=())
    host = plain.host
    start = time.monotonic()
    try:
        docker_extra(host, spec)
        assert inspect(host, SHM_CONTAINER)["HostConfig"]["ShmSize"] == DOCKER_DEFAULT_SHM_BYTES
        state: dict[str, Any] = {}
        while time.monotonic() - start < 180:
            state = inspect(host, SHM_CONTAINER)["State"]
            if state["Status"] != "running":
                break
            served = host.docker("exec", SHM_CONTAINER, "python3", "-c",
                                 "import urllib.request; urllib.request.urlopen("
                                 f"'http://127.0.0.1:{VLLM_CONTAINER_PORT}/health', timeout=3)", check=False)
            assert served.returncode != 0, "vLLM became ready with a 64 MiB /dev/shm"
            time.sleep(2)
        logs = host.docker("logs", SHM_CONTAINER, check=False)
        assert state.get("Status") == "exited" and state["ExitCode"] != 0, state
        assert "Insufficient space in /dev/shm" in logs.stdout + logs.stderr
    finally:
        host.docker("rm", "-f", SHM_CONTAINER, check=False)
        record_timing("security_shm64_failure", time.monotonic() - start)


def test_proxy_runs_read_only_and_unprivileged(plain: Deployment) -> None:
    host = plain.host
    info = inspect(host, PROXY_CONTAINER_NAME)
    hc = info["HostConfig"]
    assert hc["ReadonlyRootfs"] is True
    assert hc["CapDrop"] == ["ALL"] and "no-new-privileges:true" in hc["SecurityOpt"]
    assert info["Config"]["User"] == host.container_user
    processes = container_processes(host, PROXY_CONTAINER_NAME)
    assert len(processes) >= 2  # nginx master and a worker
    for pid, status in processes.items():
        assert set(status["Uid"].split()) == {str(host.uid)}, (pid, status["Name"], status["Uid"])
        assert int(status["CapEff"], 16) == 0 and status["NoNewPrivs"] == "1", (pid, status)
    refused = host.docker("exec", PROXY_CONTAINER_NAME, "sh", "-c", "echo x > /etc/nginx/owned", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr, refused.stderr
    assert not [m for m in info["Mounts"] if "docker" in m["Source"]]


# --------------------------------------------------------------------------------------------------
# 4. Secrets.

def test_the_api_key_is_on_no_command_line_and_only_in_vllms_environment(plain: Deployment) -> None:
    key = plain.api_key.encode()
    # Some traffic first, so the key has passed through the proxy and into vLLM.
    assert _get(plain, "GET", "/v1/models", headers=_auth(plain)).status == 200
    vllm_pid = int(plain.host.docker("inspect", "--format", "{{.State.Pid}}", VLLM_CONTAINER_NAME).stdout)
    vllm_ns = os.readlink(f"/proc/{vllm_pid}/ns/pid")
    on_cmdline, in_environ, scanned = [], [], 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes()
            scanned += 1
            if key in cmdline:
                on_cmdline.append((proc.name, cmdline.replace(b"\0", b" ")[:200]))
            if key in (proc / "environ").read_bytes() and os.readlink(proc / "ns" / "pid") != vllm_ns:
                in_environ.append((proc.name, cmdline.replace(b"\0", b" ")[:200]))
    assert scanned > 20
    assert on_cmdline == [], on_cmdline
    assert in_environ == [], f"processes outside the vLLM container hold the key: {in_environ}"
    vllm_env = inspect(plain.host, VLLM_CONTAINER_NAME)["Config"]
    assert f"{SECRET_API_KEY_ENV}={plain.api_key}" in vllm_env["Env"]
    assert plain.api_key not in json.dumps([vllm_env["Cmd"], vllm_env["Entrypoint"]])
    proxy = inspect(plain.host, PROXY_CONTAINER_NAME)
    assert plain.api_key not in json.dumps(proxy)
    assert plain.api_key not in plain.docker_run
    for name in (VLLM_CONTAINER_NAME, PROXY_CONTAINER_NAME):
        logs = plain.host.docker("logs", name)
        assert plain.api_key not in logs.stdout + logs.stderr, f"the key is in the logs of {name}"


# Every place a client might put the key, other than `Authorization: Bearer`.
KEY_IN_QUERY = ("api_key", "api-key", "apikey", "key", "token", "access_token", "auth", "authorization",
                "password", "secret", "API_KEY")
KEY_IN_HEADERS = ("X-Api-Key", "api-key")


def test_a_key_sent_any_way_is_in_no_log_on_the_host(plain: Deployment) -> None:
    key = plain.api_key
    since = plain.host.ssh("date -u +%Y-%m-%dT%H:%M:%S").stdout.strip()
    for name in KEY_IN_QUERY:
        for path in (f"/v1/models?{name}={key}", f"/v1/models?limit=1&{name}={urllib.parse.quote(key)}"):
            refused = _get(plain, "GET", path)
            assert refused.status == 400 and b"Authorization: Bearer" in refused.body, (path, refused)
    for header in KEY_IN_HEADERS:
        refused = _get(plain, "GET", "/v1/models", headers={header: key})
        assert refused.status == 400 and b"Authorization: Bearer" in refused.body, (header, refused)
    # The ways that are not refused: the right header, a wrong scheme, the body (vLLM ignores a key there).
    assert _get(plain, "GET", "/v1/models", headers=_auth(plain)).status == 200
    assert _get(plain, "GET", "/v1/models", headers={"Authorization": f"Basic {key}"}).status == 401
    chat = dict(CHAT_BODY, api_key=key, user=key)
    answered = _get(plain, "POST", "/v1/chat/completions", headers=_auth(plain), body=json.dumps(chat).encode())
    assert answered.status == 200, answered

    # Every log on the host: both containers' (as `docker logs` shows them and as Docker keeps them on
    # disk) and every file in the endpoint's folders.
    found = []
    for name in (VLLM_CONTAINER_NAME, PROXY_CONTAINER_NAME):
        shown = plain.host.docker("logs", "--since", since, name)
        if key in shown.stdout + shown.stderr:
            found.append(f"docker logs {name}")
        log_path = Path(plain.host.docker("inspect", "--format", "{{.LogPath}}", name).stdout.strip())
        if key.encode() in log_path.read_bytes():
            found.append(str(log_path))
    # The one file that holds the key by design: the proxy's key check, 0600 and owned by the containers' user.
    key_check = Path(plain.plan.proxy_dir) / PROXY_KEY_CHECK_FILE
    assert key.encode() in key_check.read_bytes() and key_check.stat().st_mode & 0o777 == 0o600
    for file in Path(plain.plan.host_cache_dir).rglob("*"):
        with contextlib.suppress(OSError):
            if file.is_file() and file != key_check and key.encode() in file.read_bytes():
                found.append(str(file))
    assert found == [], f"the key is in {found}"
    # The refused requests are logged, by path alone.
    proxy_log = plain.host.docker("logs", "--since", since, PROXY_CONTAINER_NAME).stdout
    assert '"GET /v1/models HTTP/1.1" 400' in proxy_log and "?" not in proxy_log.split("HTTP/1.1")[0]


# --------------------------------------------------------------------------------------------------
# 5. SSH trust: the `ssh_command` stack output.

def test_the_ssh_command_output_connects_only_to_the_pinned_host(test_host: TestHost, tmp_path: Path) -> None:
    command = ssh_command(test_host.ssh_user, test_host.address, str(test_host.identity_file),
                          str(test_host.known_hosts_file), test_host.ssh_port)
    connected = run([*shlex.split(command), "echo", "connected-as-$(id -u)"], check=False, timeout=60)
    assert connected.returncode == 0, connected.stderr
    assert connected.stdout.strip() == f"connected-as-{test_host.uid}"

    other_key = tmp_path / "other_host_key"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)])
    other_pin = tmp_path / "known_hosts_other"
    other_pin.write_text(known_hosts_line(test_host.address, other_key.with_suffix(".pub").read_text()) + "\n")
    pinned_elsewhere = ssh_command(test_host.ssh_user, test_host.address, str(test_host.identity_file),
                                   str(other_pin), test_host.ssh_port)
    refused = run([*shlex.split(pinned_elsewhere), "echo", "connected"], check=False, timeout=60)
    assert refused.returncode == 255 and "connected" not in refused.stdout
    assert ("REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr
            or "Host key verification failed" in refused.stderr), refused.stderr


# --------------------------------------------------------------------------------------------------
# 6. Load and hostile HTTP (issue 14's reliability tier, plain deployment): what the proxy must take
# without refusing or dropping anything, and what it must stop before it reaches vLLM.

# The load: short chats (a few tokens each, so the run measures the path, not generation) and
# streams, all in flight at once. The `plain` deployment leaves maxNumSeqs unset: the plan sizes the proxy
# for the default of the host's GPU (connection_limits; 1024 sequences -> worker_connections 5120 here),
# while the CPU build of vLLM runs at most 128 at once (its own default): the proxy must hold every request
# open until vLLM answers, not refuse or drop any. Measured here: the 250 took 2-4 s, and vLLM's engine
# queue stayed near empty (its HTTP front end admits requests more slowly than the tiny model finishes them).
LOAD_CHATS = 200
LOAD_STREAMS = 50
LOAD_MAX_TOKENS = 8
LOAD_TIMEOUT_S = 300
# nginx's value for client_header_timeout / client_body_timeout when the config sets none (nginx docs).
NGINX_DEFAULT_CLIENT_TIMEOUT_S = 60.0
# Slack for a timeout that fires: nginx checks timers between events, and this loop polls.
TIMEOUT_MARGIN_S = 15.0


def _load(d: Deployment) -> tuple[list[Any], float]:
    """LOAD_CHATS chats and LOAD_STREAMS streams started together with the official async client; each
    result is (kind, finish_reason, completion tokens or content chunks) or the exception it raised."""

    async def chat(client: openai.AsyncOpenAI, i: int) -> tuple[str, str | None, int]:
        reply = await client.chat.completions.create(
            model=SERVED_NAME, messages=[{"role": "user", "content": f"load {i}"}], max_tokens=LOAD_MAX_TOKENS,
            temperature=0)
        return "chat", reply.choices[0].finish_reason, reply.usage.completion_tokens if reply.usage else 0

    async def stream(client: openai.AsyncOpenAI, i: int) -> tuple[str, str | None, int]:
        finish, chunks = None, 0
        async with await client.chat.completions.create(
                model=SERVED_NAME, messages=[{"role": "user", "content": f"stream {i}"}],
                max_tokens=LOAD_MAX_TOKENS, temperature=0, stream=True) as events:
            async for event in events:
                for choice in event.choices:
                    chunks += bool(choice.delta.content)
                    finish = choice.finish_reason or finish
        return "stream", finish, chunks

    async def everything() -> list[Any]:
        # max_retries=0: a refused or dropped request must show as a failure, not be retried away.
        async with openai.AsyncOpenAI(base_url=d.endpoint_url, api_key=d.api_key, max_retries=0,
                                      timeout=LOAD_TIMEOUT_S) as client:
            jobs = [chat(client, i) for i in range(LOAD_CHATS)] + [stream(client, i) for i in range(LOAD_STREAMS)]
            return await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), LOAD_TIMEOUT_S)

    start = time.monotonic()
    results = asyncio.run(everything())
    return results, time.monotonic() - start


def test_200_chats_and_50_streams_at_once_all_succeed_through_the_proxy(plain: Deployment, times: StageTimes) -> None:
    conf = (Path(plain.plan.proxy_dir) / PROXY_CONFIG_FILE).read_text()
    worker_connections = re.search(r"worker_connections (\d+);", conf)
    before = _vllm_counters(plain.host)
    results, wall = _load(plain)
    after = _vllm_counters(plain.host)
    # vLLM counts a finished request as it hands back the last output; give its counter a moment.
    wait_until = time.monotonic() + 10
    while after["inferences"] - before["inferences"] < LOAD_CHATS + LOAD_STREAMS and time.monotonic() < wait_until:
        time.sleep(1)
        after = _vllm_counters(plain.host)
    failed = [r for r in results if isinstance(r, BaseException)]
    chats = [r for r in results if not isinstance(r, BaseException) and r[0] == "chat"]
    streams = [r for r in results if not isinstance(r, BaseException) and r[0] == "stream"]
    # For the record (machine-dependent, so not asserted): how long the requests waited in vLLM's queue.
    queued = {k: after[k] - before[k] for k in ("queue_s", "queue_n", "queue_le_0.3")}
    times.add("load_200_chats_50_streams", wall, max_num_seqs=plain.plan.proxy_settings.max_num_seqs,
              worker_connections=worker_connections.group(1) if worker_connections else "?",
              failed=len(failed), max_tokens=LOAD_MAX_TOKENS,
              queued_n=queued["queue_n"], queue_s_mean=round(queued["queue_s"] / max(1.0, queued["queue_n"]), 3),
              queued_over_0_3s=queued["queue_n"] - queued["queue_le_0.3"])
    assert not failed, f"{len(failed)} of {len(results)} failed, e.g. {[repr(e)[:300] for e in failed[:5]]}"
    assert len(chats) == LOAD_CHATS and len(streams) == LOAD_STREAMS
    assert all(finish in ("stop", "length") and tokens > 0 for _, finish, tokens in chats), chats
    # A stream that the proxy cut short ends without a finish_reason.
    assert all(finish in ("stop", "length") and chunks > 0 for _, finish, chunks in streams), streams
    # Every one of them was run by vLLM itself, once.
    assert after["inferences"] - before["inferences"] == LOAD_CHATS + LOAD_STREAMS, (before, after)


# --- HTTP by hand, byte for byte, on one connection -----------------------------------------------

class _Wire:
    """A client socket read into a buffer: every answer on one connection, with no client library
    deciding what counts as a response."""

    def __init__(self, sock: socket.socket, idle_s: float) -> None:
        self.sock, self.idle_s, self.buf, self.closed = sock, idle_s, bytearray(), False

    def more(self) -> bool:
        if self.closed:
            return False
        self.sock.settimeout(self.idle_s)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except OSError:  # a reset is the server closing too
            data = b""
        if not data:
            self.closed = True
            return False
        self.buf += data
        return True

    def until(self, marker: bytes) -> bytes | None:
        while (end := self.buf.find(marker)) < 0:
            if not self.more():
                return None
        out = bytes(self.buf[:end])
        del self.buf[:end + len(marker)]
        return out

    def take(self, size: int) -> bytes:
        while len(self.buf) < size and self.more():
            pass
        out = bytes(self.buf[:size])
        del self.buf[:size]
        return out

    def answers(self) -> list[Answer]:
        """Every response the server sends until it closes or stays silent for idle_s."""
        found = []
        while (head := self.until(b"\r\n\r\n")) is not None:
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = b""
                while (size_line := self.until(b"\r\n")) is not None:
                    size = int(size_line.split(b";")[0], 16)
                    body += self.take(size)
                    self.until(b"\r\n")
                    if size == 0:
                        break
            elif "content-length" in headers:
                body = self.take(int(headers["content-length"]))
            else:
                while self.more():
                    pass
                body = bytes(self.buf)
                self.buf.clear()
            status = int(status_line.split()[1])
            if not 100 <= status < 200:
                found.append(Answer(status, body, headers))
        return found


def raw_exchange(d: Deployment, data: bytes, *, idle_s: float = 5.0) -> tuple[list[Answer], bool]:
    """Sends `data` as it is on one connection; returns every answer and whether the server closed."""
    with socket.create_connection((d.host.address, d.plan.api_port), timeout=30) as sock:
        with contextlib.suppress(OSError):  # the server may answer and close before it has read everything
            sock.sendall(data)
        wire = _Wire(sock, idle_s)
        answers = wire.answers()
        return answers, wire.closed


def _vllm_counters(host: TestHost) -> dict[str, float]:
    """vLLM's own counters, read inside its container: requests per route as its HTTP instrumentation
    counts them (every route but /metrics, /health, /load, /ping, /version, /server_info), whatever it
    answered, and finished inferences (`inferences`). Only a request that reached vLLM moves them."""
    counts = {"inferences": 0.0, "queue_s": 0.0, "queue_n": 0.0, "queue_le_0.3": 0.0}
    for line in fetch_inside(host, VLLM_CONTAINER_NAME, "/metrics").splitlines():
        value = line.rsplit(" ", 1)[-1]
        if line.startswith("http_requests_total{"):
            handler = re.search(r'handler="([^"]*)"', line)
            key = handler.group(1) if handler else "?"
            counts[key] = counts.get(key, 0.0) + float(value)
        elif line.startswith("vllm:request_success_total{"):
            counts["inferences"] += float(value)
        # Time in vLLM's queue of each request it ran (a histogram): moves only with `inferences`.
        elif line.startswith("vllm:request_queue_time_seconds_sum{"):
            counts["queue_s"] += float(value)
        elif line.startswith("vllm:request_queue_time_seconds_count{"):
            counts["queue_n"] += float(value)
        elif line.startswith("vllm:request_queue_time_seconds_bucket{") and 'le="0.3"' in line:
            counts["queue_le_0.3"] += float(value)
    return counts


def _moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted(set(before) | set(after))
            if after.get(k, 0.0) != before.get(k, 0.0)}


def _request_bytes(method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"",
                   version: str = "HTTP/1.1") -> bytes:
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1") + body


def _smuggled() -> bytes:
    """Requests that vLLM would run for anyone who reaches its port (/tokenize, /invocations: both move
    its counters), then routes outside the allowlist and the API without the key."""
    tokenize = json.dumps({"model": SERVED_NAME, "prompt": "smuggled"}).encode()
    invoke = json.dumps({"model": SERVED_NAME, "messages": [{"role": "user", "content": "smuggled"}],
                         "max_tokens": 2}).encode()
    json_headers = [("Host", "vllm"), ("Content-Type", "application/json")]
    return (_request_bytes("POST", "/tokenize", [*json_headers, ("Content-Length", str(len(tokenize)))], tokenize)
            + _request_bytes("POST", "/invocations", [*json_headers, ("Content-Length", str(len(invoke)))], invoke)
            + _request_bytes("GET", "/metrics", [("Host", "vllm")])
            + _request_bytes("GET", "/version", [("Host", "vllm")])
            + _request_bytes("GET", "/v1/models", [("Host", "vllm")]))


def _smuggling_attempts() -> dict[str, tuple[list[tuple[str, str]], bytes, str]]:
    """name -> (framing headers, body, HTTP version) of each request that hides _smuggled() in its body
    for a reader that frames the body differently from the proxy."""
    inner = _smuggled()
    ended_then_inner = b"0\r\n\r\n" + inner  # a chunked reader stops at the 0 chunk; the rest is "next"
    in_one_chunk = f"{len(inner):x}\r\n".encode() + inner + b"\r\n0\r\n\r\n"
    te, cl = "Transfer-Encoding", "Content-Length"
    attempts = {
        "CL.TE": ([(cl, str(len(ended_then_inner))), (te, "chunked")], ended_then_inner, "HTTP/1.1"),
        "TE.CL": ([(te, "chunked"), (cl, "4")], in_one_chunk, "HTTP/1.1"),
        "two Content-Length, 0 first": ([(cl, "0"), (cl, str(len(inner)))], inner, "HTTP/1.1"),
        "two Content-Length, 0 last": ([(cl, str(len(inner))), (cl, "0")], inner, "HTTP/1.1"),
        "two Transfer-Encoding": ([(te, "chunked"), (te, "identity")], ended_then_inner, "HTTP/1.1"),
        "Transfer-Encoding with a space before the colon": ([(te + " ", "chunked")], ended_then_inner, "HTTP/1.1"),
        "Transfer-Encoding folded onto a second line": ([(te, "\r\n chunked")], ended_then_inner, "HTTP/1.1"),
        "chunked over HTTP/1.0": ([(te, "chunked")], ended_then_inner, "HTTP/1.0"),
        # The legitimate framing: the requests are body bytes, and must stay that.
        "requests inside a chunked body": ([(te, "chunked")], in_one_chunk, "HTTP/1.1"),
        "requests inside a Content-Length body": ([(cl, str(len(inner)))], inner, "HTTP/1.1"),
    }
    for value in ("chunked, identity", "identity, chunked", "xchunked", "identity", "chunked;x=1"):
        attempts[f"Transfer-Encoding: {value}"] = ([(te, value)], ended_then_inner, "HTTP/1.1")
        attempts[f"Content-Length and Transfer-Encoding: {value}"] = (
            [(cl, str(len(ended_then_inner))), (te, value)], ended_then_inner, "HTTP/1.1")
    return attempts


def test_smuggled_requests_never_reach_vllm(plain: Deployment) -> None:
    host_header = ("Host", f"{plain.host.address}:{plain.plan.api_port}")
    # Asked last on the same connection: it must be answered as itself (and closes the connection).
    last = _request_bytes("GET", "/health", [host_header, ("Connection", "close")])
    before = _vllm_counters(plain.host)
    wrong = []
    for name, (framing, body, version) in _smuggling_attempts().items():
        outer = _request_bytes("POST", "/v1/chat/completions",
                               [host_header, ("Authorization", f"Bearer {plain.api_key}"),
                                ("Content-Type", "application/json"), *framing], body, version)
        answers, _closed = raw_exchange(plain, outer + last)
        first = answers[0] if answers else None
        # Refused by nginx (501: a transfer coding it does not implement), or forwarded as one request
        # whose body vLLM did not take for a chat (its JSON error).
        refused = first is not None and first.from_proxy and first.status in (400, 501)
        forwarded = first is not None and not first.from_proxy and 400 <= first.status < 500
        rest = answers[1:]
        only_the_last = rest == [] or (len(rest) == 1 and rest[0].status == 200 and rest[0].body == b"")
        if not (refused or forwarded) or not only_the_last:
            wrong.append(f"{name}: {[str(a) for a in answers]}")
        print(f"smuggling, {name}: {[a.status for a in answers]} {'refused' if refused else 'one request'}")
    # A smuggled inference would still be running just after its connection closed.
    time.sleep(3)
    after = _vllm_counters(plain.host)
    assert not wrong, "answered other than as one request:\n" + "\n".join(wrong)
    moved = _moved(before, after)
    # Only the outer chat requests reached vLLM (each answered with a JSON error: no inference).
    assert set(moved) <= {"/v1/chat/completions"}, f"vLLM ran smuggled requests: {moved}"
    # The counters do see a request that reaches vLLM: one /tokenize asked inside the container.
    probe_inside(plain.host, VLLM_CONTAINER_NAME, [("POST", "/tokenize", {"model": SERVED_NAME, "prompt": "x"})])
    assert _moved(after, _vllm_counters(plain.host)).get("/tokenize") == 1
    # The connections to vLLM were not left out of step: each next answer belongs to its request.
    for _ in range(5):
        models = _get(plain, "GET", "/v1/models", headers=_auth(plain))
        assert models.status == 200 and json.loads(models.body)["data"][0]["id"] == SERVED_NAME, models


def test_an_oversize_body_is_refused_by_the_proxy_and_nothing_is_forwarded(plain: Deployment) -> None:
    conf = (Path(plain.plan.proxy_dir) / PROXY_CONFIG_FILE).read_text()
    limit_mb = plain.plan.proxy_settings.max_body_mb
    assert f"client_max_body_size {limit_mb}m;" in conf
    limit = limit_mb * 1024 * 1024
    head = [("Host", f"{plain.host.address}:{plain.plan.api_port}"), ("Authorization", f"Bearer {plain.api_key}"),
            ("Content-Type", "application/json")]
    before = _vllm_counters(plain.host)
    # Declared too large: refused from the headers alone.
    answers, _ = raw_exchange(plain, _request_bytes("POST", "/v1/chat/completions",
                                                    [*head, ("Content-Length", str(limit + 1))]))
    assert [a.status for a in answers] == [413] and answers[0].from_proxy, [str(a) for a in answers]
    # nginx ends the connection after the refusal. It says so in the answer; the socket itself closes only
    # after nginx's lingering close (lingering_timeout 5 s), which races a reader that idles for 5 s too.
    assert answers[0].headers.get("connection") == "close", answers[0]
    # Sent in chunks with no length given: refused once the limit is passed.
    chunk = b"x" * (1024 * 1024)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    with socket.create_connection((plain.host.address, plain.plan.api_port), timeout=30) as sock:
        sent = 0
        with contextlib.suppress(OSError):  # nginx stops reading once it has refused
            sock.sendall(_request_bytes("POST", "/v1/chat/completions", [*head, ("Transfer-Encoding", "chunked")]))
            while sent <= limit:
                sock.sendall(framed)
                sent += len(chunk)
        streamed = _Wire(sock, 10).answers()
    assert [a.status for a in streamed] == [413] and streamed[0].from_proxy, [str(a) for a in streamed]
    assert _moved(before, _vllm_counters(plain.host)) == {}, "vLLM received a request over the size limit"
    # Under the limit, the same route is forwarded (vLLM answers, the counter moves).
    padded = json.dumps(dict(CHAT_BODY, padding="x" * (1024 * 1024))).encode()
    answer = _get(plain, "POST", "/v1/chat/completions", headers=_auth(plain), body=padded)
    assert not answer.from_proxy and answer.status < 500, answer
    assert "/v1/chat/completions" in _moved(before, _vllm_counters(plain.host))


def test_bodies_without_the_key_are_refused_at_their_headers_and_never_buffered(plain: Deployment) -> None:
    """Clients without the key that announce the largest body allowed, send some and stall. The proxy once
    buffered such bodies in its 256 MiB /tmp until vLLM refused them, so a few filled it and long prompts
    got 500. It refuses them from their headers now: at once, with nothing kept, and vLLM sees none."""
    limit = plain.plan.proxy_settings.max_body_mb * 1024 * 1024
    head = [("Host", f"{plain.host.address}:{plain.plan.api_port}"), ("Content-Type", "application/json"),
            ("Content-Length", str(limit))]
    keys = [[], [("Authorization", "Bearer wrong-" + "x" * 40)], [("Authorization", f"Bearer {plain.api_key}x")],
            [("Authorization", f"Bearer {plain.api_key.swapcase()}")]]
    before = _vllm_counters(plain.host)
    holders, waits = [], []
    try:
        for i in range(8):  # eight bodies of the largest size would fill the proxy's /tmp twice over
            sock = socket.create_connection((plain.host.address, plain.plan.api_port), timeout=10)
            holders.append(sock)
            started = time.monotonic()
            sock.sendall(_request_bytes("POST", "/v1/chat/completions", [*head, *keys[i % len(keys)]]))
            with contextlib.suppress(OSError):  # refused, nginx may stop reading
                sock.sendall(b"x" * (1024 * 1024))
            answer = _Wire(sock, 5).until(b"\r\n\r\n")
            waits.append(time.monotonic() - started)
            assert answer is not None and answer.startswith(b"HTTP/1.1 401 "), (i, answer)
            assert b'www-authenticate: bearer realm="vllm"' in answer.lower(), answer
        kept = plain.host.docker("exec", PROXY_CONTAINER_NAME, "du", "-sk", "/tmp").stdout.split()[0]
        # While they hold their connections, a long prompt with the key is served.
        padded = json.dumps(dict(CHAT_BODY, padding="x" * (256 * 1024))).encode()
        served = _get(plain, "POST", "/v1/chat/completions", headers=_auth(plain), body=padded)
    finally:
        for sock in holders:
            sock.close()
    print(f"bodies without the key: refused after {max(waits):.2f} s at most; the proxy's /tmp held {kept} KiB")
    assert max(waits) < 2, waits
    assert int(kept) < 1024, f"the proxy kept {kept} KiB of refused bodies in /tmp"
    assert not served.from_proxy and served.status < 500, served
    routes = {route: n for route, n in _moved(before, _vllm_counters(plain.host)).items() if route.startswith("/")}
    assert routes == {"/v1/chat/completions": 1}, f"a refused body reached vLLM: {routes}"


def test_huge_headers_are_refused_by_the_proxy_which_keeps_serving(plain: Deployment) -> None:
    host_header = ("Host", f"{plain.host.address}:{plain.plan.api_port}")
    auth = ("Authorization", f"Bearer {plain.api_key}")
    before = _vllm_counters(plain.host)
    attempts = {
        "one header of 64 KiB": [host_header, auth, ("X-Big", "a" * 65536)],
        "4,000 small headers": [host_header, auth, *((f"X-H{i}", "v") for i in range(4000))],
        "a key of 64 KiB": [host_header, ("Authorization", "Bearer " + "k" * 65536)],
    }
    for name, headers in attempts.items():
        answers, closed = raw_exchange(plain, _request_bytes("GET", "/v1/models", headers))
        assert len(answers) == 1 and answers[0].from_proxy, (name, [str(a) for a in answers])
        assert answers[0].status in (400, 413, 414, 431, 494), (name, str(answers[0]))
        assert closed, name
    assert _moved(before, _vllm_counters(plain.host)) == {}, "a request with huge headers reached vLLM"
    # Headers that nginx accepts reach vLLM and are answered there (no 5xx from a smaller limit behind it).
    fits = _get(plain, "GET", "/v1/models", headers={**_auth(plain), "X-A": "a" * 6000, "X-B": "b" * 6000})
    assert fits.status == 200 and not fits.from_proxy, fits
    models = _get(plain, "GET", "/v1/models", headers=_auth(plain))
    assert models.status == 200 and json.loads(models.body)["data"][0]["id"] == SERVED_NAME, models


def _conf_seconds(conf: str, directive: str) -> float:
    """A timeout the rendered config sets (nginx's default when it sets none)."""
    found = re.search(rf"^\s*{directive}\s+(\d+)(ms|s|m)?\s*;", conf, re.MULTILINE)
    if found is None:
        return NGINX_DEFAULT_CLIENT_TIMEOUT_S
    return float(found.group(1)) * {"ms": 0.001, "m": 60.0}.get(found.group(2) or "s", 1.0)


def test_slow_clients_are_cut_off_while_the_endpoint_keeps_serving(plain: Deployment, times: StageTimes) -> None:
    conf = (Path(plain.plan.proxy_dir) / PROXY_CONFIG_FILE).read_text()
    header_timeout = _conf_seconds(conf, "client_header_timeout")
    body_timeout = _conf_seconds(conf, "client_body_timeout")
    assert max(header_timeout, body_timeout) <= 120, "too long to wait for here; the test would need a new plan"
    address = (plain.host.address, plain.plan.api_port)
    slow_headers = b"GET /v1/models HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 10000
    body_head = _request_bytes("POST", "/v1/chat/completions", [
        ("Host", "slow"), ("Authorization", f"Bearer {plain.api_key}"), ("Content-Type", "application/json"),
        ("Content-Length", "4096")], b'{"model": "')
    drippers: dict[socket.socket, float] = {}  # header senders, one byte a second -> when connected
    stallers: dict[socket.socket, float] = {}  # bodies that stop after 11 bytes -> when their last byte went
    for _ in range(20):
        sock = socket.create_connection(address, timeout=10)
        drippers[sock] = time.monotonic()
        sock = socket.create_connection(address, timeout=10)
        sock.sendall(body_head)
        stallers[sock] = time.monotonic()
    sent = dict.fromkeys(drippers, 0)
    closed_after: dict[socket.socket, float] = {}
    served: list[float] = []
    start = time.monotonic()
    deadline = start + max(header_timeout, body_timeout) + TIMEOUT_MARGIN_S
    next_drip = next_ask = start
    try:
        while len(closed_after) < len(drippers) + len(stallers) and time.monotonic() < deadline:
            open_socks = [s for s in (*drippers, *stallers) if s not in closed_after]
            readable, _, _ = select.select(open_socks, [], [], 0.2)
            now = time.monotonic()
            for sock in readable:
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    closed_after[sock] = now - drippers.get(sock, stallers.get(sock, now))
            if now >= next_drip:
                next_drip += 1
                for sock in drippers:
                    if sock not in closed_after:
                        with contextlib.suppress(OSError):  # closed by nginx: seen by recv above
                            sock.send(slow_headers[sent[sock]:sent[sock] + 1])
                            sent[sock] += 1
            if now >= next_ask:
                next_ask += 5
                asked = time.monotonic()
                models = _get(plain, "GET", "/v1/models", headers=_auth(plain))
                assert models.status == 200 and json.loads(models.body)["data"][0]["id"] == SERVED_NAME, models
                served.append(time.monotonic() - asked)
    finally:
        for sock in (*drippers, *stallers):
            sock.close()
    header_cuts = [closed_after[s] for s in drippers if s in closed_after]
    body_cuts = [closed_after[s] for s in stallers if s in closed_after]
    times.add("slow_clients_cut_off", time.monotonic() - start, header_timeout=header_timeout,
              body_timeout=body_timeout, header_cut_max=round(max(header_cuts, default=0), 1),
              body_cut_max=round(max(body_cuts, default=0), 1), served_max=round(max(served, default=0), 2))
    assert len(header_cuts) == len(drippers), f"{len(drippers) - len(header_cuts)} slow header senders still open"
    assert len(body_cuts) == len(stallers), f"{len(stallers) - len(body_cuts)} stalled bodies still open"
    # Cut by the timeouts, not before (a refusal would prove nothing about serving meanwhile), nor long after.
    assert all(header_timeout - 2 <= t <= header_timeout + TIMEOUT_MARGIN_S for t in header_cuts), header_cuts
    assert all(body_timeout - 2 <= t <= body_timeout + TIMEOUT_MARGIN_S for t in body_cuts), body_cuts
    assert len(served) >= max(header_timeout, body_timeout) // 5 - 1 and max(served) < 5, served


# --------------------------------------------------------------------------------------------------
# 2. TLS (tls deployment), and /metrics for a configured monitoring CIDR.

def _ca_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def test_tls_endpoint_verifies_with_the_stack_ca(endpoints: Endpoints, tls_endpoint: Deployment) -> None:
    assert endpoints.tls_files is not None
    ca_file = endpoints.tls_files.ca.cert_file
    assert tls_endpoint.endpoint_url == f"https://{tls_endpoint.host.address}:{tls_endpoint.plan.api_port}/v1"
    assert "ready: GET https://127.0.0.1:" in tls_endpoint.gate_output
    with openai.DefaultHttpxClient(verify=_ca_context(ca_file), timeout=60) as http_client:
        client = openai.OpenAI(base_url=tls_endpoint.endpoint_url, api_key=tls_endpoint.api_key, max_retries=0,
                               http_client=http_client)
        assert [m.id for m in client.models.list().data] == [SERVED_NAME]
        reply = client.chat.completions.create(model=SERVED_NAME, messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=4, temperature=0)
        assert reply.usage is not None and reply.usage.completion_tokens > 0
    # The name checked is the IP address: the certificate carries it as an IP SAN.
    with (socket.create_connection((tls_endpoint.host.address, tls_endpoint.plan.api_port), timeout=10) as sock,
          _ca_context(ca_file).wrap_socket(sock, server_hostname=tls_endpoint.host.address) as tls):
        peer = tls.getpeercert()
        assert peer is not None
        assert ("IP Address", tls_endpoint.host.address) in peer["subjectAltName"]
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_tls_endpoint_is_refused_with_another_ca(endpoints: Endpoints, tls_endpoint: Deployment) -> None:
    other_ca = tlsutil.make_ca(endpoints.workdir / "other-ca", "someone-else")
    with openai.DefaultHttpxClient(verify=_ca_context(other_ca.cert_file), timeout=30) as http_client:
        client = openai.OpenAI(base_url=tls_endpoint.endpoint_url, api_key=tls_endpoint.api_key, max_retries=0,
                               http_client=http_client)
        with pytest.raises(openai.APIConnectionError) as info:
            client.models.list()
    chain: list[BaseException] = []
    err: BaseException | None = info.value
    while err is not None and len(chain) < 10:
        chain.append(err)
        err = err.__cause__ or err.__context__
    assert any(isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e)
               for e in chain), [repr(e) for e in chain]


def test_plain_http_to_the_tls_port_serves_no_api(tls_endpoint: Deployment) -> None:
    for path in ("/v1/models", "/health", "/metrics"):
        answer = _get(tls_endpoint, "GET", path, headers=_auth(tls_endpoint))
        assert answer.status == 400 and answer.from_proxy, f"http:// {path}: {answer}"
        assert b"plain HTTP request was sent to HTTPS port" in answer.body


def test_tls_key_on_the_host_is_0600_and_owned_by_the_ssh_user(tls_endpoint: Deployment) -> None:
    tls_dir = f"{tls_endpoint.plan.proxy_dir}/{PROXY_TLS_SUBDIR}"
    stat = tls_endpoint.host.ssh(
        f"stat -c '%a %u %U %n' {shlex.quote(tls_dir)} {shlex.quote(tls_dir)}/{PROXY_TLS_KEY_FILE} "
        f"{shlex.quote(tls_dir)}/{PROXY_TLS_CERT_FILE}").stdout.splitlines()
    modes = {line.split()[3].rsplit("/", 1)[1]: line.split()[:3] for line in stat}
    user = [str(tls_endpoint.host.uid), tls_endpoint.host.ssh_user]
    assert modes[PROXY_TLS_KEY_FILE] == ["600", *user]
    assert modes[PROXY_TLS_CERT_FILE] == ["644", *user]
    assert modes[PROXY_TLS_SUBDIR][1:] == user and modes[PROXY_TLS_SUBDIR][0] in ("700", "755")
    # The proxy, running as that user, is what reads it: it is serving with it right now.
    assert inspect(tls_endpoint.host, PROXY_CONTAINER_NAME)["Config"]["User"] == tls_endpoint.host.container_user


def test_metrics_are_served_to_a_configured_monitoring_cidr(endpoints: Endpoints, tls_endpoint: Deployment) -> None:
    assert endpoints.tls_files is not None
    context = _ca_context(endpoints.tls_files.ca.cert_file)
    conf = (Path(tls_endpoint.plan.proxy_dir) / PROXY_CONFIG_FILE).read_text()
    assert f"allow {tls_endpoint.host.gateway}/32;" in conf
    answer = _get(tls_endpoint, "GET", "/metrics", tls=context)
    assert answer.status == 200, answer
    text = answer.body.decode()
    assert text.startswith("# HELP") and f'model_name="{SERVED_NAME}"' in text and "vllm:" in text
    # Still nothing else: the allowlist is unchanged for this client.
    for path in ("/invocations", "/version", "/tokenize"):
        refused = _get(tls_endpoint, "POST" if path != "/version" else "GET", path, tls=context,
                       body=_body_for("POST") if path != "/version" else None)
        assert refused.status == 404 and refused.from_proxy, f"{path}: {refused}"
