"""The instance's user-data: it installs the host files as shipped, boot.env carries every path and name
the boot files use (read back by bash exactly as rendered), and it fits EC2's limit."""

from __future__ import annotations

import base64
import configparser
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vllm_endpoint.infra.catalog.names import (
    BOOT_ENV_FILE,
    BOOT_SCRIPT,
    HF_PREFETCH_SCRIPT,
    HOST_CACHE_MOUNT,
    PREPARE_CACHE_SCRIPT,
    SPOT_HANDLER_SCRIPT,
    SPOT_HANDLER_UNIT_FILE,
    SPOT_HANDLER_UNIT_NAME,
    SPOT_NOTICE_S,
    STACK_TAG,
    SUPERVISOR_SCRIPT,
    SUPERVISOR_UNIT_FILE,
    SUPERVISOR_UNIT_NAME,
)
from vllm_endpoint.infra.plan.deployment import build_plan
from vllm_endpoint.infra.plan.spec import VLLM_STOP_TIMEOUT_S
from vllm_endpoint.infra.render.host_scripts import env_strings, host_ready_script
from vllm_endpoint.infra.render.userdata import (
    USER_DATA_LIMIT,
    HostBootSettings,
    boot_env,
    boot_env_values,
    boot_script,
    decode_user_data,
    encode_user_data,
    render_user_data,
    shipped_script,
    spot_handler_unit,
    supervisor_unit,
)
from vllm_endpoint.infra.settings.models import load_stack_config

HOST_KEY_PRIVATE = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n"
HOST_KEY_PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm5xk0pJl1ZkZ4bH2v0b3dJq5s0aQy7Ff2k0Vd7J8yO"
BOOT = HostBootSettings("vol-0123456789abcdef0", "ubuntu", HOST_KEY_PRIVATE, HOST_KEY_PUBLIC)


def test_user_data_installs_the_host_files_and_the_pinned_host_key() -> None:
    document = yaml.safe_load(render_user_data(BOOT))
    files = {f["path"]: f for f in document["write_files"]}
    assert files[BOOT_ENV_FILE]["content"] == boot_env(BOOT)
    assert files[BOOT_SCRIPT]["content"] == boot_script()
    assert files[PREPARE_CACHE_SCRIPT]["content"] == shipped_script("prepare-cache-volume.sh")
    assert files[HF_PREFETCH_SCRIPT]["content"] == shipped_script("hf-prefetch.py")
    assert all(files[p]["permissions"] == "0755" for p in (BOOT_SCRIPT, PREPARE_CACHE_SCRIPT, HF_PREFETCH_SCRIPT))
    # boot.sh runs the installed files from the paths boot.env names.
    values = boot_env_values(BOOT)
    assert (values["PREPARE_CACHE_SCRIPT"], values["HF_PREFETCH_SCRIPT"]) == (PREPARE_CACHE_SCRIPT, HF_PREFETCH_SCRIPT)
    assert document["ssh_keys"] == {"ed25519_private": HOST_KEY_PRIVATE, "ed25519_public": HOST_KEY_PUBLIC}
    assert document["ssh_deletekeys"] is True


def test_the_boot_script_is_boot_sh_with_its_env_files_path_on_top() -> None:
    shebang, export, body = boot_script("/etc/x y/boot.env").split("\n", 2)
    assert shebang == "#!/usr/bin/env bash" and export == "export BOOT_ENV_FILE='/etc/x y/boot.env'"
    assert body == shipped_script("boot.sh").split("\n", 1)[1]


def test_bash_reads_boot_env_back_exactly(tmp_path: Path) -> None:
    # Values a user controls (the SSH user, the mount point) are quoted like any other.
    settings = HostBootSettings("vol-0123456789abcdef0", "o'brien $(id)", "", "", docker_data_on_cache_volume=True,
                                cache_mount_point="/mnt/cache dir")
    env_file = tmp_path / "boot.env"
    env_file.write_text(boot_env(settings))
    proc = subprocess.run(["bash", "-c", f'set -eu; . "{env_file}"; exec env -0'], capture_output=True, env={},
                          check=True)
    seen = dict(item.decode().split("=", 1) for item in proc.stdout.split(b"\0") if item)
    expected = env_strings(boot_env_values(settings))
    assert {k: seen[k] for k in expected} == expected
    assert seen["CACHE_OWNER"] == "o'brien $(id):"


def test_the_boot_prefetch_fills_the_folder_the_container_reads_as_hf_home() -> None:
    plan = build_plan(load_stack_config({"sshAllowedCidrs": "93.184.215.14/32", "apiAllowedCidrs": "93.184.216.0/24"}))
    hf_home = dict(plan.vllm.env)["HF_HOME"]
    # The container's HF_HOME as a host path, through the container's own mounts.
    mount = next(m for m in plan.vllm.mounts if hf_home.startswith(m.target + "/"))
    on_host = mount.source + hf_home[len(mount.target):]
    # components/gpu_host.py renders the boot with the default cache mount point, as BOOT does.
    assert boot_env_values(BOOT)["HF_HOME_DIR"] == on_host


def test_the_host_check_looks_for_the_prefetch_markers_where_boot_sh_leaves_them() -> None:
    state = boot_env_values(BOOT)["PREFETCH_STATE_DIR"]
    assert f"export PREFETCH_STATE_DIR={state}\n" in host_ready_script(HOST_CACHE_MOUNT, True, "1:1", open_files=1024)


def test_user_data_fits_ec2s_limit_compressed_and_round_trips() -> None:
    document = render_user_data(BOOT)
    encoded = encode_user_data(document)
    assert decode_user_data(encoded) == document
    assert encode_user_data(document) == encoded, "compression must be deterministic (no spurious diffs)"
    assert len(base64.b64decode(encoded)) < USER_DATA_LIMIT


def test_the_host_installs_the_hub_client_release_the_deploying_side_uses() -> None:
    """The boot prefetch (on the instance) and the plan-time model check (on the deploying machine) read the Hub
    through the same huggingface_hub release: exact pins, that release in both places."""
    pins = dict(word.split("==") for word in str(boot_env_values(BOOT)["HF_CLIENT_PACKAGES"]).split())
    requirements = (Path(__file__).resolve().parents[4] / "requirements.txt").read_text().splitlines()
    deploying = next(line.split("==")[1] for line in requirements if line.startswith("huggingface_hub=="))
    assert set(pins) == {"huggingface_hub", "hf_xet"} and all(v[0].isdigit() for v in pins.values())
    assert pins["huggingface_hub"] == deploying


def test_user_data_installs_the_supervisor_and_its_unit_which_boot_sh_enables() -> None:
    files = {f["path"]: f for f in yaml.safe_load(render_user_data(BOOT))["write_files"]}
    assert files[SUPERVISOR_SCRIPT]["content"] == shipped_script("supervise-containers.sh")
    assert files[SUPERVISOR_SCRIPT]["permissions"] == "0755"
    assert files[SUPERVISOR_UNIT_FILE]["content"] == supervisor_unit()
    assert SUPERVISOR_UNIT_FILE.endswith("/" + SUPERVISOR_UNIT_NAME)
    assert boot_env_values(BOOT)["SUPERVISOR_UNIT_NAME"] == SUPERVISOR_UNIT_NAME
    assert 'systemctl enable --now "$SUPERVISOR_UNIT_NAME"' in boot_script()


def test_the_supervisor_unit_runs_the_script_on_the_stack_label_and_restarts_it() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(supervisor_unit())
    assert unit["Service"]["ExecStart"] == SUPERVISOR_SCRIPT
    assert unit["Service"]["Environment"] == f"SUPERVISE_LABEL={STACK_TAG}"
    assert unit["Service"]["Restart"] == "always"
    # Ordered after Docker, and never given up on while dockerd restarts.
    assert unit["Unit"]["After"] == "docker.service" and unit["Unit"]["StartLimitIntervalSec"] == "0"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def systemd_verify(tmp_path: Path, unit_name: str, unit_text: str, installed: str, shipped: str) -> None:
    """systemd's own check of a rendered unit (unknown keys, sections, the executable), with ExecStart at a
    copy of the shipped script: this machine is not an instance."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing (Debian's systemd package)")
    script = tmp_path / shipped
    script.write_text(shipped_script(shipped))
    script.chmod(0o755)
    unit = tmp_path / unit_name
    unit.write_text(unit_text.replace(f"ExecStart={installed}", f"ExecStart={script}"))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


def test_systemd_accepts_the_supervisor_unit(tmp_path: Path) -> None:
    systemd_verify(tmp_path, SUPERVISOR_UNIT_NAME, supervisor_unit(), SUPERVISOR_SCRIPT, "supervise-containers.sh")


def test_user_data_installs_the_spot_handler_and_its_unit_which_boot_sh_enables() -> None:
    files = {f["path"]: f for f in yaml.safe_load(render_user_data(BOOT))["write_files"]}
    assert files[SPOT_HANDLER_SCRIPT]["content"] == shipped_script("spot-interruption.sh")
    assert files[SPOT_HANDLER_SCRIPT]["permissions"] == "0755"
    assert files[SPOT_HANDLER_UNIT_FILE]["content"] == spot_handler_unit()
    assert SPOT_HANDLER_UNIT_FILE.endswith("/" + SPOT_HANDLER_UNIT_NAME)
    assert boot_env_values(BOOT)["SPOT_HANDLER_UNIT_NAME"] == SPOT_HANDLER_UNIT_NAME
    assert 'systemctl enable --now "$SPOT_HANDLER_UNIT_NAME"' in boot_script()


def spot_unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(spot_handler_unit())
    return unit


def test_the_spot_handler_unit_stops_the_stacks_containers_after_the_supervisor_within_the_notice() -> None:
    unit = spot_unit()
    # configparser keeps the last of repeated keys: read the Environment lines from the text.
    env = dict(line.removeprefix("Environment=").split("=", 1) for line in spot_handler_unit().splitlines()
               if line.startswith("Environment="))
    assert env["SPOT_LABEL"] == STACK_TAG and env["SUPERVISOR_UNIT"] == SUPERVISOR_UNIT_NAME
    assert env["STOP_TIMEOUT_S"] == str(VLLM_STOP_TIMEOUT_S)
    # A poll interval and docker stop's grace both pass before EC2 acts, with time left for the shutdown.
    assert int(env["POLL_SECONDS"]) + int(env["STOP_TIMEOUT_S"]) < SPOT_NOTICE_S
    assert unit["Service"]["ExecStart"] == SPOT_HANDLER_SCRIPT and unit["Service"]["Restart"] == "always"
    assert unit["Unit"]["After"] == "docker.service" and unit["Unit"]["StartLimitIntervalSec"] == "0"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_accepts_the_spot_handler_unit(tmp_path: Path) -> None:
    systemd_verify(tmp_path, SPOT_HANDLER_UNIT_NAME, spot_handler_unit(), SPOT_HANDLER_SCRIPT, "spot-interruption.sh")
