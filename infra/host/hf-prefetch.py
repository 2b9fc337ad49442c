#!/usr/bin/env python3
"""Puts a Hugging Face model into the Hugging Face cache before vLLM starts, so vLLM downloads nothing.

Usage: hf-prefetch.py --repo ORG/NAME [--revision REV] [--hf-home DIR] [--token-file PATH|-]
"""

# Run at boot on the instance (Ubuntu 22.04's python3.10, standard library only), as the owner of the
# cache volume's folders, in the background while the image is pulled.
#
# The token comes from --token-file (a path; `-` reads it from standard input) or the HF_TOKEN variable,
# never from an argument, and is sent only to the Hub endpoint itself (not to the storage host that LFS
# downloads are redirected to). HF_ENDPOINT selects another Hub; DEPLOY_TIMELINE_FILE, when set, gets
# "model_present <epoch>" appended once every file is in place.
#
# What it writes is the cache huggingface_hub itself reads (HF_HOME/hub):
#   models--ORG--NAME/blobs/<etag>                  the content, named by the ETag the Hub reports
#   models--ORG--NAME/snapshots/<commit>/<path>     relative symlink to ../../blobs/<etag>
#   models--ORG--NAME/refs/<revision>               the commit the revision resolved to
# A file is fetched into blobs/<etag>.incomplete (resumed with a range request after an interruption,
# checked against its size and, for LFS files, its sha256) and renamed into place, under the same
# per-blob lock file huggingface_hub takes, so a vLLM starting meanwhile waits instead of fetching it
# twice. A second run finds every snapshot entry and downloads nothing. No trees/<commit>.json listing
# is written: huggingface_hub would then hold a snapshot without the files vLLM does not read
# (other weight formats) for incomplete.
#
# The files are the ones vLLM 0.32 reads when it starts with `--model ORG/NAME` (load format `auto`):
# - every file that is not a weight or a large media file (configs, tokenizer, chat templates, README):
#   vLLM's tokenizer loading snapshots exactly that set;
# - the weights in the one format vLLM picks: `consolidated*.safetensors` in a Mistral-format repo;
#   otherwise the shards a `model.safetensors.index.json` names, or every `*.safetensors`; otherwise
#   `*.bin`, then `*.pt`. Files below `original/**/` (vLLM's default --ignore-patterns) are skipped.

from __future__ import annotations

import argparse
import contextlib
import email.message
import fcntl
import fnmatch
import hashlib
import http.client
import json
import os
import posixpath
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, TypeVar

PROG = "hf-prefetch"
DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"
COMMIT_RE = re.compile(r"[0-9a-f]{40}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
# Repo ids as the Hub allows them; `--` is excluded because the cache folder name uses it as separator.
REPO_RE = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")
# An ETag becomes a file name in blobs/: nothing that could leave that folder.
ETAG_RE = re.compile(r"[A-Za-z0-9][\w.-]*")
CHUNK = 1 << 20
MAX_HUB_REDIRECTS = 5

# Weights in every format and large media: what vLLM's tokenizer/processor snapshot leaves out
# (vllm/transformers_utils/repo_utils.py). Everything else in the repo is small and read at start.
NOT_NON_WEIGHT = (
    "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.gguf", "*.h5", "*.msgpack", "*.onnx",
    "*.onnx_data",
    "*.png", "*.jpg", "*.jpeg", "*.gif", "*.webp", "*.mp3", "*.mp4", "*.wav", "*.flac",
    "*.parquet", "*.arrow", "*.ipynb", "*.zip", "*.tar*",
)
MISTRAL_WEIGHTS = "consolidated*.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
# The weight formats vLLM's default loader tries, in order (`*.pt` as its fall-back).
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt")
# vLLM's default --ignore-patterns: the duplicate checkpoints Meta ships under original/.
IGNORED_WEIGHTS = ("original/**/*",)

T = TypeVar("T")


class PrefetchError(Exception):
    """A failure with a message for the operator; `retry` says whether trying again may help."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


def log(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


def matches(path: str, patterns: tuple[str, ...] | list[str]) -> bool:
    # Like huggingface_hub's allow/ignore filters: case-sensitive, `*` also crosses `/`.
    return any(fnmatch.fnmatchcase(path, p) for p in patterns)


def select_non_weight_files(files: list[str]) -> list[str]:
    return sorted(f for f in files if not matches(f, NOT_NON_WEIGHT))


def select_weight_files(files: list[str], read_json: Callable[[str], object]) -> list[str]:
    """The weight files vLLM's default loader downloads; `read_json(path)` reads a fetched repo file."""
    candidates = [f for f in files if not matches(f, IGNORED_WEIGHTS)]
    if any(fnmatch.fnmatchcase(posixpath.basename(f), MISTRAL_WEIGHTS) for f in files):
        return sorted(f for f in candidates if fnmatch.fnmatchcase(f, MISTRAL_WEIGHTS))
    top_level = [f for f in files if "/" not in f]
    if SAFETENSORS_INDEX in top_level and any(f.endswith(".safetensors") for f in top_level):
        index = read_json(SAFETENSORS_INDEX)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if isinstance(weight_map, dict) and weight_map:
            shards = {str(v) for v in weight_map.values()}
            missing = shards - set(files)
            if missing:
                raise PrefetchError(f"{SAFETENSORS_INDEX} names shards the repo does not have: {sorted(missing)}")
            return sorted(f for f in candidates if f in shards)
    # The first format present at the top of the repo decides; then it is taken from anywhere in it.
    for pattern in WEIGHT_PATTERNS:
        if any(fnmatch.fnmatchcase(f, pattern) for f in top_level):
            return sorted(f for f in candidates if fnmatch.fnmatchcase(f, pattern))
    for pattern in WEIGHT_PATTERNS:
        found = sorted(f for f in candidates if fnmatch.fnmatchcase(f, pattern))
        if found:
            return found
    return []


# ------------------------------------------------------------------------------------------------
# HTTP


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are followed by hand: the token must not follow one that leaves the Hub."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: http.client.HTTPMessage, newurl: str) -> None:
        return None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


@dataclass
class Response:
    status: int
    headers: email.message.Message
    body: IO[bytes]
    url: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass(frozen=True)
class FileMeta:
    path: str
    etag: str
    size: int | None
    url: str  # where the content is fetched
    send_token: bool  # False once redirected off the Hub


class Hub:
    def __init__(self, endpoint: str, repo: str, token: str | None, retries: int, timeout: float) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.repo = repo
        self.token = token
        self.retries = retries
        self.timeout = timeout
        self.opener = urllib.request.build_opener(_NoRedirect())

    # --- plumbing ---------------------------------------------------------------------------
    def open(self, method: str, url: str, headers: dict[str, str] | None = None,
             send_token: bool = True) -> Response:
        request_headers = {"User-Agent": f"{PROG}/1", "Accept-Encoding": "identity", **(headers or {})}
        if send_token and self.token and _origin(url) == _origin(self.endpoint):
            request_headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, method=method, headers=request_headers)
        try:
            resp = self.opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as err:  # also 3xx, as redirects are not followed
            return Response(err.code, err.headers, err, url)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", err)
            raise PrefetchError(f"{method} {url}: {reason}", retry=True) from err
        return Response(resp.status, resp.headers, resp, url)

    def get(self, url: str, headers: dict[str, str], send_token: bool, what: str) -> Response:
        """GET that follows redirects, keeping the token only while it stays on the same origin."""
        for _ in range(MAX_HUB_REDIRECTS):
            resp = self.open("GET", url, headers, send_token=send_token)
            location = resp.header("Location")
            if not (300 <= resp.status < 400 and location):
                return resp
            resp.body.close()
            target = urllib.parse.urljoin(url, location)
            send_token = send_token and _origin(target) == _origin(url)
            url = target
        raise PrefetchError(f"{what}: more than {MAX_HUB_REDIRECTS} redirects")

    def retrying(self, what: str, attempt_fn: Callable[[], T]) -> T:
        """Calls `attempt_fn` until it succeeds, a permanent error occurs, or the attempts run out."""
        delay = 1.0
        for attempt in range(1, self.retries + 1):
            try:
                return attempt_fn()
            except PrefetchError as err:
                if not err.retry or attempt == self.retries:
                    if err.retry:
                        raise PrefetchError(f"{what}: gave up after {attempt} attempts: {err}") from err
                    raise
                log(f"{what}: {err}; retrying in {delay:.0f} s ({attempt}/{self.retries})")
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    def raise_for_status(self, resp: Response, what: str) -> None:
        if resp.status < 400:
            return
        code = resp.header("X-Error-Code") or ""
        detail = resp.header("X-Error-Message") or ""
        suffix = f" ({detail})" if detail else ""
        with contextlib.suppress(OSError):
            resp.body.close()
        if resp.status == 429 or resp.status >= 500:
            retry_after = resp.header("Retry-After") or ""
            if retry_after.isdigit():
                time.sleep(min(int(retry_after), 60))
            raise PrefetchError(f"{what}: HTTP {resp.status}{suffix}", retry=True)
        if code == "RevisionNotFound":
            raise PrefetchError(f"{what}: the revision does not exist in {self.repo} (HTTP {resp.status}){suffix}")
        if code == "EntryNotFound":
            raise PrefetchError(f"{what}: no such file in {self.repo} (HTTP {resp.status}){suffix}")
        if resp.status == 401 or code == "GatedRepo":
            if not self.token:
                raise PrefetchError(
                    f"{what}: HTTP {resp.status}: {self.repo} is gated or private (or does not exist) and no "
                    f"Hugging Face token was given; set the stack's hfToken{suffix}")
            raise PrefetchError(f"{what}: HTTP {resp.status}: the Hub refused the token for {self.repo}{suffix}")
        if resp.status == 403:
            raise PrefetchError(
                f"{what}: HTTP 403: the token's account has no access to {self.repo}; accept the model's "
                f"conditions on its Hub page with that account{suffix}")
        if resp.status == 404 or code == "RepoNotFound":
            raise PrefetchError(f"{what}: HTTP {resp.status}: no model repository {self.repo} at {self.endpoint}"
                                f"{suffix}")
        raise PrefetchError(f"{what}: HTTP {resp.status}{suffix}")

    # --- the Hub's API ----------------------------------------------------------------------
    def resolve(self, revision: str) -> tuple[str, list[str]]:
        """(commit, files) of the repo at `revision`."""
        url = f"{self.endpoint}/api/models/{self.repo}/revision/{urllib.parse.quote(revision, safe='')}"

        def attempt() -> tuple[str, list[str]]:
            resp = self.open("GET", url, {"Accept": "application/json"})
            self.raise_for_status(resp, f"model info of {self.repo}@{revision}")
            try:
                info = json.loads(resp.body.read())
            except (ValueError, OSError, http.client.HTTPException) as err:
                raise PrefetchError(f"model info of {self.repo}: unreadable answer: {err}", retry=True) from err
            finally:
                resp.body.close()
            commit = info.get("sha") if isinstance(info, dict) else None
            siblings = info.get("siblings") if isinstance(info, dict) else None
            if not isinstance(commit, str) or not COMMIT_RE.fullmatch(commit) or not isinstance(siblings, list):
                raise PrefetchError(f"model info of {self.repo} from {self.endpoint} has no commit and file list; "
                                    "is HF_ENDPOINT a Hugging Face Hub?")
            files = [s["rfilename"] for s in siblings if isinstance(s, dict) and isinstance(s.get("rfilename"), str)]
            return commit, files

        return self.retrying(f"resolving {self.repo}@{revision}", attempt)

    def file_meta(self, commit: str, path: str) -> FileMeta:
        """ETag, size and download location of one file, read the way huggingface_hub reads them: a HEAD
        on resolve/, following redirects on the Hub and stopping at one that leaves it (LFS storage)."""

        def attempt() -> FileMeta:
            url = f"{self.endpoint}/{self.repo}/resolve/{commit}/{urllib.parse.quote(path)}"
            for _ in range(MAX_HUB_REDIRECTS):
                resp = self.open("HEAD", url)
                resp.body.close()
                self.raise_for_status(resp, f"HEAD {path}")
                location = resp.header("Location")
                redirected = 300 <= resp.status < 400 and location is not None
                if redirected:
                    assert location is not None
                    target = urllib.parse.urljoin(url, location)
                    if _origin(target) == _origin(url):
                        url = target
                        continue
                    url, send_token = target, False
                else:
                    send_token = True
                served_commit = resp.header("X-Repo-Commit")
                if served_commit is None:
                    raise PrefetchError(f"HEAD {path}: no X-Repo-Commit header: {self.endpoint} does not answer "
                                        "like a Hugging Face Hub")
                if served_commit != commit:
                    raise PrefetchError(f"HEAD {path}: served from commit {served_commit}, expected {commit}")
                raw_etag = resp.header("X-Linked-Etag") or resp.header("ETag")
                etag = _normalize_etag(raw_etag)
                if etag is None or not ETAG_RE.fullmatch(etag):
                    raise PrefetchError(f"HEAD {path}: unusable ETag {raw_etag!r}")
                size_text = resp.header("X-Linked-Size") or (None if redirected else resp.header("Content-Length"))
                size = int(size_text) if size_text and size_text.isdigit() else None
                return FileMeta(path, etag, size, url, send_token)
            raise PrefetchError(f"HEAD {path}: more than {MAX_HUB_REDIRECTS} redirects")

        return self.retrying(f"metadata of {path}", attempt)


def _normalize_etag(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


# ------------------------------------------------------------------------------------------------
# The cache


@contextlib.contextmanager
def _blob_lock(path: str) -> Iterator[None]:
    """The per-blob lock file huggingface_hub takes (flock), so the two never write the same blob."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays, as huggingface_hub leaves its own


def _replace_symlink(target: str, link: str) -> None:
    tmp = f"{link}.{os.getpid()}.{threading.get_ident()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _write_atomically(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


class Cache:
    def __init__(self, hub_dir: str, repo: str) -> None:
        self.hub_dir = hub_dir
        folder = "--".join(["models", *repo.split("/")])
        self.storage = os.path.join(hub_dir, folder)
        self.locks = os.path.join(hub_dir, ".locks", folder)

    def pointer(self, commit: str, path: str) -> str:
        pointer = os.path.join(self.storage, "snapshots", commit, *path.split("/"))
        snapshot = os.path.join(self.storage, "snapshots", commit)
        if os.path.commonpath([snapshot, os.path.normpath(pointer)]) != snapshot or ".." in path.split("/"):
            raise PrefetchError(f"refusing the repo path {path!r}: it leaves the snapshot folder")
        return pointer

    def blob(self, etag: str) -> str:
        return os.path.join(self.storage, "blobs", etag)

    def link(self, pointer: str, blob: str) -> None:
        os.makedirs(os.path.dirname(pointer), exist_ok=True)
        _replace_symlink(os.path.relpath(blob, os.path.dirname(pointer)), pointer)

    def write_ref(self, revision: str, commit: str) -> None:
        if revision == commit:
            return
        ref = os.path.join(self.storage, "refs", *revision.split("/"))
        try:
            with open(ref) as fh:
                if fh.read() == commit:
                    return
        except OSError:
            pass
        _write_atomically(ref, commit)


class Prefetcher:
    def __init__(self, hub: Hub, cache: Cache, workers: int) -> None:
        self.hub = hub
        self.cache = cache
        self.workers = workers
        self.downloaded = 0
        self.present = 0
        self._lock = threading.Lock()

    def _count(self, downloaded: int = 0, present: int = 0) -> None:
        with self._lock:
            self.downloaded += downloaded
            self.present += present

    def fetch_all(self, commit: str, paths: list[str]) -> None:
        if not paths:
            return
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(paths)))) as pool:
            futures = [pool.submit(self.fetch, commit, p) for p in paths]
            errors = [f.exception() for f in futures]
        failed = [e for e in errors if e is not None]
        if failed:
            if len(failed) > 1:
                log(f"{len(failed)} files failed; the first error follows")
            raise failed[0]

    def total_bytes(self, commit: str, paths: list[str]) -> int | None:
        """The size of these files: from disk for those in place, from the Hub (a HEAD each) for the
        others; None when the Hub does not say one's size. The download asks again: a signed storage
        URL may expire before a late file of a large model starts."""
        missing = [p for p in paths if not os.path.exists(self.cache.pointer(commit, p))]
        total = sum(os.path.getsize(self.cache.pointer(commit, p)) for p in paths if p not in missing)
        if missing:
            with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(missing)))) as pool:
                metas = list(pool.map(lambda p: self.hub.file_meta(commit, p), missing))
            if any(m.size is None for m in metas):
                return None
            total += sum(m.size or 0 for m in metas)
        return total

    def fetch(self, commit: str, path: str) -> None:
        pointer = self.cache.pointer(commit, path)
        if os.path.exists(pointer):  # follows the link: the blob is there
            self._count(present=os.path.getsize(pointer))
            return
        meta = self.hub.file_meta(commit, path)
        blob = self.cache.blob(meta.etag)
        with _blob_lock(os.path.join(self.cache.locks, f"{meta.etag}.lock")):
            if os.path.exists(blob) and (meta.size is None or os.path.getsize(blob) == meta.size):
                self._count(present=os.path.getsize(blob))
            else:
                self.hub.retrying(f"downloading {path}", lambda: self._download(meta, blob))
        self.cache.link(pointer, blob)

    def _download(self, meta: FileMeta, blob: str) -> None:
        part = blob + ".incomplete"
        os.makedirs(os.path.dirname(blob), exist_ok=True)
        have = os.path.getsize(part) if os.path.exists(part) else 0
        if meta.size is not None and have > meta.size:
            have = 0
        digest = hashlib.sha256() if SHA256_RE.fullmatch(meta.etag) else None
        resp: Response | None = None
        if meta.size is None or have < meta.size:
            what = f"GET {meta.path}"
            headers = {"Range": f"bytes={have}-"} if have else {}
            resp = self.hub.get(meta.url, headers, meta.send_token, what)
            if resp.status == 416 and have:
                resp.body.close()
                have, resp = 0, self.hub.get(meta.url, {}, meta.send_token, what)
            self.hub.raise_for_status(resp, what)
            if resp.status != 206:
                have = 0  # the server sent the whole file
            elif not (resp.header("Content-Range") or "").startswith(f"bytes {have}-"):
                resp.body.close()
                raise PrefetchError(f"{what}: the server resumed at the wrong offset "
                                    f"({resp.header('Content-Range')!r}, expected {have})", retry=True)
        mode = "ab" if have else "wb"
        if digest is not None and have:
            with open(part, "rb") as fh:
                for chunk in iter(lambda: fh.read(CHUNK), b""):
                    digest.update(chunk)
        with open(part, mode) as out:
            out.truncate(have)
            if resp is not None:
                try:
                    for chunk in iter(lambda: resp.body.read(CHUNK), b""):
                        out.write(chunk)
                        if digest is not None:
                            digest.update(chunk)
                        self._count(downloaded=len(chunk))
                except (OSError, http.client.HTTPException) as err:
                    # What arrived stays in .incomplete: the next attempt resumes after it.
                    raise PrefetchError(f"GET {meta.path}: interrupted: {err}", retry=True) from err
                finally:
                    resp.body.close()
        size = os.path.getsize(part)
        if meta.size is not None and size != meta.size:
            raise PrefetchError(f"GET {meta.path}: got {size} bytes, expected {meta.size}", retry=True)
        if digest is not None and digest.hexdigest() != meta.etag:
            os.unlink(part)
            raise PrefetchError(f"GET {meta.path}: sha256 {digest.hexdigest()} does not match {meta.etag}",
                                retry=True)
        os.chmod(part, 0o644)
        os.replace(part, blob)

    def read_json(self, commit: str, path: str) -> object:
        with open(self.cache.pointer(commit, path)) as fh:
            return json.load(fh)


# ------------------------------------------------------------------------------------------------


def _read_token(token_file: str | None) -> str | None:
    if token_file == "-":
        token = sys.stdin.readline()
    elif token_file:
        try:
            with open(token_file) as fh:
                token = fh.read()
        except OSError as err:
            raise PrefetchError(f"cannot read the token file {token_file}: {err.strerror}") from err
    else:
        token = os.environ.get("HF_TOKEN", "")
    token = token.strip()
    if any(c.isspace() for c in token):
        raise PrefetchError("the Hugging Face token contains whitespace; expected a single token")
    return token or None


def _default_hf_home() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("HF_HOME") or os.path.join(cache, "huggingface")


def _record_timeline(stage: str) -> None:
    path = os.environ.get("DEPLOY_TIMELINE_FILE")
    if path:
        try:
            with open(path, "a") as fh:
                fh.write(f"{stage} {time.time():.6f}\n")
        except OSError as err:  # the model is in place all the same
            log(f"warning: cannot record {stage} in {path}: {err.strerror}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repo", required=True, help="model repo id, ORG/NAME")
    parser.add_argument("--revision", default=DEFAULT_REVISION, help="branch, tag or commit (default: main)")
    parser.add_argument("--hf-home", default=None, help="HF_HOME: the cache goes to HF_HOME/hub")
    parser.add_argument("--token-file", default=None, help="file holding the token; '-' reads standard input")
    parser.add_argument("--workers", type=int, default=8, help="files fetched at once (default 8)")
    parser.add_argument("--retries", type=int, default=5, help="attempts per request (default 5)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds without data before a retry")
    args = parser.parse_args(argv)

    start = time.monotonic()
    try:
        if not REPO_RE.fullmatch(args.repo) or "--" in args.repo or ".." in args.repo:
            raise PrefetchError(f"{args.repo!r} is not a Hugging Face model repo id (ORG/NAME)")
        if not args.revision or ".." in args.revision.split("/") or args.revision.startswith("/"):
            raise PrefetchError(f"{args.revision!r} is not a revision")
        token = _read_token(args.token_file)
        endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
        hub = Hub(endpoint, args.repo, token, max(1, args.retries), args.timeout)
        cache = Cache(os.path.join(args.hf_home or _default_hf_home(), "hub"), args.repo)
        fetcher = Prefetcher(hub, cache, args.workers)

        commit, files = hub.resolve(args.revision)
        cache.write_ref(args.revision, commit)
        non_weights = select_non_weight_files(files)
        log(f"{args.repo}@{args.revision} is commit {commit}: {len(files)} files in the repo")
        fetcher.fetch_all(commit, non_weights)
        weights = select_weight_files(files, lambda path: fetcher.read_json(commit, path))
        if not weights:
            raise PrefetchError(f"{args.repo} has no weights vLLM can load (*.safetensors, *.bin, *.pt)")
        # The host's readiness check shows the folder's size against this line while it waits.
        total = fetcher.total_bytes(commit, non_weights + weights)
        if total is not None:
            log(f"total {total} bytes in {cache.storage} ({len(non_weights) + len(weights)} files)")
        fetcher.fetch_all(commit, weights)
    except PrefetchError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; a re-run resumes where this one stopped", file=sys.stderr)
        return 130
    _record_timeline("model_present")
    summary = {
        "repo": args.repo, "revision": args.revision, "commit": commit,
        "files": len(non_weights) + len(weights), "weights": weights,
        "downloaded_bytes": fetcher.downloaded, "present_bytes": fetcher.present,
        "seconds": round(time.monotonic() - start, 3),
    }
    log("done " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
