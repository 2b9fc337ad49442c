"""A fine-tune upload to a nearly full cache, on the test host over SSH, as `pulumi up` makes it (stage,
SFTP copy, verify and rename): a copy cut short by a full disk is never served, the message names the
sizes and the setting, and re-running the deploy after freeing space succeeds with no cleanup by hand.

The cache folder is a small ext4 file system on a loop device, mounted where the stack's hostCacheDir
points (the AWS cache volume is a file system of its own the same way). No container is started: what
the containers would mount is checked on disk.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real.harness import loopdev
from tests.real.harness.common import BUILD_DIR, CommandError, run
from tests.real.harness.deployer import COPY_URN, existing_host_config, upload_model
from tests.real.harness.testhost import TestHost
from vllm_endpoint.infra.plan.deployment import DeploymentPlan, build_plan
from vllm_endpoint.infra.render.host_scripts import (
    existing_host_prepare_script,
    model_stage_script,
    model_verify_script,
)

pytestmark = pytest.mark.real

VOLUME_MIB = 96
WEIGHTS_MIB = 40
MIB = 1024 * 1024


def _model_folder(root: Path) -> Path:
    """A merged fine-tune whose weights (random bytes in a valid safetensors file) are WEIGHTS_MIB."""
    folder = root / "big-finetune"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
        "max_position_embeddings": 512, "torch_dtype": "bfloat16"}))
    count = WEIGHTS_MIB * MIB // 2
    header = json.dumps({"w": {"dtype": "BF16", "shape": [count], "data_offsets": [0, count * 2]}}).encode()
    with (folder / "model.safetensors").open("wb") as out:
        out.write(len(header).to_bytes(8, "little") + header)
        out.write(os.urandom(count * 2))
    for tokenizer_file in ("tokenizer.json", "tokenizer_config.json"):
        (folder / tokenizer_file).write_text("{}")
    return folder


@pytest.fixture(scope="module")
def cache(test_host: TestHost) -> Iterator[Path]:
    mount = BUILD_DIR / "host-cache" / f"{test_host.name}-upload"
    mount.mkdir(parents=True, exist_ok=True)
    with loopdev.loop_device(size_mib=VOLUME_MIB) as device:
        run(["mkfs.ext4", "-q", "-m", "0", device])
        run(["mount", device, str(mount)])
        try:
            os.chown(mount, test_host.uid, test_host.gid)
            yield mount
        finally:
            loopdev.unmount_all(device)


@pytest.fixture(scope="module")
def plan(test_host: TestHost, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> DeploymentPlan:
    source = _model_folder(tmp_path_factory.mktemp("upload-src"))
    # scp runs as root here; the folder only has to be readable by it.
    planned = build_plan(existing_host_config(test_host, cache, modelPath=str(source)), hub_fetcher=None)
    test_host.ssh(existing_host_prepare_script(planned.host_cache_dir, False, planned.config.server.container_user,
                                               open_files=planned.config.server.container_open_files))
    return planned


def _fill(host: TestHost, path: Path, leave_mib: int) -> None:
    """A file that leaves `leave_mib` MiB free on the cache file system (written by the SSH user)."""
    free = int(host.ssh(f"df -Pk {path.parent} | awk 'NR == 2 {{ print $4 }}'").stdout) // 1024
    host.ssh(f"fallocate -l {max(free - leave_mib, 1)}M {path}")


def _scp_into_staging(host: TestHost, plan: DeploymentPlan) -> subprocess.CompletedProcess[str]:
    """The copy step alone, as pulumi-command's CopyToRemote makes it (SFTP as the SSH user)."""
    upload = plan.model_upload
    assert upload is not None
    return subprocess.run(["scp", "-q", "-r", *host.ssh_options, str(upload.local_dir),
                           f"{host.ssh_user}@{host.address}:{upload.staging_dir}"],
                          capture_output=True, text=True, timeout=300)


def test_a_full_cache_is_named_before_anything_is_copied(test_host: TestHost, plan: DeploymentPlan,
                                                        cache: Path) -> None:
    upload = plan.model_upload
    assert upload is not None
    filler = cache / "filler"
    _fill(test_host, filler, leave_mib=WEIGHTS_MIB // 2)
    try:
        with pytest.raises(CommandError) as info:
            upload_model(test_host, plan)
        message = info.value.proc.stderr
        assert f"the cache at {Path(upload.remote_dir).parent} has " in message
        assert f"MiB free, the model needs {WEIGHTS_MIB} MiB; free space there, or set hostCacheDir" in message
        assert not Path(upload.remote_dir).exists() and not Path(upload.staging_dir).exists()
    finally:
        test_host.ssh(f"rm -f {filler}")


def test_a_copy_cut_short_is_never_served_and_a_rerun_after_freeing_space_succeeds(
        test_host: TestHost, plan: DeploymentPlan, cache: Path) -> None:
    upload = plan.model_upload
    assert upload is not None
    filler = cache / "filler"
    # The stage step finds room; then the disk fills (another writer) and the copy fails half-way, as scp
    # did in the finding ("Failure"). `pulumi up` stops there: the check never runs.
    test_host.ssh(model_stage_script(plan))
    _fill(test_host, filler, leave_mib=WEIGHTS_MIB // 2)
    assert _scp_into_staging(test_host, plan).returncode != 0
    staged = Path(upload.staged_copy) / "model.safetensors"
    assert staged.stat().st_size < (upload.local_dir / "model.safetensors").stat().st_size
    # What the container mounts does not exist: nothing half-written can be served.
    assert not Path(upload.remote_dir).exists()

    # The user frees space and runs `pulumi up` again: Pulumi re-creates the failed copy (into the staging
    # folder, over what the failed one left) and then runs the check, which moves it into place.
    test_host.ssh(f"rm -f {filler}")
    assert _scp_into_staging(test_host, plan).returncode == 0
    verify, manifest = model_verify_script(plan, COPY_URN)
    done = test_host.ssh(verify, input=manifest)
    assert f"model verified (4 files, {upload.contents.total_bytes} bytes)" in done.stdout
    served = Path(upload.remote_dir) / "model.safetensors"
    assert served.read_bytes() == (upload.local_dir / "model.safetensors").read_bytes()
    assert (Path(upload.remote_dir) / ".vllm-endpoint-verified").read_text().strip() == upload.digest
    assert not Path(upload.staging_dir).exists()
    # A later deploy of the same folder sends nothing (the harness's stand-in for "no change").
    upload_model(test_host, plan)
