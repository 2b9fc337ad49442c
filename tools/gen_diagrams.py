"""The README's two pictures, generated (tools/gen_docs.py writes and checks them like every generated doc).

1. The architecture diagram (docs/architecture.md, and the README's `architecture` block): the VllmEndpoint
   component run under the unit tests' Pulumi mocks for the shipped `dev` (target `aws`) and `shared-gpu`
   (target `existing-host`) stacks. A recording mock monitor keeps what the engine would receive for every
   resource (type, name, parent, provider, the dependencies of each input), and that graph is drawn as a
   Mermaid flowchart: a subgraph per ComponentResource, resources of one type and role collapsed into one
   node with a count, edges named by the input that makes them (SSH for a connection or an ssh:// Docker
   host, the bind mount of the cache, the API port the app calls). A resource added to a component is a
   new node, so `--check` fails until the docs are regenerated.
2. The deploy timeline (docs/deploy-timeline.svg): a Gantt-style SVG, written as text, of the newest
   recorded run of bench/deploy_path.py in bench/results/ (its first deploy, stage by stage, from the
   readiness gate's timeline and vLLM's own log marks) next to the GPU start-up figures in
   bench/results/gpu-starts.json.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import sys
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pulumi  # noqa: E402
import yaml  # noqa: E402
from pulumi.runtime.mocks import MockMonitor  # noqa: E402

from tests.unit.pulumi_mocks import Mocks  # noqa: E402
from vllm_endpoint.infra.catalog.names import CONTAINER_CACHE_ROOT, PROJECT, VLLM_CONTAINER_PORT  # noqa: E402

# ----------------------------------------------------------------------------------------------
# 1. The resource graph of a stack, from the code under mocks.

# The shipped stacks the diagram shows, and what a user adds with `pulumi config set` before the first
# deploy (the stack files leave these to the user; sample public addresses and made-up keys).
STACKS = {"aws": "Pulumi.dev.yaml", "existing-host": "Pulumi.shared-gpu.yaml"}
USER_SETS = {
    # hfToken (a gated model) adds what the instance reads it with at boot: an SSM parameter and a role.
    "aws": {"sshAllowedCidrs": '["93.184.215.14/32"]', "apiAllowedCidrs": '["93.184.216.0/24"]',
            "hfToken": "hf_DiagramSampleToken"},
    "existing-host": {
        "sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nDIAGRAM\n-----END OPENSSH PRIVATE KEY-----\n"},
}
ENDPOINT_NAME = "vllm"
STACK_TYPE = "pulumi:pulumi:Stack"
_SILENT = logging.getLogger("gen_diagrams.mocks")
_SILENT.addHandler(logging.NullHandler())
_SILENT.propagate = False


@dataclass
class Resource:
    urn: str
    type: str
    name: str
    parent: str | None  # urn; None for the stack itself
    custom: bool
    provider: str | None  # urn of the explicit provider
    property_deps: dict[str, list[str]]  # input name -> urns of the resources its value came from
    dependencies: list[str]  # every urn the engine waits for (inputs and depends_on)
    inputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class StackGraph:
    target: str
    resources: dict[str, Resource]  # by urn, sorted
    outputs: dict[str, list[str]]  # the endpoint's output -> urns of the resources its value came from
    endpoint_url: str


class RecordingMonitor(MockMonitor):
    """The mock monitor, keeping what the engine would receive: parents, providers and dependencies."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.registered: list[Resource] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        provider = request.provider.rsplit("::", 1)[0] if request.provider else None
        self.registered.append(Resource(
            urn=response.urn, type=request.type, name=request.name, parent=request.parent or None,
            custom=bool(request.custom), provider=provider,
            property_deps={key: sorted(deps.urns) for key, deps in request.propertyDependencies.items()},
            dependencies=sorted(request.dependencies)))
        return response


def stack_config(target: str, root: Path = ROOT) -> dict[str, str]:
    """The shipped stack file's settings as Pulumi hands them to the program (text values), plus USER_SETS."""
    values = yaml.safe_load((root / STACKS[target]).read_text(encoding="utf-8"))["config"]
    raw = {}
    for key, value in values.items():
        namespace, _, name = key.partition(":")
        if namespace == PROJECT:
            raw[name] = value if isinstance(value, str) else json.dumps(value)
    return {**raw, **USER_SETS[target]}


async def _output_resources(value: Any) -> list[str]:
    if not isinstance(value, pulumi.Output):
        return []
    return sorted({await r.urn.future() for r in await value.resources() if r.urn is not None})  # type: ignore[misc]


def collect(raw: Mapping[str, str]) -> StackGraph:
    """VllmEndpoint run under mocks with the stack config `raw`: every resource it registers."""
    # Imported here: the program's modules are only needed for this step, and load the catalog data.
    from vllm_endpoint.components.vllm_endpoint import VllmEndpoint
    from vllm_endpoint.components.vllm_endpoint_args import VllmEndpointArgs
    from vllm_endpoint.infra.settings.endpoint_args import settings_kwargs
    from vllm_endpoint.infra.settings.models import load_stack_config

    mocks = Mocks()
    monitor = RecordingMonitor(mocks)
    # The plan's warnings (pulumi.log) are the program's business, not the generator's output.
    pulumi.runtime.set_mocks(mocks, preview=False, monitor=monitor, logger=_SILENT)
    config = load_stack_config(raw)
    settings: Any = settings_kwargs(config)
    outputs: dict[str, list[str]] = {}
    url: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as ssh_dir:

        @pulumi.runtime.test
        def run() -> Any:
            endpoint = VllmEndpoint(ENDPOINT_NAME, VllmEndpointArgs(**settings, ssh_dir=ssh_dir))
            names = [name for name, value in vars(endpoint).items()
                     if isinstance(value, pulumi.Output) and name != "urn"]

            async def wait() -> None:
                url["endpoint_url"] = str(await endpoint.endpoint_url.future())
                for name in names:
                    outputs[name] = await _output_resources(getattr(endpoint, name))

            return asyncio.ensure_future(wait())

        run()
    inputs = {(r.typ, r.name): r.inputs for r in mocks.resources}
    resources = {}
    # The stack resource is left out (only the first mock run of a process registers one): the
    # endpoint's own parent becomes None.
    # By urn (component types, then name): the order resources register in depends on when their inputs
    # resolve, and the generated text must not.
    for resource in sorted(monitor.registered, key=lambda r: r.urn):
        if resource.type == STACK_TYPE:
            continue
        resource.inputs = inputs.get((resource.type, resource.name), {})
        resources[resource.urn] = resource
    for resource in resources.values():
        if resource.parent not in resources:
            resource.parent = None
    return StackGraph(config.target, resources, {k: outputs[k] for k in sorted(outputs)}, url["endpoint_url"])


@functools.cache
def stack_graph(target: str) -> StackGraph:
    return collect(stack_config(target))


# ----------------------------------------------------------------------------------------------
# The graph drawn: nodes (collapsed), edges (named), subgraphs (components).

@dataclass
class Node:
    id: str
    label: str
    parent: str | None  # the component's urn
    members: list[str]  # urns


def short_type(typ: str) -> str:
    """`aws:ec2/instance:Instance` -> `ec2.Instance`; `pulumi:providers:docker` -> `docker provider`."""
    if typ.startswith("pulumi:providers:"):
        return f"{typ.rsplit(':', 1)[1]} provider"
    package, module, name = typ.split(":")
    module = module.split("/")[0]
    return f"{package if module == 'index' else module}.{name}"


def _own_name(resource: Resource, parent: Resource | None) -> str:
    """The name without the parent's prefix (`vllm-host-eip` under `vllm-host` -> `eip`)."""
    if parent is not None and resource.name.startswith(parent.name + "-"):
        return resource.name[len(parent.name) + 1:]
    return resource.name


def _role(resource: Resource) -> str:
    """What distinguishes resources of one type under one parent that do the same job: their dependencies'
    types. Ingress rules of one group collapse; the readiness gate and the proxy-files command do not."""
    return ",".join(sorted({dep.split("::")[-2].split("$")[-1] for dep in resource.dependencies}))


def build_nodes(graph: StackGraph) -> tuple[dict[str, Node], dict[str, str]]:
    """Nodes (by id) and the node id of every urn drawn. Resources of one type and role under one parent
    are one node with a count."""
    res = graph.resources
    groups: dict[tuple[str | None, str, str], list[Resource]] = {}
    for r in res.values():
        if not r.custom:
            continue
        groups.setdefault((r.parent, r.type, _role(r)), []).append(r)
    nodes: dict[str, Node] = {}
    of_urn: dict[str, str] = {}
    ordered = sorted(groups.items(), key=lambda item: (_depth(res, item[0][0]), item[0][0] or "", item[0][1],
                                                       sorted(r.name for r in item[1])))
    for index, ((parent_urn, typ, _), members) in enumerate(ordered):
        parent = res.get(parent_urn) if parent_urn else None
        names = sorted(_own_name(m, parent) for m in members)
        title = short_type(typ) if len(members) == 1 else f"{len(members)} × {short_type(typ)}"
        shown = ", ".join(names) if len(names) <= 3 else ", ".join(names[:2]) + ", …"
        node = Node(f"r{index}", f"<b>{title}</b><br/>{shown}", parent_urn, [m.urn for m in members])
        nodes[node.id] = node
        for m in members:
            of_urn[m.urn] = node.id
    return nodes, of_urn


def _depth(res: Mapping[str, Resource], urn: str | None) -> int:
    depth = 0
    while urn and urn in res:
        urn = res[urn].parent
        depth += 1
    return depth


# Inputs that are a network connection, named for the reader: the address is where SSH goes, a key is how.
KEY_TYPES = ("tls:index/privateKey:PrivateKey",)
CONNECTION_LABELS = ("SSH :", "Docker API over SSH")


def _edge_label(resource: Resource, prop: str, source_type: str = "") -> str:
    value = resource.inputs.get(prop)
    if prop == "connection" and isinstance(value, dict):
        return "SSH key" if source_type in KEY_TYPES else f"SSH :{int(value.get('port', 22))}"
    if prop == "host" and isinstance(value, str) and value.startswith("ssh://"):
        return "SSH key" if source_type in KEY_TYPES else "Docker API over SSH"
    return prop


def dependency_edges(graph: StackGraph, of_urn: Mapping[str, str]) -> dict[tuple[str, str], set[str]]:
    """(from node, to node) -> labels, for every dependency between drawn resources, reduced: an edge
    implied by a longer path is left out (every Docker resource waits for the host; the path says so)."""
    labels: dict[tuple[str, str], set[str]] = {}
    for r in graph.resources.values():
        if r.urn not in of_urn:
            continue
        target = of_urn[r.urn]
        named = {urn for urns in r.property_deps.values() for urn in urns}
        for prop, urns in r.property_deps.items():
            for urn in urns:
                if urn in of_urn and of_urn[urn] != target:
                    label = _edge_label(r, prop, graph.resources[urn].type)
                    labels.setdefault((of_urn[urn], target), set()).add(label)
        for urn in r.dependencies:
            if urn not in named and urn in of_urn and of_urn[urn] != target:
                labels.setdefault((of_urn[urn], target), set()).add("depends on")
        if r.provider is not None and r.provider in of_urn and of_urn[r.provider] != target:
            labels.setdefault((of_urn[r.provider], target), set()).add("provider")
    return _reduce(labels)


def _reduce(edges: dict[tuple[str, str], set[str]]) -> dict[tuple[str, str], set[str]]:
    """Transitive reduction, keeping edges that say how two things connect (SSH), not only that they wait."""
    after: dict[str, set[str]] = {}
    for a, b in edges:
        after.setdefault(a, set()).add(b)

    def reachable_without(a: str, b: str) -> bool:
        seen, stack = set(), [n for n in after.get(a, ()) if n != b]
        while stack:
            n = stack.pop()
            if n == b:
                return True
            if n not in seen:
                seen.add(n)
                stack.extend(after.get(n, ()))
        return False

    kept = {}
    for (a, b), labels in edges.items():
        meaningful = {label for label in labels if label.startswith(CONNECTION_LABELS)}
        if meaningful or not reachable_without(a, b):
            kept[(a, b)] = meaningful or labels
    return kept


def _quote(text: str) -> str:
    return text.replace('"', "#quot;")


def mermaid(graph: StackGraph) -> str:
    """The stack's resources as a Mermaid flowchart."""
    res = graph.resources
    nodes, of_urn = build_nodes(graph)
    edges = dependency_edges(graph, of_urn)
    lines = ["flowchart LR"]
    # Outside the stack: who calls it, and (existing-host) the server it does not create.
    lines.append('  app(["your app<br/>OpenAI client"])')
    external_host = not any(r.type.startswith("aws:") for r in res.values())
    if external_host:
        address = next(r.inputs["host"] for r in res.values() if r.type == "pulumi:providers:docker")
        lines.append(f'  host[("your Docker host<br/>{_quote(address)}")]')

    def emit(component: str | None, indent: str) -> None:
        for node in nodes.values():
            if node.parent == component:
                lines.append(f'{indent}{node.id}["{_quote(node.label)}"]')
        children = sorted((r for r in res.values() if r.parent == component and not r.custom),
                          key=lambda r: r.name)
        for child in children:
            lines.append(f'{indent}subgraph {_subgraph_id(child)}["{short_type(child.type)} {child.name}"]')
            emit(child.urn, indent + "  ")
            lines.append(f"{indent}end")

    emit(None, "  ")
    endpoint = next(r for r in res.values() if r.parent is None and not r.custom)
    lines.append(f'  outputs[/"outputs of {endpoint.name}<br/>{_quote(", ".join(graph.outputs))}"/]')
    for (a, b), labels in sorted(edges.items(), key=lambda item: (int(item[0][0][1:]), int(item[0][1][1:]))):
        lines.append(f'  {a} -->|"{_quote(", ".join(sorted(labels)))}"| {b}')
    lines += _host_edges(graph, of_urn, external_host)
    if external_host:
        for node in nodes.values():
            if any(res[m].type == "pulumi:providers:docker" or "connection" in res[m].inputs for m in node.members):
                labels = {_edge_label(res[m], "host" if res[m].type.startswith("pulumi:providers:") else "connection")
                          for m in node.members}
                lines.append(f'  host ---|"{_quote(", ".join(sorted(labels)))}"| {node.id}')
    for node_id in sorted({of_urn[u] for urns in graph.outputs.values() for u in urns if u in of_urn},
                          key=lambda n: int(n[1:])):
        names = [name for name, urns in graph.outputs.items() if any(of_urn.get(u) == node_id for u in urns)]
        lines.append(f'  {node_id} -.->|"{_quote(", ".join(names))}"| outputs')
    lines.append("  outputs -.-> app")
    return "\n".join(lines)


def _host_edges(graph: StackGraph, of_urn: Mapping[str, str], external_host: bool) -> list[str]:
    """What no input says but the host does: the cache on disk, bind-mounted into the vLLM container, the
    proxy's published port, which the app calls, and the proxy's upstream."""
    scheme, port = _url_scheme_port(graph.endpoint_url)
    lines: list[str] = []
    front = cache_user = ""
    for r in graph.resources.values():
        if r.type != "docker:index/container:Container" or r.urn not in of_urn:
            continue
        for mount in r.inputs.get("mounts", []):
            if mount.get("type") == "bind" and str(mount.get("target", "")).startswith(CONTAINER_CACHE_ROOT):
                source = "host" if external_host else _cache_node(graph, of_urn)
                lines.append(f'  {source} -.->|"bind mount {_quote(mount["source"])}<br/>'
                             f'→ {_quote(mount["target"])}"| {of_urn[r.urn]}')
                cache_user = of_urn[r.urn]
        for published in r.inputs.get("ports", []):
            if published.get("external") == port:
                lines.append(f'  app -->|":{port} {scheme.upper()}"| {of_urn[r.urn]}')
                front = of_urn[r.urn]
    if not front or not cache_user:
        raise ValueError(f"no container publishes port {port} or mounts the cache at {CONTAINER_CACHE_ROOT}: "
                         "the diagram's edges to the app and the cache need both")
    # The proxy reaches vLLM by name on their network (the proxy's nginx.conf).
    lines.append(f'  {front} -.->|"proxy_pass :{VLLM_CONTAINER_PORT}"| {cache_user}')
    return lines


def _subgraph_id(resource: Resource) -> str:
    return "c_" + re.sub(r"\W", "_", resource.name)


def _cache_node(graph: StackGraph, of_urn: Mapping[str, str]) -> str:
    """The node that puts the cache volume on the host: its attachment."""
    for r in graph.resources.values():
        if r.type == "aws:ec2/volumeAttachment:VolumeAttachment":
            return of_urn[r.urn]
    raise ValueError("target aws without a cache volume attachment")


def _url_scheme_port(url: str) -> tuple[str, int]:
    match = re.match(r"(\w+)://.*:(\d+)/", url)
    if match is None:
        raise ValueError(f"endpoint_url {url!r} has no scheme and port")
    return match[1], int(match[2])


def resource_table(graph: StackGraph) -> str:
    res = graph.resources
    lines = ["| resource type | name | parent | waits for |", "|---|---|---|---|"]
    for r in res.values():
        parent = f"`{res[r.parent].name}`" if r.parent else "(the stack)"
        waits = ", ".join(f"`{res[u].name}`" for u in r.dependencies if u in res) or "—"
        lines.append(f"| `{r.type}` | `{r.name}` | {parent} | {waits} |")
    return "\n".join(lines)


DIAGRAM_INTRO = {
    "aws": "Target `aws` (the shipped `dev` stack, with `hfToken` set as for a gated model): the GPU host, the "
           "Docker engine on it reached over SSH, the containers, the readiness gate, the outputs your app reads.",
    "existing-host": "Target `existing-host` (the shipped `shared-gpu` stack): the same server on a Docker "
                     "host you already have; no AWS resources.",
}
GENERATED_BY = ("Generated by `tools/gen_diagrams.py` (run `.venv/bin/python tools/gen_docs.py`) from the "
                "resources `VllmEndpoint` registers under the unit tests' Pulumi mocks; CI checks it is current.")


def readme_block() -> str:
    return "\n".join(["```mermaid", mermaid(stack_graph("aws")), "```"])


def architecture_markdown() -> str:
    parts = ["# Architecture: what a stack creates", "", GENERATED_BY, "",
             "Boxes are components (ComponentResources), nodes are resources (one node with a count for "
             "several of one kind), solid arrows are inputs that wait for another resource, dotted ones what "
             "the host and the outputs connect.", ""]
    for target in STACKS:
        graph = stack_graph(target)
        parts += [f"## Target `{target}`", "", DIAGRAM_INTRO[target], "", "```mermaid", mermaid(graph), "```", "",
                  "<details><summary>Every resource</summary>", "", resource_table(graph), "", "</details>", ""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------
# 2. The deploy timeline, from the recorded bench results.

RESULTS = ROOT / "bench" / "results"
GPU_STARTS = RESULTS / "gpu-starts.json"


def newest_result(results: Path = RESULTS) -> Path:
    found = sorted(results.glob("deploy-path-*.json"))
    if not found:
        raise FileNotFoundError(f"no deploy-path-*.json in {results}: run bench/deploy_path.py")
    return found[-1]  # the names start with the date


@dataclass(frozen=True)
class Bar:
    label: str
    start_s: float
    end_s: float
    kind: str  # a key of COLOURS


@dataclass(frozen=True)
class Panel:
    title: str
    note: str
    bars: tuple[Bar, ...]


# vLLM's start between its log marks (bench/deploy_path.py LOG_MARKS): each bar ends at a mark and is named
# for what vLLM did before it.
MARK_STAGES = {
    "engine_config": "import vLLM, parse the arguments",
    "weights_loading": "start the engine core",
    "weights_loaded": "load the weights",
    "compile_warmup": "prepare the model runner",
    "warmup_done": "compile and warm up",
    "kv_cache_sized": "profile, size the KV cache",
    "api_server_up": "start the API server",
}
# The host's stages in the readiness gate's timeline, each bar ending at one (infra/host/*.sh record them).
HOST_STAGES = {
    "instance_booted": "boot the instance",
    "cache_volume_mounted": "prepare the cache volume",
    "docker_ready": "start Docker",
    "image_present": "pull the vLLM image",
    "model_present": "download the model",
}


def first_deploy_bars(result: Mapping[str, Any]) -> tuple[Bar, ...]:
    """The bench's first deploy, stage by stage, in seconds from its start: the host's stages from the
    readiness gate's timeline (the cache volume's preparation starting `volume_script_s` before it was
    mounted), the containers' creation, vLLM's start from its log marks, and the gate's probe."""
    first = result["first_deploy"]
    stages = {line.split()[0]: float(line.split()[1]) for line in first["timeline"]}
    deploy = first["deploy"]
    started = stages["container_started"]
    bars: list[Bar] = []
    previous: float | None = None
    for stage, at in sorted(stages.items(), key=lambda item: item[1]):
        if stage not in HOST_STAGES:
            continue
        if previous is None:
            previous = at - first["volume_script_s"] if stage == "cache_volume_mounted" else at
        if at > previous or stage == "cache_volume_mounted":
            bars.append(Bar(HOST_STAGES[stage], previous, at, "host"))
        previous = at
    created = started - (deploy["create_to_ready_s"] - deploy["start_to_ready_s"])
    bars.append(Bar("create the containers", previous if previous is not None else created, started, "docker"))
    previous = started
    for mark, at in sorted(deploy["log_marks_s"].items(), key=lambda item: item[1]):
        bars.append(Bar(MARK_STAGES.get(mark, mark.replace("_", " ")), previous, started + at, "vllm"))
        previous = started + at
    bars.append(Bar("gate: /v1/models answers 200", previous, stages["server_ready"], "gate"))
    origin = min(b.start_s for b in bars)
    return tuple(Bar(b.label, round(b.start_s - origin, 2), round(b.end_s - origin, 2), b.kind) for b in bars)


def start_bars(result: Mapping[str, Any], gpu: Mapping[str, Any]) -> tuple[Bar, ...]:
    """vLLM's start with empty and with kept caches: the bench's medians here, the recorded GPU runs."""
    here = f"{result['machine']['nproc']} vCPUs (CPU build)"
    bars = [Bar(f"{here}, empty caches", 0.0, result["cold_warm"]["cold_median_s"], "cold"),
            Bar(f"{here}, caches kept", 0.0, result["cold_warm"]["warm_median_s"], "warm")]
    for run in gpu["runs"]:
        bars += [Bar(f"{run['gpu']}, empty caches", 0.0, run["empty_cache_s"], "cold"),
                 Bar(f"{run['gpu']}, caches kept", 0.0, run["kept_cache_s"], "warm")]
    return tuple(bars)


def timeline_panels(result: Mapping[str, Any], gpu: Mapping[str, Any]) -> tuple[Panel, Panel]:
    m = result["machine"]
    return (
        Panel("A first deploy, stage by stage (seconds)",
              f"bench/deploy_path.py on the real-parts test host, {m['date']}: {m['nproc']} vCPUs ({m['cpu']}, "
              f"load average {m['load_avg_at_start'][0]:g} at start), vLLM {result['vllm_version']} CPU build, a "
              "tiny model from a local Hub stand-in; image and model prefetched at boot",
              first_deploy_bars(result)),
        Panel("vLLM start -> ready, empty vs kept caches (seconds)",
              "here: container create -> /v1/models 200, bench median of "
              f"{result['repeat']}; " + "; ".join(f"{r['gpu']}: {r['what']}, vLLM {r['vllm']}, {r['date']}"
                                                   for r in gpu["runs"]),
              start_bars(result, gpu)),
    )


COLOURS = {"host": "#4c78a8", "docker": "#72b7b2", "vllm": "#f58518", "gate": "#54a24b",
           "cold": "#e45756", "warm": "#54a24b"}
WIDTH, LABEL_W, RIGHT_W, ROW_H, BAR_H, TITLE_H, NOTE_H, AXIS_H = 960, 260, 60, 22, 14, 30, 14, 30
NOTE_CHARS = 150  # 11 px sans-serif: about 6 px a character across the chart's width


def _ticks(maximum: float) -> list[float]:
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000, 2000) if maximum / s <= 10)
    return [float(i * step) for i in range(int(maximum // step) + 1)]


def bar_geometry(bar: Bar, scale: float) -> tuple[float, float]:
    """(x, width) of a bar: seconds times the panel's pixels per second."""
    return LABEL_W + bar.start_s * scale, max((bar.end_s - bar.start_s) * scale, 1.0)


def svg(panels: Sequence[Panel], caption: str) -> str:
    """Horizontal bars, one seconds scale per panel (its longest bar fills the width), as SVG text."""
    plot_w = WIDTH - LABEL_W - RIGHT_W
    notes = [textwrap.wrap(panel.note, NOTE_CHARS) for panel in panels]
    height = 34 + sum(TITLE_H + NOTE_H * len(note) + len(panel.bars) * ROW_H + AXIS_H
                      for panel, note in zip(panels, notes, strict=True))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>']
    y = 10.0
    for panel, note in zip(panels, notes, strict=True):
        out.append(f'<text x="10" y="{y + 16:.0f}" font-size="14" font-weight="bold">{escape(panel.title)}</text>')
        y += TITLE_H - 8
        for line in note:
            out.append(f'<text x="10" y="{y + 12:.0f}" font-size="11" fill="#555">{escape(line)}</text>')
            y += NOTE_H
        y += 8
        scale = plot_w / max(b.end_s for b in panel.bars)
        top = y
        ticks = _ticks(max(b.end_s for b in panel.bars))
        for tick in ticks:
            x = LABEL_W + tick * scale
            out.append(f'<line x1="{x:.1f}" y1="{top:.0f}" x2="{x:.1f}" y2="{top + len(panel.bars) * ROW_H:.0f}" '
                       'stroke="#e5e5e5"/>')
        for bar in panel.bars:
            x, w = bar_geometry(bar, scale)
            seconds = bar.end_s - bar.start_s
            out.append(f'<text x="{LABEL_W - 8}" y="{y + BAR_H:.0f}" text-anchor="end">{escape(bar.label)}</text>')
            out.append(f'<rect x="{x:.1f}" y="{y + 3:.0f}" width="{w:.1f}" height="{BAR_H}" '
                       f'fill="{COLOURS[bar.kind]}"><title>{escape(bar.label)}: {seconds:.1f} s '
                       f'({bar.start_s:.1f} to {bar.end_s:.1f} s)</title></rect>')
            out.append(f'<text x="{x + w + 4:.1f}" y="{y + BAR_H:.0f}" fill="#333">{seconds:.1f} s</text>')
            y += ROW_H
        for tick in ticks:
            out.append(f'<text x="{LABEL_W + tick * scale:.1f}" y="{y + 14:.0f}" text-anchor="middle" '
                       f'fill="#666">{tick:g}</text>')
        y += AXIS_H
    out.append(f'<text x="10" y="{y + 8:.0f}" font-size="11" fill="#666">{escape(caption)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def timeline_svg(results: Path = RESULTS) -> str:
    path = newest_result(results)
    result = json.loads(path.read_text(encoding="utf-8"))
    gpu = json.loads((results / GPU_STARTS.name).read_text(encoding="utf-8"))
    caption = (f"Generated by tools/gen_diagrams.py from bench/results/{path.name} and "
               f"bench/results/{GPU_STARTS.name} (run .venv/bin/python tools/gen_docs.py).")
    return svg(timeline_panels(result, gpu), caption)


if __name__ == "__main__":
    print(architecture_markdown())
