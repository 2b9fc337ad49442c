"""The boot-time model prefetcher's pure parts: which files it takes (vLLM's own choice), what the operator
reads when the Hub says no, that it runs on the AMI's Python 3.10 with the Hub client boot.sh installs, and
that the copy user-data ships is the same program as the source. The downloads themselves (and the client's
install) are exercised for real in tests/real/test_prefetch.py."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.infra.host.host_scripts import HOST_DIR, load_host_script
from vllm_endpoint.infra.render.host_scripts import prefetch_wait_script, read_host_file
from vllm_endpoint.infra.render.userdata import shipped_script

SCRIPT = HOST_DIR / "hf-prefetch.py"


prefetch = load_host_script("hf-prefetch.py", "hf_prefetch")


def select(files: list[str], index: object = None) -> tuple[list[str], list[str]]:
    def read_json(path: str) -> object:
        assert path == "model.safetensors.index.json" and index is not None
        return index

    return prefetch.select_non_weight_files(files), prefetch.select_weight_files(files, read_json)


def test_a_single_safetensors_repo_takes_everything_but_other_weight_formats_and_media() -> None:
    files = [".gitattributes", "README.md", "LICENSE", "config.json", "generation_config.json", "merges.txt",
             "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.json",
             "pytorch_model.bin", "flax_model.msgpack", "assets/diagram.png", "onnx/model.onnx"]
    non_weights, weights = select(files)
    assert non_weights == [".gitattributes", "LICENSE", "README.md", "config.json", "generation_config.json",
                           "merges.txt", "tokenizer.json", "tokenizer_config.json", "vocab.json"]
    assert weights == ["model.safetensors"]


def test_sharded_safetensors_take_the_shards_the_index_names_and_skip_meta_originals() -> None:
    shards = [f"model-0000{i}-of-00002.safetensors" for i in (1, 2)]
    files = ["config.json", "model.safetensors.index.json", *shards, "original/consolidated.00.pth",
             "original/params.json", "original/tokenizer.model", "model-old.safetensors"]
    index = {"metadata": {}, "weight_map": {"a": shards[0], "b": shards[1], "c": shards[1]}}
    non_weights, weights = select(files, index)
    assert weights == shards
    # vLLM's tokenizer snapshot keeps non-weight files wherever they are, original/ included.
    assert non_weights == ["config.json", "model.safetensors.index.json", "original/params.json",
                           "original/tokenizer.model"]


def test_an_index_that_names_a_missing_shard_is_an_error() -> None:
    with pytest.raises(prefetch.PrefetchError, match="does not have"):
        select(["model.safetensors.index.json", "a.safetensors"], {"weight_map": {"x": "b.safetensors"}})


def test_a_mistral_format_repo_takes_the_consolidated_weights_as_vllm_loads_them() -> None:
    files = ["params.json", "tekken.json", "consolidated.safetensors", "config.json",
             "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"]
    _, weights = select(files, {"weight_map": {"x": "model-00001-of-00002.safetensors"}})
    assert weights == ["consolidated.safetensors"]


@pytest.mark.parametrize(("files", "expected"), [
    (["config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "training_args.bin"],
     ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "training_args.bin"]),
    (["config.json", "model.pt"], ["model.pt"]),
    (["config.json", "weights/model.safetensors"], ["weights/model.safetensors"]),
    (["config.json", "README.md"], []),
])
def test_without_safetensors_the_next_format_vllm_tries_is_taken(files: list[str], expected: list[str]) -> None:
    assert select(files)[1] == expected


def _imports(nodes: list[ast.stmt] | list[ast.AST]) -> set[str]:
    names = {alias.name.split(".")[0] for node in nodes if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module.split(".")[0] for node in nodes
                    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}


def test_the_prefetcher_uses_python_3_10_grammar_and_besides_the_standard_library_only_the_hub_client() -> None:
    tree = ast.parse(SCRIPT.read_text(), feature_version=(3, 10))
    # At module level only the standard library: the file choice above loads without the client.
    assert _imports(tree.body) - {"__future__"} <= set(sys.stdlib_module_names)
    # The client is imported only once the environment it reads at import is set (main() sets it first).
    assert _imports(list(ast.walk(tree))) - set(sys.stdlib_module_names) - {"__future__"} == {"huggingface_hub"}
    assert prefetch.CLIENT_ENV["HF_XET_HIGH_PERFORMANCE"] == "1"


def _http_error(cls: type[Exception], status: int, code: str = "") -> Exception:
    """The library's exception as hf_raise_for_status raises it for this answer."""
    import httpx2
    from huggingface_hub.utils import hf_raise_for_status

    request = httpx2.Request("GET", "https://hub.test/api/models/org/m")
    response = httpx2.Response(status, headers={"X-Error-Code": code} if code else {}, request=request)
    try:
        hf_raise_for_status(response)
    except cls as err:
        return err
    raise AssertionError(f"{status} {code} did not raise {cls.__name__}")


@pytest.mark.parametrize(("status", "code", "has_token", "message", "retry"), [
    (404, "RepoNotFound", False, "HTTP 404: no model repository org/m at https://hub.test", False),
    (404, "RevisionNotFound", False, "the revision 'v9' does not exist in org/m (HTTP 404)", False),
    (401, "GatedRepo", False, "HTTP 401: org/m is gated or private (or does not exist) and no Hugging Face "
     "token was given; set the stack's hfToken", False),
    (401, "", True, "HTTP 401: the Hub refused the token for org/m", False),
    (403, "", True, "HTTP 403: the token's account has no access to org/m; accept the model's conditions", False),
    (503, "", False, "HTTP 503", True),
])
def test_the_hubs_refusals_become_messages_that_say_what_to_change(
        status: int, code: str, has_token: bool, message: str, retry: bool) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    err = _http_error(HfHubHTTPError, status, code)
    # hf_hub_download hands some of them on wrapped: the explanation looks down the chain.
    wrapped = RuntimeError("cannot find the requested files in the local cache")
    wrapped.__cause__ = err
    for raised in (err, wrapped):
        explained = prefetch.explain(raised, "org/m", "v9", "https://hub.test", has_token)
        assert str(explained).startswith(message) and explained.retry is retry


def test_a_failure_without_an_http_answer_is_retried_and_gives_up_naming_the_attempts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def attempt() -> None:
        calls.append(1)
        raise ConnectionError("connection refused")

    def to_error(err: BaseException) -> Exception:
        return prefetch.explain(err, "org/m", "main", "https://hub.test", False)

    monkeypatch.setattr(prefetch.time, "sleep", lambda _s: None)  # the backoff is not under test
    with pytest.raises(prefetch.PrefetchError, match="gave up after 3 attempts: ConnectionError"):
        prefetch.retrying("resolving org/m@main", 3, attempt, to_error)
    assert len(calls) == 3


def test_the_shipped_prefetcher_is_the_same_program_without_comments() -> None:
    source, shipped = read_host_file("hf-prefetch.py"), shipped_script("hf-prefetch.py")
    assert len(shipped) < len(source)
    assert "\n#" not in shipped and shipped.startswith("#!/usr/bin/env python3\n")
    assert ast.dump(ast.parse(shipped)) == ast.dump(ast.parse(source))


@pytest.mark.parametrize("name", ["boot.sh", "prepare-cache-volume.sh"])
def test_the_shipped_shell_scripts_parse_to_the_same_program(name: str, tmp_path: Path) -> None:
    """bash prints the program it parsed (without comments) with --pretty-print (bash >= 5.2)."""
    def parsed(text: str) -> list[str]:
        path = tmp_path / name
        path.write_text(text)
        proc = subprocess.run(["bash", "--pretty-print", str(path)], capture_output=True, text=True)
        if proc.returncode != 0 and "invalid option" in proc.stderr:
            pytest.skip("this bash has no --pretty-print (bash >= 5.2 has)")
        assert proc.returncode == 0, proc.stderr
        return [line for line in proc.stdout.splitlines() if line.strip()]

    source, shipped = read_host_file(name), shipped_script(name)
    assert len(shipped) < len(source)
    assert parsed(shipped) == parsed(source)


def test_the_cli_refuses_a_bad_repo_id_before_any_request(capsys: pytest.CaptureFixture[str]) -> None:
    assert prefetch.main(["--repo", "../etc", "--hf-home", "/nonexistent"]) == 1
    assert "not a Hugging Face model repo id" in capsys.readouterr().err
    assert prefetch.main(["--repo", "a--b/c", "--hf-home", "/nonexistent"]) == 1


# --- the host check's wait for the prefetch (prefetch-wait.sh on marker files) --------------------

def run_wait(state: Path, wait_s: int = 30) -> subprocess.CompletedProcess[str]:
    """The rendered command as the SSH user's login shell runs it (sh -c)."""
    return subprocess.run(["sh", "-c", prefetch_wait_script(str(state), wait_s)],
                          capture_output=True, text=True, timeout=60)


def test_the_host_check_does_not_wait_when_no_prefetch_was_started(tmp_path: Path) -> None:
    proc = run_wait(tmp_path)
    assert proc.returncode == 0 and proc.stdout == proc.stderr == ""


def test_the_host_check_reports_a_finished_prefetch(tmp_path: Path) -> None:
    (tmp_path / "prefetch-model.started").write_text("1\n")
    (tmp_path / "prefetch-model.done").write_text("1700000000.5 org/model is in /cache\n")
    proc = run_wait(tmp_path)
    assert proc.returncode == 0 and "model prefetched: org/model is in /cache" in proc.stdout


def test_a_failed_prefetch_is_reported_but_does_not_fail_the_host_check(tmp_path: Path) -> None:
    (tmp_path / "prefetch-model.started").write_text("1\n")
    (tmp_path / "prefetch-model.failed").write_text("1700000000.5 hf-prefetch: error: HTTP 401: gated\n")
    (tmp_path / "prefetch-image.started").write_text("1\n")
    (tmp_path / "prefetch-image.failed").write_text("1700000000.5 docker pull x failed 3 times\n")
    proc = run_wait(tmp_path)
    assert proc.returncode == 0
    assert "model download failed: hf-prefetch: error: HTTP 401: gated" in proc.stderr
    assert "image pull failed: docker pull x failed 3 times" in proc.stderr


def test_the_host_check_says_the_download_waits_for_the_hub_client_install(tmp_path: Path) -> None:
    (tmp_path / "prefetch-model.started").write_text("1\n")
    job = subprocess.Popen(["bash", "-c", "exec -a prefetch-model-job sleep 30"])
    log = tmp_path / "prefetch.log"
    log.write_text("hf-prefetch: installing the Hub client (huggingface_hub==2.4.0 hf_xet==1.8.0) into /v\n"
                   "Collecting huggingface_hub==2.4.0\n")
    try:
        (tmp_path / "prefetch-model.pid").write_text(f"{job.pid}\n")
        proc = subprocess.run(["sh", "-c", prefetch_wait_script(str(tmp_path), 2, str(log))],
                              capture_output=True, text=True, timeout=60)
    finally:
        job.kill()
        job.wait()
    assert "host: model download waits for the Hub client install (huggingface_hub, hf_xet)" in proc.stdout


def test_the_host_check_stops_waiting_for_a_job_that_died(tmp_path: Path) -> None:
    (tmp_path / "prefetch-model.started").write_text("1\n")
    (tmp_path / "prefetch-model.pid").write_text(f"{_ended_pid()}\n")
    proc = run_wait(tmp_path, wait_s=600)
    assert proc.returncode == 0 and "ended without a result" in proc.stderr


def test_the_host_check_waits_for_a_running_job_and_gives_up_at_its_bound(tmp_path: Path) -> None:
    (tmp_path / "prefetch-model.started").write_text("1\n")
    job = subprocess.Popen(["bash", "-c", "exec -a prefetch-model-job sleep 30"])
    try:
        (tmp_path / "prefetch-model.pid").write_text(f"{job.pid}\n")
        proc = run_wait(tmp_path, wait_s=5)
    finally:
        job.kill()
        job.wait()
    assert proc.returncode == 0 and "still running after 5 s" in proc.stderr


def _ended_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid

