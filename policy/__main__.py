"""Entry point the Pulumi CLI runs (`python <this directory>`): serves the vllm-endpoint policies.

`PolicyPack(...)` starts pulumi-policy's analyzer server, prints its port and blocks until the engine
stops it, so everything worth testing lives in `policies.py` and `rules.py`.
"""

from policies import POLICY_PACK_NAME, build_policies
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name=POLICY_PACK_NAME,
    policies=build_policies(),
    # Each policy states its own level; this default only covers a policy added without one.
    enforcement_level=EnforcementLevel.MANDATORY,
    description="Security properties of the private vLLM endpoint, enforced on any stack.",
)
