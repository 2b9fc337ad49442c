"""tools/gen_diagrams.py: the architecture diagram is the component's resource graph under mocks (a resource
added to a component is a new node, and the committed docs are then stale); the deploy timeline's bars are
as long as the recorded stages."""

from __future__ import annotations

import itertools
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pulumi_docker as docker
import pytest

from tools import gen_diagrams, gen_docs
from vllm_endpoint.components.vllm_server import VllmServer
from vllm_endpoint.infra.catalog.names import CONTAINER_CACHE_ROOT, DEFAULT_API_PORT, HOST_CACHE_MOUNT

SVG = "{http://www.w3.org/2000/svg}"


def node_id(chart: str, label_part: str) -> str:
    """The id of the one node whose label contains `label_part`."""
    found = re.findall(rf'^\s+(r\d+)\["[^"]*{re.escape(label_part)}[^"]*"\]$', chart, re.MULTILINE)
    assert len(found) == 1, (label_part, found)
    return str(found[0])


@pytest.fixture(scope="module")
def aws_chart() -> str:
    return gen_diagrams.mermaid(gen_diagrams.stack_graph("aws"))


@pytest.fixture(scope="module")
def existing_chart() -> str:
    return gen_diagrams.mermaid(gen_diagrams.stack_graph("existing-host"))


# ----------------------------------------------------------------------------------------------
# The architecture diagram.

def test_every_resource_the_component_registers_is_in_a_node_of_its_component() -> None:
    graph = gen_diagrams.stack_graph("aws")
    nodes, of_urn = gen_diagrams.build_nodes(graph)
    custom = [r for r in graph.resources.values() if r.custom]
    assert {r.urn for r in custom} == set(of_urn)
    for r in custom:
        assert nodes[of_urn[r.urn]].parent == r.parent
    components = {r.type for r in graph.resources.values() if not r.custom}
    assert components == {"vllm-endpoint:index:VllmEndpoint", "vllm-endpoint:aws:GpuHost",
                          "vllm-endpoint:docker:VllmServer", "vllm-endpoint:aws:EndpointMonitoring"}


def test_the_aws_diagram_shows_the_host_the_containers_and_the_gate(aws_chart: str) -> None:
    for label in ("ec2.Instance", "ec2.Eip</b>", "ec2.SecurityGroup</b>", "ebs.Volume", "ec2.VolumeAttachment",
                  "docker provider", "docker.Container</b><br/>vllm", "docker.Container</b><br/>proxy",
                  "remote.Command</b><br/>readiness", "remote.Command</b><br/>host-ready"):
        node_id(aws_chart, label)
    assert 'subgraph c_vllm_host["aws.GpuHost vllm-host"]' in aws_chart
    assert 'subgraph c_vllm_server["docker.VllmServer vllm-server"]' in aws_chart


def test_edges_say_how_things_connect(aws_chart: str) -> None:
    eip, provider = node_id(aws_chart, "ec2.Eip</b>"), node_id(aws_chart, "docker provider")
    proxy = node_id(aws_chart, "docker.Container</b><br/>proxy")
    vllm = node_id(aws_chart, "docker.Container</b><br/>vllm")
    gate = node_id(aws_chart, "remote.Command</b><br/>readiness")
    attachment = node_id(aws_chart, "ec2.VolumeAttachment")
    assert f'{eip} -->|"Docker API over SSH"| {provider}' in aws_chart
    assert f'{eip} -->|"SSH :22"| {gate}' in aws_chart
    # The dev stack has no TLS setting: plain HTTP on the default port.
    assert f'app -->|":{DEFAULT_API_PORT} HTTP"| {proxy}' in aws_chart
    assert (f'{attachment} -.->|"bind mount {HOST_CACHE_MOUNT}/root-cache<br/>→ {CONTAINER_CACHE_ROOT}"| {vllm}'
            in aws_chart)
    assert re.search(rf'{gate} -.->\|"[^"]*endpoint_url[^"]*"\| outputs', aws_chart)


def test_an_edge_implied_by_a_longer_path_is_left_out(aws_chart: str) -> None:
    ready, network = node_id(aws_chart, "host-ready"), node_id(aws_chart, "docker.Network")
    graph = gen_diagrams.stack_graph("aws")
    nodes, of_urn = gen_diagrams.build_nodes(graph)
    network_urn = next(u for u in nodes[network].members)
    assert any(of_urn.get(u) == ready for u in graph.resources[network_urn].dependencies), \
        "the network waits for the host (depends_on)"
    assert not re.search(rf"^\s+{ready} -->\|[^|]*\| {network}$", aws_chart, re.MULTILINE)


def test_the_existing_host_diagram_has_no_aws_resource_and_reaches_the_host_over_ssh(existing_chart: str) -> None:
    assert "aws." not in existing_chart and "ec2." not in existing_chart
    assert 'host[("your Docker host<br/>ssh://deploy@gpu-box.internal")]' in existing_chart
    provider = node_id(existing_chart, "docker provider")
    assert f'host ---|"Docker API over SSH"| {provider}' in existing_chart
    assert f'host ---|"SSH :22"| {node_id(existing_chart, "prepare-host")}' in existing_chart


def test_resources_of_one_kind_collapse_into_one_node_with_a_count() -> None:
    raw = {**gen_diagrams.stack_config("aws"),
           "apiAllowedCidrs": '["93.184.216.0/24", "93.184.217.0/24", "93.184.218.0/24"]'}
    chart = gen_diagrams.mermaid(gen_diagrams.collect(raw))
    assert "4 × vpc.SecurityGroupIngressRule" in chart  # three API networks and one SSH network
    assert chart.count("SecurityGroupIngressRule") == 1


@pytest.fixture
def extra_resource(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """VllmServer with one more resource, as a change to the component would add it; yields the docs as
    they were before."""
    gen_diagrams.stack_graph.cache_clear()
    before = gen_diagrams.architecture_markdown()
    original = VllmServer._create_readiness_gate

    def with_volume(self: VllmServer, name: str, args: Any, containers: Any) -> Any:
        docker.Volume(f"{name}-scratch", opts=pulumi.ResourceOptions(parent=self, provider=self.provider))
        return original(self, name, args, containers)

    monkeypatch.setattr(VllmServer, "_create_readiness_gate", with_volume)
    gen_diagrams.stack_graph.cache_clear()
    yield before
    gen_diagrams.stack_graph.cache_clear()


def test_a_resource_added_to_a_component_is_drawn_and_makes_the_docs_stale(extra_resource: str) -> None:
    chart = gen_diagrams.mermaid(gen_diagrams.stack_graph("aws"))
    volume = node_id(chart, "docker.Volume</b><br/>scratch")
    server_box = chart.split('subgraph c_vllm_server["docker.VllmServer vllm-server"]', 1)[1].split("\n  end", 1)[0]
    assert f"{volume}[" in server_box
    assert re.search(rf'^\s+r\d+ -->\|"provider"\| {volume}$', chart, re.MULTILINE)
    after = gen_diagrams.architecture_markdown()
    assert "scratch" not in extra_resource
    assert after.count("docker.Volume</b><br/>scratch") == 2  # both targets run VllmServer
    assert "`docker:index/volume:Volume` | `vllm-server-scratch`" in after
    assert gen_docs.problems(paths=["docs/architecture.md"]) == [
        f"docs/architecture.md is out of date: run {gen_docs.COMMAND}"]


def test_the_readme_shows_both_pictures() -> None:
    readme = (gen_docs.ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- generated:architecture -->\n", 1)[1].split("<!-- /generated:architecture -->", 1)[0]
    assert block == gen_diagrams.readme_block() + "\n"
    assert "](docs/deploy-timeline.svg)" in readme
    assert {"docs/architecture.md", "docs/deploy-timeline.svg"} <= {path for path, _ in gen_docs.GENERATORS}


# ----------------------------------------------------------------------------------------------
# The deploy timeline.

def bench_result(prefetch_s: float = 0.3, vllm_s: float = 40.0) -> dict[str, Any]:
    """A bench/deploy_path.py result with the fields the chart reads."""
    t0 = 1_800_000_000.0
    started = t0 + prefetch_s + 2.0
    return {
        "machine": {"nproc": 2, "cpu": "Test CPU", "date": "2026-12-01 21:00 UTC", "load_avg_at_start": [0.5]},
        "vllm_version": "0.32.0", "repeat": 1,
        "first_deploy": {
            "volume_script_s": 0.5,
            "timeline": [f"cache_volume_mounted {t0} +0.0 s", f"image_present {t0 + prefetch_s / 3} +0.1 s",
                         f"model_present {t0 + prefetch_s} +0.3 s", f"container_started {started} +2.3 s",
                         f"server_ready {started + vllm_s + 5} +47.3 s"],
            "deploy": {"create_to_ready_s": vllm_s + 6, "start_to_ready_s": vllm_s + 5,
                       "log_marks_s": {"weights_loaded": 10.0, "engine_config": 4.0, "api_server_up": vllm_s}},
        },
        "cold_warm": {"cold_median_s": 55.0, "warm_median_s": 35.0},
    }


GPU = {"runs": [{"gpu": "H200", "what": "process start -> /v1/models 200", "vllm": "0.24.0", "date": "2026-12-01",
                 "empty_cache_s": 92.7, "kept_cache_s": 68.5}]}


def test_first_deploy_bars_are_the_recorded_stages_one_after_another() -> None:
    bars = gen_diagrams.first_deploy_bars(bench_result())
    assert [b.label for b in bars] == [
        "prepare the cache volume", "pull the vLLM image", "download the model", "create the containers",
        "import vLLM, parse the arguments", "load the weights", "start the API server",
        "gate: /v1/models answers 200"]
    assert bars[0].start_s == 0.0
    for before, after in itertools.pairwise(bars):
        assert after.start_s == pytest.approx(before.end_s)
    # volume script 0.5 s + prefetch 0.3 s + 2 s to the start + 40 s to the API + 5 s to the gate's 200.
    assert bars[-1].end_s == pytest.approx(47.8)
    assert bars[4].end_s - bars[4].start_s == pytest.approx(4.0)


def rects(svg_text: str) -> list[tuple[str, float, float]]:
    """(the bar's tooltip, its x, its width) for every bar of the chart."""
    root = ET.fromstring(svg_text)
    return [(r.findtext(f"{SVG}title") or "", float(r.get("x", 0)), float(r.get("width", 0)))
            for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]


def test_bar_widths_follow_the_durations() -> None:
    panels = gen_diagrams.timeline_panels(bench_result(), GPU)
    drawn = rects(gen_diagrams.svg(panels, "caption"))
    assert len(drawn) == sum(len(p.bars) for p in panels)
    plot = gen_diagrams.WIDTH - gen_diagrams.LABEL_W - gen_diagrams.RIGHT_W
    offset = 0
    for panel in panels:
        # One scale per panel: its last second is the plot's right edge.
        scale = plot / max(b.end_s for b in panel.bars)
        for bar, (title, x, width) in zip(panel.bars, drawn[offset:offset + len(panel.bars)], strict=True):
            assert title.startswith(bar.label)
            assert x == pytest.approx(gen_diagrams.LABEL_W + bar.start_s * scale, abs=0.06)
            # A bar narrower than a pixel is drawn one pixel wide, to stay visible.
            assert width == pytest.approx(max((bar.end_s - bar.start_s) * scale, 1.0), abs=0.06)
        offset += len(panel.bars)


def test_a_longer_stage_is_a_longer_bar() -> None:
    def vllm_width(result: dict[str, Any]) -> float:
        return next(w for title, _, w in rects(gen_diagrams.svg(gen_diagrams.timeline_panels(result, GPU), ""))
                    if title.startswith("start the API server"))

    short, long = vllm_width(bench_result(vllm_s=20.0)), vllm_width(bench_result(vllm_s=80.0))
    assert long > 2 * short


def test_the_chart_is_drawn_from_the_newest_recorded_result(tmp_path: Path) -> None:
    (tmp_path / "gpu-starts.json").write_text(json.dumps(GPU))
    (tmp_path / "deploy-path-2026-11-01-2vcpu-x.json").write_text(json.dumps(bench_result(vllm_s=20.0)))
    (tmp_path / "deploy-path-2026-12-01-2vcpu-x.json").write_text(json.dumps(bench_result(vllm_s=80.0)))
    chart = gen_diagrams.timeline_svg(tmp_path)
    assert "deploy-path-2026-12-01-2vcpu-x.json" in chart
    assert "start the API server: 70.0 s" in chart  # from the weights (10 s) to the API (80 s): the newer result
