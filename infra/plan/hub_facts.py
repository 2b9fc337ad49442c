"""A Hub model's architecture and weight size, read at plan time from the Hugging Face Hub.

This is the plan layer's one piece of I/O, kept out of `build_plan` itself: build_plan takes the
fetcher as an argument, so tests hand it a fake, and everything the fit check needs comes back as a
plain `HubFacts`. The real fetcher reads `config.json` (`hf_hub_download`) and the safetensors headers
(`get_safetensors_metadata`: a range request per weight file, never the weights) through
`huggingface_hub`, imported only when a plan asks the Hub.

Failures come in two kinds. `HubRefused`: the Hub answered, and what it said will also stop vLLM on
the host (no such repo or revision, gated without access), so the plan reports it as a problem.
`HubUnavailable`: no answer worth trusting (offline, `HF_HUB_OFFLINE=1`, timeout); build_plan falls
back to the shipped table and says so. A config the fit check does not model (mixture of experts,
multimodal) comes back without an architecture but with its weights' size, which still has to fit
the cache volume.
The token goes to the Hub in a header only; every message is scrubbed of it anyway, because an
exception's text is out of our hands.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from vllm_endpoint.infra.catalog.models import ModelArchitecture, architecture_from_config

HUB_TIMEOUT_S: Final = 10.0
DEFAULT_ENDPOINT: Final = "https://huggingface.co"
PARAMS_FROM_HUB_METADATA: Final = "Hub safetensors metadata"
_OFFLINE_VALUES: Final = frozenset({"1", "on", "yes", "true"})


@dataclass(frozen=True)
class HubQuery:
    repo_id: str
    revision: str | None = None
    # The secret: repr=False keeps it out of any repr a traceback or log may print.
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class HubFacts:
    architecture: ModelArchitecture | None  # None: a config the fit check does not model (note says why)
    commit: str  # the commit the revision resolved to
    weight_bytes: int | None  # all safetensors tensors' bytes; None when the repo has no safetensors
    parameters_by_dtype: Mapping[str, int] = field(default_factory=dict)
    note: str = ""  # why the weights are unknown, when they are

    @property
    def source(self) -> str:
        return f"Hub config.json at {self.commit[:12]}"


class HubUnavailable(Exception):
    """No usable answer from the Hub; the plan falls back to the shipped facts."""


class HubRefused(Exception):
    """The Hub answered that the host will not get this model either (its message says what to set)."""


HubFetcher = Callable[[HubQuery], HubFacts]


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as huggingface_hub reads it, but at call time."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _OFFLINE_VALUES


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "<hfToken>") if token else text


def fetch_hub_facts(query: HubQuery, *, timeout_s: float = HUB_TIMEOUT_S, cache_dir: str | None = None) -> HubFacts:
    """The Hub's config.json and safetensors metadata of `query`, or HubUnavailable / HubRefused."""
    if hub_offline():
        raise HubUnavailable("HF_HUB_OFFLINE is set")
    try:
        return _fetch(query, timeout_s, cache_dir)
    except (HubUnavailable, HubRefused) as err:
        raise type(err)(_scrub(str(err), query.token)) from None


def _fetch(query: HubQuery, timeout_s: float, cache_dir: str | None) -> HubFacts:
    # HF_ENDPOINT is read here, not at huggingface_hub's import, so a changed environment counts.
    endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")
    try:
        import huggingface_hub as hub
        from huggingface_hub import errors
    except ImportError:
        raise HubUnavailable("huggingface_hub is not installed (pip install -r requirements.txt)") from None
    # False, not None, without hfToken: the host gets only hfToken, so a login on this machine must
    # not make the plan see a model the host cannot.
    token: str | bool = query.token or False
    try:
        api = hub.HfApi(endpoint=endpoint, token=token)
        info = api.model_info(query.repo_id, revision=query.revision, timeout=timeout_s)
        commit = info.sha or query.revision or "main"
        # The resolved commit from here on: config and weights of one and the same revision.
        path = hub.hf_hub_download(query.repo_id, "config.json", revision=commit, token=token, endpoint=endpoint,
                                   etag_timeout=timeout_s, cache_dir=cache_dir)
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except Exception as err:
        raise _failure(err, query, endpoint, timeout_s, what="config.json") from None
    if not isinstance(config, dict):
        raise HubUnavailable(f"{query.repo_id}: config.json is not a JSON object")
    source = f"{endpoint}/{query.repo_id}/blob/{commit}/config.json"
    arch: ModelArchitecture | None = None
    unmodelled = ""
    try:
        arch = architecture_from_config(config, name=query.repo_id, source=source)
    except ValueError as err:
        # A mixture-of-experts or multimodal model: no fit check, but its weights still need room.
        unmodelled = str(err).removeprefix(f"{source}: ")

    try:
        meta = api.get_safetensors_metadata(query.repo_id, revision=commit, token=token, timeout=timeout_s)
    except errors.NotASafetensorsRepoError:
        return HubFacts(arch, commit, None,
                        note=_join(unmodelled, "no safetensors weights on the Hub; size not checked"))
    except Exception as err:
        # config.json may have come from the local cache (a commit's files never change), so this is
        # where a gated repo without a token shows.
        failure = _failure(err, query, endpoint, timeout_s, what="safetensors metadata")
        if isinstance(failure, HubRefused):
            raise failure from None
        return HubFacts(arch, commit, None, note=_join(unmodelled, f"safetensors metadata not read: {failure}"))
    weight_bytes = sum(end - start for fm in meta.files_metadata.values()
                       for t in fm.tensors.values() for start, end in [t.data_offsets])
    by_dtype = {str(dtype): int(count) for dtype, count in meta.parameter_count.items()}
    if arch is not None and arch.quantization is None and by_dtype:
        # Packed quantized tensors do not count parameters; plain ones do, exactly.
        arch = replace(arch, parameter_count=sum(by_dtype.values()), parameter_count_source=PARAMS_FROM_HUB_METADATA)
    return HubFacts(arch, commit, weight_bytes, by_dtype, note=unmodelled)


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _failure(err: Exception, query: HubQuery, endpoint: str, timeout_s: float,
             what: str) -> HubRefused | HubUnavailable:
    """HubRefused for what the host would hit too (its message says what to set), else HubUnavailable."""
    from huggingface_hub import errors

    repo = query.repo_id
    if isinstance(err, errors.GatedRepoError):
        return HubRefused(
            f"model: {repo} is gated on the Hub and "
            + ("hfToken has no access to it: accept its terms on its Hub page with the token's account"
               if query.token else "no hfToken is set: pulumi config set --secret hfToken <token>"))
    if isinstance(err, errors.RepositoryNotFoundError):
        return HubRefused(
            f"model: {repo} does not exist on {endpoint}"
            + (" or hfToken cannot read it" if query.token else
               "; for a private repo set hfToken (pulumi config set --secret hfToken <token>)"))
    if isinstance(err, errors.RevisionNotFoundError):
        return HubRefused(f"modelRevision: {query.revision} is not a revision of {repo}")
    if isinstance(err, errors.RemoteEntryNotFoundError):
        return HubUnavailable(f"{repo} has no {what}")
    response = getattr(err, "response", None) if isinstance(err, errors.HfHubHTTPError) else None
    if response is not None and response.status_code == 401:
        # The host would be turned away with the same token.
        return HubRefused(f"hfToken: the Hub refused it for {repo} (401 Unauthorized): set a valid token from "
                          "huggingface.co/settings/tokens" if query.token else
                          f"model: {repo} needs a token (401 Unauthorized): set hfToken")
    return HubUnavailable(_reason(err, endpoint, timeout_s))


def _reason(err: BaseException, endpoint: str, timeout_s: float) -> str:
    name = type(err).__name__
    if "Timeout" in name or isinstance(err, TimeoutError):
        return f"{endpoint} did not answer within {timeout_s:g} s"
    if "Connect" in name or isinstance(err, ConnectionError):
        return f"{endpoint} not reachable ({name})"
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{endpoint}: {name}" + (f": {first[:200]}" if first else "")
