"""The reverse proxy in front of vLLM: the only thing on the public API port.

vLLM's `--api-key` guards only `/v1` (and `/v2`, `/inference`, `/cohere`) paths; `/invocations`
(full inference), `/tokenize`, `/pause`, `/metrics`, `/docs`, ... answer anyone (vLLM's security
guide: do not rely on the key alone, allowlist endpoints at a proxy). So the proxy forwards exactly
`/v1/*` and `GET /health`, lets `/metrics` through only for configured monitoring networks, and
answers everything else with 404 itself. Paths are normalised by nginx before matching and the
normalised path is what is forwarded, so `/v1/../metrics` is `/metrics` (forwarding the raw path
instead would let `/metrics/../v1/models` reach vLLM's prefix-mounted `/metrics` past the allowlist).
nginx forwards that decoded path unescaped, so a path that decodes to control characters or spaces
(`%0d%0a` would split the request to vLLM and smuggle a second, unchecked one) is refused with 400
before anything is forwarded. There is one default server, so a forged `Host:` header selects
nothing different.

Connections to vLLM are pooled: a proxy_pass through a variable (needed to forward the normalised
`$uri`) whose host is an upstream group's name uses that group, and the group keeps idle connections
open (`keepalive`) while its `server vllm:PORT resolve` is re-resolved through Docker's DNS, so a
re-created vLLM container is still found without restarting nginx. `resolve` exists in open-source
nginx from 1.27.3 (names.NGINX_UPSTREAM_RESOLVE_SINCE); an older proxy image gets the former form
(the name resolved per request, a new connection per request) and the plan warns. The pool's idle
timeout stays below vLLM's own, or nginx could send a request on a connection vLLM is closing and
answer 502 (a POST is not retried).

In an ECS task (awsvpc) the proxy finds vLLM at a fixed address instead, the task's loopback
(`IN_TASK`): no resolver, no `resolve`, the same pool on any nginx. Everything else is the same config.

The config itself is infra/host/nginx.conf.template; this module only fills in its values.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from vllm_endpoint.infra.catalog.names import (
    API_KEY_CHARACTERS,
    DOCKER_DNS,
    FORWARDED_PREFIX,
    HEALTH_PATH,
    LABEL_PREFIX,
    METRICS_PATH,
    PROXY_CONFIG_FILE,
    PROXY_CONTAINER_PORT,
    PROXY_KEY_CHECK_FILE,
    PROXY_KEY_CHECK_PATH,
    PROXY_TLS_CERT,
    PROXY_TLS_CERT_FILE,
    PROXY_TLS_KEY,
    PROXY_TLS_KEY_FILE,
    PROXY_TLS_SUBDIR,
    VLLM_CONTAINER_PORT,
    VLLM_HTTP_KEEP_ALIVE_S,
    VLLM_TASK_HOST,
    VLLM_UPSTREAM_HOST,
)
from vllm_endpoint.infra.plan.deployment import DeploymentPlan
from vllm_endpoint.infra.plan.spec import (
    WORKER_PROCESSES,
    ConnectionLimits,
    ContainerSpec,
    ProxySettings,
    connection_limits,
)
from vllm_endpoint.infra.render.host_scripts import fill_template, read_host_file

CONFIG_DIGEST_LABEL = f"{LABEL_PREFIX}:config-digest"
KEY_CHECK_VERSION_LABEL = f"{LABEL_PREFIX}:key-check-version"


@dataclass(frozen=True)
class VllmAddress:
    """Where the proxy finds vLLM."""

    host: str
    # The DNS server that finds `host` again when vLLM is re-created; None: `host` is a fixed address.
    resolver: str | None


# A single host: the vLLM container's alias on the endpoint's Docker network.
ON_DOCKER_NETWORK = VllmAddress(VLLM_UPSTREAM_HOST, DOCKER_DNS)
# An ECS task (awsvpc): its containers share one network namespace.
IN_TASK = VllmAddress(VLLM_TASK_HOST, None)


def proxy_spec(plan: DeploymentPlan) -> ContainerSpec:
    """The proxy's container with its rendered config's digest as a label: nginx reads its files at
    start, so a new config re-creates the container."""
    digest = hashlib.sha256(render_nginx_conf(plan.proxy_settings).encode()).hexdigest()[:16]
    return replace(plan.proxy, labels=(*plan.proxy.labels, (CONFIG_DIGEST_LABEL, digest)))


def proxy_files(plan: DeploymentPlan, api_key: Any, tls_certificate: Any,
                tls_private_key: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """(mode, content) of each file the proxy reads, by its path under `plan.proxy_dir`. The key and the
    TLS values may be Outputs (the component) or text (tests)."""
    # The key check holds the key: readable by the containers' user only, like the TLS key.
    modes = {PROXY_CONFIG_FILE: "0644", PROXY_KEY_CHECK_FILE: "0600"}
    key_check = api_key.apply(render_key_check) if hasattr(api_key, "apply") else render_key_check(api_key)
    contents: dict[str, Any] = {PROXY_CONFIG_FILE: render_nginx_conf(plan.proxy_settings),
                                PROXY_KEY_CHECK_FILE: key_check}
    if plan.scheme == "https":
        cert, key = f"{PROXY_TLS_SUBDIR}/{PROXY_TLS_CERT_FILE}", f"{PROXY_TLS_SUBDIR}/{PROXY_TLS_KEY_FILE}"
        modes |= {cert: "0644", key: "0600"}  # the key: readable by the containers' user only
        contents |= {cert: tls_certificate, key: tls_private_key}
    return modes, contents


NGINX_TEMPLATE = "nginx.conf.template"
KEY_CHECK_TEMPLATE = "nginx-api-key.conf.template"
_API_KEY = re.compile(API_KEY_CHARACTERS)


def render_key_check(api_key: str) -> str:
    """The nginx `map` that sets $vllm_key_given to 1 when the Authorization header carries exactly this key.

    The proxy refuses a /v1 request without the key itself, at the header, before it reads a byte of the
    body: a client without the key can no longer make nginx buffer up to client_max_body_size to disk, nor
    hold a connection by sending its body slowly, nor spend vLLM's API server's CPU. vLLM still checks the
    key too. The match is a case-sensitive regular expression (a plain `map` string ignores case) but for the
    scheme, which HTTP and vLLM take in any case; the key's two characters that mean something in a regular
    expression are written as one-character classes."""
    if not _API_KEY.fullmatch(api_key):
        raise ValueError("apiKey: may contain only letters, digits, - . _ ~ + / and trailing =, the characters "
                         "of a Bearer token (RFC 6750); generate one with `openssl rand -hex 24`")
    pattern = api_key.replace(".", "[.]").replace("+", "[+]")
    return fill_template(read_host_file(KEY_CHECK_TEMPLATE), {"KEY_PATTERN": pattern})
# The proxy terminates TLS with the certificate pair the proxy files put in PROXY_TLS_DIR.
_TLS_DIRECTIVES = (
    ("ssl_certificate", PROXY_TLS_CERT),
    ("ssl_certificate_key", PROXY_TLS_KEY),
    ("ssl_protocols", "TLSv1.2 TLSv1.3"),
    ("ssl_session_cache", "shared:tls:10m"),
)


# The upstream group's name: distinct from the container's name, so the proxy_pass that means the group
# can never fall through to a DNS lookup of the container (that path has no pool).
VLLM_POOL = "vllm_pool"
def render_nginx_conf(settings: ProxySettings, *, vllm: VllmAddress = ON_DOCKER_NETWORK,
                      key_check_path: str = PROXY_KEY_CHECK_PATH, trusted_proxies: Sequence[str] = ()) -> str:
    """infra/host/nginx.conf.template with this deployment's values: vLLM found at `vllm`, the key check
    included from `key_check_path`; behind a load balancer in `trusted_proxies` (CIDRs), each request's client
    is the address the load balancer put in X-Forwarded-For (`_real_ip_lines`)."""
    values = _template_values(settings, vllm, key_check_path) | {"REAL_IP": _real_ip_lines(trusted_proxies)}
    return fill_template(read_host_file(NGINX_TEMPLATE), values)


def _real_ip_lines(trusted_proxies: Sequence[str]) -> tuple[str, ...]:
    """Behind an Application Load Balancer every connection comes from one of its nodes, and it appends the
    client's address to X-Forwarded-For. From a trusted peer, nginx's realip module makes the last address of
    that header $remote_addr (not recursive: an address the client wrote itself further left is never taken),
    so the access log, the per-request X-Forwarded-For sent to vLLM and the 5xx lines name the client, not a
    load balancer node. From any other peer the header is ignored."""
    if not trusted_proxies:
        return ()
    return (
        "# Behind the load balancer (its nodes are in these networks): the client's address is the last one",
        "# it appended to X-Forwarded-For.",
        *(f"set_real_ip_from {_cidr(cidr)};" for cidr in trusted_proxies),
        "real_ip_header X-Forwarded-For;",
    )


def _pool_lines(limits: ConnectionLimits, vllm: VllmAddress) -> tuple[str, ...]:
    if vllm.resolver is None:
        server: tuple[str, ...] = (f"    server {vllm.host}:{VLLM_CONTAINER_PORT};",)
    else:
        # `resolve` keeps the group's addresses in shared memory, where every worker sees them change.
        server = (f"    zone {VLLM_POOL} 64k;", f"    server {vllm.host}:{VLLM_CONTAINER_PORT} resolve;")
    return (
        f"upstream {VLLM_POOL} {{",
        *server,
        f"    keepalive {limits.keepalive};",
        f"    keepalive_timeout {VLLM_HTTP_KEEP_ALIVE_S - 1}s;",
        "}",
    )


def _resolver_lines(vllm: VllmAddress) -> tuple[str, ...]:
    if vllm.resolver is None:
        return ()  # a fixed address: nothing to look up
    return (
        "# Docker's DNS, asked again every 10 s: a re-created vLLM container (a new address) is found",
        "# without restarting the proxy.",
        f"resolver {vllm.resolver} valid=10s ipv6=off;",
    )


def _template_values(settings: ProxySettings, vllm: VllmAddress,
                     key_check_path: str) -> dict[str, str | tuple[str, ...]]:
    limits = connection_limits(settings.max_num_seqs)
    # A fixed address needs no `resolve`, so any nginx keeps the pool (the version matters for a name only).
    pooled = settings.pooled_upstream or vllm.resolver is None
    return {
        "WORKER_PROCESSES": str(WORKER_PROCESSES),
        "WORKER_CONNECTIONS": str(limits.worker_connections),
        "OPEN_FILES": str(limits.open_files),
        "VLLM_POOL": _pool_lines(limits, vllm) if pooled else (),
        "MAX_BODY_MB": str(settings.max_body_mb),
        "KEY_CHECK": key_check_path,
        "RESOLVER": _resolver_lines(vllm),
        "LISTEN": f"{PROXY_CONTAINER_PORT} ssl" if settings.tls else str(PROXY_CONTAINER_PORT),
        "TLS_DIRECTIVES": tuple(f"{name} {value};" for name, value in _TLS_DIRECTIVES) if settings.tls else (),
        "VLLM_UPSTREAM": VLLM_POOL if pooled else f"{vllm.host}:{VLLM_CONTAINER_PORT}",
        "VLLM_UPSTREAM_HOST": vllm.host,
        "FORWARDED_PREFIX": FORWARDED_PREFIX,
        "HEALTH_PATH": HEALTH_PATH,
        "METRICS_PATH": METRICS_PATH,
        "METRICS_ALLOW": tuple(f"allow {_cidr(cidr)};" for cidr in settings.metrics_allowed_cidrs),
    }


def _cidr(text: str) -> str:
    """The CIDR as given, once it is certain to be one (it becomes an nginx directive's argument)."""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError as error:
        raise ValueError(f"metrics CIDR {text!r}: {error}") from None
    return text
