"""The commands the program runs on the host over SSH (pulumi-command `remote.Command`).

Each one runs files of infra/host/ (real shell files, linted as they are) with their parameters:
`export NAME=value` lines (`env_lines`, quoted with shlex) followed by each file's text, which a
here-document hands to bash. Nothing else is shell text in Python. The same command runs in
`pulumi up` and, for real, in tests/real against the test host.

Secrets reach these commands only on stdin (the API key for the readiness probe, the proxy's TLS key),
never in their text, their parameters or a command line.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from vllm_endpoint.infra.catalog.names import (
    CACHE_SUBDIR_MODELS,
    CACHE_SUBDIR_PROXY,
    CACHE_SUBDIR_ROOT,
    DEPLOY_TIMELINE_FILE,
    ENDPOINT_TAG,
    PREFETCH_LOG_FILE,
    PREFETCH_STATE_DIR,
    PROJECT_TAG,
    STACK_TAG,
)
from vllm_endpoint.infra.plan.deployment import DeploymentPlan
from vllm_endpoint.infra.plan.spec import ContainerSpec, ModelRoom, Owner, ReadinessGate

CACHE_SUBDIRS = (CACHE_SUBDIR_ROOT, CACHE_SUBDIR_MODELS, CACHE_SUBDIR_PROXY)

# How long the host check waits for the boot-time model download: ~90 GB at 100 MB/s. It must stay
# below the host-ready command's own timeout (components/gpu_host.py) minus cloud-init's time; past it,
# vLLM starts and waits on the prefetch's per-file locks for what is still being written.
PREFETCH_WAIT_SECONDS = 900
# Seconds between the progress lines the host-ready step prints while it waits (the gate's own is
# ReadinessGate.progress_interval_s): the next line comes at most this plus one probe or `du` later.
PROGRESS_INTERVAL_S = 10

# A parameter's value: text, a whole number, a flag (`true`/`false`), or a list (one item per line).
EnvValue = str | int | bool | tuple[str, ...]

_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
# Names the shell, bash or the dynamic loader read themselves: a parameter must never change how the
# command runs, only what it is told.
_RESERVED_NAMES = frozenset({
    "BASH_ENV", "BASHOPTS", "CDPATH", "ENV", "GLOBIGNORE", "HOME", "IFS", "LOGNAME", "OLDPWD", "PATH", "PS4",
    "PWD", "SHELL", "SHELLOPTS", "TMPDIR", "USER",
})
_RESERVED_PREFIXES = ("BASH_", "LD_")
# Ends each host file's here-document in a command; no line of a host file may be exactly this.
_HEREDOC_END = "VLLM_ENDPOINT_HOST_FILE"


def read_host_file(name: str) -> str:
    """The text of infra/host/`name`, from the installed package."""
    return resources.files("vllm_endpoint.infra").joinpath("host", name).read_text()


def env_strings(params: Mapping[str, EnvValue]) -> dict[str, str]:
    """The parameters as the environment strings the host files read; refuses a name the shell or the
    loader would act on, and a value no environment can hold."""
    strings = {}
    for name, value in params.items():
        if not _ENV_NAME.fullmatch(name) or name in _RESERVED_NAMES or name.startswith(_RESERVED_PREFIXES):
            raise ValueError(f"{name!r} cannot be a host file parameter")
        if isinstance(value, bool):  # before int: a bool is an int
            text = "true" if value else "false"
        elif isinstance(value, int | str):
            text = str(value)
        else:
            if any("\n" in item for item in value):
                raise ValueError(f"{name}: a list item cannot hold a line break: {value!r}")
            text = "\n".join(value)
        if "\0" in text:
            raise ValueError(f"{name}: an environment value cannot hold a NUL byte")
        strings[name] = text
    return strings


def env_lines(params: Mapping[str, EnvValue]) -> str:
    """`export NAME=value` lines that set exactly these values in sh and bash, whatever they hold."""
    return "".join(f"export {name}={_sh_quote(text)}\n" for name, text in env_strings(params).items())


def _sh_quote(text: str) -> str:
    # A `$` inside single quotes is literal, but shellcheck reads it as a forgotten expansion (SC2016);
    # such values (Pulumi URNs) are double-quoted with the four characters special there escaped.
    if "$" not in text:
        return shlex.quote(text)
    return '"' + "".join("\\" + c if c in '\\$"`' else c for c in text) + '"'


def host_command(params: Mapping[str, EnvValue], *files: str) -> str:
    """The command text for pulumi-command: the parameters, then each file run by bash in turn, stopping
    at the first that fails (with its status).

    The SSH user's login shell reads the command, and it may be a POSIX sh (the test host's is dash), so
    the outer text is POSIX sh; each file reaches bash through a here-document on fd 3, which leaves
    stdin to the file (the secrets arrive there). `bash -c` with the file's name as $0 makes bash's own
    messages name the file.
    """
    steps = []
    for name in files:
        text = read_host_file(name).rstrip("\n")
        if _HEREDOC_END in text.splitlines():
            raise ValueError(f"infra/host/{name} has a line {_HEREDOC_END}, which would end its here-document")
        steps.append(f"{{ bash -c \"$(cat <&3)\" {shlex.quote(name)} || exit; }} 3<<'{_HEREDOC_END}'\n"
                     f"{text}\n{_HEREDOC_END}\n")
    return env_lines(params) + "".join(steps)


def _cache_checks(cache_dir: str, require_nvidia: bool, container_user: str,
                  open_files: int) -> tuple[dict[str, EnvValue], tuple[str, ...]]:
    """The parameters and files of the checks both host preparations end with."""
    params: dict[str, EnvValue] = {"CACHE_ROOT_DIR": f"{cache_dir}/{CACHE_SUBDIR_ROOT}",
                                   "CONTAINER_USER": container_user, "OPEN_FILES": open_files}
    files = ("check-cache-owner.sh", "check-open-files.sh")
    return params, (("check-nvidia-runtime.sh", *files) if require_nvidia else files)


def prefetch_wait_script(state_dir: str, wait_s: int, prefetch_log: str = PREFETCH_LOG_FILE) -> str:
    """Waits for the boot-time model download boot.sh started, if it started one, printing its progress.
    Never fails."""
    return host_command({"PREFETCH_STATE_DIR": state_dir, "PREFETCH_WAIT_SECONDS": wait_s,
                         "PREFETCH_LOG": prefetch_log, "PROGRESS_INTERVAL_S": PROGRESS_INTERVAL_S},
                        "prefetch-wait.sh")


def host_ready_script(cache_mount: str, require_nvidia: bool, container_user: str, *, open_files: int,
                      prefetch_state_dir: str = PREFETCH_STATE_DIR,
                      prefetch_wait_s: int = PREFETCH_WAIT_SECONDS,
                      prefetch_log: str = PREFETCH_LOG_FILE, timeline_file: str = DEPLOY_TIMELINE_FILE) -> str:
    """Waits until cloud-init finished preparing the VM (failing with cloud-init's own report), checks
    what it set up, then waits for the boot-time model download (reporting, never failing, when it did
    not work out); prints a progress line every PROGRESS_INTERVAL_S while it waits."""
    check_params, checks = _cache_checks(cache_mount, require_nvidia, container_user, open_files)
    params = {"CACHE_MOUNT": cache_mount, "TIMELINE_FILE": timeline_file, **check_params,
              "PREFETCH_STATE_DIR": prefetch_state_dir, "PREFETCH_WAIT_SECONDS": prefetch_wait_s,
              "PREFETCH_LOG": prefetch_log, "PROGRESS_INTERVAL_S": PROGRESS_INTERVAL_S}
    return host_command(params, "host-ready.sh", *checks, "prefetch-wait.sh")


@dataclass(frozen=True)
class HostClaims:
    """What an endpoint will hold on a host that other stacks may share: check-host-claims.sh refuses the
    deploy when another stack's container (or any other container or process) holds it already."""

    owner: Owner
    address: str  # the host as the stack names it, for the messages
    api_port: int
    gpus: str  # "" (none), "all", or device ids separated by commas
    containers: tuple[str, ...]


def _gpu_devices(spec: ContainerSpec) -> str:
    """The GPUs a container spec asks for, in either of the two ways infra/plan/spec.py GpuRequest has."""
    if spec.gpus == "all":
        return "all"
    if spec.runtime == "nvidia":
        return spec.env_dict().get("NVIDIA_VISIBLE_DEVICES", "")
    return ""


def host_claims(plan: DeploymentPlan, owner: Owner, address: str) -> HostClaims:
    return HostClaims(owner, address, plan.api_port, _gpu_devices(plan.vllm), plan.names.containers)


def _claims_params(claims: HostClaims) -> dict[str, EnvValue]:
    return {
        "HOST_ADDRESS": claims.address,
        "API_PORT": claims.api_port,
        "GPU_DEVICES": claims.gpus,
        "OWN_CONTAINERS": claims.containers,
        "CLAIM_PROJECT": claims.owner.project,
        "CLAIM_STACK": claims.owner.stack,
        "CLAIM_ENDPOINT": claims.owner.endpoint,
        "PROJECT_LABEL": PROJECT_TAG,
        "STACK_LABEL": STACK_TAG,
        "ENDPOINT_LABEL": ENDPOINT_TAG,
    }


def host_claims_script(claims: HostClaims) -> str:
    """Fails, naming the setting and who holds it, when the host's apiPort, GPUs or container names are
    taken by another stack's containers (or another container or process); changes nothing. Run before
    any container of the endpoint is created."""
    return host_command(_claims_params(claims), "check-host-claims.sh")


def existing_host_prepare_script(cache_dir: str, require_nvidia: bool, container_user: str,
                                 claims: HostClaims | None = None, *, open_files: int,
                                 room: ModelRoom | None = None) -> str:
    """Creates the cache folders on a server the user already has and checks its Docker engine, and with
    `claims` that no other stack holds what the endpoint needs (host_claims_script), and with `room` that
    the Hub model's weights fit on the disk of hostCacheDir."""
    check_params, checks = _cache_checks(cache_dir, require_nvidia, container_user, open_files)
    params = {"CACHE_DIR": cache_dir, "CACHE_DIRS": tuple(f"{cache_dir}/{sub}" for sub in CACHE_SUBDIRS),
              **check_params}
    if room is not None:
        params |= {"MODEL_ID": room.model, "MODEL_CACHE_DIR": room.cache_dir, "MODEL_BYTES": room.weight_bytes,
                   "MODEL_BYTES_NOTE": "about " if room.estimated else ""}
        checks = (*checks, "check-model-room.sh")
    if claims is None:
        return host_command(params, "prepare-existing-host.sh", *checks)
    # After prepare-existing-host.sh, which says it plainly when the SSH user cannot reach Docker.
    return host_command({**params, **_claims_params(claims)}, "prepare-existing-host.sh", "check-host-claims.sh",
                        *checks)


# A file name write-files.sh accepts: a relative path without `..`, spaces or anything a shell reads.
_FILE_NAME = re.compile(r"(?!.*(^|/)\.\.?(/|$))[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
_FILE_MODE = re.compile(r"0[0-7]{3}")


def write_files_script(directory: str, modes: dict[str, str]) -> str:
    """Writes files whose contents arrive on stdin (`write_files_stdin`), each with its mode.

    Used for the proxy's config and TLS key: on stdin the key never appears in a command line.
    """
    for name, mode in modes.items():
        if not _FILE_NAME.fullmatch(name) or not _FILE_MODE.fullmatch(mode):
            raise ValueError(f"cannot write file {name!r} with mode {mode!r}")
    file_modes = tuple(f"{name} {mode}" for name, mode in sorted(modes.items()))
    return host_command({"TARGET_DIR": directory, "FILE_MODES": file_modes}, "write-files.sh")


def write_files_stdin(files: dict[str, str]) -> str:
    """The stdin `write_files_script` reads: one `name base64-content` line per file."""
    return "".join(f"{name} {base64.b64encode(content.encode()).decode()}\n" for name, content in sorted(files.items()))


def readiness_gate_script(gate: ReadinessGate) -> str:
    """Returns 0 once `GET probe_url` answers 200 with the API key (read from stdin), printing the
    deploy timeline; otherwise exits 1 with the container's state and last log lines."""
    return host_command({
        "PROBE_URL": gate.probe_url,
        "CONTAINER": gate.container,
        "TIMEOUT_S": gate.timeout_s,
        "POLL_INTERVAL_S": gate.poll_interval_s,
        "MAX_RESTARTS": gate.max_restarts,
        "LOG_LINES": gate.log_lines,
        "TIMELINE_FILE": gate.timeline_file,
        "INSECURE_TLS": gate.insecure_tls,
        "PROGRESS_INTERVAL_S": gate.progress_interval_s,
        "MODEL_CACHE_DIR": gate.model_cache_dir,
        "FIT_KV_CACHE_TOKENS": "" if gate.fit_kv_cache_tokens is None else gate.fit_kv_cache_tokens,
        "FIT_MAX_CONCURRENCY": "" if gate.fit_max_concurrency is None else f"{gate.fit_max_concurrency:.2f}",
        "FIT_MAX_MODEL_LEN": "" if gate.fit_max_model_len is None else gate.fit_max_model_len,
    }, "readiness-gate.sh")


# How readiness-gate.sh and the host-ready files start a progress line ("[+12 s] ...") and the gate its
# line of KV cache figures.
PROGRESS_LINE = re.compile(r"\[\+(\d+) s\] ")
CAPACITY_PREFIX = "capacity: "


def gate_report(stdout: str | None) -> str:
    """The gate's output without its progress lines: the ready line, the KV cache figures, the timeline
    (the `deploy_timeline` stack output). None (no output recorded, e.g. a command mocked in a test) is
    an empty report."""
    lines = (stdout or "").splitlines(keepends=True)
    return "".join(line for line in lines if not PROGRESS_LINE.match(line))


def gate_capacity_line(stdout: str | None) -> str | None:
    """vLLM's KV cache size and maximum concurrency next to the plan's fit estimate, as the gate printed
    them once the server was ready (None when it printed none)."""
    found = [line for line in (stdout or "").splitlines() if line.startswith(CAPACITY_PREFIX)]
    return found[-1] if found else None


def summary_with_capacity(summary: str, gate_stdout: str | None) -> str:
    """The plan's summary with what vLLM itself reported once ready (the `plan` stack output)."""
    line = gate_capacity_line(gate_stdout)
    return f"{summary}\n{line}" if line else summary


def _space_setting(plan: DeploymentPlan) -> str:
    if plan.config.target == "aws":
        return "raise cacheVolumeSizeGb (the volume grows in place; nothing on it is lost)"
    return "free space there, or set hostCacheDir to a folder on a larger disk"


def model_stage_script(plan: DeploymentPlan) -> str:
    """Before a fine-tune upload: room for it in the cache, and an empty staging folder for the copy."""
    upload = plan.model_upload
    assert upload is not None
    return host_command({"STAGING_DIR": upload.staging_dir, "MODEL_DIR": upload.remote_dir,
                         "NEED_BYTES": upload.contents.total_bytes, "SPACE_SETTING": _space_setting(plan)},
                        "stage-model-upload.sh")


def local_model_copy_script(plan: DeploymentPlan) -> str:
    """target=local: the staging, then the copy itself (what SFTP does for a remote host)."""
    upload = plan.model_upload
    assert upload is not None
    return host_command({"STAGING_DIR": upload.staging_dir, "MODEL_DIR": upload.remote_dir,
                         "NEED_BYTES": upload.contents.total_bytes, "SPACE_SETTING": _space_setting(plan),
                         "SOURCE_DIR": str(upload.local_dir)},
                        "stage-model-upload.sh", "copy-local-model.sh")


def model_verify_script(plan: DeploymentPlan, copy_urn: str) -> tuple[str, str]:
    """(command, stdin): checks the copy file by file against the source's manifest, then moves it into
    place with one rename. A copy that does not match is removed, and the message says how to make the copy
    (`copy_urn`) run again: Pulumi re-runs a copy by itself only when the copy failed."""
    upload = plan.model_upload
    assert upload is not None
    command = host_command({"STAGED_COPY": upload.staged_copy, "MODEL_DIR": upload.remote_dir,
                            "DIGEST": upload.digest, "COPY_URN": copy_urn}, "verify-model.sh")
    return command, upload.contents.manifest()


# A placeholder in a template file: @@NAME@@ (nginx's and systemd's own variables are $name and %n).
_PLACEHOLDER = re.compile(r"@@([A-Z][A-Z0-9_]*)@@")


def fill_template(template: str, values: Mapping[str, str | tuple[str, ...]]) -> str:
    """The template with each @@NAME@@ replaced by its value.

    A text value replaces the placeholder where it stands; a tuple of lines replaces a placeholder that
    stands alone on its line, each line at the placeholder's indentation (none: the line goes). A
    placeholder without a value, a value without a placeholder, or a stray `@@` is an error: a
    misspelt name fails here, not in nginx at start.
    """
    named = set(_PLACEHOLDER.findall(template))
    if named != values.keys():
        raise ValueError(f"template placeholders without a value: {sorted(named - values.keys())}; "
                         f"values without a placeholder: {sorted(values.keys() - named)}")
    if "@@" in _PLACEHOLDER.sub("", template):
        raise ValueError("the template has an @@ that is not a placeholder @@NAME@@")
    lines = []
    for line in template.splitlines(keepends=True):
        alone = _PLACEHOLDER.fullmatch(line.strip())
        value = values[alone[1]] if alone else None
        if isinstance(value, tuple):
            indent = line[: len(line) - len(line.lstrip())]
            lines += [f"{indent}{piece}\n" for piece in value]
        else:
            lines.append(_PLACEHOLDER.sub(lambda match: _inline(match[1], values[match[1]]), line))
    return "".join(lines)


def _inline(name: str, value: str | tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise ValueError(f"@@{name}@@ takes lines: it must stand alone on its line")
    if "\n" in value:
        raise ValueError(f"@@{name}@@ stands in a line: its value cannot hold a line break")
    return value
