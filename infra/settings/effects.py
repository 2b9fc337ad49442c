"""What a change of each setting does to a running stack: the README's "what replaces what" table.

Declared here, checked against the program by tests/unit/test_change_effects.py, which deploys a
baseline and a changed config under Pulumi mocks and classifies the differences in resource inputs
with the AWS provider's rules (which instance and volume arguments force a new resource).
"""

from __future__ import annotations

from typing import Final

# Each setting's effect is a set of these, by resource.
CONTAINER: Final = "container"  # the vLLM container (and/or the proxy) is re-created
TAGS: Final = "tags"  # instance tags updated in place (what the boot prefetch reads); no restart
RESTART: Final = "restart"  # the same instance is stopped and started (type, user-data)
IN_PLACE: Final = "in-place"  # the instance is modified without a restart
REPLACE: Final = "replace"  # a new instance: the cache volume re-attaches, the Elastic IP moves over
VOLUME: Final = "volume"  # the cache volume is modified in place (EBS elastic volumes)
NETWORK: Final = "network"  # security group rules added or removed
PROTECTED: Final = "protected"  # would replace the protected cache volume: Pulumi refuses the update
NONE: Final = "none"  # plan-time checks only (fit check, readiness wait)

DESCRIPTIONS: Final = {
    CONTAINER: "containers re-created (the gap is the new container's start; no download when only flags change)",
    TAGS: "instance tags updated in place",
    RESTART: "instance stopped and started in place: same instance, volumes and address",
    IN_PLACE: "instance updated without a restart",
    REPLACE: "new instance: the cache volume (models, compile cache) re-attaches, the Elastic IP moves over",
    VOLUME: "cache volume modified in place, data kept (size can only grow)",
    NETWORK: "security group rules added or removed in place",
    PROTECTED: "refused: it would replace the protected cache volume (create a new stack, or move by hand)",
    NONE: "nothing re-created (plan-time checks, or the value is used by the next SSH connections)",
}

# The AWS provider replaces an instance when one of these changes (ForceNew in its schema);
# instance type and user-data are stop/start updates (`user_data_replace_on_change` is off).
INSTANCE_REPLACE_FIELDS: Final = frozenset({"ami", "subnetId", "keyName", "associatePublicIpAddress",
                                            "availabilityZone"})
INSTANCE_RESTART_FIELDS: Final = frozenset({"instanceType", "userDataBase64"})
# An encrypted root disk's key, or a volume's zone/encryption/key, cannot change in place.
INSTANCE_REPLACE_NESTED: Final = frozenset({"rootBlockDevice.kmsKeyId", "rootBlockDevice.encrypted"})
VOLUME_REPLACE_FIELDS: Final = frozenset({"availabilityZone", "encrypted", "kmsKeyId", "snapshotId"})

_C, _T = CONTAINER, TAGS
EFFECTS: Final[dict[str, frozenset[str]]] = {
    "target": frozenset({REPLACE, CONTAINER}),
    # model
    "model": frozenset({_C, _T}),
    "modelRevision": frozenset({_C, _T}),
    "modelPath": frozenset({_C, _T}),
    "servedModelName": frozenset({_C}),
    "modelArchitecture": frozenset({NONE}),
    # server
    "image": frozenset({_C, _T}),
    "imageTag": frozenset({_C, _T}),
    "imageDigest": frozenset({_C, _T}),
    "vllmVersion": frozenset({_C}),
    "imageBuildContext": frozenset({_C, _T}),
    "gpus": frozenset({_C}),
    "tensorParallelSize": frozenset({_C}),
    "gpuMemoryUtilization": frozenset({_C}),
    "maxNumSeqs": frozenset({_C}),
    "maxModelLen": frozenset({_C}),
    "blockSize": frozenset({_C}),
    "swapSpace": frozenset({_C}),
    "dtype": frozenset({_C}),
    "quantization": frozenset({_C}),
    "kvCacheDtype": frozenset({_C}),
    "trustRemoteCode": frozenset({_C}),
    "extraArgs": frozenset({_C}),
    "extraEnv": frozenset({_C}),
    "ipc": frozenset({_C}),
    "shmSizeGb": frozenset({_C}),
    "containerUser": frozenset({_C}),
    "apiPort": frozenset({_C, NETWORK}),
    "readinessTimeoutSeconds": frozenset({NONE}),
    # aws
    "instanceType": frozenset({RESTART}),
    "amiId": frozenset({REPLACE}),
    "amiSsmParameter": frozenset({NONE}),  # read once; a new AMI is adopted only by pinning amiId
    "rootVolumeSizeGb": frozenset({IN_PLACE}),
    "cacheVolumeSizeGb": frozenset({VOLUME}),
    "cacheVolumeType": frozenset({VOLUME}),
    "cacheVolumeIops": frozenset({VOLUME}),
    "cacheVolumeThroughput": frozenset({VOLUME}),
    "kmsKeyId": frozenset({PROTECTED}),
    "subnetId": frozenset({PROTECTED}),
    "availabilityZone": frozenset({PROTECTED}),
    "sshUser": frozenset({RESTART, CONTAINER}),
    "sshKeyPairName": frozenset({REPLACE}),
    "sshPublicKey": frozenset({REPLACE}),
    "tags": frozenset({_T}),
    "prefetchAtBoot": frozenset({_T}),
    "dockerDataOnCacheVolume": frozenset({RESTART}),
    "detailedMonitoring": frozenset({IN_PLACE}),
    "recoveryAlarm": frozenset({NONE}),
    # existing host
    "hostAddress": frozenset({_C}),
    "hostSshUser": frozenset({_C}),
    "hostSshPort": frozenset({_C}),
    "hostPublicKey": frozenset({NONE}),  # the new key is pinned for every connection
    "hostCacheDir": frozenset({_C}),
    "hostGpuModel": frozenset({NONE}),
    "hostGpuCount": frozenset({_C}),  # with gpus=all it sets the default tensor parallelism
    # access
    "apiAllowedCidrs": frozenset({NETWORK}),
    "sshAllowedCidrs": frozenset({NETWORK}),
    "metricsAllowedCidrs": frozenset({_C}),
    "dangerouslyAllowSshFromInternet": frozenset({NETWORK}),
    "dangerouslyAllowApiFromInternet": frozenset({NETWORK}),
    "proxyImage": frozenset({_C}),
    "tls": frozenset({_C}),
    "allowInsecureImage": frozenset({_C}),
    # secrets
    "apiKey": frozenset({_C}),
    "hfToken": frozenset({_C, IN_PLACE, _T}),  # container env; SSM parameter + instance role for the prefetch
    "sshPrivateKey": frozenset({NONE}),  # the new key is used for every connection
}


def effect_text(key: str) -> str:
    return "; ".join(DESCRIPTIONS[e] for e in sorted(EFFECTS[key], key=list(DESCRIPTIONS).index))
