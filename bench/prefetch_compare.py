"""The boot-time prefetch, old against new, on the same model from the same Hub stand-in (a script, not a test).
Run as root from the repo root, after scripts/setup.sh test:

    .venv/bin/python bench/prefetch_compare.py [--repeat 3] [--shard-mb 100] [--shards 3]

- old: the standard-library prefetcher this project shipped before (`git show HEAD:infra/host/hf-prefetch.py`
  unless --old names a file), run with the system python3;
- new: infra/host/hf-prefetch.py with the maintained client (huggingface_hub + hf_xet, HF_CLIENT_PACKAGES),
  installed by `boot.sh install-hf-client` from the wheels scripts/setup.sh downloaded, as on an instance.

The model is made here: random safetensors shards named by a `model.safetensors.index.json`, a config and
tokenizer files, plus files vLLM does not read (a second weight format, an image), a few hundred MB in all.
The Hub stand-in (tests/real/harness/fakehub.py) serves it on loopback; it speaks no Xet, so the new client
fetches over HTTP as the old one does: the figures compare the two programs, not Xet's transfer. For each,
`--repeat` cold runs (an empty HF_HOME; the two programs take turns) and one warm run (everything present)
give wall seconds, the file bytes the Hub sent, its requests and the files in the snapshot. The table is
printed and the figures go to build/bench/prefetch_compare.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.real.harness.bootprefetch import install_hf_client, wheelhouse_problem  # noqa: E402
from tests.real.harness.common import BUILD_DIR  # noqa: E402
from tests.real.harness.fakehub import FakeHub  # noqa: E402

REPO = "bench/random-shards"
WORK = BUILD_DIR / "bench-prefetch"
OUT_JSON = REPO_ROOT / "build" / "bench" / "prefetch_compare.json"
NEW_SCRIPT = REPO_ROOT / "infra" / "host" / "hf-prefetch.py"


def write_safetensors(path: Path, size: int) -> None:
    """One uint8 tensor of `size` random bytes, in the safetensors layout (header length, JSON header, data)."""
    header = json.dumps({"weight": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    header += b" " * (-len(header) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        left = size
        while left:
            step = min(left, 16 << 20)
            fh.write(os.urandom(step))
            left -= step


def make_model(folder: Path, shards: int, shard_bytes: int) -> dict[str, int]:
    """The model repo's files (kept between runs for the same shape); returns the bytes vLLM reads."""
    stamp = folder.parent / f"{folder.name}.shape"  # beside the repo: the Hub serves all that is in it
    shape = f"{shards}x{shard_bytes}"
    if not (stamp.exists() and stamp.read_text() == shape):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        names = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
        for name in names:
            write_safetensors(folder / name, shard_bytes)
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": shards * shard_bytes},
             "weight_map": {f"layer.{i}.weight": name for i, name in enumerate(names)}}))
        (folder / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"],
                                                        "model_type": "qwen2"}))
        (folder / "tokenizer.json").write_bytes(os.urandom(2 << 20).hex().encode())
        (folder / "tokenizer_config.json").write_text("{}")
        (folder / "generation_config.json").write_text('{"do_sample": false}')
        # Not read by vLLM: neither prefetcher may fetch these.
        write_safetensors(folder / "original-unused.bin", shard_bytes // 2)
        (folder / "assets").mkdir()
        (folder / "assets" / "diagram.png").write_bytes(os.urandom(1 << 20))
        stamp.write_text(shape)
    read = [p for p in folder.rglob("*") if p.is_file() and p.suffix not in (".bin", ".png")]
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in read}


def snapshot_files(hf_home: Path) -> int:
    storage = hf_home / "hub" / ("models--" + REPO.replace("/", "--"))
    return sum(1 for p in (storage / "snapshots").rglob("*") if p.is_symlink())


@dataclasses.dataclass
class Run:
    seconds: float
    file_bytes: int  # repo file content the Hub sent
    requests: int  # every request to the Hub and its storage host
    files: int  # in the snapshot afterwards


def run_once(label: str, argv: list[str], hub: FakeHub, hf_home: Path) -> Run:
    hub.reset_counters()
    start = time.monotonic()
    proc = subprocess.run([*argv, "--repo", REPO, "--hf-home", str(hf_home)], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "HF_ENDPOINT": hub.endpoint, "NO_PROXY": "*"},
                          timeout=1800)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{label} failed:\n{proc.stdout}{proc.stderr}")
    counted = hub.reset_counters()
    return Run(round(seconds, 3), counted.file_bytes, len(counted.requests), snapshot_files(hf_home))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="cold runs per prefetcher (default 3)")
    parser.add_argument("--shards", type=int, default=3, help="safetensors shards (default 3)")
    parser.add_argument("--shard-mb", type=int, default=100, help="MB per shard (default 100)")
    parser.add_argument("--old", type=Path, default=None, help="the old prefetcher (default: from git HEAD)")
    args = parser.parse_args()
    problem = wheelhouse_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    WORK.mkdir(parents=True, exist_ok=True)
    WORK.chmod(0o755)
    old_script = WORK / "old-hf-prefetch.py"
    if args.old:
        shutil.copyfile(args.old, old_script)
    else:
        old_script.write_text(subprocess.run(["git", "show", "HEAD:infra/host/hf-prefetch.py"], cwd=REPO_ROOT,
                                             capture_output=True, text=True, check=True).stdout)
    client = install_hf_client(WORK)
    wanted = make_model(WORK / "model", args.shards, args.shard_mb * 1_000_000)
    programs = {"old (stdlib)": ["/usr/bin/python3", str(old_script)],
                "new (huggingface_hub)": [str(client.python), str(NEW_SCRIPT)]}
    results: dict[str, tuple[list[Run], Run]] = {}
    with FakeHub() as hub:
        hub.add_repo(REPO, WORK / "model")
        colds: dict[str, list[Run]] = {label: [] for label in programs}
        # Turn about, so that both meet the same load from whatever else runs on the machine.
        for _ in range(args.repeat):
            for label, argv in programs.items():
                hf_home = WORK / f"hf-home-{label.split()[0]}"
                shutil.rmtree(hf_home, ignore_errors=True)
                colds[label].append(run_once(label, argv, hub, hf_home))
        for label, argv in programs.items():
            hf_home = WORK / f"hf-home-{label.split()[0]}"
            results[label] = (colds[label], run_once(label, argv, hub, hf_home))
            shutil.rmtree(hf_home)
    report = {"repo_files_read_by_vllm": len(wanted), "bytes_read_by_vllm": sum(wanted.values()),
              "client_install_seconds": round(client.seconds, 3),
              "results": {label: {"cold": [dataclasses.asdict(c) for c in cold], "warm": dataclasses.asdict(warm)}
                          for label, (cold, warm) in results.items()}}
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(report, indent=2) + "\n")

    print(f"model: {len(wanted)} files vLLM reads, {sum(wanted.values()):,} bytes; "
          f"{args.repeat} cold runs each (median, min-max), then one warm run")
    header = ("prefetcher", "cold s", "cold s range", "cold bytes sent", "req", "files", "warm s", "warm bytes",
              "warm req")
    rows = []
    for label, (cold, warm) in results.items():
        secs = [c.seconds for c in cold]
        rows.append((label, f"{statistics.median(secs):.2f}", f"{min(secs):.2f}-{max(secs):.2f}",
                     f"{cold[0].file_bytes:,}", str(cold[0].requests), str(cold[0].files),
                     f"{warm.seconds:.2f}", f"{warm.file_bytes:,}", str(warm.requests)))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(f"(the new client's install from the wheelhouse took {client.seconds:.1f} s; a re-run finds it)")
    print(f"figures: {OUT_JSON}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
