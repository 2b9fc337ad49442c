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
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from vllm_endpoint.infra.catalog.names import (
    DOCKER_DNS,
    FORWARDED_PREFIX,
    HEALTH_PATH,
    LABEL_PREFIX,
    METRICS_PATH,
    PROXY_CONFIG_FILE,
    PROXY_CONTAINER_PORT,
    PROXY_TLS_CERT,
    PROXY_TLS_CERT_FILE,
    PROXY_TLS_KEY,
    PROXY_TLS_KEY_FILE,
    PROXY_TLS_SUBDIR,
    VLLM_CONTAINER_PORT,
    VLLM_UPSTREAM_HOST,
)
from vllm_endpoint.infra.plan.deployment import DeploymentPlan
from vllm_endpoint.infra.plan.spec import ContainerSpec, ProxySettings

CONFIG_DIGEST_LABEL = f"{LABEL_PREFIX}:config-digest"


def proxy_spec(plan: DeploymentPlan) -> ContainerSpec:
    """The proxy's container with its rendered config's digest as a label: nginx reads its files at
    start, so a new config re-creates the container."""
    digest = hashlib.sha256(render_nginx_conf(plan.proxy_settings).encode()).hexdigest()[:16]
    return replace(plan.proxy, labels=(*plan.proxy.labels, (CONFIG_DIGEST_LABEL, digest)))


def proxy_files(plan: DeploymentPlan, tls_certificate: Any,
                tls_private_key: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """(mode, content) of each file the proxy reads, by its path under `plan.proxy_dir`. The TLS values
    may be Outputs (the component) or text (tests)."""
    modes = {PROXY_CONFIG_FILE: "0644"}
    contents: dict[str, Any] = {PROXY_CONFIG_FILE: render_nginx_conf(plan.proxy_settings)}
    if plan.scheme == "https":
        cert, key = f"{PROXY_TLS_SUBDIR}/{PROXY_TLS_CERT_FILE}", f"{PROXY_TLS_SUBDIR}/{PROXY_TLS_KEY_FILE}"
        modes |= {cert: "0644", key: "0600"}  # the key: readable by the containers' user only
        contents |= {cert: tls_certificate, key: tls_private_key}
    return modes, contents



def render_nginx_conf(settings: ProxySettings) -> str:
    listen = f"{PROXY_CONTAINER_PORT} ssl" if settings.tls else f"{PROXY_CONTAINER_PORT}"
    tls_lines = (
        f"""
        ssl_certificate {PROXY_TLS_CERT};
        ssl_certificate_key {PROXY_TLS_KEY};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:tls:10m;"""
        if settings.tls
        else ""
    )
    metrics_acl = "".join(f"\n            allow {cidr};" for cidr in settings.metrics_allowed_cidrs)
    upstream = f"http://{VLLM_UPSTREAM_HOST}:{VLLM_CONTAINER_PORT}"
    forward = f"""
            proxy_pass $vllm$uri$is_args$args;
            proxy_http_version 1.1;
            proxy_set_header Host {VLLM_UPSTREAM_HOST};
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;"""
    return f"""# Rendered by infra/render/proxy.py; see its docstring for why each location exists.
worker_processes auto;
pid /tmp/nginx.pid;
error_log /dev/stderr warn;

events {{
    worker_connections 1024;
}}

http {{
    # Request logs never include headers, so the API key is not logged.
    access_log /dev/stdout;
    server_tokens off;
    client_body_temp_path /tmp/nginx-client-body;
    proxy_temp_path /tmp/nginx-proxy;
    fastcgi_temp_path /tmp/nginx-fastcgi;
    uwsgi_temp_path /tmp/nginx-uwsgi;
    scgi_temp_path /tmp/nginx-scgi;
    client_max_body_size {settings.max_body_mb}m;
    resolver {DOCKER_DNS} valid=10s ipv6=off;

    server {{
        listen {listen} default_server;
        server_name _;{tls_lines}
        # No API path contains a control character or a space once decoded.
        if ($uri ~ "[\\x00-\\x20\\x7f]") {{
            return 400;
        }}
        set $vllm {upstream};

        location {FORWARDED_PREFIX} {{{forward}
            # Streaming completions: pass tokens on as they come, allow long generations.
            proxy_buffering off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}

        location = {HEALTH_PATH} {{
            limit_except GET {{ deny all; }}
            # HEAD is allowed with GET; vLLM answers only GET, so ask it with GET (nginx drops the body).
            proxy_method GET;{forward}
        }}

        location = {METRICS_PATH} {{{metrics_acl}
            deny all;{forward}
        }}

        location / {{
            return 404;
        }}
    }}
}}
"""
