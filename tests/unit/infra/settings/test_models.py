"""Stack config: good values load, every bad value is one clear error naming its setting, all at once."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vllm_endpoint.infra.catalog.names import DEFAULT_API_PORT, DEFAULT_VLLM_VERSION
from vllm_endpoint.infra.settings.models import ConfigError, StackConfig, config_keys, load_stack_config

AWS_MINIMUM = {"sshAllowedCidrs": "203.0.113.7/32", "apiAllowedCidrs": '["198.51.100.0/24"]'}
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm5xk0pJl1ZkZ4bH2v0b3dJq5s0aQy7Ff2k0Vd7J8yO"
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
EXISTING_MINIMUM = {
    "target": "existing-host", "hostAddress": "gpu-box.internal", "hostSshUser": "deploy",
    "hostPublicKey": HOST_KEY, "sshPrivateKey": PRIVATE_KEY,
}


def load(**raw: str) -> StackConfig:
    return load_stack_config(raw)


def problems(raw: dict[str, str], secret_keys: frozenset[str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_stack_config(raw, secret_keys)
    return info.value.problems


def test_defaults_reproduce_the_original_command_where_sound() -> None:
    cfg = load(**AWS_MINIMUM)
    assert cfg.target == "aws"
    assert cfg.model.model == "Qwen/Qwen2.5-1.5B-Instruct"
    assert cfg.server.api_port == DEFAULT_API_PORT == 30005
    assert cfg.server.image == "vllm/vllm-openai"
    assert cfg.server.image_tag == f"v{DEFAULT_VLLM_VERSION}"
    assert cfg.server.gpus == "all"
    # The original's throttling serving settings are not defaults (see README: performance).
    assert cfg.server.max_num_seqs is None
    assert cfg.server.gpu_memory_utilization == 0.9
    assert cfg.server.trust_remote_code is False
    assert cfg.aws.instance_type == "g5.xlarge"


def test_values_arrive_as_text_and_are_typed() -> None:
    cfg = load(**AWS_MINIMUM, maxNumSeqs="16", gpuMemoryUtilization="0.7", trustRemoteCode="true",
               modelRevision="abc123", gpus='["1"]', extraArgs='["--enable-chunked-prefill"]',
               tags=json.dumps({"team": "ml"}), apiPort="30006")
    assert cfg.server.max_num_seqs == 16
    assert cfg.server.gpu_memory_utilization == 0.7
    assert cfg.server.trust_remote_code is True
    assert cfg.server.gpus == ("1",)
    assert cfg.server.extra_args == ["--enable-chunked-prefill"]
    assert cfg.aws.tags == {"team": "ml"}
    assert cfg.server.api_port == 30006


@pytest.mark.parametrize("raw, expected", [
    ("all", "all"), ('["all"]', "all"), ("1", ("1",)), ("0,1", ("0", "1")), ('["1"]', ("1",)),
    ('[0, 2]', ("0", "2")), ("GPU-3a23c669-1f69-c64e-cf85-44e9b07e7a2a", ("GPU-3a23c669-1f69-c64e-cf85-44e9b07e7a2a",)),
])
def test_gpu_selection_forms(raw: str, expected: object) -> None:
    assert load(**AWS_MINIMUM, gpus=raw).server.gpus == expected


def test_cidrs_are_normalised_and_accept_ipv6() -> None:
    cfg = load(sshAllowedCidrs="203.0.113.7/32, 2001:db8::/64", apiAllowedCidrs="10.0.0.0/8")
    assert cfg.access.ssh_allowed_cidrs == ["203.0.113.7/32", "2001:db8::/64"]


def test_existing_host_needs_no_aws_settings() -> None:
    cfg = load(**EXISTING_MINIMUM, gpus="1")
    assert cfg.target == "existing-host"
    assert cfg.existing_host.host_address == "gpu-box.internal"
    assert cfg.secrets.ssh_private_key is not None


def test_world_open_cidrs_need_their_own_opt_in() -> None:
    cfg = load(sshAllowedCidrs="0.0.0.0/0", apiAllowedCidrs="::/0",
               dangerouslyAllowSshFromInternet="true", dangerouslyAllowApiFromInternet="true")
    assert cfg.access.ssh_allowed_cidrs == ["0.0.0.0/0"]


# One row per bad configuration: (raw config, the setting the single error must name, a phrase of it).
BAD = [
    ({"sshAllowedCidrs": "10.0.0.1/8"}, "sshAllowedCidrs", "host bits set"),
    ({"sshAllowedCidrs": "10.0.0.300/32"}, "sshAllowedCidrs", "not an IPv4 or IPv6 CIDR"),
    ({"sshAllowedCidrs": "10.0.0.1"}, "sshAllowedCidrs", "no prefix length"),
    ({"sshAllowedCidrs": "2001:db8::1/64"}, "sshAllowedCidrs", "host bits set"),
    ({"sshAllowedCidrs": "0.0.0.0/0"}, "sshAllowedCidrs", "dangerouslyAllowSshFromInternet"),
    ({"sshAllowedCidrs": "::/0"}, "sshAllowedCidrs", "dangerouslyAllowSshFromInternet"),
    ({"apiAllowedCidrs": "0.0.0.0/0"}, "apiAllowedCidrs", "dangerouslyAllowApiFromInternet"),
    ({"apiAllowedCidrs": "[bad"}, "apiAllowedCidrs", ""),
    ({"apiPort": "0"}, "apiPort", "greater than or equal to 1"),
    ({"apiPort": "70000"}, "apiPort", "less than or equal to 65535"),
    ({"apiPort": "http"}, "apiPort", "integer"),
    ({"gpuMemoryUtilization": "0"}, "gpuMemoryUtilization", "greater than 0"),
    ({"gpuMemoryUtilization": "1.5"}, "gpuMemoryUtilization", "less than or equal to 1"),
    ({"maxNumSeqs": "-1"}, "maxNumSeqs", "greater than or equal to 1"),
    ({"maxModelLen": "8"}, "maxModelLen", "greater than or equal to 16"),
    ({"blockSize": "0"}, "blockSize", "greater than or equal to 1"),
    ({"dtype": "fp4"}, "dtype", "'auto'"),
    ({"gpus": "one"}, "gpus", "not a GPU index"),
    ({"gpus": "[]"}, "gpus", "neither `all` nor"),
    ({"gpus": "1,1"}, "gpus", "names a GPU twice"),
    ({"instanceType": "g5 xlarge"}, "instanceType", "not an EC2 instance type"),
    ({"amiId": "ami-xyz"}, "amiId", "not an AMI id"),
    ({"subnetId": "sub-123"}, "subnetId", "not a subnet id"),
    ({"rootVolumeSizeGb": "10"}, "rootVolumeSizeGb", "greater than or equal to 60"),
    ({"cacheVolumeSizeGb": "5"}, "cacheVolumeSizeGb", "greater than or equal to 20"),
    ({"cacheVolumeType": "st1"}, "cacheVolumeType", "'gp3'"),
    ({"cacheVolumeType": "io2"}, "cacheVolumeIops", "required for cacheVolumeType=io2"),
    ({"cacheVolumeThroughput": "4000"}, "cacheVolumeThroughput", "less than or equal to 2000"),
    ({"cacheVolumeType": "io2", "cacheVolumeIops": "4000", "cacheVolumeThroughput": "500"},
     "cacheVolumeThroughput", "only gp3"),
    ({"sshUser": "Root User"}, "sshUser", "not a Linux user name"),
    ({"sshPublicKey": "not-a-key"}, "sshPublicKey", "not an OpenSSH public key"),
    ({"sshPublicKey": HOST_KEY}, "sshPrivateKey", "required with sshPublicKey"),
    ({"imageTag": "latest"}, "imageTag", "moves between deploys"),
    ({"imageTag": "v0.32.0 "}, "imageTag", "not a Docker tag"),
    ({"image": "Vllm/OpenAI"}, "image", "not an image repository"),
    ({"imageDigest": "sha256:abc"}, "imageDigest", "not an image digest"),
    ({"model": "just-a-name"}, "model", "neither a Hugging Face repo id"),
    ({"trustRemoteCode": "true"}, "modelRevision", "required with trustRemoteCode"),
    ({"extraArgs": '["--api-key", "k"]'}, "extraArgs", "process command line"),
    ({"extraEnv": '{"VLLM_API_KEY": "k"}'}, "extraEnv", "is a secret"),
    ({"extraEnv": '{"1BAD": "x"}'}, "extraEnv", "not an environment variable name"),
    ({"containerUser": "root"}, "containerUser", "not a numeric uid:gid"),
    ({"tls": "letsencrypt"}, "tls", "'off'"),
    ({"proxyImage": "nginx"}, "proxyImage", "not a pinned image reference"),
    ({"proxy": "false"}, "proxy", "unknown setting"),
    ({"tags": '{"cost center": "ml"}'}, "tags", "no spaces or /"),
    ({"tags": '{"team/name": "ml"}'}, "tags", "no spaces or /"),
    ({"apiKey": "short"}, "apiKey", "at least 32 characters"),
    ({"sshPrivateKey": "ssh-ed25519 AAAA"}, "sshPrivateKey", "not a PEM/OpenSSH private key"),
    ({"maxNumSeq": "16"}, "maxNumSeq", "did you mean 'maxNumSeqs'"),
    ({"target": "gcp"}, "target", "'aws'"),
    ({"hostAddress": "gpu-box"}, "hostAddress", "has no effect with target=aws"),
    ({"readinessTimeoutSeconds": "5"}, "readinessTimeoutSeconds", "greater than or equal to 60"),
    ({"modelPath": "/m", "imageBuildContext": "/c", "model": "/app/model"}, "modelPath and imageBuildContext",
     "choose one"),
    ({"imageBuildContext": "/c"}, "model", "absolute path inside the image"),
    ({"subnetId": "subnet-0123456789abcdef0", "availabilityZone": "us-east-1a"}, "availabilityZone",
     "subnet decides the zone"),
]


@pytest.mark.parametrize("raw, key, phrase", BAD, ids=[f"{row[1]}-{i}" for i, row in enumerate(BAD)])
def test_each_bad_value_is_one_error_naming_its_setting(raw: dict[str, str], key: str, phrase: str) -> None:
    found = problems({**AWS_MINIMUM, **raw})
    assert len(found) == 1, found
    assert found[0].startswith(key), found
    assert phrase in found[0], found


EXISTING_BAD = [
    ({"hostAddress": None}, "hostAddress", "required with target=existing-host"),
    ({"hostPublicKey": None}, "hostPublicKey", "required with target=existing-host"),
    ({"sshPrivateKey": None}, "sshPrivateKey", "required with target=existing-host"),
    ({"instanceType": "g5.xlarge"}, "instanceType", "has no effect with target=existing-host"),
    ({"hostSshPort": "0"}, "hostSshPort", "greater than or equal to 1"),
    ({"hostCacheDir": "relative/dir"}, "hostCacheDir", "not an absolute path"),
    ({"hostAddress": "gpu box"}, "hostAddress", "not a host name"),
]


@pytest.mark.parametrize("change, key, phrase", EXISTING_BAD)
def test_existing_host_errors(change: dict[str, str | None], key: str, phrase: str) -> None:
    raw = {k: v for k, v in {**EXISTING_MINIMUM, **change}.items() if v is not None}
    found = problems(raw)
    assert len(found) == 1, found
    assert found[0].startswith(key) and phrase in found[0], found


def test_all_errors_are_reported_at_once() -> None:
    found = problems({**AWS_MINIMUM, "maxNumSeqs": "0", "apiPort": "x", "instanceType": "?",
                      "sshAllowedCidrs": "1.2.3.4/8", "colour": "red"})
    keys = {line.split(":")[0].split("[")[0] for line in found}
    assert keys == {"maxNumSeqs", "apiPort", "instanceType", "sshAllowedCidrs", "colour"}


def test_aws_needs_the_networks_that_may_connect() -> None:
    found = problems({})
    assert [p.split(":")[0] for p in found] == ["sshAllowedCidrs", "apiAllowedCidrs"]


def test_a_secret_stored_in_plaintext_is_refused_and_never_echoed() -> None:
    key = "k" * 40
    found = problems({**AWS_MINIMUM, "apiKey": key}, secret_keys=frozenset())
    assert found == ["apiKey: is stored in plaintext in the stack file; remove it and run "
                     "`pulumi config set --secret apiKey <value>`"]
    assert all(key not in p for p in found)
    assert load_stack_config({**AWS_MINIMUM, "apiKey": key}, frozenset({"apiKey"})).secrets.api_key is not None


def test_bad_secret_values_are_not_echoed() -> None:
    token = "   "
    bad_key = "a b" * 20
    found = problems({**AWS_MINIMUM, "apiKey": bad_key, "hfToken": token})
    assert all(bad_key not in p for p in found)


def test_every_setting_has_a_description() -> None:
    from vllm_endpoint.infra.settings.models import SECTIONS

    for section, model in SECTIONS.items():
        for name, info in model.model_fields.items():
            assert info.description, f"{section}.{name} has no description"
    assert len(config_keys()) == sum(len(m.model_fields) for m in SECTIONS.values()), "config keys collide"


_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "0", "-1", "1e9", "true", "null", "[]", "{}", "[1,2]", '{"a": 1}', "0.0.0.0/0", "all",
                     "g5.xlarge", "/app/model", "[\"1\"]", "NaN", "Infinity", "\x00", "9" * 40]),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*config_keys(), "target", "unknownKey"]), _text, max_size=8))
def test_no_input_fails_with_anything_but_config_error(raw: dict[str, str]) -> None:
    try:
        load_stack_config({**AWS_MINIMUM, **raw})
    except ConfigError as err:
        assert err.problems
        assert all(isinstance(p, str) and ":" in p for p in err.problems)
