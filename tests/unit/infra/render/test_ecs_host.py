"""The fleet instance's user data (infra/render/ecs_host.py, infra/host/ecs-host.sh): the agent's settings, the
mount unit ordered before the agent, values quoted and checked, and the rendered script clean under shellcheck.
(Formatting and mounting a real device needs root and a block device: the real-parts tests' business.)"""

from __future__ import annotations

import base64
import dataclasses
import email
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vllm_endpoint.infra.catalog.names import HOST_CACHE_MOUNT
from vllm_endpoint.infra.render.ecs_host import (
    DOCKER_DATA_SUBDIR,
    ECS_MOUNT_SCRIPT,
    ECS_MOUNT_UNIT,
    EcsHostSettings,
    cache_subdirs,
    ecs_host_user_data,
    render_ecs_host_script,
)

SETTINGS = EcsHostSettings(cluster="vllm-cluster-1a2b3c4", cache_mount_point=HOST_CACHE_MOUNT,
                           cache_subdirs=("proxy", "root-cache"), cache_owner="1000:1000", stop_timeout_s=60)


def test_the_agent_joins_the_cluster_with_gpus_spot_draining_and_the_stop_timeout() -> None:
    script = render_ecs_host_script(SETTINGS)
    assert script.startswith("#!/usr/bin/env bash\n")
    settings = script.split("agent_settings() {\n", 1)[1].split("\n}\n", 1)[0]
    for line in ('"ECS_CLUSTER=${CLUSTER}"', "ECS_ENABLE_GPU_SUPPORT=true", "ECS_ENABLE_SPOT_INSTANCE_DRAINING=true",
                 '"ECS_CONTAINER_STOP_TIMEOUT=${STOP_TIMEOUT}s"', "ECS_AWSVPC_BLOCK_IMDS=true"):
        assert line in settings, line
    assert "\nreadonly WARM_POOL=false\n" in script
    assert "\nreadonly CLUSTER=vllm-cluster-1a2b3c4\n" in script
    assert "\nreadonly STOP_TIMEOUT=60\n" in script
    assert "\nreadonly -a CACHE_SUBDIRS=(proxy root-cache)\n" in script
    assert "@@" not in script


def test_the_mount_runs_before_the_agent_at_every_boot_and_holds_it_back_when_it_fails() -> None:
    script = render_ecs_host_script(SETTINGS)
    unit = script.split('cat >"/etc/systemd/system/${MOUNT_UNIT}" <<EOF\n', 1)[1].split("\nEOF\n", 1)[0]
    assert "Before=${needed_by}" in unit and "RequiredBy=${needed_by}" in unit and "Type=oneshot" in unit
    assert "  local needed_by=ecs.service\n" in script
    assert "ExecStart=${MOUNT_SCRIPT} mount" in unit
    assert f"readonly MOUNT_UNIT={ECS_MOUNT_UNIT}" in script and f"readonly MOUNT_SCRIPT={ECS_MOUNT_SCRIPT}" in script
    # The agent's unit waits for cloud-final, where user data runs: never a blocking start of it from here.
    assert "systemctl start --no-block ecs.service" in script
    assert "systemctl start ecs" not in script.replace("systemctl start --no-block ecs", "")


def test_user_data_is_the_script_in_base64() -> None:
    assert base64.b64decode(ecs_host_user_data(SETTINGS)).decode() == render_ecs_host_script(SETTINGS)


def test_values_are_shell_quoted_and_checked() -> None:
    odd = EcsHostSettings(cluster="c", cache_mount_point="/opt/a b", cache_subdirs=("x",), cache_owner="vllm")
    assert "\nreadonly CACHE_MOUNT_POINT='/opt/a b'\n" in render_ecs_host_script(odd)
    for bad in (EcsHostSettings("c;reboot", "/m", ("x",), "u"), EcsHostSettings("c", "relative", ("x",), "u"),
                EcsHostSettings("c", "/m", ("../etc",), "u"), EcsHostSettings("c", "/m", ("x",), "u; rm"),
                EcsHostSettings("c", "/m", (), "u"), EcsHostSettings("c", "/m", ("x",), "u", stop_timeout_s=0)):
        with pytest.raises(ValueError):
            render_ecs_host_script(bad)


def test_cache_subdirs_are_the_first_folders_below_the_mount() -> None:
    paths = [f"{HOST_CACHE_MOUNT}/root-cache", f"{HOST_CACHE_MOUNT}/proxy/nginx.conf", f"{HOST_CACHE_MOUNT}/proxy/x"]
    assert cache_subdirs(HOST_CACHE_MOUNT, paths) == ("proxy", "root-cache")
    with pytest.raises(ValueError, match="not below"):
        cache_subdirs(HOST_CACHE_MOUNT, ["/var/lib/other"])
    with pytest.raises(ValueError, match="not below"):
        cache_subdirs(HOST_CACHE_MOUNT, [HOST_CACHE_MOUNT])


def test_cache_images_puts_dockers_data_root_on_the_volume_and_docker_after_the_mount() -> None:
    assert "\nreadonly DOCKER_DATA_ROOT=''\n" in render_ecs_host_script(SETTINGS)  # off: Docker's own
    root = f"{HOST_CACHE_MOUNT}/{DOCKER_DATA_SUBDIR}"
    script = render_ecs_host_script(dataclasses.replace(SETTINGS, docker_data_root=root))
    assert f"\nreadonly DOCKER_DATA_ROOT={root}\n" in script
    # Docker waits for the mount (and is held back when it fails), and the daemon's config names the folder.
    assert '    needed_by="docker.service ecs.service"\n' in script
    assert "    write_docker_config\n" in script.split("setup() {", 1)[1]
    assert 'config["data-root"] = root' in script
    # Neither a task's folder (the containers would see Docker's files) nor outside the volume.
    for bad in ("proxy", "elsewhere/docker"):
        path = f"{HOST_CACHE_MOUNT}/{bad}"
        with pytest.raises(ValueError, match="directly below"):
            render_ecs_host_script(dataclasses.replace(SETTINGS, docker_data_root=path))
    with pytest.raises(ValueError, match="directly below"):
        render_ecs_host_script(dataclasses.replace(SETTINGS, docker_data_root="/var/lib/docker"))


@pytest.mark.parametrize("docker_data_root", [None, f"{HOST_CACHE_MOUNT}/{DOCKER_DATA_SUBDIR}"])
def test_the_rendered_script_passes_shellcheck(tmp_path: Path, docker_data_root: str | None) -> None:
    tool = shutil.which("shellcheck")
    if tool is None:
        pytest.skip("shellcheck is not installed (scripts/setup.sh installs it)")
    path = tmp_path / "user-data.sh"
    path.write_text(render_ecs_host_script(dataclasses.replace(SETTINGS, docker_data_root=docker_data_root)))
    result = subprocess.run([tool, "-S", "style", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "user-data.sh"
    path.write_text(render_ecs_host_script(SETTINGS))
    result = subprocess.run(["bash", str(path), "bogus"], capture_output=True, text=True)
    assert result.returncode != 0
    # Not root in CI: the script stops before doing anything, saying why.
    assert "must run as root" in result.stderr or "unknown mode 'bogus'" in result.stderr


def test_with_a_warm_pool_the_script_runs_at_every_boot_and_the_agent_waits_for_service(tmp_path: Path) -> None:
    settings = dataclasses.replace(SETTINGS, warm_pool=True)
    script = render_ecs_host_script(settings)
    assert "\nreadonly WARM_POOL=true\n" in script
    message = email.message_from_string(base64.b64decode(ecs_host_user_data(settings)).decode())
    assert message.is_multipart() and message.get_content_type() == "multipart/mixed"
    parts = [(part.get_content_type(), str(part.get_payload())) for part in message.walk()][1:]
    assert [kind for kind, _ in parts] == ["text/cloud-config", "text/x-shellscript"]
    (_, config), (_, shell) = parts
    assert shell == script
    assert yaml.safe_load(config) == {"cloud_final_modules": [["scripts-user", "always"]]}
    path = tmp_path / "cloud-config"
    path.write_text(config)
    tool = shutil.which("cloud-init")
    if tool is None:
        pytest.skip("cloud-init is not installed (scripts/setup.sh installs it)")
    result = subprocess.run([tool, "schema", "--config-file", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
