"""A fine-tune upload is all or nothing: stage-model-upload.sh, the copy (as SFTP makes it: into the
staging folder), verify-model.sh; run by /bin/sh as pulumi-command runs them, on real files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.model_folders import COPY_URN, upload_plan, write_model_folder
from vllm_endpoint.infra.plan.deployment import DeploymentPlan
from vllm_endpoint.infra.render.host_scripts import local_model_copy_script, model_stage_script, model_verify_script


def run(script: str, stdin: str | None = None, path_prefix: str = "") -> subprocess.CompletedProcess[str]:
    prefix = f"PATH={path_prefix}:$PATH; export PATH\n" if path_prefix else ""
    return subprocess.run(["/bin/sh", "-c", prefix + script], input=stdin, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def planned(tmp_path: Path) -> tuple[Path, DeploymentPlan]:
    source = write_model_folder(tmp_path / "src", "my-finetune")
    (source / "sub").mkdir()
    (source / "sub" / "extra.json").write_text('{"x": 1}')
    return source, upload_plan(source, cache_dir=str(tmp_path / "cache"))


def sftp_copy(source: Path, staging: str) -> None:
    # SFTP into a folder that exists: the copy lands as <staging>/<source name>.
    shutil.copytree(source, Path(staging) / source.name, dirs_exist_ok=True)


def verify(plan: DeploymentPlan) -> subprocess.CompletedProcess[str]:
    command, manifest = model_verify_script(plan, COPY_URN)
    return run(command, manifest)


def test_a_whole_copy_is_verified_and_moved_into_place_with_one_rename(planned: tuple[Path, DeploymentPlan]) -> None:
    source, plan = planned
    upload = plan.model_upload
    assert upload is not None
    staged = run(model_stage_script(plan))
    assert staged.returncode == 0, staged.stderr
    assert Path(upload.staging_dir).is_dir() and not any(Path(upload.staging_dir).iterdir())
    sftp_copy(source, upload.staging_dir)
    done = verify(plan)
    assert done.returncode == 0, done.stderr
    assert f"model verified (5 files, {upload.contents.total_bytes} bytes)" in done.stdout
    model = Path(upload.remote_dir)
    assert sorted(str(p.relative_to(model)) for p in model.rglob("*") if p.is_file()) == sorted(
        [".vllm-endpoint-verified", "config.json", "model.safetensors", "sub/extra.json", "tokenizer.json",
         "tokenizer_config.json"])
    assert not Path(upload.staging_dir).exists()
    # The next deploy's check (no new copy) finds it in place.
    assert "model already verified" in verify(plan).stdout


@pytest.mark.parametrize("damage, reported", [
    (lambda f: f.write_bytes(f.read_bytes()[:-3]), "model.safetensors: {short} bytes, the source has {size}"),
    (lambda f: f.write_bytes(f.read_bytes()[:-1] + b"\x01"), "model.safetensors: its content differs"),
    (lambda f: f.unlink(), "model.safetensors: missing"),
])
def test_a_damaged_copy_is_never_moved_into_place(planned: tuple[Path, DeploymentPlan], damage: object,
                                                  reported: str) -> None:
    source, plan = planned
    upload = plan.model_upload
    assert upload is not None
    # What an earlier, good deploy left in place stays in place.
    run(model_stage_script(plan))
    sftp_copy(source, upload.staging_dir)
    assert verify(plan).returncode == 0
    (Path(upload.remote_dir) / ".vllm-endpoint-verified").unlink()  # pretend it is another digest's copy
    run(model_stage_script(plan))
    sftp_copy(source, upload.staging_dir)
    size = (source / "model.safetensors").stat().st_size
    damage(Path(upload.staged_copy) / "model.safetensors")  # type: ignore[operator]
    reported = reported.format(short=size - 3, size=size)
    failed = verify(plan)
    assert failed.returncode == 1
    assert "differs from modelPath in 1 of 5 file(s); it was removed" in failed.stderr and reported in failed.stderr
    assert f"copy it again with `pulumi up --replace '{COPY_URN}'`" in failed.stderr
    assert not Path(upload.staging_dir).exists()
    assert (Path(upload.remote_dir) / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()


def test_a_retried_copy_replaces_what_a_failed_one_left(planned: tuple[Path, DeploymentPlan]) -> None:
    source, plan = planned
    upload = plan.model_upload
    assert upload is not None
    run(model_stage_script(plan))
    partial = Path(upload.staged_copy)
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    # The next `pulumi up` re-runs only the copy, into the same staging folder.
    sftp_copy(source, upload.staging_dir)
    assert verify(plan).returncode == 0


def test_a_model_larger_than_the_free_space_names_the_setting_to_change(tmp_path: Path) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    # `df -Pk` of a full disk.
    (fake_bin / "df").write_text("#!/bin/sh\necho 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
                                 "echo '/dev/x 100 100 0 100% /'\n")
    (fake_bin / "df").chmod(0o755)
    source = write_model_folder(tmp_path / "src", "ft")
    existing = run(model_stage_script(upload_plan(source, cache_dir=str(tmp_path / "c"))), path_prefix=str(fake_bin))
    assert existing.returncode == 1
    assert "has 0 MiB free, the model needs 0 MiB; free space there, or set hostCacheDir" in existing.stderr
    aws = upload_plan(source, target="aws")
    assert "raise cacheVolumeSizeGb (the volume grows in place" in model_stage_script(aws)


def test_the_local_target_stages_and_copies_in_one_step(planned: tuple[Path, DeploymentPlan]) -> None:
    _, plan = planned
    copied = run(local_model_copy_script(plan))
    assert copied.returncode == 0, copied.stderr
    assert verify(plan).returncode == 0
