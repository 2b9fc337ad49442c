"""The host files' parameters, as the renderers fill them: each command exports exactly what the files
it runs require, boot.env holds exactly what boot.sh and prepare-cache-volume.sh require (and each
stops, naming it, when one is missing), and no path or name of infra/catalog/names.py is spelt in a
host file, where a second copy could drift from the first."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.unit.model_folders import COPY_URN, UPLOAD_PLAN
from vllm_endpoint.infra.catalog import names
from vllm_endpoint.infra.plan.spec import ModelRoom, Owner, ReadinessGate
from vllm_endpoint.infra.render.cloudwatch_agent import AgentInputs, agent_apply_script, agent_stop_script
from vllm_endpoint.infra.render.host_scripts import (
    EnvValue,
    HostClaims,
    env_lines,
    env_strings,
    existing_host_prepare_script,
    host_claims_script,
    host_ready_script,
    local_model_copy_script,
    model_stage_script,
    model_verify_script,
    prefetch_wait_script,
    read_host_file,
    readiness_gate_script,
    write_files_script,
)
from vllm_endpoint.infra.render.userdata import HostBootSettings, boot_env_values, boot_script

HOST_DIR = Path(__file__).resolve().parents[4] / "infra" / "host"
# `${NAME:?message}` (set and not empty) or `${NAME?message}` (set, may be empty): how a host file
# states that it requires a parameter.
REQUIRED = re.compile(r"\$\{([A-Z][A-Z0-9_]*):?\?")
BOOT = HostBootSettings("vol-0123456789abcdef0", "ubuntu", "private", "public")


def required(name: str) -> set[str]:
    return set(REQUIRED.findall(read_host_file(name)))


def exported(command: str) -> set[str]:
    return set(re.findall(r"^export ([A-Z][A-Z0-9_]*)=", command, re.M))


def files_run(command: str) -> list[str]:
    return re.findall(r"^\{ bash -c \"\$\(cat <&3\)\" (\S+) \|\| exit; \}", command, re.M)


GATE = ReadinessGate("http://127.0.0.1:30005/v1/models", "vllm", 600, "/tmp/t")
CLAIMS = HostClaims(Owner("p", "s", "e"), "10.0.0.5", 30005, "", ("e", "e-proxy"))
ROOM = ModelRoom("org/m", "/c/root-cache/huggingface/hub/models--org--m", 3 * 2**30, False)
COMMANDS = {
    "host-ready": (host_ready_script("/c", True, "1:1", open_files=1024),
                   ["host-ready.sh", "check-nvidia-runtime.sh", "check-cache-owner.sh", "check-open-files.sh",
                    "prefetch-wait.sh"]),
    "host-ready-no-gpu": (host_ready_script("/c", False, "1:1", open_files=1024),
                          ["host-ready.sh", "check-cache-owner.sh", "check-open-files.sh", "prefetch-wait.sh"]),
    "existing-host": (existing_host_prepare_script("/c", True, "1:1", open_files=1024),
                      ["prepare-existing-host.sh", "check-nvidia-runtime.sh", "check-cache-owner.sh",
                       "check-open-files.sh"]),
    "existing-host-no-gpu": (existing_host_prepare_script("/c", False, "1:1", open_files=1024),
                             ["prepare-existing-host.sh", "check-cache-owner.sh", "check-open-files.sh"]),
    "existing-host-claims": (existing_host_prepare_script("/c", False, "1:1", CLAIMS, open_files=1024),
                             ["prepare-existing-host.sh", "check-host-claims.sh", "check-cache-owner.sh",
                              "check-open-files.sh"]),
    "existing-host-room": (existing_host_prepare_script("/c", False, "1:1", open_files=1024, room=ROOM),
                           ["prepare-existing-host.sh", "check-cache-owner.sh", "check-open-files.sh",
                            "check-model-room.sh"]),
    "host-claims": (host_claims_script(CLAIMS), ["check-host-claims.sh"]),
    "prefetch-wait": (prefetch_wait_script("/s", 5), ["prefetch-wait.sh"]),
    "readiness": (readiness_gate_script(GATE), ["readiness-gate.sh"]),
    "write-files": (write_files_script("/p", {"nginx.conf": "0644"}), ["write-files.sh"]),
    "model-stage": (model_stage_script(UPLOAD_PLAN), ["stage-model-upload.sh"]),
    "model-verify": (model_verify_script(UPLOAD_PLAN, COPY_URN)[0], ["verify-model.sh"]),
    "local-model-copy": (local_model_copy_script(UPLOAD_PLAN), ["stage-model-upload.sh", "copy-local-model.sh"]),
    "cloudwatch-agent-apply": (agent_apply_script(AgentInputs("s", "NS", "172.18.0.2")),
                               ["cloudwatch-agent-apply.sh"]),
    "cloudwatch-agent-stop": (agent_stop_script(), ["cloudwatch-agent-stop.sh"]),
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_exports_exactly_what_its_files_require(name: str) -> None:
    command, files = COMMANDS[name]
    assert files_run(command) == files
    assert exported(command) == set().union(*(required(f) for f in files))


def test_every_shell_file_but_boots_is_run_by_some_command() -> None:
    run = {f for _, files in COMMANDS.values() for f in files}
    # The boot files run by cloud-init, the supervisor and the spot handler by their systemd units
    # (tests/unit/infra/render/test_userdata.py), the CloudWatch agent's by boot.sh and the agent's step, the
    # ECS fleet's instance set-up as its launch template's user-data (tests/unit/infra/render/test_ecs_host.py),
    # the fleet's wait on the deploying machine with its environment (tests/unit/infra/host/test_service_ready.py).
    assert {p.name for p in HOST_DIR.glob("*.sh")} - run == {"boot.sh", "prepare-cache-volume.sh",
                                                             "supervise-containers.sh", "spot-interruption.sh",
                                                             "cloudwatch-agent.sh", "ecs-host.sh",
                                                             "service-ready.sh"}


def test_boot_env_holds_exactly_what_the_boot_files_require() -> None:
    wanted = (required("boot.sh") | required("prepare-cache-volume.sh")) - {"BOOT_ENV_FILE"}
    assert set(boot_env_values(BOOT)) == wanted
    # boot.sh checks the CloudWatch agent script's parameters for it (it runs detached, later).
    assert required("cloudwatch-agent.sh") <= wanted


def run_boot(tmp_path: Path, values: dict[str, EnvValue]) -> subprocess.CompletedProcess[str]:
    """The boot script as user-data installs it, with an env file of `values`, asked for a mode it does
    not have: it checks its env file first, and with a complete one it stops at the mode (status 2)
    before doing anything."""
    env_file, script = tmp_path / "boot.env", tmp_path / "50-boot"
    env_file.write_text(env_lines(values))
    script.write_text(boot_script(str(env_file)))
    # An unreachable IMDS on loopback: should a check ever be skipped, nothing leaves the machine.
    env = {"PATH": os.environ["PATH"], "VLLM_ENDPOINT_IMDS_URL": "http://127.0.0.1:9"}
    return subprocess.run(["bash", str(script), "no-such-mode"], env=env, capture_output=True, text=True, timeout=30)


def test_boot_sh_with_a_complete_env_file_passes_its_checks(tmp_path: Path) -> None:
    proc = run_boot(tmp_path, dict(boot_env_values(BOOT)))
    assert proc.returncode == 2 and "usage:" in proc.stderr, proc.stderr


@pytest.mark.parametrize("missing", sorted(boot_env_values(BOOT)))
def test_boot_sh_stops_naming_a_missing_env_value(missing: str, tmp_path: Path) -> None:
    values = {k: v for k, v in boot_env_values(BOOT).items() if k != missing}
    proc = run_boot(tmp_path, values)
    assert proc.returncode == 1
    assert f"{missing}: is missing in {tmp_path / 'boot.env'}" in proc.stderr


@pytest.mark.parametrize("missing", sorted(required("prepare-cache-volume.sh")))
def test_prepare_cache_volume_stops_naming_a_missing_parameter(missing: str, tmp_path: Path) -> None:
    values = {k: v for k, v in env_strings(boot_env_values(BOOT)).items() if k in required("prepare-cache-volume.sh")}
    # Should the check be skipped, the script finds no device here and mounts nothing.
    env = {**values, "CACHE_MOUNT_POINT": str(tmp_path / "mnt"), "CACHE_WAIT_SECONDS": "0",
           "CACHE_DEVICE_DIR": str(tmp_path), "CACHE_FSTAB": str(tmp_path / "fstab"), "PATH": os.environ["PATH"]}
    del env[missing]
    proc = subprocess.run(["bash", str(HOST_DIR / "prepare-cache-volume.sh")], env=env, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 1
    assert f"{missing}: is not set" in proc.stderr
    assert not (tmp_path / "fstab").exists()


def _facts(path: Path) -> dict[str, str]:
    """The names.py values a host file could spell: paths, tags and addresses (they hold / : or .), and
    the cache folder names (except in the Python prefetcher, where `models` is the Hugging Face API's)."""
    values = {k: v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}
    facts = {k: v for k, v in values.items() if re.search(r"[/:.]", v)}
    if path.suffix != ".py":
        facts |= {k: v for k, v in values.items() if k.startswith("CACHE_SUBDIR_")}
    return facts


def _whole(value: str) -> str:
    """`value` not as part of a longer name (`models` is not in `hf-models`, `/var/lib/x` is in `:-/var/lib/x`)."""
    before = r"(?<![\w-])" if value[0].isalnum() else ""
    after = r"(?![\w-])" if value[-1].isalnum() else ""
    return before + re.escape(value) + after


@pytest.mark.parametrize("path", sorted(HOST_DIR.iterdir()), ids=lambda p: p.name)
def test_no_host_file_spells_a_fact_of_names_py(path: Path) -> None:
    code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    facts = _facts(path)
    assert len(facts) > 20  # the filter above found the paths and tags, not nothing
    spelt = {k: v for k, v in facts.items() if re.search(_whole(v), code)}
    assert not spelt, f"{path.name} spells {spelt}: take them from the parameters the renderer passes"
