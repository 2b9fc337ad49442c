"""The pipeline's one import direction, read from the source: settings and catalog -> plan -> render ->
components. A module may import its own layer and the layers before it, never a later one, and the
pure layers never import Pulumi (except the one settings module that reads Pulumi config)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "vllm_endpoint"
# Each layer, in pipeline order; a module of layer i may import layers 0..i.
LAYERS = ("infra.catalog", "infra.settings", "infra.plan", "infra.render", "components")
PULUMI_ALLOWED = {"infra.settings.pulumi_config"}
HOST_FILES = ROOT / "infra" / "host"
SOURCE_DIRS = {"infra": ROOT / "infra", "components": ROOT / "components"}


def _modules() -> dict[str, Path]:
    found = {}
    for top, folder in SOURCE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            if HOST_FILES in path.parents:
                continue  # files that run on the VM, not modules of the package
            parts = (top, *path.relative_to(folder).with_suffix("").parts)
            found[".".join(p for p in parts if p != "__init__")] = path
    return found


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _layer(module: str) -> int | None:
    for index, layer in enumerate(LAYERS):
        if module == layer or module.startswith(layer + "."):
            return index
    return None


MODULES = _modules()


def test_every_module_belongs_to_a_layer() -> None:
    strays = [m for m in MODULES if m not in {"infra", "components"} and _layer(m) is None]
    assert not strays, f"modules outside the pipeline's layers {LAYERS}: {strays}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_pipeline(module: str) -> None:
    own = _layer(module)
    if own is None:
        return
    for name in _imports(MODULES[module]):
        top = name.split(".", 1)[0]
        assert top not in {"infra", "components"}, (
            f"{module} imports {name}: import it as {PACKAGE}.{name} (the installed package has no top-level {top})"
        )
        if top == "pulumi" or top.startswith("pulumi_"):
            assert own == LAYERS.index("components") or module in PULUMI_ALLOWED, (
                f"{module} (layer {LAYERS[own]}) imports {name}: only components wire Pulumi resources"
            )
        if top != PACKAGE:
            continue
        target = _layer(name.removeprefix(PACKAGE + "."))
        assert target is not None and target <= own, (
            f"{module} (layer {LAYERS[own]}) imports {name}, a later layer: the pipeline is {' -> '.join(LAYERS)}"
        )


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    # The reader must find imports inside functions too, where a shortcut would hide.
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from vllm_endpoint.components.vllm_server import VllmServer\n")
    assert "vllm_endpoint.components.vllm_server" in _imports(sample)
    assert _layer("components.vllm_server") == LAYERS.index("components") > LAYERS.index("infra.plan")
