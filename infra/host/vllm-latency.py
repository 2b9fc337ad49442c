#!/usr/bin/env python3
"""Time-to-first-token and end-to-end latency percentiles of vLLM, once a minute, to CloudWatch.

The CloudWatch agent's Prometheus pipeline drops histograms, so vLLM's two latency histograms never reach
CloudWatch through it. This program (run every minute by a systemd timer on an AWS instance with metrics
on) reads vLLM's Prometheus metrics itself, takes each histogram's increase since its previous run (the counts it
kept in a state file), estimates p50, p90 and p99 of the requests that finished in between the way
Prometheus' histogram_quantile() does, and sends them as one CloudWatch embedded metric format (EMF)
document to the agent's EMF listener (logs.metrics_collected.emf in its configuration: UDP and TCP on the
host's loopback).

How exact: an estimate is as precise as vLLM's bucket bounds. Inside the bucket that holds the rank, the
value is interpolated linearly; a rank in the +Inf bucket is reported as the highest finite bound.

No request in the interval: nothing is sent (a missing datapoint, not a 0). A count lower than the previous
one (vLLM restarted): the current counts are the increase. The first run, and a run whose saved counts are
older than --max-age, only record the counts (their increase would span an unknown or long time).

Python 3 standard library only: it runs on the host's own python3. One line on stdout per run (the journal).

Settings: arguments, or the environment (the systemd unit's EnvironmentFile) under the names in brackets:
  --metrics-url  [VLLM_METRICS_URL]     vLLM's Prometheus metrics URL (the container's address)
  --namespace    [METRICS_NAMESPACE]    the CloudWatch namespace
  --stack        [METRICS_STACK]        the value of the stack dimension
  --state-file   [LATENCY_STATE_FILE]   where the previous run's counts are kept
  --emf-endpoint [EMF_ENDPOINT]         the agent's EMF listener: udp://HOST:PORT or tcp://HOST:PORT
  --log-group    [EMF_LOG_GROUP]        the log group the agent writes the document to (optional)
  --max-age      [LATENCY_MAX_AGE_S]    seconds after which saved counts are too old (default 600)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import socket
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence

# vLLM's latency histograms (infra/catalog/data/vllm-metrics.yaml), in seconds.
HISTOGRAMS = ("vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds")
QUANTILES = (0.5, 0.9, 0.99)
DIMENSION = "stack"
UNIT = "Seconds"
DEFAULT_MAX_AGE_S = 600.0
FETCH_TIMEOUT_S = 10

# counts by histogram, by series (its labels but le), by upper bound (le as written, "+Inf" last)
Counts = dict[str, dict[str, dict[str, float]]]

_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)_bucket\{(?P<labels>.*)\}\s+(?P<value>\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_name(histogram: str, q: float) -> str:
    """The CloudWatch metric of one quantile: the histogram's name and p50, p90 or p99."""
    return f"{histogram}_p{round(q * 100):d}"


def parse_buckets(text: str, histograms: Sequence[str] = HISTOGRAMS) -> Counts:
    """The cumulative bucket counts of each wanted histogram in Prometheus' text format."""
    counts: Counts = {name: {} for name in histograms}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] not in counts:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        le = labels.pop("le", None)
        if le is None:
            continue
        series = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        counts[match["name"]].setdefault(series, {})[le] = float(match["value"])
    return counts


def _bound(le: str) -> float:
    return math.inf if le == "+Inf" else float(le)


def series_increase(previous: Mapping[str, float] | None, current: Mapping[str, float]) -> dict[str, float]:
    """One series' increase; a new series, other bounds or any lower count (a restart) is counted from 0."""
    if previous is None or set(previous) != set(current) or any(current[le] < previous[le] for le in current):
        return dict(current)
    return {le: current[le] - previous[le] for le in current}


def increase(previous: Mapping[str, Mapping[str, float]], current: Mapping[str, Mapping[str, float]]
             ) -> list[tuple[float, float]]:
    """A histogram's increase summed over its series: (upper bound, cumulative count), by bound."""
    summed: dict[float, float] = {}
    for series, counts in current.items():
        for le, count in series_increase(previous.get(series), counts).items():
            summed[_bound(le)] = summed.get(_bound(le), 0.0) + count
    return sorted(summed.items())


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile() of cumulative (upper bound, count) pairs sorted by bound, the last +Inf.

    None when there is nothing to estimate from: no observation, or not a histogram (no +Inf bucket, or
    fewer than two buckets). The rank q * total falls in the first bucket whose cumulative count reaches
    it; the value is interpolated linearly between that bucket's lower and upper bound (the first bucket's
    lower bound is 0); a rank in the +Inf bucket gives the highest finite bound.
    """
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} is not between 0 and 1")
    if len(buckets) < 2 or buckets[-1][0] != math.inf:
        return None
    # Counts that go down from one bound to the next (cannot happen in one scrape) are evened out upwards.
    cumulative, highest = [], 0.0
    for _, count in buckets:
        highest = max(highest, count)
        cumulative.append(highest)
    total = cumulative[-1]
    if total <= 0:
        return None
    rank = q * total
    b = next(i for i, count in enumerate(cumulative) if count >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    upper = buckets[b][0]
    if b == 0 and upper <= 0:
        return upper
    lower = 0.0 if b == 0 else buckets[b - 1][0]
    below = 0.0 if b == 0 else cumulative[b - 1]
    in_bucket = cumulative[b] - below
    if in_bucket <= 0:  # only q = 0 with an empty first bucket
        return lower
    return lower + (upper - lower) * (rank - below) / in_bucket


def estimates(previous: Counts, current: Counts) -> tuple[dict[str, float], dict[str, float]]:
    """(metric name -> estimate, histogram -> requests counted) over the interval; a histogram without a
    request in it has no estimate."""
    values: dict[str, float] = {}
    requests: dict[str, float] = {}
    for histogram, series in current.items():
        buckets = increase(previous.get(histogram, {}), series)
        total = buckets[-1][1] if buckets else 0.0
        requests[histogram] = total
        for q in QUANTILES:
            value = quantile(q, buckets)
            if value is not None:
                values[metric_name(histogram, q)] = value
    return values, requests


def emf_document(values: Mapping[str, float], *, namespace: str, stack: str, timestamp_ms: int,
                 log_group: str | None = None, properties: Mapping[str, object] | None = None) -> dict[str, object]:
    """One EMF document: every value a metric of the namespace with the one dimension stack, in seconds."""
    metadata: dict[str, object] = {
        "Timestamp": timestamp_ms,
        "CloudWatchMetrics": [{
            "Namespace": namespace,
            "Dimensions": [[DIMENSION]],
            "Metrics": [{"Name": name, "Unit": UNIT} for name in values],
        }],
    }
    if log_group:
        # The CloudWatch agent's own extension: the log group it writes the event to (its default otherwise).
        metadata["LogGroupName"] = log_group
    return {"_aws": metadata, **(properties or {}), DIMENSION: stack, **values}


def send(document: Mapping[str, object], endpoint: str) -> None:
    """The document as one line to the agent's EMF listener (udp:// one datagram, tcp:// newline-ended)."""
    match = re.fullmatch(r"(udp|tcp)://(.+):(\d+)", endpoint)
    if match is None:
        raise ValueError(f"EMF endpoint {endpoint!r}: not udp://HOST:PORT or tcp://HOST:PORT")
    scheme, host, port = match[1], match[2], int(match[3])
    data = (json.dumps(document, separators=(",", ":")) + "\n").encode()
    if scheme == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(data, (host, port))
    else:
        with socket.create_connection((host, port), timeout=FETCH_TIMEOUT_S) as sock:
            sock.sendall(data)


def load_state(path: str) -> tuple[float, Counts] | None:
    try:
        with open(path) as f:
            state = json.load(f)
        return float(state["time"]), state["counts"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_state(path: str, at: float, counts: Counts) -> None:
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    partial = path + ".new"
    with open(partial, "w") as f:
        json.dump({"time": at, "counts": counts}, f)
    os.replace(partial, path)


def run(args: argparse.Namespace) -> str:
    """One run: the line for the journal."""
    with urllib.request.urlopen(args.metrics_url, timeout=FETCH_TIMEOUT_S) as response:
        text = response.read().decode()
    now = time.time()
    current = parse_buckets(text)
    previous = load_state(args.state_file)
    save_state(args.state_file, now, current)
    if previous is None:
        return "vllm-latency: first run, counts recorded: nothing sent"
    age = now - previous[0]
    if not 0 < age <= args.max_age:
        return f"vllm-latency: the saved counts are {age:.0f} s old, counts recorded: nothing sent"
    values, requests = estimates(previous[1], current)
    counted = " ".join(f"{name}={int(n)}" for name, n in requests.items())
    if not values:
        return f"vllm-latency: no request in the last {age:.0f} s ({counted}): nothing sent"
    properties: dict[str, object] = {f"{name}_requests": int(n) for name, n in requests.items()}
    properties["interval_seconds"] = round(age, 3)
    document = emf_document(values, namespace=args.namespace, stack=args.stack, timestamp_ms=int(now * 1000),
                            log_group=args.log_group or None, properties=properties)
    send(document, args.emf_endpoint)
    return f"vllm-latency: sent to {args.emf_endpoint}: {json.dumps(document, separators=(',', ':'))}"


def parse_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    def setting(flag: str, env: str, default: str | None = None) -> None:
        value = environ.get(env) or default
        parser.add_argument(flag, default=value, required=value is None, help=f"[{env}]")

    setting("--metrics-url", "VLLM_METRICS_URL")
    setting("--namespace", "METRICS_NAMESPACE")
    setting("--stack", "METRICS_STACK")
    setting("--state-file", "LATENCY_STATE_FILE")
    setting("--emf-endpoint", "EMF_ENDPOINT")
    setting("--log-group", "EMF_LOG_GROUP", "")
    setting("--max-age", "LATENCY_MAX_AGE_S", str(DEFAULT_MAX_AGE_S))
    args = parser.parse_args(argv)
    args.max_age = float(args.max_age)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        print(run(args), flush=True)
    except (OSError, ValueError) as err:
        print(f"vllm-latency: {err}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
