#!/usr/bin/env python3
"""Puts a Hugging Face model into the Hugging Face cache before vLLM starts, so vLLM downloads nothing.

Usage: hf-prefetch.py --repo ORG/NAME [--revision REV] [--hf-home DIR] [--token-file PATH|-]
"""

# Run at boot on the instance by boot.sh, with the interpreter of the venv boot.sh installs the maintained
# Hub client into (huggingface_hub and hf_xet, pinned in infra/catalog/names.py HF_CLIENT_PACKAGES), as
# the owner of the cache volume's folders, in the background while the image is pulled. This file only
# chooses the files; the library fetches them (Xet in high-performance mode where the Hub serves Xet,
# resumed HTTP otherwise), takes its per-blob locks (a vLLM starting meanwhile waits instead of fetching
# twice) and writes the cache layout vLLM's own huggingface_hub reads: HF_HOME/hub/models--ORG--NAME/
# {blobs,snapshots/<commit>,refs/<revision>}.
#
# The token comes from --token-file (a path; `-` reads it from standard input) and reaches the library as
# its `token` argument: never an argument of this program, never the environment, never a file it writes.
# The library sends it to the Hub only (not to the storage host LFS downloads are redirected to).
# An interrupted file is fetched again whole (the library does not resume one); what the interrupted run
# wrote is removed first. HF_ENDPOINT selects another Hub; DEPLOY_TIMELINE_FILE, when set, gets
# "model_present <epoch>" appended once every file is in place.
#
# One hf_hub_download per file, not snapshot_download: snapshot_download also stores the repo's whole
# listing (trees/<commit>.json), and an offline huggingface_hub then counts every listed file that vLLM
# does not read (other weight formats) as missing from the snapshot.
#
# The files are the ones vLLM 0.32 reads when it starts with `--model ORG/NAME` (load format `auto`):
# - every file that is not a weight or a large media file (configs, tokenizer, chat templates, README):
#   vLLM's tokenizer loading snapshots exactly that set;
# - the weights in the one format vLLM picks: `consolidated*.safetensors` in a Mistral-format repo;
#   otherwise the shards a `model.safetensors.index.json` names, or every `*.safetensors`; otherwise
#   `*.bin`, then `*.pt`. Files below `original/**/` (vLLM's default --ignore-patterns) are skipped.

from __future__ import annotations

import argparse
import fcntl
import fnmatch
import json
import os
import posixpath
import re
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

PROG = "hf-prefetch"
# Repo ids as the Hub allows them; `--` is excluded because the cache folder name uses it as separator.
REPO_RE = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")

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
# Read by huggingface_hub at import. High performance: hf_xet uses every core and the full bandwidth
# (the instance does nothing else yet). No progress bars: the log is a file and the host check measures
# the folder itself.
CLIENT_ENV = {"HF_XET_HIGH_PERFORMANCE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
              "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}


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


def explain(err: BaseException, repo: str, revision: str, endpoint: str, has_token: bool) -> PrefetchError:
    """The library's exception as a message for the operator (what to change), marked retryable or not."""
    from huggingface_hub import errors

    # hf_hub_download wraps a failed metadata request; the HTTP answer is on the chain.
    found: BaseException | None = err
    while found is not None and not isinstance(found, errors.HfHubHTTPError):
        found = found.__cause__ or found.__context__
    if found is None:
        return PrefetchError(f"{type(err).__name__}: {err}", retry=True)
    response = getattr(found, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(found, errors.RevisionNotFoundError):
        return PrefetchError(f"the revision {revision!r} does not exist in {repo} (HTTP {status})")
    if isinstance(found, errors.GatedRepoError) or status == 401:
        if not has_token:
            return PrefetchError(f"HTTP {status}: {repo} is gated or private (or does not exist) and no "
                                 "Hugging Face token was given; set the stack's hfToken")
        return PrefetchError(f"HTTP {status}: the Hub refused the token for {repo}")
    if status == 403:
        return PrefetchError(f"HTTP 403: the token's account has no access to {repo}; accept the model's "
                             "conditions on its Hub page with that account")
    if isinstance(found, errors.RepositoryNotFoundError):
        return PrefetchError(f"HTTP {status}: no model repository {repo} at {endpoint}")
    if isinstance(found, errors.EntryNotFoundError):
        return PrefetchError(f"HTTP {status}: a file listed in {repo} is not served: {found}")
    return PrefetchError(f"HTTP {status}: {found}", retry=status is None or status == 429 or status >= 500)


def retrying(what: str, attempts: int, attempt_fn: Callable[[], Any], to_error: Callable[[BaseException],
             PrefetchError]) -> Any:
    """Calls `attempt_fn` until it succeeds, a permanent error occurs, or the attempts run out."""
    delay = 1.0
    for attempt in range(1, attempts + 1):
        try:
            return attempt_fn()
        except PrefetchError:
            raise
        except Exception as exc:  # the library raises many kinds; explain() sorts them
            err = to_error(exc)
            if not err.retry:
                raise err from exc
            if attempt == attempts:
                raise PrefetchError(f"{what}: gave up after {attempt} attempts: {err}") from exc
            log(f"{what}: {err}; retrying in {delay:.0f} s ({attempt}/{attempts})")
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
    raise AssertionError("unreachable")


def remove_stale_partials(storage: str, locks: str) -> int:
    """Deletes the partial downloads an interrupted run left in `storage`/blobs; returns their bytes.

    huggingface_hub writes each download to a file of its own, <etag>.<id>.incomplete, and never resumes one
    (a killed run's file would stay for good). One is stale when nobody holds its blob's lock, the flock the
    library holds while it writes; one being written (a vLLM started meanwhile) is left alone."""
    blobs = os.path.join(storage, "blobs")
    try:
        names = [n for n in os.listdir(blobs) if n.endswith(".incomplete")]
    except FileNotFoundError:
        return 0
    removed = 0
    for name in names:
        os.makedirs(locks, exist_ok=True)
        fd = os.open(os.path.join(locks, name.split(".", 1)[0] + ".lock"), os.O_RDWR | os.O_CREAT, 0o664)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue
        else:
            path = os.path.join(blobs, name)
            removed += os.path.getsize(path)
            os.unlink(path)
        finally:
            os.close(fd)  # releases the lock
    return removed


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
        token = ""
    token = token.strip()
    if any(c.isspace() for c in token):
        raise PrefetchError("the Hugging Face token contains whitespace; expected a single token")
    return token or None


def _record_timeline(stage: str) -> None:
    path = os.environ.get("DEPLOY_TIMELINE_FILE")
    if path:
        try:
            with open(path, "a") as fh:
                fh.write(f"{stage} {time.time():.6f}\n")
        except OSError as err:  # the model is in place all the same
            log(f"warning: cannot record {stage} in {path}: {err.strerror}")


def prefetch(repo: str, revision: str, token: str | None, workers: int, attempts: int,
             timeout: float) -> dict[str, object]:
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    endpoint = constants.ENDPOINT
    # False, not None: without a token the library must not look for one of its own.
    auth: str | bool = token or False
    api = huggingface_hub.HfApi(token=auth)

    def to_error(err: BaseException) -> PrefetchError:
        return explain(err, repo, revision, endpoint, token is not None)

    info = retrying(f"resolving {repo}@{revision}", attempts,
                    lambda: api.model_info(repo, revision=revision, files_metadata=True, timeout=timeout), to_error)
    commit = info.sha
    siblings = {s.rfilename: s for s in info.siblings or []}
    storage = os.path.join(constants.HF_HUB_CACHE, repo_folder_name(repo_id=repo, repo_type="model"))
    log(f"{repo}@{revision} is commit {commit}: {len(siblings)} files in the repo")

    def pointer(path: str) -> str:
        return os.path.join(storage, "snapshots", commit, *path.split("/"))

    present = {p for p in siblings if os.path.exists(pointer(p))}
    stale = remove_stale_partials(storage, os.path.join(constants.HF_HUB_CACHE, ".locks",
                                                        os.path.basename(storage)))
    if stale:
        log(f"removed {stale} bytes of partial downloads an interrupted run left")

    def download(path: str) -> None:
        local = retrying(f"downloading {path}", attempts, lambda: str(huggingface_hub.hf_hub_download(
            repo, path, revision=revision, token=auth, etag_timeout=timeout)), to_error)
        if not local.startswith(os.path.join(storage, "snapshots", commit) + os.sep):
            raise PrefetchError(f"{revision} moved to another commit during the download ({local}); run again")

    def fetch_all(paths: list[str]) -> None:
        if not paths:
            return
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(paths)))) as pool:
            failures = [f.exception() for f in [pool.submit(download, p) for p in paths]]
        failed = [e for e in failures if e is not None]
        if failed:
            if len(failed) > 1:
                log(f"{len(failed)} files failed; the first error follows")
            raise failed[0]

    non_weights = select_non_weight_files(list(siblings))
    fetch_all(non_weights)

    def read_json(path: str) -> object:
        with open(pointer(path)) as fh:
            return json.load(fh)

    weights = select_weight_files(list(siblings), read_json)
    if not weights:
        raise PrefetchError(f"{repo} has no weights vLLM can load (*.safetensors, *.bin, *.pt)")
    wanted = non_weights + weights
    sizes = {p: siblings[p].size for p in wanted}
    # The host's readiness check shows the folder's size against this line while it waits.
    if all(size is not None for size in sizes.values()):
        log(f"total {sum(s or 0 for s in sizes.values())} bytes in {storage} ({len(wanted)} files)")
    fetch_all(weights)
    return {
        "repo": repo, "revision": revision, "commit": commit, "files": len(wanted), "weights": weights,
        # Files that were not in the cache before this run.
        "downloaded_bytes": sum(sizes[p] or 0 for p in wanted if p not in present),
        "present_bytes": sum(sizes[p] or 0 for p in wanted if p in present),
        "client": f"huggingface_hub {huggingface_hub.__version__}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repo", required=True, help="model repo id, ORG/NAME")
    parser.add_argument("--revision", default="main", help="branch, tag or commit (default: main)")
    parser.add_argument("--hf-home", default=None, help="HF_HOME: the cache goes to HF_HOME/hub")
    parser.add_argument("--token-file", default=None, help="file holding the token; '-' reads standard input")
    parser.add_argument("--workers", type=int, default=8, help="files fetched at once (default 8)")
    parser.add_argument("--retries", type=int, default=5, help="attempts per request (default 5)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the Hub's answer")
    args = parser.parse_args(argv)

    start = time.monotonic()
    try:
        if not REPO_RE.fullmatch(args.repo) or "--" in args.repo or ".." in args.repo:
            raise PrefetchError(f"{args.repo!r} is not a Hugging Face model repo id (ORG/NAME)")
        if not args.revision or ".." in args.revision.split("/") or args.revision.startswith("/"):
            raise PrefetchError(f"{args.revision!r} is not a revision")
        token = _read_token(args.token_file)
        # The library reads its settings once, at import: they are set first.
        os.environ.update(CLIENT_ENV)
        if args.hf_home:
            os.environ["HF_HOME"] = args.hf_home
            os.environ.pop("HF_HUB_CACHE", None)
        summary = prefetch(args.repo, args.revision, token, args.workers, max(1, args.retries), args.timeout)
    except PrefetchError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; a re-run resumes where this one stopped", file=sys.stderr)
        return 130
    _record_timeline("model_present")
    summary["seconds"] = round(time.monotonic() - start, 3)
    log("done " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
