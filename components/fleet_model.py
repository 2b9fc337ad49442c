"""FleetModel: a fleet's fine-tune folder (`modelPath`), uploaded once to a private S3 bucket of the stack, for
each replica's task to copy into its instance's cache (infra/render/model_sync.py).

The single endpoint copies the folder to its host over SSH; a fleet has no SSH and its instances come and go,
so the folder goes where every instance can read it. One object per file under `models/<content digest>/`: the
same folder is the same keys (nothing is uploaded again), a changed one is new keys and a new task definition.
A replaced version's objects stay in the bucket (`retain_on_delete`): `pulumi up` does not wait for the rollout,
and a task of the previous revision (an ECS circuit-breaker rollback, or a scale-out before the new revision is
steady) must still find its files. They go with the bucket at `pulumi destroy`. The bucket
refuses public access and plain HTTP, owns its objects (no ACLs), and is encrypted with `kmsKeyId` when set
(else SSE-S3). `pulumi destroy` deletes it with its objects: they are copies of the user's folder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from vllm_endpoint.infra.catalog.names import PROJECT
from vllm_endpoint.infra.plan.deployment import ModelUpload
from vllm_endpoint.infra.render.model_sync import model_object_keys, model_prefix


@dataclass(frozen=True)
class FleetModelArgs:
    upload: ModelUpload
    kms_key_id: pulumi.Input[str] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class FleetModel(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    prefix: str
    """The objects' key prefix (`models/<digest>`)."""

    def __init__(self, name: str, args: FleetModelArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{PROJECT}:aws:FleetModel", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = aws.s3.Bucket(f"{name}-bucket", bucket_prefix=_bucket_prefix(pulumi.get_stack()),
                                    force_destroy=True, tags=dict(args.tags), opts=child)
        self.public_access_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access-block", bucket=self.bucket.id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=child)
        self.ownership = aws.s3.BucketOwnershipControls(
            f"{name}-ownership", bucket=self.bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"), opts=child)
        self.encryption = aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption", bucket=self.bucket.id, rules=[_encryption_rule(args.kms_key_id)], opts=child)
        self.policy = aws.s3.BucketPolicy(
            f"{name}-tls-only", bucket=self.bucket.id, policy=self.bucket.arn.apply(_tls_only_policy),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.public_access_block]))
        self.prefix = model_prefix(args.upload)
        self.objects = self._upload(name, args)
        self.bucket_name = self.bucket.bucket
        self.bucket_arn = self.bucket.arn
        self.register_outputs({"bucket_name": self.bucket_name, "prefix": self.prefix})

    def _upload(self, name: str, args: FleetModelArgs) -> list[aws.s3.BucketObjectv2]:
        """One object per file, named by the file's path and the folder's digest (a changed folder: new resources;
        the old ones leave the stack and stay in the bucket for the previous task definition). The encryption
        configuration comes first: every object is written encrypted with the stack's key."""
        opts = pulumi.ResourceOptions(parent=self, depends_on=[self.encryption], retain_on_delete=True)
        digest = args.upload.digest[:16]
        return [
            aws.s3.BucketObjectv2(
                f"{name}-{digest}-{path}", bucket=self.bucket.id, key=key,
                source=pulumi.FileAsset(str(args.upload.local_dir / path)), opts=opts)
            for path, key in model_object_keys(args.upload).items()
        ]


def _bucket_prefix(stack: str) -> str:
    """S3's rules: lowercase letters, digits and hyphens; the prefix at most 37 characters (Pulumi adds 26)."""
    cleaned = "".join(c if c.isalnum() else "-" for c in f"{PROJECT}-{stack}-models-".lower())
    return cleaned[:37]


def _encryption_rule(kms_key_id: pulumi.Input[str] | None) -> aws.s3.BucketServerSideEncryptionConfigurationRuleArgs:
    default = (aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
        sse_algorithm="aws:kms", kms_master_key_id=kms_key_id) if kms_key_id is not None else
        aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
            sse_algorithm="AES256"))
    # A bucket key: one KMS data key per bucket for a while instead of a KMS call per object read.
    return aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
        apply_server_side_encryption_by_default=default, bucket_key_enabled=kms_key_id is not None)


def _tls_only_policy(bucket_arn: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }]})

