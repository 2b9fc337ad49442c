"""Stack config: good values load, every bad value is one clear error naming its setting, all at once."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vllm_endpoint.infra.catalog.names import DEFAULT_API_PORT, DEFAULT_VLLM_VERSION
from vllm_endpoint.infra.settings.models import ConfigError, StackConfig, config_keys, load_stack_config

AWS_MINIMUM = {"sshAllowedCidrs": "93.184.215.14/32", "apiAllowedCidrs": '["93.184.216.0/24"]'}
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
    cfg = load(sshAllowedCidrs="93.184.215.14/32, 2600:1f18::/64", apiAllowedCidrs="10.0.0.0/8")
    assert cfg.access.ssh_allowed_cidrs == ["93.184.215.14/32", "2600:1f18::/64"]


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
    ({"gpuMemoryUtilization": "0"}, "gpuMemoryUtilization", "above 0 and at most 1"),
    ({"gpuMemoryUtilization": "1.5"}, "gpuMemoryUtilization", "not a percentage: e.g. 0.015 for 1.5%"),
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
    ({"apiServerCount": "0"}, "apiServerCount", "greater than or equal to 1"),
    ({"apiServerCount": "two"}, "apiServerCount", "valid integer"),
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


# ----------------------------------------------------------------------------------------------
# Allowed CIDRs nobody connects from (infra/catalog/data/reserved-networks.yaml).

SET_MY_ADDRESS = '`pulumi config set sshAllowedCidrs "$(curl -s https://checkip.amazonaws.com)/32"`'


def test_a_documentation_address_for_ssh_is_refused_telling_the_user_to_put_their_own() -> None:
    assert problems({**AWS_MINIMUM, "sshAllowedCidrs": "203.0.113.10/32"}) == [
        "sshAllowedCidrs: 203.0.113.10/32 is a documentation address (RFC 5737): nothing can connect from it; "
        f"put the address of the machine you run `pulumi up` from: {SET_MY_ADDRESS}"
    ]


def test_every_reserved_cidr_of_every_allowed_cidr_setting_is_reported_at_once() -> None:
    found = problems({"sshAllowedCidrs": "93.184.215.14/32, 2001:db8::/48", "apiAllowedCidrs": "198.51.100.0/24",
                      "metricsAllowedCidrs": "127.0.0.1/32,10.0.0.0/8"})
    assert found == [
        "sshAllowedCidrs: 2001:db8::/48 is a documentation address (RFC 3849): nothing can connect from it; "
        f"put the address of the machine you run `pulumi up` from: {SET_MY_ADDRESS}",
        "apiAllowedCidrs: 198.51.100.0/24 is a documentation address (RFC 5737): nothing can connect from it; "
        "put the networks your apps call from (your own machine's address is what "
        "`curl -s https://checkip.amazonaws.com` prints; add /32)",
        "metricsAllowedCidrs: 127.0.0.1/32 is a loopback address (RFC 1122): no connection to the endpoint "
        "comes from it: on AWS loopback never leaves a machine, and on an existing host local clients and SSH "
        "tunnels reach the proxy through Docker's published port, from the Docker network's gateway; put your "
        "monitoring system's address (your own machine's is what `curl -s https://checkip.amazonaws.com` "
        "prints; add /32), or unset metricsAllowedCidrs",
    ]


def test_a_reserved_cidr_is_refused_on_an_existing_host_too() -> None:
    # The proxy's /metrics rule is rendered there as well.
    assert problems({**EXISTING_MINIMUM, "metricsAllowedCidrs": "169.254.0.0/16"})[0].startswith(
        "metricsAllowedCidrs: 169.254.0.0/16 is a link-local address (RFC 3927)")


@pytest.mark.parametrize("cidr", ["100.64.0.0/10", "10.203.0.0/24", "192.168.0.0/16", "fd00:1::/64",
                                  "93.184.215.14/32"])
def test_private_cgnat_and_public_networks_are_accepted(cidr: str) -> None:
    cfg = load(sshAllowedCidrs=cidr, apiAllowedCidrs=cidr, metricsAllowedCidrs=cidr)
    assert cfg.access.ssh_allowed_cidrs == cfg.access.api_allowed_cidrs == cfg.access.metrics_allowed_cidrs == [cidr]


def test_a_reserved_block_is_reported_next_to_a_world_open_one() -> None:
    found = problems({"sshAllowedCidrs": "0.0.0.0/0,192.0.2.1/32", "apiAllowedCidrs": "10.0.0.0/8"})
    assert [p.split(" ", 2)[1] for p in found] == ["192.0.2.1/32", "0.0.0.0/0"]
    assert "dangerouslyAllowSshFromInternet" in found[1]


def test_a_missing_address_on_aws_says_how_to_find_it() -> None:
    assert problems({"apiAllowedCidrs": "10.0.0.0/8"}) == [
        "sshAllowedCidrs: required on AWS: the deploying machine connects over SSH; set its address: "
        + SET_MY_ADDRESS
    ]


# ----------------------------------------------------------------------------------------------
# gpuMemoryUtilization: a share, and the message when it is written as a percentage.

@pytest.mark.parametrize("raw, shown", [
    ("95%", "'95%'"), ("95", "95"), (" 90 % ", "' 90 % '"),
])
def test_a_percentage_is_refused_with_the_number_to_write(raw: str, shown: str) -> None:
    percent = float(raw.strip().rstrip("%").strip())
    assert problems({**AWS_MINIMUM, "gpuMemoryUtilization": raw}) == [
        "gpuMemoryUtilization: write a number between 0 and 1 (the share of each GPU's memory vLLM may use), "
        f"not a percentage: e.g. {percent / 100:g} for {percent:g}% (got {shown})"
    ]


@pytest.mark.parametrize("raw", ["lots", "true", "-0.5", "150"])
def test_anything_else_but_a_share_says_what_to_write(raw: str) -> None:
    found = problems({**AWS_MINIMUM, "gpuMemoryUtilization": raw})
    assert len(found) == 1 and found[0].startswith("gpuMemoryUtilization: write a number above 0 and at most 1")
    assert "e.g. 0.9" in found[0]


@pytest.mark.parametrize("raw, share", [("0.95", 0.95), ("1", 1.0), ("0.5", 0.5)])
def test_a_share_loads(raw: str, share: float) -> None:
    assert load(**AWS_MINIMUM, gpuMemoryUtilization=raw).server.gpu_memory_utilization == share


# ----------------------------------------------------------------------------------------------
# An existing host's GPU that the catalog does not list (issue 11).

_HOST_GPU_BASE = {"target": "existing-host", "hostAddress": "10.0.0.5", "hostSshUser": "u",
                  "hostPublicKey": "ssh-ed25519 AAAA", "gpus": "0",
                  "sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n"}


def _host_gpu_problems(**raw: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_stack_config({**_HOST_GPU_BASE, **raw})
    return info.value.problems


def test_host_gpu_memory_and_capability_are_read() -> None:
    cfg = load_stack_config({**_HOST_GPU_BASE, "hostGpuMemoryGib": "139.7", "hostGpuComputeCapability": "9.0"})
    assert (cfg.existing_host.host_gpu_memory_gib, cfg.existing_host.host_gpu_compute_capability) == (139.7, "9.0")


@pytest.mark.parametrize(("raw", "message"), [
    ({"hostGpuMemoryGib": "80GB", "hostGpuComputeCapability": "9.0"},
     "hostGpuMemoryGib: '80GB' is not a number of GiB: give the driver's total, `nvidia-smi "
     "--query-gpu=memory.total --format=csv` (MiB) divided by 1024, e.g. 139.96 for 143771 MiB"),
    ({"hostGpuMemoryGib": "0", "hostGpuComputeCapability": "9.0"},
     "hostGpuMemoryGib: 0 GiB is not a GPU's memory (give a number above 0 and at most 2048)"),
    ({"hostGpuMemoryGib": "80", "hostGpuComputeCapability": "sm_90"},
     "hostGpuComputeCapability: 'sm_90' is not a compute capability (e.g. 9.0)"),
    ({"hostGpuMemoryGib": "80", "hostGpuComputeCapability": "9"},
     "hostGpuComputeCapability: '9' is not a compute capability (e.g. 9.0)"),
    ({"hostGpuMemoryGib": "80"},
     "hostGpuComputeCapability: required with hostGpuMemoryGib (a GPU not in the catalog needs both; "
     "`nvidia-smi --query-gpu=name,memory.total,compute_cap --format=csv` prints them)"),
    ({"hostGpuComputeCapability": "9.0"}, "hostGpuMemoryGib: required with hostGpuComputeCapability"),
    ({"hostGpuModel": "H200", "hostGpuMemoryGib": "140", "hostGpuComputeCapability": "9.0"},
     "hostGpuModel and hostGpuMemoryGib/hostGpuComputeCapability: choose one: hostGpuModel names a GPU in the "
     "catalog, the other two describe a GPU it does not list"),
    ({"gpus": "all", "hostGpuMemoryGib": "140", "hostGpuComputeCapability": "9.0"},
     "hostGpuCount: required with gpus=all and hostGpuModel or hostGpuMemoryGib (for the fit check)"),
])
def test_host_gpu_description_messages(raw: dict[str, str], message: str) -> None:
    assert any(p.startswith(message) for p in _host_gpu_problems(**raw)), _host_gpu_problems(**raw)


def test_host_gpu_settings_belong_to_existing_hosts() -> None:
    with pytest.raises(ConfigError) as info:
        load_stack_config({"sshAllowedCidrs": "93.184.215.14/32", "apiAllowedCidrs": "93.184.216.0/24",
                           "hostGpuMemoryGib": "80", "hostGpuComputeCapability": "9.0"})
    assert "hostGpuComputeCapability: has no effect with target=aws; remove it" in info.value.problems
    assert "hostGpuMemoryGib: has no effect with target=aws; remove it" in info.value.problems
