"""The load balancer's spec: what it forwards (the same requests the single host's proxy forwards, matched the
way ALB matches), the health check and draining within ALB's limits, and the idle timeout no shorter than
the proxy's own wait for a silent generation."""

from __future__ import annotations

import re

import pytest

from vllm_endpoint.infra.catalog.names import FORWARDED_PREFIX, HEALTH_PATH, METRICS_PATH, PROXY_CONTAINER_PORT
from vllm_endpoint.infra.render.host_scripts import read_host_file
from vllm_endpoint.infra.render.load_balancer import (
    DEFAULT_DEREGISTRATION_DELAY_S,
    IDLE_TIMEOUT_S,
    LOAD_BALANCING_ALGORITHM,
    HealthCheck,
    load_balancer_spec,
    path_pattern_matches,
)

SPEC = load_balancer_spec()


@pytest.mark.parametrize("method, target", [
    ("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/completions?stream=true"),
    ("DELETE", "/v1/files/x"), ("GET", "/health"), ("HEAD", "/health"), ("GET", "/health?probe=1"),
])
def test_the_api_prefix_and_get_health_are_forwarded(method: str, target: str) -> None:
    assert SPEC.route(method, target) == "forward"


@pytest.mark.parametrize("method, target", [
    ("GET", METRICS_PATH), ("POST", "/invocations"), ("POST", "/tokenize"), ("GET", "/docs"),
    ("GET", "/openapi.json"), ("GET", "/version"), ("POST", "/pause"), ("GET", "/v2/models"),
    ("POST", "/inference/v1/generate"), ("GET", "/"), ("GET", "/v1"), ("GET", "/V1/models"), ("GET", "//v1/models"),
    ("POST", "/health"), ("PUT", "/health"), ("GET", "/health/"), ("GET", "/healthz"), ("GET", "/Health"),
    ("GET", "/metrics/../v1/models"), ("GET", "/%76%31/models"), ("GET", "/v1%2fmodels"),
])
def test_everything_else_gets_the_fixed_404(method: str, target: str) -> None:
    assert SPEC.route(method, target) == "404"
    assert SPEC.default_response.status_code == 404


@pytest.mark.parametrize("target", [
    "/v1/../metrics", "/v1/%2e%2e/metrics", "/v1/..%2fmetrics", "/v1/../invocations", "/v1/models/../../version",
    "/v1/..;/metrics", "/v1/models%3F/../../metrics",
])
def test_raw_path_tricks_under_the_prefix_pass_the_load_balancer(target: str) -> None:
    # ALB matches the raw path: these reach the task, where nginx normalises them and refuses (the path
    # tricks of tests/real/test_security_live.py). The proxy stays in front of vLLM for this reason.
    assert SPEC.route("GET", target) == "forward"


def test_rules_are_built_from_the_proxys_paths() -> None:
    api, health = sorted(SPEC.rules, key=lambda r: r.priority)
    assert api.path_patterns == (f"{FORWARDED_PREFIX}*",) and api.methods == ()
    assert health.path_patterns == (HEALTH_PATH,) and health.methods == ("GET", "HEAD")
    assert len({r.priority for r in SPEC.rules}) == len(SPEC.rules)
    for rule in SPEC.rules:
        assert all(len(p) <= 128 and re.fullmatch(r"[A-Za-z0-9_\-.$/~\"'@:+*?&]+", p) for p in rule.path_patterns)
        assert all(re.fullmatch(r"[A-Z_-]{1,40}", m) for m in rule.methods)


@pytest.mark.parametrize("pattern, path, expected", [
    ("/v1/*", "/v1/", True), ("/v1/*", "/v1/a/b", True), ("/v1/*", "/v1", False), ("/v1/*", "/V1/a", False),
    ("/v?/x", "/v1/x", True), ("/v?/x", "/v10/x", False), ("/health", "/health", True), ("/health", "/healthy", False),
    ("/a.b", "/aXb", False), ("/v1/*", "/x/v1/a", False),
])
def test_path_patterns_match_like_alb(pattern: str, path: str, expected: bool) -> None:
    assert path_pattern_matches(pattern, path) is expected


def test_the_health_check_is_within_albs_limits_and_says_when_a_replica_counts() -> None:
    check = SPEC.target_group.health_check
    assert (check.path, check.matcher, check.protocol) == (HEALTH_PATH, "200", "HTTP")
    assert 5 <= check.interval_s <= 300 and 2 <= check.timeout_s <= 120 and check.timeout_s < check.interval_s
    assert 2 <= check.healthy_threshold <= 10 and 2 <= check.unhealthy_threshold <= 10
    assert (check.seconds_to_healthy, check.seconds_to_unhealthy) == (20, 30)
    assert HealthCheck(interval_s=30, unhealthy_threshold=2).seconds_to_unhealthy == 60


def test_target_group_defaults() -> None:
    group = SPEC.target_group
    assert (group.port, group.protocol, group.target_type) == (PROXY_CONTAINER_PORT, "HTTP", "ip")
    assert group.algorithm == LOAD_BALANCING_ALGORITHM == "least_outstanding_requests"
    assert group.deregistration_delay_s == DEFAULT_DEREGISTRATION_DELAY_S == 300
    assert load_balancer_spec(9000, 0).target_group.port == 9000


@pytest.mark.parametrize("port, delay, message", [
    (PROXY_CONTAINER_PORT, -1, "deregistrationDelaySeconds: -1"), (PROXY_CONTAINER_PORT, 3601, "3601 is outside"),
    (0, 300, "targetPort: 0"), (70000, 300, "targetPort: 70000"),
])
def test_out_of_range_values_are_refused(port: int, delay: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_balancer_spec(port, delay)


def test_the_idle_timeout_is_the_proxys_wait_for_a_silent_generation() -> None:
    template = read_host_file("nginx.conf.template")
    waits = {int(s) for s in re.findall(r"proxy_read_timeout (\d+)s;", template)}
    assert waits == {IDLE_TIMEOUT_S}
    assert 1 <= IDLE_TIMEOUT_S <= 4000  # ALB's range

