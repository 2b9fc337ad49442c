"""Security group pieces the components share."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

# Anywhere, per address family: the destination of an instance's or task's outbound traffic (image pulls, model
# downloads, the AWS APIs), which the product does not narrow.
ANYWHERE = (("ipv4", "0.0.0.0/0"), ("ipv6", "::/0"))


def egress_anywhere(resource_prefix: str, group_id: pulumi.Input[str], description: str, tags: dict[str, str],
                    parent: pulumi.Resource) -> list[aws.vpc.SecurityGroupEgressRule]:
    """One egress rule per address family, all protocols, named `<resource_prefix>-<family>`."""
    return [
        aws.vpc.SecurityGroupEgressRule(
            f"{resource_prefix}-{family}",
            security_group_id=group_id,
            ip_protocol="-1",
            cidr_ipv4=cidr if family == "ipv4" else None,
            cidr_ipv6=cidr if family == "ipv6" else None,
            description=description,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=parent),
        )
        for family, cidr in ANYWHERE
    ]
