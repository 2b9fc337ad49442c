"""The README's Layout block: the pipeline's folders in import order, each file with the first line of
its own docstring (Python) or header comment (shell, templates, data), so the drawing cannot drift
from the code it describes."""

from __future__ import annotations

import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What the project's top level holds (the design card's shape, and what grew around it).
TOP: tuple[tuple[str, str], ...] = (
    ("Pulumi.yaml", "the project; its `config:` block declares every setting (generated)"),
    ("Pulumi.<stack>.yaml", "local (this machine, no account), dev (AWS), shared-gpu (an existing host, GPU 1)"),
    ("__main__.py", "the stack: read config -> one VllmEndpoint -> outputs"),
    ("infra/, components/", "the pipeline below; installed as vllm_endpoint.infra and .components"),
    ("vllm_endpoint/", "the package's top: `from vllm_endpoint import VllmEndpoint, VllmEndpointArgs`"),
    ("provider/", "PulumiPlugin.yaml: the component for TypeScript, Go, C#, Java and YAML programs"),
    ("examples/", "aws-dev, aws-prod, existing-host, two-endpoints, consumer (each built by a test)"),
    ("policy/", "the pulumi-policy pack `deploy.sh` runs with every `pulumi up`"),
    ("tests/", "unit/ mirrors this layout (pure, mocks, policy); real/ runs real parts"),
    ("scripts/", "the README's two commands (deploy.sh, test.sh), setup.sh, and wake.sh (starts a stopped endpoint)"),
    ("tools/", "gen_docs.py writes and checks every generated file; the vLLM flag-table check"),
    ("bench/, docs/", "benchmarks that print figures (their runs in bench/results/); generated pages and pictures"),
)
# The pipeline, in the order the import-direction test (tests/unit/test_import_direction.py) enforces:
# a folder imports only itself and the folders above it.
FOLDERS: tuple[tuple[str, str], ...] = (
    ("infra/catalog", "1. facts: names, GPUs, instance types, models, vLLM flags, security floor"),
    ("infra/catalog/data", "   the facts as data files, each with its sources and date"),
    ("infra/settings", "2. settings: pydantic models, validated once; reading Pulumi config"),
    ("infra/plan", "3. plan and checks: settings + facts -> DeploymentPlan"),
    ("infra/render", "4. pure renderers: plan -> docker run, pulumi-docker args, cloud-init, nginx, scripts"),
    ("infra/host", "   the files that run on the VM, as real files"),
    ("components", "5. thin ComponentResources that only wire resources -> outputs"),
    ("vllm_endpoint", "the package: public API, the component package's provider"),
)
SKIP = {"__init__.py"}


WIDTH = 88


def _first_sentence(paragraph: str) -> str:
    text = " ".join(paragraph.split())
    end = text.find(". ")
    sentence = text if end < 0 else text[: end + 1]
    return sentence if len(sentence) <= WIDTH else sentence[: WIDTH - 3].rstrip() + "..."


def _python_summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text()))
    return _first_sentence(doc.split("\n\n")[0]) if doc else ""


def _comment_summary(path: Path) -> str:
    paragraph: list[str] = []
    for line in path.read_text().splitlines():
        text = line.strip()
        if text.startswith("#!") or (not text and not paragraph):
            continue
        if not text.startswith("#") or text == "#":
            break
        paragraph.append(text.lstrip("#").strip())
    return _first_sentence(" ".join(paragraph))


def _summary(path: Path) -> str:
    if path.suffix == ".py":
        return _python_summary(path)
    if path.suffix == ".json":
        return _first_sentence(str(json.loads(path.read_text()).get("about", "")))
    return _comment_summary(path)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name not in SKIP and not p.name.startswith("."))


def render() -> str:
    lines = ["```"]
    lines += [f"{name:<30}{role}" for name, role in TOP]
    lines.append("")
    for folder, role in FOLDERS:
        lines.append(f"{folder + '/':<30}{role}")
        for path in _files(ROOT / folder):
            summary = _summary(path)
            lines.append(f"  {path.name:<30}{summary}".rstrip())
    lines.append("```")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render())
