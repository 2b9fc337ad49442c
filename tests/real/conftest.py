"""Fixtures of the real-parts tier: one SSH-reachable Docker test host per session, its images, and
the tiny model. Everything is set up and torn down here; a missing prerequisite is a skip with the
reason (and a failure on CI, see tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real.harness import images
from tests.real.harness.common import BUILD_DIR, VLLM_VENV, prerequisite_problem
from tests.real.harness.deployer import DEFAULT_NAMES, StageTimes, make_cache_dir
from tests.real.harness.testhost import REQUIRED_TOOLS, TestHost, start_test_host
from tests.real.harness.tiny_model import ensure_tiny_model


def _require(tools: tuple[str, ...] = (), need_vllm_venv: bool = False) -> None:
    problem = prerequisite_problem(tools, need_vllm_venv=need_vllm_venv)
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="session")
def test_host() -> Iterator[TestHost]:
    """The session's test host (network namespace + sshd + dockerd), reached over SSH."""
    _require(REQUIRED_TOOLS)
    with start_test_host() as host, pytest.MonkeyPatch.context() as mp:
        # Clients (urllib, the openai package) must talk to the test host directly, never through
        # a proxy the machine may have configured.
        for var in ("no_proxy", "NO_PROXY"):
            current = os.environ.get(var, "")
            mp.setenv(var, ",".join(filter(None, [current, host.address, "127.0.0.1", "localhost"])))
        yield host


@pytest.fixture
def host(test_host: TestHost) -> Iterator[TestHost]:
    """The session's test host, with every container removed after the test (ports free again)."""
    yield test_host
    test_host.remove_all_containers()


@pytest.fixture(scope="session")
def busybox_image(test_host: TestHost) -> str:
    _require(("busybox", "tar"))
    return images.build_busybox_image(test_host)


@pytest.fixture(scope="session")
def nginx_image(test_host: TestHost) -> str:
    _require(("nginx", "ldd", "busybox", "tar"))
    return images.build_nginx_image(test_host)


@pytest.fixture(scope="session")
def vllm_image(test_host: TestHost) -> str:
    """`vllm/vllm-openai:v<DEFAULT_VLLM_VERSION>` running the real vLLM CPU build (entrypoint `vllm serve`)."""
    _require(("debootstrap", "tar"), need_vllm_venv=True)
    return images.build_vllm_image(test_host)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """A directory with a tiny Qwen2 chat model (config, tokenizer, safetensors weights)."""
    _require(need_vllm_venv=True)
    return ensure_tiny_model(BUILD_DIR / "models", VLLM_VENV / "bin" / "python")


@pytest.fixture(scope="module")
def times(request: pytest.FixtureRequest) -> Iterator[StageTimes]:
    """Stage timings of a test module, printed (and recorded) when the module is done."""
    stage_times = StageTimes(request.module.__name__.rsplit(".", 1)[-1])
    yield stage_times
    stage_times.report(request.config)


@pytest.fixture(scope="module")
def cache_dir(test_host: TestHost, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A module's `hostCacheDir` on the test host (owned by the SSH user); removed, with the module's
    containers and network, when the module is done."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    path = make_cache_dir(test_host, BUILD_DIR / "host-cache" / f"{test_host.name}-{module}")
    yield path
    test_host.remove_all_containers()
    test_host.docker("network", "rm", DEFAULT_NAMES.network, check=False)
    shutil.rmtree(path, ignore_errors=True)
