"""How every SSH hop of the product is made: pulumi-docker's `ssh://` daemon address, the
pulumi-command connections, and the `ssh` command printed for operators.

One rule for all of them: the host key is known before the first connection and checked strictly
(no `StrictHostKeyChecking=no`, no `UserKnownHostsFile=/dev/null`); only the product's own key is
offered; nothing ever prompts.
"""

from __future__ import annotations

import shlex

DEFAULT_SSH_PORT = 22


def known_hosts_line(address: str, host_public_key: str, port: int = DEFAULT_SSH_PORT) -> str:
    """One known_hosts entry pinning `host_public_key` (OpenSSH `type base64 [comment]`) to the address."""
    key_type, key_body, *_comment = host_public_key.split()
    host = address if port == DEFAULT_SSH_PORT else f"[{address}]:{port}"
    return f"{host} {key_type} {key_body}"


def ssh_options(identity_file: str, known_hosts_file: str) -> list[str]:
    """`-o`/`-i` flags that make `ssh` strict, non-interactive and use only the given key."""
    return [
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts_file}",
        # A known_hosts file of our own must not be mixed with ~/.ssh/known_hosts or hashed entries.
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-i", identity_file,
        "-o", "ConnectTimeout=15",
        # Keeps long image pulls over the docker connection alive through NAT and firewalls.
        "-o", "ServerAliveInterval=30",
    ]


def docker_host_url(user: str, address: str, port: int = DEFAULT_SSH_PORT) -> str:
    """The DOCKER_HOST / pulumi-docker `host` for a daemon reached over SSH."""
    netloc = f"{user}@{address}" if port == DEFAULT_SSH_PORT else f"{user}@{address}:{port}"
    return f"ssh://{netloc}"


def ssh_command(user: str, address: str, identity_file: str, known_hosts_file: str,
                port: int = DEFAULT_SSH_PORT) -> str:
    """The interactive `ssh` command an operator pastes to reach the host (the `ssh_command` output)."""
    args = ["ssh", *ssh_options(identity_file, known_hosts_file)]
    if port != DEFAULT_SSH_PORT:
        args += ["-p", str(port)]
    args.append(f"{user}@{address}")
    return shlex.join(args)
