"""Fleet benchmark on real parts (a script, not a test): scale-out from a warm-cache snapshot, and the service as
its clients see it during rolling updates. Run as root from the repo root:

    .venv/bin/python bench/fleet_rollout.py

Two replicas of the endpoint (vLLM CPU build + the product's proxy, from the same container specs as the ECS
task) on two test hosts, behind a real HAProxy configured from the fleet's `load_balancer_spec()` (health check
path, interval, thresholds, least outstanding requests, draining; tests/real/harness/alb_haproxy.py). Each
replica's cache is its own loop device, mounted by the fleet instance's own boot script (infra/host/ecs-host.sh
`mount`, rendered for the shipped fleet stack); the tiny chat model is loaded by repo id from a Hub stand-in on
each host (online, as the product's default container loads it). It measures:

1. cold: a replica on a new, blank cache volume, from its vLLM container's start to healthy (`/health` 200,
   asked directly every 0.5 s) and to in service at the load balancer;
2. restored: a second replica whose cache volume is a block-level copy of the first's, taken while the first
   serves (frozen for the copy, as a snapshot of a volume in use), as `cacheSnapshotId` gives new instances;
   the same figures, and the Hub bytes each start downloaded;
3. a rolling update of the two replicas to a changed flag without room for extra tasks (`surgeOnDeploy: false`,
   minimum healthy 50 %: one replica drained, stopped, started again with the new task definition on its
   instance, in service, then the other), and
4. after a scale-in to one replica, a rolling update with room (the default, 100/200: the new task starts on
   the other instance, whose volume was restored from the snapshot, is in service, then the old one is drained
   and stopped),
   each while clients call the service through the load balancer one request after another: failures, the
   longest gap between two answers against the median one, and each replica's time out of service.

Results go to build/bench/fleet_rollout.json, docs/fleet-measured.md and a copy of the JSON named by date and
machine in bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from deploy_path import epoch, hub_traffic, log, machine, vllm_log_figures  # noqa: E402  (bench/ is the script's folder)

from tests.real.harness import images, loopdev  # noqa: E402
from tests.real.harness.alb_haproxy import Target, running_haproxy  # noqa: E402
from tests.real.harness.common import BUILD_DIR, VLLM_VENV, prerequisite_problem, run  # noqa: E402
from tests.real.harness.deployer import deploy, existing_host_config, make_cache_dir  # noqa: E402
from tests.real.harness.fakehub import FakeHub  # noqa: E402
from tests.real.harness.fleet import Fleet, SteadyClient, fleet_host_settings  # noqa: E402
from tests.real.harness.testhost import REQUIRED_TOOLS, TestHost, start_test_host  # noqa: E402
from tests.real.harness.tiny_model import ensure_tiny_model  # noqa: E402
from vllm_endpoint.infra.catalog.names import HEALTH_PATH  # noqa: E402
from vllm_endpoint.infra.render.ecs_host import render_ecs_host_script  # noqa: E402
from vllm_endpoint.infra.render.load_balancer import load_balancer_spec  # noqa: E402
from vllm_endpoint.infra.settings.models import StackConfig  # noqa: E402

REPO = "bench/tiny-chat"
SERVED_NAME = "tiny-fleet"
API_PORT = 30022
# The rolling updates' changed flag: each value is a new task definition (and, as vLLM hashes max_num_seqs into
# its compile-cache key, a recompile on a cache that has only the previous value's).
MAX_NUM_SEQS = (2, 4, 8)
DRAIN_DELAY_S = 60
# The clients during the updates: one short request after another, a pause between. Gentle on purpose: here
# the replicas share 2 cores, and vLLM's CPU build pins a starting engine's core process to the core the other
# replica's worker uses; under a heavy load that start waits minutes for CPU (measured: 464 s instead of 71 s).
# On AWS each replica has its own instance.
CLIENT_WORKERS, CLIENT_PAUSE_S = 1, 1.0
VOLUME_GIB = 2  # sparse: only what the cache holds is written
START_TIMEOUT_S = 900
ONLINE_ENV = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
OUT_JSON = REPO_ROOT / "build" / "bench" / "fleet_rollout.json"
OUT_MD = REPO_ROOT / "docs" / "fleet-measured.md"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
WORK = BUILD_DIR / "bench-fleet"


@dataclass
class Replica:
    """A replica's instance: its test host, cache volume (mounted by ecs-host.sh), Hub stand-in and CPU core."""

    name: str
    host: TestHost
    device: str
    mount_point: Path
    hub: FakeHub
    core: int

    def config(self, max_num_seqs: int) -> StackConfig:
        # Two vLLM CPU engines share 2 cores: each binds its worker to its own (tests/real/test_fleet_load_balancer).
        env = {"HF_ENDPOINT": self.hub.endpoint, **ONLINE_ENV, "VLLM_CPU_OMP_THREADS_BIND": str(self.core)}
        return existing_host_config(self.host, self.mount_point, model=REPO, servedModelName=SERVED_NAME,
                                    maxModelLen="512", apiPort=str(API_PORT), maxNumSeqs=str(max_num_seqs),
                                    extraEnv=json.dumps(env))


def mount_cache(device: str, root: Path, host: TestHost) -> tuple[Path, str]:
    """The fleet instance's boot script on `device`; returns the mount point and what the script said.

    On AWS every instance runs the task as the same user (1000:1000), so a restored volume's files are already
    its own; each test host has a user of its own, so the volume is handed to this host's user (the endpoint's
    containerUser; the existing-host layout also needs the mount point itself to be the user's)."""
    root.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.replace(fleet_host_settings(), cache_device=device, cache_mount_point=str(root / "cache"))
    script = root / "ecs-host.sh"
    script.write_text(render_ecs_host_script(settings))
    said = run(["bash", str(script), "mount"], timeout=120).stdout.strip()
    run(["chown", "-R", f"{host.uid}:{host.gid}", settings.cache_mount_point])
    return make_cache_dir(host, Path(settings.cache_mount_point)), said


def start(fleet: Fleet, replica: Replica, max_num_seqs: int, label: str) -> dict[str, Any]:
    """Deploys the replica's containers, registers it at once (as ECS does a running task), and times its vLLM
    container's start to healthy (asked directly) and to in service at the load balancer."""
    replica.hub.reset_counters()
    config = replica.config(max_num_seqs)
    fleet.configs[replica.name] = config
    deployment = deploy(replica.host, config, fleet.api_key, gate=False)
    fleet.lb.register(replica.name)
    health = f"http://{replica.host.address}:{API_PORT}{HEALTH_PATH}"
    replica.host.wait_http(health, timeout=START_TIMEOUT_S, container=deployment.plan.vllm.name)
    healthy = time.time()
    check = fleet.lb.spec.target_group.health_check
    up = fleet.lb.wait_status(replica.name, "UP", timeout=check.seconds_to_healthy + check.interval_s + 5)
    up_wall = time.time() - (time.monotonic() - up)
    started = epoch(replica.host.docker("inspect", "--format", "{{.State.StartedAt}}",
                                        deployment.plan.vllm.name).stdout.strip())
    fleet.replicas[replica.name] = deployment
    result: dict[str, Any] = {"label": label, "replica": replica.name, "max_num_seqs": max_num_seqs,
              "start_to_healthy_s": round(healthy - started, 2), "start_to_in_service_s": round(up_wall - started, 2),
              "hub": hub_traffic(replica.hub.reset_counters()), "vllm_log": vllm_log_figures(replica.host)}
    log(f"{label}: container start -> healthy {result['start_to_healthy_s']:.1f} s, in service "
        f"{result['start_to_in_service_s']:.1f} s; Hub file bytes {result['hub']['file_bytes']}; "
        f"compile cache: {result['vllm_log'].get('compile_cache')}")
    return result


def leave(fleet: Fleet, name: str) -> dict[str, Any]:
    removed = fleet.remove(name)
    return {"replica": name, "drained_s": round(removed.drained.seconds, 2),
            "in_flight_at_drain": removed.drained.in_flight_at_start,
            "stop_s": {k: round(v, 2) for k, v in removed.stop_seconds.items()}}


def client_view(steady: SteadyClient, since: float) -> dict[str, Any]:
    answers = [a for a in steady.answers if a.started >= since]
    ends = sorted(a.ended for a in answers if a.ok)
    gaps = [b - a for a, b in itertools.pairwise(ends)]
    latencies = [a.ended - a.started for a in answers if a.ok]
    return {"answers": len(answers), "failed": sum(not a.ok for a in answers),
            "errors": sorted({a.error for a in answers if not a.ok})[:5],
            "max_gap_s": round(max(gaps, default=0.0), 2), "median_gap_s": round(statistics.median(gaps), 3)
            if gaps else None, "median_latency_s": round(statistics.median(latencies), 3) if latencies else None,
            "max_latency_s": round(max(latencies, default=0.0), 2)}


def update_without_room(fleet: Fleet, replicas: dict[str, Replica], max_num_seqs: int) -> dict[str, Any]:
    """minimumHealthyPercent 50 / maximumPercent 100 with 2 replicas: one task at a time stops, then its
    successor starts on the freed instance."""
    steps = []
    with SteadyClient(fleet, workers=CLIENT_WORKERS, pause_s=CLIENT_PAUSE_S).running() as steady:
        began = time.monotonic()
        for name, replica in replicas.items():
            out_at = time.monotonic()
            gone = leave(fleet, name)
            back = start(fleet, replica, max_num_seqs, f"no room: {name} with maxNumSeqs {max_num_seqs}")
            steps.append({"leave": gone, "start": back, "out_of_service_s": round(time.monotonic() - out_at, 1)})
        settled = time.monotonic()
        time.sleep(3)  # a few answers from the updated fleet
    return {"strategy": "surgeOnDeploy false (50/100)", "steps": steps, "update_s": round(settled - began, 1),
            "clients": client_view(steady, began)}


def update_with_room(fleet: Fleet, old: str, new: Replica, max_num_seqs: int) -> dict[str, Any]:
    """minimumHealthyPercent 100 / maximumPercent 200 (the default): the new task on another instance, in
    service before the old one is drained and stopped."""
    with SteadyClient(fleet, workers=CLIENT_WORKERS, pause_s=CLIENT_PAUSE_S).running() as steady:
        began = time.monotonic()
        joined = start(fleet, new, max_num_seqs, f"with room: {new.name} with maxNumSeqs {max_num_seqs}")
        gone = leave(fleet, old)
        settled = time.monotonic()
        time.sleep(3)
    return {"strategy": "surge (100/200, the default)", "start": joined, "leave": gone,
            "update_s": round(settled - began, 1), "clients": client_view(steady, began)}


def replica_on(stack: contextlib.ExitStack, name: str, host: TestHost, device: str, core: int,
               model: Path) -> Replica:
    """A replica's instance: its cache volume mounted by the boot script, a Hub stand-in in its namespace."""
    mount_point, said = mount_cache(device, WORK / name, host)
    log(f"{name}: {said.splitlines()[-1] if said else 'mounted'}")
    hub = stack.enter_context(FakeHub(address=host.address, netns=host.name))
    hub.add_repo(REPO, model)
    return Replica(name, host, device, mount_point, hub, core)


def bench(stack: contextlib.ExitStack, model: Path, results: dict[str, Any]) -> None:
    hosts = {"a": stack.enter_context(start_test_host()), "b": stack.enter_context(start_test_host())}
    for host in hosts.values():
        results["vllm_version"] = images.build_vllm_image(host).rsplit(":v", 1)[-1]
    volume_a = stack.enter_context(loopdev.loop_device(size_mib=VOLUME_GIB * 1024))
    a = replica_on(stack, "a", hosts["a"], volume_a, 0, model)
    for host in hosts.values():
        images.build_nginx_image(host, tag=a.config(MAX_NUM_SEQS[0]).access.proxy_image)
    spec = load_balancer_spec(target_port=API_PORT, deregistration_delay_s=DRAIN_DELAY_S)
    (WORK / "lb").mkdir()
    lb = stack.enter_context(running_haproxy(spec, [Target(n, h.address) for n, h in hosts.items()], WORK / "lb"))
    # Registered last, so run first: the containers go before the volumes they use are detached.
    for host in hosts.values():
        stack.callback(host.remove_all_containers)
    fleet = Fleet(lb, hosts, {}, {}, "bench-" + "k" * 40, SERVED_NAME)
    results["cold"] = start(fleet, a, MAX_NUM_SEQS[0], "cold: a on a new volume")

    with SteadyClient(fleet, workers=CLIENT_WORKERS, pause_s=CLIENT_PAUSE_S).running() as steady:
        took = time.monotonic()
        with loopdev.frozen(str(a.mount_point)):
            snapshot = loopdev.snapshot(volume_a)
        took = time.monotonic() - took
        time.sleep(3)  # a few answers after the thaw
    allocated = int(run(["du", "-B1", "--", str(snapshot)]).stdout.split()[0])
    log(f"snapshot of a's volume while it serves: {took:.1f} s, {allocated:,} B allocated")
    results["snapshot"] = {"seconds": round(took, 2), "allocated_bytes": allocated,
                           "clients_meanwhile": client_view(steady, 0.0)}
    # The scale-out, without client load: its start is compared with a's, which had none either.
    volume_b = stack.enter_context(loopdev.restored(snapshot))
    b = replica_on(stack, "b", hosts["b"], volume_b, 1, model)
    stack.callback(hosts["b"].remove_all_containers)  # before its volume is detached (LIFO)
    results["restored"] = start(fleet, b, MAX_NUM_SEQS[0], "restored: b on a copy of a's volume")
    replicas = {"a": a, "b": b}
    results["update_without_room"] = update_without_room(fleet, replicas, MAX_NUM_SEQS[1])
    # One replica left (a scale-in), then the default update moves it to b's instance.
    results["scale_in"] = leave(fleet, "b")
    results["update_with_room"] = update_with_room(fleet, "a", b, MAX_NUM_SEQS[2])


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    cold, restored = r["cold"], r["restored"]

    def row(s: dict[str, Any]) -> str:
        v = s["vllm_log"]
        return (f"| {s['label']} | {s['start_to_healthy_s']:.1f} | {s['start_to_in_service_s']:.1f} | "
                f"{s['hub']['file_bytes']:,} | {v.get('compile_cache', '-')} | {v.get('compile_warmup_s', '-')} |")

    def update(u: dict[str, Any]) -> str:
        c = u["clients"]
        return (f"| {u['strategy']} | {u['update_s']:.0f} | {c['answers']} | {c['failed']} | {c['max_gap_s']:.2f} | "
                f"{c['median_gap_s']} | {c['max_latency_s']:.2f} |")

    starts = [cold, restored, *(s["start"] for s in r["update_without_room"]["steps"]),
              r["update_with_room"]["start"]]
    lines = [
        "# Fleet: scale-out from a snapshot and rolling updates, measured on real parts",
        "",
        "<!-- generated by bench/fleet_rollout.py; do not edit by hand -->",
        "",
        f"Measured {m['date']} on {m['nproc']} vCPUs ({m['cpu']}), {m['ram_gib']} GiB RAM; load average at start "
        f"{m['load_avg_at_start'][0]}. The real vLLM {r.get('vllm_version', '?')} server (CPU build) with the "
        "product's proxy on two test hosts (network namespaces with sshd and dockerd), behind a real HAProxy "
        "configured from the fleet's load balancer spec; each replica's cache on its own loop device mounted by "
        "the fleet instance's boot script (infra/host/ecs-host.sh); the tiny chat model by repo id from a Hub "
        f"stand-in on each host. Health is `{HEALTH_PATH}` answering 200, asked directly every 0.5 s; in service "
        "is HAProxy's checks passing (the target group's interval x healthy threshold). One run each.",
        "",
        "| vLLM container start | to healthy (s) | to in service (s) | Hub bytes downloaded | compile cache | "
        "compile + warm-up (s) |",
        "|---|---|---|---|---|---|",
        *(row(s) for s in starts),
        "",
        f"The copy of a's volume (the snapshot) took {r['snapshot']['seconds']:.1f} s for "
        f"{r['snapshot']['allocated_bytes']:,} B written, with the filesystem frozen meanwhile; a kept serving: "
        f"{r['snapshot']['clients_meanwhile']['failed']} of {r['snapshot']['clients_meanwhile']['answers']} "
        f"requests failed while it was taken (longest gap between answers "
        f"{r['snapshot']['clients_meanwhile']['max_gap_s']:.2f} s). b started with no client load, as a did.",
        "",
        f"The clients during each rolling update ({CLIENT_WORKERS} worker, a short chat completion through the load "
        f"balancer every {CLIENT_PAUSE_S:g} s or so, no retries; the update's starts ran beside a serving replica on "
        "the same 2 cores, so their times above are longer than on separate instances):",
        "",
        "| strategy | update (s) | answers | failed | longest gap between answers (s) | median gap (s) | "
        "slowest answer (s) |",
        "|---|---|---|---|---|---|---|",
        update(r["update_without_room"]),
        update(r["update_with_room"]),
        "",
        "What differs on AWS: a new instance boots (~25 s published for EC2) and pulls the image before its "
        "container starts; the snapshot's volume is filled at `cacheInitializationRate` (without it, blocks come "
        "lazily from S3 on first read); a real model's weights take their download time on a cold volume (here "
        "the Hub stand-in is local and the model tiny: its bytes are measured, not its download time), and a GPU "
        "image loads its compile cache where this CPU build recompiles (docs/performance-measured.md).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--render-only", action="store_true",
                        help=f"only regenerate {OUT_MD.relative_to(REPO_ROOT)} from {OUT_JSON.relative_to(REPO_ROOT)}")
    args = parser.parse_args()
    if args.render_only:
        OUT_MD.write_text(markdown(json.loads(OUT_JSON.read_text())))
        return 0
    problem = prerequisite_problem((*REQUIRED_TOOLS, "losetup", "mkfs.ext4", "fsfreeze", "dd", "haproxy", "curl"),
                                   need_vllm_venv=True)
    if problem:
        print(f"cannot run: {problem}", file=sys.stderr)
        return 2
    began = time.monotonic()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    results: dict[str, Any] = {"machine": machine()}
    loopdev.cleanup_leftovers()
    model = ensure_tiny_model(BUILD_DIR / "models", VLLM_VENV / "bin" / "python")
    with contextlib.ExitStack() as stack:
        bench(stack, model, results)
    shutil.rmtree(WORK, ignore_errors=True)
    results["total_bench_s"] = round(time.monotonic() - began, 1)
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(results, indent=2) + "\n")
    record = RESULTS_DIR / f"fleet-rollout-{results['machine']['date'][:10]}.json"
    shutil.copy(OUT_JSON, record)
    OUT_MD.write_text(markdown(results))
    log(f"wrote {OUT_JSON.relative_to(REPO_ROOT)}, {record.relative_to(REPO_ROOT)} and "
        f"{OUT_MD.relative_to(REPO_ROOT)} ({results['total_bench_s']:.0f} s)")
    print(OUT_MD.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
