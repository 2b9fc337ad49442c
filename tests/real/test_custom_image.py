"""The third way to ship a fine-tune: a custom image `FROM vllm/vllm-openai:<tag>` with the merged model
baked in at /app/model (`imageBuildContext` + `model: /app/model`). It is built on the host's own
engine over SSH, as pulumi-docker's `docker.Image` builds on the provider's daemon, then deployed from
the plan and called with the openai client under the default served name."""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real.harness import images
from tests.real.harness.common import BUILD_DIR
from tests.real.harness.deployer import (
    DEFAULT_NAMES,
    Deployment,
    StageTimes,
    assert_serves,
    deploy,
    existing_host_config,
    make_cache_dir,
)
from tests.real.harness.testhost import TestHost
from vllm_endpoint.infra.catalog.names import CONTAINER_MODEL_DIR, DEFAULT_VLLM_VERSION, VLLM_IMAGE_REPOSITORY

pytestmark = pytest.mark.real

BASE_IMAGE = f"{VLLM_IMAGE_REPOSITORY}:v{DEFAULT_VLLM_VERSION}"
# A user's Dockerfile as the README describes it: the merged model copied in, nothing else.
DOCKERFILE = f"FROM {BASE_IMAGE}\nCOPY model {CONTAINER_MODEL_DIR}\n"


@pytest.fixture(scope="module")
def build_context(test_host: TestHost, tiny_model: Path) -> Iterator[Path]:
    context = BUILD_DIR / "custom-image-context" / test_host.name
    shutil.rmtree(context, ignore_errors=True)
    shutil.copytree(tiny_model, context / "model")
    (context / "Dockerfile").write_text(DOCKERFILE)
    for path in [context, *context.rglob("*")]:
        # COPY keeps the modes; the container's non-root user must read the model.
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield context
    shutil.rmtree(context, ignore_errors=True)
    with contextlib.suppress(OSError):
        context.parent.rmdir()  # only when no other session's context is in it


@pytest.fixture(scope="module")
def custom(test_host: TestHost, vllm_image: str, build_context: Path, times: StageTimes) -> Iterator[Deployment]:
    assert vllm_image == BASE_IMAGE
    cache_dir = make_cache_dir(test_host, BUILD_DIR / "host-cache" / f"{test_host.name}-custom")
    config = existing_host_config(test_host, cache_dir, imageBuildContext=str(build_context),
                                  model=CONTAINER_MODEL_DIR, maxModelLen="512")
    images.build_nginx_image(test_host, tag=config.access.proxy_image)
    test_host.remove_all_containers()
    tag = None
    try:
        deployment = deploy(test_host, config, api_key=secrets.token_urlsafe(36))
        assert deployment.plan.image_build is not None
        tag = deployment.plan.image_build.tag
        times.add_deploy(deployment, "custom image")
        yield deployment
    finally:
        test_host.remove_all_containers()
        test_host.docker("network", "rm", DEFAULT_NAMES.network, check=False)
        if tag is not None:
            test_host.docker("image", "rm", tag, check=False)
        shutil.rmtree(cache_dir, ignore_errors=True)


def test_the_plan_runs_the_image_it_built_from_the_context(custom: Deployment) -> None:
    plan, host = custom.plan, custom.host
    assert plan.image_build is not None
    assert plan.vllm.image == plan.image_build.tag and plan.image_ref == plan.image_build.tag
    assert plan.model_upload is None
    # The image exists on the host's engine (nothing was pushed or pulled) and is built on the base.
    built = json.loads(host.docker("image", "inspect", plan.image_build.tag).stdout)[0]
    base = json.loads(host.docker("image", "inspect", BASE_IMAGE).stdout)[0]
    base_layers = base["RootFS"]["Layers"]
    assert built["RootFS"]["Layers"][:len(base_layers)] == base_layers
    assert len(built["RootFS"]["Layers"]) == len(base_layers) + 1  # the COPY
    assert built["Config"]["Entrypoint"] == base["Config"]["Entrypoint"]
    container = json.loads(host.docker("inspect", "vllm").stdout)[0]
    assert container["Config"]["Image"] == plan.image_build.tag
    assert container["Image"] == built["Id"]
    # The model comes from the image: no model folder is mounted, only the cache volume.
    assert [m["Destination"] for m in container["Mounts"]] == ["/root/.cache"]
    listing = host.docker("exec", "vllm", "ls", CONTAINER_MODEL_DIR).stdout.split()
    assert "config.json" in listing and "model.safetensors" in listing


def test_the_vllm_version_is_read_from_the_dockerfile(custom: Deployment) -> None:
    assert str(custom.plan.vllm_version) == DEFAULT_VLLM_VERSION
    labels = dict(custom.plan.vllm.labels)
    assert labels["vllm-endpoint:vllm-version"] == DEFAULT_VLLM_VERSION


def test_the_openai_client_chats_with_the_baked_in_model_under_its_default_name(custom: Deployment) -> None:
    served = Path(CONTAINER_MODEL_DIR).name  # "model": the path's last part, the documented default
    assert custom.plan.served_model_name == served
    assert_serves(custom, served)
