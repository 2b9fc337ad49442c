"""Run by tests/real/test_package_install.py with a fresh venv's Python, from a folder outside the
checkout: the installed package alone builds a program with two VllmEndpoints under Pulumi mocks.
Prints one JSON line with what it saw."""

import importlib.util
import json
import sys

import pulumi

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVsbG1lbmRwb2ludHRlc3Rob3N0a2V5c3RhbmRpbg"
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n"


class Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[tuple[str, str, dict]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        self.resources.append((args.typ, args.name, dict(args.inputs)))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list]:
        return {}, []


mocks = Mocks()
pulumi.runtime.set_mocks(mocks, project="apps", stack="test", preview=False)

from vllm_endpoint import VllmEndpoint, VllmEndpointArgs  # noqa: E402  (after the mocks, as Pulumi requires)


def on_the_shared_box(**settings: object) -> VllmEndpointArgs:
    common: dict = {"target": "existing-host", "host_address": "10.9.8.7", "host_ssh_user": "deploy",
                    "host_public_key": HOST_KEY, "ssh_private_key": SSH_KEY, "api_key": "a" * 40,
                    "host_gpu_model": "A10G"}
    return VllmEndpointArgs(**common, **settings)  # type: ignore[typeddict-item]


@pulumi.runtime.test
def program() -> None:
    VllmEndpoint("chat", on_the_shared_box(gpus=["0"], api_port=30005))
    VllmEndpoint("small", on_the_shared_box(gpus=["1"], api_port=30006, model="Qwen/Qwen2.5-0.5B-Instruct"))


program()
containers = [inputs for typ, _, inputs in mocks.resources if typ == "docker:index/container:Container"]
import vllm_endpoint  # noqa: E402

print(json.dumps({
    "package_file": vllm_endpoint.__file__,
    "python": sys.executable,
    "generic_names": {name: importlib.util.find_spec(name) is not None for name in ("infra", "components")},
    "containers": sorted(c["name"] for c in containers),
    "ports": sorted(int(p["external"]) for c in containers for p in c.get("ports") or []),
    "aws_resources": sum(typ.startswith("aws:") for typ, _, _ in mocks.resources),
}))
