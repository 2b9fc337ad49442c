"""The proxy's nginx.conf: the template filled strictly (a misspelt placeholder fails here, not in nginx),
the optional pieces rendered from data, and the shape the security rules rest on. nginx itself checks
the result in tests/unit/infra/host/test_lint.py; the rules are probed live in tests/real/test_security_live.py."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vllm_endpoint.infra.catalog.names import (
    FORWARDED_PREFIX,
    HEALTH_PATH,
    METRICS_PATH,
    PROXY_CONTAINER_PORT,
    PROXY_TLS_CERT,
    PROXY_TLS_KEY,
    VLLM_CONTAINER_PORT,
    VLLM_HTTP_KEEP_ALIVE_S,
    VLLM_UPSTREAM_HOST,
)
from vllm_endpoint.infra.plan.deployment import build_plan, nginx_version
from vllm_endpoint.infra.plan.spec import ProxySettings
from vllm_endpoint.infra.render.host_scripts import read_host_file
from vllm_endpoint.infra.render.proxy import (
    NGINX_TEMPLATE,
    connection_limits,
    fill_template,
    render_nginx_conf,
)
from vllm_endpoint.infra.settings.models import load_stack_config


def test_text_values_fill_in_place_and_line_values_take_the_placeholders_indentation() -> None:
    template = "a @@X@@ b @@X@@\n    @@LINES@@\nend\n"
    assert fill_template(template, {"X": "1", "LINES": ("p;", "q;")}) == "a 1 b 1\n    p;\n    q;\nend\n"


def test_an_empty_line_value_removes_the_placeholders_line() -> None:
    assert fill_template("a\n  @@LINES@@\nb\n", {"LINES": ()}) == "a\nb\n"


@pytest.mark.parametrize(("template", "values", "message"), [
    ("@@A@@ @@B@@\n", {"A": "1"}, r"without a value: \['B'\]"),
    ("@@A@@\n", {"A": "1", "TYPO": "2"}, r"without a placeholder: \['TYPO'\]"),
    ("@@A@@ @@b@@\n", {"A": "1"}, "not a placeholder"),
    ("@@A@@ @@\n", {"A": "1"}, "not a placeholder"),
    ("x @@A@@;\n", {"A": ("1;",)}, "must stand alone"),
    ("x @@A@@;\n", {"A": "1;\nevil;"}, "line break"),
])
def test_a_template_and_values_that_do_not_match_fail_loudly(template: str, values: dict[str, str | tuple[str, ...]],
                                                               message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fill_template(template, values)


def locations(conf: str) -> dict[str, str]:
    """Each `location ... { ... }` block's body by its match (the bodies hold only one-line nested blocks)."""
    return {m[1].strip(): m[2] for m in re.finditer(r"^\s*location ([^{]+)\{\n(.*?)^\s{8}\}", conf, re.M | re.S)}


def test_the_template_uses_nginx_variables_only_where_it_means_them() -> None:
    # The placeholder syntax never meets nginx's own $variables: the template's are the ones nginx knows.
    used = set(re.findall(r"\$(\w+)", read_host_file(NGINX_TEMPLATE)))
    assert used == {"uri", "vllm", "is_args", "args", "remote_addr", "scheme", "time_local", "request_method",
                    "server_protocol", "status", "body_bytes_sent", "request_time", "http_x_api_key", "http_api_key",
                    "vllm_key_given", "vllm_key_refused"}


def test_plain_http_has_no_tls_directive_and_tls_has_all_of_them() -> None:
    plain, tls = render_nginx_conf(ProxySettings()), render_nginx_conf(ProxySettings(tls=True))
    assert f"listen {PROXY_CONTAINER_PORT} default_server;" in plain and "ssl" not in plain
    assert f"listen {PROXY_CONTAINER_PORT} ssl default_server;" in tls
    for directive in (f"ssl_certificate {PROXY_TLS_CERT};", f"ssl_certificate_key {PROXY_TLS_KEY};",
                      "ssl_protocols TLSv1.2 TLSv1.3;"):
        assert f"\n        {directive}\n" in tls
    assert "@@" not in plain + tls


def test_the_locations_forward_v1_get_health_and_metrics_only_to_the_allowed_networks() -> None:
    cidrs = ("10.0.0.0/8", "2001:db8::/32")
    blocks = locations(render_nginx_conf(ProxySettings(metrics_allowed_cidrs=cidrs)))
    assert set(blocks) == {FORWARDED_PREFIX, f"= {HEALTH_PATH}", f"= {METRICS_PATH}", "/"}
    assert "limit_except GET { deny all; }" in blocks[f"= {HEALTH_PATH}"]
    # nginx takes the first allow/deny that matches: the allow lines must come before `deny all`.
    metrics = [line.strip() for line in blocks[f"= {METRICS_PATH}"].splitlines()]
    assert metrics[:3] == ["allow 10.0.0.0/8;", "allow 2001:db8::/32;", "deny all;"]
    assert blocks["/"].strip() == "return 404;"
    assert "proxy_pass" not in blocks["/"]


def test_no_metrics_network_means_metrics_are_denied_to_everyone() -> None:
    metrics = locations(render_nginx_conf(ProxySettings()))[f"= {METRICS_PATH}"]
    assert "allow" not in metrics and "deny all;" in metrics


def test_no_location_sets_its_own_proxy_headers() -> None:
    # A location with any proxy_set_header of its own would drop every server-level one there
    # (X-Forwarded-For, the fixed Host), so the forwarding headers live at server level only.
    conf = render_nginx_conf(ProxySettings(tls=True, metrics_allowed_cidrs=("10.0.0.0/8",)))
    blocks = locations(conf)
    assert all("proxy_set_header" not in body for body in blocks.values())
    assert all("proxy_pass $vllm$uri$is_args$args;" in blocks[k] for k in blocks if k != "/")
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf


@pytest.mark.parametrize("cidr", ["10.0.0.0/8; allow all", "not-a-network", "10.0.0.0/33"])
def test_a_metrics_network_that_is_not_a_cidr_is_refused(cidr: str) -> None:
    with pytest.raises(ValueError, match="metrics CIDR"):
        render_nginx_conf(ProxySettings(metrics_allowed_cidrs=(cidr,)))


# ----------------------------------------------------------------------------------------------
# Connections to vLLM: pooled and still re-resolved (tests/real/test_proxy_keepalive.py proves both live).

def upstream_blocks(conf: str) -> dict[str, list[str]]:
    return {m[1]: [line.strip() for line in m[2].strip().splitlines()]
            for m in re.finditer(r"^\s*upstream (\S+) \{\n(.*?)^\s*\}", conf, re.M | re.S)}


def vllm_target(conf: str) -> str:
    match = re.search(r"^\s*set \$vllm http://(\S+);", conf, re.M)
    assert match is not None
    return match[1]


def test_the_pooled_form_sends_every_location_through_a_re_resolved_keepalive_group() -> None:
    conf = render_nginx_conf(ProxySettings(pooled_upstream=True, max_num_seqs=256))
    blocks = upstream_blocks(conf)
    assert len(blocks) == 1
    (name, lines), = blocks.items()
    # nginx uses the group only when the proxy_pass host is exactly its name, without a port;
    # anything else would be looked up in DNS per request, with no pool.
    assert vllm_target(conf) == name
    assert f"server {VLLM_UPSTREAM_HOST}:{VLLM_CONTAINER_PORT} resolve;" in lines
    assert any(line.startswith(f"zone {name} ") for line in lines)  # `resolve` needs the shared zone
    assert "keepalive 256;" in lines
    timeout = next(int(line.split()[1].rstrip("s;")) for line in lines if line.startswith("keepalive_timeout"))
    assert timeout < VLLM_HTTP_KEEP_ALIVE_S
    # A pooled connection must be HTTP/1.1 without `Connection: close`, at server level for every location.
    assert "proxy_http_version 1.1;" in conf and 'proxy_set_header Connection "";' in conf
    assert re.search(r"^\s*resolver \S+ valid=\d+s", conf, re.M)


def test_the_unpooled_form_for_old_nginx_resolves_the_container_name_per_request() -> None:
    conf = render_nginx_conf(ProxySettings(pooled_upstream=False))
    assert upstream_blocks(conf) == {} and "resolve;" not in conf
    assert vllm_target(conf) == f"{VLLM_UPSTREAM_HOST}:{VLLM_CONTAINER_PORT}"
    assert re.search(r"^\s*resolver \S+ valid=\d+s", conf, re.M)


@given(st.integers(min_value=1, max_value=8192))
def test_connection_limits_hold_a_batch_and_its_queue_in_one_worker(max_num_seqs: int) -> None:
    limits = connection_limits(max_num_seqs)
    # Two connections (client and vLLM) per open request, a batch running and a batch queued, plus the pool.
    assert limits.worker_connections >= 2 * 2 * max_num_seqs + limits.keepalive
    assert limits.worker_connections % 1024 == 0 and limits.worker_connections >= 1024
    assert limits.keepalive >= max_num_seqs
    assert limits.open_files >= limits.worker_connections


def test_the_rendered_limits_are_the_computed_ones() -> None:
    conf = render_nginx_conf(ProxySettings(max_num_seqs=1024))
    limits = connection_limits(1024)
    assert f"worker_connections {limits.worker_connections};" in conf
    assert f"worker_rlimit_nofile {limits.open_files};" in conf
    assert f"keepalive {limits.keepalive};" in conf
    assert re.search(r"^worker_processes \d+;$", conf, re.M) and "worker_processes auto" not in conf


@pytest.mark.parametrize(("image", "version"), [
    ("nginx:1.29.3-alpine", (1, 29, 3)),
    ("nginx:1.27.3", (1, 27, 3)),
    ("registry.example.com/mirror/nginx:1.28.0-alpine-slim", (1, 28, 0)),
    ("nginxinc/nginx-unprivileged:1.29.3-alpine@sha256:" + "a" * 64, (1, 29, 3)),
    ("nginx:1.29", None),  # not a release: could be any 1.29.x
    ("nginx:stable-alpine", None),
    ("example.com/proxy:1.29.3", None),  # not nginx by its name
    ("nginx-proxy:1.29.3", None),
])
def test_the_nginx_version_comes_from_an_nginx_images_tag(image: str, version: tuple[int, int, int] | None) -> None:
    assert nginx_version(image) == version


AWS = {"sshAllowedCidrs": "93.184.215.14/32", "apiAllowedCidrs": "93.184.216.0/24"}


def test_the_default_proxy_image_gets_the_pool_and_an_older_one_a_warning() -> None:
    default = build_plan(load_stack_config(AWS), hub_fetcher=None)
    assert default.proxy_settings.pooled_upstream
    assert not any("proxyImage" in w for w in default.warnings)
    old = build_plan(load_stack_config({**AWS, "proxyImage": "nginx:1.26.3-alpine"}), hub_fetcher=None)
    assert not old.proxy_settings.pooled_upstream
    assert any("proxyImage nginx:1.26.3-alpine" in w and "new connection" in w for w in old.warnings)
    assert "resolve;" not in render_nginx_conf(old.proxy_settings)


def test_the_proxy_is_sized_for_the_batch_vllm_runs() -> None:
    capped = build_plan(load_stack_config({**AWS, "maxNumSeqs": "64"}), hub_fetcher=None)
    assert capped.proxy_settings.max_num_seqs == 64
    # An H100-class GPU: vLLM's default batch is 1024 there, 256 on an A10G.
    big = build_plan(load_stack_config({**AWS, "instanceType": "p5.48xlarge", "tensorParallelSize": "4"}),
                     hub_fetcher=None)
    small = build_plan(load_stack_config({**AWS, "instanceType": "g5.xlarge"}), hub_fetcher=None)
    assert (big.proxy_settings.max_num_seqs, small.proxy_settings.max_num_seqs) == (1024, 256)
