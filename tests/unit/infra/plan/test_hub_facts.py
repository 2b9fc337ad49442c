"""Any Hub model gets the fit check: build_plan with a fake Hub fetcher (no network), and the real
fetcher's offline and unreachable paths (loopback only)."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.unit.model_folders import write_model_folder
from vllm_endpoint.infra.catalog.models import architecture_from_config
from vllm_endpoint.infra.plan.deployment import DeploymentPlan, build_plan
from vllm_endpoint.infra.plan.hub_facts import (
    PARAMS_FROM_HUB_METADATA,
    HubFacts,
    HubQuery,
    HubRefused,
    HubUnavailable,
    fetch_hub_facts,
)
from vllm_endpoint.infra.settings.models import ConfigError, load_stack_config

AWS = {"sshAllowedCidrs": "10.20.30.40/32", "apiAllowedCidrs": "10.20.0.0/16"}
TOKEN = "hf_" + "s3cr3t" * 6
COMMIT = "0123456789abcdef0123456789abcdef01234567"
UNKNOWN = "someorg/Llama-3.3-70B-Instruct-copy"
# Llama-3.3-70B-Instruct's config.json values (huggingface.co/meta-llama/Llama-3.3-70B-Instruct).
LLAMA_70B: dict[str, Any] = {
    "model_type": "llama", "num_hidden_layers": 80, "hidden_size": 8192, "num_attention_heads": 64,
    "num_key_value_heads": 8, "intermediate_size": 28672, "vocab_size": 128256, "max_position_embeddings": 131072,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192},
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
LLAMA_70B_PARAMS = 70_553_706_496
# Qwen2.5-0.5B's shapes under a name the shipped table does not have.
SMALL: dict[str, Any] = {
    "model_type": "qwen2", "num_hidden_layers": 24, "hidden_size": 896, "num_attention_heads": 14,
    "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936, "max_position_embeddings": 32768,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16",
}
SMALL_PARAMS = 494_032_768


class FakeHub:
    """Answers like the real fetcher, records what it was asked."""

    def __init__(self, config: dict[str, Any] | None = None, params: int = 0, error: Exception | None = None,
                 weight_bytes: int | None = None) -> None:
        self.config, self.params, self.error, self.weight_bytes = config, params, error, weight_bytes
        self.queries: list[HubQuery] = []

    def __call__(self, query: HubQuery) -> HubFacts:
        self.queries.append(query)
        if self.error is not None:
            raise self.error
        assert self.config is not None
        arch = architecture_from_config(self.config, name=query.repo_id, source="fake")
        arch = replace(arch, parameter_count=self.params, parameter_count_source=PARAMS_FROM_HUB_METADATA)
        weights = self.weight_bytes if self.weight_bytes is not None else self.params * 2
        return HubFacts(arch, COMMIT, weights, {"BF16": self.params})


def plan(hub: FakeHub, **raw: str) -> DeploymentPlan:
    return build_plan(load_stack_config({**AWS, **raw}), hub_fetcher=hub)


def problems(hub: FakeHub, **raw: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        plan(hub, **raw)
    return info.value.problems


def test_an_unlisted_70b_model_on_one_48gb_gpu_is_refused_before_anything_is_paid_for() -> None:
    hub = FakeHub(LLAMA_70B, LLAMA_70B_PARAMS)
    found = problems(hub, model=UNKNOWN, instanceType="g6e.xlarge", cacheVolumeSizeGb="500")
    assert any(p.startswith(f"{UNKNOWN} bfloat16 does not fit on 1x L40S") for p in found), found
    assert any("weights 131.4 GiB" in p for p in found)


def test_weights_larger_than_the_cache_volume_say_which_setting_to_raise() -> None:
    hub = FakeHub(LLAMA_70B, LLAMA_70B_PARAMS)
    found = problems(hub, model=UNKNOWN, instanceType="p4de.24xlarge", cacheVolumeSizeGb="100")
    assert ("cacheVolumeSizeGb: the model's weights need 131.4 GiB; the cache volume is 100 GiB: "
            "raise cacheVolumeSizeGb (e.g. to 160)") in found, found
    # With room for the weights, the same plan passes (8x A100 80 GB hold a 70B model).
    p = plan(hub, model=UNKNOWN, instanceType="p4de.24xlarge", cacheVolumeSizeGb="200")
    assert p.fit is not None and p.fit.fits


def test_the_plan_names_the_hub_revision_the_architecture_came_from() -> None:
    hub = FakeHub(SMALL, SMALL_PARAMS)
    p = plan(hub, model="someorg/tiny-qwen", modelRevision="v1.0", hfToken=TOKEN)
    assert p.fit is not None and p.fit.fits and p.fit.model == "someorg/tiny-qwen"
    assert "architecture: Hub config.json at 0123456789ab; weights 942.3 MiB (BF16 494.0M parameters)" in p.summary
    assert not any("fit not checked" in w for w in p.warnings)
    assert hub.queries == [HubQuery("someorg/tiny-qwen", "v1.0", TOKEN)]


def test_the_hub_answer_replaces_the_shipped_table_for_a_listed_model() -> None:
    # The table says 0.49B; a (hypothetical) re-upload at the pinned revision says otherwise: the Hub wins.
    hub = FakeHub(SMALL, SMALL_PARAMS * 2)
    p = plan(hub, model="Qwen/Qwen2.5-0.5B-Instruct")
    assert p.fit is not None and p.fit.weights_bytes > 1.5 * 2**30
    assert "Hub config.json at" in p.summary


def test_when_the_hub_does_not_answer_a_listed_model_falls_back_to_the_shipped_table() -> None:
    hub = FakeHub(error=HubUnavailable("https://huggingface.co did not answer within 10 s"))
    p = plan(hub, model="Qwen/Qwen2.5-1.5B-Instruct")
    assert p.fit is not None and p.fit.fits
    assert ("architecture: shipped table (Hub not used: https://huggingface.co did not answer within 10 s); "
            "weights about 2.9 GiB") in p.summary


def test_when_the_hub_does_not_answer_an_unlisted_model_is_planned_with_a_warning() -> None:
    hub = FakeHub(error=HubUnavailable("HF_HUB_OFFLINE is set"))
    p = plan(hub, model=UNKNOWN, instanceType="g6e.xlarge")
    assert p.fit is None
    assert "architecture: unknown (Hub not used: HF_HUB_OFFLINE is set)" in p.summary
    assert any("GPU memory fit not checked" in w and "modelArchitecture" in w for w in p.warnings)


def test_a_fetcher_that_breaks_does_not_break_the_plan_nor_leak_the_token() -> None:
    hub = FakeHub(error=RuntimeError(f"boom with Authorization: Bearer {TOKEN}"))
    p = plan(hub, model="Qwen/Qwen2.5-1.5B-Instruct", hfToken=TOKEN)
    assert "shipped table (Hub not used: boom with Authorization: Bearer <hfToken>)" in p.summary
    assert TOKEN not in p.summary and TOKEN not in repr(p.model_facts)


def test_a_refusal_from_the_hub_is_a_problem_and_never_shows_the_token() -> None:
    hub = FakeHub(error=HubRefused(f"model: {UNKNOWN} is gated on the Hub and hfToken {TOKEN} has no access"))
    found = problems(hub, model=UNKNOWN, hfToken=TOKEN)
    assert any(p.startswith(f"model: {UNKNOWN} is gated on the Hub") for p in found), found
    assert not any(TOKEN in p for p in found)


def test_model_architecture_is_the_users_word_and_the_hub_is_not_asked() -> None:
    hub = FakeHub(LLAMA_70B, LLAMA_70B_PARAMS)
    arch = '{"model_type": "qwen2", "num_hidden_layers": 24, "hidden_size": 896, "num_attention_heads": 14, ' \
           '"num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936, ' \
           '"max_position_embeddings": 32768, "torch_dtype": "bfloat16"}'
    p = plan(hub, model=UNKNOWN, modelArchitecture=arch)
    assert hub.queries == []
    assert p.fit is not None and p.fit.fits
    assert "architecture: modelArchitecture setting; weights about" in p.summary


def test_an_existing_host_without_a_gpu_model_asks_the_hub_only_for_the_room_its_weights_need() -> None:
    hub = FakeHub(SMALL, SMALL_PARAMS, weight_bytes=7 * 10**9)
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n"
    p = build_plan(load_stack_config({"target": "existing-host", "hostAddress": "10.0.0.5", "hostSshUser": "u",
                                      "hostPublicKey": "ssh-ed25519 AAAA", "sshPrivateKey": key,
                                      "model": UNKNOWN}), hub_fetcher=hub)
    assert len(hub.queries) == 1 and p.fit is None
    # No GPU to fit it on, but a disk to download it to (check-model-room.sh on the host).
    assert p.model_room is not None and p.model_room.weight_bytes == 7 * 10**9 and not p.model_room.estimated


def test_the_weights_check_applies_to_the_aws_cache_volume_only() -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n"
    hub = FakeHub(SMALL, SMALL_PARAMS, weight_bytes=10**13)
    p = build_plan(load_stack_config({"target": "existing-host", "hostAddress": "10.0.0.5", "hostSshUser": "u",
                                      "hostPublicKey": "ssh-ed25519 AAAA", "sshPrivateKey": key,
                                      "hostGpuModel": "L4", "hostGpuCount": "1", "model": UNKNOWN}), hub_fetcher=hub)
    assert p.fit is not None and "Hub config.json" in p.summary


def test_a_local_model_folder_or_a_path_in_a_custom_image_is_not_looked_up_on_the_hub(tmp_path: Path) -> None:
    hub = FakeHub(LLAMA_70B, LLAMA_70B_PARAMS)
    p = plan(hub, modelPath=str(write_model_folder(tmp_path)))
    assert p.fit is not None and p.fit.fits and p.model_facts is None
    p = plan(hub, model="/app/model", image="registry.example.com/me/vllm-with-model", imageTag="v0.32.0")
    assert hub.queries == [] and p.fit is None


def test_a_model_the_fit_check_does_not_model_still_has_its_weights_checked_against_the_volume() -> None:
    class MoeHub(FakeHub):
        def __call__(self, query: HubQuery) -> HubFacts:
            self.queries.append(query)
            return HubFacts(None, COMMIT, 240 * 2**30, {"BF16": 120 * 10**9},
                            note="a mixture-of-experts config (num_local_experts); the fit check supports dense "
                                 "decoder-only models")

    found = problems(MoeHub(), model=UNKNOWN, instanceType="p5.48xlarge", cacheVolumeSizeGb="200")
    assert ("cacheVolumeSizeGb: the model's weights need 240.0 GiB; the cache volume is 200 GiB: "
            "raise cacheVolumeSizeGb (e.g. to 280)") in found, found
    p = plan(MoeHub(), model=UNKNOWN, instanceType="p5.48xlarge", cacheVolumeSizeGb="300")
    assert p.fit is None
    assert ("architecture: unknown (not modelled: Hub config.json at 0123456789ab); weights 240.0 GiB "
            "(BF16 120.00B parameters); a mixture-of-experts config") in p.summary, p.summary
    assert any("GPU memory fit not checked" in w for w in p.warnings)


def test_the_query_keeps_the_token_out_of_its_repr() -> None:
    assert TOKEN not in repr(HubQuery("a/b", None, TOKEN))


def test_the_real_fetcher_honours_hf_hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailable, match="HF_HUB_OFFLINE"):
        fetch_hub_facts(HubQuery("Qwen/Qwen2.5-1.5B-Instruct"))


def test_the_real_fetcher_reports_an_unreachable_hub_without_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    # huggingface_hub reads both at its import, which an earlier test may have done; its own side
    # requests (the agent-harness registry) go to its import-time endpoint.
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(HubUnavailable) as info:
        fetch_hub_facts(HubQuery("someorg/model", None, TOKEN), timeout_s=2)
    assert f"127.0.0.1:{port}" in str(info.value) and TOKEN not in str(info.value)
