"""Helpers the components share (not components themselves).

`endpoint_api_key`: the API key of an endpoint or a service, given or generated.

`secret`: typed shorthand for marking values secret (mypy cannot infer `Output.secret` on an
`Output[str]`).

`SshTarget`: how every SSH step (pulumi-command) reaches a host, the GpuHost or an existing one.

`write_ssh_files`: key and known_hosts files on the deploying machine, for pulumi-docker's `ssh://`
connection. pulumi-docker hands the connection to the system `ssh`, which reads keys and host keys
from files. They are written at every deploy from the stack's (secret) state, so any machine that
can run `pulumi up` for the stack has them; nothing needs to be copied by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_command as command
import pulumi_random as random

API_KEY_LENGTH = 48


def secret(value: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.secret(value)


def endpoint_api_key(parent: pulumi.Resource, name: str, given: pulumi.Output[str] | None) -> tuple[
        pulumi.Output[str], random.RandomPassword | None]:
    """The key apps send: the one given (a secret already), else a generated one kept in the stack's state."""
    if given is not None:
        return given, None
    generated = random.RandomPassword(f"{name}-api-key", length=API_KEY_LENGTH, special=False,
                                      opts=pulumi.ResourceOptions(parent=parent))
    return secret(generated.result), generated


@dataclass(frozen=True)
class SshTarget:
    address: pulumi.Input[str]
    user: str
    port: int
    private_key: pulumi.Input[str]  # secret
    host_public_key: pulumi.Input[str]  # pinned; never trust-on-first-use

    def connection(self, dial_error_limit: int = 30) -> command.remote.ConnectionArgs:
        return command.remote.ConnectionArgs(
            host=self.address, port=self.port, user=self.user, private_key=self.private_key,
            host_key=self.host_public_key, dial_error_limit=dial_error_limit, per_dial_timeout=10,
        )


IDENTITY_FILE = "id_ed25519"
KNOWN_HOSTS_FILE = "known_hosts"


def _write_private(path: Path, text: str) -> None:
    # Created 0600 before anything is written: the key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text if text.endswith("\n") else text + "\n")
    os.chmod(path, 0o600)


def write_ssh_files(directory: str, private_key: str, known_hosts_line: str) -> tuple[str, str]:
    """(identity file, known_hosts file) paths after writing both into `directory` (mode 0700)."""
    folder = Path(directory).expanduser()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    identity = folder / IDENTITY_FILE
    known_hosts = folder / KNOWN_HOSTS_FILE
    _write_private(identity, private_key)
    _write_private(known_hosts, known_hosts_line)
    return str(identity), str(known_hosts)
