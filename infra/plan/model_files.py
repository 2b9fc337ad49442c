"""Local model folders and custom image build contexts: content digests and their vLLM base."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_CHUNK = 1 << 20
# `FROM [--platform=...] vllm/vllm-openai:v0.32.0[@sha256:...] [AS name]`
_FROM = re.compile(
    r"^\s*FROM\s+(?:--platform=\S+\s+)?(?P<image>[^\s@:]+)(?::(?P<tag>[^\s@]+))?(?:@(?P<digest>\S+))?"
    r"(?:\s+AS\s+\S+)?\s*$",
    re.IGNORECASE | re.MULTILINE,
)


def folder_digest(folder: Path) -> str:
    """sha256 over every file's relative path and bytes: changes exactly when the content changes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative.startswith(".") or "/." in relative:
            continue  # .git, .cache and editor files are not part of the model
        digest.update(relative.encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def dockerfile_base(dockerfile_text: str) -> tuple[str, str | None]:
    """(image, tag) of the final stage's FROM line; ValueError when there is none."""
    matches = list(_FROM.finditer(dockerfile_text))
    if not matches:
        raise ValueError("has no FROM line")
    last = matches[-1]
    return last.group("image"), last.group("tag")
