"""The plan: what is rendered for each image version, and every check that must fail before deploy."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.model_folders import write_model_folder
from vllm_endpoint.infra.catalog.names import CONTAINER_MODEL_DIR, CONTAINER_USER_NAME, HOST_CACHE_MOUNT
from vllm_endpoint.infra.catalog.vllm_flags import (
    EXAMINED_RELEASES,
    VllmVersion,
    check_server_args,
    flag_spec,
    image_entrypoint,
)
from vllm_endpoint.infra.plan.deployment import DeploymentPlan, build_plan, vllm_argv
from vllm_endpoint.infra.plan.spec import connection_limits
from vllm_endpoint.infra.render.container import plan_docker_run
from vllm_endpoint.infra.render.host_scripts import readiness_gate_script
from vllm_endpoint.infra.settings.models import ConfigError, ServerSettings, load_stack_config

AWS = {"sshAllowedCidrs": "93.184.215.14/32", "apiAllowedCidrs": "93.184.216.0/24"}
MODEL = "Qwen/Qwen2.5-1.5B-Instruct"
# The original command's serving flags, as settings.
ORIGINAL = {"gpuMemoryUtilization": "0.7", "maxNumSeqs": "16", "blockSize": "16", "swapSpace": "4",
            "trustRemoteCode": "true", "modelRevision": "main"}


def plan(**raw: str) -> DeploymentPlan:
    return build_plan(load_stack_config({**AWS, **raw}))


def problems(**raw: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        plan(**raw)
    return info.value.problems


# ----------------------------------------------------------------------------------------------
# Rendering across versions (table-driven).

# `vllm serve` (the images from 0.11.1) takes the model positionally; the api_server module before needs --model.
SERVE_MODEL, API_SERVER_MODEL = [MODEL], ["--model", MODEL]
RENDERING = [
    # (image tag, extra settings, expected argv)
    ("v0.32.0", {}, [*SERVE_MODEL, "--gpu-memory-utilization", "0.9", "--disable-fastapi-docs",
                     "--disable-uvicorn-access-log"]),
    ("v0.32.0", {"maxNumSeqs": "64", "maxModelLen": "8192", "blockSize": "32"},
     [*SERVE_MODEL, "--gpu-memory-utilization", "0.9", "--max-model-len", "8192", "--max-num-seqs", "64",
      "--block-size", "32", "--disable-fastapi-docs", "--disable-uvicorn-access-log"]),
    ("v0.22.0", {"trustRemoteCode": "true", "modelRevision": "abc"},
     [*SERVE_MODEL, "--revision", "abc", "--gpu-memory-utilization", "0.9", "--trust-remote-code",
      "--disable-fastapi-docs", "--disable-uvicorn-access-log"]),
    # The original command on its own image: everything it passed, and no flag the image lacks.
    ("v0.4.2", {**ORIGINAL, "allowInsecureImage": "true"},
     [*API_SERVER_MODEL, "--revision", "main", "--gpu-memory-utilization", "0.7", "--max-num-seqs", "16",
      "--block-size", "16", "--swap-space", "4", "--trust-remote-code"]),
    ("v0.17.1", {**ORIGINAL, "allowInsecureImage": "true"},
     [*SERVE_MODEL, "--revision", "main", "--gpu-memory-utilization", "0.7", "--max-num-seqs", "16",
      "--block-size", "16", "--swap-space", "4", "--trust-remote-code", "--disable-fastapi-docs",
      "--disable-uvicorn-access-log"]),
    # The last api_server image; and several API servers where `vllm serve` runs them.
    ("v0.11.0", {"allowInsecureImage": "true", "instanceType": "g5.4xlarge"},
     [*API_SERVER_MODEL, "--gpu-memory-utilization", "0.9", "--disable-fastapi-docs", "--disable-uvicorn-access-log"]),
    ("v0.32.0", {"instanceType": "g5.4xlarge"},
     [*SERVE_MODEL, "--gpu-memory-utilization", "0.9", "--api-server-count", "4", "--disable-fastapi-docs",
      "--disable-uvicorn-access-log"]),
]


@pytest.mark.parametrize("tag, extra, argv", RENDERING, ids=[f"{r[0]}-{i}" for i, r in enumerate(RENDERING)])
def test_rendering_per_version(tag: str, extra: dict[str, str], argv: list[str]) -> None:
    p = plan(imageTag=tag, **extra)
    assert list(p.vllm.args) == argv
    assert p.vllm.image == f"vllm/vllm-openai:{tag}"
    assert check_server_args(p.vllm.args, p.vllm_version) == []


def test_original_command_on_the_current_image_fails_before_deploy_naming_the_setting() -> None:
    assert problems(**ORIGINAL) == [
        "swapSpace: vLLM 0.32.0 (the image's) has no --swap-space: it was removed in vLLM 0.18.0; it has no "
        "replacement (CPU swap space was dropped with the V0 engine; the V1 engine, the default since 0.8.0, "
        "never used it). Unset it: `pulumi config rm swapSpace`"
    ]


def test_a_flag_the_user_passes_in_extra_args_is_reported_under_extra_args() -> None:
    found = problems(extraArgs='["--swap-space", "4"]')
    assert len(found) == 1 and found[0].startswith("extraArgs: --swap-space: vLLM 0.32.0 rejects it"), found


def test_a_settings_value_the_image_refuses_is_reported_under_the_setting_and_extra_args_under_their_own() -> None:
    assert problems(imageTag="v0.17.1", allowInsecureImage="true", blockSize="20",
                    extraArgs='["--block-size", "24"]') == [
        "blockSize (--block-size): '20' is not one of 1, 8, 16, 32, 64, 128, 256 (vLLM 0.17.1)",
        "extraArgs: --block-size: '24' is not one of 1, 8, 16, 32, 64, 128, 256 (vLLM 0.17.1)",
    ]


def test_the_product_never_overrides_the_entrypoint_and_knows_which_one_each_image_runs() -> None:
    assert image_entrypoint(VllmVersion.parse("0.4.2")) == ("python3", "-m", "vllm.entrypoints.openai.api_server")
    assert image_entrypoint(VllmVersion.parse("0.32.0")) == ("vllm", "serve")


def test_extra_args_are_checked_against_the_image() -> None:
    found = problems(extraArgs='["--max-num-seq", "16"]')
    assert len(found) == 1 and "--max-num-seq" in found[0]
    found = problems(imageTag="v0.22.0", extraArgs='["--device-memory-utilization", "0.8"]')
    assert "--device-memory-utilization" in found[0]
    assert plan(extraArgs='["--enable-chunked-prefill", "--seed", "7"]').vllm.args[-3:] == (
        "--enable-chunked-prefill", "--seed", "7")


def test_an_unversioned_tag_needs_vllm_version() -> None:
    found = problems(imageTag="prod")
    assert found[0].startswith("imageTag:") and "vllmVersion" in found[0]
    assert plan(imageTag="prod", vllmVersion="0.32.0").vllm_version == VllmVersion.parse("0.32.0")


def test_digest_pins_the_image() -> None:
    digest = "sha256:" + "ab" * 32
    assert plan(imageDigest=digest).image_ref == f"vllm/vllm-openai:v0.32.0@{digest}"


# ----------------------------------------------------------------------------------------------
# Security floor and GPU floor.

def test_images_below_the_security_floor_need_the_opt_in() -> None:
    found = problems(imageTag="v0.21.0")
    assert len(found) == 1
    assert "CVE-2026-48746" in found[0] and "CVE-2025-59425" in found[0] and "CVE-2026-27893" in found[0]
    assert "allowInsecureImage" in found[0]
    p = plan(imageTag="v0.21.0", allowInsecureImage="true")
    assert any("below the security floor" in w for w in p.warnings)
    assert ("vllm-endpoint:insecure-image-opt-in", "true") in p.vllm.labels


def test_gpus_below_turing_are_refused() -> None:
    found = problems(instanceType="p3.2xlarge")
    assert any("compute capability 7.0" in p for p in found), found


# ----------------------------------------------------------------------------------------------
# GPU fit, dtype, tensor parallelism.

def test_t4_runs_float16_explicitly() -> None:
    p = plan(instanceType="g4dn.xlarge")
    assert p.vllm.args[1:3] == ("--dtype", "float16")
    assert "T4" in p.summary and "$0.526/h" in p.summary


def test_explicit_bfloat16_on_a_t4_is_reported_once() -> None:
    # Not a second time by the fit check, which would compute with the dtype that cannot run.
    assert problems(instanceType="g4dn.xlarge", dtype="bfloat16") == [
        "dtype: dtype bfloat16 is not supported on T4 (compute capability 7.5; bfloat16 needs 8.0 or newer): "
        "use dtype auto or float16, which vLLM runs in float16 on this GPU"
    ]


def test_a_model_that_does_not_fit_fails_with_numbers_and_ways_out() -> None:
    found = problems(model="Qwen/Qwen2.5-14B-Instruct")
    assert len(found) == 1
    message = found[0]
    assert "GiB" in message and "A10G" in message
    assert "g6e.xlarge" in message or "g5.12xlarge" in message  # a bigger instance that fits
    assert "maxModelLen" in message or "max_model_len" in message or "quantiz" in message


def test_default_tensor_parallelism_is_the_gpus_the_container_gets() -> None:
    p = plan(instanceType="g5.12xlarge", model="Qwen/Qwen2.5-7B-Instruct")
    assert p.tensor_parallel_size == 4 and p.vllm.args[1:3] == ("--tensor-parallel-size", "4")
    assert p.vllm.ipc_mode == "host", "NCCL between tensor-parallel workers needs the host IPC namespace"
    p = plan(instanceType="g5.12xlarge", model="Qwen/Qwen2.5-7B-Instruct", gpus="0,1")
    assert p.tensor_parallel_size == 2 and p.vllm.env_dict()["NVIDIA_VISIBLE_DEVICES"] == "0,1"


def test_gpu_indexes_and_tensor_parallelism_are_checked_against_the_instance() -> None:
    assert any("has 1 GPU(s)" in p for p in problems(gpus="1"))
    assert any(p.startswith("tensorParallelSize") for p in problems(tensorParallelSize="2"))


def test_throttling_max_num_seqs_is_kept_but_warned_about() -> None:
    p = plan(maxNumSeqs="16")
    assert ("--max-num-seqs", "16") in zip(p.vllm.args, p.vllm.args[1:], strict=False)
    assert [w for w in p.warnings if w.startswith("maxNumSeqs")] == [
        "maxNumSeqs=16 caps concurrency; measured with 16 against vLLM's default: 4.4x less output throughput "
        "in vLLM's offline engine (H100, a 600-request burst: 5,339 vs 23,622 tok/s) and 1.47x less through the "
        "API (H200, 500 requests at concurrency 256, with the original command's other settings: 4,682 vs "
        "6,861 output tok/s, p50 latency 12.2 s vs 6.8 s); unset it unless you need the cap"
    ]
    assert not [w for w in plan(maxNumSeqs="64").warnings if w.startswith("maxNumSeqs")]


def test_existing_host_without_gpu_model_skips_the_fit_check_with_a_warning() -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n"
    p = build_plan(load_stack_config({"target": "existing-host", "hostAddress": "10.0.0.5", "hostSshUser": "u",
                                      "hostPublicKey": "ssh-ed25519 AAAA", "sshPrivateKey": key, "gpus": "1"}))
    assert p.fit is None and any("hostGpuModel" in w for w in p.warnings)
    # The default hostCacheDir, and in it the endpoint's own folder, named after it.
    assert p.host_cache_dir == "/opt/vllm-endpoint/cache/vllm"


# ----------------------------------------------------------------------------------------------
# Fine-tuned models.

def test_local_model_folder_is_served_read_only_under_a_stable_name(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path)
    p = plan(modelPath=str(folder))
    assert p.model_upload is not None and p.model_upload.local_dir == folder
    assert p.vllm.args[:3] == (CONTAINER_MODEL_DIR, "--served-model-name", "my-finetune")
    mount = next(m for m in p.vllm.mounts if m.target == CONTAINER_MODEL_DIR)
    assert mount.read_only and mount.source == p.model_upload.remote_dir
    named = plan(modelPath=str(folder), servedModelName="support-bot")
    assert named.vllm.args[2] == "support-bot"
    # The upload folder is the content digest: same content, same folder; new content, new folder.
    assert plan(modelPath=str(folder)).model_upload == p.model_upload
    (folder / "generation_config.json").write_text("{}")
    changed = plan(modelPath=str(folder)).model_upload
    assert changed is not None and changed.remote_dir != p.model_upload.remote_dir



def test_the_readiness_gate_gets_the_fit_estimate_and_the_models_cache_folder(tmp_path: Path) -> None:
    p = plan()
    gate = p.readiness_gate
    assert p.fit is not None
    assert (gate.fit_kv_cache_tokens, gate.fit_max_model_len) == (p.fit.kv_cache_tokens, p.fit.max_model_len)
    assert gate.fit_max_concurrency == round(p.fit.max_concurrent_sequences, 2)
    # Where vLLM's (or the boot prefetch's) download of the Hub model lands on the host.
    assert gate.model_cache_dir == f"{HOST_CACHE_MOUNT}/root-cache/huggingface/hub/models--Qwen--Qwen2.5-1.5B-Instruct"
    command = readiness_gate_script(gate)
    assert f"export FIT_KV_CACHE_TOKENS={p.fit.kv_cache_tokens}\n" in command
    assert f"export FIT_MAX_CONCURRENCY={p.fit.max_concurrent_sequences:.2f}\n" in command
    assert f"export MODEL_CACHE_DIR={gate.model_cache_dir}\n" in command
    # An uploaded model is not downloaded; without a GPU model there is no estimate.
    assert plan(modelPath=str(write_model_folder(tmp_path))).readiness_gate.model_cache_dir == ""
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n"
    bare = build_plan(load_stack_config({"target": "existing-host", "hostAddress": "10.0.0.5", "hostSshUser": "u",
                                         "hostPublicKey": "ssh-ed25519 AAAA", "sshPrivateKey": key})).readiness_gate
    assert (bare.fit_kv_cache_tokens, bare.fit_max_concurrency, bare.fit_max_model_len) == (None, None, None)
    assert "export FIT_KV_CACHE_TOKENS=''\n" in readiness_gate_script(bare)

@pytest.mark.parametrize("missing, phrase", [("config", "config.json"), ("weights", "weights")])
def test_a_model_folder_without_config_or_weights_is_an_error(tmp_path: Path, missing: str, phrase: str) -> None:
    folder = write_model_folder(tmp_path, config=missing != "config", weights=missing != "weights")
    found = problems(modelPath=str(folder))
    assert found and all(p.startswith("modelPath:") for p in found)
    assert any(phrase in p for p in found), found


def test_a_missing_model_folder_is_an_error(tmp_path: Path) -> None:
    found = problems(modelPath=str(tmp_path / "nowhere"))
    assert found[0].startswith("modelPath:") and "nowhere" in found[0]


def test_custom_image_takes_its_version_from_the_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM vllm/vllm-openai:v0.31.0 AS base\nCOPY m /app/model\n")
    p = plan(imageBuildContext=str(tmp_path), model="/app/model")
    assert p.vllm_version == VllmVersion.parse("0.31.0")
    assert p.image_build is not None and p.vllm.image == p.image_build.tag
    (tmp_path / "Dockerfile").write_text("FROM ubuntu:22.04\n")
    found = problems(imageBuildContext=str(tmp_path), model="/app/model")
    assert found[0].startswith("imageBuildContext:") and "vllmVersion" in found[0]


def test_gated_model_token_is_a_secret_env_not_an_argument() -> None:
    key = "hf_" + "x" * 30
    p = build_plan(load_stack_config({**AWS, "hfToken": key}))
    assert p.vllm.secret_env == ("VLLM_API_KEY", "HF_TOKEN")
    assert key not in " ".join(p.vllm.args) and key not in plan_docker_run(p)


# The images have no /etc/passwd entry for containerUser; torch < 2.12 (images up to v0.24.0) dies in
# `getpass.getuser()` without USER/LOGNAME (tests/real/test_nonroot_user.py shows it on a real engine).
@pytest.mark.parametrize("tag", ["v0.22.0", "v0.24.0", "v0.32.0"])
def test_the_vllm_container_names_its_user_for_lookups_without_a_passwd_entry(tag: str) -> None:
    p = plan(imageTag=tag, containerUser="1234:1234")
    env = p.vllm.env_dict()
    assert p.vllm.user == "1234:1234"
    assert env["USER"] == env["LOGNAME"] == CONTAINER_USER_NAME
    lines = plan_docker_run(p).splitlines()
    assert f"  --env USER={CONTAINER_USER_NAME} \\" in lines
    assert f"  --env LOGNAME={CONTAINER_USER_NAME} \\" in lines


def test_extra_env_can_name_the_container_user_otherwise() -> None:
    p = plan(extraEnv='{"USER": "svc"}')
    assert [v for k, v in p.vllm.env if k == "USER"] == ["svc"]
    assert p.vllm.env_dict()["LOGNAME"] == CONTAINER_USER_NAME


# ----------------------------------------------------------------------------------------------
# Property: whatever valid settings a user picks, the rendered argv parses for the image's version.

SUPPORTED = [v for v in EXAMINED_RELEASES if v >= VllmVersion.parse("0.4.0")]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from(SUPPORTED),
    max_num_seqs=st.one_of(st.none(), st.integers(1, 1024)),
    max_model_len=st.one_of(st.none(), st.sampled_from([512, 2048, 4096, 8192, 32768])),
    block_size=st.one_of(st.none(), st.sampled_from([8, 16, 32])),
    utilization=st.floats(0.3, 0.95).map(lambda f: round(f, 2)),
    trust=st.booleans(),
    dtype=st.sampled_from(["auto", "float16", "half", "float32"]),
    quantization=st.sampled_from([None, "awq", "gptq", "fp8"]),
    api_servers=st.sampled_from([None, 1, 2, 4]),
    instance_type=st.sampled_from(["g6e.xlarge", "g6e.4xlarge"]),
)
def test_every_rendered_argv_parses_for_its_version(
    version: VllmVersion, max_num_seqs: int | None, max_model_len: int | None, block_size: int | None,
    utilization: float, trust: bool, dtype: str, quantization: str | None, api_servers: int | None,
    instance_type: str,
) -> None:
    raw = {"imageTag": f"v{version}", "allowInsecureImage": "true", "gpuMemoryUtilization": str(utilization),
           "dtype": dtype, "instanceType": instance_type}
    optional = {"maxNumSeqs": max_num_seqs, "maxModelLen": max_model_len, "blockSize": block_size,
                "quantization": quantization, "apiServerCount": api_servers}
    raw |= {k: str(v) for k, v in optional.items() if v is not None}
    if trust:
        raw |= {"trustRemoteCode": "true", "modelRevision": "0123abcd"}
    try:
        p = plan(**raw)
    except ConfigError as err:
        # Only the memory fit may refuse (e.g. float32 weights with a long context); never a flag.
        assert not any("flags:" in problem for problem in err.problems), err.problems
        return
    assert check_server_args(p.vllm.args, p.vllm_version) == []
    serve = version >= VllmVersion.parse("0.11.1")  # the image's entrypoint from then on is `vllm serve`
    assert p.vllm.args[:2] == ((MODEL, p.vllm.args[1]) if serve else ("--model", MODEL))
    assert ("--model" in p.vllm.args) is not serve
    assert ("--api-server-count" in p.vllm.args) is (serve and p.api_servers is not None and p.api_servers.count > 1)


# ----------------------------------------------------------------------------------------------
# GPUs added for issue 11: H200 boxes, on AWS and as existing hosts.

HOST = {"target": "existing-host", "hostAddress": "10.0.0.5", "hostSshUser": "u", "hostPublicKey": "ssh-ed25519 AAAA",
        "sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n", "gpus": "0"}


@pytest.mark.parametrize("instance_type", ["p5e.48xlarge", "p5en.48xlarge", "p6-b200.48xlarge"])
def test_the_h200_and_b200_types_plan(instance_type: str) -> None:
    p = plan(instanceType=instance_type, model="meta-llama/Llama-3.1-8B-Instruct")
    assert p.instance is not None and p.instance.gpu_count == 8 and p.tensor_parallel_size == 8
    assert p.fit is not None and p.fit.fits and p.fit.gpu.name == p.instance.gpu.name


def test_a_type_without_an_on_demand_price_says_so_in_the_plan() -> None:
    p = plan(instanceType="p5e.48xlarge", model="meta-llama/Llama-3.1-8B-Instruct")
    assert "p5e.48xlarge no on-demand price" in p.summary


def test_an_h200_host_is_fit_checked_as_on_the_real_box() -> None:
    # Issue 11: on a real H200 (vLLM 0.24.0, Qwen2.5-1.5B) this check predicted 4,439,696 KV-cache tokens
    # where vLLM reported 4,496,080. The catalog's H200 (143771 MiB) reproduces the prediction exactly.
    p = build_plan(load_stack_config({**HOST, "hostGpuModel": "H200"}))
    assert p.fit is not None and p.fit.gpu.name == "H200"
    assert p.fit.kv_cache_tokens == 4_439_696
    assert 0.98 < p.fit.kv_cache_tokens / 4_496_080 < 1


def test_an_unlisted_gpu_is_fit_checked_from_its_memory_and_capability() -> None:
    # The same box described by hand: nvidia-smi's 143771 MiB / 1024 and compute_cap 9.0.
    p = build_plan(load_stack_config({**HOST, "hostGpuMemoryGib": str(143771 / 1024),
                                      "hostGpuComputeCapability": "9.0"}))
    assert p.fit is not None and p.fit.gpu.name == "unlisted GPU" and p.fit.kv_cache_tokens == 4_439_696
    assert not any("fit not checked" in w for w in p.warnings)


def test_an_unlisted_pre_ampere_gpu_serves_bf16_checkpoints_in_float16() -> None:
    p = build_plan(load_stack_config({**HOST, "hostGpuMemoryGib": "15", "hostGpuComputeCapability": "7.5"}))
    assert p.dtype == "float16" and ("--dtype", "float16") in zip(p.vllm.args, p.vllm.args[1:], strict=False)


def test_an_unlisted_gpu_below_vllms_floor_is_refused_by_the_setting_that_said_so() -> None:
    found = problems(**HOST, hostGpuMemoryGib="16", hostGpuComputeCapability="7.0")
    assert ("hostGpuComputeCapability: unlisted GPU has compute capability 7.0; vLLM 0.32.0 needs 7.5 or newer "
            "(T4, A10G, L4, L40S, A100, H100, H200, B200): choose e.g. g5.xlarge") in found


def test_the_warning_without_a_gpu_names_both_ways_to_describe_it() -> None:
    p = build_plan(load_stack_config(HOST))
    assert ("GPU memory fit not checked: set hostGpuModel (and hostGpuCount) for this host, or hostGpuMemoryGib "
            "and hostGpuComputeCapability for a GPU not in docs/gpu-catalog.md") in p.warnings


# ----------------------------------------------------------------------------------------------
# API server processes (issue 15): a default that fits the machine, only where the image runs several.

@pytest.mark.parametrize("instance_type, model, expected", [
    # 4 vCPUs = 2 cores: one for the engine, one for the proxy and the boot prefetch; vLLM's single server.
    ("g5.xlarge", MODEL, 1),
    ("g6.xlarge", MODEL, 1),
    # 8 vCPUs: two cores left.
    ("g5.2xlarge", MODEL, 2),
    # 16 vCPUs (the H200 run's host size): six left, capped at the measured best of 4.
    ("g5.4xlarge", MODEL, 4),
    # 4 GPUs in one tensor-parallel engine: 5 engine processes, still plenty left.
    ("g5.12xlarge", "Qwen/Qwen2.5-7B-Instruct", 4),
])
def test_the_default_api_server_count_follows_the_instance_types_cpus(instance_type: str, model: str,
                                                                       expected: int) -> None:
    p = plan(instanceType=instance_type, model=model)
    assert p.api_servers is not None and p.api_servers.count == expected
    rendered = list(p.vllm.args[p.vllm.args.index("--api-server-count") + 1:][:1]) \
        if "--api-server-count" in p.vllm.args else []
    assert rendered == ([str(expected)] if expected > 1 else [])
    assert f"API servers: {expected} (default for {instance_type}" in p.summary
    assert not any("apiServerCount" in w for w in p.warnings)


def test_an_existing_host_runs_one_api_server_unless_set_and_the_plan_says_why() -> None:
    p = build_plan(load_stack_config({**HOST, "hostGpuModel": "A10G"}), hub_fetcher=None)
    assert p.api_servers is not None and p.api_servers.count == 1 and "--api-server-count" not in p.vllm.args
    assert "API servers: 1 (the host's vCPUs are unknown: set hostCpuCount (`nproc`), or apiServerCount" in p.summary
    p = build_plan(load_stack_config({**HOST, "hostGpuModel": "A10G", "apiServerCount": "3"}), hub_fetcher=None)
    assert p.vllm.args[p.vllm.args.index("--api-server-count") + 1] == "3"
    assert "API servers: 3 (apiServerCount)" in p.summary and not p.warnings


def test_an_image_that_runs_one_api_server_renders_none_and_warns_only_when_asked_for_more() -> None:
    # 0.11.0's image runs the api_server module: it accepts --api-server-count and ignores it.
    quiet = plan(imageTag="v0.11.0", allowInsecureImage="true", instanceType="g5.4xlarge")
    assert "--api-server-count" not in quiet.vllm.args and not any("apiServerCount" in w for w in quiet.warnings)
    asked = plan(imageTag="v0.11.0", allowInsecureImage="true", instanceType="g5.4xlarge", apiServerCount="4")
    assert "--api-server-count" not in asked.vllm.args and "-asc" not in asked.vllm.args
    assert any(w.startswith("apiServerCount=4: the vLLM 0.11.0 image runs `python3 -m "
                            "vllm.entrypoints.openai.api_server`") and "several from vLLM 0.11.1" in w
               for w in asked.warnings), asked.warnings
    # 0.9.2's server parser would refuse the flag outright (only its `vllm serve` had it).
    old = plan(imageTag="v0.9.2", allowInsecureImage="true", apiServerCount="2")
    assert "--api-server-count" not in old.vllm.args and check_server_args(old.vllm.args, old.vllm_version) == []


def test_more_api_servers_than_the_cpus_leave_is_a_warning_not_an_error() -> None:
    p = plan(instanceType="g5.xlarge", apiServerCount="4")
    assert p.vllm.args[p.vllm.args.index("--api-server-count") + 1] == "4"
    assert any(w.startswith("apiServerCount=4 is more than the 1 core(s) left for API servers (g5.xlarge: 4 vCPUs")
               for w in p.warnings), p.warnings


@pytest.mark.parametrize("extra", ['["--api-server-count", "2"]', '["-asc=2"]'])
def test_the_api_server_count_comes_from_the_setting_not_extra_args(extra: str) -> None:
    assert any(p.startswith("extraArgs: ") and "set apiServerCount instead" in p
               for p in problems(extraArgs=extra))


@pytest.mark.parametrize("version", EXAMINED_RELEASES, ids=str)
def test_the_model_is_positional_exactly_where_the_entrypoint_is_vllm_serve(version: VllmVersion) -> None:
    """Every examined release: the rendered argv parses, and `--model` (deprecated by `vllm serve` from the
    release the table names) is rendered only for the api_server module, which has no positional model."""
    argv = vllm_argv(ServerSettings(), MODEL, MODEL, None, "auto", 1, version)
    assert check_server_args(argv, version) == []
    deprecated = flag_spec("--model").deprecated_since
    assert deprecated is not None
    assert ("--model" in argv) is (version < deprecated)
    assert (argv[0] == MODEL) is (image_entrypoint(version) == ("vllm", "serve"))


# ----------------------------------------------------------------------------------------------
# Issue 14: room for a Hub model's weights on an existing host's disk (checked there: check-model-room.sh).

def test_an_existing_host_checks_room_for_the_hub_models_weights_aws_plans_its_volume() -> None:
    host = build_plan(load_stack_config({**HOST, "model": "Qwen/Qwen2.5-1.5B-Instruct"}))
    assert host.model_facts is not None and host.model_facts.weight_bytes is not None
    assert host.model_room is not None
    assert host.model_room.model == "Qwen/Qwen2.5-1.5B-Instruct"
    assert host.model_room.cache_dir == host.host_model_cache_dir
    assert host.model_room.weight_bytes == host.model_facts.weight_bytes
    # AWS: the plan itself compares the weights with cacheVolumeSizeGb.
    assert plan(model="Qwen/Qwen2.5-1.5B-Instruct").model_room is None


def test_an_uploaded_model_needs_no_hub_room_check(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path / "m")
    assert build_plan(load_stack_config({**HOST, "modelPath": str(folder)})).model_room is None


def test_an_open_files_limit_below_what_the_proxy_needs_for_max_num_seqs_is_refused() -> None:
    found = problems(containerOpenFiles="4096", maxNumSeqs="1024")
    needed = connection_limits(1024).open_files
    assert needed > 4096
    assert any(p.startswith(f"containerOpenFiles: 4096 is below the {needed} open files the proxy needs for 1024 "
                            "sequences at once (maxNumSeqs)") for p in found), found
    # The default limit holds the proxy of any batch the catalog's GPUs run by default.
    assert plan(maxNumSeqs="1024").proxy_settings.max_num_seqs == 1024


@pytest.mark.parametrize(("cpus", "expected"), [(4, 1), (8, 2), (16, 4), (192, 4)])
def test_an_existing_hosts_cpu_count_gives_the_api_server_default_an_instance_type_would(cpus: int,
                                                                                           expected: int) -> None:
    # One GPU: 1 core for the engine, 1 for the proxy, 2 vCPUs a core.
    p = build_plan(load_stack_config({**HOST, "hostGpuModel": "A10G", "hostCpuCount": str(cpus)}), hub_fetcher=None)
    assert p.api_servers is not None and p.api_servers.count == expected
    assert f"the host's {cpus} vCPUs (hostCpuCount)" in p.api_servers.why
