#!/usr/bin/env python3
"""Copies an uploaded fine-tune folder from S3 into the instance's cache before vLLM starts.

Environment: MODEL_BUCKET, MODEL_PREFIX (the objects are <prefix>/<relative path>), AWS_REGION (or
AWS_DEFAULT_REGION), MODEL_DIR (the folder to fill; its parent must exist), DIGEST (recorded in the marker),
MANIFEST (one line per file: size, sha256 and relative path, tab-separated). Optional: AWS_ENDPOINT_URL_S3
(another endpoint, addressed path-style) and MODEL_SYNC_ATTEMPTS (tries per file, default 4). Credentials
as an ECS task gets them: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, else AWS_CONTAINER_CREDENTIALS_FULL_URI
(with AWS_CONTAINER_AUTHORIZATION_TOKEN), else AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN.
Exit status: 0 once MODEL_DIR holds the verified model, 1 when the copy failed, 2 for a bad environment.
"""

# Run by a fleet task's first container (infra/render/model_sync.py) from the vLLM image itself, as
# `python3 -c`: only the standard library is there (no boto3), and old vLLM images have Python 3.9, so no
# `match` and no `X | Y` outside annotations. It does what infra/host/verify-model.sh does for one host: every
# file is checked against the manifest (size, sha256) in a staging folder next to MODEL_DIR, which gets the
# marker `.vllm-endpoint-verified` (holding DIGEST) and moves into place with one rename, so vLLM never mounts
# a half-written or damaged model. Requests are signed with SigV4 by hand (sign_get, a pure function).

from __future__ import annotations

import calendar
import contextlib
import errno
import fcntl
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple
from xml.etree import ElementTree

PROG = "s3-model-sync"
MARKER = ".vllm-endpoint-verified"
# The ECS agent's credentials endpoint, as AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is meant to be read.
ECS_CREDENTIALS_ORIGIN = "http://169.254.170.2"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
CHUNK = 1 << 20
# A task role's credentials last about 6 hours, a big model's copy may take longer: fetch new ones this
# long before they expire (the SDKs do the same).
REFRESH_MARGIN_S = 300
PROGRESS_EVERY_S = 5.0
TIMEOUT_S = 60
DEFAULT_ATTEMPTS = 4
MAX_DELAY_S = 30.0
SHA256_RE = re.compile(r"[0-9a-f]{64}")
SIZE_RE = re.compile(r"[0-9]+")
EXPIRATION_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.\d+)?(Z|[+-]\d\d:?\d\d)?")


class SyncError(Exception):
    """A failure with a message for the operator. `retry`: trying the file again may help; `refresh`: it may
    with new credentials (the token expired)."""

    def __init__(self, message: str, retry: bool = False, refresh: bool = False) -> None:
        super().__init__(message)
        self.retry = retry
        self.refresh = refresh


def log(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


def error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


# --- the environment ---------------------------------------------------------------------------------

class Entry(NamedTuple):
    size: int
    sha256: str
    path: str


def _safe_path(path: str) -> bool:
    # Relative and inside MODEL_DIR: a manifest line must never name a file elsewhere.
    parts = path.split("/")
    return "\0" not in path and all(part not in ("", ".", "..") for part in parts) and path != MARKER


def parse_manifest(text: str) -> list[Entry]:
    entries: list[Entry] = []
    # Split on "\n" only: str.splitlines would also split names holding other line separators.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if (len(fields) != 3 or not SIZE_RE.fullmatch(fields[0]) or not SHA256_RE.fullmatch(fields[1])
                or not _safe_path(fields[2])):
            raise SyncError(f"MANIFEST line {number} is not <size> TAB <sha256> TAB <relative path>: {line[:200]!r}")
        entries.append(Entry(int(fields[0]), fields[1], fields[2]))
    if not entries:
        raise SyncError("MANIFEST lists no file")
    if len({e.path for e in entries}) != len(entries):
        raise SyncError("MANIFEST lists a file twice")
    return entries


@dataclass(frozen=True)
class Config:
    bucket: str
    prefix: str
    region: str
    model_dir: str
    digest: str
    entries: list[Entry]
    endpoint: str | None
    attempts: int


def read_config(env: Mapping[str, str]) -> Config:
    def need(*names: str) -> str:
        for name in names:
            value = env.get(name, "").strip()
            if value:
                return value
        raise SyncError(f"{' or '.join(names)} is not set")

    bucket, prefix, digest = need("MODEL_BUCKET"), need("MODEL_PREFIX").strip("/"), need("DIGEST")
    region = need("AWS_REGION", "AWS_DEFAULT_REGION")
    model_dir = os.path.abspath(need("MODEL_DIR"))
    if not os.path.isdir(os.path.dirname(model_dir)):
        raise SyncError(f"MODEL_DIR's folder {os.path.dirname(model_dir)} does not exist (is the cache mounted?)")
    if "MANIFEST" not in env:
        raise SyncError("MANIFEST is not set")
    attempts = env.get("MODEL_SYNC_ATTEMPTS", "").strip() or str(DEFAULT_ATTEMPTS)
    if not attempts.isdigit() or int(attempts) < 1:
        raise SyncError(f"MODEL_SYNC_ATTEMPTS={attempts!r} is not a count of 1 or more")
    endpoint = env.get("AWS_ENDPOINT_URL_S3", "").strip().rstrip("/") or None
    return Config(bucket, prefix, region, model_dir, digest, parse_manifest(env["MANIFEST"]), endpoint,
                  int(attempts))


# --- addressing and signing ----------------------------------------------------------------------------

def encode_key(key: str) -> str:
    """An object key as S3 reads it in a URL path: every UTF-8 byte but A-Z a-z 0-9 - _ . ~ as %XX, `/` kept."""
    return urllib.parse.quote(key, safe="/")


def object_url(config: Config, key: str) -> str:
    path = encode_key(key)
    if config.endpoint:
        return f"{config.endpoint}/{config.bucket}/{path}"
    suffix = "amazonaws.com.cn" if config.region.startswith("cn-") else "amazonaws.com"
    if "." in config.bucket:
        # S3's certificate is a wildcard of one label: a dotted bucket name is addressed in the path.
        return f"https://s3.{config.region}.{suffix}/{config.bucket}/{path}"
    return f"https://{config.bucket}.s3.{config.region}.{suffix}/{path}"


def _canonical_query(query: str) -> str:
    pairs = []
    for item in query.split("&") if query else []:
        name, _, value = item.partition("=")
        pairs.append((urllib.parse.quote(urllib.parse.unquote(name), safe="-_.~"),
                      urllib.parse.quote(urllib.parse.unquote(value), safe="-_.~")))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign_get(method: str, url: str, headers: Mapping[str, str], access_key: str, secret_key: str,
             token: str | None, region: str, service: str, amz_date: str) -> dict[str, str]:
    """`headers` plus Host, the x-amz-* headers and Authorization: a bodiless request signed with SigV4. Every
    header given is signed too. `url`'s path must be encoded already (encode_key): S3 signs it as sent."""
    parts = urllib.parse.urlsplit(url)
    signed = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
    signed.update({"host": parts.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": EMPTY_SHA256})
    if token:
        signed["x-amz-security-token"] = token
    names = sorted(signed)
    canonical = "\n".join([method, parts.path or "/", _canonical_query(parts.query),
                           "".join(f"{name}:{signed[name]}\n" for name in names), ";".join(names), EMPTY_SHA256])
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for step in (amz_date[:8], region, service, "aws4_request"):
        key = _hmac(key, step)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = {name: value for name, value in headers.items() if name.lower() != "host"}
    out.update({"Host": parts.netloc, "X-Amz-Date": amz_date, "X-Amz-Content-SHA256": EMPTY_SHA256})
    if token:
        out["X-Amz-Security-Token"] = token
    out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope},SignedHeaders={';'.join(names)},"
                            f"Signature={signature}")
    return out


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        # A redirect (a bucket in another region) would carry the signature to a host it was not made for.
        return None


S3_OPENER = urllib.request.build_opener(_NoRedirect)
# The credentials endpoint is on this host or link-local: never through a proxy of the environment.
DIRECT_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


# --- credentials ---------------------------------------------------------------------------------------

class Credentials(NamedTuple):
    access_key: str
    secret_key: str
    token: str | None
    expires: float | None  # epoch seconds


def parse_expiration(text: str) -> float | None:
    """`Expiration` of the ECS answer (ISO 8601) in epoch seconds; None when it is not one."""
    match = EXPIRATION_RE.fullmatch(text.strip())
    if not match:
        return None
    fields = [int(match.group(i)) for i in range(1, 7)]
    seconds = calendar.timegm((fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], 0, 0, 0))
    zone = match.group(7) or "Z"
    if zone != "Z":
        offset = int(zone[1:3]) * 3600 + int(zone[-2:]) * 60
        seconds -= offset if zone[0] == "+" else -offset
    return float(seconds)


def credentials_endpoint(env: Mapping[str, str]) -> tuple[str, str | None] | None:
    """(URL, Authorization header) of the container credentials endpoint; None: the keys are in `env`."""
    relative = env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "").strip()
    if relative:
        return ECS_CREDENTIALS_ORIGIN + relative, None
    full = env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI", "").strip()
    if full:
        return full, env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN", "").strip() or None
    return None


class CredentialSource:
    """The credentials to sign with, fetched again when they come within REFRESH_MARGIN_S of expiring."""

    def __init__(self, env: Mapping[str, str], clock: Callable[[], float] = time.time) -> None:
        self._env = env
        self._endpoint = credentials_endpoint(env)
        self._clock = clock
        self._current: Credentials | None = None
        self.fetches = 0

    @property
    def refreshable(self) -> bool:
        return self._endpoint is not None

    def invalidate(self) -> None:
        self._current = None

    def get(self) -> Credentials:
        current = self._current
        if current is None or (current.expires is not None and current.expires - self._clock() < REFRESH_MARGIN_S):
            current = self._current = self._fetch_with_retries() if self._endpoint else self._from_env()
        return current

    def _from_env(self) -> Credentials:
        access, secret = self._env.get("AWS_ACCESS_KEY_ID", ""), self._env.get("AWS_SECRET_ACCESS_KEY", "")
        if not access or not secret:
            raise SyncError("no credentials: neither AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (the task role's, set "
                            "by the ECS agent), AWS_CONTAINER_CREDENTIALS_FULL_URI nor AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY are set")
        return Credentials(access, secret, self._env.get("AWS_SESSION_TOKEN") or None, None)

    def _fetch_with_retries(self) -> Credentials:
        delay = 1.0
        for attempt in range(1, DEFAULT_ATTEMPTS + 1):
            try:
                return self._fetch()
            except SyncError as err:
                if not err.retry or attempt == DEFAULT_ATTEMPTS:
                    raise
                log(f"{err}; trying again in {delay:.0f} s")
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _fetch(self) -> Credentials:
        assert self._endpoint is not None
        url, authorization = self._endpoint
        request = urllib.request.Request(url, headers={"Authorization": authorization} if authorization else {})
        # The URL and the answer are never printed: the answer holds the keys.
        what = "the container credentials endpoint (AWS_CONTAINER_CREDENTIALS_*_URI)"
        self.fetches += 1
        try:
            with DIRECT_OPENER.open(request, timeout=TIMEOUT_S) as response:
                data = json.loads(response.read(1 << 20))
        except urllib.error.HTTPError as err:
            raise SyncError(f"{what} answered HTTP {err.code}: does the task have a task role (and is "
                            "AWS_CONTAINER_AUTHORIZATION_TOKEN right)?", retry=err.code >= 500) from None
        except (OSError, http.client.HTTPException, ValueError) as err:
            raise SyncError(f"{what} did not answer with credentials: {type(err).__name__}", retry=True) from None
        if not isinstance(data, dict) or not data.get("AccessKeyId") or not data.get("SecretAccessKey"):
            raise SyncError(f"{what} answered without AccessKeyId and SecretAccessKey", retry=True)
        return Credentials(str(data["AccessKeyId"]), str(data["SecretAccessKey"]), data.get("Token") or None,
                           parse_expiration(str(data.get("Expiration", ""))))


# --- one object ------------------------------------------------------------------------------------------

def _arn_partition(region: str) -> str:
    return "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"


def s3_error(err: urllib.error.HTTPError) -> tuple[str, str]:
    """(Code, Message) of S3's XML error answer; empty when it has none."""
    try:
        root = ElementTree.fromstring(err.read(1 << 16))
    except (OSError, http.client.HTTPException, ElementTree.ParseError):
        return "", ""
    return root.findtext("Code") or "", root.findtext("Message") or ""


def explain(status: int, code: str, message: str, config: Config, key: str, bucket_region: str | None) -> SyncError:
    """An S3 refusal as a message that says what to check, marked retryable or not."""
    where = f"s3://{config.bucket}/{key}: HTTP {status}" + (f" {code}" if code else "") + (
        f" ({message})" if message else "")
    if code in ("ExpiredToken", "TokenRefreshRequired"):
        return SyncError(where, retry=True, refresh=True)
    if bucket_region and bucket_region != config.region:
        return SyncError(f"{where}: the bucket is in {bucket_region}, not in AWS_REGION {config.region}")
    if code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken"):
        return SyncError(f"{where}: S3 refused the credentials: check the task role's credentials (or "
                         "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN)")
    if code == "RequestTimeTooSkewed":
        return SyncError(f"{where}: this machine's clock is more than 15 minutes off")
    if status == 403:
        arn = f"arn:{_arn_partition(config.region)}:s3:::{config.bucket}/{config.prefix}/*"
        return SyncError(f"{where}: check that the task role allows s3:GetObject on {arn} (and kms:Decrypt on the "
                         "bucket's KMS key if it has one), and that the object exists (S3 answers 403 for a "
                         "missing object to a role that may not list the bucket)")
    if status == 404:
        return SyncError(f"{where}: check that the objects exist: that the upload to "
                         f"s3://{config.bucket}/{config.prefix}/ finished and MODEL_BUCKET and MODEL_PREFIX name it")
    return SyncError(where, retry=status == 429 or status >= 500)


class Progress:
    """Prints how far the file being copied is, at most every PROGRESS_EVERY_S seconds."""

    def __init__(self, label: str, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.size, self.clock = label, size, clock
        self.start = self.last = clock()
        self.done = 0

    def add(self, count: int) -> None:
        self.done += count
        now = self.clock()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            share = 100 * self.done // self.size if self.size else 100
            log(f"{self.label}: {self.done / 1e6:.1f} of {self.size / 1e6:.1f} MB ({share}%), "
                f"{rate(self.done, now - self.start)}")


def rate(count: int, seconds: float) -> str:
    return f"{count / 1e6 / max(seconds, 1e-3):.1f} MB/s"


def copy_body(response: http.client.HTTPResponse, dest: str, entry: Entry, progress: Progress) -> None:
    """Streams the answer into `dest` while hashing it; SyncError (retryable) when it is not the manifest's."""
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) != entry.size:
        raise SyncError(f"S3 holds {length} bytes, the manifest says {entry.size}", retry=True)
    digest, received = hashlib.sha256(), 0
    try:
        out = open(dest, "wb")  # noqa: SIM115 - opened outside the `with` to tell its errors from read errors
    except OSError as err:
        raise SyncError(f"cannot write {dest}: {err.strerror}") from None
    with out:
        while True:
            chunk = response.read(CHUNK)
            if not chunk:
                break
            received += len(chunk)
            if received > entry.size:
                raise SyncError(f"more than the manifest's {entry.size} bytes arrived", retry=True)
            digest.update(chunk)
            try:
                out.write(chunk)
            except OSError as err:  # a full disk: trying again does not help
                raise SyncError(f"cannot write {dest}: {err.strerror}") from None
            progress.add(len(chunk))
        # On disk before the marker vouches for it: an instance stopped right after must not keep a
        # verified folder of unwritten files.
        out.flush()
        os.fsync(out.fileno())
    if received != entry.size:
        raise SyncError(f"{received} bytes arrived, the manifest says {entry.size}", retry=True)
    if digest.hexdigest() != entry.sha256:
        raise SyncError("its content differs from the manifest (sha256): the object is not the uploaded file",
                        retry=True)


def fetch_once(config: Config, source: CredentialSource, entry: Entry, dest: str, label: str) -> None:
    key = f"{config.prefix}/{entry.path}"
    url = object_url(config, key)
    creds = source.get()
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    headers = sign_get("GET", url, {}, creds.access_key, creds.secret_key, creds.token, config.region, "s3",
                       amz_date)
    try:
        with S3_OPENER.open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as response:
            copy_body(response, dest, entry, Progress(label, entry.size))
    except urllib.error.HTTPError as err:
        code, message = s3_error(err)
        raise explain(err.code, code, message, config, key, err.headers.get("x-amz-bucket-region")) from None
    except (OSError, http.client.HTTPException) as err:  # connection refused or reset, timeout, cut short
        raise SyncError(f"s3://{config.bucket}/{key}: {type(err).__name__}: {err}", retry=True) from None


def fetch_file(config: Config, source: CredentialSource, entry: Entry, dest: str, label: str) -> None:
    """fetch_once until the file verifies, a refusal that trying again cannot change, or the attempts run out."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    delay = 1.0
    for attempt in range(1, config.attempts + 1):
        try:
            fetch_once(config, source, entry, dest, label)
            return
        except SyncError as err:
            if err.refresh and source.refreshable:
                source.invalidate()
            elif err.refresh:
                err.retry = False  # keys from the environment: nothing to refresh them from
            if not err.retry:
                raise SyncError(f"{label}: {err}") from None
            if attempt == config.attempts:
                raise SyncError(f"{label}: gave up after {attempt} attempts: {err}") from None
            log(f"{label}: {err}; trying again in {0 if err.refresh else delay:.0f} s "
                f"(attempt {attempt + 1} of {config.attempts})")
            if not err.refresh:
                time.sleep(delay)
                delay = min(delay * 2, MAX_DELAY_S)


# --- the folder -------------------------------------------------------------------------------------------

def verified(model_dir: str, digest: str) -> bool:
    try:
        with open(os.path.join(model_dir, MARKER)) as fh:
            return fh.read().strip() == digest
    except OSError:
        return False


@contextlib.contextmanager
def model_lock(model_dir: str) -> Iterator[None]:
    """Held while this task fills MODEL_DIR: another task of the same model on this instance (they share the
    cache) waits, then finds the model in place, instead of copying it too or renaming over it."""
    path = model_dir + ".lock"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as err:
        raise SyncError(f"cannot create {path}: {err.strerror} (MODEL_DIR's folder must be writable by this "
                        "container's user)") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another copy of this model is under way on this instance ({path} is locked): waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:  # a file system without locks: copy unguarded rather than not at all
            log(f"warning: cannot lock {path} ({err.strerror}); copying without it")
        yield
    finally:
        os.close(fd)


def remove_leftovers(model_dir: str) -> None:
    """Removes the staging and set-aside folders of runs that were stopped (the lock says none is running)."""
    parent, name = os.path.split(model_dir)
    for entry in sorted(os.listdir(parent)):
        if entry.startswith((name + ".sync-", name + ".old-")):
            log(f"removing {entry}, left by a copy that was stopped")
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def make_readable(root: str) -> None:
    """chmod -R a+rX,go-w: vLLM may run as another user than this container."""
    def fix(path: str, is_dir: bool) -> None:
        mode = os.lstat(path).st_mode & 0o7777
        mode |= 0o555 if is_dir or mode & 0o111 else 0o444
        os.chmod(path, mode & ~0o022)

    fix(root, True)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            fix(os.path.join(folder, name), True)
        for name in files:
            fix(os.path.join(folder, name), False)


def put_in_place(staging: str, model_dir: str) -> None:
    """One rename. It replaces an empty MODEL_DIR (even one of another owner); anything else there is moved
    aside first and removed after, so MODEL_DIR is never a half-removed folder."""
    try:
        os.rename(staging, model_dir)
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
        aside = f"{model_dir}.old-{os.getpid()}"
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(model_dir, aside)
        os.rename(staging, model_dir)
        shutil.rmtree(aside, ignore_errors=True)
    fd = os.open(os.path.dirname(model_dir), os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself on disk
    finally:
        os.close(fd)


def copy_all(config: Config, source: CredentialSource, staging: str) -> int:
    total = sum(e.size for e in config.entries)
    free = shutil.disk_usage(staging).free
    if total > free:
        raise SyncError(f"the model takes {total / 1e9:.2f} GB and the cache has {free / 1e9:.2f} GB free")
    log(f"copying {len(config.entries)} files ({total / 1e6:.1f} MB) from s3://{config.bucket}/{config.prefix}/ "
        f"into {config.model_dir}")
    for index, entry in enumerate(config.entries, 1):
        label = f"file {index}/{len(config.entries)} {entry.path}"
        started = time.monotonic()
        fetch_file(config, source, entry, os.path.join(staging, *entry.path.split("/")), label)
        seconds = time.monotonic() - started
        log(f"{label}: {entry.size} bytes verified in {seconds:.1f} s ({rate(entry.size, seconds)})")
    return total


def sync(config: Config, env: Mapping[str, str]) -> None:
    if verified(config.model_dir, config.digest):
        log(f"the model is already in the cache: {config.model_dir} holds {config.digest}")
        return
    started = time.monotonic()
    with model_lock(config.model_dir):
        if verified(config.model_dir, config.digest):
            log(f"the model is already in the cache: {config.model_dir} holds {config.digest} (another task "
                "put it there meanwhile)")
            return
        remove_leftovers(config.model_dir)
        parent, name = os.path.split(config.model_dir)
        staging = tempfile.mkdtemp(prefix=f"{name}.sync-{os.getpid()}-", dir=parent)
        try:
            total = copy_all(config, CredentialSource(env), staging)
            with open(os.path.join(staging, MARKER), "w") as fh:
                fh.write(config.digest + "\n")
            make_readable(staging)
            put_in_place(staging, config.model_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    seconds = time.monotonic() - started
    log(f"done: {len(config.entries)} files, {total} bytes in {seconds:.1f} s ({rate(total, seconds)}); the model "
        f"is verified and in place in {config.model_dir}")


def _stop(signum: int, _frame: object) -> None:
    # ECS stops the container with SIGTERM: unwind, so the staging folder is removed.
    raise SyncError(f"stopped by signal {signum} before the copy was complete")


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    try:
        config = read_config(os.environ)
    except SyncError as err:
        error(str(err))
        return 2
    try:
        sync(config, os.environ)
    except (SyncError, OSError) as err:
        error(str(err) if isinstance(err, SyncError) else f"{type(err).__name__}: {err}")
        error(f"the copy was removed; {config.model_dir} was left as it was")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
