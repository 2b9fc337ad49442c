"""Local model folders and custom image build contexts: content digests, upload manifests and their vLLM
base."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20
# `FROM [--platform=...] vllm/vllm-openai:v0.32.0[@sha256:...] [AS name]`
_FROM = re.compile(
    r"^\s*FROM\s+(?:--platform=\S+\s+)?(?P<image>[^\s@:]+)(?::(?P<tag>[^\s@]+))?(?:@(?P<digest>\S+))?"
    r"(?:\s+AS\s+\S+)?\s*$",
    re.IGNORECASE | re.MULTILINE,
)


@dataclass(frozen=True)
class ManifestEntry:
    path: str  # relative, POSIX
    size: int
    sha256: str


@dataclass(frozen=True)
class FolderContents:
    """What an upload must reproduce on the host, file by file, and the digest that names it there."""

    digest: str
    files: tuple[ManifestEntry, ...]

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)

    def manifest(self) -> str:
        """One `<size>\t<sha256>\t<path>` line per file: what infra/host/verify-model.sh reads."""
        return "".join(f"{e.size}\t{e.sha256}\t{e.path}\n" for e in self.files)


def folder_contents(folder: Path) -> FolderContents:
    """Every file's size and sha256, and a digest over every relative path and its bytes (it changes
    exactly when the content changes), in one read of the folder. Dot files and folders (.git, .cache,
    editor files) are not part of the model. ValueError for a name the manifest cannot carry."""
    digest = hashlib.sha256()
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative.startswith(".") or "/." in relative:
            continue
        if any(c in relative for c in "\t\n\r"):
            raise ValueError(f"{relative!r}: a file name with a tab or line break cannot be uploaded; rename it")
        file_hash = hashlib.sha256()
        digest.update(relative.encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                file_hash.update(chunk)
        digest.update(b"\0")
        files.append(ManifestEntry(relative, path.stat().st_size, file_hash.hexdigest()))
    return FolderContents(digest.hexdigest(), tuple(files))


def folder_digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes: changes exactly when the content changes."""
    return folder_contents(folder).digest


def dockerfile_base(dockerfile_text: str) -> tuple[str, str | None]:
    """(image, tag) of the final stage's FROM line; ValueError when there is none."""
    matches = list(_FROM.finditer(dockerfile_text))
    if not matches:
        raise ValueError("has no FROM line")
    last = matches[-1]
    return last.group("image"), last.group("tag")
