"""An app's stack: reads a vLLM endpoint's URL, API key and model from the endpoint's stack and hands
them to the app as one Secrets Manager secret that only the app's IAM role may read.

The API key stays secret end to end: the endpoint stack exports it as a secret, the StackReference keeps
it one, the secret's value is a secret input (encrypted in this stack's state), and nothing exported here
holds it. The app reads the secret at start:

    aws secretsmanager get-secret-value --secret-id "$(pulumi stack output secret_arn)" \\
      --query SecretString --output text
    -> {"base_url": "https://...:30005/v1", "api_key": "...", "model": "...", "ca_certificate": "..." | null}
"""

import json

import pulumi
import pulumi_aws as aws

config = pulumi.Config()
endpoint_stack = config.require("endpointStack")

endpoint = pulumi.StackReference("endpoint", stack_name=endpoint_stack)
# require_output: a stack without these outputs fails this deploy instead of handing the app a None.
endpoint_url = endpoint.require_output("endpoint_url")
model = endpoint.require_output("model")
# Secret whatever the reference says: a stack that exported its key in plaintext must not get it into
# this stack's state in plaintext too.
api_key = pulumi.Output.secret(endpoint.require_output("api_key"))
# Only with `tls: self-signed`; None (JSON null) otherwise.
ca_certificate = endpoint.get_output("ca_certificate")

details = aws.secretsmanager.Secret(
    "llm-endpoint",
    description=f"OpenAI-compatible endpoint of stack {endpoint_stack}: base_url, api_key, model, ca_certificate",
)
aws.secretsmanager.SecretVersion(
    "llm-endpoint",
    secret_id=details.id,
    # Secret, as the key in it is.
    secret_string=pulumi.Output.json_dumps({
        "base_url": endpoint_url, "api_key": api_key, "model": model, "ca_certificate": ca_certificate,
    }),
)
# The hand-over: the app's role may read this one secret, nothing else.
aws.iam.RolePolicy(
    "read-llm-endpoint",
    role=config.require("appRoleName"),
    policy=details.arn.apply(lambda arn: json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": arn}],
    })),
)

# No key here: the app reads it from the secret.
pulumi.export("secret_arn", details.arn)
pulumi.export("endpoint_url", endpoint_url)
pulumi.export("model", model)
