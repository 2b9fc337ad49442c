"""infra/settings/docker_run_import.py: a user's `docker run` becomes a stack file that the program's own loader
accepts, plans and renders back into a `docker run` that differs from the original only where the README's
"From `docker run`" table says why."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.model_folders import write_model_folder
from vllm_endpoint.infra.catalog.names import PROJECT
from vllm_endpoint.infra.plan.deployment import build_plan
from vllm_endpoint.infra.render.container import docker_run_argv, plan_docker_run
from vllm_endpoint.infra.render.proxy import proxy_spec
from vllm_endpoint.infra.settings.docker_run_import import (
    SETTING_FLAGS,
    DockerRunError,
    import_docker_run,
    render_stack_file,
    split_command,
    stack_file_values,
)
from vllm_endpoint.infra.settings.models import ServerSettings, StackConfig, config_keys, load_stack_config

ROOT = Path(__file__).resolve().parents[4]
# Copied from the README's "From `docker run` to this program" (test_readme_shows_this_command keeps them equal).
ORIGINAL = """docker run --runtime nvidia --gpus '"device=1"' -v ~/.cache/huggingface:/root/.cache/huggingface \\
  -p 30005:8000 --ipc=host vllm/vllm-openai:v0.4.2 --model Qwen/Qwen2.5-1.5B-Instruct \\
  --api-key <key> --gpu-memory-utilization 0.7 --trust-remote-code --max-num-seqs 16 --block-size 16 --swap-space 4"""
KEY = "sk-the-original-key-0123456789abcdef0123456789"
HF_TOKEN = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345"
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n"
REVISION = "0123456789abcdef0123456789abcdef01234567"
# What the stack file's header asks the user to set (the values a user would fill in).
FILLED = {
    "existing-host": {"hostAddress": "gpu-box.internal", "hostSshUser": "deploy", "hostGpuModel": "A10G",
                      "hostPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVsbG0tZW5kcG9pbnQtZXhhbXBsZS1ob3N0LWtleQ",
                      "sshPrivateKey": PRIVATE_KEY},
    "aws": {"sshAllowedCidrs": "93.184.215.14/32", "apiAllowedCidrs": "93.184.216.0/24"},
}
SECRETS = frozenset({"sshPrivateKey", "apiKey", "hfToken"})


def original_argv() -> list[str]:
    return split_command(ORIGINAL.replace("<key>", KEY))


def stack_text(argv: list[str], target: str = "existing-host", **options: bool) -> str:
    return render_stack_file(import_docker_run(argv, target, **options), "shared-gpu")  # type: ignore[arg-type]


def load_filled(text: str, target: str = "existing-host", **more: str) -> StackConfig:
    """The stack file as the CLI hands it to the program, with the lines its header asks for filled in."""
    raw = {**stack_file_values(text), **FILLED[target], "apiKey": "k" * 40, **more}
    return load_stack_config(raw, SECRETS & set(raw))


def flag_groups(args: list[str] | tuple[str, ...]) -> set[tuple[str, ...]]:
    groups: list[list[str]] = []
    for token in args:
        if token.startswith("--") or not groups:
            groups.append([token])
        else:
            groups[-1].append(token)
    return {tuple(group) for group in groups}


# ----------------------------------------------------------------------------------------------
# The README's command, round trip.

def test_readme_shows_this_command() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## From `docker run` to this program", 1)[1]
    first_block = section.split("```bash\n", 1)[1].split("\n```", 1)[0]
    assert first_block == ORIGINAL


def test_the_original_command_imports_plans_and_renders_back_with_only_the_tables_differences() -> None:
    text = stack_text(original_argv())
    cfg = load_filled(text, modelRevision=REVISION)
    plan = build_plan(cfg)
    assert plan.fit is not None  # hostGpuModel given: the fit check ran
    original = original_argv()
    image_at = original.index("vllm/vllm-openai:v0.4.2")
    vllm = docker_run_argv(plan.vllm)

    # The image: v0.4.2 is below the security floor, so the default release is proposed.
    assert plan.vllm.image == "vllm/vllm-openai:v0.32.0"
    # The serving flags: --api-key leaves argv for the environment, --swap-space is gone (removed in 0.18.0),
    # trustRemoteCode pins the revision, the docs UI is switched off, and the model is `vllm serve`'s
    # positional argument (its --model is deprecated). Nothing else differs.
    before = flag_groups(original[image_at + 1:])
    after = flag_groups(plan.vllm.args)
    model = "Qwen/Qwen2.5-1.5B-Instruct"
    assert plan.vllm.args[0] == model
    assert before - after == {("--api-key", KEY), ("--swap-space", "4"), ("--model", model)}
    assert after - before == {("--revision", REVISION), ("--disable-fastapi-docs",), ("--disable-uvicorn-access-log",),
                              (model,)}
    assert "VLLM_API_KEY" in plan.vllm.secret_env
    assert vllm[vllm.index("VLLM_API_KEY") - 1] == "--env"  # by name: Docker copies it from the shell
    # --ipc=host kept; GPU 1 through the NVIDIA runtime and NVIDIA_VISIBLE_DEVICES instead of --gpus.
    assert plan.vllm.ipc_mode == "host"
    assert plan.vllm.runtime == "nvidia" and plan.vllm.gpus is None
    assert ("NVIDIA_VISIBLE_DEVICES", "1") in plan.vllm.env
    # Port 30005 is the proxy's; vLLM publishes nothing.
    assert not plan.vllm.ports
    assert [(p.host_port, p.container_port) for p in proxy_spec(plan).ports] == [(30005, 8080)]
    # The cache: one folder of the endpoint's mounted at /root/.cache, not ~/.cache/huggingface at its HF path.
    assert [(m.source, m.target) for m in plan.vllm.mounts] == [
        ("/opt/vllm-endpoint/cache/vllm/root-cache", "/root/.cache")]
    # The same, read back from the `docker_run` stack output as an operator would paste it.
    script = plan_docker_run(plan)
    assert KEY not in script and KEY not in text
    commands = [shlex.split(part) for part in script.replace("\\\n", " ").split("\n") if part.startswith("docker run")]
    rendered_vllm, rendered_proxy = commands
    assert rendered_vllm[rendered_vllm.index("vllm/vllm-openai:v0.32.0") + 1:] == list(plan.vllm.args)
    assert {"--ipc", "host"} <= set(rendered_vllm) and "NVIDIA_VISIBLE_DEVICES=1" in rendered_vllm
    assert "--publish" not in rendered_vllm and "30005:8080" in rendered_proxy


def test_keeping_the_insecure_image_keeps_its_flags_and_needs_the_opt_in() -> None:
    text = stack_text(original_argv(), keep_insecure_image=True)
    values = stack_file_values(text)
    assert values["imageTag"] == "v0.4.2" and values["allowInsecureImage"] == "true"
    assert values["swapSpace"] == "4"  # vLLM 0.4.2 has --swap-space
    assert "WARNING: vLLM 0.4.2 is below the security floor" in " ".join(text.split())
    plan = build_plan(load_filled(text, modelRevision=REVISION))
    assert plan.vllm.image == "vllm/vllm-openai:v0.4.2"
    original = original_argv()
    before = flag_groups(original[original.index("vllm/vllm-openai:v0.4.2") + 1:])
    after = flag_groups(plan.vllm.args)
    assert before - after == {("--api-key", KEY)}
    assert after - before <= {("--revision", REVISION), ("--disable-fastapi-docs",), ("--disable-uvicorn-access-log",)}


def test_the_original_command_for_aws_validates_once_the_cidrs_are_set() -> None:
    text = stack_text(original_argv(), "aws")
    values = stack_file_values(text)
    assert values["target"] == "aws" and "gpus" not in values and "hostCacheDir" not in values
    assert "pulumi config set sshAllowedCidrs" in text and "pulumi config set apiAllowedCidrs" in text
    plan = build_plan(load_filled(text, "aws", modelRevision=REVISION))
    assert plan.api_port == 30005 and KEY not in plan_docker_run(plan)


def test_the_stack_file_is_namespaced_and_explains_each_dropped_flag() -> None:
    text = stack_text(original_argv())
    document = yaml.safe_load(text)
    assert set(document) == {"config"} and all(key.startswith(f"{PROJECT}:") for key in document["config"])
    assert stack_file_values(text) == {
        "target": "existing-host", "model": "Qwen/Qwen2.5-1.5B-Instruct", "imageTag": "v0.32.0", "gpus": '["1"]',
        "gpuMemoryUtilization": "0.7", "maxNumSeqs": "16", "blockSize": "16", "trustRemoteCode": "true",
        "ipc": "host", "apiPort": "30005",
    }
    flat = " ".join(text.split())
    assert "--swap-space 4: removed in vLLM 0.18.0" in flat
    assert "pulumi config set --secret apiKey" in flat
    assert "pulumi config set modelRevision" in flat
    assert "--runtime nvidia: absorbed" in flat
    assert "<hostCacheDir>/vllm/root-cache at /root/.cache" in flat
    # Without the lines the header asks for, the loader names them.
    with pytest.raises(Exception, match="hostAddress: required"):
        load_stack_config(stack_file_values(text))


# ----------------------------------------------------------------------------------------------
# Secrets.

@pytest.mark.parametrize("secret_part, setting", [
    (f"--api-key {KEY}", "apiKey"),
    (f"--api-key={KEY}", "apiKey"),
    (f"-e VLLM_API_KEY={KEY}", "apiKey"),
    (f"--env=VLLM_API_KEY={KEY}", "apiKey"),
    (f"-e HF_TOKEN={HF_TOKEN}", "hfToken"),
    (f"-eHUGGING_FACE_HUB_TOKEN={HF_TOKEN}", "hfToken"),
    (f"-e MY_SERVICE_PASSWORD={HF_TOKEN}", None),
    # In the wrong place (after the image, where vLLM would refuse it): still never quoted.
    (f"--model-x --env=HF_TOKEN={HF_TOKEN}", None),
])
def test_a_secret_never_reaches_the_output(secret_part: str, setting: str | None) -> None:
    docker_part, vllm_part = (secret_part, "") if secret_part.startswith(("-e", "--env")) else ("", secret_part)
    argv = split_command(f"docker run {docker_part} vllm/vllm-openai:v0.32.0 --model Qwen/Qwen2.5-1.5B-Instruct "
                         f"{vllm_part}")
    for target in ("existing-host", "aws"):
        text = stack_text(argv, target)
        assert KEY not in text and HF_TOKEN not in text and HF_TOKEN[:12] not in text
        if setting:
            assert f"pulumi config set --secret {setting}" in text
        yaml.safe_load(text)


# ----------------------------------------------------------------------------------------------
# Parsing forms.

def values_of(command: str, target: str = "existing-host") -> dict[str, str]:
    return stack_file_values(stack_text(split_command(command), target))


@pytest.mark.parametrize("docker_options", [
    "-p 30006:8000 -v /data/hf:/root/.cache/huggingface -e FOO=bar --gpus device=0,1",
    "--publish=30006:8000 --volume=/data/hf:/root/.cache/huggingface --env=FOO=bar --gpus='\"device=0,1\"'",
    "-p30006:8000 -v=/data/hf:/root/.cache/huggingface -eFOO=bar --gpus '\"device=0,1\"' -d --rm -it --name x",
    "--mount type=bind,source=/data/hf,target=/root/.cache/huggingface -dp 0.0.0.0:30006:8000/tcp -e FOO=bar "
    "--runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=0,1",
])
def test_docker_option_forms_give_the_same_settings(docker_options: str) -> None:
    values = values_of(f"docker run {docker_options} vllm/vllm-openai:v0.32.0 --model Qwen/Qwen2.5-1.5B-Instruct")
    assert {k: values[k] for k in ("apiPort", "hostCacheDir", "extraEnv", "gpus")} == {
        "apiPort": "30006", "hostCacheDir": "/data/hf", "extraEnv": '{"FOO": "bar"}', "gpus": '["0", "1"]'}


def test_options_without_meaning_here_are_comments_not_errors() -> None:
    text = stack_text(split_command(
        "docker run -d --rm -it --name qwen --restart always --privileged --frobnicate vllm/vllm-openai:v0.32.0 "
        "--model Qwen/Qwen2.5-1.5B-Instruct"))
    flat = " ".join(text.split())
    for shown in ("-d:", "--rm:", "-i:", "-t:", "--name qwen:", "--restart always:", "--privileged:"):
        assert f"#   {shown}" in text or f" {shown}" in flat
    assert "--frobnicate: not carried over: unknown `docker run` option" in flat
    assert stack_file_values(text)["model"] == "Qwen/Qwen2.5-1.5B-Instruct"


def test_an_unknown_docker_option_with_a_value_still_finds_the_image() -> None:
    values = values_of("docker run --frobnicate 3 vllm/vllm-openai:v0.24.0 --model Qwen/Qwen2.5-1.5B-Instruct")
    assert values["imageTag"] == "v0.24.0"


def test_image_forms() -> None:
    digest = "sha256:" + "a" * 64
    assert values_of(f"docker run docker.io/vllm/vllm-openai:v0.24.0@{digest} --model a/b").items() >= {
        "imageTag": "v0.24.0", "imageDigest": digest}.items()
    mirror = values_of("docker run registry.example.com:5000/ml/vllm-openai:v0.30.0 --model a/b")
    assert mirror["image"] == "registry.example.com:5000/ml/vllm-openai" and mirror["imageTag"] == "v0.30.0"
    assert values_of("docker run vllm/vllm-openai --model a/b")["imageTag"] == "v0.32.0"
    assert "vllmVersion" in stack_text(split_command("docker run my/vllm:prod --model a/b"))


def test_serving_flags_map_to_settings_and_the_rest_to_checked_extra_args() -> None:
    values = values_of(
        "docker run vllm/vllm-openai:v0.32.0 Qwen/Qwen2.5-7B-Instruct-AWQ --max_model_len 32k --dtype half "
        "-tp 2 --served-model-name chat other --revision main --quantization awq --kv-cache-dtype fp8 "
        "--gpu-memory-utilization=0.85 --enable-prefix-caching --max-num-batched-tokens 8192 --host 0.0.0.0 "
        "--port 8000 --no-such-flag")
    assert values == {
        "target": "existing-host", "model": "Qwen/Qwen2.5-7B-Instruct-AWQ", "modelRevision": "main",
        "servedModelName": "chat", "maxModelLen": "32000", "dtype": "half", "tensorParallelSize": "2",
        "quantization": "awq", "kvCacheDtype": "fp8", "gpuMemoryUtilization": "0.85",
        "extraArgs": '["--enable-prefix-caching", "--max-num-batched-tokens", "8192"]',
    }


def test_more_docker_options_map_to_settings() -> None:
    values = values_of(
        "docker run --gpus 2 --shm-size 16g --network=host --user 1000:1000 vllm/vllm-openai:v0.32.0 "
        "vllm serve Qwen/Qwen2.5-1.5B-Instruct --port 8001 --served-model-name a b -q awq")
    assert values == {
        "target": "existing-host", "model": "Qwen/Qwen2.5-1.5B-Instruct", "servedModelName": "a",
        "gpus": '["0", "1"]', "shmSizeGb": "16", "containerUser": "1000:1000", "apiPort": "8001",
        "quantization": "awq",
    }
    assert values_of("docker run -e CUDA_VISIBLE_DEVICES=2 vllm/vllm-openai:v0.32.0 --model a/b")["gpus"] == '["2"]'


def test_unknown_and_removed_flags_are_explained() -> None:
    text = " ".join(stack_text(split_command(
        "docker run vllm/vllm-openai:v0.32.0 --model a/b --swap-space 4 --disable-log-requests --no-such-flag 1"
    )).split())
    assert "--swap-space 4: removed in vLLM 0.18.0" in text
    assert "--disable-log-requests: removed in vLLM 0.17.0" in text
    assert "--no-such-flag 1: not carried over: vLLM 0.32.0 has no such option" in text


def test_every_setting_that_is_a_vllm_flag_is_imported() -> None:
    named = {match for info in ServerSettings.model_fields.values()
             for match in re.findall(r"vLLM `(--[a-z-]+)`", info.description or "")}
    assert named <= set(SETTING_FLAGS)
    assert set(SETTING_FLAGS.values()) <= set(config_keys())


def test_a_mounted_model_folder_becomes_model_path(tmp_path: Path) -> None:
    folder = write_model_folder(tmp_path, "merged")
    text = stack_text(split_command(
        f"docker run --gpus all -v {folder}:/app/model -p 30005:8000 vllm/vllm-openai:v0.32.0 --model /app/model"))
    values = stack_file_values(text)
    assert values["modelPath"] == str(folder) and "model" not in values
    assert "apps now send model=merged" in " ".join(text.split())
    assert "also hostGpuCount" in text
    plan = build_plan(load_filled(text, hostGpuCount="1"))
    assert plan.served_model_name == "merged" and plan.model_upload is not None


@pytest.mark.parametrize("command, reason", [
    ("ls -l", "expected a command starting with `docker run`"),
    ("docker run -d --rm", "no image"),
    ("docker run -p", "-p: needs a value"),
    ("docker run 'unclosed", "cannot split"),
])
def test_an_unreadable_command_is_an_error_with_the_reason(command: str, reason: str) -> None:
    with pytest.raises(DockerRunError, match=re.escape(reason)):
        import_docker_run(split_command(command))


# ----------------------------------------------------------------------------------------------
# The same command in any option order gives the same file.

DOCKER_OPTIONS = [["--runtime", "nvidia"], ["--gpus", '"device=1"'], ["-v", "/data/hf:/root/.cache/huggingface"],
                  ["-p", "30005:8000"], ["--ipc=host"], ["-e", "FOO=bar"], ["-d"], ["--name", "qwen"],
                  ["-e", f"HF_TOKEN={HF_TOKEN}"]]
VLLM_ARGS = [["--model", "Qwen/Qwen2.5-1.5B-Instruct"], ["--api-key", KEY], ["--gpu-memory-utilization", "0.7"],
             ["--trust-remote-code"], ["--max-num-seqs", "16"], ["--block-size", "16"], ["--swap-space", "4"],
             ["--enable-prefix-caching"], ["--max-num-batched-tokens", "8192"], ["--seed", "7"]]


def _argv(docker: list[list[str]], vllm: list[list[str]]) -> list[str]:
    return ["docker", "run", *(t for group in docker for t in group), "vllm/vllm-openai:v0.4.2",
            *(t for group in vllm for t in group)]


@settings(max_examples=60, deadline=None)
@given(st.permutations(DOCKER_OPTIONS), st.permutations(VLLM_ARGS), st.sampled_from(["existing-host", "aws"]))
def test_option_order_does_not_change_the_stack_file(docker: list[list[str]], vllm: list[list[str]],
                                                     target: str) -> None:
    assert stack_text(_argv(docker, vllm), target) == stack_text(_argv(DOCKER_OPTIONS, VLLM_ARGS), target)


def test_split_command_reads_line_continuations() -> None:
    assert split_command(ORIGINAL)[:4] == ["docker", "run", "--runtime", "nvidia"]
    assert split_command(ORIGINAL) == shlex.split(ORIGINAL.replace("\\\n", " "))


def test_the_products_own_vllm_serve_command_imports_back() -> None:
    """What the program renders for a current image (positional model, several API servers, open-files
    limit) reads back as the settings that render it."""
    command = ("docker run --detach --ulimit nofile=65535:65535 vllm/vllm-openai:v0.32.0 Qwen/Qwen2.5-1.5B-Instruct "
               "--gpu-memory-utilization 0.9 --api-server-count 3 --disable-fastapi-docs --disable-uvicorn-access-log")
    values = values_of(command)
    assert values["model"] == "Qwen/Qwen2.5-1.5B-Instruct" and values["apiServerCount"] == "3"
    assert "extraArgs" not in values
    text = " ".join(stack_text(split_command(command)).split())
    assert "--ulimit nofile=65535:65535: the program sets the open-files limits" in text
    assert values_of(command.replace("--api-server-count 3", "-asc 2"))["apiServerCount"] == "2"
