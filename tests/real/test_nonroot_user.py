"""The vLLM container runs as containerUser, a uid the image's /etc/passwd does not know. torch < 2.12
(vLLM images up to at least v0.24.0) asks `getpass.getuser()` for its Inductor cache dir at `import
vllm` and dies with `KeyError: getpwuid(): uid not found` (measured on an H200 with v0.24.0). The
rendered env names the user (USER/LOGNAME), which `getpass.getuser()` reads before the passwd lookup.

The test image's torch (2.13) has its own fallback, so the server itself would start either way; the
lookup torch makes is run directly instead, in a container from the product's own rendered spec with
only its entrypoint and command replaced, as the configured non-root uid."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.real.harness.deployer import cpu_adapt, existing_host_config
from tests.real.harness.testhost import TestHost
from vllm_endpoint.infra.catalog.names import CONTAINER_USER_NAME
from vllm_endpoint.infra.plan.deployment import build_plan
from vllm_endpoint.infra.plan.spec import ContainerSpec
from vllm_endpoint.infra.render.container import docker_run_argv
from vllm_endpoint.infra.render.host_scripts import existing_host_prepare_script

pytestmark = pytest.mark.real

LOOKUP = "import getpass; print(getpass.getuser())"
NAME_VARS = ("USER", "LOGNAME")
# Everything this test changes in the rendered spec (after the harness's cpu_adapt), and why.
CHANGES = {
    "--entrypoint python3, command -c LOOKUP": "runs the user-name lookup torch makes instead of the server",
    "no --detach, --restart no": "a one-shot run whose output and exit status the test reads",
    "name": "its own, next to whatever else runs on the host",
}


@pytest.fixture(scope="module")
def rendered(test_host: TestHost, vllm_image: str, cache_dir: Path) -> ContainerSpec:
    """The vLLM spec `pulumi up` would run on the test host, with its cache folders and network there."""
    config = existing_host_config(test_host, cache_dir)
    plan = build_plan(config)
    test_host.ssh(existing_host_prepare_script(plan.host_cache_dir, False, config.server.container_user,
                                               open_files=config.server.container_open_files))
    test_host.docker("network", "create", "--driver", "bridge", plan.network, check=False)
    spec = cpu_adapt(plan.vllm)
    assert spec.image == vllm_image
    return spec


def _lookup_in(host: TestHost, spec: ContainerSpec, name: str) -> tuple[int, str, str]:
    one_shot = dataclasses.replace(spec, name=name, args=("-c", LOOKUP), restart="no")
    argv = docker_run_argv(one_shot)
    assert argv[:3] == ["docker", "run", "--detach"]
    argv = ["run", "--entrypoint", "python3", *argv[3:]]
    host.docker("rm", "-f", name, check=False)
    try:
        proc = host.docker(*argv, check=False, timeout=120)
    finally:
        host.docker("rm", "-f", name, check=False)
    return proc.returncode, proc.stdout.strip(), proc.stderr


def test_the_rendered_env_answers_user_name_lookups_for_a_uid_without_a_passwd_entry(
        host: TestHost, rendered: ContainerSpec) -> None:
    assert rendered.user == host.container_user and not rendered.user.startswith("0:")
    env = rendered.env_dict()
    assert env["USER"] == env["LOGNAME"] == CONTAINER_USER_NAME

    code, out, err = _lookup_in(host, rendered, "nonroot-lookup-rendered")
    assert (code, out) == (0, CONTAINER_USER_NAME), err

    # The same container without the two names: the image has no passwd entry for the uid, and the
    # lookup fails as it does inside torch < 2.12.
    bare = dataclasses.replace(rendered, env=tuple((k, v) for k, v in rendered.env if k not in NAME_VARS))
    code, out, err = _lookup_in(host, bare, "nonroot-lookup-bare")
    assert code == 1 and out == "", err
    assert f"KeyError: 'getpwuid(): uid not found: {host.uid}'" in err
