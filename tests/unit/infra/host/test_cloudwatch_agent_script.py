"""infra/host/cloudwatch-agent.sh run for real against stand-ins: a package server (a file URL), an
`apt-get` that installs the agent's control script, a `docker` that reports the vLLM container's address,
and a control script that records how it was called. And the deploy's step (cloudwatch-agent-apply.sh) with
stand-ins for sudo and systemctl: the files it writes, and the latency percentiles' timer it enables."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vllm_endpoint.infra.catalog.names import LATENCY_TIMER_NAME
from vllm_endpoint.infra.render.cloudwatch_agent import (
    AgentInputs,
    agent_apply_script,
    render_agent_config,
    render_latency_env_file,
    render_scrape_config,
)
from vllm_endpoint.infra.render.host_scripts import read_host_file
from vllm_endpoint.infra.render.latency import latency_script, latency_service_unit, latency_timer_unit
from vllm_endpoint.infra.render.userdata import shipped_script

SCRIPT = "cloudwatch-agent.sh"


def _executable(path: Path, text: str) -> Path:
    path.write_text("#!/usr/bin/env bash\n" + text)
    path.chmod(0o755)
    return path


@pytest.fixture
def host(tmp_path: Path) -> dict[str, str]:
    """The script's environment: every path below tmp_path, every tool a stand-in on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ctl = tmp_path / "agent" / "bin" / "amazon-cloudwatch-agent-ctl"
    calls = tmp_path / "calls"
    # apt-get "installs" the package: it checks it got the downloaded file, then puts the control script there.
    _executable(bin_dir / "apt-get", f'''
deb=${{*: -1}}
grep -q "a deb" "$deb" || exit 1
echo "apt-get $*" >>{calls}
mkdir -p {ctl.parent}
printf '#!/usr/bin/env bash\\necho "ctl $*" >>{calls}\\n' >{ctl}
chmod +x {ctl}
''')
    _executable(bin_dir / "docker", f'''
case $1 in
  ps) echo c0ffee ;;
  inspect) cat {tmp_path / "address"} ;;
esac
''')
    package = tmp_path / "amazon-cloudwatch-agent.deb"
    package.write_text("a deb\n")
    (tmp_path / "address").write_text("172.18.0.2\n")
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "AGENT_CTL": str(ctl),
        "AGENT_CONFIG_FILE": str(tmp_path / "agent.json"),
        "SCRAPE_CONFIG_FILE": str(tmp_path / "scrape.yaml"),
        "VLLM_LABEL": "vllm-endpoint:role=vllm",
        "VLLM_PORT": "8000",
        "AGENT_PACKAGE_URL": package.as_uri(),
        "AGENT_RETRY_DELAY": "0",
        "AGENT_WAIT_SECONDS": "2",
        "AGENT_LOCK": str(tmp_path / "lock"),
        "TMPDIR": str(tmp_path),
        "CALLS": str(calls),
    }


def run(env: dict[str, str], tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    # The script as user-data ships it (comments stripped).
    script = _executable(tmp_path / SCRIPT, shipped_script(SCRIPT).split("\n", 1)[1])
    return subprocess.run([str(script), mode], env=env, capture_output=True, text=True, timeout=60)


def calls(env: dict[str, str]) -> list[str]:
    path = Path(env["CALLS"])
    return path.read_text().splitlines() if path.exists() else []


def test_install_fetches_the_package_once_and_says_so(host: dict[str, str], tmp_path: Path) -> None:
    first = run(host, tmp_path, "install")
    assert first.returncode == 0, first.stderr
    assert f"vllm-endpoint-cloudwatch-agent: installing the CloudWatch agent from {host['AGENT_PACKAGE_URL']}" \
        in first.stdout
    assert f"installed: {host['AGENT_CTL']}" in first.stdout
    second = run(host, tmp_path, "install")
    assert second.returncode == 0 and second.stdout == "", "present: nothing is downloaded again"
    assert len([c for c in calls(host) if c.startswith("apt-get")]) == 1


def test_a_failing_download_is_retried_then_reported(host: dict[str, str], tmp_path: Path) -> None:
    proc = run({**host, "AGENT_PACKAGE_URL": (tmp_path / "missing.deb").as_uri()}, tmp_path, "install")
    assert proc.returncode == 1
    assert "(attempt 5)" in proc.stdout
    assert "could not be installed from" in proc.stdout
    assert not calls(host)


def test_boot_before_any_deploy_installs_and_leaves_the_configuration_to_the_deploy(
        host: dict[str, str], tmp_path: Path) -> None:
    proc = run(host, tmp_path, "boot")
    assert proc.returncode == 0, proc.stderr
    assert "not configured yet" in proc.stdout
    assert not [c for c in calls(host) if c.startswith("ctl")]


def test_boot_points_the_scrape_at_the_containers_new_address(host: dict[str, str], tmp_path: Path) -> None:
    scrape = Path(host["SCRAPE_CONFIG_FILE"])
    scrape.write_text(render_scrape_config(AgentInputs("dev", "NS", "172.18.0.2")))
    (tmp_path / "address").write_text("172.18.0.3\n")  # the boot started the proxy first
    proc = run(host, tmp_path, "boot")
    assert proc.returncode == 0, proc.stderr
    assert scrape.read_text() == render_scrape_config(AgentInputs("dev", "NS", "172.18.0.3"))
    assert f"ctl -a fetch-config -m ec2 -s -c file:{host['AGENT_CONFIG_FILE']}" in calls(host)
    # Unchanged address: the agent is left running as it is.
    again = run(host, tmp_path, "retarget")
    assert "as configured" in again.stdout
    assert len([c for c in calls(host) if c.startswith("ctl")]) == 1


def test_without_a_running_vllm_container_the_target_stays(host: dict[str, str], tmp_path: Path) -> None:
    scrape = Path(host["SCRAPE_CONFIG_FILE"])
    scrape.write_text(render_scrape_config(AgentInputs("dev", "NS", "172.18.0.2")))
    (tmp_path / "address").write_text("")
    proc = run(host, tmp_path, "retarget")
    assert proc.returncode == 0
    assert "no running vLLM container" in proc.stdout
    assert "172.18.0.2:8000" in scrape.read_text()


def test_boot_points_the_latency_percentiles_at_the_containers_new_address(
        host: dict[str, str], tmp_path: Path) -> None:
    scrape = Path(host["SCRAPE_CONFIG_FILE"])
    scrape.write_text(render_scrape_config(AgentInputs("dev", "NS", "172.18.0.2")))
    # Where the deploy writes it: next to boot.env (the script derives the path from BOOT_ENV_FILE).
    boot_env = tmp_path / "etc" / "boot.env"
    boot_env.parent.mkdir()
    boot_env.write_text("")
    latency_env = boot_env.parent / "vllm-latency.env"
    latency_env.write_text(render_latency_env_file(AgentInputs("dev", "NS", "172.18.0.2")))
    (tmp_path / "address").write_text("172.18.0.3\n")
    proc = run({**host, "BOOT_ENV_FILE": str(boot_env)}, tmp_path, "boot")
    assert proc.returncode == 0, proc.stderr
    assert latency_env.read_text() == render_latency_env_file(AgentInputs("dev", "NS", "172.18.0.3"))
    assert "latency percentiles now read vLLM at 172.18.0.3:8000" in proc.stdout
    # Already right (the scrape config too): nothing rewritten, nothing said.
    again = run({**host, "BOOT_ENV_FILE": str(boot_env)}, tmp_path, "retarget")
    assert "latency percentiles" not in again.stdout and "as configured" in again.stdout
    # An instance deployed before the latency percentiles existed has no such file: the retarget is as before.
    latency_env.unlink()
    (tmp_path / "address").write_text("172.18.0.4\n")
    assert run({**host, "BOOT_ENV_FILE": str(boot_env)}, tmp_path, "retarget").returncode == 0
    assert "172.18.0.4:8000" in scrape.read_text() and not latency_env.exists()


def _exports(command: str) -> dict[str, str]:
    """A host command's parameters, as its export lines set them."""
    exports = command.split("{ bash -c", 1)[0]
    proc = subprocess.run(["sh", "-c", exports + "env -0"], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin"})
    names = {line.split("=", 1)[0].removeprefix("export ") for line in exports.splitlines()
             if line.startswith("export ")}
    return {k: v for k, v in (item.split("=", 1) for item in proc.stdout.split("\0") if "=" in item) if k in names}


def test_the_deploys_step_writes_the_agent_and_latency_files_and_enables_the_timer(tmp_path: Path) -> None:
    inputs = AgentInputs("dev", "VllmEndpoint", "172.18.0.2")
    params = _exports(agent_apply_script(inputs))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    _executable(bin_dir / "sudo", 'exec "$@"\n')
    _executable(bin_dir / "systemctl", f'echo "systemctl $*" >>{calls}\n')
    agent_script = _executable(tmp_path / "cloudwatch-agent.sh", f'echo "agent-script $* $BOOT_ENV_FILE" >>{calls}\n')
    ctl = _executable(tmp_path / "ctl", f'echo "ctl $*" >>{calls}\n')
    files = {name: str(tmp_path / "root" / params[name].lstrip("/")) for name in params if name.endswith("_FILE")
             and name != "BOOT_ENV_FILE"}
    env = {**params, **files, "AGENT_SCRIPT": str(agent_script), "AGENT_CTL": str(ctl),
           "PATH": f"{bin_dir}:/usr/bin:/bin"}
    proc = subprocess.run(["bash", "-c", read_host_file("cloudwatch-agent-apply.sh"), "apply"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr

    def written(name: str) -> tuple[str, int]:
        path = Path(files[name])
        return path.read_text(), path.stat().st_mode & 0o777

    assert written("AGENT_CONFIG_FILE") == (render_agent_config(inputs), 0o644)
    assert written("SCRAPE_CONFIG_FILE") == (render_scrape_config(inputs), 0o644)
    assert written("LATENCY_SCRIPT_FILE") == (latency_script(), 0o755)
    assert written("LATENCY_ENV_FILE") == (render_latency_env_file(inputs), 0o644)
    assert written("LATENCY_SERVICE_FILE") == (latency_service_unit(), 0o644)
    assert written("LATENCY_TIMER_FILE") == (latency_timer_unit(), 0o644)
    assert Path(calls).read_text().splitlines() == [
        f"agent-script install {params['BOOT_ENV_FILE']}",
        f"ctl -a fetch-config -m ec2 -s -c file:{files['AGENT_CONFIG_FILE']}",
        "systemctl daemon-reload",
        f"systemctl enable {LATENCY_TIMER_NAME}",
        f"systemctl restart {LATENCY_TIMER_NAME}",
    ]
    assert f"latency percentiles every minute ({LATENCY_TIMER_NAME}" in proc.stdout
