"""A hand-typed `docker run` of vllm/vllm-openai, turned into this program's settings (`vllm-endpoint
import-docker-run`, vllm_endpoint/cli.py).

`import_docker_run(argv, target)` reads the command the way Docker and vLLM would (Docker's options up to
the image, the image, then vLLM's arguments) and maps every option to a setting, or to a note saying why
it is not carried over: Docker options the program sets itself, flags the image's vLLM no longer has (the
flag table, infra/catalog/vllm_flags.py, knows the release that removed each), secrets. `render_stack_file`
writes the result as a `Pulumi.<stack>.yaml` with those notes as comments.

Secrets never reach the result: `--api-key`, VLLM_API_KEY and Hugging Face tokens become an instruction to
run `pulumi config set --secret`, and no note quotes their values.

The output is canonical: the same command with its options in another order gives the same file (settings
in the settings models' order, notes and extraArgs sorted), so an imported stack file diffs cleanly.
"""

from __future__ import annotations

import json
import re
import shlex
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from vllm_endpoint.infra.catalog.names import (
    CACHE_SUBDIR_ROOT,
    CONTAINER_CACHE_ROOT,
    CONTAINER_HF_HOME,
    DEFAULT_ENDPOINT_NAME,
    DEFAULT_VLLM_VERSION,
    HOST_CACHE_MOUNT,
    PROJECT,
    SECRET_API_KEY_ENV,
    SECRET_HF_TOKEN_ENV,
    VLLM_CONTAINER_PORT,
    VLLM_IMAGE_REPOSITORY,
)
from vllm_endpoint.infra.catalog.security import SECURITY_FLOOR
from vllm_endpoint.infra.catalog.vllm_flags import (
    Arity,
    FlagSpec,
    Kind,
    VllmVersion,
    check_server_args,
    complete_flag_list,
    flag_spec,
)
from vllm_endpoint.infra.settings.models import SECTIONS, config_keys

Target = Literal["existing-host", "aws"]
TARGETS: tuple[Target, ...] = ("existing-host", "aws")


class DockerRunError(ValueError):
    """The text is not a `docker run` this tool can read (no image, an option without its value...)."""


# ----------------------------------------------------------------------------------------------
# Docker's side of the command.

# `docker run` options that take no value (docker/cli, cli/command/container/opts.go and run.go);
# every other option takes one.
_DOCKER_SWITCHES = {
    "--detach", "--interactive", "--tty", "--rm", "--privileged", "--init", "--read-only", "--publish-all",
    "--no-healthcheck", "--oom-kill-disable", "--disable-content-trust", "--quiet", "--help", "--sig-proxy",
    "--use-api-socket",
}
_DOCKER_VALUED = {
    "--add-host", "--annotation", "--attach", "--blkio-weight", "--blkio-weight-device", "--cap-add", "--cap-drop",
    "--cgroup-parent", "--cgroupns", "--cidfile", "--cpu-count", "--cpu-percent", "--cpu-period", "--cpu-quota",
    "--cpu-rt-period", "--cpu-rt-runtime", "--cpu-shares", "--cpus", "--cpuset-cpus", "--cpuset-mems",
    "--detach-keys", "--device", "--device-cgroup-rule", "--device-read-bps", "--device-read-iops",
    "--device-write-bps", "--device-write-iops", "--dns", "--dns-opt", "--dns-option", "--dns-search",
    "--domainname", "--entrypoint", "--env", "--env-file", "--expose", "--gpus", "--group-add", "--health-cmd",
    "--health-interval", "--health-retries", "--health-start-interval", "--health-start-period",
    "--health-timeout", "--hostname", "--ip", "--ip6", "--ipc", "--isolation", "--kernel-memory", "--label",
    "--label-file", "--link", "--link-local-ip", "--log-driver", "--log-opt", "--mac-address", "--memory",
    "--memory-reservation", "--memory-swap", "--memory-swappiness", "--mount", "--name", "--net", "--net-alias",
    "--network", "--network-alias", "--oom-score-adj", "--pid", "--pids-limit", "--platform", "--publish",
    "--pull", "--restart", "--runtime", "--security-opt", "--shm-size", "--stop-signal", "--stop-timeout",
    "--storage-opt", "--sysctl", "--tmpfs", "--ulimit", "--user", "--userns", "--uts", "--volume",
    "--volume-driver", "--volumes-from", "--workdir",
}
_DOCKER_SHORT = {
    "d": "--detach", "i": "--interactive", "t": "--tty", "P": "--publish-all", "q": "--quiet",
    "p": "--publish", "v": "--volume", "e": "--env", "u": "--user", "w": "--workdir", "m": "--memory",
    "h": "--hostname", "l": "--label", "a": "--attach", "c": "--cpu-shares",
}
_ALIASES = {"--net": "--network", "--net-alias": "--network-alias", "--dns-opt": "--dns-option"}

# Docker options with no meaning for a container the program runs, and why.
_NO_MEANING = {
    "--detach": "the program starts the container detached",
    "--interactive": "the program's containers run without a terminal (logs: `docker logs`)",
    "--tty": "the program's containers run without a terminal (logs: `docker logs`)",
    "--rm": "the program keeps the container (with a restart policy) and replaces it when a setting changes",
    "--name": f"containers are named after the endpoint (`{DEFAULT_ENDPOINT_NAME}` and "
              f"`{DEFAULT_ENDPOINT_NAME}-proxy` in this stack)",
    "--restart": "the program sets the restart policy: always on an AWS instance (with a supervisor that undoes a "
                 "docker kill), unless-stopped on an existing host or this machine (README: Restarts)",
    "--runtime": "absorbed: the program selects the NVIDIA runtime itself for a GPU device list",
    "--init": "the program runs the container with --init",
    "--log-driver": "the program sets json-file logging with rotation",
    "--log-opt": "the program sets json-file logging with rotation",
    "--health-cmd": "the program sets its own health check (GET /health)",
    "--network": "the program puts vLLM on a private network behind its reverse proxy",
    "--pull": "the program pulls the pinned image itself",
    "--platform": "the image is pulled for the host's platform",
    "--ulimit": "the program sets the open-files limits vLLM and the proxy need (containerOpenFiles)",
}
# Options the program deliberately does not grant: it runs vLLM without capabilities, as non-root.
_SECURITY = {"--privileged", "--cap-add", "--security-opt", "--device", "--pid", "--userns", "--volumes-from",
             "--group-add", "--sysctl"}


@dataclass(frozen=True)
class _DockerOption:
    name: str  # long form, e.g. --publish
    value: str | None
    shown: str  # as the user wrote it (with a secret value masked), for the notes


@dataclass(frozen=True)
class _Command:
    options: tuple[_DockerOption, ...]
    image: str
    args: tuple[str, ...]


_SECRET_ENV = {SECRET_API_KEY_ENV: "apiKey", SECRET_HF_TOKEN_ENV: "hfToken", "HUGGING_FACE_HUB_TOKEN": "hfToken"}
_SECRET_LOOKING = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|CREDENTIAL|PRIVATE", re.IGNORECASE)


def _shown(name: str, value: str | None, written: str, joiner: str = " ") -> str:
    if value is None:
        return written
    if name == "--env" and "=" in value:
        env_name = value.split("=", 1)[0]
        if env_name in _SECRET_ENV or _SECRET_LOOKING.search(env_name):
            return f"{written}{joiner}{env_name}=<redacted>"
    return f"{written}{joiner}{shlex.quote(value)}"


def split_command(text: str) -> list[str]:
    """A command as typed (one string, maybe with `\\` line continuations) -> argv, as a POSIX shell splits it."""
    try:
        return shlex.split(text.replace("\\\n", " "))
    except ValueError as err:
        raise DockerRunError(f"cannot split the command as a shell would: {err}") from None


def _parse_docker(argv: Sequence[str]) -> _Command:
    tokens = list(argv)
    while tokens and tokens[0] in ("sudo", "exec"):
        tokens = tokens[1:]
    if tokens[:2] == ["docker", "run"]:
        tokens = tokens[2:]
    elif tokens[:3] == ["docker", "container", "run"]:
        tokens = tokens[3:]
    else:
        raise DockerRunError(f"expected a command starting with `docker run`, got {shlex.join(list(argv)[:3])!r}")
    options: list[_DockerOption] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token == "--":
            index += 1
            break
        if not token.startswith("-") or token == "-":
            break
        take = _take_long if token.startswith("--") else _take_short
        index = take(tokens, index, options)
    if index >= len(tokens):
        raise DockerRunError("no image: `docker run [options] IMAGE [vLLM arguments]`")
    return _Command(tuple(options), tokens[index], tuple(tokens[index + 1:]))


def _take_long(tokens: list[str], index: int, options: list[_DockerOption]) -> int:
    written, equals, inline = tokens[index].partition("=")
    name = _ALIASES.get(written, written)
    if name in _DOCKER_SWITCHES:
        # `--rm=false`, `--sig-proxy=false`: a switch may carry an explicit boolean.
        options.append(_DockerOption(name, inline if equals else None, tokens[index]))
        return index + 1
    if equals:
        options.append(_DockerOption(name, inline, _shown(name, inline, written, "=")))
        return index + 1
    if name in _DOCKER_VALUED:
        if index + 1 >= len(tokens):
            raise DockerRunError(f"{written}: needs a value, but the command ends there")
        value = tokens[index + 1]
        options.append(_DockerOption(name, value, _shown(name, value, written)))
        return index + 2
    # Unknown to `docker run` (Docker would refuse it). Whether it took a value decides where the image
    # is: a value is followed by the image, the image by vLLM's options (or nothing).
    following = tokens[index + 1:index + 3]
    takes_value = len(following) == 2 and not following[0].startswith("-") and not following[1].startswith("-")
    guessed = following[0] if takes_value else None
    options.append(_DockerOption(name, guessed, _shown(name, guessed, written)))
    return index + (2 if takes_value else 1)


def _take_short(tokens: list[str], index: int, options: list[_DockerOption]) -> int:
    """`-d`, `-it`, `-p 1:2`, `-p1:2`, `-p=1:2`, `-dp 1:2` (pflag's shorthand rules)."""
    letters = tokens[index][1:]
    position = 0
    while position < len(letters):
        letter = letters[position]
        name = _DOCKER_SHORT.get(letter)
        if name is None:
            options.append(_DockerOption(f"-{letter}", None, f"-{letter}"))
            position += 1
            continue
        if name in _DOCKER_SWITCHES:
            options.append(_DockerOption(name, None, f"-{letter}"))
            position += 1
            continue
        rest = letters[position + 1:]
        if rest:
            value = rest[1:] if rest.startswith("=") else rest
            options.append(_DockerOption(name, value, _shown(name, value, f"-{letter}")))
            return index + 1
        if index + 1 >= len(tokens):
            raise DockerRunError(f"-{letter}: needs a value, but the command ends there")
        value = tokens[index + 1]
        options.append(_DockerOption(name, value, _shown(name, value, f"-{letter}")))
        return index + 2
    return index + 1


# ----------------------------------------------------------------------------------------------
# The result.

@dataclass
class Imported:
    """Settings by config key (typed values), comments by config key, notes on what was not carried over,
    and the commands the user runs before `pulumi up` (each a line of the stack file's header)."""

    target: Target
    settings: dict[str, Any] = field(default_factory=dict)
    comments: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    todo: list[str] = field(default_factory=list)
    # What later steps need: published ports (container, host, as written, with an address), vLLM's --port,
    # --network host, the mount that holds the model folder.
    published: list[tuple[int, int, str, bool]] = field(default_factory=list)
    vllm_port: str | None = None
    host_network: bool = False
    model_mount: str | None = None
    # Secret values seen anywhere in the command: the rendered file is scrubbed of them, whatever note
    # might have quoted one (a secret in an unexpected place, e.g. after the image).
    secrets: set[str] = field(default_factory=set)
    # The vLLM release the original image ran, when its tag says: the command is read as that release read it.
    original_version: VllmVersion | None = None

    def set(self, key: str, value: Any, *why: str) -> None:
        self.settings[key] = value
        self.comments.setdefault(key, []).extend(why)

    def comment(self, key: str, *why: str) -> None:
        self.comments.setdefault(key, []).extend(why)


# vLLM flags that are settings: flag -> config key. tests/unit/infra/settings/test_docker_run_import.py checks
# that every setting whose description names a vLLM flag is here.
SETTING_FLAGS: dict[str, str] = {
    "--model": "model",
    "--served-model-name": "servedModelName",
    "--revision": "modelRevision",
    "--dtype": "dtype",
    "--max-model-len": "maxModelLen",
    "--gpu-memory-utilization": "gpuMemoryUtilization",
    "--max-num-seqs": "maxNumSeqs",
    "--block-size": "blockSize",
    "--swap-space": "swapSpace",
    "--tensor-parallel-size": "tensorParallelSize",
    "--quantization": "quantization",
    "--kv-cache-dtype": "kvCacheDtype",
    "--trust-remote-code": "trustRemoteCode",
    "--api-server-count": "apiServerCount",
}
# vLLM flags the program sets itself, and why the user's value is not carried over.
_ABSORBED_FLAGS = {
    "--host": "vLLM listens inside the container on its private network; only the proxy reaches it",
    "--port": f"vLLM listens on {VLLM_CONTAINER_PORT} inside the container; the host port is apiPort",
    "--disable-fastapi-docs": "the program adds it wherever the image's vLLM has it",
    "--disable-uvicorn-access-log": "the program adds it wherever the image's vLLM has it (the proxy logs "
    "requests, without their query strings)",
    "--download-dir": f"downloads go to the cache ({CONTAINER_HF_HOME} on the cache volume)",
}
_SECRET_FLAGS = {"--api-key": "apiKey"}
_ENTRYPOINT_PREFIXES = (
    ("vllm", "serve"), ("python3", "-m", "vllm.entrypoints.openai.api_server"),
    ("python", "-m", "vllm.entrypoints.openai.api_server"),
)


def import_docker_run(argv: Sequence[str], target: Target = "existing-host",
                      keep_insecure_image: bool = False) -> Imported:
    """The settings that run what `argv` (`docker run ...`) ran, for `target`.

    An image older than the security floor is replaced by the default release (the note says how to keep
    it), unless `keep_insecure_image`: then the tag stays with `allowInsecureImage: true`.
    Raises DockerRunError for text that is not a readable `docker run`.
    """
    if target not in TARGETS:
        raise DockerRunError(f"target {target!r}: use one of {', '.join(TARGETS)}")
    command = _parse_docker(argv)
    result = Imported(target)
    result.settings["target"] = target
    version = _image(command.image, result, keep_insecure_image)
    mounts = _docker_options(command.options, result)
    _vllm_args(command.args, version, mounts, result)
    _target_todo(result)
    result.notes.sort()
    return result


# ----------------------------------------------------------------------------------------------
# The image.

_IMAGE = re.compile(r"^(?P<repo>[^@]+?)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
                    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


def _image(reference: str, result: Imported, keep_insecure: bool) -> VllmVersion:
    """Sets image/imageTag/imageDigest; returns the vLLM version the arguments are judged against."""
    match = _IMAGE.fullmatch(reference)
    if match is None or ":" in match["repo"].rsplit("/", 1)[-1]:
        raise DockerRunError(f"{reference!r} is not an image reference (repository[:tag][@sha256:digest])")
    repo = match["repo"].removeprefix("docker.io/").removeprefix("index.docker.io/")
    tag, digest = match["tag"], match["digest"]
    default_tag = f"v{DEFAULT_VLLM_VERSION}"
    if repo != VLLM_IMAGE_REPOSITORY:
        result.set("image", repo, f"from the image {reference}: a mirror or build of {VLLM_IMAGE_REPOSITORY} "
                                  "(the program's checks assume its entrypoint and flags)")
    if digest is None and (tag is None or tag in {"latest", "nightly", "main", "edge"}):
        result.set("imageTag", default_tag, f"{reference} names a moving tag; pinned to the program's default "
                                            f"release (keep `latest` only together with an imageDigest)")
        return VllmVersion.parse(DEFAULT_VLLM_VERSION)
    try:
        version: VllmVersion | None = VllmVersion.parse(tag) if tag else None
    except ValueError:
        version = None
    result.original_version = version
    floor = VllmVersion.parse(SECURITY_FLOOR)
    if version is not None and version < floor:
        if keep_insecure:
            result.set("imageTag", tag, f"from {reference}. WARNING: vLLM {version} is below the security floor "
                                        f"v{SECURITY_FLOOR} (known advisories, among them an API-key bypass); "
                                        f"move to {default_tag} as soon as you can")
            result.set("allowInsecureImage", True, "the explicit opt-in that image needs (kept by "
                                                   "--keep-insecure-image)")
            if digest:
                result.set("imageDigest", digest)
            return version
        result.set("imageTag", default_tag,
                   f"was {reference}: vLLM {version} is below the security floor v{SECURITY_FLOOR} (known "
                   "advisories, among them an API-key bypass), so the program's default release is proposed and "
                   f"the flags are checked against it. To keep {tag} (not advised): imageTag: {tag} and "
                   "allowInsecureImage: true")
        return VllmVersion.parse(DEFAULT_VLLM_VERSION)
    if tag is not None and tag != default_tag:
        result.set("imageTag", tag, f"from {reference}")
    if digest:
        result.set("imageDigest", digest, f"from {reference}: pins the image by content")
        if tag is None:
            result.comment("imageDigest", "the image had no tag: the default tag is only a label")
    if version is None:
        result.todo.append("pulumi config set vllmVersion <the vLLM release inside the image, e.g. "
                           f"{DEFAULT_VLLM_VERSION}>    # the tag does not say; flags are checked against it")
        return VllmVersion.parse(DEFAULT_VLLM_VERSION)
    return version


# ----------------------------------------------------------------------------------------------
# Docker options.

@dataclass(frozen=True)
class _Mount:
    source: str
    target: str
    shown: str


def _docker_options(options: Sequence[_DockerOption], result: Imported) -> list[_Mount]:
    mounts: list[_Mount] = []
    gpus_from_env: list[str] = []
    for option in options:
        name, value = option.name, option.value
        if name == "--gpus":
            _gpus(value or "", option.shown, result)
        elif name in ("--volume", "--mount"):
            mount = _mount(name, value or "", option.shown)
            if mount is None:
                result.notes.append(f"{option.shown}: not carried over: not a bind mount the program can read")
            else:
                mounts.append(mount)
        elif name == "--publish":
            _publish(value or "", option.shown, result)
        elif name == "--ipc":
            _ipc(value or "", option.shown, result)
        elif name == "--shm-size":
            _shm(value or "", option.shown, result)
        elif name == "--env":
            gpus_from_env += _env(value or "", option.shown, result)
        elif name == "--env-file":
            result.notes.append(f"{option.shown}: not carried over: the file is not read here (it may hold "
                                "secrets); put its non-secret variables in extraEnv and secrets in apiKey/hfToken")
        elif name == "--user":
            _user(value or "", option.shown, result)
        elif name == "--network" and value == "host":
            result.notes.append(f"{option.shown}: not carried over: vLLM runs on a private network and only the "
                                "proxy publishes apiPort (vLLM's --port, if any, gave the port apps used)")
            result.host_network = True
        elif name == "--runtime" and value not in (None, "nvidia"):
            result.notes.append(f"{option.shown}: not carried over: the program uses the NVIDIA runtime for GPUs")
        elif name == "--entrypoint":
            result.notes.append(f"{option.shown}: not carried over: the program runs the image's own entrypoint")
        elif name in _NO_MEANING:
            result.notes.append(f"{option.shown}: {_NO_MEANING[name]}")
        elif name in _SECURITY:
            result.notes.append(f"{option.shown}: not carried over: the program runs vLLM as a non-root user with "
                                "every capability dropped and no-new-privileges")
        elif name in _DOCKER_VALUED or name in _DOCKER_SWITCHES:
            result.notes.append(f"{option.shown}: not carried over: the program does not set {name}")
        else:
            result.notes.append(f"{option.shown}: not carried over: unknown `docker run` option")
    if gpus_from_env and "gpus" not in result.settings:
        _gpus(f"device={','.join(gpus_from_env)}", "NVIDIA_VISIBLE_DEVICES", result)
    return mounts


def _gpus(value: str, shown: str, result: Imported) -> None:
    text = value.strip().strip("'\"")
    if text == "all":
        return
    devices: list[str] | None = None
    for part in re.split(r",(?=[a-z_]+=)", text):
        key, _, rest = part.partition("=")
        if key == "device":
            devices = [d.strip() for d in rest.strip("'\"").split(",") if d.strip()]
        elif key == "count":
            devices = None if rest == "all" else [str(i) for i in range(int(rest))] if rest.isdigit() else None
        elif part.isdigit():
            devices = [str(i) for i in range(int(part))]
    if devices is None:
        result.notes.append(f"{shown}: not carried over: not a GPU device list or count; the default is all GPUs")
        return
    if result.target == "aws":
        result.notes.append(f"{shown}: on AWS the VM is the endpoint's own and the container gets all its GPUs; "
                            f"pick an instanceType with {len(devices)} GPU(s)")
        return
    result.set("gpus", devices, f"from {shown} (the NVIDIA runtime and NVIDIA_VISIBLE_DEVICES are set for a "
                                "device list, so --runtime nvidia is implied)")


def _mount(name: str, value: str, shown: str) -> _Mount | None:
    if name == "--volume":
        parts = value.split(":")
        if len(parts) < 2:
            return None
        return _Mount(parts[0], parts[1], shown)
    fields = dict(item.partition("=")[::2] for item in value.split(","))
    if fields.get("type", "volume") not in ("bind", "volume"):
        return None
    source = fields.get("source") or fields.get("src")
    target = fields.get("target") or fields.get("destination") or fields.get("dst")
    if not source or not target:
        return None
    return _Mount(source, target, shown)


def _publish(value: str, shown: str, result: Imported) -> None:
    parts = value.split("/")[0].split(":")
    if len(parts) < 2 or not parts[-2].isdigit() or not parts[-1].isdigit():
        result.notes.append(f"{shown}: not carried over: only HOST_PORT:CONTAINER_PORT is read")
        return
    host_port, container_port = int(parts[-2]), int(parts[-1])
    result.published.append((container_port, host_port, shown, len(parts) > 2))


def _ipc(value: str, shown: str, result: Imported) -> None:
    if value == "host":
        result.set("ipc", "host", f"from {shown}: vLLM shares the host's IPC namespace (the default `auto` "
                                  "does so only for tensor parallelism)")
    elif value in ("private", "shareable", "none"):
        result.set("ipc", "private", f"from {shown}: a private /dev/shm of shmSizeGb")
    else:
        result.notes.append(f"{shown}: not carried over: only host or private IPC is offered")


_SIZE = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>[bkmg]?)b?$", re.IGNORECASE)


def _shm(value: str, shown: str, result: Imported) -> None:
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        result.notes.append(f"{shown}: not carried over: not a size")
        return
    factor = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match["unit"].lower()]
    gib = float(match["number"]) * factor / 1024**3
    result.set("shmSizeGb", max(1, round(gib)), f"from {shown} (whole GiB; used when IPC is private)")


def _env(value: str, shown: str, result: Imported) -> list[str]:
    """Maps one `-e NAME=value`; returns GPU devices it selects (NVIDIA_/CUDA_VISIBLE_DEVICES)."""
    env_name, equals, env_value = value.partition("=")
    if env_value and (env_name in _SECRET_ENV or _SECRET_LOOKING.search(env_name)):
        result.secrets.add(env_value)
    if env_name in _SECRET_ENV:
        _secret(_SECRET_ENV[env_name], f"-e {env_name}", result)
        return []
    if env_name in ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES") and equals:
        if env_value.strip() in ("all", ""):
            return []
        result.notes.append(f"{shown}: read as the GPU selection (the program sets NVIDIA_VISIBLE_DEVICES itself)")
        return [d.strip() for d in env_value.split(",") if d.strip()]
    if env_name in ("HF_HOME", "VLLM_CACHE_ROOT", "HOME", "TRANSFORMERS_CACHE", "HUGGINGFACE_HUB_CACHE"):
        result.notes.append(f"{shown}: not carried over: the program points the caches at the cache volume "
                            f"({CONTAINER_CACHE_ROOT})")
        return []
    if _SECRET_LOOKING.search(env_name):
        result.notes.append(f"{shown}: not carried over: it looks like a secret, and extraEnv is stored in "
                            "plaintext in the stack file")
        return []
    if not equals:
        result.notes.append(f"{shown}: not carried over: Docker copied its value from your shell; set it with "
                            f"extraEnv: {{{env_name}: <value>}}")
        return []
    extra = result.settings.setdefault("extraEnv", {})
    extra[env_name] = env_value
    result.comment("extraEnv", f"from -e {env_name}")
    return []


def _user(value: str, shown: str, result: Imported) -> None:
    if re.fullmatch(r"[0-9]+:[0-9]+", value):
        result.set("containerUser", value, f"from {shown}; it must own the cache folder")
    else:
        result.notes.append(f"{shown}: not carried over: containerUser takes a numeric uid:gid (the default "
                            "1000:1000 runs vLLM as non-root)")


def _secret(key: str, shown: str, result: Imported) -> None:
    what = "the key apps send" if key == "apiKey" else "your Hugging Face token"
    line = f"pulumi config set --secret {key} <{what}>    # was {shown}; secrets are never written in this file"
    if line not in result.todo:
        result.todo.append(line)


# ----------------------------------------------------------------------------------------------
# vLLM's arguments.

@dataclass(frozen=True)
class _Flag:
    name: str  # canonical (the table's name, dashes)
    written: str
    values: tuple[str, ...]
    tokens: tuple[str, ...]  # as given, for extraArgs


def _vllm_args(args: Sequence[str], version: VllmVersion, mounts: list[_Mount], result: Imported) -> None:
    tokens = list(args)
    for prefix in _ENTRYPOINT_PREFIXES:
        if tuple(tokens[:len(prefix)]) == prefix:
            tokens = tokens[len(prefix):]
            break
    flags, positionals = _split_flags(tokens, result.original_version or version)
    if positionals and not any(f.name == "--model" for f in flags):
        # `vllm serve MODEL` (the images' entrypoint since 0.11.1) takes the model as its positional argument.
        flags.insert(0, _Flag("--model", positionals[0], (positionals[0],), (positionals[0],)))
        positionals = positionals[1:]
    for stray in positionals:
        result.notes.append(f"{shlex.quote(stray)}: not carried over: an argument vLLM would not accept here")
    extra: list[tuple[str, ...]] = []
    for flag in flags:
        if flag.name in _SECRET_FLAGS:
            result.secrets.update(flag.values)
            _secret(_SECRET_FLAGS[flag.name], f"{flag.written} <redacted>", result)
        elif flag.name == "--port":
            result.vllm_port = flag.values[0] if flag.values else None
            result.notes.append(f"{_flag_text(flag)}: {_ABSORBED_FLAGS['--port']}")
        elif flag.name in _ABSORBED_FLAGS:
            result.notes.append(f"{_flag_text(flag)}: {_ABSORBED_FLAGS[flag.name]}")
        elif flag.name == "--model":
            _model(flag, mounts, result)
        elif flag.name.startswith("--no-") and "--" + flag.name[5:] in SETTING_FLAGS:
            result.notes.append(f"{_flag_text(flag)}: the default, so no setting")
        elif flag.name in SETTING_FLAGS:
            _setting_flag(flag, version, result)
        else:
            carried = _other_flag(flag, version, result)
            if carried:
                extra.append(carried)
    if extra:
        result.set("extraArgs", [token for group in sorted(extra) for token in group],
                   f"flags without a setting of their own, checked against vLLM {version}")
    _ports(result)
    _cache_mounts(mounts, result)


def _flag_text(flag: _Flag) -> str:
    return shlex.join([_masked(token) for token in (flag.written, *flag.values)])


def _masked(token: str) -> str:
    """`NAME=value` with a secret-looking NAME (`--env=HF_TOKEN=...` written after the image) without its value."""
    head, equals, _ = token.rpartition("=")
    if equals and (_SECRET_LOOKING.search(head) or any(name in head for name in _SECRET_ENV)):
        return f"{head}=<redacted>"
    return token


def _canonical(option: str) -> str:
    name = option if not option.startswith("--") else "--" + option[2:].replace("_", "-")
    try:
        return flag_spec(name).name
    except KeyError:
        return name


def _in_table(name: str) -> bool:
    try:
        flag_spec(name)
    except KeyError:
        return False
    return True


def _takes(spec: FlagSpec | None, name: str, version: VllmVersion) -> Kind | Arity | None:
    if spec is not None:
        form = spec.form_at(version) or (spec.forms[-1] if version >= spec.added else spec.forms[0])
        return form.kind
    options = complete_flag_list(version)
    return options.get(name) if options is not None else None


def _is_option(token: str) -> bool:
    return token.startswith("-") and re.fullmatch(r"-\d+(\.\d+)?", token) is None


def _split_flags(tokens: list[str], version: VllmVersion) -> tuple[list[_Flag], list[str]]:
    flags: list[_Flag] = []
    positionals: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if not _is_option(token):
            positionals.append(token)
            index += 1
            continue
        written, equals, inline = token.partition("=")
        name = _canonical(written)
        try:
            spec: FlagSpec | None = flag_spec(name)
        except KeyError:
            spec = None
        kind = _takes(spec, name, version)
        values: list[str] = [inline] if equals else []
        start = index
        index += 1
        if not equals:
            many = kind in (Kind.VALUES, Arity.MANY)
            optional_bool = kind is Kind.OPTIONAL_BOOL_VALUE
            one = kind in (Kind.VALUE, Kind.BOOL_TYPED_VALUE, Arity.ONE, Arity.OPTIONAL) or kind is None
            while index < len(tokens) and not _is_option(tokens[index]) and (
                    many or ((one or optional_bool) and not values)):
                if optional_bool and tokens[index].lower() not in ("true", "false"):
                    break
                if kind is None and name.startswith("--no-") and _in_table("--" + name[5:]):
                    break
                values.append(tokens[index])
                index += 1
        flags.append(_Flag(name, written, tuple(values), tuple(tokens[start:index])))
    return flags, positionals


def _model(flag: _Flag, mounts: list[_Mount], result: Imported) -> None:
    model = flag.values[0] if flag.values else ""
    for mount in mounts:
        inside = PurePosixPath(model)
        target = PurePosixPath(mount.target)
        if inside == target or target in inside.parents:
            folder = PurePosixPath(mount.source) / inside.relative_to(target)
            result.set("modelPath", str(folder),
                       f"from {mount.shown} with --model {model}: a folder on the machine that runs `pulumi up` "
                       "(copy it there if it is only on the GPU server); it is uploaded to the cache once per "
                       "content digest and mounted read-only at /app/model",
                       f"apps now send model={folder.name} (the folder's name; servedModelName changes it), "
                       f"not {model}")
            result.notes.append(f"{mount.shown}: the model folder, now modelPath")
            result.model_mount = mount.shown
            return
    if model.startswith("/"):
        result.set("model", model, f"from --model {model}: a path inside the image; build that image with "
                                   "imageBuildContext (a folder with its Dockerfile), or mount it as modelPath")
        return
    result.set("model", model, "from --model")


def _number(text: str, integer: bool) -> int | float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgG]?)", text.strip())
    if match is None:
        raise ValueError(text)
    scale = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "K": 1024, "M": 1024**2, "G": 1024**3}[match[2]]
    number = float(match[1]) * scale
    if integer:
        if number != int(number):
            raise ValueError(text)
        return int(number)
    return number


def _setting_flag(flag: _Flag, version: VllmVersion, result: Imported) -> None:
    key = SETTING_FLAGS[flag.name]
    spec = flag_spec(flag.name)
    if spec.form_at(version) is None:
        result.notes.append(f"{_flag_text(flag)}: {_absent(spec, version)}")
        return
    problems = check_server_args(list(flag.tokens), version)
    if problems:
        result.notes.append(f"{_flag_text(flag)}: not carried over: {_problems_text(flag, problems)}")
        return
    value: Any
    if key == "trustRemoteCode":
        value = True
        if "modelRevision" not in result.settings:
            result.todo.append("pulumi config set modelRevision <the commit sha you reviewed>    # required with "
                               "trustRemoteCode: the repo's Python code runs on your GPU host")
    elif not flag.values:
        result.notes.append(f"{_flag_text(flag)}: not carried over: no value")
        return
    elif key in ("gpuMemoryUtilization",):
        value = float(flag.values[0])
    elif key in ("maxModelLen", "maxNumSeqs", "blockSize", "swapSpace", "tensorParallelSize", "apiServerCount"):
        try:
            value = _number(flag.values[0], integer=True)
        except ValueError:
            result.notes.append(f"{_flag_text(flag)}: not carried over: not a whole number")
            return
    else:
        value = flag.values[0]
    problem = _setting_problem(key, value)
    if problem:
        result.notes.append(f"{_flag_text(flag)}: not carried over: {problem}")
        return
    why = [f"from {_flag_text(flag)}"]
    if key == "servedModelName" and len(flag.values) > 1:
        why.append(f"only the first name is served; {' '.join(flag.values[1:])} not carried over")
    if key == "maxNumSeqs":
        why.append("caps concurrency; vLLM's default serves more requests at once (see the README's table)")
    if key == "gpuMemoryUtilization":
        why.append("the default 0.9 suits a GPU the endpoint has to itself")
    if key == "modelRevision":
        result.todo[:] = [line for line in result.todo if not line.startswith("pulumi config set modelRevision")]
    result.set(key, value, *why)


def _problems_text(flag: _Flag, problems: list[str]) -> str:
    # The checker's lines start with the option, which the note already shows.
    return "; ".join(p.removeprefix(f"{flag.written}: ").removeprefix(f"{flag.name}: ") for p in problems)


def _setting_problem(key: str, value: Any) -> str | None:
    """Why `value` is not valid for the setting `key` (its section's own checks), or None."""
    section, _ = config_keys()[key]
    try:
        SECTIONS[section].model_validate({key: value})
    except ValidationError as err:
        return "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors(include_url=False))
    return None


def _absent(spec: FlagSpec, version: VllmVersion) -> str:
    if version < spec.added:
        return f"not carried over: vLLM {version} does not have it (added in {spec.added})"
    reason = f"removed in vLLM {spec.removed}"
    if spec.renamed_to:
        reason += f" (renamed to {spec.renamed_to} in {spec.renamed_in})"
    return f"{reason}, so vLLM {version} would refuse it: {spec.replacement or 'remove it'}"


def _other_flag(flag: _Flag, version: VllmVersion, result: Imported) -> tuple[str, ...] | None:
    """extraArgs tokens for a flag without a setting, or None with a note saying why it is dropped."""
    text = _flag_text(flag)
    try:
        spec: FlagSpec | None = flag_spec(flag.name)
    except KeyError:
        spec = None
    if spec is not None and spec.form_at(version) is None:
        result.notes.append(f"{text}: {_absent(spec, version)}")
        return None
    if spec is None and complete_flag_list(version) is None:
        result.notes.append(f"{text}: not carried over: unknown to the flag table for vLLM {version}; if your "
                            f"image takes it, add it to extraArgs")
        return None
    problems = check_server_args(list(flag.tokens), version)
    if problems:
        result.notes.append(f"{text}: not carried over: {_problems_text(flag, problems)}")
        return None
    return flag.tokens


def _ports(result: Imported) -> None:
    text = result.vllm_port
    vllm_port = int(text) if text and text.isdigit() else VLLM_CONTAINER_PORT
    for container_port, host_port, shown, with_address in sorted(result.published):
        if container_port == vllm_port and "apiPort" not in result.settings:
            why = [f"from {shown}: the reverse proxy answers on it and forwards only /v1/* and /health to vLLM"]
            if with_address:
                why.append("it listens on every address; apiAllowedCidrs (AWS) or your firewall limits who connects")
            result.set("apiPort", host_port, *why)
        else:
            result.notes.append(f"{shown}: not carried over: only vLLM's port ({vllm_port}) is published")
    if result.host_network and "apiPort" not in result.settings:
        result.set("apiPort", vllm_port, f"vLLM served on port {vllm_port} of the host (--network host)")


def _cache_mounts(mounts: list[_Mount], result: Imported) -> None:
    layout = (f"the layout differs: the program mounts <hostCacheDir>/{DEFAULT_ENDPOINT_NAME}/{CACHE_SUBDIR_ROOT} "
              f"at {CONTAINER_CACHE_ROOT} (Hugging Face, vLLM and FlashInfer caches together), owned by "
              "containerUser (1000:1000)")
    for mount in sorted(mounts, key=lambda m: m.shown):
        if mount.shown == result.model_mount:
            continue
        if mount.target.rstrip("/") not in (CONTAINER_HF_HOME, CONTAINER_CACHE_ROOT):
            result.notes.append(f"{mount.shown}: not carried over: the program mounts only the cache and modelPath")
            continue
        hub = "hub" if mount.target.rstrip("/") == CONTAINER_HF_HOME else "huggingface/hub"
        reuse = (f"to reuse what is downloaded, move {mount.source}/{hub} to "
                 f"<hostCacheDir>/{DEFAULT_ENDPOINT_NAME}/{CACHE_SUBDIR_ROOT}/huggingface/hub")
        if result.target == "aws":
            result.notes.append(f"{mount.shown}: on AWS the caches live on the encrypted EBS cache volume "
                                "(cacheVolumeSizeGb), mounted at /root/.cache")
        elif mount.source.startswith("/"):
            result.set("hostCacheDir", mount.source, f"from {mount.shown}; {layout}", reuse)
        else:
            path = (f"/home/<user>/{mount.source.removeprefix('~/')}" if mount.source.startswith("~/")
                    else "<an absolute path>")
            result.todo.append(f"pulumi config set hostCacheDir {path}    # {mount.shown}, written out as a "
                               f"path on the host; unset, the caches go to {HOST_CACHE_MOUNT}")
            result.notes.append(f"{mount.shown}: the cache folder (hostCacheDir, see above); {layout}; {reuse}")


def _target_todo(result: Imported) -> None:
    result.todo.sort()
    if result.target == "existing-host":
        result.todo[:0] = [
            "pulumi config set hostAddress <the GPU server's address>",
            "pulumi config set hostSshUser <a user in its docker group>",
            "pulumi config set hostPublicKey \"$(ssh-keyscan -t ed25519 <address> | cut -d' ' -f2-)\"    "
            "# check it out of band",
            "pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519    # a key that user authorizes",
            "pulumi config set hostGpuModel <e.g. A10G>    # optional: runs the GPU memory fit check"
            + ("" if "gpus" in result.settings else " (with all GPUs, also hostGpuCount <how many>)"),
        ]
    else:
        result.todo[:0] = [
            "pulumi config set sshAllowedCidrs <your address>/32    # the machine that runs `pulumi up`",
            "pulumi config set apiAllowedCidrs <your apps' network>",
            "pulumi config set instanceType <e.g. g5.xlarge>    # optional: the GPU VM (see docs/gpu-catalog.md)",
        ]
    if not any("--secret apiKey" in line for line in result.todo):
        result.todo.append("pulumi config set --secret apiKey <key>    # optional: unset, a key is generated "
                           "(stack output api_key)")


# ----------------------------------------------------------------------------------------------
# The stack file.

def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(f"{value:g}" if isinstance(value, float) else str(value))
    text = str(value)
    plain = re.fullmatch(r"[A-Za-z0-9/_.~][A-Za-z0-9/_.:~@+-]*", text) is not None and yaml.safe_load(text) == text
    return text if plain else json.dumps(text)


def _order() -> list[str]:
    return ["target", *config_keys()]


def render_stack_file(imported: Imported, stack: str) -> str:
    """`Pulumi.<stack>.yaml`: the settings under `config:` (namespaced `vllm-endpoint:`), each with where it
    came from; first the commands to run before `pulumi up`, last what was not carried over and why."""
    lines = [
        f"# Pulumi.{stack}.yaml, imported from a `docker run` by `vllm-endpoint import-docker-run`.",
        f"# Before `pulumi up --stack {stack}`:",
    ]
    for line in imported.todo:
        command, _, why = line.partition("    # ")
        if len(f"#   {line}") <= _WIDTH:
            lines.append(f"#   {line}")
        else:
            lines.append(f"#   {command}")
            lines += _wrapped(f"({why})", "#       ", "#       ") if why else []
    lines.append("config:")
    for key in _order():
        if key not in imported.settings:
            continue
        value = imported.settings[key]
        for line in imported.comments.get(key, []):
            lines += _wrapped(line, "  # ", "  #   ")
        name = f"{PROJECT}:{key}"
        if isinstance(value, list):
            lines.append(f"  {name}:")
            lines += [f"    - {_scalar(item)}" for item in value]
        elif isinstance(value, dict):
            lines.append(f"  {name}:")
            lines += [f"    {_scalar(k)}: {_scalar(v)}" for k, v in sorted(value.items())]
        else:
            lines.append(f"  {name}: {_scalar(value)}")
    if imported.notes:
        lines.append("# From the original command, not carried over as a setting:")
        for note in imported.notes:
            lines += _wrapped(note, "#   ", "#     ")
    text = "\n".join(lines) + "\n"
    for secret in sorted(imported.secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "<redacted>")
    return text


def _wrapped(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(text, width=_WIDTH, initial_indent=first, subsequent_indent=rest,
                         break_long_words=False, break_on_hyphens=False)


_WIDTH = 110


def stack_file_values(text: str) -> dict[str, str]:
    """A stack file's settings as the Pulumi CLI hands them to the program: keys without the project
    prefix, text as is, lists and maps as JSON (what `load_stack_config` reads)."""
    config = (yaml.safe_load(text) or {}).get("config") or {}
    prefix = f"{PROJECT}:"
    return {key.removeprefix(prefix): value if isinstance(value, str) else json.dumps(value)
            for key, value in config.items() if key.startswith(prefix)}
