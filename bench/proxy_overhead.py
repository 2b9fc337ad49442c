"""Proxy overhead on real parts (a script, not a test). Run as root from the repo root:

    .venv/bin/python bench/proxy_overhead.py [--concurrency 64 256] [--rounds 2]

The plan deployed on the real-parts test host (network namespace + sshd + dockerd, reached over SSH):
the real vLLM server (CPU build) with the tiny chat model, behind the product's proxy. The same load,
streamed chat completions sent with the official openai client (AsyncOpenAI, N requests at concurrency
C, fixed prompt and output lengths), goes to the proxy and straight to vLLM, alternating, in one run.
Both are reached at their container addresses on the Docker network from inside the host's network
namespace (vLLM publishes no port), so the only difference between the two is nginx. The client runs
on the same cores as the server; it loads both paths alike.

On 2 CPU cores vLLM's API server is the bottleneck: the figures compare the two paths to one server,
they say nothing about a GPU's throughput. The proxy's own CPU time (its workers' utime + stime from
/proc) is measured too. Prints a side-by-side table and writes the JSON to bench/results/proxy-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.real.harness import images  # noqa: E402
from tests.real.harness.common import BUILD_DIR, VLLM_VENV, prerequisite_problem  # noqa: E402
from tests.real.harness.deployer import Deployment, deploy, existing_host_config, make_cache_dir  # noqa: E402
from tests.real.harness.testhost import REQUIRED_TOOLS, TestHost, start_test_host  # noqa: E402
from tests.real.harness.tiny_model import ensure_tiny_model  # noqa: E402
from vllm_endpoint.infra.catalog.names import PROXY_CONTAINER_PORT, VLLM_CONTAINER_PORT  # noqa: E402
from vllm_endpoint.infra.render.proxy import WORKER_PROCESSES, connection_limits  # noqa: E402

RESULTS_DIR = REPO_ROOT / "bench" / "results"
SERVED_NAME = "tiny-bench"
API_PORT = 30013
# Every request the same short chat prompt (its token count is in the result).
PROMPT = "Summarise the benefits of pooled upstream connections for a streaming reverse proxy."
CLIENT_ENV_DROP = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


# --- the load client (runs inside the test host's network namespace) ---------------------------

async def _one(client: Any, model: str, max_tokens: int) -> tuple[float, float, int, int]:
    """(latency, time to first token, output tokens, prompt tokens) of one streamed chat completion."""
    start = time.perf_counter()
    first = None
    tokens = prompt = 0
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=max_tokens, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
        if chunk.usage is not None:
            tokens, prompt = chunk.usage.completion_tokens, chunk.usage.prompt_tokens
    end = time.perf_counter()
    return end - start, (first or end) - start, tokens, prompt


async def _load(url: str, api_key: str, model: str, concurrency: int, requests: int, max_tokens: int) -> dict[str, Any]:
    import openai

    # The client keeps one connection per concurrent request (its default keeps 100 idle); the Limits
    # class of whichever HTTP library this openai release is built on.
    limits = type(openai.DEFAULT_CONNECTION_LIMITS)(max_connections=concurrency,
                                                    max_keepalive_connections=concurrency)
    async with openai.AsyncOpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=1800,
                                  http_client=openai.DefaultAsyncHttpxClient(limits=limits)) as client:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(requests):
            queue.put_nowait(i)
        results: list[tuple[float, float, int, int]] = []
        errors: list[str] = []

        async def worker() -> None:
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    results.append(await _one(client, model, max_tokens))
                except Exception as err:  # any failure is counted and reported, not retried
                    errors.append(f"{type(err).__name__}: {err}"[:200])

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"wall_s": wall, "latency_s": [r[0] for r in results], "ttft_s": [r[1] for r in results],
            "output_tokens": sum(r[2] for r in results), "prompt_tokens": max((r[3] for r in results), default=0),
            "errors": errors}


def client_main(args: argparse.Namespace) -> int:
    concurrency, = args.concurrency  # the driver passes one level per client run
    result = asyncio.run(_load(args.url, os.environ["BENCH_API_KEY"], args.model, concurrency,
                               args.requests, args.max_tokens))
    json.dump(result, sys.stdout)
    return 0


# --- the driver ---------------------------------------------------------------------------------

def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _nginx_cpu_s(host: TestHost, container: str) -> float:
    """utime + stime of the proxy's nginx worker processes so far (they are children of its master)."""
    master = int(host.docker("inspect", "--format", "{{.State.Pid}}", container).stdout)
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15 of stat)
    return total


def _container_address(host: TestHost, container: str, network: str) -> str:
    out = host.docker("inspect", "--format", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
                      container).stdout.strip()
    if not out:
        raise RuntimeError(f"{container} has no address on {network}")
    return out


def _run_client(host: TestHost, url: str, api_key: str, concurrency: int, requests: int,
                max_tokens: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV_DROP} | {"BENCH_API_KEY": api_key}
    argv = ["nsenter", f"--net=/var/run/netns/{host.name}", sys.executable, str(Path(__file__).resolve()),
            "--client", "--url", url, "--model", SERVED_NAME, "--concurrency", str(concurrency),
            "--requests", str(requests), "--max-tokens", str(max_tokens)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"load client failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout))


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [x for r in runs for x in r["latency_s"]]
    if not latencies:
        raise RuntimeError(f"no request succeeded: {runs[0]['errors'][:3]}")
    ttfts = [x for r in runs for x in r["ttft_s"]]
    wall = sum(r["wall_s"] for r in runs)
    done = len(latencies)
    summary = {
        "requests": done, "errors": sum(len(r["errors"]) for r in runs), "wall_s": round(wall, 2),
        "req_per_s": round(done / wall, 2), "output_tok_per_s": round(sum(r["output_tokens"] for r in runs) / wall, 1),
        "latency_p50_s": round(_percentile(latencies, 0.5), 3), "latency_p99_s": round(_percentile(latencies, 0.99), 3),
        "ttft_p50_s": round(_percentile(ttfts, 0.5), 3), "ttft_p99_s": round(_percentile(ttfts, 0.99), 3),
        "req_per_s_by_round": [round(len(r["latency_s"]) / r["wall_s"], 2) for r in runs],
        "prompt_tokens": max(r["prompt_tokens"] for r in runs),
    }
    if all("nginx_cpu_s" in r for r in runs):
        cpu = sum(r["nginx_cpu_s"] for r in runs)
        summary["nginx_cpu_s"] = round(cpu, 2)
        summary["nginx_cpu_share_of_one_core"] = round(cpu / wall, 4)
    return summary


def _deploy(host: TestHost, cache: Path, proxy_image: str | None) -> Deployment:
    model = ensure_tiny_model(BUILD_DIR / "models", VLLM_VENV / "bin" / "python")
    images.build_vllm_image(host)
    extra = {"proxyImage": proxy_image} if proxy_image else {}
    config = existing_host_config(host, cache, modelPath=str(model), servedModelName=SERVED_NAME,
                                  maxModelLen="512", apiPort=str(API_PORT), **extra)
    images.build_nginx_image(host, tag=config.access.proxy_image)
    return deploy(host, config, api_key=secrets.token_urlsafe(36))


def bench(args: argparse.Namespace) -> dict[str, Any]:
    with start_test_host() as host:
        cache = make_cache_dir(host, BUILD_DIR / "host-cache" / f"{host.name}-proxy-bench")
        try:
            deployment = _deploy(host, cache, args.proxy_image)
            plan, names = deployment.plan, deployment.plan.names
            proxy_address = _container_address(host, names.proxy_container, plan.network)
            vllm_address = _container_address(host, names.vllm_container, plan.network)
            targets = {"direct": f"http://{vllm_address}:{VLLM_CONTAINER_PORT}/v1",
                       "proxy": f"http://{proxy_address}:{PROXY_CONTAINER_PORT}/v1"}
            # Warm-up: vLLM's first requests compile and allocate; neither path should pay for that.
            for url in targets.values():
                _run_client(host, url, deployment.api_key, 8, 16, args.max_tokens)
            levels: dict[str, Any] = {}
            for concurrency in args.concurrency:
                requests = args.requests_per_client * concurrency
                runs: dict[str, list[dict[str, Any]]] = {"direct": [], "proxy": []}
                for round_no in range(args.rounds):
                    # ABBA order: drift in the shared machine's load falls on both paths alike.
                    order = ["direct", "proxy"] if round_no % 2 == 0 else ["proxy", "direct"]
                    for name in order:
                        before = _nginx_cpu_s(host, names.proxy_container) if name == "proxy" else 0.0
                        result = _run_client(host, targets[name], deployment.api_key, concurrency, requests,
                                             args.max_tokens)
                        if name == "proxy":
                            result["nginx_cpu_s"] = _nginx_cpu_s(host, names.proxy_container) - before
                        runs[name].append(result)
                        print(f"c={concurrency} round {round_no + 1} {name}: {len(result['latency_s'])} ok, "
                              f"{len(result['errors'])} errors, {result['wall_s']:.1f} s", flush=True)
                levels[str(concurrency)] = {name: _summary(r) for name, r in runs.items()}
                levels[str(concurrency)]["errors_seen"] = sorted({e for r in runs.values() for x in r
                                                                  for e in x["errors"]})[:5]
            limits = connection_limits(plan.proxy_settings.max_num_seqs)
            nginx_version = host.docker("run", "--rm", plan.config.access.proxy_image, "nginx", "-v").stderr.strip()
            return {
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "machine": {"hostname": platform.node(), "cpus": os.cpu_count(), "cpu": _cpu_model()},
                "vllm_image": plan.image_ref, "vllm_version": str(plan.vllm_version), "model": "tiny Qwen2 (tests)",
                "proxy_image": plan.config.access.proxy_image, "nginx": nginx_version,
                "proxy": {"pooled_upstream": plan.proxy_settings.pooled_upstream, "worker_processes": WORKER_PROCESSES,
                          "worker_connections": limits.worker_connections, "keepalive": limits.keepalive},
                "load": {"client": "openai AsyncOpenAI, streamed chat completions", "max_tokens": args.max_tokens,
                         "ignore_eos": True, "requests_per_client": args.requests_per_client,
                         "rounds": args.rounds, "prompt_chars": len(PROMPT)},
                "results": levels,
            }
        finally:
            host.remove_all_containers()
            shutil.rmtree(cache, ignore_errors=True)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{result['nginx']} ({'pooled' if result['proxy']['pooled_upstream'] else 'unpooled'}) "
          f"vs direct, vLLM {result['vllm_version']} CPU, {result['machine']['cpus']} cores")
    header = ("concurrency", "path", "req/s", "out tok/s", "p50 s", "p99 s", "TTFT p50 s", "errors", "nginx CPU")
    print(" | ".join(header))
    for concurrency, level in result["results"].items():
        for name in ("direct", "proxy"):
            s = level[name]
            cpu = f"{100 * s['nginx_cpu_share_of_one_core']:.1f}% of a core" if "nginx_cpu_s" in s else "-"
            print(" | ".join(str(v) for v in (concurrency, name, s["req_per_s"], s["output_tok_per_s"],
                                              s["latency_p50_s"], s["latency_p99_s"], s["ttft_p50_s"],
                                              s["errors"], cpu)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--requests-per-client", type=int, default=2, help="N = this x concurrency")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per path and concurrency")
    parser.add_argument("--max-tokens", type=int, default=32, help="output tokens per request (ignore_eos)")
    parser.add_argument("--proxy-image", help="proxyImage setting (an nginx before 1.27.3 by its tag renders the "
                        "unpooled config; the harness builds the same nginx binary under any tag)")
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default: bench/results/proxy-*.json)")
    # The load client's own mode, run by the driver inside the test host's network namespace.
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return client_main(args)
    problem = prerequisite_problem(REQUIRED_TOOLS, need_vllm_venv=True)
    if problem:
        print(f"cannot run: {problem}", file=sys.stderr)
        return 2
    result = bench(args)
    print_table(result)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M")
    out = args.out or RESULTS_DIR / f"proxy-{stamp}-{platform.node()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
