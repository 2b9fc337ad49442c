"""target=local: what the plan takes from the deploying machine, and what it refuses."""

from __future__ import annotations

import pytest

from vllm_endpoint.infra.plan.deployment import DeploymentPlan, build_plan
from vllm_endpoint.infra.plan.local_machine import LocalGpu, LocalMachine, parse_nvidia_smi, probe_local_machine
from vllm_endpoint.infra.settings.models import ConfigError, load_stack_config

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm5xk0pJl1ZkZ4bH2v0b3dJq5s0aQy7Ff2k0Vd7J8yO"
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n"
NO_GPU = LocalMachine(home="/home/ana", user="1001:1002", gpus=(), gpu_probe_note="no nvidia-smi on this machine")
TWO_H100 = LocalMachine(home="/home/ana", user="1001:1002",
                        gpus=(LocalGpu("NVIDIA H100 80GB HBM3", 79.65, "9.0"),) * 2)


def plan(machine: LocalMachine, **settings: str) -> DeploymentPlan:
    return build_plan(load_stack_config({"target": "local", "model": "Qwen/Qwen2.5-0.5B-Instruct", **settings}),
                      hub_fetcher=None, machine_probe=lambda: machine)


def test_nvidia_smi_lines_become_gpus_in_gib() -> None:
    text = "NVIDIA H100 80GB HBM3, 81559, 9.0\nNVIDIA L4, 23034, 8.9\n"
    assert parse_nvidia_smi(text) == (LocalGpu("NVIDIA H100 80GB HBM3", 79.65, "9.0"),
                                      LocalGpu("NVIDIA L4", 22.49, "8.9"))
    with pytest.raises(ValueError, match="unexpected nvidia-smi line"):
        parse_nvidia_smi("NVIDIA L4, 23034\n")


def test_a_machine_without_nvidia_smi_has_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    machine = probe_local_machine()
    assert machine.gpus == () and machine.gpu_probe_note == "no nvidia-smi on this machine"
    assert machine.home.startswith("/") and machine.user.count(":") == 1


def test_without_a_gpu_the_cpu_image_runs_as_this_user_in_this_home() -> None:
    p = plan(NO_GPU)
    assert p.image_ref == "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.32.0"
    assert p.vllm.gpus is None and p.vllm.runtime is None
    assert ("VLLM_CPU_KVCACHE_SPACE", "4") in p.vllm.env
    assert not [k for k, _ in p.vllm.env if k == "NVIDIA_VISIBLE_DEVICES"]
    assert p.host_cache_dir == "/home/ana/.cache/vllm-endpoint/vllm"
    assert p.vllm.user == "1001:1002" and p.fit is None
    assert any("on the CPU (no nvidia-smi on this machine)" in w for w in p.warnings)
    assert [(m.host_ip, m.host_port) for m in p.proxy.ports] == [("127.0.0.1", 30005)]


def test_settings_win_over_the_machines_defaults() -> None:
    p = plan(NO_GPU, hostCacheDir="~/models-cache", containerUser="1000:1000", localCpuKvCacheGib="16",
             image="registry.internal/vllm-cpu")
    assert p.host_cache_dir == "/home/ana/models-cache/vllm"
    assert p.vllm.user == "1000:1000" and ("VLLM_CPU_KVCACHE_SPACE", "16") in p.vllm.env
    assert p.image_ref == "registry.internal/vllm-cpu:v0.32.0"


def test_on_this_machines_gpus_the_fit_uses_what_nvidia_smi_reports() -> None:
    p = plan(TWO_H100, gpus="all")
    assert p.image_ref == "vllm/vllm-openai:v0.32.0" and p.vllm.gpus == "all"
    assert p.tensor_parallel_size == 2
    assert p.fit is not None and "2x unlisted GPU (79.65 GiB" in p.summary


def test_a_gpu_asked_for_on_a_machine_without_one_is_refused_before_anything_runs() -> None:
    with pytest.raises(ConfigError, match=r"localDevice: gpu, but this machine shows no NVIDIA GPU "
                                          r"\(no nvidia-smi on this machine\); set localDevice to cpu"):
        plan(NO_GPU, localDevice="gpu")


def test_local_refuses_the_ssh_settings_and_existing_host_refuses_a_home_path() -> None:
    with pytest.raises(ConfigError) as err:
        load_stack_config({"target": "local", "hostAddress": "10.0.0.5", "hostSshPort": "2222"})
    assert err.value.problems == [
        "hostAddress: has no effect with target=local (this machine's Docker engine, no SSH); remove it",
        "hostSshPort: has no effect with target=local (this machine's Docker engine, no SSH); remove it",
    ]
    existing = {"target": "existing-host", "hostAddress": "10.0.0.5", "hostSshUser": "deploy",
                "hostPublicKey": HOST_KEY, "sshPrivateKey": PRIVATE_KEY}
    with pytest.raises(ConfigError, match=r"hostCacheDir: ~/cache is relative to a home; give the absolute path"):
        load_stack_config({**existing, "hostCacheDir": "~/cache"})
    with pytest.raises(ConfigError, match=r"localDevice: has no effect with target=existing-host"):
        load_stack_config({"target": "existing-host", "localDevice": "cpu"})


def test_on_a_gpu_the_api_servers_follow_this_machines_cpus_on_the_cpu_one_serves() -> None:
    # Two H100s: tensor parallel 2 takes 3 cores (two workers and the scheduler), the proxy 1.
    gpu_box = plan(LocalMachine(TWO_H100.home, TWO_H100.user, TWO_H100.gpus, cpus=16))
    assert gpu_box.api_servers is not None and gpu_box.api_servers.count == 4
    assert "the host's 16 vCPUs (hostCpuCount)" in gpu_box.api_servers.why
    assert plan(LocalMachine(TWO_H100.home, TWO_H100.user, TWO_H100.gpus, cpus=16), hostCpuCount="8") \
        .api_servers == gpu_box.api_servers.__class__(1, gpu_box.api_servers.why.replace("16", "8"))
    # vLLM's CPU build uses every core for the engine.
    cpu_box = plan(LocalMachine(NO_GPU.home, NO_GPU.user, (), NO_GPU.gpu_probe_note, cpus=16))
    assert cpu_box.api_servers is not None and cpu_box.api_servers.count == 1
    assert "API servers: 1 (vLLM's CPU build: its engine uses every core)" in cpu_box.summary


def test_the_probe_counts_this_machines_cpus() -> None:
    assert probe_local_machine().cpus >= 1
