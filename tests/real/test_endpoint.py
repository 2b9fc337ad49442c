"""The endpoint end to end on real parts: the program's plan deployed to an SSH-reachable Docker host,
a real vLLM server (CPU build) behind the real proxy, called with the official `openai` client at
exactly the URL and key the stack would export."""

from __future__ import annotations

import json
import secrets
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.real.harness import images
from tests.real.harness.common import BUILD_DIR
from tests.real.harness.deployer import (
    CPU_CHANGES,
    DEFAULT_NAMES,
    Deployment,
    assert_serves,
    deploy,
    existing_host_config,
    make_cache_dir,
    vllm_as_run,
)
from tests.real.harness.testhost import TestHost
from vllm_endpoint.infra.catalog.names import CONTAINER_MODEL_DIR, ENDPOINT_TAG

pytestmark = pytest.mark.real

SERVED_NAME = "tiny-finetune"
NEIGHBOUR, NEIGHBOUR_SERVED_NAME, NEIGHBOUR_PORT = "neighbour", "tiny-neighbour", "30006"


@pytest.fixture(scope="module")
def endpoint(test_host: TestHost, vllm_image: str, tiny_model: Path) -> Iterator[Deployment]:
    config = existing_host_config(
        test_host, BUILD_DIR / "host-cache" / test_host.name,
        modelPath=str(tiny_model), servedModelName=SERVED_NAME, maxModelLen="512",
    )
    images.build_nginx_image(test_host, tag=config.access.proxy_image)
    make_cache_dir(test_host, Path(config.existing_host.host_cache_dir))
    deployment = deploy(test_host, config, api_key=secrets.token_urlsafe(36))
    yield deployment
    test_host.remove_all_containers()
    test_host.docker("network", "rm", deployment.plan.network, check=False)
    shutil.rmtree(config.existing_host.host_cache_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def neighbour(endpoint: Deployment, tiny_model: Path) -> Iterator[Deployment]:
    """A second endpoint of the same program on the same host and hostCacheDir, on another port."""
    config = existing_host_config(
        endpoint.host, Path(endpoint.plan.config.existing_host.host_cache_dir),
        modelPath=str(tiny_model), servedModelName=NEIGHBOUR_SERVED_NAME, maxModelLen="512",
        apiPort=NEIGHBOUR_PORT,
    )
    deployment = deploy(endpoint.host, config, api_key=secrets.token_urlsafe(36), name=NEIGHBOUR)
    yield deployment
    for container in deployment.plan.names.containers:
        endpoint.host.docker("rm", "-f", container, check=False)
    endpoint.host.docker("network", "rm", deployment.plan.network, check=False)


def test_only_cpu_limitations_were_changed_in_the_rendered_spec(endpoint: Deployment) -> None:
    rendered, ran = endpoint.plan.vllm, endpoint.vllm
    assert ran == vllm_as_run(endpoint.plan)  # the CPU changes and the owner labels, nothing else
    assert set(CPU_CHANGES) == {"gpus / runtime", "NVIDIA_VISIBLE_DEVICES", "VLLM_CPU_KVCACHE_SPACE=1",
                                "host preparation"}
    assert ran.args == rendered.args and ran.mounts == rendered.mounts and ran.user == rendered.user


def test_openai_client_lists_models_and_chats_with_the_exported_url_and_key(endpoint: Deployment) -> None:
    assert_serves(endpoint, SERVED_NAME)


def test_with_a_wrong_key_the_api_answers_401(endpoint: Deployment) -> None:
    client = openai.OpenAI(base_url=endpoint.endpoint_url, api_key="wrong-" + "x" * 40, max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError) as info:
        client.models.list()
    assert info.value.status_code == 401


@pytest.mark.parametrize("path", ["/models", "/chat/completions"])
def test_without_a_key_the_api_answers_401(endpoint: Deployment, path: str) -> None:
    # The openai client always sends a key, so the keyless request is made by hand.
    data = b'{"model": "x", "messages": []}' if path.endswith("completions") else None
    request = urllib.request.Request(endpoint.endpoint_url + path, data=data,
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 401


def test_the_fine_tune_is_served_read_only_from_the_uploaded_folder(endpoint: Deployment) -> None:
    mounts = endpoint.host.docker("inspect", "--format",
                                  "{{range .Mounts}}{{.Destination}} {{.RW}} {{.Source}};{{end}}",
                                  endpoint.plan.names.vllm_container).stdout
    model_mount = next(m for m in mounts.split(";") if m.startswith(CONTAINER_MODEL_DIR + " "))
    assert model_mount.split()[1] == "false"
    assert endpoint.plan.model_upload is not None
    assert model_mount.split()[2] == endpoint.plan.model_upload.remote_dir


def test_the_gate_printed_the_timeline(endpoint: Deployment) -> None:
    assert "ready: GET https://" not in endpoint.gate_output
    assert f"ready: GET http://127.0.0.1:{endpoint.plan.api_port}/v1/models answered 200" in endpoint.gate_output
    assert "server_ready" in endpoint.gate_output and "container_started" in endpoint.gate_output


def test_vllm_is_not_reachable_except_through_the_proxy(endpoint: Deployment) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://{endpoint.host.address}:{endpoint.plan.api_port}/docs", timeout=10)
    assert info.value.code == 404
    published = endpoint.host.docker("port", endpoint.plan.names.vllm_container, check=False).stdout.strip()
    assert published == ""


def test_a_second_endpoint_on_the_same_host_serves_alongside_with_its_own_names_port_and_folder(
        endpoint: Deployment, neighbour: Deployment) -> None:
    host = endpoint.host
    assert_serves(neighbour, NEIGHBOUR_SERVED_NAME)
    assert_serves(endpoint, SERVED_NAME)  # the first one is untouched
    running = set(host.docker("ps", "--format", "{{.Names}}").stdout.split())
    assert {*DEFAULT_NAMES.containers, NEIGHBOUR, f"{NEIGHBOUR}-proxy"} <= running
    networks = set(host.docker("network", "ls", "--format", "{{.Name}}").stdout.split())
    assert {endpoint.plan.network, neighbour.plan.network} <= networks
    assert endpoint.plan.network != neighbour.plan.network
    # Each endpoint's caches, upload and proxy files are in its own folder of the shared hostCacheDir.
    shared = Path(endpoint.plan.config.existing_host.host_cache_dir)
    for deployment, name in ((endpoint, DEFAULT_NAMES.endpoint), (neighbour, NEIGHBOUR)):
        mounts = host.docker("inspect", "--format", "{{range .Mounts}}{{.Source}};{{end}}",
                             *deployment.plan.names.containers).stdout.replace("\n", "").split(";")
        assert all(Path(m).is_relative_to(shared / name) for m in mounts if m), mounts
        assert deployment.plan.model_upload is not None
        assert (Path(deployment.plan.model_upload.remote_dir) / "config.json").is_file()
    labels = json.loads(host.docker("inspect", "--format", "{{json .Config.Labels}}", NEIGHBOUR).stdout)
    assert labels[ENDPOINT_TAG] == NEIGHBOUR
