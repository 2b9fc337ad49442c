"""The host commands: parameters quoted so that sh and bash read back exactly the values given, each file
run by bash with stdin left to it, and the small host files run for real here under dash (the test
host's login shell) where they need nothing but files. The gate, the host checks and the preparations
that need Docker or cloud-init run for real in tests/real."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vllm_endpoint.infra.plan.spec import ModelRoom, ReadinessGate
from vllm_endpoint.infra.render import host_scripts
from vllm_endpoint.infra.render.host_scripts import (
    PROGRESS_LINE,
    EnvValue,
    env_lines,
    env_strings,
    existing_host_prepare_script,
    gate_capacity_line,
    gate_report,
    host_command,
    host_ready_script,
    prefetch_wait_script,
    readiness_gate_script,
    summary_with_capacity,
    write_files_script,
    write_files_stdin,
)

SHELLS = ["dash", "bash"]


def shell(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def run(command: str, *, login_shell: str = "dash", input: str | None = None, path_dirs: tuple[Path, ...] = (),
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command as sshd runs it: `<login shell> -c <command>`, here with a minimal environment."""
    path = ":".join([*map(str, path_dirs), os.environ["PATH"]])
    return subprocess.run([shell(login_shell), "-c", command], input=input, capture_output=True, text=True,
                          env={"PATH": path, **(env or {})}, timeout=60)


def read_back(params: dict[str, EnvValue], login_shell: str) -> dict[str, str]:
    """The environment a program started after the export lines sees."""
    proc = subprocess.run([shell(login_shell), "-c", env_lines(params) + "exec env -0\n"], capture_output=True,
                          env={}, timeout=30, check=True)
    pairs = (item.split(b"=", 1) for item in proc.stdout.split(b"\0") if item)
    return {k.decode(): v.decode() for k, v in pairs if k.decode() in params}


NASTY = ["", "plain", "two words", "it's", 'say "hi"', "$HOME", "`id`", "$(id)", "back\\slash", "line\nbreak",
         "ends with a newline\n", "\n", "tab\there", "*", "~", "-n", "ünïcödé ✓", "a;b&c|d<e>f", "'", "''", "!1",
         "${IFS}", "\\'"]


@pytest.mark.parametrize("login_shell", SHELLS)
def test_export_lines_set_exactly_the_values_given(login_shell: str) -> None:
    params: dict[str, EnvValue] = {f"V{i}": value for i, value in enumerate(NASTY)}
    assert read_back(params, login_shell) == params


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0")))
def test_export_lines_round_trip_any_text(value: str) -> None:
    assert read_back({"VALUE": value}, "dash") == {"VALUE": value}


def test_typed_values_become_the_strings_the_host_files_test() -> None:
    assert env_strings({"FLAG": True, "OFF": False, "N": 600, "LIST": ("a b", "c"), "EMPTY": ()}) == {
        "FLAG": "true", "OFF": "false", "N": "600", "LIST": "a b\nc", "EMPTY": ""}


@pytest.mark.parametrize("name", ["PATH", "IFS", "BASH_ENV", "ENV", "LD_PRELOAD", "BASH_FUNC_x%%", "lower",
                                  "1ST", "A-B", "", "A B"])
def test_a_name_the_shell_acts_on_or_cannot_hold_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="cannot be a host file parameter"):
        env_lines({name: "x"})


@pytest.mark.parametrize("value", ["a\0b", ("ok", "a\0b")])
def test_a_nul_byte_is_refused(value: EnvValue) -> None:
    with pytest.raises(ValueError, match="NUL"):
        env_lines({"VALUE": value})


def test_a_list_item_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        env_lines({"DIRS": ("/a", "/b\n/c")})


# --- host_command: how the files run --------------------------------------------------------------

def fake_files(monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> None:
    monkeypatch.setattr(host_scripts, "read_host_file", lambda name: files[name])


def test_files_run_in_turn_and_the_first_failure_ends_the_command_with_its_status(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake_files(monkeypatch, {"a.sh": "echo a=$A\n", "b.sh": "exit 3\n", "c.sh": "echo c\n"})
    proc = run(host_command({"A": "x y"}, "a.sh", "b.sh", "c.sh"))
    assert (proc.returncode, proc.stdout) == (3, "a=x y\n")


def test_stdin_reaches_the_file_and_bash_names_the_file_in_its_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_files(monkeypatch, {"gate.sh": "IFS= read -r key\nprintf '%s' \"$key\"\nset -u\n: \"$UNSET\"\n"})
    proc = run(host_command({}, "gate.sh"), input="s3cret\n")
    assert proc.stdout == "s3cret"
    assert proc.returncode != 0 and proc.stderr.startswith("gate.sh: line 4: UNSET: unbound variable")


def test_a_file_holding_the_here_document_end_line_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_files(monkeypatch, {"x.sh": "echo\nVLLM_ENDPOINT_HOST_FILE\necho escaped\n"})
    with pytest.raises(ValueError, match="here-document"):
        host_command({}, "x.sh")


# --- the host files that need only files, run for real -------------------------------------------

def test_write_files_writes_each_file_with_its_mode_and_exact_content(tmp_path: Path) -> None:
    files = {"nginx.conf": "events {}\n# ünïcödé\n", "tls/server.key": "-----KEY-----\n\n", "tls/server.crt": "c"}
    modes = {"nginx.conf": "0644", "tls/server.key": "0600", "tls/server.crt": "0644"}
    target = tmp_path / "proxy dir"
    for _ in range(2):  # a second write replaces the files in place
        proc = run(write_files_script(str(target), modes), input=write_files_stdin(files))
        assert proc.returncode == 0, proc.stderr
    for name, content in files.items():
        assert (target / name).read_text() == content
        assert stat.S_IMODE((target / name).stat().st_mode) == int(modes[name], 8)
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == ["nginx.conf", "tls", *sorted(
        n for n in files if n.startswith("tls/"))]


def test_write_files_refuses_a_file_it_was_not_told_about(tmp_path: Path) -> None:
    proc = run(write_files_script(str(tmp_path), {"nginx.conf": "0644"}),
               input=write_files_stdin({"authorized_keys": "ssh-ed25519 AAAA"}))
    assert proc.returncode == 1
    assert "unexpected file authorized_keys (expected one of: nginx.conf)" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("name", "mode"), [("../x", "0644"), ("a/../../x", "0644"), ("/etc/x", "0644"),
                                            ("a b", "0644"), ("x;y", "0644"), ("", "0644"), (".", "0644"),
                                            ("x", "644"), ("x", "0999"), ("x", "0644;")])
def test_write_files_script_refuses_a_name_or_mode_it_cannot_write_safely(name: str, mode: str) -> None:
    with pytest.raises(ValueError, match="cannot write file"):
        write_files_script("/p", {name: mode})


def fake_docker(bin_dir: Path, info_status: int = 0, runtimes: str = '{"runc":{}}') -> Path:
    """A `docker` that answers the two questions the host checks ask (the real engine: tests/real)."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text(f"""#!/bin/sh
[ "$1" = info ] || exit 64
[ "$#" -eq 1 ] && exit {info_status}
printf '%s\\n' '{runtimes}'
""")
    (bin_dir / "docker").chmod(0o755)
    return bin_dir


def test_preparing_an_existing_host_creates_the_cache_folders_and_checks_their_owner(tmp_path: Path) -> None:
    cache = tmp_path / "cache dir"
    me = f"{os.getuid()}:{os.getgid()}"
    proc = run(existing_host_prepare_script(str(cache), False, me,
                                            open_files=1024), path_dirs=(fake_docker(tmp_path / "bin"),))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in cache.iterdir()) == sorted(host_scripts.CACHE_SUBDIRS)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o755 for p in cache.iterdir())
    other = run(existing_host_prepare_script(str(cache), False, "4242:4242",
                                             open_files=1024), path_dirs=(tmp_path / "bin",))
    assert other.returncode == 1
    assert f"belongs to {me} but the containers run as 4242:4242" in other.stderr


def _room_check(tmp_path: Path, need_bytes: int, have_bytes: int, estimated: bool = False
                ) -> subprocess.CompletedProcess[str]:
    """The preparation with a Hub model of `need_bytes` whose cache folder already holds `have_bytes` (a
    sparse file: du counts its size, the disk does not hold it)."""
    cache = tmp_path / "cache"
    folder = cache / "root-cache" / "huggingface" / "hub" / "models--org--m"
    if have_bytes:
        (folder / "blobs").mkdir(parents=True)
        with (folder / "blobs" / "partial").open("wb") as blob:
            blob.truncate(have_bytes)
    room = ModelRoom("org/m", str(folder), need_bytes, estimated)
    return run(existing_host_prepare_script(str(cache), False, f"{os.getuid()}:{os.getgid()}", open_files=1024,
                                            room=room), path_dirs=(fake_docker(tmp_path / "bin"),))


def test_a_hub_model_larger_than_the_free_disk_stops_the_preparation_naming_the_figures(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    proc = _room_check(tmp_path, free + 5 * 2**30, 0, estimated=True)
    assert proc.returncode == 1
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith(f"hostCacheDir: the disk of {tmp_path / 'cache'}")
    # The figures the user acts on: what is free, what the model needs, and what to free.
    assert f"{free / 2**30:.1f} GiB free" in message or f"{free / 2**30 - 0.1:.1f} GiB free" in message
    assert f"org/m needs about {(free + 5 * 2**30) / 2**30:.1f} GiB of weights" in message
    assert "(0.0 GiB of them already in the cache)" in message and "set hostCacheDir" in message


def test_weights_already_in_the_cache_count_against_what_the_model_needs(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    proc = _room_check(tmp_path, free + 2 * 2**30, 3 * 2**30)
    assert proc.returncode == 0, proc.stderr
    assert "room for org/m:" in proc.stdout


def test_preparing_an_existing_host_stops_when_docker_cannot_be_reached(tmp_path: Path) -> None:
    bin_dir = fake_docker(tmp_path / "bin", info_status=1)
    proc = run(existing_host_prepare_script(str(tmp_path / "c"), True, "4242:4242",
                                            open_files=1024), path_dirs=(bin_dir,))
    assert proc.returncode == 1 and "cannot reach Docker on this host" in proc.stderr
    assert "belongs to" not in proc.stderr  # the later checks did not run


@pytest.mark.parametrize(("runtimes", "ok"), [('{"runc":{}}', False), ('{"nvidia":{"path":"x"},"runc":{}}', True)])
def test_a_gpu_container_needs_dockers_nvidia_runtime(runtimes: str, ok: bool, tmp_path: Path) -> None:
    bin_dir = fake_docker(tmp_path / "bin", runtimes=runtimes)
    proc = run(existing_host_prepare_script(str(tmp_path / "c"), True, f"{os.getuid()}:{os.getgid()}", open_files=1024),
               path_dirs=(bin_dir,))
    assert (proc.returncode == 0) is ok, proc.stderr
    assert ("does not list the nvidia runtime" in proc.stderr) is not ok


def test_the_gate_sends_the_key_to_curl_on_stdin_and_records_the_timeline(tmp_path: Path) -> None:
    """curl and docker stand-ins record what they were given; the real gate against vLLM: tests/real."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(f"""#!/bin/sh
printf '%s\\n' "$*" >>{tmp_path}/curl-args
cat >>{tmp_path}/curl-stdin
printf 200
""")
    (bin_dir / "docker").write_text("#!/bin/sh\necho 2026-01-02T03:04:05.5Z\n")
    for tool in ("curl", "docker"):
        (bin_dir / tool).chmod(0o755)
    timeline = tmp_path / "timeline"
    timeline.write_text("instance_booted 100.0\nserver_ready 1.0\n")
    gate = ReadinessGate("https://127.0.0.1:1/v1/models", "vllm", 30, str(timeline), insecure_tls=True)
    key = f"sk-' $(touch {tmp_path}/pwned) \"key"
    proc = run(readiness_gate_script(gate), input=key + "\n", path_dirs=(bin_dir,))
    assert proc.returncode == 0, proc.stderr
    assert "ready: GET https://127.0.0.1:1/v1/models answered 200" in proc.stdout
    assert (tmp_path / "curl-stdin").read_text() == f"Authorization: Bearer {key}\n"
    args = (tmp_path / "curl-args").read_text()
    assert key not in args and "-k" in args.split() and "-H @-" in args
    stages = [line.split()[0] for line in timeline.read_text().splitlines()]
    assert sorted(stages) == ["container_started", "instance_booted", "server_ready"]  # the old server_ready went
    assert not (tmp_path / "pwned").exists()



# --- Progress while the host-ready step and the gate wait ------------------------------------------

def at_start(line: str) -> str:
    """A progress line stamped +1 s reads as +0 s: on a loaded machine the first probe or look can take that
    second (seen in fresh-clone runs); later lines keep their stamps."""
    return re.sub(r"^\[\+1 s\] ", "[+0 s] ", line)


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


# vLLM's KV cache figures as 0.32's CPU build logs them (one line) and as earlier GPU releases did (two).
KV_LOGS = {
    "one line": "INFO 12-01 10:00:01 [kv_cache_utils.py:1] CPU KV cache size: 21,840 tokens, Maximum concurrency "
                "for 512 tokens per request: 42.66x\n",
    "two lines": "INFO 12-01 10:00:01 [kv_cache_utils.py:1] GPU KV cache size: 21,840 tokens\n"
                 "INFO 12-01 10:00:01 [kv_cache_utils.py:2] Maximum concurrency for 512 tokens per request: 42.66x\n",
}


@pytest.mark.parametrize("wording", sorted(KV_LOGS))
def test_the_gate_prints_progress_while_it_waits_and_vllms_kv_cache_next_to_the_estimate(
        tmp_path: Path, wording: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # 502 (the proxy answers, vLLM not yet) for the first three probes, then 200.
    executable(bin_dir / "curl", f"""#!/bin/sh
cat >/dev/null
n=$(cat {tmp_path}/probes 2>/dev/null || echo 0)
echo $((n + 1)) >{tmp_path}/probes
if [ "$n" -lt 3 ]; then printf 502; else printf 200; fi
""")
    (tmp_path / "log").write_text(
        "INFO 12-01 10:00:00 [loader.py:1] Loading weights took 0.05 seconds\n" + KV_LOGS[wording]
        + "Loading safetensors: 50%|###  | 1/2 [00:01]\rLoading safetensors: 100%|#####| 2/2 [00:02]\n"
        + "\x1b[32mINFO\x1b[0m 12-01 10:00:02 [api_server.py:1] Starting vLLM API server 0 on http://0.0.0.0:8000\n")
    executable(bin_dir / "docker", f"""#!/bin/sh
case "$*" in
  logs*) cat {tmp_path}/log ;;
  *StartedAt*) echo 2026-01-02T03:04:05.5Z ;;
  *State.Status*) echo 'running 0 starting' ;;
  *) exit 64 ;;
esac
""")
    cache = tmp_path / "models--org--m"
    cache.mkdir()
    (cache / "blob").write_bytes(b"x" * 2_000_000)
    gate = ReadinessGate("http://127.0.0.1:1/v1/models", "vllm", 60, str(tmp_path / "timeline"), poll_interval_s=1,
                         progress_interval_s=1, model_cache_dir=str(cache), fit_kv_cache_tokens=4439696,
                         fit_max_concurrency=135.49, fit_max_model_len=32768)
    proc = run(readiness_gate_script(gate), input="key\n", path_dirs=(bin_dir,))
    assert proc.returncode == 0, proc.stderr
    progress = [line for line in proc.stdout.splitlines() if PROGRESS_LINE.match(line)]
    assert len(progress) >= 3, proc.stdout
    assert at_start(progress[0]) == (
        "[+0 s] vLLM starting its API server | container running, health starting, restarts 0 "
        "| probe 502 | model cache 2.0 MB | last log: INFO 12-01 10:00:02 [api_server.py:1] "
        "Starting vLLM API server 0 on http://0.0.0.0:8000")
    assert "ready: GET http://127.0.0.1:1/v1/models answered 200 after " in proc.stdout
    capacity = ("capacity: vLLM reports CPU KV cache size: 21,840 tokens, Maximum concurrency for 512 tokens per "
                "request: 42.66x; the plan's fit estimate: 4,439,696 tokens, 135.49x for 32,768 tokens per request")
    if wording == "two lines":
        capacity = capacity.replace("CPU KV", "GPU KV")
    assert gate_capacity_line(proc.stdout) == capacity
    # The stack outputs: the plan gains vLLM's figures; the timeline loses the progress lines.
    assert summary_with_capacity("plan", proc.stdout) == f"plan\n{capacity}"
    report = gate_report(proc.stdout).splitlines()
    assert report[0].startswith("ready: ") and report[1] == capacity
    assert [line.split()[0] for line in report[2:]] == ["container_started", "server_ready"]


STAGES = [
    ("", "vLLM starting"),
    ("INFO [core.py:1] Initializing a V1 LLM engine (v0.32.0) with config: compilation_config={'warmup': 1, "
     "'cudagraph_capture_sizes': [1, 2]}", "vLLM starting its engine"),
    ("INFO [default_loader.py:1] Loading weights took 0.01 seconds", "vLLM loaded the weights"),
    ("INFO [cpu_model_runner.py:87] Warming up model for the compilation...",
     "vLLM compiling and warming up the model"),
    ("INFO [kv_cache_utils.py:1] GPU KV cache size: 9 tokens", "vLLM sizing the KV cache and capturing graphs"),
]


@pytest.mark.parametrize(("last_marker", "stage"), STAGES, ids=[s for _, s in STAGES])
def test_the_progress_names_vllms_step_from_its_log(tmp_path: Path, last_marker: str, stage: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "curl", "#!/bin/sh\ncat >/dev/null\nprintf 000\n")
    (tmp_path / "log").write_text(f"INFO [loader.py:1] Starting to load model\n{last_marker}\nunrelated line\n")
    executable(bin_dir / "docker", f"""#!/bin/sh
case "$*" in
  logs*) cat {tmp_path}/log ;;
  *State.Status*) echo 'running 0 none' ;;
esac
""")
    if not last_marker:
        (tmp_path / "log").write_text("")
    # A deadline of a few seconds: on a loaded machine a 1 s one passed before the first progress line.
    gate = ReadinessGate("http://127.0.0.1:1/v1/models", "vllm", 4, str(tmp_path / "timeline"))
    proc = run(readiness_gate_script(gate), input="key\n", path_dirs=(bin_dir,))
    assert proc.returncode == 1 and "no answer from" in proc.stderr  # the deadline
    expected_log = "unrelated line" if last_marker else "(nothing logged yet)"
    # The first line comes after the first probe: +0 s, or +1 s on a loaded machine.
    first = re.sub(r"^\[\+[01] s\] ", "", proc.stdout.splitlines()[0])
    assert first == f"{stage} | container running, health none, restarts 0 | probe 000 | last log: {expected_log}"


def test_without_a_fit_estimate_or_vllms_figures_the_gate_says_so(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "curl", "#!/bin/sh\ncat >/dev/null\nprintf 200\n")
    executable(bin_dir / "docker", "#!/bin/sh\ncase \"$*\" in logs*) echo 'INFO some other wording';; esac\n")
    gate = ReadinessGate("http://127.0.0.1:1/v1/models", "vllm", 60, str(tmp_path / "timeline"))
    proc = run(readiness_gate_script(gate), input="key\n", path_dirs=(bin_dir,))
    assert proc.returncode == 0, proc.stderr
    assert gate_capacity_line(proc.stdout) == (
        "capacity: vLLM reports no KV cache size, no maximum concurrency; the plan made no fit estimate (its "
        "warnings say why: no GPU described, the CPU, or a quantization it does not model)")
    assert summary_with_capacity("plan", "ready: x\n") == "plan"


def test_the_host_ready_step_prints_cloud_inits_progress_and_the_downloads(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # cloud-init runs for two polls (the boot stages so far in the timeline), then is done.
    executable(bin_dir / "cloud-init", f"""#!/bin/sh
[ "$2" = --wait ] && exit 0
n=$(cat {tmp_path}/polls 2>/dev/null || echo 0)
echo $((n + 1)) >{tmp_path}/polls
if [ "$n" -lt 2 ]; then echo 'status: running'; else echo 'status: done'; fi
""")
    executable(bin_dir / "mountpoint", "#!/bin/sh\nexit 0\n")
    fake_docker(bin_dir)
    timeline = tmp_path / "timeline"
    timeline.write_text("instance_booted 1.0\ndocker_ready 2.0\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / "prefetch-model.started").write_text("1\n")
    (state / "prefetch-image.started").write_text("1\n")
    folder = tmp_path / "hub" / "models--org--m"
    folder.mkdir(parents=True)
    (folder / "blob.incomplete").write_bytes(b"x" * 1_000_000)
    log = tmp_path / "prefetch.log"
    log.write_text(f"hf-prefetch: org/m@main is commit abc: 3 files in the repo\n"
                   f"hf-prefetch: total 3000000 bytes in {folder} (3 files)\n")
    cache = tmp_path / "cache"
    (cache / "root-cache").mkdir(parents=True)
    command = host_ready_script(str(cache), False, f"{os.getuid()}:{os.getgid()}", prefetch_state_dir=str(state),
                                prefetch_wait_s=2, prefetch_log=str(log), timeline_file=str(timeline), open_files=1024)
    proc = run(command, path_dirs=(bin_dir,))
    assert proc.returncode == 0, proc.stderr
    lines = [at_start(line) for line in proc.stdout.splitlines()]
    assert lines[0] == "[+0 s] host: cloud-init running | boot stages done: instance_booted docker_ready"
    assert f"[+0 s] host: model download 1.0 MB of 3.0 MB in {folder} | image pull running" in lines
    assert "still running after 2 s; vLLM takes over" in proc.stderr


def test_the_prefetch_wait_says_when_the_total_is_not_known_yet(tmp_path: Path) -> None:
    (tmp_path / "prefetch-model.started").write_text("1\n")
    proc = run(prefetch_wait_script(str(tmp_path), 1, str(tmp_path / "no-log-yet")))
    assert proc.returncode == 0, proc.stderr
    assert at_start(proc.stdout.splitlines()[0]) == ("[+0 s] host: model download starting (its size is not known yet) "
                                           "| no image pull")


def test_no_gate_output_is_an_empty_report_and_the_plain_summary() -> None:
    # A readiness command whose output was never recorded (mocks, a refreshed state) must not break the outputs.
    from vllm_endpoint.infra.render.host_scripts import gate_capacity_line, gate_report, summary_with_capacity

    assert gate_report(None) == "" and gate_capacity_line(None) is None
    assert summary_with_capacity("the plan", None) == "the plan"
