"""Every generated file of the project, written and checked by this one tool.

    .venv/bin/python tools/gen_docs.py          # rewrite every generated file
    .venv/bin/python tools/gen_docs.py --check  # exit 1 naming each stale file (CI runs this)

GENERATORS lists them as (path from the repository root, function from the file's current text to the text
it should have). A file that is generated whole ignores its current text (`whole(render)`); README.md and
Pulumi.yaml keep their hand-written parts around generated blocks. Adding a generated file is one entry.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

from tools import gen_component_args, gen_diagrams, gen_import_sample, gen_layout  # noqa: E402
from vllm_endpoint.infra.catalog import gpus, vllm_flags  # noqa: E402
from vllm_endpoint.infra.catalog.gpus import INSTANCE_TYPES  # noqa: E402
from vllm_endpoint.infra.plan.deployment import cache_volume  # noqa: E402
from vllm_endpoint.infra.settings.effects import effect_text  # noqa: E402
from vllm_endpoint.infra.settings.models import (  # noqa: E402
    SECTIONS,
    AwsSettings,
    StackConfig,
    declared_effects,
)
from vllm_endpoint.infra.settings.project_config import UNSET, declarations  # noqa: E402

COMMAND = ".venv/bin/python tools/gen_docs.py"
Render = Callable[[str], str]


class MissingBlock(ValueError):
    """A file lost the markers of one of its generated blocks."""


def whole(render: Callable[[], str]) -> Render:
    """A file generated whole: its current text does not matter."""
    return lambda _current: render()


def _replace_block(text: str, opening: str, closing: str, body: str) -> str:
    pattern = re.compile(rf"({re.escape(opening)}\n)(?:.*?\n)?({re.escape(closing)})", re.DOTALL)
    if not pattern.search(text):
        raise MissingBlock(f"has no `{opening}` ... `{closing}` block")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


# ----------------------------------------------------------------------------------------------
# README.md: the settings, what changing each does, the cache volume per instance type.

SECTION_TITLES = {
    "stack": "The stack program (not a VllmEndpoint argument)",
    "model": "Model (re-creates the container)",
    "server": "vLLM server and container (re-creates the container)",
    "aws": "AWS host (target `aws`)",
    "fleet": "Fleet on Amazon ECS (target `aws` with `replicas` set: a VllmService)",
    "existing_host": "Existing host (target `existing-host`; the cache and GPU settings also for `local`)",
    "local": "This machine (target `local`)",
    "access": "Network edge and security",
    "secrets": "Secrets (`pulumi config set --secret`)",
}


def _default(model: type[BaseModel], name: str) -> str:
    info = model.model_fields[name]
    if info.default_factory is not None:
        value: Any = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, dict)):
        return f"`{json.dumps(value)}`" if value else "`[]`" if isinstance(value, list) else "`{}`"
    return f"`{value}`"


def settings_table() -> str:
    target = StackConfig.model_fields["target"]
    lines = [
        "| setting | default | what it does |",
        "|---|---|---|",
        f"| `target` | `{target.default}` | {target.description} |",
    ]
    for section, model in SECTIONS.items():
        lines.append(f"| **{SECTION_TITLES[section]}** | | |")
        for name, info in model.model_fields.items():
            key = info.alias or name
            description = (info.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{key}` | {_default(model, name)} | {description} |")
    return "\n".join(lines)


def effects_table() -> str:
    lines = ["| setting | what changing it does to a running stack |", "|---|---|"]
    for key, kinds in declared_effects().items():
        lines.append(f"| `{key}` | {effect_text(kinds)} |")
    return "\n".join(lines)


def ebs_table() -> str:
    """Per instance type: its own EBS bandwidth and the cache volume speed the program picks."""
    lines = [
        "| instance type | GPU | EBS baseline MiB/s | EBS max MiB/s | default cache volume |",
        "|---|---|---|---|---|",
    ]
    for name, it in INSTANCE_TYPES.items():
        if not it.gpu.supported_by_vllm:
            continue
        volume = cache_volume(AwsSettings(instance_type=name), it)
        baseline = "—" if it.ebs_baseline_mib_s is None else f"{it.ebs_baseline_mib_s:.0f}"
        lines.append(f"| {name} | {it.gpu_count}x {it.gpu.name} | {baseline} | {it.ebs_max_mib_s:.0f} | "
                     f"{volume.throughput_mib_s} MiB/s, {volume.iops} IOPS |")
    return "\n".join(lines)


README_BLOCKS: dict[str, Callable[[], str]] = {
    "settings": settings_table, "effects": effects_table, "ebs": ebs_table, "layout": gen_layout.render,
    "import-docker-run": gen_import_sample.render, "architecture": gen_diagrams.readme_block,
}


def readme(current: str) -> str:
    for name, produce in README_BLOCKS.items():
        current = _replace_block(current, f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->", produce())
    return current


# ----------------------------------------------------------------------------------------------
# Pulumi.yaml: every setting declared where Pulumi looks for it (infra/settings/project_config.py says how).

PULUMI_CONFIG_OPEN = "# generated:config"
PULUMI_CONFIG_CLOSE = "# /generated:config"
PULUMI_CONFIG_HEADER = f"""\
# Written by tools/gen_docs.py from infra/settings/models.py (edit the models, then run it). Every setting
# has a default because Pulumi makes a declared key without one required in every stack; {UNSET!r} means
# unset. Settings without a `type` take forms no Pulumi type describes exactly (numbers with a fraction,
# an integer or unset, a list or comma-separated text, a JSON object); the program validates every value
# before anything is created. `secret: true` on an untyped key is not checked by the CLI: the program
# refuses those secrets in plaintext."""


def pulumi_config_block() -> str:
    entries = {key: declaration.entry() for key, declaration in declarations().items()}
    body = yaml.safe_dump({"config": entries}, sort_keys=False, allow_unicode=True, width=110)
    return PULUMI_CONFIG_HEADER + "\n" + body.rstrip("\n")


def pulumi_yaml(current: str) -> str:
    return _replace_block(current, PULUMI_CONFIG_OPEN, PULUMI_CONFIG_CLOSE, pulumi_config_block())


# ----------------------------------------------------------------------------------------------

GENERATORS: list[tuple[str, Render]] = [
    ("README.md", readme),
    ("Pulumi.yaml", pulumi_yaml),
    ("docs/gpu-catalog.md", whole(gpus.render_markdown)),
    ("docs/vllm-flags.md", whole(vllm_flags.render_markdown)),
    ("components/vllm_endpoint_args.py", whole(gen_component_args.render)),
    # The pictures (tools/gen_diagrams.py): the resource graph from a mock run of the component, the deploy
    # timeline from the newest bench result in bench/results/.
    ("docs/architecture.md", whole(gen_diagrams.architecture_markdown)),
    ("docs/deploy-timeline.svg", whole(gen_diagrams.timeline_svg)),
]


def _wanted(root: Path, path: str, render: Render) -> tuple[str, str]:
    file = root / path
    current = file.read_text(encoding="utf-8") if file.exists() else ""
    try:
        return current, render(current)
    except MissingBlock as err:
        raise MissingBlock(f"{path} {err}") from None


def problems(root: Path = ROOT, paths: Iterable[str] | None = None) -> list[str]:
    """One line per generated file (of `paths`, default all) that differs from what its generator writes."""
    selected = {path for path, _ in GENERATORS} if paths is None else set(paths)
    unknown = selected - {path for path, _ in GENERATORS}
    if unknown:
        raise ValueError(f"not generated files: {sorted(unknown)}")
    found = []
    for path, render in GENERATORS:
        if path not in selected:
            continue
        try:
            current, wanted = _wanted(root, path, render)
        except MissingBlock as err:
            found.append(f"{err}: restore the markers, then run {COMMAND}")
            continue
        if current != wanted:
            found.append(f"{path} is out of date: run {COMMAND}")
    return found


def write(root: Path = ROOT) -> list[str]:
    """Rewrite every stale generated file; returns their paths."""
    written = []
    for path, render in GENERATORS:
        current, wanted = _wanted(root, path, render)
        if current != wanted:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(wanted, encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report stale files; exit 1 if there are any")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    if args.check:
        found = problems(args.root)
        for line in found:
            print(line, file=sys.stderr)
        return 1 if found else 0
    try:
        for path in write(args.root):
            print(f"wrote {path}")
    except MissingBlock as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
