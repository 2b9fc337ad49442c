"""The proxy's nginx.conf: the template filled strictly (a misspelt placeholder fails here, not in nginx),
the optional pieces rendered from data, and the shape the security rules rest on. nginx itself checks
the result in tests/unit/infra/host/test_lint.py; the rules are probed live in tests/real/test_security_live.py."""

from __future__ import annotations

import re

import pytest

from vllm_endpoint.infra.catalog.names import (
    FORWARDED_PREFIX,
    HEALTH_PATH,
    METRICS_PATH,
    PROXY_CONTAINER_PORT,
    PROXY_TLS_CERT,
    PROXY_TLS_KEY,
)
from vllm_endpoint.infra.plan.spec import ProxySettings
from vllm_endpoint.infra.render.host_scripts import read_host_file
from vllm_endpoint.infra.render.proxy import NGINX_TEMPLATE, fill_template, render_nginx_conf


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
    assert used == {"uri", "vllm", "is_args", "args", "remote_addr", "scheme"}


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
