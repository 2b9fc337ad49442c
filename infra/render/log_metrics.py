"""Metrics from the proxy's access log: CloudWatch Logs metric filters on the access log group, as plain data.

The proxy (infra/host/nginx.conf.template, `log_format path_only`) writes one line per request to stdout, and
on AWS with metrics on Docker's awslogs driver sends each line, without its newline, as one event to the log
group `access_log_group(scope)` (infra/render/cloudwatch_agent.py). Two metric filters turn them into metrics:

- `proxy-5xx`: 1 for each response with a 5xx status, whoever made it: vLLM's own 500s, and the proxy's 502/504
  when vLLM does not answer. The `proxy-5xx` alarm (infra/render/alarms.py) sums it per minute.
- `request-latency`: `$request_time` of each `/v1/` request, in seconds: nginx's time from the first byte read
  from the client to the last byte sent to it, so it includes the wait in vLLM's queue, the whole generation
  and, for a streamed answer, the client's reading. The dashboard shows its p50, p90 and p99 (CloudWatch
  computes percentiles of the values a metric filter publishes). The proxy's own refusals of `/v1/` requests
  (401 without the key, 400) are in it too: they are answered at once.

The patterns are CloudWatch's space-delimited ones: a line is split at spaces, and what stands between `[` and
`]` or between two `"` is one field (`[$time_local]`; `"$request_method $uri $server_protocol"`, the request
line, which is therefore one field named `request`). The fields are read from the template's `log_format
path_only` (`access_log_fields`), so a changed log format changes the patterns, and a format whose fields can
not be named, or without a status, request line or request time, fails the tests rather than matching
nothing in production. `tokenize` and `match` apply the subset of CloudWatch's syntax these patterns use to a
line; tests/unit/infra/render/test_log_metrics.py runs them on the lines a real nginx writes.

No dimension: a metric filter's dimension values can only be fields of the log event (`$status`), not a
constant (CloudFormation and the API take only field selectors; aws-cloudformation-resource-providers-logs
issue #108, open, asks for constants), and no field of the line names the stack. So each scope gets metrics of
its own names, `<metric>/<scope>` in the stack's namespace. No default value either: the same log group also
gets nginx's error log (stderr), and a default value would publish a 0 for each of those lines too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final, Literal

from vllm_endpoint.infra.catalog.names import FORWARDED_PREFIX
from vllm_endpoint.infra.render.cloudwatch_agent import access_log_group
from vllm_endpoint.infra.render.host_scripts import read_host_file
from vllm_endpoint.infra.render.proxy import NGINX_TEMPLATE

LOG_FORMAT: Final = "path_only"
# The fields the filters read, by the names access_log_fields gives them.
STATUS_FIELD: Final = "status"
REQUEST_FIELD: Final = "request"
LATENCY_FIELD: Final = "request_time"
# nginx's $request is "$request_method $request_uri $server_protocol"; the log format writes it with $uri.
_REQUEST_LINE: Final = (("request_method", "uri", "server_protocol"),
                        ("request_method", "request_uri", "server_protocol"))
PROXY_5XX_METRIC: Final = "proxy_5xx_responses"
LATENCY_METRIC: Final = "proxy_request_seconds"
# PutMetricFilter's limits.
_PATTERN_MAX: Final = 1024
_NAME_MAX: Final = 255
_VALUE_MAX: Final = 100
_MAX_DIMENSIONS: Final = 3

Unit = Literal["Count", "Seconds"]
Operator = Literal["=", "!=", "<", "<=", ">", ">="]
_OPERATORS: Final = ("!=", "<=", ">=", "=", "<", ">")  # the two-character ones first


@dataclass(frozen=True)
class Condition:
    """`field op value`: `=`/`!=` compare text, where `*` in the value matches any characters; a number
    compared with `<`, `<=`, `>`, `>=` (or `=` without `*`) compares the field as a number."""

    op: Operator
    value: str

    def render(self, field: str) -> str:
        return f"{field} {self.op} {self.value}"


@dataclass(frozen=True)
class LogMetricFilterSpec:
    """One metric filter: a space-delimited pattern over `fields`, each restricted by its conditions (all of
    them), and the metric it publishes for a matching line."""

    key: str
    log_group: str
    fields: tuple[str, ...]
    conditions: tuple[tuple[str, tuple[Condition, ...]], ...]
    metric_name: str
    namespace: str
    value: str  # a number, or `$field`
    unit: Unit
    default_value: float | None = None
    dimensions: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        restricted = dict(self.conditions)
        if not restricted.keys() <= set(self.fields) or len(set(self.fields)) != len(self.fields):
            raise ValueError(f"{self.key}: conditions on fields the pattern does not have, or a field twice")
        for name in (self.metric_name, self.namespace):
            if not name or len(name) > _NAME_MAX or re.search(r"[:*$]", name):
                raise ValueError(f"{self.key}: {name!r} is not a metric name or namespace (no : * $, <= 255)")
        if len(self.value) > _VALUE_MAX or not (_field_ref(self.value) in self.fields or _number(self.value)):
            raise ValueError(f"{self.key}: the value {self.value!r} is neither a number nor a field of the pattern")
        if len(self.dimensions) > _MAX_DIMENSIONS:
            raise ValueError(f"{self.key}: at most {_MAX_DIMENSIONS} dimensions")
        if self.dimensions and self.default_value is not None:
            raise ValueError(f"{self.key}: CloudWatch refuses dimensions together with a default value")
        for key, value in self.dimensions:
            # Only fields of the event: CloudWatch takes no constant dimension value.
            if _field_ref(value) not in self.fields:
                raise ValueError(f"{self.key}: dimension {key}={value!r} is not a field of the pattern")
        if len(self.pattern) > _PATTERN_MAX:
            raise ValueError(f"{self.key}: the pattern is longer than {_PATTERN_MAX} characters")

    @property
    def pattern(self) -> str:
        restricted = dict(self.conditions)
        parts = [" && ".join(c.render(f) for c in restricted[f]) if f in restricted else f for f in self.fields]
        return f"[{', '.join(parts)}]"


def _field_ref(value: str) -> str | None:
    return value[1:] if value.startswith("$") else None


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


# ----------------------------------------------------------------------------------------------
# The fields, from the template's log format.

def log_format(config: str, name: str = LOG_FORMAT) -> str:
    """The format string of `log_format <name> '...' '...';` in an nginx config (its quoted parts joined)."""
    found = re.search(rf"^\s*log_format\s+{re.escape(name)}\s+((?:'[^']*'\s*)+);", config, re.MULTILINE)
    if found is None:
        raise ValueError(f"no `log_format {name}` with single-quoted parts in the nginx config")
    return "".join(re.findall(r"'([^']*)'", found.group(1)))


def log_fields(fmt: str) -> tuple[str, ...]:
    """The names of the fields CloudWatch sees in a line of `fmt`: each space-delimited field of the format
    (split as `tokenize` splits a line) is one nginx variable, named after it, or the request line
    (method, path, protocol), named `request`. Anything else (a constant, two variables in one field) has no
    name to give it: an error."""
    names = []
    for token in tokenize(fmt):
        variables = tuple(re.findall(r"\$(\w+)", token))
        if len(variables) == 1 and token == f"${variables[0]}":
            names.append(variables[0])
        elif variables in _REQUEST_LINE and token == " ".join(f"${v}" for v in variables):
            names.append(REQUEST_FIELD)
        else:
            raise ValueError(f"log format field {token!r}: neither one variable nor the request line")
    fields = tuple(names)
    missing = {STATUS_FIELD, REQUEST_FIELD, LATENCY_FIELD} - set(fields)
    if missing or len(set(fields)) != len(fields):
        raise ValueError(f"log format {fmt!r}: fields {fields}, missing {sorted(missing)} or repeated")
    return fields


def access_log_fields() -> tuple[str, ...]:
    """The proxy's access log fields, from infra/host/nginx.conf.template."""
    return log_fields(log_format(read_host_file(NGINX_TEMPLATE)))


# ----------------------------------------------------------------------------------------------
# The filters.

def proxy_5xx_metric(scope: str) -> str:
    return f"{PROXY_5XX_METRIC}/{scope}"


def latency_metric(scope: str) -> str:
    return f"{LATENCY_METRIC}/{scope}"


def proxy_5xx_filter(scope: str, namespace: str) -> LogMetricFilterSpec:
    """1 for each line whose status is 5xx."""
    return LogMetricFilterSpec(
        key="proxy-5xx", log_group=access_log_group(scope), fields=access_log_fields(),
        conditions=((STATUS_FIELD, (Condition("=", "5*"),)),),
        metric_name=proxy_5xx_metric(scope), namespace=namespace, value="1", unit="Count",
    )


def request_latency_filter(scope: str, namespace: str) -> LogMetricFilterSpec:
    """The request time of each line whose path starts with FORWARDED_PREFIX (`/v1/`). The request line is one
    field (`POST /v1/chat/completions HTTP/1.1`), so: it contains `/v1/`, and no `/` comes before that (a path
    such as `/api/v1/x`, which the proxy answers with 404, is not an API request)."""
    prefix = FORWARDED_PREFIX
    return LogMetricFilterSpec(
        key="request-latency", log_group=access_log_group(scope), fields=access_log_fields(),
        conditions=(
            (REQUEST_FIELD, (Condition("=", f"*{prefix}*"), Condition("!=", f"*/*{prefix}*"))),
            (LATENCY_FIELD, (Condition(">=", "0"),)),
        ),
        metric_name=latency_metric(scope), namespace=namespace, value=f"${LATENCY_FIELD}", unit="Seconds",
    )


def access_log_metric_filters(scope: str, namespace: str) -> tuple[LogMetricFilterSpec, ...]:
    return proxy_5xx_filter(scope, namespace), request_latency_filter(scope, namespace)


# ----------------------------------------------------------------------------------------------
# CloudWatch's matching of a space-delimited pattern, the subset the filters use.

def tokenize(line: str) -> list[str]:
    """A log event's fields as CloudWatch splits them: at spaces, except that what stands between `[` and `]`
    or between two `"` is one field (given here without the brackets or quotes: no condition above depends on
    them, each starting and ending with `*` or reading a field that has none)."""
    tokens: list[str] = []
    i, n = 0, len(line)
    while i < n:
        if line[i] == " ":
            i += 1
            continue
        close = {"[": "]", '"': '"'}.get(line[i])
        if close is not None:
            end = line.find(close, i + 1)
            end = n if end < 0 else end
            tokens.append(line[i + 1:end])
            i = end + 1
        else:
            end = line.find(" ", i)
            end = n if end < 0 else end
            tokens.append(line[i:end])
            i = end
    return tokens


def parse_pattern(pattern: str) -> list[tuple[str, tuple[Condition, ...]]]:
    """A space-delimited pattern `[f1, f2 = v && f2 != w, ...]` as (field, its conditions); `...` and `||`
    are not part of the subset."""
    if not (pattern.startswith("[") and pattern.endswith("]")):
        raise ValueError(f"{pattern!r}: not a space-delimited pattern")
    out = []
    for part in pattern[1:-1].split(","):
        clauses = [c.strip() for c in part.split("&&")]
        if "||" in part or "..." in part:
            raise ValueError(f"{part!r}: outside the supported subset")
        field = re.match(r"[A-Za-z0-9_-]+", clauses[0])
        if field is None:
            raise ValueError(f"{part!r}: no field name")
        conditions = []
        for clause in clauses:
            rest = clause[len(field.group(0)):].strip()
            if not clause.startswith(field.group(0)) or (not rest and len(clauses) > 1):
                raise ValueError(f"{clause!r}: each condition names the field {field.group(0)}")
            if not rest:
                continue
            op = next((o for o in _OPERATORS if rest.startswith(o)), None)
            if op is None:
                raise ValueError(f"{clause!r}: no operator")
            value = rest[len(op):].strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            conditions.append(Condition(op, value))  # type: ignore[arg-type]
        out.append((field.group(0), tuple(conditions)))
    return out


def _wildcard(value: str, text: str) -> bool:
    return re.fullmatch(".*".join(re.escape(p) for p in value.split("*")), text, re.DOTALL) is not None


def _holds(condition: Condition, text: str) -> bool:
    number, wanted = _number(text), _number(condition.value)
    if condition.op in ("<", "<=", ">", ">="):
        if number is None or wanted is None:
            return False
        return {"<": number < wanted, "<=": number <= wanted, ">": number > wanted,
                ">=": number >= wanted}[condition.op]
    if wanted is not None and "*" not in condition.value:
        equal = number is not None and number == wanted
    else:
        equal = _wildcard(condition.value, text)
    return equal if condition.op == "=" else not equal


def match(pattern: str, line: str) -> dict[str, str] | None:
    """The line's fields by name when the pattern matches it (as many fields as the pattern names, every
    condition holding), else None."""
    parsed = parse_pattern(pattern)
    tokens = tokenize(line)
    if len(tokens) != len(parsed):
        return None
    for (_, conditions), token in zip(parsed, tokens, strict=True):
        if not all(_holds(c, token) for c in conditions):
            return None
    return {name: token for (name, _), token in zip(parsed, tokens, strict=True)}


def published_value(spec: LogMetricFilterSpec, line: str) -> float | None:
    """What the filter publishes for one log event: its value when the pattern matches (a field's value must be
    a number), the default value (None: nothing) when it does not."""
    fields = match(spec.pattern, line)
    if fields is None:
        return spec.default_value
    ref = _field_ref(spec.value)
    value = _number(fields[ref]) if ref is not None else _number(spec.value)
    if value is None:
        raise ValueError(f"{spec.key}: {spec.value} of {line!r} is not a number")
    return value

