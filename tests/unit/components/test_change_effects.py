"""The "what replaces what" table checked against the program: each setting's effect as its field declares it
(infra/settings/models.py, in the words of infra/settings/effects.py).

For each setting, a baseline and a changed stack are declared under mocks; the differences in the
resources' inputs are classified with the AWS provider's rules (which arguments force a new instance
or volume) and must be exactly the declared effect. A setting that re-creates the container must
leave the instance, its volumes and its address alone, and so on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from tests.unit.components.test_components import AWS, EXISTING, HOST_KEY, LOCAL, OWN_SSH_KEY, Deployed, deploy
from tests.unit.components.test_vllm_service import Service, deploy_service
from tests.unit.model_folders import write_model_folder
from vllm_endpoint.infra.settings import effects
from vllm_endpoint.infra.settings.models import _Section, config_keys, declared_effects

INSTANCE = "aws:ec2/instance:Instance"
VOLUME = "aws:ebs/volume:Volume"
CONTAINER = "docker:index/container:Container"
PROVIDER = "pulumi:providers:docker"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out
    return {prefix.rstrip("."): json.dumps(value, sort_keys=True)}


def _changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    a, b = _flatten(before), _flatten(after)
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def classify(before: Deployed, after: Deployed) -> frozenset[str]:
    found: set[str] = set()

    def by_name(d: Deployed, typ: str) -> dict[str, dict[str, Any]]:
        return {r.name: r.inputs for r in d.mocks.of_type(typ)}

    # Containers: any input change re-creates a container (pulumi-docker replaces on every change that
    # matters), and so does a change of the docker provider they run through.
    if by_name(before, CONTAINER) != by_name(after, CONTAINER) or by_name(before, PROVIDER) != by_name(after, PROVIDER):
        found.add(effects.CONTAINER)
    for name, old in by_name(before, INSTANCE).items():
        new = by_name(after, INSTANCE).get(name)
        assert new is not None
        fields = _changed(old, new)
        tops = {f.split(".")[0] for f in fields}
        if tops & effects.INSTANCE_REPLACE_FIELDS or fields & effects.INSTANCE_REPLACE_NESTED:
            found.add(effects.REPLACE)
        elif tops & effects.INSTANCE_RESTART_FIELDS:
            found.add(effects.RESTART)
        if tops - effects.INSTANCE_REPLACE_FIELDS - effects.INSTANCE_RESTART_FIELDS - {"tags"} and \
                effects.REPLACE not in found:
            found.add(effects.IN_PLACE)
        if "tags" in tops and not found & {effects.REPLACE}:
            found.add(effects.TAGS)
    volumes_before, volumes_after = by_name(before, VOLUME), by_name(after, VOLUME)
    if volumes_before.keys() != volumes_after.keys():
        found.add(effects.NEW_VOLUME)  # the stack's volume left it (an adopted one attaches), or came back
    for name in volumes_before.keys() & volumes_after.keys():
        fields = {f.split(".")[0] for f in _changed(volumes_before[name], volumes_after[name])} - {"tags"}
        if fields & effects.VOLUME_REPLACE_FIELDS:
            found.add(effects.NEW_VOLUME)
        elif fields:
            found.add(effects.VOLUME)
    def rules(d: Deployed) -> set[str]:
        return {json.dumps({k: v for k, v in r.items() if k != "tags"}, sort_keys=True)
                for r in by_name(d, INGRESS).values()}

    if rules(before) != rules(after):
        found.add(effects.NETWORK)
    if found & {effects.NEW_VOLUME}:
        # What the user must know first (and all Pulumi does while protectCacheVolume is on: refuse).
        return frozenset({effects.NEW_VOLUME})
    return frozenset(found or {effects.NONE})


# A fleet's resources: a new task definition, or new networking of the service, rolls the replicas; any other
# change of these is made in place.
FLEET_TASK = "aws:ecs/taskDefinition:TaskDefinition"
FLEET_SERVICE = "aws:ecs/service:Service"
ROLLING_SERVICE_FIELDS = frozenset({"networkConfiguration", "loadBalancers", "taskDefinition"})


def classify_fleet(before: Service, after: Service) -> frozenset[str]:
    def by_name(d: Service) -> dict[tuple[str, str], dict[str, Any]]:
        return {(r.typ, r.name): r.inputs for r in d.mocks.resources}

    old, new = by_name(before), by_name(after)
    found: set[str] = set()
    for key in old.keys() | new.keys():
        if key not in old or key not in new:
            found.add(effects.FLEET)
            continue
        fields = {f.split(".")[0] for f in _changed(old[key], new[key])}
        if not fields:
            continue
        typ = key[0]
        if typ == FLEET_TASK or (typ == FLEET_SERVICE and fields & ROLLING_SERVICE_FIELDS):
            found.add(effects.ROLLING)
            fields -= ROLLING_SERVICE_FIELDS
        if typ != FLEET_TASK and fields:
            found.add(effects.FLEET)
    return frozenset(found or {effects.NONE})


def _image_context(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM vllm/vllm-openai:v0.32.0\nCOPY m /app/model\n")
    return root


# key -> (baseline extra settings, changed settings); target decides AWS vs existing-host baseline.
def samples(tmp: Path) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    other_key = HOST_KEY[:-4] + "AAAA"
    return {
        "endpointName": ({}, {"endpointName": "chat"}),
        "model": ({}, {"model": "Qwen/Qwen2.5-0.5B-Instruct"}),
        "modelRevision": ({}, {"modelRevision": "abc123"}),
        "modelPath": ({}, {"modelPath": str(write_model_folder(tmp / "mp", "ft"))}),
        "servedModelName": ({}, {"servedModelName": "chat"}),
        "modelArchitecture": ({}, {"modelArchitecture": json.dumps({
            "num_hidden_layers": 28, "hidden_size": 1536, "num_attention_heads": 12, "num_key_value_heads": 2,
            "vocab_size": 151936, "intermediate_size": 8960, "max_position_embeddings": 32768,
            "torch_dtype": "bfloat16", "model_type": "qwen2"})}),
        "image": ({}, {"image": "registry.example.com/mirror/vllm-openai"}),
        "imageTag": ({}, {"imageTag": "v0.31.0"}),
        "imageDigest": ({}, {"imageDigest": "sha256:" + "a" * 64}),
        "vllmVersion": ({"imageTag": "prod", "vllmVersion": "0.32.0"}, {"imageTag": "prod", "vllmVersion": "0.31.0"}),
        "imageBuildContext": ({}, {"imageBuildContext": str(_image_context(tmp / "img")), "model": "/app/model"}),
        "gpus": ({"instanceType": "g5.12xlarge", "model": "Qwen/Qwen2.5-7B-Instruct"},
                 {"instanceType": "g5.12xlarge", "model": "Qwen/Qwen2.5-7B-Instruct", "gpus": "0,1"}),
        "tensorParallelSize": ({"instanceType": "g5.12xlarge", "model": "Qwen/Qwen2.5-7B-Instruct"},
                               {"instanceType": "g5.12xlarge", "model": "Qwen/Qwen2.5-7B-Instruct",
                                "tensorParallelSize": "2"}),
        "gpuMemoryUtilization": ({}, {"gpuMemoryUtilization": "0.8"}),
        "maxNumSeqs": ({}, {"maxNumSeqs": "64"}),
        "maxModelLen": ({}, {"maxModelLen": "8192"}),
        "blockSize": ({}, {"blockSize": "32"}),
        "swapSpace": ({"imageTag": "v0.17.1", "allowInsecureImage": "true"},
                      {"imageTag": "v0.17.1", "allowInsecureImage": "true", "swapSpace": "4"}),
        "dtype": ({}, {"dtype": "float16"}),
        "quantization": ({}, {"quantization": "fp8"}),
        "kvCacheDtype": ({}, {"kvCacheDtype": "fp8"}),
        "trustRemoteCode": ({"modelRevision": "abc"}, {"modelRevision": "abc", "trustRemoteCode": "true"}),
        "extraArgs": ({}, {"extraArgs": '["--enable-chunked-prefill"]'}),
        "extraEnv": ({}, {"extraEnv": '{"VLLM_LOGGING_LEVEL": "DEBUG"}'}),
        "ipc": ({}, {"ipc": "host"}),
        "shmSizeGb": ({}, {"shmSizeGb": "8"}),
        "containerUser": ({}, {"containerUser": "1001:1001"}),
        "containerOpenFiles": ({}, {"containerOpenFiles": "20000"}),
        "apiPort": ({}, {"apiPort": "30006"}),
        "readinessTimeoutSeconds": ({}, {"readinessTimeoutSeconds": "600"}),
        "apiServerCount": ({}, {"apiServerCount": "2"}),
        "instanceType": ({}, {"instanceType": "g5.2xlarge"}),
        "amiId": ({"amiId": "ami-0123456789abcdef0"}, {"amiId": "ami-0fedcba9876543210"}),
        "amiSsmParameter": ({}, {"amiSsmParameter": "/aws/service/deeplearning/ami/x86_64/"
                                                    "base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"}),
        "rootVolumeSizeGb": ({}, {"rootVolumeSizeGb": "150"}),
        "cacheVolumeSizeGb": ({}, {"cacheVolumeSizeGb": "200"}),
        "cacheVolumeType": ({}, {"cacheVolumeType": "io2", "cacheVolumeIops": "6000"}),
        "cacheVolumeIops": ({}, {"cacheVolumeIops": "6000"}),
        "cacheVolumeThroughput": ({}, {"cacheVolumeThroughput": "250"}),
        "kmsKeyId": ({}, {"kmsKeyId": "arn:aws:kms:us-east-1:123456789012:key/abc"}),
        # An existing volume in the zone the stack's own volume is in (the mock's zone: the id's last letter).
        "cacheVolumeId": ({}, {"cacheVolumeId": "vol-0123456789abcdefa"}),
        "protectCacheVolume": ({}, {"protectCacheVolume": "true"}),
        "subnetId": ({}, {"subnetId": "subnet-0123456789abcdef0"}),
        "availabilityZone": ({}, {"availabilityZone": "us-east-1c"}),
        "sshUser": ({}, {"sshUser": "admin"}),
        "sshKeyPairName": ({}, {"sshKeyPairName": "mine", "sshPrivateKey": OWN_SSH_KEY}),
        "sshPublicKey": ({}, {"sshPublicKey": HOST_KEY, "sshPrivateKey": OWN_SSH_KEY}),
        "tags": ({}, {"tags": '{"team": "search"}'}),
        "prefetchAtBoot": ({}, {"prefetchAtBoot": "false"}),
        "dockerDataOnCacheVolume": ({}, {"dockerDataOnCacheVolume": "true"}),
        "detailedMonitoring": ({}, {"detailedMonitoring": "false"}),
        "recoveryAlarm": ({}, {"recoveryAlarm": "false"}),
        # CloudWatch alarms, an SNS topic and its key: nothing of the instance, its volumes or the containers.
        "alarmEmail": ({}, {"alarmEmail": "oncall@example.com"}),
        # Off: the proxy's log driver, the instance's profile (no token: no role left) and its metrics tag.
        "metrics": ({}, {"metrics": "false"}),
        "logRetentionDays": ({}, {"logRetentionDays": "14"}),
        "idleStopMinutes": ({}, {"idleStopMinutes": "30"}),
        "capacity": ({}, {"capacity": "spot"}),
        "hostAddress": ({}, {"hostAddress": "10.1.2.4"}),
        "hostSshUser": ({}, {"hostSshUser": "ops"}),
        "hostSshPort": ({}, {"hostSshPort": "2222"}),
        "hostPublicKey": ({}, {"hostPublicKey": other_key}),
        "hostCacheDir": ({}, {"hostCacheDir": "/data/cache"}),
        "localDevice": ({}, {"localDevice": "gpu"}),
        "localCpuKvCacheGib": ({}, {"localCpuKvCacheGib": "8"}),
        "hostGpuModel": ({}, {"hostGpuModel": "L4"}),
        # Both describe a GPU the catalog lacks (the base for these has no hostGpuModel: they exclude it).
        "hostGpuMemoryGib": ({"hostGpuMemoryGib": "80", "hostGpuComputeCapability": "9.0"},
                             {"hostGpuMemoryGib": "140", "hostGpuComputeCapability": "9.0"}),
        # Below 8.0 the bf16 model is served in float16, which the rendered --dtype says.
        "hostGpuComputeCapability": ({"hostGpuMemoryGib": "80", "hostGpuComputeCapability": "8.0"},
                                     {"hostGpuMemoryGib": "80", "hostGpuComputeCapability": "7.5"}),
        "hostGpuCount": ({"gpus": "all", "hostGpuCount": "2"}, {"gpus": "all", "hostGpuCount": "4"}),
        # 2 then 4 API servers by default (one GPU).
        "hostCpuCount": ({"hostCpuCount": "8"}, {"hostCpuCount": "32"}),
        "apiAllowedCidrs": ({}, {"apiAllowedCidrs": "93.184.216.0/24,93.184.217.0/24"}),
        "sshAllowedCidrs": ({}, {"sshAllowedCidrs": "93.184.215.15/32"}),
        "metricsAllowedCidrs": ({}, {"metricsAllowedCidrs": "10.0.0.0/8"}),
        "dangerouslyAllowSshFromInternet": ({}, {"dangerouslyAllowSshFromInternet": "true",
                                                 "sshAllowedCidrs": "0.0.0.0/0"}),
        "dangerouslyAllowApiFromInternet": ({}, {"dangerouslyAllowApiFromInternet": "true",
                                                 "apiAllowedCidrs": "0.0.0.0/0"}),
        "proxyImage": ({}, {"proxyImage": "nginx:1.28.0-alpine"}),
        "tls": ({}, {"tls": "self-signed"}),
        "allowInsecureImage": ({}, {"allowInsecureImage": "true"}),
        "apiKey": ({"apiKey": "k" * 40}, {"apiKey": "j" * 40}),
        "hfToken": ({}, {"hfToken": "hf_" + "t" * 34}),
        "sshPrivateKey": ({}, {"sshPrivateKey": OWN_SSH_KEY.replace("USER-OWN-KEY", "ROTATED-KEY")}),
        # A fleet (FLEET_BASE): replicas set.
        "replicas": ({}, {"replicas": "3"}),
        "minReplicas": ({}, {"minReplicas": "1"}),
        "maxReplicas": ({}, {"maxReplicas": "6"}),
        "waitingPerReplica": ({}, {"waitingPerReplica": "4"}),
        "onDemandBase": ({}, {"onDemandBase": "2"}),
        "spotWeight": ({}, {"spotWeight": "3"}),
        "onDemandWeight": ({"spotWeight": "1"}, {"spotWeight": "1", "onDemandWeight": "3"}),
        "extraInstanceTypes": ({}, {"extraInstanceTypes": "g5.2xlarge"}),
        "subnetIds": ({}, {"subnetIds": "subnet-0aaaaaaaaaaaaaaaa,subnet-0bbbbbbbbbbbbbbbb"}),
        "loadBalancerSubnetIds": ({}, {"loadBalancerSubnetIds": "subnet-0cccccccccccccccc,subnet-0dddddddddddddddd"}),
        "domain": ({}, {"domain": "llm.example.com", "hostedZoneId": "Z0123456789ABCDEFGHIJ"}),
        "hostedZoneId": ({"domain": "llm.example.com", "hostedZoneId": "Z0123456789ABCDEFGHIJ"},
                         {"domain": "llm.example.com", "hostedZoneId": "Z9876543210ABCDEFGHIJ"}),
        "deregistrationDelaySeconds": ({}, {"deregistrationDelaySeconds": "120"}),
        "surgeOnDeploy": ({}, {"surgeOnDeploy": "false"}),
        "cacheSnapshotId": ({}, {"cacheSnapshotId": "snap-0123456789abcdef0"}),
        "cacheInitializationRate": ({"cacheSnapshotId": "snap-0123456789abcdef0"},
                                    {"cacheSnapshotId": "snap-0123456789abcdef0", "cacheInitializationRate": "150"}),
        "warmPoolSize": ({}, {"warmPoolSize": "1"}),
        "cacheImages": ({}, {"cacheImages": "true"}),
    }


FLEET_BASE = {"replicas": "2", "apiAllowedCidrs": "93.184.216.0/24"}
FLEET_KEYS = {"replicas", "minReplicas", "maxReplicas", "waitingPerReplica", "onDemandBase", "spotWeight",
              "onDemandWeight", "extraInstanceTypes", "subnetIds", "loadBalancerSubnetIds", "domain", "hostedZoneId",
              "deregistrationDelaySeconds", "surgeOnDeploy", "cacheSnapshotId", "cacheInitializationRate",
              "warmPoolSize", "cacheImages"}


EXISTING_HOST_KEYS = {"endpointName", "hostAddress", "hostSshUser", "hostSshPort", "hostPublicKey", "hostCacheDir",
                      "hostGpuModel", "hostGpuCount", "hostCpuCount", "sshPrivateKey"}


UNLISTED_GPU_KEYS = {"hostGpuMemoryGib", "hostGpuComputeCapability"}
# On this machine's engine; the plan's probe of this machine is replaced by one of a machine without a GPU
# unless localDevice asks for one (see LOCAL_MACHINE in test_components).
LOCAL_KEYS = {"localDevice", "localCpuKvCacheGib"}


def test_every_setting_has_a_declared_effect() -> None:
    declared = declared_effects()
    assert set(declared) == {*config_keys(), "target"}
    assert all(kinds and kinds <= set(effects.DESCRIPTIONS) for kinds in declared.values())


def test_a_setting_without_a_declared_effect_does_not_import() -> None:
    with pytest.raises(TypeError, match=r"NewSettings: declare what a change of new_knob does"):
        type("NewSettings", (_Section,), {"__annotations__": {"new_knob": int}, "new_knob": Field(1, description="x")})
    with pytest.raises(ValueError, match="give one or more of"):
        effects.effect("restarts-everything")


@pytest.mark.parametrize("key", sorted(set(config_keys())))
def test_declared_effect_matches_what_the_program_changes(key: str, tmp_path: Path) -> None:
    baseline, changed = samples(tmp_path)[key]
    if key in FLEET_KEYS:
        observed = classify_fleet(deploy_service({**FLEET_BASE, **baseline}),
                                  deploy_service({**FLEET_BASE, **changed}))
        assert observed == declared_effects()[key], f"{key}: observed {sorted(observed)}"
        return
    base = EXISTING if key in EXISTING_HOST_KEYS else LOCAL if key in LOCAL_KEYS else AWS
    if key in UNLISTED_GPU_KEYS:
        base = {k: v for k, v in EXISTING.items() if k != "hostGpuModel"}
    # The same local SSH folder for both, as for two deploys of one stack.
    before = deploy({**base, **baseline}, tmp_path)
    after = deploy({**base, **changed}, tmp_path)
    observed = classify(before, after)
    assert observed == declared_effects()[key], f"{key}: observed {sorted(observed)}"
