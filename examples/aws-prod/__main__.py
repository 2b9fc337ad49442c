"""A production endpoint on AWS: AMI, image and model revision pinned, https with a private CA, the
volumes encrypted with a customer KMS key this program creates, in your own subnet, tagged.

Apps trust the endpoint with the stack output `ca_certificate`; another stack reads the URL, key and
model with a StackReference (see ../consumer).
"""

import pulumi
import pulumi_aws as aws

from vllm_endpoint import VllmEndpoint, VllmEndpointArgs

# Pulumi.yaml declares each key; the CLI passes the defaults, so `require` never states one again.
config = pulumi.Config()
tags = {"environment": pulumi.get_stack(), **config.require_object("tags")}

volume_key = aws.kms.Key(
    "volumes",
    description=f"vLLM endpoint volumes (root and model cache), {pulumi.get_project()}/{pulumi.get_stack()}",
    enable_key_rotation=True,
    deletion_window_in_days=30,
    tags=tags,
    # The cache volume outlives `pulumi destroy` (retained), and a volume whose key is deleted can never
    # be read again: the key is retained too (not protected, which would refuse the destroy). Schedule its
    # deletion only after deleting the volume.
    opts=pulumi.ResourceOptions(retain_on_delete=True),
)

endpoint = VllmEndpoint(
    "chat",
    VllmEndpointArgs(
        model=config.require("model"),
        model_revision=config.require("modelRevision"),
        max_model_len=config.require_int("maxModelLen"),
        instance_type=config.require("instanceType"),
        ami_id=config.require("amiId"),
        # The tag names the vLLM version the flags are checked against; the digest is what runs.
        image_tag=config.require("imageTag"),
        image_digest=config.require("imageDigest"),
        tls="self-signed",
        # An Output: the key's ARN is known once AWS created it.
        kms_key_id=volume_key.arn,
        subnet_id=config.require("subnetId"),
        ssh_allowed_cidrs=config.require_object("sshAllowedCidrs"),
        api_allowed_cidrs=config.require_object("apiAllowedCidrs"),
        tags=tags,
    ),
)

pulumi.export("endpoint_url", endpoint.endpoint_url)
pulumi.export("api_key", endpoint.api_key)
pulumi.export("model", endpoint.model)
pulumi.export("ca_certificate", endpoint.ca_certificate)
pulumi.export("instance_id", endpoint.instance_id)
pulumi.export("cache_volume_id", endpoint.cache_volume_id)
pulumi.export("volume_key_arn", volume_key.arn)
pulumi.export("plan", endpoint.plan_summary)
