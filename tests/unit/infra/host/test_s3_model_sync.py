"""The fleet's model copier (infra/host/s3-model-sync.py): its SigV4 signer against the S3 documentation's
published example and against botocore, its key encoding, and whole runs as a task runs it (a python3 process
given its environment) against the real tier's S3 and ECS-credentials stand-in (tests/real/harness/fakes3.py),
which checks every request's signature with botocore. The copy in a container of the vLLM image, on a test
host's network, is the real tier's business."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.real.harness.fakes3 import FakeS3, IssuedKey, botocore_signature
from tests.unit.infra.host.host_scripts import HOST_DIR, load_host_script
from vllm_endpoint.infra.plan.model_files import FolderContents, folder_contents

SCRIPT = HOST_DIR / "s3-model-sync.py"


sync = load_host_script("s3-model-sync.py", "s3_model_sync")

# --- the signer ---------------------------------------------------------------------------------------

# The S3 API reference's "Signature Calculations for the Authorization Header: Transferring Payload in a Single
# Chunk", Example: GET Object (the first 10 bytes of test.txt, signed with the hash of the empty body).
DOC_ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
DOC_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_SIGNATURE = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"


def test_the_signer_reproduces_the_s3_documentations_get_object_example() -> None:
    headers = sync.sign_get("GET", "https://examplebucket.s3.amazonaws.com/test.txt", {"Range": "bytes=0-9"},
                            DOC_ACCESS_KEY, DOC_SECRET_KEY, None, "us-east-1", "s3", "20130524T000000Z")
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        f"SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature={DOC_SIGNATURE}")
    assert headers["Range"] == "bytes=0-9" and headers["Host"] == "examplebucket.s3.amazonaws.com"
    assert headers["X-Amz-Content-SHA256"] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert "X-Amz-Security-Token" not in headers


def test_a_session_token_is_sent_and_signed() -> None:
    def sign(token: str | None) -> dict[str, str]:
        return dict(sync.sign_get("GET", "https://b.s3.eu-west-1.amazonaws.com/k", {}, "ASIAEXAMPLE", "secret",
                                  token, "eu-west-1", "s3", "20260101T120000Z"))

    with_token, without = sign("the-token"), sign(None)
    assert with_token["X-Amz-Security-Token"] == "the-token"
    assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token," in with_token["Authorization"]
    assert with_token["Authorization"].split("Signature=")[1] != without["Authorization"].split("Signature=")[1]


KEY_TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)  # any key S3 can hold


@given(key=KEY_TEXT, token=st.none() | st.text("abcXYZ019+/=", min_size=1, max_size=30),
       region=st.sampled_from(["us-east-1", "eu-central-1", "cn-north-1"]),
       ranged=st.booleans(), port=st.sampled_from(["", ":9000"]))
def test_the_signer_agrees_with_botocore_for_any_key_and_header_set(key: str, token: str | None, region: str,
                                                                    ranged: bool, port: str) -> None:
    url = f"http://bucket.example{port}/bucket/{sync.encode_key('prefix/' + key)}"
    extra = {"Range": "bytes=0-  9"} if ranged else {}  # the signer folds the value's spaces, as S3 reads it
    sent = sync.sign_get("GET", url, extra, "ASIAKEY", "s3cr3t/key", token, region, "s3", "20260102T030405Z")
    names = sent["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    lower = {name.lower(): value for name, value in sent.items()}
    theirs = botocore_signature("GET", urllib.parse.urlsplit(url).path, lower, names,
                                IssuedKey("ASIAKEY", "s3cr3t/key", token, 0), region)
    assert sent["Authorization"].endswith(f"Signature={theirs}")


# --- keys and URLs ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "encoded"), [
    ("models/abc/config.json", "models/abc/config.json"),
    ("models/abc/sub dir/a+b=c&d.bin", "models/abc/sub%20dir/a%2Bb%3Dc%26d.bin"),
    ("models/abc/ünï ☃/x~y_z-1.2", "models/abc/%C3%BCn%C3%AF%20%E2%98%83/x~y_z-1.2"),
    ("m/100%.txt", "m/100%25.txt"),
])
def test_keys_are_encoded_as_s3_reads_them(key: str, encoded: str) -> None:
    assert sync.encode_key(key) == encoded


@given(KEY_TEXT)
def test_key_encoding_round_trips_and_leaves_only_unreserved_characters(key: str) -> None:
    encoded = sync.encode_key(key)
    assert urllib.parse.unquote(encoded, errors="strict") == key
    # S3's rule, byte by byte: the unreserved characters and `/` as they are, every other UTF-8 byte as %XX.
    unreserved = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~/"
    assert encoded == "".join(chr(b) if b in unreserved else f"%{b:02X}" for b in key.encode())


def _config(**changes: object) -> object:
    return dataclasses.replace(sync.Config("my-bucket", "models/abc", "us-west-2", "/m/abc", "abc", [], None, 4),
                               **changes)


@pytest.mark.parametrize(("changes", "url"), [
    ({}, "https://my-bucket.s3.us-west-2.amazonaws.com/models/abc/a%20b"),
    ({"region": "cn-north-1"}, "https://my-bucket.s3.cn-north-1.amazonaws.com.cn/models/abc/a%20b"),
    ({"bucket": "my.bucket"}, "https://s3.us-west-2.amazonaws.com/my.bucket/models/abc/a%20b"),
    ({"endpoint": "http://10.1.2.3:9000"}, "http://10.1.2.3:9000/my-bucket/models/abc/a%20b"),
])
def test_objects_are_addressed_virtual_hosted_or_path_style_with_an_endpoint(changes: dict[str, object],
                                                                            url: str) -> None:
    assert sync.object_url(_config(**changes), "models/abc/a b") == url


# --- the environment ---------------------------------------------------------------------------------

SHA = "0" * 64


def test_the_manifest_is_read_as_the_plan_writes_it(tmp_path: Path) -> None:
    (tmp_path / "sub dir").mkdir()
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "sub dir" / "w +.bin").write_bytes(b"x" * 5)
    contents = folder_contents(tmp_path)
    entries = sync.parse_manifest(contents.manifest())
    assert [(e.size, e.sha256, e.path) for e in entries] == [(f.size, f.sha256, f.path) for f in contents.files]


@pytest.mark.parametrize("line", [
    f"1\t{SHA}\t../escape", f"1\t{SHA}\t/abs", f"1\t{SHA}\ta//b", f"1\t{SHA}\ta/./b", f"1\t{SHA}\t",
    f"x\t{SHA}\ta", f"1\t{SHA[:-1]}\ta", f"1\t{SHA}", f"1\t{SHA}\t.vllm-endpoint-verified", f"²\t{SHA}\ta",
])
def test_a_manifest_line_that_could_write_outside_the_folder_or_is_malformed_is_refused(line: str) -> None:
    with pytest.raises(sync.SyncError, match="MANIFEST line 2"):
        sync.parse_manifest(f"1\t{SHA}\tok\n{line}\n")


def test_credentials_come_from_the_ecs_agent_first_then_a_full_uri_then_the_environment() -> None:
    relative = {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/c", "AWS_CONTAINER_AUTHORIZATION_TOKEN": "t"}
    assert sync.credentials_endpoint(relative) == ("http://169.254.170.2/v2/credentials/x", None)
    full = {k: v for k, v in relative.items() if "RELATIVE" not in k}
    assert sync.credentials_endpoint(full) == ("http://127.0.0.1:9/c", "t")
    assert sync.credentials_endpoint({"AWS_ACCESS_KEY_ID": "a"}) is None


@pytest.mark.parametrize(("text", "epoch"), [
    ("2026-01-02T03:04:05Z", 1767323045.0), ("2026-01-02T03:04:05.123Z", 1767323045.0),
    ("2026-01-02T05:04:05+02:00", 1767323045.0), ("2026-01-02T03:04:05", 1767323045.0), ("soon", None),
])
def test_the_expiration_is_read_in_utc(text: str, epoch: float | None) -> None:
    assert sync.parse_expiration(text) == epoch


def test_credentials_are_fetched_again_within_five_minutes_of_expiring(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    source = sync.CredentialSource({"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/c"}, lambda: now[0])
    fetched: list[int] = []

    def fetch() -> object:
        fetched.append(1)
        return sync.Credentials(f"key{len(fetched)}", "s", "t", now[0] + 3600)

    monkeypatch.setattr(source, "_fetch", fetch)
    assert source.get().access_key == "key1"
    now[0] += 3600 - 301
    assert source.get().access_key == "key1"
    now[0] += 2
    assert source.get().access_key == "key2"


def test_progress_is_printed_every_few_seconds_with_the_rate(capsys: pytest.CaptureFixture[str]) -> None:
    now = [0.0]
    progress = sync.Progress("file 2/3 model.safetensors", 100_000_000, lambda: now[0])
    for _ in range(10):
        now[0] += 1.0
        progress.add(5_000_000)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["s3-model-sync: file 2/3 model.safetensors: 25.0 of 100.0 MB (25%), 5.0 MB/s",
                     "s3-model-sync: file 2/3 model.safetensors: 50.0 of 100.0 MB (50%), 5.0 MB/s"]


def test_the_script_uses_python_3_9_grammar_and_only_the_standard_library() -> None:
    tree = ast.parse(SCRIPT.read_text(), feature_version=(3, 9))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported - {"__future__"} <= set(sys.stdlib_module_names)
    assert "from __future__ import annotations" in SCRIPT.read_text()  # `X | None` stays unevaluated on 3.9


# --- whole runs against the stand-in -------------------------------------------------------------------

TOKEN = "ecs-authorization-token"
PREFIX = "models/0123abcd"


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, FolderContents]:
    folder = tmp_path / "fine-tune"
    (folder / "tokenizer files").mkdir(parents=True)
    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (folder / "tokenizer files" / "spécial name+1.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    return folder, folder_contents(folder)


@pytest.fixture
def s3(model: tuple[Path, FolderContents]) -> Iterator[FakeS3]:
    with FakeS3(credentials_token=TOKEN) as fake:
        fake.add_folder(PREFIX, model[0])
        yield fake


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    path = tmp_path / "cache-models"
    path.mkdir()
    return path


def environment(s3: FakeS3, cache: Path, contents: FolderContents, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "MODEL_BUCKET": s3.bucket, "MODEL_PREFIX": PREFIX, "AWS_REGION": s3.region,
            "MODEL_DIR": str(cache / contents.digest[:16]), "DIGEST": contents.digest,
            "MANIFEST": contents.manifest(), "AWS_ENDPOINT_URL_S3": s3.endpoint,
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": s3.credentials_full_uri,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": TOKEN, **extra}


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)


def assert_untouched(cache: Path, before: set[str] | None = None) -> None:
    """Nothing but the lock file (and what was there) is left: no model, no staging copy."""
    assert {p.name for p in cache.iterdir()} - (before or set()) <= {p.name for p in cache.glob("*.lock")}


def test_a_run_copies_verifies_and_renames_the_folder_into_place_and_a_second_run_reads_nothing(
        s3: FakeS3, cache: Path, model: tuple[Path, FolderContents]) -> None:
    folder, contents = model
    env = environment(s3, cache, contents)
    proc = run(env)
    assert proc.returncode == 0, proc.stderr
    model_dir = Path(env["MODEL_DIR"])
    for entry in contents.files:
        copied = model_dir / entry.path
        assert copied.read_bytes() == (folder / entry.path).read_bytes()
        assert stat.S_IMODE(copied.stat().st_mode) & 0o444 == 0o444 and not copied.stat().st_mode & 0o022
    assert (model_dir / ".vllm-endpoint-verified").read_text() == contents.digest + "\n"
    assert stat.S_IMODE((model_dir / "tokenizer files").stat().st_mode) == 0o755
    assert stat.S_IMODE(model_dir.stat().st_mode) == 0o755
    assert sorted(p.name for p in cache.iterdir()) == [model_dir.name, model_dir.name + ".lock"]
    assert len(s3.counters.requests) == 3 and s3.counters.signature_failures == 0
    assert s3.counters.bytes_sent == contents.total_bytes and s3.counters.credential_requests == 1
    assert "file 3/3 tokenizer files/spécial name+1.json: 2 bytes verified" in proc.stdout
    assert f"done: 3 files, {contents.total_bytes} bytes in " in proc.stdout
    assert "in place in " + str(model_dir) in proc.stdout

    s3.reset_counters()
    # As the task definition starts it: the text after `python3 -c`.
    again = subprocess.run([sys.executable, "-c", SCRIPT.read_text()], env=env, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0, again.stderr
    assert f"the model is already in the cache: {model_dir} holds {contents.digest}" in again.stdout
    assert s3.counters.requests == [] and s3.counters.credential_requests == 0


@pytest.mark.parametrize("old", ["empty", "stale"])
def test_an_empty_or_unverified_model_dir_and_copies_of_stopped_runs_are_replaced(
        old: str, s3: FakeS3, cache: Path, model: tuple[Path, FolderContents]) -> None:
    env = environment(s3, cache, model[1])
    model_dir = Path(env["MODEL_DIR"])
    model_dir.mkdir()
    if old == "stale":
        (model_dir / "config.json").write_text("half")
        (model_dir / ".vllm-endpoint-verified").write_text("another digest\n")
    leftover = cache / f"{model_dir.name}.sync-7-abcd"
    (leftover / "sub").mkdir(parents=True)
    proc = run(env)
    assert proc.returncode == 0, proc.stderr
    assert (model_dir / ".vllm-endpoint-verified").read_text() == model[1].digest + "\n"
    assert (model_dir / "config.json").read_bytes() == (model[0] / "config.json").read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == [model_dir.name, model_dir.name + ".lock"]
    assert f"removing {leftover.name}, left by a copy that was stopped" in proc.stdout


def test_a_corrupted_object_is_tried_again_then_fails_naming_the_file_and_leaves_model_dir_absent(
        s3: FakeS3, cache: Path, model: tuple[Path, FolderContents]) -> None:
    key = f"{PREFIX}/model.safetensors"
    original = s3.objects[key].read_bytes()
    s3.corrupt[key] = bytes([original[0] ^ 1]) + original[1:]  # same size, one bit off
    env = environment(s3, cache, model[1], MODEL_SYNC_ATTEMPTS="2")
    proc = run(env)
    assert proc.returncode == 1
    assert ("file 2/3 model.safetensors: gave up after 2 attempts: its content differs from the manifest (sha256)"
            in proc.stderr)
    assert f"the copy was removed; {env['MODEL_DIR']} was left as it was" in proc.stderr
    assert len(s3.counters.requests_for(key)) == 2
    assert not Path(env["MODEL_DIR"]).exists()
    assert_untouched(cache)


def test_a_truncated_object_fails_on_its_size(s3: FakeS3, cache: Path, model: tuple[Path, FolderContents]) -> None:
    s3.corrupt[f"{PREFIX}/config.json"] = b"{}"
    proc = run(environment(s3, cache, model[1], MODEL_SYNC_ATTEMPTS="1"))
    assert proc.returncode == 1
    assert "file 1/3 config.json: gave up after 1 attempts: S3 holds 2 bytes, the manifest says" in proc.stderr
    assert_untouched(cache)


def test_a_transient_error_is_tried_again(s3: FakeS3, cache: Path, model: tuple[Path, FolderContents]) -> None:
    key = f"{PREFIX}/config.json"
    s3.fail(key)
    proc = run(environment(s3, cache, model[1]))
    assert proc.returncode == 0, proc.stderr
    assert "file 1/3 config.json: s3://models/models/0123abcd/config.json: HTTP 503 SlowDown" in proc.stdout
    assert "trying again in 1 s (attempt 2 of 4)" in proc.stdout
    assert [r.status for r in s3.counters.requests_for(key)] == [503, 200]


def test_access_denied_fails_at_once_saying_what_to_check(s3: FakeS3, cache: Path,
                                                          model: tuple[Path, FolderContents]) -> None:
    key = f"{PREFIX}/config.json"
    s3.deny(key)
    proc = run(environment(s3, cache, model[1]))
    assert proc.returncode == 1
    assert (f"file 1/3 config.json: s3://models/{key}: HTTP 403 AccessDenied (Access Denied): check that the task "
            f"role allows s3:GetObject on arn:aws:s3:::models/{PREFIX}/*") in proc.stderr
    assert "that the object exists" in proc.stderr
    assert len(s3.counters.requests) == 1  # neither tried again nor the next file
    assert_untouched(cache)


def test_a_missing_object_fails_at_once_naming_it(s3: FakeS3, cache: Path, model: tuple[Path, FolderContents]) -> None:
    del s3.objects[f"{PREFIX}/model.safetensors"]
    proc = run(environment(s3, cache, model[1]))
    assert proc.returncode == 1
    assert f"s3://models/{PREFIX}/model.safetensors: HTTP 404 NoSuchKey" in proc.stderr
    assert "check that the objects exist" in proc.stderr
    assert len(s3.counters.requests_for(f"{PREFIX}/model.safetensors")) == 1
    assert_untouched(cache)


def test_credentials_close_to_expiring_are_fetched_again(s3: FakeS3, cache: Path,
                                                         model: tuple[Path, FolderContents]) -> None:
    s3.lifetimes = [120.0]  # the first pair is within the 5 minutes: used once, then replaced
    proc = run(environment(s3, cache, model[1]))
    assert proc.returncode == 0, proc.stderr
    assert s3.counters.credential_requests == 2
    keys = [r.access_key for r in s3.counters.requests]
    assert keys[0] != keys[1] == keys[2] and None not in keys


def test_an_expired_token_is_replaced_and_the_file_tried_again(s3: FakeS3, cache: Path,
                                                               model: tuple[Path, FolderContents]) -> None:
    s3.lifetimes = [-10.0]
    proc = run(environment(s3, cache, model[1]))
    assert proc.returncode == 0, proc.stderr
    assert [(r.status, r.code) for r in s3.counters.requests[:2]] == [(400, "ExpiredToken"), (200, "")]
    assert "HTTP 400 ExpiredToken" in proc.stdout and s3.counters.credential_requests == 2


def test_keys_from_the_environment_sign_and_a_wrong_secret_is_refused_by_the_stand_in(
        s3: FakeS3, cache: Path, model: tuple[Path, FolderContents]) -> None:
    key = s3.add_static_key(token="session-token")
    env = environment(s3, cache, model[1], AWS_ACCESS_KEY_ID=key.access_key, AWS_SECRET_ACCESS_KEY=key.secret_key,
                      AWS_SESSION_TOKEN="session-token")
    del env["AWS_CONTAINER_CREDENTIALS_FULL_URI"], env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    wrong = run({**env, "AWS_SECRET_ACCESS_KEY": key.secret_key[:-1] + ("A" if key.secret_key[-1] != "A" else "B")})
    assert wrong.returncode == 1
    assert "HTTP 403 SignatureDoesNotMatch" in wrong.stderr and "S3 refused the credentials" in wrong.stderr
    assert s3.counters.signature_failures == 1 and len(s3.counters.requests) == 1
    assert_untouched(cache)
    assert key.secret_key[:-1] not in wrong.stdout + wrong.stderr and "session-token" not in wrong.stderr
    right = run(env)
    assert right.returncode == 0, right.stderr
    assert s3.counters.credential_requests == 0 and s3.counters.signature_failures == 1


def test_a_wrong_authorization_token_for_the_credentials_endpoint_fails_before_any_s3_request(
        s3: FakeS3, cache: Path, model: tuple[Path, FolderContents]) -> None:
    proc = run(environment(s3, cache, model[1], AWS_CONTAINER_AUTHORIZATION_TOKEN="not-the-token-7f3a"))
    assert proc.returncode == 1
    assert "the container credentials endpoint (AWS_CONTAINER_CREDENTIALS_*_URI) answered HTTP 401" in proc.stderr
    assert s3.counters.requests == [] and "not-the-token-7f3a" not in proc.stdout + proc.stderr
    assert_untouched(cache)


def test_a_bucket_in_another_region_is_named(s3: FakeS3, cache: Path, model: tuple[Path, FolderContents]) -> None:
    proc = run(environment(s3, cache, model[1], AWS_REGION="eu-west-1"))
    assert proc.returncode == 1
    assert "the bucket is in us-east-1, not in AWS_REGION eu-west-1" in proc.stderr


def test_no_secret_is_printed(s3: FakeS3, cache: Path, model: tuple[Path, FolderContents]) -> None:
    s3.fail(f"{PREFIX}/config.json")
    proc = run(environment(s3, cache, model[1]))
    assert proc.returncode == 0, proc.stderr
    issued = s3.issued_keys()
    assert issued and all(k.secret_key not in proc.stdout + proc.stderr for k in issued)
    assert all(k.token is None or k.token not in proc.stdout + proc.stderr for k in issued)
    assert TOKEN not in proc.stdout + proc.stderr


@pytest.mark.parametrize("missing", ["MODEL_BUCKET", "MODEL_PREFIX", "MODEL_DIR", "DIGEST", "MANIFEST"])
def test_a_missing_parameter_is_named_before_any_request(missing: str, s3: FakeS3, cache: Path,
                                                         model: tuple[Path, FolderContents]) -> None:
    env = environment(s3, cache, model[1])
    del env[missing]
    proc = run(env)
    assert proc.returncode == 2 and f"s3-model-sync: error: {missing} is not set" in proc.stderr
    assert s3.counters.requests == [] and s3.counters.credential_requests == 0


def test_the_region_falls_back_to_aws_default_region(s3: FakeS3, cache: Path,
                                                     model: tuple[Path, FolderContents]) -> None:
    env = environment(s3, cache, model[1])
    proc = run({**{k: v for k, v in env.items() if k != "AWS_REGION"}, "AWS_DEFAULT_REGION": s3.region})
    assert proc.returncode == 0, proc.stderr
    assert run({k: v for k, v in env.items() if k != "AWS_REGION"}).stderr.endswith(
        "error: AWS_REGION or AWS_DEFAULT_REGION is not set\n")


def _wait_for(path: Path, text: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while text not in (path.read_text() if path.exists() else ""):
        assert proc.poll() is None and time.monotonic() < deadline, path.read_text()
        time.sleep(0.05)


def test_sigterm_mid_copy_removes_the_staging_copy(s3: FakeS3, cache: Path, tmp_path: Path,
                                                   model: tuple[Path, FolderContents]) -> None:
    s3.rate_bytes_per_s = 1_000_000  # the 3 MiB file takes about 3 s
    out = tmp_path / "out.txt"
    with out.open("w") as fh:
        proc = subprocess.Popen([sys.executable, str(SCRIPT)], env=environment(s3, cache, model[1]), stdout=fh,
                                stderr=subprocess.STDOUT, text=True)
        try:
            _wait_for(out, "file 1/3 config.json: ", proc)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 1
        finally:
            proc.kill()
    assert f"error: file 2/3 model.safetensors: stopped by signal {int(signal.SIGTERM)}" in out.read_text()
    assert_untouched(cache)


def test_a_second_task_of_the_same_model_waits_and_then_copies_nothing(
        s3: FakeS3, cache: Path, tmp_path: Path, model: tuple[Path, FolderContents]) -> None:
    s3.rate_bytes_per_s = 1_000_000  # the first run copies for about 3 s
    env = environment(s3, cache, model[1])
    first_out = tmp_path / "first.txt"
    with first_out.open("w") as fh:
        first = subprocess.Popen([sys.executable, str(SCRIPT)], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                 text=True)
        try:
            _wait_for(first_out, "copying 3 files", first)
            second = run(env)
            assert first.wait(timeout=60) == 0, first_out.read_text()
        finally:
            first.kill()
    assert second.returncode == 0, second.stderr
    assert "another copy of this model is under way on this instance" in second.stdout
    assert "already in the cache" in second.stdout and "(another task put it there meanwhile)" in second.stdout
    assert len(s3.counters.requests) == 3  # each object once


def test_the_stand_in_refuses_an_unsigned_header_and_a_replayed_signature_on_another_key(s3: FakeS3) -> None:
    """fakes3 checks what S3 checks, so a passing run above means the script signs as S3 wants."""
    import urllib.error
    import urllib.request

    key = s3.add_static_key()
    url = f"{s3.endpoint}/{s3.bucket}/{PREFIX}/config.json"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    headers = sync.sign_get("GET", url, {}, key.access_key, key.secret_key, None, s3.region, "s3", stamp)
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        assert hashlib.sha256(response.read()).hexdigest()
    cases = [
        (url, {**headers, "X-Amz-Meta-Extra": "1"}, "AccessDenied"),
        (url.replace("config.json", "model.safetensors"), headers, "SignatureDoesNotMatch"),
        (url, {**headers, "Authorization": headers["Authorization"].replace(key.access_key, "ASIANOBODY")},
         "InvalidAccessKeyId"),
    ]
    for target, sent, code in cases:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(urllib.request.Request(target, headers=sent), timeout=10)
        assert f"<Code>{code}</Code>" in caught.value.read().decode()
    assert s3.counters.signature_failures == 1
