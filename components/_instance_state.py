"""The stack's GPU instance as EC2 has it now, looked up before anything is declared (target aws only).

A stopped instance (stopped when idle by `idleStopMinutes`, by a spot interruption, or by hand) cannot take an
update: the containers are managed over SSH to it, so `pulumi up` would wait on a connection that never
answers, and nothing in the program may start it silently (that starts the GPU bill). So the program stops
first, saying which instance is stopped and what to run: `scripts/wake.sh <stack>`, then `pulumi up`.

The instance is found by the tags every stack's instance carries (STACK_TAG, ENDPOINT_TAG), with one
`ec2:DescribeInstances` call through the AWS provider's `get_instances`; a first deploy finds none. With
`capacity: on-demand`, a second call finds a spot instance left from `capacity: spot`: the AWS provider does
not replace an instance when its spot market options are removed (hashicorp/terraform-provider-aws#38141),
so the program says how to replace it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi_aws as aws

from vllm_endpoint.infra.catalog.names import ENDPOINT_TAG, STACK_TAG

STOPPED_STATES = ("stopping", "stopped")
LIVE_STATES = ("pending", "running", "stopping", "stopped")


class EndpointStoppedError(Exception):
    """The stack's instance is stopped: the update would hang on SSH or start the GPU bill unasked."""

    def __init__(self, instance_id: str, stack: str) -> None:
        self.instance_id = instance_id
        super().__init__(stopped_message(instance_id, stack))


def stopped_message(instance_id: str, stack: str) -> str:
    return (f"the endpoint's instance {instance_id} is stopped (stopped when idle by idleStopMinutes, by a spot "
            "interruption, or by hand), and `pulumi up` starts nothing by itself: the GPU bill would start "
            f"unasked. Run `scripts/wake.sh {stack}` first (it starts the instance and waits until /v1/models "
            "answers), then `pulumi up` again. A spot instance stopped by an interruption is started by EC2 alone, "
            "when it has capacity again: wake.sh says so if that is the case.")


def spot_left_message(instance_id: str, endpoint: str) -> str:
    return (f"capacity is on-demand, but the endpoint's instance {instance_id} is a spot instance: the AWS "
            "provider does not replace an instance when its spot options are removed "
            "(hashicorp/terraform-provider-aws#38141), so this update keeps it on spot. To move to on-demand, "
            "replace it: `pulumi up --replace <urn>` with the URN of the instance resource "
            f"`{endpoint}-host-instance` (`pulumi stack --show-urns` lists it); the cache volume and the Elastic "
            "IP move over to the new instance")


@dataclass(frozen=True)
class InstanceState:
    stopped: tuple[str, ...]  # ids of the stack's instances that are stopping or stopped
    spot_left: tuple[str, ...]  # ids of the stack's spot instances, when capacity is on-demand (else empty)


def _ids(stack: str, endpoint: str, states: tuple[str, ...], spot_only: bool = False) -> tuple[str, ...]:
    filters = [aws.ec2.GetInstancesFilterArgs(name="instance-lifecycle", values=["spot"])] if spot_only else None
    found = aws.ec2.get_instances(instance_tags={STACK_TAG: stack, ENDPOINT_TAG: endpoint},
                                  instance_state_names=list(states), filters=filters)
    return tuple(sorted(found.ids or ()))


def look_up(stack: str, endpoint: str, capacity: str) -> InstanceState:
    """The stack's instance as EC2 has it (an invoke: call it only for target aws)."""
    stopped = _ids(stack, endpoint, STOPPED_STATES)
    spot_left = _ids(stack, endpoint, LIVE_STATES, spot_only=True) if capacity != "spot" and not stopped else ()
    return InstanceState(stopped, spot_left)


def check_instance(stack: str, endpoint: str, capacity: str) -> list[str]:
    """Raises EndpointStoppedError when the stack's instance is stopped; returns the warnings to log."""
    state = look_up(stack, endpoint, capacity)
    if state.stopped:
        raise EndpointStoppedError(state.stopped[0], stack)
    return [spot_left_message(i, endpoint) for i in state.spot_left]
