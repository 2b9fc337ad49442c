"""The host claims check (infra/host/check-host-claims.sh): what another stack's containers, any other
container or a process hold on a shared host stops the deploy with a message naming the setting and who
holds it; the stack's own containers never do. Run here by dash, as sshd runs it, against a `docker`
stand-in that answers with the lines the check's inspect template yields; the real engine: tests/real/
test_two_stacks.py."""

from __future__ import annotations

import shlex
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.infra.render.test_host_scripts import run
from vllm_endpoint.infra.catalog.names import ENDPOINT_TAG, PROJECT_TAG, STACK_TAG
from vllm_endpoint.infra.plan.deployment import build_plan
from vllm_endpoint.infra.plan.spec import Owner, owned_by
from vllm_endpoint.infra.render.container import plan_docker_run
from vllm_endpoint.infra.render.host_scripts import (
    HostClaims,
    existing_host_prepare_script,
    host_claims,
    host_claims_script,
)
from vllm_endpoint.infra.render.proxy import proxy_spec
from vllm_endpoint.infra.settings.models import load_stack_config

ADDRESS = "10.0.0.5"
ME = Owner("vllm-endpoint", "dev", "vllm")
OURS = HostClaims(ME, ADDRESS, 30005, "all", ("vllm", "vllm-proxy"))
PROD_CHAT = ("vllm-endpoint", "prod", "chat")


def inspect_line(name: str, labels: tuple[str, str, str] | None = None, *, state: str = "running",
                 ports: str = "", requests: str = "", runtime: str = "runc", visible: str = "") -> str:
    """One container as the check's `docker inspect` template prints it (name with Docker's leading /)."""
    project, stack, endpoint = labels or ("", "", "")
    return "\x1f".join([f"/{name}", state, project, stack, endpoint, ports, requests, runtime, visible])


@pytest.fixture
def docker_bin(tmp_path: Path) -> Path:
    """A `docker` that lists the containers in `containers` (one inspect line each) and records its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "containers").write_text("")
    (bin_dir / "docker").write_text(f"""#!/bin/sh
printf '%s\\n' "$*" >>{tmp_path}/calls
case "$1" in
  info) exit 0 ;;
  ps) [ -s {tmp_path}/containers ] && awk '{{print "id" NR}}' {tmp_path}/containers; exit 0 ;;
  inspect) cat {tmp_path}/containers ;;
  *) exit 64 ;;
esac
""")
    (bin_dir / "docker").chmod(0o755)
    return bin_dir


def check(docker_bin: Path, *lines: str, claims: HostClaims = OURS) -> subprocess.CompletedProcess[str]:
    (docker_bin.parent / "containers").write_text("".join(line + "\n" for line in lines))
    return run(host_claims_script(claims), path_dirs=(docker_bin,))


def test_a_port_held_by_another_stack_names_the_setting_the_container_and_its_stack(docker_bin: Path) -> None:
    proc = check(docker_bin, inspect_line("vllm-endpoint-chat-proxy", PROD_CHAT, ports="30005 30005 30005 "))
    assert proc.returncode == 1
    assert proc.stderr == ("apiPort 30005 on 10.0.0.5 is held by container vllm-endpoint-chat-proxy (stack prod, "
                           "endpoint chat); pick another apiPort or destroy that stack\n")


def test_the_stacks_own_containers_holding_its_port_and_gpus_pass_a_redeploy(docker_bin: Path) -> None:
    mine = ("vllm-endpoint", "dev", "vllm")
    proc = check(docker_bin, inspect_line("vllm-proxy", mine, ports="30005 "),
                 inspect_line("vllm", mine, requests="all "),
                 # Another endpoint of the same stack: the program checks its own endpoints against each other.
                 inspect_line("other", ("vllm-endpoint", "dev", "other"), ports="30005 "))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "host claims: apiPort 30005 and gpus all free on 10.0.0.5 for stack dev, endpoint vllm\n"


def test_unlabelled_containers_with_the_endpoints_names_are_its_own_from_an_earlier_release(docker_bin: Path) -> None:
    proc = check(docker_bin, inspect_line("vllm-proxy", ports="30005 "), inspect_line("vllm", requests="all "))
    assert proc.returncode == 0, proc.stderr


def test_any_other_container_holding_the_port_is_named(docker_bin: Path) -> None:
    proc = check(docker_bin, inspect_line("hand-started", ports="30005 "),
                 inspect_line("other-project", ("another", "prod", "chat"), ports="30005 "))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "apiPort 30005 on 10.0.0.5 is held by container hand-started (not deployed by a stack of this program); "
        "pick another apiPort or destroy that stack",
        "apiPort 30005 on 10.0.0.5 is held by container other-project (project another, stack prod, endpoint chat); "
        "pick another apiPort or destroy that stack",
    ]


@pytest.mark.parametrize("state", ["exited", "created", "dead"])
def test_a_stopped_container_holds_nothing(docker_bin: Path, state: str) -> None:
    proc = check(docker_bin, inspect_line("old", PROD_CHAT, state=state, ports="30005 ", requests="all "))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("ours", "line", "shared"), [
    ("all", inspect_line("chat", PROD_CHAT, requests="1 "), "1"),
    ("0,1", inspect_line("chat", PROD_CHAT, requests="all "), "all"),
    ("0,1", inspect_line("chat", PROD_CHAT, requests="1,2 "), "1"),
    ("0,1", inspect_line("chat", PROD_CHAT, requests="3 1 "), "1"),
    # The NVIDIA runtime selecting devices by environment, as this program does for a device list.
    ("1", inspect_line("chat", PROD_CHAT, runtime="nvidia", visible="1,2"), "1"),
    ("1", inspect_line("chat", PROD_CHAT, runtime="nvidia", visible="all"), "all"),
    ("0", inspect_line("chat", PROD_CHAT, runtime="nvidia", visible="0", state="restarting"), "0"),
])
def test_a_gpu_another_stack_holds_names_gpus_and_the_holder(docker_bin: Path, ours: str, line: str,
                                                              shared: str) -> None:
    proc = check(docker_bin, line, claims=HostClaims(ME, ADDRESS, 30005, ours, ("vllm", "vllm-proxy")))
    assert proc.returncode == 1
    assert proc.stderr == (f"gpus {ours} on 10.0.0.5: GPU {shared} is held by container chat (stack prod, endpoint "
                           "chat); pick other gpus or destroy that stack\n")


@pytest.mark.parametrize(("ours", "line"), [
    ("0", inspect_line("chat", PROD_CHAT, requests="1 ")),
    ("", inspect_line("chat", PROD_CHAT, requests="all ")),  # a CPU endpoint asks for no GPU
    ("0", inspect_line("chat", PROD_CHAT, runtime="nvidia", visible="void")),
    ("0", inspect_line("chat", PROD_CHAT, runtime="runc", visible="0")),  # without the runtime the env does nothing
])
def test_other_gpus_or_none_pass(docker_bin: Path, ours: str, line: str) -> None:
    proc = check(docker_bin, line, claims=HostClaims(ME, ADDRESS, 30005, ours, ("vllm", "vllm-proxy")))
    assert proc.returncode == 0, proc.stderr


def test_a_container_of_another_stack_with_the_endpoints_name_is_refused(docker_bin: Path) -> None:
    proc = check(docker_bin, inspect_line("vllm", ("vllm-endpoint", "prod", "vllm"), state="exited"))
    assert proc.returncode == 1
    assert proc.stderr == ("name: a container named vllm is already on 10.0.0.5: container vllm (stack prod, "
                           "endpoint vllm); this stack's endpoint vllm would replace it: destroy that stack or "
                           "deploy this one to another host\n")


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_port_a_process_listens_on_is_refused(docker_bin: Path, listener: int) -> None:
    claims = HostClaims(ME, ADDRESS, listener, "", ("vllm", "vllm-proxy"))
    proc = check(docker_bin, claims=claims)
    assert proc.returncode == 1
    assert proc.stderr == (f"apiPort {listener} on 10.0.0.5 is held by a process that is not a container (ss lists a "
                           "listening socket on it); pick another apiPort or stop that process\n")
    # The stack's own proxy publishing the port is the listener a re-deploy finds: not a stranger.
    own = check(docker_bin, inspect_line("vllm-proxy", ("vllm-endpoint", "dev", "vllm"), ports=f"{listener} "),
                claims=claims)
    assert own.returncode == 0, own.stderr


def test_a_docker_that_cannot_be_reached_fails_the_check(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    (bin_dir / "docker").chmod(0o755)
    proc = run(host_claims_script(OURS), path_dirs=(bin_dir,))
    assert proc.returncode == 1 and "Cannot connect to the Docker daemon" in proc.stderr


def test_the_existing_host_preparation_runs_the_check_before_any_container(docker_bin: Path, tmp_path: Path) -> None:
    (tmp_path / "containers").write_text(inspect_line("chat-proxy", PROD_CHAT, ports="30005 ") + "\n")
    me = subprocess.run(["id", "-u"], capture_output=True, text=True, check=True).stdout.strip()
    group = subprocess.run(["id", "-g"], capture_output=True, text=True, check=True).stdout.strip()
    refused = run(existing_host_prepare_script(str(tmp_path / "c"), False, f"{me}:{group}", OURS, open_files=1024),
                  path_dirs=(docker_bin,))
    assert refused.returncode == 1
    assert "apiPort 30005 on 10.0.0.5 is held by container chat-proxy (stack prod, endpoint chat)" in refused.stderr
    (tmp_path / "calls").unlink()
    unchecked = run(existing_host_prepare_script(str(tmp_path / "d"), False, f"{me}:{group}", open_files=1024),
                    path_dirs=(docker_bin,))
    assert unchecked.returncode == 0, unchecked.stderr
    assert (tmp_path / "calls").read_text() == "info\n"  # without claims the preparation asks nothing more


HOST = {"target": "existing-host", "hostAddress": ADDRESS, "hostSshUser": "u", "hostPublicKey": "ssh-ed25519 AAAA",
        "sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n",
        "model": "Qwen/Qwen2.5-1.5B-Instruct", "apiPort": "30007"}


@pytest.mark.parametrize(("gpus", "expected"), [("all", "all"), ("1", "1"), ("0,2", "0,2")])
def test_the_claims_come_from_the_plan(gpus: str, expected: str) -> None:
    plan = build_plan(load_stack_config({**HOST, "gpus": gpus, **({"hostGpuCount": "2"} if gpus == "all" else {})}),
                      "chat", hub_fetcher=None)
    claims = host_claims(plan, Owner("p", "prod", "chat"), ADDRESS)
    assert claims == HostClaims(Owner("p", "prod", "chat"), ADDRESS, 30007, expected, plan.names.containers)


def test_the_deployed_containers_carry_the_labels_the_check_reads_once_each() -> None:
    plan = build_plan(load_stack_config({**HOST, "gpus": "1"}), "chat", hub_fetcher=None)
    owner = Owner("p", "prod", "chat")
    script = host_claims_script(host_claims(plan, owner, ADDRESS))
    for spec in (owned_by(plan.vllm, owner), owned_by(proxy_spec(plan), owner)):
        labels = dict(spec.labels)
        assert len(labels) == len(spec.labels)  # each key once, though the plan already set the endpoint's
        assert {key: labels[key] for key in (PROJECT_TAG, STACK_TAG, ENDPOINT_TAG)} == {
            PROJECT_TAG: "p", STACK_TAG: "prod", ENDPOINT_TAG: "chat"}
    for param, key in (("PROJECT_LABEL", PROJECT_TAG), ("STACK_LABEL", STACK_TAG), ("ENDPOINT_LABEL", ENDPOINT_TAG)):
        assert f"export {param}={shlex.quote(key)}\n" in script
    # The `docker_run` output shows them as they run.
    docker_run = plan_docker_run(plan, owner)
    assert docker_run.count(f"--label {STACK_TAG}=prod") == 2 and STACK_TAG not in plan_docker_run(plan)
