"""Any Hub model gets the fit check: build_plan's real Hub fetcher (huggingface_hub) against the Hub
stand-in (tests/real/harness/fakehub.py) on 127.0.0.1, for models the shipped table does not know.

- the tiny model's real files: the plan names the Hub commit and counts the parameters from the
  safetensors headers read over HTTP range requests;
- a generated Llama-3.3-70B config with a header-only safetensors file (70.6B BF16 parameters
  declared, no data): on a g6e.xlarge it does not fit, and its weights do not fit the cache volume;
- a gated copy: with the token it plans, without it the plan says to set hfToken, and the token
  appears in no message.
"""

from __future__ import annotations

import functools
import json
import secrets
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real.harness.common import BUILD_DIR
from tests.real.harness.fakehub import FakeHub, FakeRepo
from vllm_endpoint.infra.catalog.models import KNOWN_MODELS, safetensors_parameter_count
from vllm_endpoint.infra.plan.deployment import DeploymentPlan, build_plan
from vllm_endpoint.infra.plan.hub_facts import HubFetcher, fetch_hub_facts
from vllm_endpoint.infra.settings.models import ConfigError, load_stack_config

pytestmark = pytest.mark.real

TINY, GATED, BIG = "fakeorg/tiny-unlisted", "fakeorg/tiny-gated-unlisted", "fakeorg/llama-70b-unlisted"
MOE = "fakeorg/moe-unlisted"
AWS = {"sshAllowedCidrs": "10.20.30.40/32", "apiAllowedCidrs": "10.20.0.0/16"}
LLAMA_70B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 80, "hidden_size": 8192,
    "num_attention_heads": 64, "num_key_value_heads": 8, "intermediate_size": 28672, "vocab_size": 128256,
    "max_position_embeddings": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192},
}
LLAMA_70B_PARAMS = 70_553_706_496


def header_only_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], int]]) -> None:
    """A safetensors file whose header declares `tensors` (name: dtype, shape, bytes per element) and
    that holds no data: the metadata read fetches the header only, as it does on the Hub."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape, size) in tensors.items():
        count = 1
        for d in shape:
            count *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + count * size]}
        offset += count * size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    path = BUILD_DIR / "hub-fit"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def token() -> str:
    return "hf_" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def hub(tiny_model: Path, work: Path, token: str) -> Iterator[FakeHub]:
    big = work / "big"
    big.mkdir()
    (big / "config.json").write_text(json.dumps(LLAMA_70B))
    # One tensor per shape class is enough for the count; sizes add up to the real model's.
    embed = 128256 * 8192
    header_only_safetensors(big / "model.safetensors", {
        "model.embed_tokens.weight": ("BF16", [128256, 8192], 2),
        "lm_head.weight": ("BF16", [128256, 8192], 2),
        "model.layers.weight": ("BF16", [LLAMA_70B_PARAMS - 2 * embed], 2),
    })
    moe = work / "moe"
    moe.mkdir()
    (moe / "config.json").write_text(json.dumps({**LLAMA_70B, "model_type": "mixtral", "num_local_experts": 8}))
    # Sharded, as large checkpoints are: the index, then one header per shard.
    shards = {"model-00001-of-00002.safetensors": "a", "model-00002-of-00002.safetensors": "b"}
    for shard, name in shards.items():
        header_only_safetensors(moe / shard, {name: ("BF16", [60 * 10**9], 2)})
    (moe / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 240 * 10**9}, "weight_map": {name: shard for shard, name in shards.items()}}))
    with FakeHub() as fake:
        fake.add_repo(TINY, tiny_model)
        fake.add_repo(MOE, moe)
        fake.add_repo(GATED, tiny_model, token=token)
        fake.add_repo(BIG, big)
        yield fake


@pytest.fixture()
def online(hub: FakeHub, work: Path, monkeypatch: pytest.MonkeyPatch) -> HubFetcher:
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    # huggingface_hub reads these at its import, which an earlier test may have done; its own side
    # requests (the agent-harness registry) go to its import-time endpoint, and nothing may leave the machine.
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.endpoint)
    # hf_hub_download builds its URL from this template (made from ENDPOINT at import) and swaps in its
    # `endpoint` argument only where the URL starts with ENDPOINT: patched alone, ENDPOINT would stop that swap
    # and send the download to huggingface.co (seen in CI, where an earlier module had imported the library).
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    # The deploying machine's own Hub cache, here a folder of the test's.
    return functools.partial(fetch_hub_facts, cache_dir=str(work / "hf-cache"))


def plan(fetcher: HubFetcher, **raw: str) -> DeploymentPlan:
    return build_plan(load_stack_config({**AWS, **raw}), hub_fetcher=fetcher)


def problems(fetcher: HubFetcher, **raw: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        plan(fetcher, **raw)
    return info.value.problems


def repo(hub: FakeHub, name: str) -> FakeRepo:
    return hub.repos[name]


def test_an_unlisted_hub_model_is_fit_checked_from_its_config_and_safetensors_headers(
        online: HubFetcher, hub: FakeHub, tiny_model: Path) -> None:
    assert TINY not in KNOWN_MODELS
    hub.reset_counters()
    p = plan(online, model=TINY, instanceType="g6.xlarge")
    assert p.fit is not None and p.fit.fits and p.fit.model == TINY
    commit = repo(hub, TINY).commit
    expected = safetensors_parameter_count(sorted(tiny_model.glob("*.safetensors")))
    line = f"architecture: Hub config.json at {commit[:12]}; weights "
    assert expected < 10**6  # the tiny model: its size in MiB, its count in full
    assert f"{line}{expected * 2 / 2**20:.1f} MiB (BF16 {expected:,} parameters)" in p.summary, p.summary
    assert not any("fit not checked" in w for w in p.warnings)
    assert p.model_facts is not None and sum(n for _, n in p.model_facts.parameters_by_dtype) == expected
    assert p.fit.weights_bytes == expected * 2  # bfloat16, from the counted parameters
    # The weights themselves were not downloaded: only config.json's bytes and the header ranges.
    sent = hub.reset_counters()
    weights = sum(f.stat().st_size for f in tiny_model.glob("*.safetensors"))
    assert sent.file_bytes < weights and any(r.range for r in sent.requests), sent.requests


def test_a_pinned_revision_is_read_at_that_revision(online: HubFetcher, hub: FakeHub) -> None:
    commit = repo(hub, TINY).commit
    p = plan(online, model=TINY, modelRevision=commit, instanceType="g6.xlarge")
    assert f"Hub config.json at {commit[:12]}" in p.summary
    assert "modelRevision: no-such-branch is not a revision of fakeorg/tiny-unlisted" in problems(
        online, model=TINY, modelRevision="no-such-branch", instanceType="g6.xlarge")


def test_llama_70b_on_one_48gb_gpu_and_a_small_cache_volume_is_refused_at_plan_time(online: HubFetcher) -> None:
    found = problems(online, model=BIG, instanceType="g6e.xlarge", cacheVolumeSizeGb="100")
    text = "\n".join(found)
    assert f"{BIG} bfloat16 does not fit on 1x L40S" in text, text
    assert ("cacheVolumeSizeGb: the model's weights need 131.4 GiB; the cache volume is 100 GiB: "
            "raise cacheVolumeSizeGb (e.g. to 160)") in found, found


def test_a_gated_model_plans_with_the_token_and_asks_for_it_without(
        online: HubFetcher, hub: FakeHub, token: str) -> None:
    hub.reset_counters()
    p = plan(online, model=GATED, hfToken=token, instanceType="g6.xlarge")
    assert p.fit is not None and p.fit.fits and "Hub config.json at" in p.summary
    assert any(r.authorized for r in hub.reset_counters().requests)
    found = problems(online, model=GATED, instanceType="g6.xlarge")
    assert any(f"model: {GATED} is gated on the Hub and no hfToken is set" in p for p in found), found
    wrong = "hf_" + secrets.token_hex(16)
    found = problems(online, model=GATED, hfToken=wrong, instanceType="g6.xlarge")
    assert f"hfToken: the Hub refused it for {GATED} (401 Unauthorized): set a valid token from " \
        "huggingface.co/settings/tokens" in found, found
    assert not any(wrong in p or token in p for p in found)
    assert token not in p.summary


def test_when_the_hub_is_gone_a_listed_model_falls_back_to_the_shipped_table(
        online: HubFetcher, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p = plan(online, model="Qwen/Qwen2.5-1.5B-Instruct", instanceType="g6.xlarge")
    assert "architecture: shipped table (Hub not used: HF_HUB_OFFLINE is set)" in p.summary


def test_a_sharded_model_the_fit_check_does_not_model_still_needs_room_on_the_cache_volume(
        online: HubFetcher, hub: FakeHub) -> None:
    found = problems(online, model=MOE, instanceType="p5.48xlarge", cacheVolumeSizeGb="200")
    assert ("cacheVolumeSizeGb: the model's weights need 223.5 GiB; the cache volume is 200 GiB: "
            "raise cacheVolumeSizeGb (e.g. to 260)") in found, found
    p = plan(online, model=MOE, instanceType="p5.48xlarge", cacheVolumeSizeGb="300")
    commit = repo(hub, MOE).commit
    assert (f"architecture: unknown (not modelled: Hub config.json at {commit[:12]}); weights 223.5 GiB "
            "(BF16 120.00B parameters); a mixture-of-experts config (num_local_experts)") in p.summary, p.summary
    assert p.fit is None and any("GPU memory fit not checked" in w for w in p.warnings)
