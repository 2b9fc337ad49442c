"""What a change of a setting does to a running stack: the vocabulary of the README's "what replaces what" table.

Each setting declares its own effect where it is declared (`Field(..., json_schema_extra=effect(CONTAINER))`
in infra/settings/models.py; a settings class without one fails at import). This module holds the words and
their descriptions, once. tests/unit/components/test_change_effects.py checks every declaration against the
program: it deploys a baseline and a changed config under Pulumi mocks and classifies the differences in
resource inputs with the AWS provider's rules (which instance and volume arguments force a new resource).
"""

from __future__ import annotations

from typing import Any, Final

from pydantic.fields import FieldInfo

# Each setting's effect is a set of these, by resource.
CONTAINER: Final = "container"  # the vLLM container (and/or the proxy) is re-created
TAGS: Final = "tags"  # instance tags updated in place (what the boot prefetch reads); no restart
RESTART: Final = "restart"  # the same instance is stopped and started (type, user-data)
IN_PLACE: Final = "in-place"  # the instance is modified without a restart
REPLACE: Final = "replace"  # a new instance: the cache volume re-attaches, the Elastic IP moves over
VOLUME: Final = "volume"  # the cache volume is modified in place (EBS elastic volumes)
NETWORK: Final = "network"  # security group rules added or removed
# The cache volume is replaced (or adopted): the one attached so far is detached and kept in AWS.
NEW_VOLUME: Final = "new-volume"
NONE: Final = "none"  # plan-time checks only (fit check, readiness wait)
# A fleet (`replicas` set): a new task definition revision, which the ECS service rolls out replica by replica.
ROLLING: Final = "rolling"
# A fleet's capacity, scaling or load balancer updated in place; no running replica is replaced.
FLEET: Final = "fleet"

DESCRIPTIONS: Final = {
    CONTAINER: "containers re-created (the gap is the new container's start; no download when only flags change)",
    TAGS: "instance tags updated in place",
    RESTART: "instance stopped and started in place: same instance, volumes and address",
    IN_PLACE: "instance updated without a restart",
    REPLACE: "new instance: the cache volume (models, compile cache) re-attaches, the Elastic IP moves over",
    VOLUME: "cache volume modified in place, data kept (size can only grow)",
    NETWORK: "security group rules added or removed in place",
    NEW_VOLUME: "another cache volume is attached (a new, empty one unless adopted by cacheVolumeId): the "
                "previous one is detached and kept in AWS (adopt it again, or delete it); refused while "
                "protectCacheVolume is true",
    NONE: "nothing re-created (plan-time checks, or the value is used by the next SSH connections)",
    ROLLING: "fleet: a new task definition; the service replaces the replicas one by one behind the load "
             "balancer (rolling deployment with circuit breaker and rollback)",
    FLEET: "fleet: the capacity, scaling or load balancer updated in place; running replicas stay",
}

# The AWS provider replaces an instance when one of these changes (ForceNew in its schema);
# instance type and user-data are stop/start updates (`user_data_replace_on_change` is off).
# Adding spot market options replaces the instance (removing them does not: the program warns, see
# components/_instance_state.py).
INSTANCE_REPLACE_FIELDS: Final = frozenset({"ami", "subnetId", "keyName", "associatePublicIpAddress",
                                            "availabilityZone", "instanceMarketOptions"})
INSTANCE_RESTART_FIELDS: Final = frozenset({"instanceType", "userDataBase64"})
# An encrypted root disk's key, or a volume's zone/encryption/key, cannot change in place.
INSTANCE_REPLACE_NESTED: Final = frozenset({"rootBlockDevice.kmsKeyId", "rootBlockDevice.encrypted"})
VOLUME_REPLACE_FIELDS: Final = frozenset({"availabilityZone", "encrypted", "kmsKeyId", "snapshotId"})

_KEY: Final = "effect"


def effect(*kinds: str) -> dict[str, Any]:
    """A setting's effect, for its `Field(json_schema_extra=...)`: one or more of the words above."""
    unknown = [kind for kind in kinds if kind not in DESCRIPTIONS]
    if not kinds or unknown:
        raise ValueError(f"effect{kinds!r}: give one or more of {sorted(DESCRIPTIONS)}")
    return {_KEY: sorted(set(kinds), key=list(DESCRIPTIONS).index)}


def effect_of(info: FieldInfo) -> frozenset[str] | None:
    """The effect a field declares, or None when it declares none."""
    extra = info.json_schema_extra
    if not isinstance(extra, dict) or _KEY not in extra:
        return None
    kinds = extra[_KEY]
    assert isinstance(kinds, list)
    return frozenset(str(kind) for kind in kinds)


def effect_text(kinds: frozenset[str]) -> str:
    return "; ".join(DESCRIPTIONS[e] for e in sorted(kinds, key=list(DESCRIPTIONS).index))
