"""A Hugging Face Hub stand-in for tests: serves local model folders under repo ids, the way the Hub does.

What is served is what huggingface_hub 2.4.0 (the version in the vLLM image and the one the boot-time
prefetcher, infra/host/hf-prefetch.py, installs) and vLLM ask for:
- `GET /api/models/<repo>[/revision/<rev>][?blobs=true]`: model info with the commit `sha` and `siblings`
  (with `blobs`, as `model_info(files_metadata=True)` asks: each file's size, blob id and LFS sha256);
- `GET /api/models/<repo>/tree/<rev>[/<path>]?recursive=..`: the file tree (files with git blob id,
  size and LFS sha256; folders);
- `POST /api/models/<repo>/paths-info/<rev>`: the same entries for given paths;
- `HEAD|GET /<repo>/resolve/<rev>/<path>`: a regular file answers 200 with `ETag` (its git blob id),
  `X-Repo-Commit`, `Content-Length` and byte ranges; an LFS file (weights, or anything >= 10 MiB)
  answers 302 with `X-Linked-Etag` (its sha256), `X-Linked-Size`, `X-Repo-Commit` and a `Location` on a
  second listener standing in for the LFS storage host: a different origin, so clients drop the
  token and read the metadata from the redirect itself, as they do with the Hub's CDN.
Errors carry the Hub's `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo).

A gated repo requires `Authorization: Bearer <token>` on resolve/ (401 otherwise), as the Hub gates
files and not the model info. Counters record every request and the file bytes sent.

It listens on an address the test made: loopback by default, or, with `netns`, an address inside a
test host's network namespace (the socket is created there through setns(2) on the calling thread),
so containers on that host reach it through Docker's bridge.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import secrets
import socket
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CLONE_NEWNET = 0x40000000
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".onnx", ".ckpt")
LFS_MIN_SIZE = 10 * 1024 * 1024
CHUNK = 1 << 20


@dataclass(frozen=True)
class HubFile:
    path: str
    source: Path
    size: int
    oid: str  # git blob id
    sha256: str
    lfs: bool

    def entry(self) -> dict[str, object]:
        item: dict[str, object] = {"type": "file", "oid": self.oid, "size": self.size, "path": self.path}
        if self.lfs:
            item["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": 134}
        return item


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _hub_file(path: str, source: Path) -> HubFile:
    data = source.read_bytes()
    lfs = path.endswith(LFS_SUFFIXES) or len(data) >= LFS_MIN_SIZE
    return HubFile(path, source, len(data), _git_blob_id(data), hashlib.sha256(data).hexdigest(), lfs)


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, HubFile]
    commit: str
    branches: dict[str, str]
    token: str | None = None  # set: gated, this token opens it

    def commit_for(self, revision: str) -> str | None:
        if revision == self.commit:
            return self.commit
        return self.branches.get(revision)

    def folders(self) -> set[str]:
        out: set[str] = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return out


@dataclass
class Request:
    method: str
    path: str
    status: int
    file_bytes: int
    range: str | None
    authorized: bool


@dataclass
class Counters:
    requests: list[Request] = field(default_factory=list)

    @property
    def file_bytes(self) -> int:
        """Bytes of repo file content sent (resolve/ bodies and LFS storage bodies)."""
        return sum(r.file_bytes for r in self.requests)

    def files_sent(self) -> list[str]:
        return [r.path for r in self.requests if r.file_bytes]


@contextlib.contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """Switch the calling thread into network namespace `name` (sockets made meanwhile stay in it)."""
    if name is None:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
        try:
            yield
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns back from {name}: {os.strerror(err)}")
    finally:
        os.close(own)
        os.close(target)


class NoLookupHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the address's name (a DNS query); nothing may leave the test.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


def serve(netns: str | None, bindings: list[tuple[str, int, type[BaseHTTPRequestHandler]]],
          name: str) -> list[NoLookupHTTPServer]:
    """A stand-in's listeners: each (address, port, handler) bound in `netns` (or here; port 0: any), each served
    on a daemon thread of its own. stop_serving ends them."""
    servers: list[NoLookupHTTPServer] = []
    with in_netns(netns):
        for address, port, handler in bindings:
            server = NoLookupHTTPServer((address, port), handler, bind_and_activate=False)
            try:
                server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                server.server_bind()
                server.server_activate()
            except OSError:
                server.server_close()
                stop_serving(servers)
                raise
            servers.append(server)
    for server in servers:
        threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return servers


def stop_serving(servers: list[NoLookupHTTPServer]) -> None:
    for server in servers:
        server.shutdown()  # returns once its serve_forever loop has ended
        server.server_close()


class FakeHub:
    def __init__(self, address: str = "127.0.0.1", netns: str | None = None) -> None:
        self.address = address
        self.netns = netns
        self.repos: dict[str, FakeRepo] = {}
        self.counters = Counters()
        self._lock = threading.Lock()
        self._secret = secrets.token_hex(8)
        # When set, LFS content is sent at this rate: a download that lasts long enough to overlap another.
        self.lfs_rate_bytes_per_s: float | None = None
        self._servers: list[NoLookupHTTPServer] = []

    # --- content ----------------------------------------------------------------------------
    def add_repo(self, repo_id: str, folder: Path, *, token: str | None = None,
                 extra_files: dict[str, Path] | None = None, branches: tuple[str, ...] = ("main",)) -> FakeRepo:
        """Serve every file below `folder` (plus `extra_files`: repo path -> local file) as `repo_id`."""
        files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        files.update(extra_files or {})
        hub_files = {path: _hub_file(path, source) for path, source in sorted(files.items())}
        tree = json.dumps([[f.path, f.oid] for f in hub_files.values()]).encode()
        commit = hashlib.sha1(repo_id.encode() + b"\0" + tree).hexdigest()
        repo = FakeRepo(repo_id, hub_files, commit, dict.fromkeys(branches, commit), token)
        self.repos[repo_id] = repo
        return repo

    # --- lifecycle --------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://{self.address}:{self._servers[0].server_port}"

    @property
    def storage_endpoint(self) -> str:
        return f"http://{self.address}:{self._servers[1].server_port}"

    def start(self) -> FakeHub:
        handler = _handler_for(self)
        # The Hub, then the LFS storage host.
        self._servers = serve(self.netns, [(self.address, 0, handler), (self.address, 0, handler)], "fakehub")
        return self

    def stop(self) -> None:
        stop_serving(self._servers)
        self._servers = []

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_counters(self) -> Counters:
        """Start counting afresh; returns what was counted so far."""
        with self._lock:
            old, self.counters = self.counters, Counters()
        return old

    def record(self, request: Request) -> None:
        with self._lock:
            self.counters.requests.append(request)

    def lfs_url(self, sha256: str) -> str:
        return f"{self.storage_endpoint}/lfs/{self._secret}/{sha256}"

    def blob_by_sha256(self, secret: str, sha256: str) -> HubFile | None:
        if secret != self._secret:
            return None
        for repo in self.repos.values():
            for f in repo.files.values():
                if f.lfs and f.sha256 == sha256:
                    return f
        return None


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fakehub/1"

        def log_message(self, format: str, *args: object) -> None:
            pass  # the counters record every request

        # --- dispatch ---------------------------------------------------------------------
        def do_HEAD(self) -> None:
            self._dispatch(head=True)

        def do_GET(self) -> None:
            self._dispatch(head=False)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            self._dispatch(head=False, body=body)

        def _dispatch(self, head: bool, body: bytes = b"") -> None:
            self._sent = 0
            self._status = 0
            url = urllib.parse.urlsplit(self.path)
            path = urllib.parse.unquote(url.path)
            query = urllib.parse.parse_qs(url.query)
            try:
                if self.server is hub._servers[1]:
                    self._storage(path, head)
                elif path.startswith("/api/models/"):
                    self._api(path[len("/api/models/"):], query, body)
                else:
                    self._resolve(url.path, head)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                hub.record(Request(self.command, self.path, self._status, self._sent,
                                   self.headers.get("Range"), self._authorized_any()))

        # --- helpers ----------------------------------------------------------------------
        def _authorized_any(self) -> bool:
            return self.headers.get("Authorization", "").startswith("Bearer ")

        def _reply(self, status: int, payload: bytes = b"", headers: dict[str, str] | None = None,
                   head: bool = False) -> None:
            self._status = status
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not head and payload:
                self.wfile.write(payload)

        def _json(self, status: int, data: object, headers: dict[str, str] | None = None) -> None:
            self._reply(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

        def _error(self, status: int, code: str, message: str, head: bool = False,
                   headers: dict[str, str] | None = None) -> None:
            payload = json.dumps({"error": message}).encode()
            self._reply(status, payload, {"Content-Type": "application/json", "X-Error-Code": code,
                                          "X-Error-Message": message, **(headers or {})}, head=head)

        def _find_repo(self, rest: str) -> tuple[FakeRepo | None, str]:
            for repo_id in sorted(hub.repos, key=len, reverse=True):
                if rest == repo_id or rest.startswith(repo_id + "/"):
                    return hub.repos[repo_id], rest[len(repo_id) + 1:]
            return None, rest

        def _send_file(self, f: HubFile, headers: dict[str, str], head: bool) -> None:
            start, end = 0, f.size - 1
            status = 200
            wanted = self.headers.get("Range")
            if wanted and wanted.startswith("bytes="):
                first, _, last = wanted[len("bytes="):].partition("-")
                if first.isdigit():
                    start = int(first)
                    end = min(int(last), f.size - 1) if last.isdigit() else f.size - 1
                    if start >= f.size:
                        self._reply(416, headers={"Content-Range": f"bytes */{f.size}"}, head=head)
                        return
                    status = 206
            length = end - start + 1
            self._status = status
            self.send_response(status)
            for key, value in {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream",
                               "Content-Length": str(length)}.items():
                self.send_header(key, value)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{f.size}")
            self.end_headers()
            if head:
                return
            rate = hub.lfs_rate_bytes_per_s if f.lfs else None
            step = CHUNK if rate is None else max(1024, int(rate / 20))
            with f.source.open("rb") as fh:
                fh.seek(start)
                left = length
                while left > 0:
                    chunk = fh.read(min(step, left))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    self._sent += len(chunk)
                    left -= len(chunk)
                    if rate is not None:
                        time.sleep(len(chunk) / rate)

        # --- endpoints --------------------------------------------------------------------
        def _api(self, rest: str, query: dict[str, list[str]], body: bytes) -> None:
            repo, tail = self._find_repo(rest)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
                return
            kind, _, remainder = tail.partition("/")
            revision, _, sub = remainder.partition("/")
            if kind == "":
                revision, kind = "main", "revision"
            commit = repo.commit_for(revision)
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return
            if kind == "revision":
                # `model_info(files_metadata=True)` asks for each file's size and LFS details with ?blobs=true.
                blobs = query.get("blobs", ["false"])[0].lower() in ("true", "1")
                self._json(200, {
                    "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                    "modelId": repo.repo_id, "sha": commit, "private": False,
                    "gated": "manual" if repo.token else False, "disabled": False, "tags": [],
                    "library_name": "transformers", "lastModified": "2026-01-01T00:00:00.000Z",
                    "siblings": [self._sibling(f, blobs) for f in repo.files.values()],
                })
            elif kind == "tree":
                self._json(200, self._tree(repo, sub.strip("/"), query.get("recursive", ["false"])[0].lower()
                                           in ("true", "1")))
            elif kind == "paths-info":
                wanted = self._paths_info_request(body)
                entries = [f.entry() for p, f in repo.files.items() if p in wanted]
                entries += [{"type": "directory", "oid": "0" * 40, "path": d} for d in repo.folders() if d in wanted]
                self._json(200, entries)
            else:
                self._error(404, "EntryNotFound", f"unknown API path {tail}")

        @staticmethod
        def _sibling(f: HubFile, blobs: bool) -> dict[str, object]:
            if not blobs:
                return {"rfilename": f.path}
            item: dict[str, object] = {"rfilename": f.path, "size": f.size, "blobId": f.oid}
            if f.lfs:
                item["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": 134}
            return item

        def _paths_info_request(self, body: bytes) -> set[str]:
            text = body.decode(errors="replace")
            if self.headers.get("Content-Type", "").startswith("application/json"):
                data = json.loads(text or "{}")
                paths = data.get("paths", [])
            else:
                paths = urllib.parse.parse_qs(text).get("paths", [])
            return {str(p).strip("/") for p in (paths if isinstance(paths, list) else [paths])}

        def _tree(self, repo: FakeRepo, under: str, recursive: bool) -> list[dict[str, object]]:
            prefix = f"{under}/" if under else ""
            out: list[dict[str, object]] = []
            for folder in sorted(repo.folders()):
                if folder.startswith(prefix) and (recursive or "/" not in folder[len(prefix):]):
                    out.append({"type": "directory", "oid": "0" * 40, "path": folder})
            for path, f in repo.files.items():
                if path.startswith(prefix) and (recursive or "/" not in path[len(prefix):]):
                    out.append(f.entry())
            return out

        def _resolve(self, raw_path: str, head: bool) -> None:
            # /<repo>/resolve/<rev>/<file>: the revision is one (percent-encoded) path segment.
            repo_part, marker, after = raw_path.lstrip("/").partition("/resolve/")
            repo = hub.repos.get(urllib.parse.unquote(repo_part)) if marker else None
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found", head=head)
                return
            rev_raw, _, file_raw = after.partition("/")
            revision, filename = urllib.parse.unquote(rev_raw), urllib.parse.unquote(file_raw)
            if repo.token is not None:
                auth = self.headers.get("Authorization")
                if auth is None:
                    self._error(401, "GatedRepo", f"Access to model {repo.repo_id} is restricted. You must have "
                                "access to it and be authenticated to access it. Please log in.", head=head)
                    return
                if auth != f"Bearer {repo.token}":
                    self._error(401, "", "Invalid credentials in Authorization header", head=head)
                    return
            commit = repo.commit_for(revision)
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
                return
            f = repo.files.get(filename)
            if f is None:
                self._error(404, "EntryNotFound", f"Entry not found: {filename}", head=head,
                            headers={"X-Repo-Commit": commit})
                return
            if f.lfs:
                self._reply(302, headers={
                    "Location": hub.lfs_url(f.sha256), "X-Repo-Commit": commit,
                    "X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size),
                    "ETag": f'W/"{_git_blob_id(f.sha256.encode())}"',
                }, head=head)
                return
            self._send_file(f, {"ETag": f'"{f.oid}"', "X-Repo-Commit": commit}, head)

        def _storage(self, path: str, head: bool) -> None:
            parts = path.strip("/").split("/")
            f = hub.blob_by_sha256(parts[1], parts[2]) if len(parts) == 3 and parts[0] == "lfs" else None
            if f is None:
                self._reply(403, b"AccessDenied", head=head)
                return
            self._send_file(f, {"ETag": f'"{f.sha256}"'}, head)

    return Handler
