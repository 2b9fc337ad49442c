"""Generated parts of the README: the settings table, from the config models' own descriptions.

    .venv/bin/python tools/gen_docs.py          # rewrite README.md's generated blocks
    .venv/bin/python tools/gen_docs.py --check  # exit 1 when README.md is out of date (CI runs this)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

from vllm_endpoint.infra.catalog.gpus import INSTANCE_TYPES  # noqa: E402
from vllm_endpoint.infra.plan.deployment import cache_volume  # noqa: E402
from vllm_endpoint.infra.settings import effects  # noqa: E402
from vllm_endpoint.infra.settings.models import (  # noqa: E402
    SECTIONS,
    AwsSettings,
    StackConfig,
    config_keys,
)

README = ROOT / "README.md"

SECTION_TITLES = {
    "model": "Model (re-creates the container)",
    "server": "vLLM server and container (re-creates the container)",
    "aws": "AWS host (target `aws`)",
    "existing_host": "Existing host (target `existing-host`)",
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
    for key in ["target", *config_keys()]:
        lines.append(f"| `{key}` | {effects.effect_text(key)} |")
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


BLOCKS = {"settings": settings_table, "effects": effects_table, "ebs": ebs_table}


def render(readme: str) -> str:
    for name, producer in BLOCKS.items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n)(?:.*?\n)?(<!-- /generated:{name} -->)", re.DOTALL)
        if not pattern.search(readme):
            raise SystemExit(f"README.md has no <!-- generated:{name} --> block")
        readme = pattern.sub(lambda m, p=producer: m.group(1) + p() + "\n" + m.group(2), readme)  # type: ignore[misc]
    return readme


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    current = README.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            print("README.md is out of date: run .venv/bin/python tools/gen_docs.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
