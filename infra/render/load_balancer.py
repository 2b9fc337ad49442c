"""What the fleet's Application Load Balancer does, as data: which requests it forwards, how it decides a
replica is ready, how it drains one. `components/service_lb.py` turns this spec into AWS resources; the same
spec is meant to be rendered into an HAProxy or nginx config for the real-parts test (two replicas behind a
real load balancer with the same health check, thresholds and draining), so the numbers live here once.

What is forwarded: exactly what the single host's proxy forwards (infra/render/proxy.py): `/v1/*` with any
method, and `GET`/`HEAD /health` (nginx's `limit_except GET` admits HEAD too, and AWS recommends routing GET
and HEAD alike). Everything else gets the listener's default action, a fixed 404 from the load balancer
itself; `/metrics` never passes the load balancer (it is scraped inside the VPC).

How ALB matches (AWS Elastic Load Balancing API reference, PathPatternConditionConfig, and the listener
rule condition types page, read 2026-12-02): a path pattern is compared with the path of the request URL
only, not its query string; the comparison is case-sensitive; `*` matches zero or more characters (`/`
included) and `?` exactly one. AWS documents no percent-decoding and no removal of `.`/`..` segments or
duplicate slashes before the match, so the spec (and `LoadBalancerSpec.route`, which the tests use) matches
the raw path: `/V1/models` and `//v1/models` get the 404, while `/v1/../metrics` and `/v1/%2e%2e/metrics`
match `/v1/*` and are forwarded as sent.

That is why the nginx proxy stays in front of vLLM inside each task: the load balancer is the first filter,
not the only one. nginx normalises the path before it matches and forwards the normalised one (so
`/v1/../metrics` is `/metrics` there, refused), refuses a path that decodes to control characters,
checks the API key before it reads a request body, and keeps `/metrics` to its allowlist. One consequence
for the service: nginx sees the load balancer's VPC address as the client, so the tasks' metricsAllowedCidrs
must not cover the load balancer's subnets, or `/v1/../metrics` sent from the internet would be answered.

Limits (ALB target group and load balancer attributes, AWS docs): health check interval 5-300 s, timeout
2-120 s and below the interval, thresholds 2-10; deregistration delay 0-3600 s; idle timeout 1-4000 s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vllm_endpoint.infra.catalog.names import (
    ALB_DEREGISTRATION_DELAY_RANGE_S,
    ALB_DEREGISTRATION_DELAY_S,
    FORWARDED_PREFIX,
    HEALTH_PATH,
    PROXY_CONTAINER_PORT,
)

HTTP_PORT = 80
HTTPS_PORT = 443
# TLS 1.3 and 1.2 only, forward-secret ciphers: AWS's recommended policy for new HTTPS listeners.
SSL_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
# "strictest" answers every request RFC 7230 calls ambiguous with 400 instead of passing it on: no request
# smuggling through the load balancer into nginx (AWS Security Hub ELB.12 accepts defensive or strictest).
DESYNC_MITIGATION_MODE = "strictest"
# A non-streamed completion sends nothing until the whole answer is generated, and a queued request waits
# silently too; ALB's default of 60 s would cut both with a 504. The proxy allows a silent upstream 3600 s
# (proxy_read_timeout in infra/host/nginx.conf.template), and the edge must not be the shorter limit.
IDLE_TIMEOUT_S = 3600
# Each new request goes to the replica with the fewest requests in flight: generations differ in length by
# orders of magnitude, so round robin would pile requests onto a replica still busy with long ones.
LOAD_BALANCING_ALGORITHM = "least_outstanding_requests"
# The load balancer waits this long for a removed replica's requests in flight before it closes them. It
# stops waiting as soon as none is left (AWS: a draining target with no in-flight requests and no active
# connections is deregistered at once), so a long value costs time only while long requests run. ALB's own
# default (the value and ALB's bounds are the setting's, in infra/catalog/names.py); the task's stop timeout
# comes after it (the service sets that).
DEFAULT_DEREGISTRATION_DELAY_S = ALB_DEREGISTRATION_DELAY_S
DEREGISTRATION_DELAY_RANGE_S = ALB_DEREGISTRATION_DELAY_RANGE_S

API_RULE_PRIORITY = 10
HEALTH_RULE_PRIORITY = 20


@dataclass(frozen=True)
class ForwardRule:
    """One listener rule: requests whose path matches one of `path_patterns` (and whose method is one of
    `methods`, when given) go to the target group."""

    key: str
    priority: int
    path_patterns: tuple[str, ...]
    methods: tuple[str, ...] = ()  # empty: any method

    def matches(self, method: str, path: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        return any(path_pattern_matches(pattern, path) for pattern in self.path_patterns)


@dataclass(frozen=True)
class HealthCheck:
    """How the load balancer decides that a replica is ready. vLLM's HTTP server serves nothing until its
    engine has loaded the model (a check meanwhile is refused or times out), then `/health` answers 200, and
    503 once the engine died (vllm/entrypoints/serve/instrumentator/health.py, 0.32.0). The check goes through
    the task's proxy, so a replica is in service only when proxy and vLLM both answer."""

    path: str = HEALTH_PATH
    matcher: str = "200"
    protocol: str = "HTTP"
    # Every 10 s: the check is one cheap GET per load balancer node, and a replica that just became ready
    # gets traffic about 20 s later (2 passes).
    interval_s: int = 10
    # vLLM answers /health from its event loop in milliseconds; 5 s leaves room for a loop busy with a
    # burst of tokenising without mistaking it for death.
    timeout_s: int = 5
    healthy_threshold: int = 2
    # 3 failures (about 30 s): one slow answer under load does not take a replica out, a dead one is out
    # before clients notice much.
    unhealthy_threshold: int = 3

    @property
    def seconds_to_healthy(self) -> int:
        return self.interval_s * self.healthy_threshold

    @property
    def seconds_to_unhealthy(self) -> int:
        return self.interval_s * self.unhealthy_threshold


@dataclass(frozen=True)
class FixedResponse:
    status_code: int = 404
    content_type: str = "text/plain"
    body: str = "not found\n"


@dataclass(frozen=True)
class TargetGroupSpec:
    port: int
    deregistration_delay_s: int
    health_check: HealthCheck
    protocol: str = "HTTP"
    # awsvpc tasks each have their own network interface: targets are their addresses, not instances.
    target_type: str = "ip"
    algorithm: str = LOAD_BALANCING_ALGORITHM


@dataclass(frozen=True)
class LoadBalancerSpec:
    rules: tuple[ForwardRule, ...]
    default_response: FixedResponse
    target_group: TargetGroupSpec
    idle_timeout_s: int = IDLE_TIMEOUT_S

    def route(self, method: str, target: str) -> str:
        """What ALB does with a request line's method and target: "forward" or the fixed status (as text).
        Rules are tried by priority; the path is the target up to `?`, compared raw."""
        path = target.split("?", 1)[0]
        for rule in sorted(self.rules, key=lambda r: r.priority):
            if rule.matches(method, path):
                return "forward"
        return str(self.default_response.status_code)


def path_pattern_regex(pattern: str) -> str:
    """An ALB path pattern as an anchored regex: `*` any run (slashes included), `?` one character, the rest
    literal (the real-parts test gives it to HAProxy)."""
    return "^" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + "$"


def path_pattern_matches(pattern: str, path: str) -> bool:
    """ALB's path-pattern comparison: the whole path, case-sensitive, `*` any run (slashes included), `?`
    one character, nothing decoded or normalised."""
    return re.search(path_pattern_regex(pattern), path, flags=re.DOTALL) is not None


def forward_rules() -> tuple[ForwardRule, ...]:
    """The API prefix with any method (vLLM's own routes decide methods under /v1), and the health path
    with GET and HEAD only."""
    return (
        ForwardRule("api", API_RULE_PRIORITY, (f"{FORWARDED_PREFIX}*",)),
        ForwardRule("health", HEALTH_RULE_PRIORITY, (HEALTH_PATH,), ("GET", "HEAD")),
    )


def load_balancer_spec(target_port: int = PROXY_CONTAINER_PORT,
                       deregistration_delay_s: int = DEFAULT_DEREGISTRATION_DELAY_S) -> LoadBalancerSpec:
    low, high = DEREGISTRATION_DELAY_RANGE_S
    if not low <= deregistration_delay_s <= high:
        raise ValueError(f"deregistrationDelaySeconds: {deregistration_delay_s} is outside ALB's {low}-{high} s")
    if not 1 <= target_port <= 65535:
        raise ValueError(f"targetPort: {target_port} is not a TCP port")
    return LoadBalancerSpec(
        rules=forward_rules(),
        default_response=FixedResponse(),
        target_group=TargetGroupSpec(port=target_port, deregistration_delay_s=deregistration_delay_s,
                                     health_check=HealthCheck()),
    )
