"""The boot-time prefetch on real parts: infra/host/hf-prefetch.py, run with the Hub client boot.sh installs
(`boot.sh install-hf-client`: huggingface_hub and hf_xet into their own venv, here from the wheels
scripts/setup.sh downloaded) against a Hugging Face Hub stand-in (tests/real/harness/fakehub.py), checked with
the REAL huggingface_hub and vLLM code of the vLLM venv;
the prefetch section of infra/host/boot.sh run for real against a stand-in IMDS (token PUT, tags GET)
and the test host's Docker engine; and the real vLLM server serving the model from the cache it filled.

Every script runs as user-data ships it (`boot_script`, `shipped_script`: comments stripped), and the host
check's wait as pulumi-command runs it (`prefetch_wait_script` under sh), so what is tested is what runs
on the instance.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.real.harness import images
from tests.real.harness.bootprefetch import (
    TOKEN_PARAMETER,
    BootRun,
    ClientInstall,
    client_venv,
    install_hf_client,
    install_scripts,
    make_volume_root,
    run_boot_prefetch,
    traced,
    wheelhouse_problem,
)
from tests.real.harness.common import BUILD_DIR, VLLM_VENV, prerequisite_problem, record_timing
from tests.real.harness.deployer import deploy, existing_host_config, make_cache_dir
from tests.real.harness.fakehub import FakeHub
from tests.real.harness.testhost import TestHost
from vllm_endpoint.infra.catalog.names import CACHE_SUBDIR_ROOT, HF_CLIENT_PACKAGES, PREFETCH_REVISION_TAG
from vllm_endpoint.infra.plan.deployment import build_plan
from vllm_endpoint.infra.render.host_scripts import prefetch_wait_script
from vllm_endpoint.infra.render.userdata import host_hf_home
from vllm_endpoint.infra.settings.models import StackConfig

pytestmark = pytest.mark.real

REPO = "fakeorg/tiny-chat"
GATED = "fakeorg/tiny-gated"
WORK_DIR = BUILD_DIR / "prefetch"
# Files the stand-in repo has besides the tiny model, and whether vLLM (so the prefetcher) reads them.
EXTRAS = {
    "README.md": (b"# tiny chat\n", True),
    "original/params.json": (b'{"dim": 128}\n', True),
    "pytorch_model.bin": (b"\0" * 4096, False),  # a second weight format: vLLM takes safetensors
    "original/consolidated.00.pth": (b"\1" * 4096, False),
    "assets/logo.png": (b"\x89PNG" + b"\0" * 100, False),
}


@pytest.fixture(scope="module", autouse=True)
def _prerequisites() -> Iterator[None]:
    problem = prerequisite_problem(("bash", "curl", "runuser", "setsid", "python3", "strace", "flock"),
                                   need_vllm_venv=True) or wheelhouse_problem()
    if problem:
        pytest.skip(problem)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    yield


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    """A folder every user can traverse (the prefetcher runs as the test host's unprivileged user)."""
    path = WORK_DIR / f"run-{os.getpid()}-{secrets.token_hex(3)}"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    install_scripts(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def client(work: Path) -> ClientInstall:
    """The Hub client's venv, installed by boot.sh as an instance's model job installs it (from the wheelhouse)."""
    installed = install_hf_client(work)
    record_timing("hf_client_install", installed.seconds)
    return installed


@pytest.fixture(scope="module")
def token() -> str:
    return "hf_" + secrets.token_hex(20)


@pytest.fixture(scope="module")
def hub(tiny_model: Path, work: Path, token: str) -> Iterator[FakeHub]:
    extras_dir = work / "extras"
    for name, (data, _) in EXTRAS.items():
        (extras_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (extras_dir / name).write_bytes(data)
    with FakeHub() as fake:
        fake.add_repo(REPO, tiny_model, extra_files={name: extras_dir / name for name in EXTRAS})
        fake.add_repo(GATED, tiny_model, token=token)
        yield fake


def expected_files(tiny_model: Path) -> set[str]:
    return {p.name for p in tiny_model.iterdir() if p.is_file()} | {n for n, (_, read) in EXTRAS.items() if read}


def run_prefetch(work: Path, hf_home: Path, repo: str, endpoint: str, *extra: str,
                 token_file: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [str(client_venv(work) / "bin" / "python"), str(work / "hf-prefetch.py"), "--repo", repo,
            "--hf-home", str(hf_home), *extra]
    if token_file is not None:
        argv += ["--token-file", str(token_file)]
    env = {"PATH": os.environ["PATH"], "HF_ENDPOINT": endpoint, "NO_PROXY": "*"}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def summary(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    line = next(line for line in proc.stdout.splitlines() if line.startswith("hf-prefetch: done "))
    result = json.loads(line.removeprefix("hf-prefetch: done "))
    assert isinstance(result, dict)
    return result


def run_vllm_venv(code: str, hf_home: Path, endpoint: str | None = None) -> str:
    """Python in the vLLM venv (the real huggingface_hub 2.4.0 and vLLM 0.32 code)."""
    env = {"PATH": os.environ["PATH"], "HF_HOME": str(hf_home), "NO_PROXY": "*", "HF_HUB_DISABLE_TELEMETRY": "1",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    if endpoint is None:
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env["HF_ENDPOINT"] = endpoint
    proc = subprocess.run([str(VLLM_VENV / "bin" / "python"), "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    return proc.stdout


def cache_layout(hub_dir: Path, repo: str) -> dict[str, object]:
    storage = hub_dir / ("models--" + repo.replace("/", "--"))
    snapshots = {str(p.relative_to(storage)): os.readlink(p)
                 for p in (storage / "snapshots").rglob("*") if p.is_symlink()}
    return {
        "snapshots": snapshots,
        "blobs": sorted(p.name for p in (storage / "blobs").iterdir()),
        "refs": {str(p.relative_to(storage)): p.read_text() for p in (storage / "refs").rglob("*") if p.is_file()},
    }


# --- the Hub client and the prefetcher -------------------------------------------------------------

def test_boot_sh_installs_the_pinned_hub_client_into_its_venv_once(client: ClientInstall, work: Path) -> None:
    assert f"hf-prefetch: installing the Hub client ({' '.join(HF_CLIENT_PACKAGES)})" in client.output
    versions = subprocess.run([str(client.python), "-c", "import importlib.metadata as m; print(*(f'{d}=='"
                               "f'{m.version(d)}' for d in ('huggingface_hub', 'hf_xet')))"],
                              capture_output=True, text=True, check=True).stdout.split()
    assert versions == list(HF_CLIENT_PACKAGES)
    again = install_hf_client(work)
    assert again.output == "" and again.python == client.python  # the pins are there: nothing to do



@pytest.fixture(scope="module")
def filled(client: ClientInstall, work: Path, hub: FakeHub) -> tuple[Path, dict[str, object]]:
    """An empty HF_HOME filled by one prefetch; the counters of that run are kept in the result."""
    hf_home = work / "hf-filled"
    hub.reset_counters()
    proc = run_prefetch(work, hf_home, REPO, hub.endpoint)
    counted = hub.reset_counters()
    result = summary(proc)
    result["hub_file_bytes"] = counted.file_bytes
    result["hub_files_sent"] = sorted({r.path.rsplit("/", 1)[-1] for r in counted.requests if r.file_bytes})
    record_timing("prefetch_tiny_model", float(str(result["seconds"])), bytes=counted.file_bytes)
    return hf_home, result


def test_the_prefetcher_fetches_what_vllm_reads_and_nothing_else(filled: tuple[Path, dict[str, object]],
                                                                   tiny_model: Path) -> None:
    hf_home, result = filled
    wanted = expected_files(tiny_model)
    sizes = {**{p.name: p.stat().st_size for p in tiny_model.iterdir()},
             **{n: len(d) for n, (d, _) in EXTRAS.items()}}
    assert result["hub_file_bytes"] == result["downloaded_bytes"] == sum(sizes[f] for f in wanted)
    assert result["weights"] == ["model.safetensors"]
    snapshot = next((hf_home / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots").iterdir())
    assert {str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_symlink()} == wanted
    for name in wanted:
        source = tiny_model / name if (tiny_model / name).exists() else None
        data = source.read_bytes() if source else EXTRAS[name][0]
        assert (snapshot / name).read_bytes() == data


def test_huggingface_hub_resolves_the_prefetched_snapshot_offline(filled: tuple[Path, dict[str, object]],
                                                                   tiny_model: Path) -> None:
    hf_home, result = filled
    out = run_vllm_venv(f"""
import json, huggingface_hub as h
from huggingface_hub import constants
assert constants.HF_HUB_OFFLINE
folder = h.snapshot_download({REPO!r}, local_files_only=True)
paths = {{f: h.hf_hub_download({REPO!r}, f, local_files_only=True) for f in {sorted(expected_files(tiny_model))!r}}}
print(json.dumps({{"folder": folder, "paths": paths,
                   "cached": h.try_to_load_from_cache({REPO!r}, "config.json")}}))
""", hf_home)
    found = json.loads(out.strip().splitlines()[-1])
    assert found["folder"].endswith(f"/snapshots/{result['commit']}")
    assert found["cached"] == found["paths"]["config.json"]
    assert all(Path(p).is_file() for p in found["paths"].values())


def test_online_huggingface_hub_and_vllms_own_loading_code_download_zero_file_bytes(
        filled: tuple[Path, dict[str, object]], hub: FakeHub) -> None:
    hf_home, result = filled
    hub.reset_counters()
    out = run_vllm_venv(f"""
import json, huggingface_hub as h
from vllm.transformers_utils.repo_utils import get_non_weight_snapshot_path
from vllm.model_executor.model_loader.weight_utils import download_weights_from_hf
tokenizer_dir = get_non_weight_snapshot_path({REPO!r})
weights_dir = download_weights_from_hf({REPO!r}, None, ["*.safetensors", "*.bin", "*.pt"],
                                       ignore_patterns=["original/**/*"])
config_dir = h.snapshot_download({REPO!r}, allow_patterns="*.json")
print(json.dumps([tokenizer_dir, weights_dir, config_dir]))
""", hf_home, endpoint=hub.endpoint)
    counted = hub.reset_counters()
    folders = json.loads(out.strip().splitlines()[-1])
    assert all(f.endswith(f"/snapshots/{result['commit']}") for f in folders), folders
    # It did ask the Hub (metadata), and got every file from the cache.
    assert any("/api/models/" in r.path for r in counted.requests)
    assert counted.file_bytes == 0, counted.files_sent()


def test_the_layout_is_the_one_huggingface_hub_writes_itself(filled: tuple[Path, dict[str, object]],
                                                              hub: FakeHub, work: Path, tiny_model: Path) -> None:
    own = work / "hf-by-huggingface-hub"
    run_vllm_venv(f"""
import huggingface_hub as h
h.snapshot_download({REPO!r}, allow_patterns={sorted(expected_files(tiny_model))!r})
""", own, endpoint=hub.endpoint)
    hf_home, _ = filled
    assert cache_layout(hf_home / "hub", REPO) == cache_layout(own / "hub", REPO)


def test_a_second_run_downloads_nothing(filled: tuple[Path, dict[str, object]], hub: FakeHub, work: Path) -> None:
    hf_home, first = filled
    hub.reset_counters()
    again = summary(run_prefetch(work, hf_home, REPO, hub.endpoint))
    assert hub.reset_counters().file_bytes == 0
    assert again["downloaded_bytes"] == 0 and again["present_bytes"] == first["downloaded_bytes"]


def test_a_download_killed_midway_is_cleaned_up_and_fetched_whole_by_the_next_run(
        client: ClientInstall, hub: FakeHub, work: Path, tiny_model: Path) -> None:
    """huggingface_hub 2.4 writes each download to a file of its own and never resumes one: the next run
    removes what a killed run left (and what the old stdlib prefetcher left, <sha>.incomplete) and fetches
    the file whole."""
    weights = (tiny_model / "model.safetensors").read_bytes()
    sha = hashlib.sha256(weights).hexdigest()
    hf_home = work / "hf-killed"
    blobs = hf_home / "hub" / f"models--{REPO.replace('/', '--')}" / "blobs"
    hub.lfs_rate_bytes_per_s = len(weights) / 10  # the weights take ~10 s
    try:
        killed = subprocess.Popen(
            [str(client.python), str(work / "hf-prefetch.py"), "--repo", REPO, "--hf-home", str(hf_home)],
            env={"PATH": os.environ["PATH"], "HF_ENDPOINT": hub.endpoint, "NO_PROXY": "*"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not any(blobs.glob(f"{sha}.*.incomplete")):
            assert killed.poll() is None and time.monotonic() < deadline, "the weights download did not start"
            time.sleep(0.05)
        time.sleep(2)  # mid-file: the client writes what arrives in chunks of up to 10 MB
        assert killed.poll() is None
        killed.kill()
        killed.wait(timeout=30)
    finally:
        hub.lfs_rate_bytes_per_s = None
    # The stand-in Hub counts the cut request once its connection ends.
    deadline = time.monotonic() + 30
    while not any(r.path.startswith("/lfs/") for r in hub.counters.requests):
        assert time.monotonic() < deadline, "the killed download's request did not end"
        time.sleep(0.05)
    cut = [r.file_bytes for r in hub.reset_counters().requests if r.path.startswith("/lfs/")]
    assert len(cut) == 1 and 0 < cut[0] < len(weights), cut
    (blobs / f"{sha}.incomplete").write_bytes(weights[:1000])
    left = sorted(blobs.glob("*.incomplete"))
    assert len(left) == 2 and not (blobs / sha).exists(), left
    proc = run_prefetch(work, hf_home, REPO, hub.endpoint)
    lfs = [r for r in hub.reset_counters().requests if r.path.startswith("/lfs/")]
    assert hashlib.sha256((blobs / sha).read_bytes()).hexdigest() == sha
    assert list(blobs.glob("*.incomplete")) == []
    assert "bytes of partial downloads an interrupted run left" in proc.stdout
    assert [(r.range, r.status, r.file_bytes) for r in lfs] == [(None, 200, len(weights))]


def test_vllm_starting_during_the_prefetch_waits_for_its_blob_instead_of_downloading_it_again(
        client: ClientInstall, hub: FakeHub, work: Path, tiny_model: Path) -> None:
    weights = tiny_model / "model.safetensors"
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    hf_home = work / "hf-overlap"
    blobs = hf_home / "hub" / f"models--{REPO.replace('/', '--')}" / "blobs"
    hub.reset_counters()
    hub.lfs_rate_bytes_per_s = weights.stat().st_size / 4  # the weights take ~4 s
    try:
        prefetcher = subprocess.Popen(
            [str(client.python), str(work / "hf-prefetch.py"), "--repo", REPO, "--hf-home", str(hf_home)],
            env={"PATH": os.environ["PATH"], "HF_ENDPOINT": hub.endpoint, "NO_PROXY": "*"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not any(blobs.glob(f"{sha}.*.incomplete")):
            assert prefetcher.poll() is None and time.monotonic() < deadline, "the weights download did not start"
            time.sleep(0.02)
        # huggingface_hub as vLLM calls it, online, while the blob is still being written.
        out = run_vllm_venv(f"""
import huggingface_hub as h
print(h.hf_hub_download({REPO!r}, "model.safetensors"))
""", hf_home, endpoint=hub.endpoint)
        stdout, stderr = prefetcher.communicate(timeout=60)
    finally:
        hub.lfs_rate_bytes_per_s = None
    assert prefetcher.returncode == 0, stdout + stderr
    assert Path(out.strip().splitlines()[-1]).read_bytes() == weights.read_bytes()
    storage = [r for r in hub.reset_counters().requests if r.path.startswith("/lfs/")]
    assert len(storage) == 1 and storage[0].file_bytes == weights.stat().st_size, storage


def test_unknown_repos_and_revisions_are_clear_errors(client: ClientInstall, hub: FakeHub, work: Path) -> None:
    missing = run_prefetch(work, work / "hf-missing", "fakeorg/no-such-model", hub.endpoint, check=False)
    assert missing.returncode == 1
    assert "HTTP 404: no model repository fakeorg/no-such-model" in missing.stderr
    bad_rev = run_prefetch(work, work / "hf-missing", REPO, hub.endpoint, "--revision", "v9", check=False)
    assert bad_rev.returncode == 1 and f"the revision 'v9' does not exist in {REPO}" in bad_rev.stderr


def test_a_gated_repo_without_a_token_fails_clearly(client: ClientInstall, hub: FakeHub, work: Path) -> None:
    proc = run_prefetch(work, work / "hf-gated-none", GATED, hub.endpoint, check=False)
    assert proc.returncode == 1
    assert f"HTTP 401: {GATED} is gated or private" in proc.stderr and "hfToken" in proc.stderr
    wrong = work / "wrong-token"
    wrong.write_text("hf_wrong\n")
    proc = run_prefetch(work, work / "hf-gated-wrong", GATED, hub.endpoint, token_file=wrong, check=False)
    assert proc.returncode == 1 and "refused the token" in proc.stderr


def test_a_gated_repo_works_with_the_token_from_a_file_which_no_command_line_shows(
        client: ClientInstall, hub: FakeHub, work: Path, token: str) -> None:
    token_file = work / "token"
    token_file.touch(mode=0o600)
    token_file.write_text(token + "\n")
    hub.reset_counters()
    exec_log = work / "gated-execs.log"
    proc = traced([str(client.python), str(work / "hf-prefetch.py"), "--repo", GATED,
                   "--hf-home", str(work / "hf-gated"), "--token-file", str(token_file)],
                  {"PATH": os.environ["PATH"], "HF_ENDPOINT": hub.endpoint}, exec_log, timeout=120)
    assert proc.returncode == 0, proc.stderr
    counted = hub.reset_counters()
    assert summary(proc)["downloaded_bytes"] == counted.file_bytes > 0
    execs = exec_log.read_text()
    assert "hf-prefetch.py" in execs and str(token_file) in execs and token not in execs
    assert token not in proc.stdout + proc.stderr
    resolves = [r for r in counted.requests if "/resolve/" in r.path]
    storage = [r for r in counted.requests if r.path.startswith("/lfs/")]
    assert resolves and all(r.authorized for r in resolves)
    assert storage and not any(r.authorized for r in storage), "the token must not follow the LFS redirect"


# --- boot.sh's prefetch section ---------------------------------------------------------------------

# The existing host's hostCacheDir the boot prefetch fills and the serving stack reads, below `work`.
BOOT_HOST_DIR = "boot-host"


def serving_config(test_host: TestHost, host_cache_dir: Path) -> StackConfig:
    """The stack that serves the gated model offline from the cache the boot prefetch filled."""
    return existing_host_config(
        test_host, host_cache_dir, model=GATED, maxModelLen="512",
        extraEnv=json.dumps({"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}),
    )


@pytest.fixture(scope="module")
def booted(test_host: TestHost, busybox_image: str, work: Path, hub: FakeHub, token: str,
           client: ClientInstall) -> Iterator[BootRun]:
    """boot.sh's prefetch for a gated model and an image the engine has: both jobs, in parallel, with the Hub
    client installed (a fresh install is the progress test's), while /proc is searched for the token.

    It fills the folder the serving stack's containers use (an existing host's endpoint folder below
    hostCacheDir), as on AWS it fills the volume the containers use."""
    host_cache_dir = make_cache_dir(test_host, work / BOOT_HOST_DIR)
    # The SSH user owns the endpoint's folder on an existing host (the deploy creates its other folders).
    cache = make_cache_dir(test_host, Path(build_plan(serving_config(test_host, host_cache_dir)).host_cache_dir))
    make_volume_root(test_host, cache)
    hub.reset_counters()
    run = run_boot_prefetch(test_host, work, "boot", {
        "prefetch-image": busybox_image, "prefetch-model": GATED, "hf-token-parameter": TOKEN_PARAMETER,
    }, hub.endpoint, secret=token, cache=cache, watch_for=token)
    record_timing("boot_prefetch_section", run.seconds)
    yield run
    shutil.rmtree(host_cache_dir, ignore_errors=True)


def test_boot_prefetch_reads_the_tags_through_imdsv2_and_finishes_both_jobs(booted: BootRun) -> None:
    assert booted.imds.requests[0] == ("PUT", "/latest/api/token", 200)
    assert all(status != 401 for _, _, status in booted.imds.requests), booted.imds.requests
    assert ("GET", f"/latest/meta-data/tags/instance/{PREFETCH_REVISION_TAG}", 404) in booted.imds.requests
    for job in ("image", "model"):
        assert (booted.state / f"prefetch-{job}.done").exists(), booted.log.read_text()
    stages = [line.split()[0] for line in booted.timeline.read_text().splitlines()]
    assert sorted(stages) == ["image_present", "model_present"]
    done = (booted.state / "prefetch-model.done").read_text()
    assert f"{GATED} is in {host_hf_home(str(booted.cache))}" in done
    hub_dir = Path(host_hf_home(str(booted.cache))) / "hub" / f"models--{GATED.replace('/', '--')}"
    assert (hub_dir / "refs" / "main").is_file()
    owner = {p.stat().st_uid for p in hub_dir.rglob("*")}
    assert owner == {(booted.cache / CACHE_SUBDIR_ROOT).stat().st_uid}, "the cache owner, not root, owns the files"


def test_boot_prefetch_keeps_the_token_out_of_command_lines_environments_and_files(booted: BootRun,
                                                                                    token: str) -> None:
    # The trace covers the jobs: the token was read (aws) and used (the prefetcher under runuser).
    for program in ('"aws", "ssm", "get-parameter"', '"runuser", "-u"', "--token-file", '"docker", "image"'):
        assert program in booted.execs
    assert token not in booted.execs
    # Nor in any process's command line or environment at any moment of the run (read every 20 ms).
    assert booted.proc_scans >= 5 and booted.proc_hits == []
    # Nor in any file: the run's folder (but the stand-in SSM store), the cache it filled, the client's venv.
    base = booted.state.parent
    for root in (base, booted.cache, client_venv(base.parent)):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink() and path != base / "ssm-value":
                assert token.encode() not in path.read_bytes(), path
    assert token not in booted.log.read_text()


def test_the_host_check_reports_the_finished_prefetch(booted: BootRun) -> None:
    proc = subprocess.run(["sh", "-c", prefetch_wait_script(str(booted.state), 60)],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0 and f"model prefetched: {GATED} is in" in proc.stdout, proc.stderr


# "[+12 s] host: model download 1.2 MB of 2.5 MB in <folder> | <image>"
DOWNLOAD_PROGRESS = re.compile(r"\[\+(\d+) s\] host: model download (.+?) of (.+?) in (\S+) \| no image pull")


def test_the_host_check_shows_the_boot_downloads_progress_while_it_waits(
        test_host: TestHost, work: Path, hub: FakeHub, tiny_model: Path) -> None:
    weights = (tiny_model / "model.safetensors").stat().st_size
    hub.lfs_rate_bytes_per_s = weights / 30  # the weights take ~30 s
    runs: list[BootRun] = []
    # A fresh venv: the job installs the Hub client first, as on a new instance.
    boot = threading.Thread(target=lambda: runs.append(run_boot_prefetch(
        test_host, work, "boot-progress", {"prefetch-model": REPO}, hub.endpoint, trace=False, timeout=180,
        venv=work / "hf-client-fresh")))
    state = work / "boot-progress" / "state"
    try:
        boot.start()
        deadline = time.monotonic() + 30
        while not (state / "prefetch-model.started").exists():
            assert boot.is_alive() and time.monotonic() < deadline, "the model job did not start"
            time.sleep(0.1)
        start = time.monotonic()
        proc = subprocess.run(["sh", "-c", prefetch_wait_script(str(state), 120, str(state.parent / "prefetch.log"))],
                              capture_output=True, text=True, timeout=150)
        waited = time.monotonic() - start
        boot.join(timeout=150)
    finally:
        hub.lfs_rate_bytes_per_s = None
    # What a user sees in `pulumi up`, kept for a look after the run (the closing notes quote it).
    (BUILD_DIR / "host-ready-transcript.txt").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0 and f"model prefetched: {REPO} is in" in proc.stdout, proc.stdout + proc.stderr
    progress = [m for m in map(DOWNLOAD_PROGRESS.fullmatch, proc.stdout.splitlines()) if m]
    assert len(progress) >= 2, proc.stdout
    marks = [int(m.group(1)) for m in progress] + [round(waited)]
    assert max(b - a for a, b in itertools.pairwise(marks)) <= 15, marks
    # The job installed the client before the download, and said so in the log the host check reads.
    log = runs[0].log.read_text()
    assert log.index("hf-prefetch: installing the Hub client") < log.index("hf-prefetch: the Hub client is ready")
    # The total is the one hf-prefetch logged, the folder the model's own in the cache.
    logged = re.search(r"hf-prefetch: total (\d+) bytes in (\S+) ", log)
    assert logged is not None and int(logged.group(1)) >= weights
    assert {m.group(4) for m in progress} == {logged.group(2)}
    assert progress[-1].group(2) != progress[-1].group(3), proc.stdout  # seen while it was still downloading


def test_boot_prefetch_marks_a_failed_pull_and_starts_no_model_job_without_the_tag(
        test_host: TestHost, work: Path, hub: FakeHub) -> None:
    # A registry on the namespace's loopback that does not exist: the pull fails without leaving the host.
    run = run_boot_prefetch(test_host, work, "boot-failing", {"prefetch-image": "127.0.0.1:9/absent/image:1"},
                            hub.endpoint)
    failed = (run.state / "prefetch-image.failed").read_text()
    assert "docker pull 127.0.0.1:9/absent/image:1 failed 3 times" in failed
    assert not (run.state / "prefetch-model.started").exists()
    assert run.timeline.read_text() == ""
    proc = subprocess.run(["sh", "-c", prefetch_wait_script(str(run.state), 60)],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0 and "image pull failed" in proc.stderr


def test_boot_prefetch_without_any_tag_starts_nothing(test_host: TestHost, work: Path, hub: FakeHub) -> None:
    run = run_boot_prefetch(test_host, work, "boot-untagged", {}, hub.endpoint)
    assert list(run.state.glob("prefetch-*")) == []


# --- the real vLLM server on the prefetched cache ------------------------------------------------------

def test_vllm_serves_the_repo_id_offline_from_the_cache_the_boot_prefetch_filled(
        booted: BootRun, test_host: TestHost, vllm_image: str, work: Path) -> None:
    config = serving_config(test_host, work / BOOT_HOST_DIR)
    images.build_nginx_image(test_host, tag=config.access.proxy_image)
    try:
        deployment = deploy(test_host, config, api_key=secrets.token_urlsafe(32))
        record_timing("vllm_ready_from_prefetched_cache", deployment.gate_seconds)
        client = openai.OpenAI(base_url=deployment.endpoint_url, api_key=deployment.api_key, max_retries=0,
                               timeout=60)
        assert [m.id for m in client.models.list().data] == [GATED]
        reply = client.chat.completions.create(model=GATED, messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=4, temperature=0)
        assert reply.usage is not None and reply.usage.completion_tokens > 0
    finally:
        test_host.remove_all_containers()
