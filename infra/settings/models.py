"""The stack's typed configuration: every setting, its default, and what makes it valid.

Settings are flat Pulumi config keys (`pulumi config set maxNumSeqs 64`), grouped here into sections
by what a change to them touches: `ServerSettings` and `ModelSettings` only re-create the container,
`AwsSettings` change the VM, `AccessSettings` change the network edge. Each field's alias is its config
key, its description is the documentation of it and its declared `effect` what changing it does to a running
stack (infra/settings/effects.py); tools/gen_docs.py renders the README's tables and Pulumi.yaml's `config:`
block (infra/settings/project_config.py) from them.

Validation happens once, in `load_stack_config`, before any resource is declared, and reports every
bad value at once, each naming the key, the value and what would be valid.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from vllm_endpoint.infra.catalog.dtypes import DTYPE_CHOICES, KV_CACHE_DTYPE_CHOICES
from vllm_endpoint.infra.catalog.names import (
    ALB_DEREGISTRATION_DELAY_RANGE_S,
    ALB_DEREGISTRATION_DELAY_S,
    API_KEY_CHARACTERS,
    API_WORLD_OPT_IN,
    DEFAULT_API_PORT,
    DEFAULT_ENDPOINT_NAME,
    DEFAULT_VLLM_VERSION,
    DEFAULT_WAITING_PER_REPLICA,
    ENDPOINT_NAME_PATTERN,
    HOST_CACHE_MOUNT,
    LOCAL_CACHE_DIR,
    SSH_WORLD_OPT_IN,
    VLLM_CPU_KV_CACHE_ENV,
    VLLM_IMAGE_DISK_GIB,
    VLLM_IMAGE_REPOSITORY,
    VLLM_OPEN_FILES_TARGET,
)
from vllm_endpoint.infra.catalog.reserved_networks import reserved_network
from vllm_endpoint.infra.catalog.security import SECURITY_FLOOR
from vllm_endpoint.infra.settings.effects import (
    CONTAINER,
    FLEET,
    IN_PLACE,
    NETWORK,
    NEW_VOLUME,
    NONE,
    REPLACE,
    RESTART,
    ROLLING,
    TAGS,
    VOLUME,
    effect,
    effect_of,
)

DEFAULT_AMI_SSM_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
)
# Marker words the program puts on a rule a user opened to the world, and which policy/ accepts.
MIN_API_KEY_LENGTH = 32
# How a user learns the public address they deploy from (AWS's own echo service, plain text, no key).
MY_ADDRESS_COMMAND = "curl -s https://checkip.amazonaws.com"
SET_MY_ADDRESS = f'`pulumi config set sshAllowedCidrs "$({MY_ADDRESS_COMMAND})/32"`'
# The two measurements of the original command's `--max-num-seqs 16` against vLLM's default (issues 7 and 11),
# each with what it measured: vLLM's offline engine, and the OpenAI API as apps use it.
MAX_NUM_SEQS_16_MEASURES = (
    "4.4x less output throughput in vLLM's offline engine (H100, a 600-request burst: 5,339 vs 23,622 "
    "tok/s) and 1.47x less through the API (H200, 500 requests at concurrency 256, with the original "
    "command's other settings: 4,682 vs 6,861 output tok/s, p50 latency 12.2 s vs 6.8 s)"
)


class ConfigError(Exception):
    """Bad stack configuration; `problems` holds one line per bad setting."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in the stack configuration:\n{lines}")


# ----------------------------------------------------------------------------------------------
# Domain types, defined once.

def _cidr(value: str) -> str:
    text = value.strip()
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IPv4 or IPv6 CIDR block (write e.g. 10.20.0.0/16 or fd00:1::/64)"
        ) from None
    if "/" not in text:
        raise ValueError(f"{value!r} has no prefix length: write {network.network_address}/{network.max_prefixlen}")
    if str(network) != text and network.with_prefixlen != text:
        raise ValueError(f"{value!r} has host bits set: the network is {network.with_prefixlen}")
    return network.with_prefixlen


_TAG_KEY = re.compile(r"^[A-Za-z0-9+\-=.,_:@]{1,128}$")


def _instance_tags(tags: dict[str, str]) -> dict[str, str]:
    # The instance exposes its tags through IMDS (the boot prefetch reads them); AWS then refuses
    # to launch an instance with any other tag key.
    for key, value in tags.items():
        if not _TAG_KEY.fullmatch(key) or key in {".", "..", "_index"} or key.lower().startswith("aws:"):
            raise ValueError(f"tag key {key!r}: use 1-128 letters, digits and + - = . , _ : @ (no spaces or /; "
                             "not aws:...)")
        if len(value) > 256:
            raise ValueError(f"tag {key!r}: values are at most 256 characters")
    return tags


def _is_world(cidr: str) -> bool:
    return ipaddress.ip_network(cidr).prefixlen == 0


# What each allowed-CIDR setting should hold instead of an address nobody connects from.
_OWN_ADDRESS_HINT = {
    "sshAllowedCidrs": f"put the address of the machine you run `pulumi up` from: {SET_MY_ADDRESS}",
    "apiAllowedCidrs": "put the networks your apps call from (your own machine's address is what "
                       f"`{MY_ADDRESS_COMMAND}` prints; add /32)",
    "metricsAllowedCidrs": "put your monitoring system's address (your own machine's is what "
                           f"`{MY_ADDRESS_COMMAND}` prints; add /32), or unset metricsAllowedCidrs",
}


def _unreachable(key: str, cidrs: list[str]) -> list[str]:
    """A problem for each CIDR inside a block no client connects from (infra/catalog/data/reserved-networks.yaml):
    such a rule admits nobody, and on AWS the deploy would pay for a GPU it then cannot reach."""
    problems = []
    for cidr in cidrs:
        reserved = reserved_network(cidr)
        if reserved is not None:
            problems.append(f"{key}: {cidr} is {reserved.kind} ({reserved.rfc}): {reserved.why}; "
                            f"{_OWN_ADDRESS_HINT[key]}")
    return problems


def _share(value: Any) -> float:
    """A share of GPU memory: a number above 0 and at most 1. `95%` or 95 are read as a percentage the
    user meant, and refused with the number to write (a silent /100 would hide which form the key takes)."""
    text = value.strip() if isinstance(value, str) else value
    percent = isinstance(text, str) and text.endswith("%")
    if percent:
        text = text[:-1].strip()
    try:
        share = float(text) if not isinstance(text, bool) else math.nan
    except (TypeError, ValueError):
        share = math.nan
    if percent or 1 < share <= 100:
        example = f"{share / 100:g} for {share:g}%" if 0 < share <= 100 else "0.9 for 90%"
        raise ValueError(f"write a number between 0 and 1 (the share of each GPU's memory vLLM may use), "
                         f"not a percentage: e.g. {example}")
    if not 0 < share <= 1:
        raise ValueError("write a number above 0 and at most 1 (the share of each GPU's memory vLLM may use), "
                         "e.g. 0.9")
    return share


def _split_list(value: Any) -> Any:
    """Accept a JSON array (what `pulumi config set --path key[0]` stores) or a comma-separated string."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


def _json_object(value: Any) -> Any:
    if isinstance(value, str):
        return json.loads(value)
    return value


Cidr = Annotated[str, AfterValidator(_cidr)]
CidrList = Annotated[list[Cidr], BeforeValidator(_split_list)]
StrList = Annotated[list[str], BeforeValidator(_split_list)]
StrMap = Annotated[dict[str, str], BeforeValidator(_json_object)]
NumberMap = Annotated[dict[str, int | float | str], BeforeValidator(_json_object)]
Port = Annotated[int, Field(ge=1, le=65535)]


def _gpus(value: Any) -> str | tuple[str, ...]:
    if value == "all" or value == ["all"]:
        return "all"
    if isinstance(value, int) and not isinstance(value, bool):
        value = [str(value)]
    items = _split_list(value)
    if not isinstance(items, list | tuple) or not items:
        raise ValueError(f"{value!r} is neither `all` nor a list of GPU device ids such as [\"1\"] or \"0,1\"")
    devices = tuple(str(item).strip() for item in items)
    for device in devices:
        if not _GPU_DEVICE.fullmatch(device):
            raise ValueError(f"{device!r} is not a GPU index (e.g. 1) or UUID (GPU-...); use `all` or a list of them")
    if len(set(devices)) != len(devices):
        raise ValueError(f"{list(devices)} names a GPU twice")
    return devices


GpuSelection = Annotated[str | tuple[str, ...], PlainValidator(_gpus)]

_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_AMI_ID = re.compile(r"^ami-[0-9a-f]{8}([0-9a-f]{9})?$")
_SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8}([0-9a-f]{9})?$")
_VOLUME_ID = re.compile(r"^vol-[0-9a-f]{8}([0-9a-f]{9})?$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_DOCKER_REPO = re.compile(r"^[a-z0-9]+([._/-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
_DOCKER_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_LINUX_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_HF_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_GPU_DEVICE = re.compile(r"^([0-9]+|GPU-[0-9a-fA-F-]{8,}|MIG-[0-9a-fA-F-]{8,})$")
_SSH_PUBLIC_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+=*( .*)?$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_SERVED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./:-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _matching(pattern: re.Pattern[str], what: str, example: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not {what} (e.g. {example})")
        return value

    return AfterValidator(check)


def _one_of(choices: tuple[str, ...]) -> AfterValidator:
    # The choices come from the catalog (infra/catalog/dtypes.py), so they are not repeated as a Literal here.
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(map(repr, choices))}")
        return value

    return AfterValidator(check)


class _Settings(BaseModel):
    """Settings whose every field declares what changing it does to a running stack (infra/settings/effects.py):
    a settings class with a field that does not fails at import, so no setting ships without its effect."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        missing = [name for name, info in cls.model_fields.items() if effect_of(info) is None]
        if missing:
            raise TypeError(
                f"{cls.__name__}: declare what a change of {', '.join(missing)} does to a running stack: "
                "Field(..., json_schema_extra=effect(...)) with the words of infra/settings/effects.py"
            )


class _Section(_Settings):
    # extra="forbid": a misspelt key is an error, never a silently ignored setting.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True,
        validate_default=True,
    )


# ----------------------------------------------------------------------------------------------
# Sections.

class StackSettings(_Section):
    """Settings of the stack program itself (`__main__.py`), not of VllmEndpoint: in a program of your own
    the endpoint's name is the name you give the VllmEndpoint."""

    endpoint_name: Annotated[str, _matching(re.compile(ENDPOINT_NAME_PATTERN), "an endpoint name",
                                            "chat")] = Field(
        DEFAULT_ENDPOINT_NAME, description="The stack's endpoint name: its containers (`<name>`, "
        "`<name>-proxy`), Docker network and folder in hostCacheDir are named after it. Give each stack that "
        "shares a host with another (target existing-host or local) a name of its own. Changing it starts a "
        "new endpoint beside the caches of the old one (a first deploy's downloads again).",
        json_schema_extra=effect(CONTAINER),
    )


class ModelSettings(_Section):
    model: str = Field(
        "Qwen/Qwen2.5-1.5B-Instruct",
        description="Hugging Face repo id to serve; with `imageBuildContext`, the model's path inside "
        "the custom image (e.g. /app/model). Ignored when `modelPath` is set.",
        json_schema_extra=effect(CONTAINER, TAGS),
    )
    model_revision: str | None = Field(
        None, description="Git revision (commit sha, tag or branch) of the Hugging Face repo; pin it "
        "for reproducible deploys. Required with `trustRemoteCode`.",
        json_schema_extra=effect(CONTAINER, TAGS),
    )
    model_path: Path | None = Field(
        None, description="Local folder on the deploying machine holding a merged fine-tune "
        "(config.json, weights, tokenizer). Uploaded to the cache volume (again only when its content "
        "changes), mounted read-only and served from /app/model. On a fleet: uploaded to a private S3 bucket "
        "of the stack, and each task copies it into its instance's cache before vLLM starts.",
        json_schema_extra=effect(CONTAINER, TAGS),
    )
    served_model_name: Annotated[str, _matching(_SERVED_NAME, "a model name", "my-finetune")] | None = Field(
        None, description="The name apps put in requests (`model`). Default: the repo id; for "
        "`modelPath` the folder's name; for a custom image the model path's last part.",
        json_schema_extra=effect(CONTAINER),
    )
    model_architecture: NumberMap | None = Field(
        None, description="Architecture numbers for the fit check, used instead of the model's Hub "
        "config.json (for a model the plan cannot read from the Hub, e.g. offline or in a custom image) "
        "(JSON object with config.json's keys: num_hidden_layers, hidden_size, "
        "num_attention_heads, num_key_value_heads, vocab_size, intermediate_size, "
        "max_position_embeddings, torch_dtype).",
        json_schema_extra=effect(NONE),
    )

    @model_validator(mode="after")
    def _model_id(self) -> ModelSettings:
        if self.model_path is None and not self.model.startswith("/") and not _HF_REPO_ID.fullmatch(self.model):
            raise ValueError(
                f"model: {self.model!r} is neither a Hugging Face repo id (owner/name, e.g. "
                "Qwen/Qwen2.5-1.5B-Instruct) nor an absolute path inside a custom image"
            )
        return self


class ServerSettings(_Section):
    image: Annotated[str, _matching(_DOCKER_REPO, "an image repository", VLLM_IMAGE_REPOSITORY)] = Field(
        VLLM_IMAGE_REPOSITORY, description="vLLM image repository (a mirror of vllm/vllm-openai).",
        json_schema_extra=effect(CONTAINER, TAGS),
    )
    image_tag: Annotated[str, _matching(_DOCKER_TAG, "a Docker tag", f"v{DEFAULT_VLLM_VERSION}")] = Field(
        f"v{DEFAULT_VLLM_VERSION}", description="Image tag; `latest` and other moving tags are refused.",
        json_schema_extra=effect(CONTAINER, TAGS),
    )
    image_digest: Annotated[str, _matching(_DIGEST, "an image digest", "sha256:<64 hex digits>")] | None = Field(
        None, description="Pins the image by content (`sha256:...`); the tag is then only a label.",
        json_schema_extra=effect(CONTAINER, TAGS),
    )
    vllm_version: str | None = Field(
        None, description="vLLM version inside the image, when the tag does not say (e.g. a mirror "
        "tagged `prod`); flags are checked against it.",
        json_schema_extra=effect(CONTAINER),
    )
    image_build_context: Path | None = Field(
        None, description="Folder with a Dockerfile `FROM vllm/vllm-openai:<tag>` (e.g. a fine-tune "
        "baked in at /app/model); built on the host and run instead of the stock image. On a fleet: built on "
        "the deploying machine (it needs Docker) and pushed to a private ECR repository of the stack, which the "
        "replicas pull it from by digest.",
        json_schema_extra=effect(CONTAINER, TAGS),
    )
    gpus: GpuSelection = Field(
        "all", description="GPUs the container gets: `all`, or device indexes/UUIDs such as "
        '["1"] or "0,1" (the original command\'s `--gpus \'"device=1"\'`).',
        json_schema_extra=effect(CONTAINER),
    )
    tensor_parallel_size: Annotated[int, Field(ge=1, le=64)] | None = Field(
        None, description="vLLM `--tensor-parallel-size`. Default: the number of GPUs the container gets.",
        json_schema_extra=effect(CONTAINER),
    )
    gpu_memory_utilization: Annotated[float, BeforeValidator(_share), Field(gt=0, le=1)] = Field(
        0.9, description="vLLM `--gpu-memory-utilization`: share of each GPU's memory vLLM may use. "
        "The original command used 0.7 on a shared GPU; a dedicated VM can give vLLM more (vLLM's "
        "own default is 0.92 since 0.20; 0.9 leaves room for the CUDA context on every GPU in the catalog).",
        json_schema_extra=effect(CONTAINER),
    )
    max_num_seqs: Annotated[int, Field(ge=1, le=65536)] | None = Field(
        None, description="vLLM `--max-num-seqs`. Default: vLLM's own (256 on 24-80 GB GPUs). The "
        f"original command's 16, measured against that default: {MAX_NUM_SEQS_16_MEASURES}. Set it only to "
        "cap concurrency.",
        json_schema_extra=effect(CONTAINER),
    )
    api_server_count: Annotated[int, Field(ge=1, le=64)] | None = Field(
        None, description="vLLM `--api-server-count`: HTTP front-end processes before the one engine (they "
        "parse, tokenize and stream; images from vLLM 0.11.1, which run `vllm serve`). A small model is bound "
        "by one front end's CPU, not the GPU: on an H200 (vLLM 0.24.0, Qwen2.5-1.5B, 512 prompt / 256 output "
        "tokens at concurrency 256) 1 server gave 6,553 output tok/s (p50 latency 8.23 s, p99 10.16 s), 4 gave "
        "13,359 (3.94 s, 5.80 s), 8 gave 10,659 (5.06 s, 6.17 s). Default: from the instance type, one per "
        "physical core (2 vCPUs) left after 2 vCPUs per engine process (one per GPU, plus a scheduler with "
        "tensor parallelism) and 2 for the proxy and the boot prefetch, at most 4 (g5.xlarge: 1, g5.2xlarge: "
        "2, 16+ vCPUs: 4); 1 on an existing host, whose vCPUs the program does not know.",
        json_schema_extra=effect(CONTAINER),
    )
    container_open_files: Annotated[int, Field(ge=1024, le=1_048_576)] = Field(
        VLLM_OPEN_FILES_TARGET, description="Open-files limit (soft = hard) of the vLLM and proxy containers. "
        f"vLLM raises its own to {VLLM_OPEN_FILES_TARGET} at start (client connections, engine sockets and "
        "model files are all descriptors) and warns when it cannot; the proxy holds two per request, and the "
        "plan refuses a value below what its workers need for maxNumSeqs (4,096 at 256). The "
        "deploy checks first that the host's Docker can grant it (a daemon whose own hard limit is lower and "
        "that lacks CAP_SYS_RESOURCE cannot, and the container would not start): lower it to what the check "
        "reports, or raise the daemon's (`systemctl edit docker`: LimitNOFILE=1048576).",
        json_schema_extra=effect(CONTAINER),
    )
    max_model_len: Annotated[int, Field(ge=16, le=10_000_000)] | None = Field(
        None, description="vLLM `--max-model-len` (tokens per sequence). Default: the model's maximum.",
        json_schema_extra=effect(CONTAINER),
    )
    block_size: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        None, description="vLLM `--block-size` (KV cache block, tokens). Default: vLLM's (16 on GPUs).",
        json_schema_extra=effect(CONTAINER),
    )
    swap_space: Annotated[int, Field(ge=0, le=1024)] | None = Field(
        None, description="vLLM `--swap-space` GiB. Only images up to v0.17 accept it (removed in vLLM "
        "0.18.0); on a newer image the plan refuses it.",
        json_schema_extra=effect(CONTAINER),
    )
    dtype: Annotated[str, _one_of(DTYPE_CHOICES)] = Field(
        "auto", description="vLLM `--dtype`. `auto` resolves to float16 on GPUs without bfloat16 (T4).",
        json_schema_extra=effect(CONTAINER),
    )
    quantization: Annotated[str, _matching(re.compile(r"^[a-z0-9_-]+$"), "a vLLM quantization method",
                                           "awq")] | None = Field(
        None, description="vLLM `--quantization` (e.g. awq, gptq, fp8).",
        json_schema_extra=effect(CONTAINER),
    )
    kv_cache_dtype: Annotated[str, _one_of(KV_CACHE_DTYPE_CHOICES)] = Field(
        "auto", description="vLLM `--kv-cache-dtype`.",
        json_schema_extra=effect(CONTAINER),
    )
    trust_remote_code: bool = Field(
        False, description="vLLM `--trust-remote-code`: runs Python code from the model repo. Needs "
        "`modelRevision` pinned.",
        json_schema_extra=effect(CONTAINER),
    )
    extra_args: StrList = Field(
        default_factory=list, description='Further vLLM server arguments, e.g. ["--enable-chunked-prefill"]; '
        "checked against the image's vLLM version.",
        json_schema_extra=effect(CONTAINER),
    )
    extra_env: StrMap = Field(
        default_factory=dict, description="Extra non-secret environment variables for the vLLM container.",
        json_schema_extra=effect(CONTAINER),
    )
    ipc: Literal["auto", "host", "private"] = Field(
        "auto", description="Container IPC: `host` as in the original command, or `private` with "
        "`shmSizeGb` of /dev/shm. `auto`: host only when tensor parallelism needs it.",
        json_schema_extra=effect(CONTAINER),
    )
    shm_size_gb: Annotated[int, Field(ge=1, le=512)] = Field(
        4, description="/dev/shm size (GiB) for the vLLM container when IPC is private.",
        json_schema_extra=effect(CONTAINER),
    )
    container_user: Annotated[str, _matching(re.compile(r"^[0-9]{1,10}:[0-9]{1,10}$"), "a numeric uid:gid",
                                             "1000:1000")] = Field(
        "1000:1000", description="uid:gid the vLLM container runs as (not root). Must own the cache "
        "folder on the host: on the AWS Ubuntu AMIs that is `ubuntu`, 1000:1000; the deploy checks it.",
        json_schema_extra=effect(CONTAINER),
    )
    api_port: Port = Field(
        DEFAULT_API_PORT, description="Host port the OpenAI API answers on (container port 8000).",
        json_schema_extra=effect(CONTAINER, NETWORK),
    )
    readiness_timeout_seconds: Annotated[int, Field(ge=60, le=7200)] = Field(
        1800, description="How long `pulumi up` waits for `GET /v1/models` to answer before failing "
        "with the container's last log lines (covers a first model download).",
        json_schema_extra=effect(NONE),
    )

    @model_validator(mode="after")
    def _coherent(self) -> ServerSettings:
        if self.image_tag in {"latest", "nightly", "main", "edge"} and self.image_digest is None:
            raise ValueError(
                f"imageTag: {self.image_tag!r} moves between deploys; pin a release tag such as "
                f"v{DEFAULT_VLLM_VERSION} or set imageDigest"
            )
        for name in self.extra_env:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"extraEnv: {name!r} is not an environment variable name")
            if name in {"VLLM_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}:
                raise ValueError(
                    f"extraEnv: {name} is a secret; set it with `pulumi config set --secret "
                    f"{'apiKey' if name == 'VLLM_API_KEY' else 'hfToken'}` instead"
                )
        for arg in self.extra_args:
            if arg.split("=", 1)[0] in {"--api-key"}:
                raise ValueError(
                    "extraArgs: --api-key would put the key on the process command line; set it with "
                    "`pulumi config set --secret apiKey` (passed as VLLM_API_KEY)"
                )
        return self

    @property
    def gpu_count(self) -> int | None:
        """GPUs handed to the container, when the device list says; None for `all`."""
        return None if self.gpus == "all" else len(self.gpus)


class AwsSettings(_Section):
    instance_type: Annotated[str, _matching(_INSTANCE_TYPE, "an EC2 instance type", "g5.xlarge")] = Field(
        "g5.xlarge", description="GPU instance type (see docs/gpu-catalog.md). Changing it stops and "
        "starts the same instance (and re-creates the vLLM container when apiServerCount's default changes "
        "with the vCPUs).",
        json_schema_extra=effect(CONTAINER, RESTART),
    )
    ami_id: Annotated[str, _matching(_AMI_ID, "an AMI id", "ami-0123456789abcdef0")] | None = Field(
        None, description="Pins the AMI. Unset: the AWS Deep Learning Base GPU AMI that "
        "`amiSsmParameter` names when the instance is created; a newer AMI published later is ignored "
        "(the instance, its warm caches and its address stay). To roll the AMI on purpose, set `amiId` "
        "to the new id, e.g. `pulumi config set amiId \"$(aws ssm get-parameter --name <amiSsmParameter> "
        "--query Parameter.Value --output text)\"`: the instance is replaced and the cache volume and Elastic "
        "IP move to the new one. (`pulumi up --replace` alone would not: Pulumi re-creates the instance "
        "from the AMI recorded in the stack's state.)",
        json_schema_extra=effect(REPLACE),
    )
    ami_ssm_parameter: Annotated[str, _matching(re.compile(r"^/[A-Za-z0-9_./-]+$"), "an SSM parameter path",
                                                DEFAULT_AMI_SSM_PARAMETER)] = Field(
        DEFAULT_AMI_SSM_PARAMETER, description="Public SSM parameter naming the AMI when `amiId` is unset; "
        "read when the instance is created (see `amiId` for rolling to a newer one).",
        json_schema_extra=effect(NONE),  # read once; a new AMI is adopted only by pinning amiId
    )
    root_volume_size_gb: Annotated[int, Field(ge=60, le=16384)] = Field(
        100, description=f"Encrypted gp3 root volume size; the DLAMI needs about 60 GiB, the vLLM image "
        f"~{VLLM_IMAGE_DISK_GIB}.",
        json_schema_extra=effect(IN_PLACE),
    )
    cache_volume_size_gb: Annotated[int, Field(ge=20, le=65536)] = Field(
        100, description="Persistent, encrypted EBS volume for the Hugging Face and vLLM caches "
        "(and uploaded fine-tunes). Can grow, never shrink.",
        json_schema_extra=effect(VOLUME),
    )
    cache_volume_type: Literal["gp3", "io2", "io1"] = Field(
        "gp3", description="Cache volume EBS type.", json_schema_extra=effect(VOLUME),
    )
    cache_volume_iops: Annotated[int, Field(ge=3000, le=256000)] | None = Field(
        None, description="Cache volume IOPS (gp3 3,000-80,000; io1/io2 required). Default for gp3: "
        "enough for the default throughput (at least 3,000).",
        json_schema_extra=effect(VOLUME),
    )
    cache_volume_throughput: Annotated[int, Field(ge=125, le=2000)] | None = Field(
        None, description="gp3 throughput in MiB/s (125-2,000). Default: the instance type's own EBS "
        "bandwidth limit (capped at 1,000), so reading weights is not throttled by the volume; see "
        "Performance.",
        json_schema_extra=effect(VOLUME),
    )
    cache_volume_id: Annotated[str, _matching(_VOLUME_ID, "an EBS volume id", "vol-0123456789abcdef0")] | None = Field(
        None, description="Attach this existing cache volume instead of creating one, e.g. the one a destroyed "
        "stack kept (its `retained_on_destroy` output): the endpoint starts with its models and compile cache. "
        "The volume's zone decides the instance's (a `subnetId` must be in it); it stays outside the stack, "
        "so `pulumi destroy` leaves it as it was.",
        json_schema_extra=effect(NEW_VOLUME),
    )
    protect_cache_volume: bool = Field(
        False, description="Protect the stack's cache volume: Pulumi then refuses `pulumi destroy` and every "
        "update that would replace the volume, until you set it back to false and run `pulumi up`. Off, "
        "destroy and replacements remove the volume from the stack but keep it in AWS (retained).",
        json_schema_extra=effect(NONE),
    )
    kms_key_id: str | None = Field(
        None, description="Customer KMS key (ARN) for the root and cache volumes; default: the AWS-managed key.",
        json_schema_extra=effect(NEW_VOLUME),
    )
    subnet_id: Annotated[str, _matching(_SUBNET_ID, "a subnet id", "subnet-0123456789abcdef0")] | None = Field(
        None, description="Subnet for the instance (its VPC is used). Default: a default subnet of the "
        "region's default VPC in `availabilityZone`.",
        json_schema_extra=effect(NEW_VOLUME),
    )
    availability_zone: Annotated[str, _matching(re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9][a-z]$"),
                                                 "an availability zone", "us-east-1a")] | None = Field(
        None, description="Zone for the instance and its cache volume when `subnetId` is unset. Default: "
        "the first default subnet's zone.",
        json_schema_extra=effect(NEW_VOLUME),
    )
    ssh_user: Annotated[str, _matching(_LINUX_USER, "a Linux user name", "ubuntu")] = Field(
        "ubuntu", description="Login user of the AMI (the DLAMI Ubuntu images use `ubuntu`).",
        json_schema_extra=effect(CONTAINER, RESTART),
    )
    ssh_key_pair_name: str | None = Field(
        None, description="Existing EC2 key pair to install; needs the secret `sshPrivateKey`. Default: "
        "a key generated by the program (pulumi-tls, kept secret in state).",
        json_schema_extra=effect(REPLACE),
    )
    ssh_public_key: Annotated[str, _matching(_SSH_PUBLIC_KEY, "an OpenSSH public key",
                                             "ssh-ed25519 AAAA... me@laptop")] | None = Field(
        None, description="Your OpenSSH public key to install instead of a generated one; needs the "
        "secret `sshPrivateKey`.",
        json_schema_extra=effect(REPLACE),
    )
    tags: Annotated[StrMap, AfterValidator(_instance_tags)] = Field(
        default_factory=dict, description="Tags on every AWS resource (keys: letters, digits and "
        "+ - = . , _ : @, as instance tags readable through instance metadata require).",
        json_schema_extra=effect(TAGS),
    )
    prefetch_at_boot: bool = Field(
        True, description="At first boot, pull the image and download the model onto the cache volume in "
        "parallel, before the container is created (read from instance tags, so changing them never "
        "touches the instance).",
        json_schema_extra=effect(TAGS),
    )
    docker_data_on_cache_volume: bool = Field(
        False, description="Keep Docker's images on the cache volume: a replacement instance (new AMI) "
        "starts without pulling the ~25 GB image. Changing it stops and starts the instance and re-pulls once.",
        json_schema_extra=effect(RESTART),
    )
    detailed_monitoring: bool = Field(
        True, description="EC2 detailed (1-minute) monitoring.", json_schema_extra=effect(IN_PLACE),
    )
    recovery_alarm: bool = Field(
        True, description="CloudWatch alarm that recovers the instance when its system status check "
        "fails (only where the instance type supports recovery).",
        json_schema_extra=effect(NONE),
    )
    metrics: bool = Field(
        True, description="The CloudWatch agent on the instance publishes vLLM's metrics (requests running and "
        "waiting, tokens, KV-cache usage) and the GPU's, the proxy's access log goes to CloudWatch Logs, and the "
        "stack gets a dashboard (output `dashboard_url`) and alarms. The instance gets a role with AWS's "
        "CloudWatchAgentServerPolicy. Changing it re-creates the proxy (its log driver), changes the instance's "
        "role and tags in place (no restart), and installs or stops the agent. On a fleet: the agent runs beside "
        "vLLM in each task (its metrics drive autoscaling), and the fleet gets its own dashboard and alarms (the "
        "load balancer's health and 5xx as well).",
        json_schema_extra=effect(CONTAINER, TAGS, IN_PLACE),
    )
    alarm_email: Annotated[str, _matching(_EMAIL, "an e-mail address", "oncall@example.com")] | None = Field(
        None, description="Send the alarms to this address through an SNS topic (AWS mails a confirmation "
        "link first). Unset: the alarms only show on the dashboard.",
        json_schema_extra=effect(NONE),
    )
    log_retention_days: Annotated[int, AfterValidator(_retention_days)] = Field(
        30, description="Days CloudWatch Logs keeps the proxy's access log (one of CloudWatch's retention "
        "values: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, ...).",
        json_schema_extra=effect(NONE),
    )
    idle_stop_minutes: Annotated[int, Field(ge=15, le=10080)] | None = Field(
        None, description="Stop the instance when no token has been generated for this many minutes (a "
        "CloudWatch alarm on vLLM's own metrics; needs `metrics`; the cache volume and Elastic IP stay). "
        "`scripts/wake.sh <stack>` starts it again. Unset: never stopped for idleness.",
        json_schema_extra=effect(NONE),
    )
    capacity: Literal["on-demand", "spot"] = Field(
        "on-demand", description="`spot`: a persistent spot request that stops the instance on interruption "
        "(the volume and address stay; it resumes when capacity returns). Going to spot replaces the instance; "
        "back to on-demand, the AWS provider keeps the spot instance, and the plan says how to replace it.",
        json_schema_extra=effect(REPLACE),
    )


# CloudWatch Logs accepts only these retention periods (PutRetentionPolicy's `retentionInDays`).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
                      2922, 3288, 3653)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _retention_days(value: int) -> int:
    if value not in LOG_RETENTION_DAYS:
        nearest = min(LOG_RETENTION_DAYS, key=lambda days: abs(days - value))
        raise ValueError(f"{value} is not a CloudWatch Logs retention period; the nearest is {nearest} "
                         f"(allowed: {', '.join(map(str, LOG_RETENTION_DAYS))})")
    return value


_COMPUTE_CAPABILITY = re.compile(r"^[1-9][0-9]?\.[0-9]$")
_MAX_GPU_MEMORY_GIB = 2048  # eight times the largest GPU in the catalog (B300, 268.6 GiB)


def _gpu_memory_gib(value: Any) -> Any:
    """hostGpuMemoryGib: a plain number of GiB; "80GB" or "81559 MiB" are refused with what to write instead."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(
                f"{value!r} is not a number of GiB: give the driver's total, `nvidia-smi --query-gpu=memory.total "
                "--format=csv` (MiB) divided by 1024, e.g. 139.96 for 143771 MiB"
            ) from None
    if isinstance(value, int | float) and not isinstance(value, bool) and not 0 < value <= _MAX_GPU_MEMORY_GIB:
        raise ValueError(f"{value} GiB is not a GPU's memory (give a number above 0 and at most "
                         f"{_MAX_GPU_MEMORY_GIB})")
    return value


def _capability_text(value: Any) -> Any:
    """A YAML stack file reads `hostGpuComputeCapability: 9.0` as a number; it means the text "9.0"."""
    return repr(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


# ----------------------------------------------------------------------------------------------
# A fleet: replicas on Amazon ECS behind a load balancer (VllmService), chosen by setting `replicas`.

# A public DNS name in lower case (the fleet's `domain`; components/service_lb.py checks its argument with it).
DOMAIN_PATTERN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_HOSTED_ZONE_ID = re.compile(r"^Z[A-Z0-9]{1,31}$")
_SNAPSHOT_ID = re.compile(r"^snap-[0-9a-f]{8}([0-9a-f]{9})?$")
SubnetIds = Annotated[list[Annotated[str, _matching(_SUBNET_ID, "a subnet id", "subnet-0123456789abcdef0")]],
                      BeforeValidator(_split_list)]
InstanceTypes = Annotated[list[Annotated[str, _matching(_INSTANCE_TYPE, "an EC2 instance type", "g5.2xlarge")]],
                          BeforeValidator(_split_list)]
_REPLICAS = Annotated[int, Field(ge=1, le=100)]


class FleetSettings(_Section):
    """Set `replicas` and the stack is a VllmService: that many copies of the endpoint's task on ECS GPU
    instances behind an Application Load Balancer. Unset: one VllmEndpoint on one GPU VM."""

    replicas: _REPLICAS | None = Field(
        None, description="Run the endpoint as a fleet of this many replicas on Amazon ECS behind an Application "
        "Load Balancer (each replica takes all the GPUs of one `instanceType` instance). Unset: one GPU VM "
        "(the single endpoint). Setting it on a stack that runs one VM replaces the VM with the fleet (the VM's "
        "cache volume is kept in AWS, as by `pulumi destroy`); unsetting it replaces the fleet with one VM.",
        json_schema_extra=effect(FLEET),
    )
    min_replicas: _REPLICAS | None = Field(
        None, description="Fewest replicas autoscaling keeps (1 or more: vLLM's cold start takes minutes, so the "
        "fleet never scales to zero). Default: `replicas`.",
        json_schema_extra=effect(FLEET),
    )
    max_replicas: _REPLICAS | None = Field(
        None, description="Most replicas autoscaling may run. Default: `replicas` (no autoscaling).",
        json_schema_extra=effect(FLEET),
    )
    waiting_per_replica: Annotated[float, Field(gt=0, le=1000)] = Field(
        DEFAULT_WAITING_PER_REPLICA, description="Autoscaling target: requests waiting in vLLM's queue per "
        "replica (`vllm:num_requests_waiting`, averaged over the replicas). Above it replicas are added (60 s "
        "cooldown), below it removed (600 s cooldown).",
        json_schema_extra=effect(FLEET),
    )
    on_demand_base: Annotated[int, Field(ge=0, le=100)] = Field(
        1, description="The first this many instances are on-demand, whatever the spot share.",
        json_schema_extra=effect(FLEET),
    )
    spot_weight: Annotated[int, Field(ge=0, le=1000)] = Field(
        0, description="Above `onDemandBase`, instances are spot : on-demand as `spotWeight` : `onDemandWeight` "
        "(0: no spot). Spot instances are drained by ECS on an interruption notice or a rebalance "
        "recommendation, and replaced.",
        json_schema_extra=effect(FLEET),
    )
    on_demand_weight: Annotated[int, Field(ge=0, le=1000)] = Field(
        1, description="See `spotWeight`.", json_schema_extra=effect(FLEET),
    )
    extra_instance_types: InstanceTypes = Field(
        default_factory=list, description="More instance types with the same GPUs as `instanceType` (more spot "
        "pools, a fallback when one type is short), e.g. g5.2xlarge beside g5.xlarge.",
        json_schema_extra=effect(FLEET),
    )
    subnet_ids: SubnetIds = Field(
        default_factory=list, description="Subnets of the replicas (private ones recommended: the instances and "
        "tasks get no public address, so they need a NAT gateway or VPC endpoints to pull the image and the "
        "model). Default: the region's default VPC's default subnets.",
        json_schema_extra=effect(ROLLING, FLEET),
    )
    load_balancer_subnet_ids: SubnetIds = Field(
        default_factory=list, description="Public subnets of the load balancer, in at least two Availability "
        "Zones, in the replicas' VPC. Default: `subnetIds` when given, else the default VPC's default subnets.",
        json_schema_extra=effect(FLEET),
    )
    domain: Annotated[str, _matching(DOMAIN_PATTERN, "a DNS name", "llm.example.com")] | None = Field(
        None, description="Serve HTTPS at this name: an ACM certificate validated in `hostedZoneId`, an alias "
        "record to the load balancer, and port 80 redirecting to 443. Unset: HTTP on the load balancer's own "
        "DNS name, reachable from `apiAllowedCidrs` only.",
        json_schema_extra=effect(FLEET),
    )
    hosted_zone_id: Annotated[str, _matching(_HOSTED_ZONE_ID, "a Route 53 hosted zone id",
                                             "Z0123456789ABCDEFGHIJ")] | None = Field(
        None, description="The Route 53 public hosted zone of `domain` (required with it).",
        json_schema_extra=effect(FLEET),
    )
    deregistration_delay_seconds: Annotated[int, Field(ge=ALB_DEREGISTRATION_DELAY_RANGE_S[0],
                                                       le=ALB_DEREGISTRATION_DELAY_RANGE_S[1])] = Field(
        ALB_DEREGISTRATION_DELAY_S, description="How long the load balancer lets a removed replica finish the "
        "requests it is answering (it stops waiting as soon as none is left). Raise it for very long "
        "generations.",
        json_schema_extra=effect(FLEET),
    )
    cache_snapshot_id: Annotated[str, _matching(_SNAPSHOT_ID, "an EBS snapshot id",
                                                "snap-0123456789abcdef0")] | None = Field(
        None, description="Start each new instance's cache volume from this snapshot of a warm cache (the model "
        "and vLLM's compile cache), made by `scripts/snapshot-cache.sh <stack>` from a running endpoint: a new "
        "replica loads the model from its volume instead of downloading it. Only instances launched afterwards "
        "use it. The snapshot must be of an encrypted volume, no larger than `cacheVolumeSizeGb`.",
        json_schema_extra=effect(FLEET),
    )
    cache_initialization_rate: Annotated[int, Field(ge=100, le=300)] = Field(
        300, description="With `cacheSnapshotId`: MiB/s at which EBS writes the snapshot's blocks into a new "
        "volume before it is used (EBS Provisioned Rate for Volume Initialization, 100-300; billed per GiB "
        "initialized), so the model loads at the volume's speed instead of fetching each block from S3 on its "
        "first read.",
        json_schema_extra=effect(FLEET),
    )
    warm_pool_size: Annotated[int, Field(ge=0, le=100)] = Field(
        0, description="Keep this many stopped instances ready beside the fleet (an EC2 Auto Scaling warm pool): "
        "a scale-out starts one (its first boot, cache volume and `cacheSnapshotId`'s initialization already "
        "done) instead of launching a new one. Stopped instances bill only their volumes. On-demand only: EC2 "
        "Auto Scaling keeps no warm pool for spot or several instance types (`spotWeight` 0, no "
        "`extraInstanceTypes`). 0: none.",
        json_schema_extra=effect(FLEET),
    )
    cache_images: bool = Field(
        False, description="Keep Docker's image store on each instance's cache volume instead of its root disk, "
        "so that a `scripts/snapshot-cache.sh` snapshot carries the pulled vLLM image too: an instance started "
        "from `cacheSnapshotId` then runs the task without pulling the image (about 10 GB). The cache volume "
        f"then holds the image as well (about {VLLM_IMAGE_DISK_GIB} GiB extracted; the plan checks "
        "`cacheVolumeSizeGb` for both). Only instances launched afterwards use it.",
        json_schema_extra=effect(FLEET),
    )
    surge_on_deploy: bool = Field(
        True, description="During a rolling update, start each new replica on an extra instance before its "
        "predecessor stops (no capacity lost; up to twice the instances for a while). false: never an extra "
        "instance; old replicas stop first (one at a time), and with one replica the update has a gap.",
        json_schema_extra=effect(FLEET),
    )

    def replica_counts(self) -> tuple[int, int, int]:
        """(replicas, minReplicas, maxReplicas) with their defaults: the bounds follow `replicas`, and an unset
        one follows the other bound where `replicas` lies outside it."""
        desired = self.replicas if self.replicas is not None else 1
        minimum = self.min_replicas if self.min_replicas is not None else min(desired, self.max_replicas or desired)
        maximum = self.max_replicas if self.max_replicas is not None else max(desired, minimum)
        return desired, minimum, maximum


class ExistingHostSettings(_Section):
    """A Docker host the user already has (the original scenario's shared GPU box)."""

    host_address: Annotated[str, _matching(_HOST, "a host name or IP address", "gpu-box.internal")] | None = Field(
        None, description="target=existing-host: address the endpoint and SSH use.",
        json_schema_extra=effect(CONTAINER),
    )
    host_ssh_user: Annotated[str, _matching(_LINUX_USER, "a Linux user name", "deploy")] | None = Field(
        None, description="target=existing-host: SSH user (in the docker group).",
        json_schema_extra=effect(CONTAINER),
    )
    host_ssh_port: Port = Field(22, description="target=existing-host: SSH port.", json_schema_extra=effect(CONTAINER))
    host_public_key: Annotated[str, _matching(_SSH_PUBLIC_KEY, "an OpenSSH host public key",
                                              "ssh-ed25519 AAAA...")] | None = Field(
        None, description="target=existing-host: the server's SSH host key (`ssh-keyscan -t ed25519 "
        "HOST`, checked out of band); pinned, never trusted on first use.",
        json_schema_extra=effect(NONE),  # the new key is pinned for every connection
    )
    host_cache_dir: Annotated[str, _matching(re.compile(r"^(/|~/)[^\0]*$"), "an absolute path",
                                             HOST_CACHE_MOUNT)] = Field(
        HOST_CACHE_MOUNT, description="target=existing-host or local: directory holding the caches (like the "
        "original `~/.cache/huggingface`). Each endpoint keeps its caches, uploads and proxy files in its own "
        f"folder in it, named after the endpoint (the stack's endpoint: `vllm`). With target=local the default "
        f"is `{LOCAL_CACHE_DIR}` (`~/` is your home there).",
        json_schema_extra=effect(CONTAINER),
    )
    host_gpu_model: str | None = Field(
        None, description="target=existing-host or local: GPU model for the fit check (e.g. A10G, L4, L40S, A100-80GB, "
        "H100, H200, B200; any name in docs/gpu-catalog.md, or what `nvidia-smi` prints); without it (or "
        "hostGpuMemoryGib) the fit check is skipped with a warning.",
        json_schema_extra=effect(NONE),
    )
    host_gpu_memory_gib: Annotated[float, BeforeValidator(_gpu_memory_gib)] | None = Field(
        None, description="target=existing-host or local, a GPU not in the catalog: its memory as the driver "
        "reports it (`nvidia-smi --query-gpu=memory.total --format=csv` MiB / 1024), for the fit check. Set with "
        "hostGpuComputeCapability, instead of hostGpuModel.",
        json_schema_extra=effect(NONE),
    )
    host_gpu_compute_capability: Annotated[str, BeforeValidator(_capability_text),
                                           _matching(_COMPUTE_CAPABILITY, "a compute capability",
                                                     "9.0")] | None = Field(
        None, description="target=existing-host or local, a GPU not in the catalog: its CUDA compute capability "
        "(`nvidia-smi --query-gpu=compute_cap --format=csv`), which decides bf16 (8.0+) and FP8 (8.9+) support. "
        "Set with hostGpuMemoryGib, instead of hostGpuModel.",
        # below 8.0 a bfloat16 checkpoint is served as float16, which the rendered --dtype says
        json_schema_extra=effect(CONTAINER),
    )
    host_gpu_count: Annotated[int, Field(ge=1, le=64)] | None = Field(
        None, description="target=existing-host with gpus=all: how many GPUs the host has (target=local counts them "
        "with `nvidia-smi`).",
        json_schema_extra=effect(CONTAINER),  # with gpus=all it sets the default tensor parallelism
    )
    host_cpu_count: Annotated[int, Field(ge=1, le=4096)] | None = Field(
        None, description="target=existing-host: the host's vCPUs (`nproc`), so that apiServerCount's default "
        "follows them as it follows an instance type's (else 1 API server). target=local on a GPU reads it "
        "from this machine.",
        json_schema_extra=effect(CONTAINER),
    )


class LocalSettings(_Section):
    """target=local: this machine's own Docker engine (a first deploy with no cloud account)."""

    local_device: Literal["auto", "gpu", "cpu"] = Field(
        "auto", description="target=local: `gpu` runs the vLLM image on this machine's NVIDIA GPU(s) (needs "
        "the NVIDIA container runtime), `cpu` runs vLLM's CPU image (slow; for a small model such as "
        "Qwen/Qwen2.5-0.5B-Instruct), `auto` picks `gpu` when `nvidia-smi` lists a GPU.",
        json_schema_extra=effect(CONTAINER),
    )
    local_cpu_kv_cache_gib: Annotated[int, Field(ge=1, le=1024)] = Field(
        4, description="target=local on the CPU: GiB of RAM vLLM's CPU build sets aside for the KV cache "
        f"(`{VLLM_CPU_KV_CACHE_ENV}`); more serves longer or more concurrent requests.",
        json_schema_extra=effect(CONTAINER),
    )


class AccessSettings(_Section):
    api_allowed_cidrs: CidrList = Field(
        default_factory=list, description="CIDRs allowed to call the API port (your apps). Required on AWS. "
        "Documentation, loopback and other reserved ranges nobody connects from are refused.",
        json_schema_extra=effect(NETWORK),
    )
    ssh_allowed_cidrs: CidrList = Field(
        default_factory=list, description="CIDRs allowed to SSH (the deploying machine: pulumi-docker "
        f"and the readiness gate connect over SSH). Required on AWS for one VM (a fleet has no SSH): "
        f"`{MY_ADDRESS_COMMAND}` prints your "
        "address; add /32. Documentation and other reserved ranges are refused.",
        json_schema_extra=effect(NETWORK),
    )
    metrics_allowed_cidrs: CidrList = Field(
        default_factory=list, description="CIDRs that may read `/metrics` through the proxy (monitoring). "
        "Default: nobody. Documentation, loopback and other reserved ranges are refused.",
        json_schema_extra=effect(CONTAINER),
    )
    dangerously_allow_ssh_from_internet: bool = Field(
        False, description="Opt-in required to put 0.0.0.0/0 or ::/0 in `sshAllowedCidrs`.",
        json_schema_extra=effect(NETWORK),
    )
    dangerously_allow_api_from_internet: bool = Field(
        False, description="Opt-in required to put 0.0.0.0/0 or ::/0 in `apiAllowedCidrs`.",
        json_schema_extra=effect(NETWORK),
    )
    proxy_image: Annotated[str, _matching(re.compile(r"^[a-z0-9./_-]+:[A-Za-z0-9_.-]+(@sha256:[0-9a-f]{64})?$"),
                                          "a pinned image reference", "nginx:1.29.3-alpine")] = Field(
        "nginx:1.29.3-alpine", description="Image of the reverse proxy that is the only thing on the API port "
        "(it forwards /v1/* and GET /health to vLLM, which is not reachable otherwise).",
        json_schema_extra=effect(CONTAINER),
    )
    tls: Literal["off", "self-signed"] = Field(
        "off", description="`self-signed`: serve https with a certificate from a CA the program creates "
        "(stack output `ca_certificate`).",
        json_schema_extra=effect(CONTAINER),
    )
    allow_insecure_image: bool = Field(
        False, description=f"Opt-in to run a vLLM image older than the security floor (v{SECURITY_FLOOR}).",
        json_schema_extra=effect(CONTAINER),
    )

    @model_validator(mode="after")
    def _world_opt_ins(self) -> AccessSettings:
        problems = [
            *_unreachable("sshAllowedCidrs", self.ssh_allowed_cidrs),
            *_unreachable("apiAllowedCidrs", self.api_allowed_cidrs),
            *_unreachable("metricsAllowedCidrs", self.metrics_allowed_cidrs),
        ]
        if any(_is_world(c) for c in self.ssh_allowed_cidrs) and not self.dangerously_allow_ssh_from_internet:
            problems.append(
                "sshAllowedCidrs: 0.0.0.0/0 or ::/0 opens SSH to the whole internet; use your own "
                f"address ({SET_MY_ADDRESS}) or set {SSH_WORLD_OPT_IN}=true"
            )
        if any(_is_world(c) for c in self.api_allowed_cidrs) and not self.dangerously_allow_api_from_internet:
            problems.append(
                "apiAllowedCidrs: 0.0.0.0/0 or ::/0 exposes the GPU endpoint to the whole internet; list "
                f"your apps' networks or set {API_WORLD_OPT_IN}=true"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self


class Secrets(_Settings):
    """Values set with `pulumi config set --secret`; they never leave as plaintext."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    api_key: SecretStr | None = Field(
        None, description="(secret) API key apps send as `Authorization: Bearer`: at least 32 letters, digits "
        "or - . _ ~ + / (a Bearer token's characters). Default: a random 48-character key (stack output `api_key`).",
        json_schema_extra=effect(CONTAINER),
    )
    hf_token: SecretStr | None = Field(
        None, description="(secret) Hugging Face token for gated or private models.",
        # The container's environment, and an SSM parameter + a read policy on the instance's role for the boot
        # prefetch. The role is there already with metrics on (the default); with metrics off, adding or
        # removing the token also adds or removes the role (in place, no restart).
        json_schema_extra=effect(CONTAINER, TAGS),
    )
    ssh_private_key: SecretStr | None = Field(
        None, description="(secret) OpenSSH/PEM private key matching `sshPublicKey`/`sshKeyPairName`, "
        "or the existing host's authorized key.",
        json_schema_extra=effect(NONE),  # the new key is used for every connection
    )

    @model_validator(mode="after")
    def _strength(self) -> Secrets:
        if self.api_key is not None:
            key = self.api_key.get_secret_value()
            if len(key) < MIN_API_KEY_LENGTH or any(ch.isspace() for ch in key):
                raise ValueError(
                    f"apiKey: must be at least {MIN_API_KEY_LENGTH} characters without spaces (got "
                    f"{len(key)}); generate one with `openssl rand -hex 24`, or unset it to let the "
                    "program generate one"
                )
            if not re.fullmatch(API_KEY_CHARACTERS, key):
                raise ValueError(
                    "apiKey: may contain only letters, digits, - . _ ~ + / and trailing =, the characters of "
                    "a Bearer token (RFC 6750), which is how clients send it; generate one with `openssl rand "
                    "-hex 24`, or unset it to let the program generate one"
                )
        if self.hf_token is not None and not self.hf_token.get_secret_value().strip():
            raise ValueError("hfToken: is empty; unset it or set a token from huggingface.co/settings/tokens")
        if self.ssh_private_key is not None and "PRIVATE KEY-----" not in self.ssh_private_key.get_secret_value():
            raise ValueError(
                "sshPrivateKey: is not a PEM/OpenSSH private key (set it with `pulumi config set --secret "
                "sshPrivateKey < ~/.ssh/id_ed25519`)"
            )
        return self


# ----------------------------------------------------------------------------------------------
# The whole stack.

SECTIONS: dict[str, type[BaseModel]] = {
    "stack": StackSettings,
    "model": ModelSettings,
    "server": ServerSettings,
    "aws": AwsSettings,
    "fleet": FleetSettings,
    "existing_host": ExistingHostSettings,
    "local": LocalSettings,
    "access": AccessSettings,
    "secrets": Secrets,
}
TOP_LEVEL_KEYS = {"target"}
# Sections of the stack program's own settings, which VllmEndpoint does not take as keyword arguments.
PROGRAM_SECTIONS = frozenset({"stack"})


class StackConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stack: StackSettings = StackSettings()
    target: Literal["aws", "existing-host", "local"] = Field(
        "aws", description="Where the endpoint runs: `aws` (a GPU VM this program creates), "
        "`existing-host` (a Docker host you have, reached over SSH; no AWS resources) or `local` (this "
        "machine's Docker engine, on its GPU or on the CPU; the API answers on 127.0.0.1 only).",
        json_schema_extra=effect(CONTAINER, REPLACE),
    )
    model: ModelSettings = ModelSettings()
    server: ServerSettings = ServerSettings()
    aws: AwsSettings = AwsSettings()
    fleet: FleetSettings = FleetSettings()
    existing_host: ExistingHostSettings = ExistingHostSettings()
    local: LocalSettings = LocalSettings()
    access: AccessSettings = AccessSettings()
    secrets: Secrets = Secrets()

    @model_validator(mode="after")
    def _cross_section(self) -> StackConfig:
        target_problems = {"aws": _aws_problems, "existing-host": _existing_host_problems,
                           "local": _local_problems}[self.target]
        problems = target_problems(self) + _model_source_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self


def _aws_problems(cfg: StackConfig) -> list[str]:
    problems: list[str] = []
    a, acc, sec = cfg.aws, cfg.access, cfg.secrets
    if cfg.fleet.replicas is not None:
        return _fleet_problems(cfg)
    problems += [f"{key}: sets up a fleet (a VllmService on ECS), which needs replicas; set replicas, or remove "
                 f"{key}" for key in _set_keys(cfg.fleet)]
    if not acc.ssh_allowed_cidrs:
        problems.append(
            "sshAllowedCidrs: required on AWS: the deploying machine connects over SSH; set its "
            f"address: {SET_MY_ADDRESS}"
        )
    if not acc.api_allowed_cidrs:
        problems.append(
            "apiAllowedCidrs: required on AWS: the networks of the apps that call the endpoint, "
            "e.g. `pulumi config set apiAllowedCidrs 10.20.0.0/16` (a VPC), or your own machine's "
            f"address: `{MY_ADDRESS_COMMAND}` prints it; add /32"
        )
    if (a.ssh_public_key or a.ssh_key_pair_name) and sec.ssh_private_key is None:
        problems.append(
            "sshPrivateKey: required with sshPublicKey/sshKeyPairName (the program connects with it); "
            "`pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519`, or unset both to "
            "use a generated key"
        )
    if a.ssh_public_key and a.ssh_key_pair_name:
        problems.append("sshPublicKey and sshKeyPairName: set at most one of them")
    if a.cache_volume_type in {"io1", "io2"} and a.cache_volume_iops is None:
        problems.append(f"cacheVolumeIops: required for cacheVolumeType={a.cache_volume_type}")
    if a.cache_volume_throughput is not None and a.cache_volume_type != "gp3":
        problems.append(
            f"cacheVolumeThroughput: only gp3 volumes take a throughput (cacheVolumeType is "
            f"{a.cache_volume_type})"
        )
    if a.subnet_id and a.availability_zone:
        problems.append("availabilityZone: the subnet decides the zone; unset one of subnetId/availabilityZone")
    if not a.metrics:
        # The idle rule and the alarms read vLLM's metrics, which only the CloudWatch agent publishes.
        problems += [f"{key}: needs metrics (its alarm reads the vLLM metrics the CloudWatch agent publishes, "
                     f"and metrics is false); set metrics to true, or unset {key}"
                     for key, value in (("idleStopMinutes", a.idle_stop_minutes), ("alarmEmail", a.alarm_email))
                     if value is not None]
    if a.cache_volume_id is not None:
        problems += _adopted_volume_problems(a)
    return (problems + _set_outside_target(cfg, "existing_host", ExistingHostSettings)
            + _set_outside_target(cfg, "local", LocalSettings))


# Settings of the single endpoint's VM (SSH, its one cache volume, its alarms) with no meaning on a fleet,
# and why; a fleet refuses them rather than ignoring them.
_NOT_ON_A_FLEET = {
    "ssh_allowed_cidrs": "a fleet has no SSH (ECS runs the replicas; logs and metrics are the way in)",
    "dangerously_allow_ssh_from_internet": "a fleet has no SSH",
    "ssh_user": "a fleet has no SSH", "ssh_key_pair_name": "a fleet has no SSH", "ssh_public_key": "a fleet has no SSH",
    "ssh_private_key": "a fleet has no SSH",
    "cache_volume_id": "each fleet instance has its own cache volume, created with it",
    "protect_cache_volume": "each fleet instance's cache volume goes with the instance",
    "subnet_id": "a fleet spreads over subnets: use subnetIds",
    "availability_zone": "a fleet spreads over the zones of subnetIds",
    "capacity": "a fleet mixes spot and on-demand by onDemandBase, spotWeight and onDemandWeight",
    "idle_stop_minutes": "a fleet keeps minReplicas running (autoscaling, not idle stop)",
    "prefetch_at_boot": "ECS starts the replica, which downloads the model itself",
    "docker_data_on_cache_volume": "a fleet instance keeps Docker's data on its root volume (rootVolumeSizeGb)",
    "recovery_alarm": "the Auto Scaling group replaces an impaired fleet instance",
    "detailed_monitoring": "fleet instances always have detailed monitoring",
    "tls": "a fleet serves HTTPS from the load balancer: set domain and hostedZoneId",
    # Behind the load balancer every request comes from its addresses, so an allowlist could not tell a
    # monitoring system from the internet; each task's agent sidecar reads /metrics from vLLM directly.
    "metrics_allowed_cidrs": "each replica's metrics are read inside its task by the CloudWatch agent sidecar, "
                             "and behind the load balancer the proxy cannot tell who asks",
}


def _fleet_problems(cfg: StackConfig) -> list[str]:
    """target aws with replicas: a VllmService. The load balancer needs apiAllowedCidrs; nothing needs SSH."""
    f, problems = cfg.fleet, []
    if not cfg.access.api_allowed_cidrs:
        problems.append("apiAllowedCidrs: required for a fleet: the networks of the apps that call its load "
                        f"balancer (e.g. 10.20.0.0/16), or your own machine's address: `{MY_ADDRESS_COMMAND}` "
                        "prints it; add /32")
    given = {name for section in (cfg.aws, cfg.access, cfg.secrets, cfg.model, cfg.server)
             for name in section.model_fields_set if _differs_from_default(section, name)}
    for name, why in _NOT_ON_A_FLEET.items():
        if name in given:
            problems.append(f"{_key_of(name)}: has no effect on a fleet: {why}; remove it")
    replicas, low, high = f.replica_counts()
    if not low <= replicas <= high:
        problems.append(f"replicas: need minReplicas ({low}) <= replicas ({replicas}) <= maxReplicas ({high})")
    if (f.domain is None) != (f.hosted_zone_id is None):
        problems.append("domain and hostedZoneId: give both (the certificate is validated and the name recorded "
                        "in that Route 53 zone), or neither for HTTP on the load balancer's own name")
    if f.spot_weight + f.on_demand_weight == 0:
        problems.append("spotWeight and onDemandWeight: both are 0; give one of them a weight")
    if f.warm_pool_size and (f.spot_weight or f.extra_instance_types):
        problems.append("warmPoolSize: EC2 Auto Scaling keeps no warm pool for a group that buys spot or mixes "
                        "instance types; set spotWeight to 0 and remove extraInstanceTypes, or warmPoolSize to 0")
    if len(set(f.load_balancer_subnet_ids)) == 1:
        problems.append("loadBalancerSubnetIds: an Application Load Balancer needs subnets in at least two "
                        "Availability Zones; give two or more, or none for the default VPC's")
    if cfg.server.gpus != "all":
        problems.append("gpus: a fleet replica takes all the GPUs of its instance (ECS assigns them); unset gpus "
                        "and choose instanceType by its GPU count")
    if cfg.aws.cache_volume_type != "gp3":
        problems.append(f"cacheVolumeType: a fleet's cache volumes are gp3 (got {cfg.aws.cache_volume_type}); "
                        "unset it")
    if _differs_from_default(f, "cache_initialization_rate") and f.cache_snapshot_id is None:
        problems.append("cacheInitializationRate: applies to volumes made from cacheSnapshotId; set that, or "
                        "remove cacheInitializationRate")
    return (problems + _set_outside_target(cfg, "existing_host", ExistingHostSettings)
            + _set_outside_target(cfg, "local", LocalSettings))


def _differs_from_default(section: BaseModel, name: str) -> bool:
    info = type(section).model_fields[name]
    default = info.get_default(call_default_factory=True)
    return bool(getattr(section, name) != default)


def _set_keys(section: BaseModel) -> list[str]:
    return sorted(_key_of(name) for name in section.model_fields_set)


def _key_of(name: str) -> str:
    for model in SECTIONS.values():
        if name in model.model_fields:
            return model.model_fields[name].alias or name
    return name


def _adopted_volume_problems(a: AwsSettings) -> list[str]:
    """Settings that describe a volume the stack creates mean nothing for one it adopts."""
    problems = []
    if "availability_zone" in a.model_fields_set:
        problems.append(f"availabilityZone: the adopted cache volume {a.cache_volume_id} decides the zone; "
                        "unset availabilityZone")
    shaping = [AwsSettings.model_fields[name].alias or name for name in (
        "cache_volume_size_gb", "cache_volume_type", "cache_volume_iops", "cache_volume_throughput")
        if name in a.model_fields_set]
    if shaping:
        problems.append(
            f"{', '.join(shaping)}: the adopted cache volume {a.cache_volume_id} keeps its own size and speed; "
            f"unset {'them' if len(shaping) > 1 else 'it'}, or change the volume itself "
            f"(`aws ec2 modify-volume --volume-id {a.cache_volume_id} --size ...`)")
    if a.protect_cache_volume:
        problems.append(f"protectCacheVolume: the adopted cache volume {a.cache_volume_id} is not part of the "
                        "stack, so no deploy can delete it; unset protectCacheVolume")
    return problems


def _existing_host_problems(cfg: StackConfig) -> list[str]:
    problems: list[str] = []
    h = cfg.existing_host
    for key, value in (("hostAddress", h.host_address), ("hostSshUser", h.host_ssh_user),
                       ("hostPublicKey", h.host_public_key)):
        if value is None:
            problems.append(f"{key}: required with target=existing-host")
    if cfg.secrets.ssh_private_key is None:
        problems.append(
            "sshPrivateKey: required with target=existing-host (a key the host's user authorizes); "
            "`pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519`"
        )
    if h.host_cache_dir.startswith("~"):
        problems.append(f"hostCacheDir: {h.host_cache_dir} is relative to a home; give the absolute path on "
                        "the host (e.g. /home/deploy/.cache/vllm-endpoint)")
    return problems + _gpu_description_problems(cfg, count_known=False) + \
        _set_outside_target(cfg, "aws", AwsSettings) + _set_outside_target(cfg, "local", LocalSettings) + \
        _set_outside_target(cfg, "fleet", FleetSettings)


def _local_problems(cfg: StackConfig) -> list[str]:
    """target=local: no SSH, no address; the GPU description settings work as on an existing host."""
    h = cfg.existing_host
    ssh_settings = [key for key, value in (("hostAddress", h.host_address), ("hostSshUser", h.host_ssh_user),
                                           ("hostPublicKey", h.host_public_key),
                                           ("sshPrivateKey", cfg.secrets.ssh_private_key)) if value is not None]
    if "host_ssh_port" in h.model_fields_set:
        ssh_settings.append("hostSshPort")
    problems = [f"{key}: has no effect with target=local (this machine's Docker engine, no SSH); remove it"
                for key in ssh_settings]
    if cfg.local.local_device == "cpu" and any(
            name in h.model_fields_set for name in ("host_gpu_model", "host_gpu_memory_gib",
                                                     "host_gpu_compute_capability", "host_gpu_count")):
        problems.append("hostGpuModel/hostGpuMemoryGib/hostGpuComputeCapability/hostGpuCount: describe a GPU, "
                        "but localDevice is cpu; remove them or set localDevice gpu")
    # nvidia-smi counts this machine's GPUs, so hostGpuCount is never required here.
    return (problems + _gpu_description_problems(cfg, count_known=True) + _set_outside_target(cfg, "aws", AwsSettings)
            + _set_outside_target(cfg, "fleet", FleetSettings))


def _gpu_description_problems(cfg: StackConfig, *, count_known: bool) -> list[str]:
    problems: list[str] = []
    h = cfg.existing_host
    unlisted = (h.host_gpu_memory_gib, h.host_gpu_compute_capability)
    if h.host_gpu_model is not None and unlisted != (None, None):
        problems.append("hostGpuModel and hostGpuMemoryGib/hostGpuComputeCapability: choose one: hostGpuModel "
                        "names a GPU in the catalog, the other two describe a GPU it does not list")
    elif unlisted.count(None) == 1:
        given, missing = (("hostGpuMemoryGib", "hostGpuComputeCapability") if h.host_gpu_compute_capability is None
                          else ("hostGpuComputeCapability", "hostGpuMemoryGib"))
        problems.append(f"{missing}: required with {given} (a GPU not in the catalog needs both; "
                        "`nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv` prints them)")
    described = h.host_gpu_model is not None or h.host_gpu_memory_gib is not None
    if cfg.server.gpus == "all" and h.host_gpu_count is None and described and not count_known:
        problems.append("hostGpuCount: required with gpus=all and hostGpuModel or hostGpuMemoryGib "
                        "(for the fit check)")
    return problems


def _model_source_problems(cfg: StackConfig) -> list[str]:
    problems: list[str] = []
    s, m = cfg.server, cfg.model
    if s.trust_remote_code and m.model_path is None and s.image_build_context is None and not m.model_revision:
        problems.append(
            "modelRevision: required with trustRemoteCode=true: the repo's Python code runs on your "
            "GPU host, so pin the commit you reviewed (e.g. `pulumi config set modelRevision <sha>`)"
        )
    if m.model_path is not None and s.image_build_context is not None:
        problems.append("modelPath and imageBuildContext: choose one way to ship the fine-tune")
    if m.model_path is not None and m.model_revision is not None:
        problems.append("modelRevision: has no meaning for a local modelPath; unset it")
    if s.image_build_context is not None and not m.model.startswith("/"):
        problems.append(
            "model: with imageBuildContext, give the model's absolute path inside the image "
            "(e.g. /app/model)"
        )
    return problems


def _set_outside_target(cfg: StackConfig, section: str, model: type[BaseModel]) -> list[str]:
    """Settings of the other target are an error, not silently ignored."""
    current = getattr(cfg, section)
    unused = [
        model.model_fields[name].alias or name
        for name in current.model_fields_set
    ]
    if not unused:
        return []
    return [f"{key}: has no effect with target={cfg.target}; remove it" for key in sorted(unused)]


# ----------------------------------------------------------------------------------------------
# Loading.

def config_keys() -> dict[str, tuple[str, str]]:
    """Every config key -> (section, field name)."""
    keys: dict[str, tuple[str, str]] = {}
    for section, model in SECTIONS.items():
        for name, info in model.model_fields.items():
            keys[info.alias or name] = (section, name)
    return keys


def setting_fields() -> dict[str, FieldInfo]:
    """Every setting by config key, `target` first, with its field: default, description, declared effect."""
    fields = {key: StackConfig.model_fields[key] for key in sorted(TOP_LEVEL_KEYS)}
    for key, (section, name) in config_keys().items():
        fields[key] = SECTIONS[section].model_fields[name]
    return fields


def declared_effects() -> dict[str, frozenset[str]]:
    """Every setting that declares one -> what changing it does to a running stack."""
    declared = {key: effect_of(info) for key, info in setting_fields().items()}
    return {key: kinds for key, kinds in declared.items() if kinds is not None}


def _parse_raw(raw: str, annotation: Any) -> Any:
    """Pulumi hands every value over as text; numbers, booleans and objects arrive as their JSON."""
    if annotation in (str, str | None):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def load_stack_config(raw: Mapping[str, str], secret_keys: frozenset[str] | None = None) -> StackConfig:
    """Validate the stack's raw config (`{"maxNumSeqs": "64", ...}`, keys without the project prefix).

    `secret_keys` are the keys Pulumi holds encrypted; a secret setting stored in plaintext is an
    error (None skips that check, for callers that have no such knowledge).
    Raises ConfigError listing every problem at once; nothing else escapes for any input.
    """
    keys = config_keys()
    problems: list[str] = []
    if secret_keys is not None:
        for name, info in Secrets.model_fields.items():
            key = info.alias or name
            if key in raw and key not in secret_keys:
                problems.append(
                    f"{key}: is stored in plaintext in the stack file; remove it and run "
                    f"`pulumi config set --secret {key} <value>`"
                )
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in TOP_LEVEL_KEYS:
            values[key] = value
        elif key in keys:
            section, field_name = keys[key]
            values[key] = _parse_raw(value, SECTIONS[section].model_fields[field_name].annotation)
        else:
            problems.append(unknown_setting(key, [*keys, *TOP_LEVEL_KEYS]))
    return validate_settings(values, problems)


def validate_settings(values: Mapping[str, Any], problems: list[str] | None = None) -> StackConfig:
    """Validate settings keyed by config key (`{"maxNumSeqs": 64, ...}`, values already parsed; only known
    keys). `problems` the caller found already are reported with the rest. The one validation path of
    the stack config and of VllmEndpoint's keyword arguments (infra/settings/endpoint_args.py).
    Raises ConfigError listing every problem at once."""
    keys = config_keys()
    problems = list(problems or [])
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    top: dict[str, Any] = {}
    for key, value in values.items():
        if key in TOP_LEVEL_KEYS:
            top[key] = value
        else:
            sections[keys[key][0]][key] = value
    try:
        # Sections are validated one by one so that an error in one still reports the others.
        built: dict[str, Any] = {}
        for section, model in SECTIONS.items():
            try:
                built[section] = model.model_validate(sections[section])
            except ValidationError as err:
                problems += _describe(err, section == "secrets")
        if problems:
            raise ConfigError(problems)
        return StackConfig.model_validate({**top, **built})
    except ValidationError as err:
        raise ConfigError(problems + _describe(err, False)) from None


def unknown_setting(key: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; see the README's settings table"
    return f"{key}: unknown setting{hint}"


def _describe(err: ValidationError, hide_values: bool) -> list[str]:
    lines = []
    for e in err.errors(include_url=False):
        loc = [str(part) for part in e["loc"]]
        if loc and loc[0] in SECTIONS:
            loc = loc[1:]
        msg = e["msg"].removeprefix("Value error, ")
        if not loc:
            # A model-level check already names its keys ("key: what is wrong"), one per line.
            lines += msg.split("\n")
            continue
        key = loc[0] + "".join(f"[{p}]" for p in loc[1:])
        value = e.get("input")
        shown = "" if hide_values or isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{key}: {msg}{shown}")
    return lines
