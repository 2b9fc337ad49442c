"""Deploy-path benchmark on real parts (a script, not a test). Run as root from the repo root:

    .venv/bin/python bench/deploy_path.py [--repeat 3]

On the real-parts test host (network namespace + sshd + dockerd, reached over SSH) with the real vLLM
server (CPU build) and the tiny chat model served by a Hugging Face Hub stand-in, it measures:

1. the cache-volume script (infra/host/prepare-cache-volume.sh) on a loop device of the default
   volume size: first boot (mkfs + mount) and a re-run;
2. a first deploy as on a new instance: the volume prepared on a loop device, boot.sh's prefetch
   section (image + model, from instance tags through a stand-in IMDS) filling it, then the plan's
   containers and the readiness gate, which prints the deploy timeline;
3. container create -> ready (`/v1/models` 200 through the readiness gate) with empty caches (a fresh
   host cache folder) and with the caches the volume keeps (same flags, container re-created);
4. the file bytes the Hub sent: a cold deploy, and a flag-only change (maxNumSeqs 64 -> 32) that
   must download nothing.

vLLM runs online (HF_ENDPOINT = the stand-in, reached from the container through Docker's bridge) and
loads the model by repo id, as the product's default container does. Results go to
build/bench/deploy_path.json and docs/performance-measured.md, and a copy of the JSON named by date and
machine to bench/results/ (committed: tools/gen_diagrams.py draws docs/deploy-timeline.svg from the newest).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.real.harness import images, loopdev  # noqa: E402
from tests.real.harness.bootprefetch import install_scripts, run_boot_prefetch  # noqa: E402
from tests.real.harness.common import BUILD_DIR, VLLM_VENV, prerequisite_problem, run  # noqa: E402
from tests.real.harness.deployer import deploy, existing_host_config, make_cache_dir  # noqa: E402
from tests.real.harness.fakehub import Counters, FakeHub  # noqa: E402
from tests.real.harness.testhost import REQUIRED_TOOLS, TestHost, start_test_host  # noqa: E402
from tests.real.harness.tiny_model import ensure_tiny_model  # noqa: E402
from vllm_endpoint.infra.plan.deployment import build_plan  # noqa: E402
from vllm_endpoint.infra.render.host_scripts import env_strings, readiness_gate_script  # noqa: E402
from vllm_endpoint.infra.render.userdata import HostBootSettings, boot_env_values  # noqa: E402

REPO = "bench/tiny-chat"
OUT_JSON = REPO_ROOT / "build" / "bench" / "deploy_path.json"
OUT_MD = REPO_ROOT / "docs" / "performance-measured.md"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
WORK = BUILD_DIR / "bench"
VOLUME_SCRIPT = REPO_ROOT / "infra" / "host" / "prepare-cache-volume.sh"
DEFAULT_VOLUME_GIB = 100  # infra/settings/models.py cache_volume_size_gb's default
GATE_POLL_S = 1  # the product polls every 5 s; 1 s here for a finer measurement
# vLLM's own start-up figures, as its log prints them (CPU build 0.32).
LOG_FIGURES = {
    "init_model_s": r"Initializing model took ([\d.]+) seconds",
    "weights_load_s": r"Loading weights took ([\d.]+) seconds",
    "engine_init_s": r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s",
    "compile_cache_load_s": r"from the cache, took ([\d.]+) s",
}
# Whether the compiled model came from VLLM_CACHE_ROOT, failed to load from it, or was compiled anew.
COMPILE_CACHE_HIT = "Directly load AOT compilation"
COMPILE_CACHE_LOAD_FAILED = r"Compiling model again due to a load failure from \S+, reason: (.*)"
COMPILE_CACHE_SAVE = "saved AOT compiled function"
LOG_TIME = r"\d\d-\d\d (\d\d):(\d\d):(\d\d) \["
# Steps of vLLM's start, each at the first log line that marks it (the readiness gate's stage() reads the
# same lines). Timed from Docker's own per-line timestamps: vLLM's log has whole seconds only.
LOG_MARKS = {
    "engine_config": r"Initializing a V1 LLM engine|non-default args",
    "weights_loading": r"Starting to load model|Loading safetensors|Loading weights",
    "weights_loaded": r"Loading weights took|Model loading took",
    "compile_warmup": r"Warming up model for the compilation|torch\.compile|Compiling a graph|Dynamo bytecode",
    "warmup_done": r"Warming up done",
    "kv_cache_sized": r"KV cache size|Maximum concurrency",
    "api_server_up": r"Available routes|Uvicorn running|Application startup complete",
}
# Settings every deploy of the run gets (`--set`), recorded with the result.
EXTRA_SETTINGS: dict[str, str] = {}
ONLINE_ENV = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:")))
    load = os.getloadavg()
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem_kib / 1024 / 1024, 1),
            "kernel": platform.release(), "load_avg_at_start": [round(x, 2) for x in load],
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")}


def result_name(m: dict[str, Any]) -> str:
    """deploy-path-<date>-<n>vcpu-<cpu>.json: the recorded result's name says when and on what."""
    cpu = re.sub(r"[^a-z0-9]+", "-", str(m["cpu"]).lower()).strip("-")
    return f"deploy-path-{str(m['date'])[:10]}-{m['nproc']}vcpu-{cpu}.json"


# --- 1. the cache-volume script ---------------------------------------------------------------------

@contextmanager
def loop_volume(size_gib: int, name: str) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """A blank loop device presented like an EBS volume; yields (device, mount point, script env)."""
    root = WORK / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    root.chmod(0o755)
    volume_id = "vol-" + secrets.token_hex(9)[:17]
    with loopdev.loop_device(size_mib=size_gib * 1024) as device:
        by_id = root / "by-id"
        by_id.mkdir()
        (by_id / f"nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}").symlink_to(device)
        mount_point = root / "cache"
        boot = env_strings(boot_env_values(HostBootSettings(volume_id, "ubuntu", "", "")))
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CACHE_VOLUME_ID": volume_id,
               "CACHE_MOUNT_POINT": str(mount_point), "CACHE_SUBDIRS": boot["CACHE_SUBDIRS"],
               "CACHE_WAIT_SECONDS": "10", "CACHE_DEVICE_DIR": str(by_id), "CACHE_FSTAB": str(root / "fstab")}
        try:
            yield device, mount_point, env
        finally:
            run(["umount", str(mount_point)], check=False)
    shutil.rmtree(root, ignore_errors=True)


def run_volume_script(env: dict[str, str]) -> float:
    start = time.monotonic()
    run(["bash", str(VOLUME_SCRIPT)], env=env, timeout=600)
    return time.monotonic() - start


def bench_volume_script(repeat: int, size_gib: int) -> dict[str, Any]:
    first, again = [], []
    for i in range(repeat):
        with loop_volume(size_gib, f"volume-{i}") as (_, _, env):
            first.append(run_volume_script(env))
            again.append(run_volume_script(env))
    log(f"volume script: first boot {statistics.median(first):.2f} s, re-run {statistics.median(again):.2f} s")
    return {"size_gib": size_gib, "first_boot_s": first, "rerun_s": again,
            "first_boot_median_s": statistics.median(first), "rerun_median_s": statistics.median(again)}


# --- deploys ----------------------------------------------------------------------------------------

def hub_traffic(counters: Counters) -> dict[str, Any]:
    """What the Hub stand-in sent: whole files (downloads into a cache) apart from ranged reads (vLLM
    reads a safetensors header from the Hub with range requests; nothing of it is cached)."""
    kinds = {"api": 0, "head_resolve": 0, "get_resolve": 0, "lfs_storage": 0, "other": 0}
    for r in counters.requests:
        if r.path.startswith("/api/"):
            kinds["api"] += 1
        elif r.path.startswith("/lfs/"):
            kinds["lfs_storage"] += 1
        elif "/resolve/" in r.path:
            kinds["head_resolve" if r.method == "HEAD" else "get_resolve"] += 1
        else:
            kinds["other"] += 1
    whole = [r for r in counters.requests if r.file_bytes and not r.range]
    ranged = [r for r in counters.requests if r.file_bytes and r.range]
    return {"file_bytes": sum(r.file_bytes for r in whole), "range_read_bytes": sum(r.file_bytes for r in ranged),
            "ranges": [r.range for r in ranged], "files_sent": sorted({r.path for r in whole}), "requests": kinds}


def _log_seconds(line: str) -> int | None:
    match = re.search(LOG_TIME, line)
    return int(match[1]) * 3600 + int(match[2]) * 60 + int(match[3]) if match else None


def vllm_log_figures(host: TestHost) -> dict[str, Any]:
    logs = host.docker("logs", "vllm", check=False)
    text = logs.stdout + logs.stderr
    found: dict[str, Any] = {}
    for key, pattern in LOG_FIGURES.items():
        values = [float(v) for v in re.findall(pattern, text)]
        if values:
            found[key] = round(sum(values), 2)
    lines = text.splitlines()
    warm_start = next((_log_seconds(x) for x in lines if "Warming up model for the compilation" in x), None)
    warm_end = next((_log_seconds(x) for x in lines if "Warming up done" in x), None)
    if warm_start is not None and warm_end is not None:
        found["compile_warmup_s"] = (warm_end - warm_start) % 86400  # the log has whole seconds
    failed = re.search(COMPILE_CACHE_LOAD_FAILED, text)
    if COMPILE_CACHE_HIT in text:
        found["compile_cache"] = "loaded"
    elif failed:
        found["compile_cache"] = "load failed, recompiled"
        found["compile_cache_error"] = failed[1].strip()
    else:
        found["compile_cache"] = "compiled, saved" if COMPILE_CACHE_SAVE in text else "none"
    return found


def vllm_log_marks(host: TestHost, started: float) -> dict[str, float]:
    """Seconds from the container's start to the first log line of each LOG_MARKS step."""
    logs = host.docker("logs", "--timestamps", "vllm", check=False)
    stamped = []
    for line in (logs.stdout + logs.stderr).splitlines():
        stamp, _, text = line.partition(" ")
        stamped.append((stamp, text))
    marks: dict[str, float] = {}
    for key, pattern in LOG_MARKS.items():
        found = next((stamp for stamp, text in stamped if re.search(pattern, text, re.IGNORECASE)), None)
        if found is not None:
            marks[key] = round(epoch(found) - started, 2)
    return dict(sorted(marks.items(), key=lambda item: item[1]))


def epoch(docker_time: str) -> float:
    return float(run(["date", "-d", docker_time, "+%s.%N"]).stdout.strip())


def timed_deploy(host: TestHost, hub: FakeHub, cache_dir: Path, label: str, **settings: str) -> dict[str, Any]:
    """deploy() without its gate, then the gate polling every GATE_POLL_S: container create -> ready."""
    config = existing_host_config(host, cache_dir, model=REPO, maxModelLen="512",
                                  extraEnv=json.dumps({"HF_ENDPOINT": hub.endpoint, **ONLINE_ENV}),
                                  **{**EXTRA_SETTINGS, **settings})
    api_key = secrets.token_urlsafe(32)
    hub.reset_counters()
    deployment = deploy(host, config, api_key, gate=False)
    gate = dataclasses.replace(deployment.plan.readiness_gate, poll_interval_s=GATE_POLL_S)
    proc = host.ssh(readiness_gate_script(gate), input=api_key + "\n", timeout=gate.timeout_s + 60)
    ready = time.time()
    traffic = hub_traffic(hub.reset_counters())
    created = epoch(host.docker("inspect", "--format", "{{.Created}}", "vllm").stdout.strip())
    started = epoch(host.docker("inspect", "--format", "{{.State.StartedAt}}", "vllm").stdout.strip())
    server_ready = next((float(line.split()[1]) for line in proc.stdout.splitlines()
                         if line.startswith("server_ready ")), ready)
    result = {
        "label": label, "settings": settings,
        "create_to_ready_s": round(server_ready - created, 2),
        "start_to_ready_s": round(server_ready - started, 2),
        "hub": traffic, "vllm_log": vllm_log_figures(host), "log_marks_s": vllm_log_marks(host, started),
        "gate_output": proc.stdout,
        "args": list(deployment.vllm.args),
    }
    log(f"{label}: create->ready {result['create_to_ready_s']:.1f} s, hub file bytes {traffic['file_bytes']}, "
        f"vLLM: {result['vllm_log']}")
    return result


def fresh_cache_dir(host: TestHost, name: str) -> Path:
    path = BUILD_DIR / "host-cache" / f"bench-{name}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    return make_cache_dir(host, path)


# --- 2. a first deploy on a new volume, with the boot-time prefetch --------------------------------

def bench_first_deploy(host: TestHost, hub: FakeHub, vllm_image: str, size_gib: int) -> dict[str, Any]:
    work = WORK / "first-deploy"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    work.chmod(0o755)
    install_scripts(work)
    with loop_volume(size_gib, "first-deploy-volume") as (_, mount_point, env):
        boot_timeline = WORK / "first-deploy-volume" / "timeline"
        owner = str(boot_env_values(HostBootSettings("vol-0123456789abcdef0", host.ssh_user, "", ""))["CACHE_OWNER"])
        volume_s = run_volume_script({**env, "CACHE_OWNER": owner, "DEPLOY_TIMELINE_FILE": str(boot_timeline)})
        # An existing-host layout on the mounted volume: the deploy's timeline lives on it, owned by the
        # SSH user (on AWS it is /var/lib/vllm-endpoint/timeline).
        make_cache_dir(host, mount_point)
        # Where the endpoint's gate reads the timeline: the endpoint's own folder under hostCacheDir.
        plan = build_plan(existing_host_config(host, mount_point, model=REPO, **EXTRA_SETTINGS))
        timeline = Path(plan.readiness_gate.timeline_file)
        make_cache_dir(host, timeline.parent)
        shutil.copy(boot_timeline, timeline)
        os.chown(timeline, host.uid, host.gid)
        hub.reset_counters()
        boot = run_boot_prefetch(host, work, "boot", {"prefetch-image": vllm_image, "prefetch-model": REPO},
                                 hub.endpoint, cache=mount_point, timeline=timeline, trace=False)
        prefetch_traffic = hub_traffic(hub.reset_counters())
        markers = {p.name: p.read_text().strip() for p in boot.state.glob("prefetch-*.done")}
        markers |= {p.name: p.read_text().strip() for p in boot.state.glob("prefetch-*.failed")}
        deployed = timed_deploy(host, hub, mount_point, "first deploy (prefetched volume)")
        host.remove_all_containers()
    shutil.rmtree(work, ignore_errors=True)
    log("first deploy timeline:\n" + "\n".join(line for line in deployed["gate_output"].splitlines()
                                                if line.split(" ")[0] in _STAGES))
    return {"volume_script_s": round(volume_s, 2), "prefetch_s": round(boot.seconds, 2), "prefetch_markers": markers,
            "prefetch_hub": prefetch_traffic, "deploy": deployed,
            "timeline": [line for line in deployed["gate_output"].splitlines() if line.split(" ")[0] in _STAGES]}


_STAGES = ("instance_booted", "cache_volume_mounted", "docker_ready", "image_present", "model_present",
           "container_started", "server_ready")


# --- 3 and 4. cold vs kept caches; a flag-only change ---------------------------------------------

def bench_cold_warm(host: TestHost, hub: FakeHub, repeat: int) -> dict[str, Any]:
    cold, warm = [], []
    last_dir: Path | None = None
    for i in range(repeat):
        cache_dir = fresh_cache_dir(host, f"cold{i}")
        cold.append(timed_deploy(host, hub, cache_dir, f"cold #{i + 1} (empty caches)"))
        warm.append(timed_deploy(host, hub, cache_dir, f"kept caches #{i + 1} (container re-created)"))
        host.remove_all_containers()
        if last_dir is not None:
            shutil.rmtree(last_dir, ignore_errors=True)
        last_dir = cache_dir
    cold_med = statistics.median(r["create_to_ready_s"] for r in cold)
    warm_med = statistics.median(r["create_to_ready_s"] for r in warm)
    compile_cache = last_dir / "root-cache" / "vllm" if last_dir else None
    return {"cold": cold, "warm": warm, "cold_median_s": cold_med, "warm_median_s": warm_med,
            "ratio_cold_over_warm": round(cold_med / warm_med, 2), "last_cache_dir": str(last_dir),
            "compile_cache_entries": sorted(str(p.relative_to(compile_cache)) for p in compile_cache.glob("*/*"))
            if compile_cache and compile_cache.exists() else []}


def bench_flag_change(host: TestHost, hub: FakeHub, cache_dir: Path) -> dict[str, Any]:
    before = timed_deploy(host, hub, cache_dir, "maxNumSeqs=64", maxNumSeqs="64")
    after = timed_deploy(host, hub, cache_dir, "flag change maxNumSeqs 64 -> 32", maxNumSeqs="32")
    host.remove_all_containers()
    return {"before": before, "after": after, "file_bytes_after_change": after["hub"]["file_bytes"]}


# --- output -------------------------------------------------------------------------------------------

def markdown(results: dict[str, Any]) -> str:
    m, vol, first, cw, flag = (results[k] for k in ("machine", "volume_script", "first_deploy", "cold_warm",
                                                     "flag_change"))
    cold_bytes = cw["cold"][0]["hub"]["file_bytes"]

    def secs(values: list[dict[str, Any]]) -> str:
        return ", ".join(f"{r['create_to_ready_s']:.1f}" for r in values)

    lines = [
        "# Deploy path, measured on real parts",
        "",
        "<!-- generated by bench/deploy_path.py; do not edit by hand -->",
        "",
        f"Measured {m['date']} on {m['nproc']} vCPUs ({m['cpu']}), {m['ram_gib']} GiB RAM, Linux {m['kernel']}; "
        f"load average at start {m['load_avg_at_start'][0]}. The real vLLM {results['vllm_version']} server "
        "(CPU build) in the test image, on the real-parts test host (network namespace + sshd + dockerd, "
        "reached over SSH); the tiny Qwen2 chat model loaded by repo id from a Hugging Face Hub stand-in "
        "(online, `HF_ENDPOINT`), behind the product's proxy. Create -> ready is from Docker's `Created` of "
        f"the vLLM container to `/v1/models` answering 200 through the readiness gate (polling every "
        f"{GATE_POLL_S} s). Medians of {results['repeat']} runs.",
        "",
        "| what | figure |",
        "|---|---|",
        f"| container create -> ready, empty caches (fresh cache folder) | {cw['cold_median_s']:.1f} s "
        f"(runs: {secs(cw['cold'])}) |",
        f"| container create -> ready, caches kept (same flags, container re-created) | {cw['warm_median_s']:.1f} s "
        f"(runs: {secs(cw['warm'])}) |",
        f"| ratio empty / kept | {cw['ratio_cold_over_warm']:.2f}x |",
        f"| files downloaded from the Hub, cold deploy | {cold_bytes:,} B (the whole model) |",
        f"| files downloaded, flag-only change (maxNumSeqs 64 -> 32, container re-created) | "
        f"{flag['file_bytes_after_change']:,} B; ready in {flag['after']['create_to_ready_s']:.1f} s |",
        f"| files downloaded by vLLM after the boot-time prefetch | {first['deploy']['hub']['file_bytes']:,} B "
        f"(the prefetch fetched {first['prefetch_hub']['file_bytes']:,} B in {first['prefetch_s']:.2f} s) |",
        f"| safetensors header read by vLLM online at every start (range requests, not cached) | "
        f"{flag['after']['hub']['range_read_bytes']:,} B |",
        f"| cache-volume script, first boot ({vol['size_gib']} GiB loop device: mkfs + mount) | "
        f"{vol['first_boot_median_s']:.2f} s |",
        f"| cache-volume script, re-run (already formatted and mounted) | {vol['rerun_median_s']:.2f} s |",
        "",
        "vLLM's own start-up figures (from its log; seconds):",
        "",
        "| run | create -> ready | compile cache | compile + warm-up | " + " | ".join(LOG_FIGURES) + " |",
        "|---|---|---|---|" + "---|" * len(LOG_FIGURES),
    ]
    for r in [*cw["cold"], *cw["warm"], flag["before"], flag["after"]]:
        figures = r["vllm_log"]
        lines.append(f"| {r['label']} | {r['create_to_ready_s']:.1f} | {figures['compile_cache']} | "
                     f"{figures.get('compile_warmup_s', '-')} | "
                     + " | ".join(str(figures.get(k, "-")) for k in LOG_FIGURES) + " |")
    errors = sorted({r["vllm_log"]["compile_cache_error"] for r in [*cw["warm"], flag["after"]]
                     if "compile_cache_error" in r["vllm_log"]})
    if errors:
        lines += [
            "",
            "With the caches kept, this CPU build of vLLM could not load its own AOT-compiled model from "
            f"`VLLM_CACHE_ROOT` ({'; '.join(errors)}) and compiled it again; the kept caches still shortened "
            "the compile and warm-up step (the column above), which is where the difference comes from. GPU "
            "images load that artifact (the H100 figures below).",
        ]
    if flag["after"]["vllm_log"].get("compile_cache") == "compiled, saved":
        lines += [
            "",
            f"The maxNumSeqs change needed no download but missed the compile cache: vLLM hashes "
            f"`max_num_seqs` into its compile-cache key (the scheduler config's hash), so it compiled anew "
            f"({flag['after']['create_to_ready_s']:.1f} s, against {cw['warm_median_s']:.1f} s for a re-created "
            "container with unchanged flags).",
        ]
    lines += [
        "",
        "The deploy timeline the readiness gate printed for a first deploy on the test host (cache volume "
        "on a loop device, prepared by the boot script; image and model prefetched by boot.sh's prefetch "
        "section from instance tags; then the containers):",
        "",
        "```",
        *first["timeline"],
        "```",
        "",
        f"(That first start of vLLM in the run took {first['deploy']['create_to_ready_s']:.1f} s from container "
        f"create, compile and warm-up {first['deploy']['vllm_log'].get('compile_warmup_s', '-')} s, longer than "
        "the cold runs above that followed it.)",
        "",
        "GPU figures to compare with (Qwen2.5-1.5B architecture, H100, vLLM 0.24.0): issue 7 quotes an "
        "engine start of 87 s with an empty compile cache and 34 s with it kept (torch.compile 31.5 s -> "
        "6.2 s), a ratio of 2.6x; the team's vLLM notes (shared/notes/vllm-facts.md) give 107 s and 68 s "
        "from process start to engine ready (torch.compile 24 s -> 6 s). Issue 7 also quotes published "
        "breakdowns that put a cold deploy near 60-80 s at best (EC2 boot ~25 s + a vLLM start with warm "
        "caches ~35 s) and a flag change at 40-60 s.",
        "",
        "What differs here: a CPU has no CUDA graphs and no FlashInfer, the model is tiny (weights load in "
        "milliseconds), there is no registry (the image is already present: the pull is not measured) "
        "and the Hub stand-in is on the same machine, so the download time of a real model is not "
        "measured either — its bytes are.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median reported)")
    parser.add_argument("--volume-gib", type=int, default=DEFAULT_VOLUME_GIB, help="loop device size")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for every deploy of the run, e.g. proxyImage=nginx:1.22.1 (the test "
                             "host's nginx is this machine's)")
    parser.add_argument("--markdown", type=Path, default=OUT_MD,
                        help=f"where the report goes (default {OUT_MD.relative_to(REPO_ROOT)})")
    parser.add_argument("--render-only", action="store_true",
                        help=f"only regenerate {OUT_MD.relative_to(REPO_ROOT)} from {OUT_JSON.relative_to(REPO_ROOT)}")
    args = parser.parse_args()
    if args.render_only:
        args.markdown.write_text(markdown(json.loads(OUT_JSON.read_text())))
        return 0
    tools = (*REQUIRED_TOOLS, "losetup", "mkfs.ext4", "curl", "runuser", "setsid", "debootstrap")
    problem = prerequisite_problem(tools, need_vllm_venv=True)
    if problem:
        print(f"cannot run: {problem}", file=sys.stderr)
        return 2
    started = time.monotonic()
    WORK.mkdir(parents=True, exist_ok=True)
    EXTRA_SETTINGS.update(item.split("=", 1) for item in args.set)
    results: dict[str, Any] = {"machine": machine(), "repeat": args.repeat, "settings": dict(EXTRA_SETTINGS)}
    loopdev.cleanup_leftovers()
    results["volume_script"] = bench_volume_script(args.repeat, args.volume_gib)
    model = ensure_tiny_model(BUILD_DIR / "models", VLLM_VENV / "bin" / "python")
    with start_test_host() as host:
        vllm_image = images.build_vllm_image(host)
        results["vllm_version"] = vllm_image.rsplit(":v", 1)[-1]
        config = existing_host_config(host, WORK, model=REPO, **EXTRA_SETTINGS)
        images.build_nginx_image(host, tag=config.access.proxy_image)
        # In the test host's namespace, on its address: the vLLM container reaches it through Docker's bridge.
        with FakeHub(address=host.address, netns=host.name) as hub:
            hub.add_repo(REPO, model)
            results["first_deploy"] = bench_first_deploy(host, hub, vllm_image, args.volume_gib)
            results["cold_warm"] = bench_cold_warm(host, hub, args.repeat)
            last = Path(results["cold_warm"]["last_cache_dir"])
            results["flag_change"] = bench_flag_change(host, hub, last)
            shutil.rmtree(last, ignore_errors=True)
    results["total_bench_s"] = round(time.monotonic() - started, 1)
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(results, indent=2) + "\n")
    record = RESULTS_DIR / result_name(results["machine"])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy(OUT_JSON, record)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(markdown(results))
    log(f"wrote {OUT_JSON.relative_to(REPO_ROOT)}, {record.relative_to(REPO_ROOT)} and {args.markdown} "
        f"({results['total_bench_s']:.0f} s)")
    print(args.markdown.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

