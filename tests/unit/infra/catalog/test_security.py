"""The vLLM image floor has one home, data/security.json: the catalog, the policy pack and the settings'
description all take it from there."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vllm_endpoint.infra.catalog import security
from vllm_endpoint.infra.settings.models import AccessSettings

POLICY_DIR = Path(__file__).resolve().parents[4] / "policy"
# The CLI runs the pack as `python policy/`, which puts policy/ first on sys.path; do the same.
if str(POLICY_DIR) not in sys.path:
    sys.path.insert(0, str(POLICY_DIR))

import rules  # noqa: E402


def test_the_policy_pack_reads_the_catalogs_file() -> None:
    assert rules.SECURITY_FACTS_FILE.resolve() == security.SECURITY_FILE.resolve()


def test_the_policy_pack_and_the_catalog_see_the_same_floor_and_advisories() -> None:
    assert rules.VLLM_SECURITY_FLOOR == security.SECURITY_FLOOR
    catalog_ids = tuple(text.split(" ", 1)[0] for text in security.ADVISORIES_BELOW_FLOOR)
    assert catalog_ids == rules.VLLM_FLOOR_ADVISORY_IDS
    # The pack's message lists them as the program's does, the last one joined with "and".
    assert rules.VLLM_FLOOR_ADVISORIES == (
        "CVE-2026-48746 (API-key bypass), CVE-2025-59425 (API-key check open to a timing attack) and CVE-2026-27893"
    )
    assert security.ADVISORIES_BELOW_FLOOR == (
        "CVE-2026-48746 (API-key bypass)", "CVE-2025-59425 (API-key check open to a timing attack)", "CVE-2026-27893",
    )


def test_both_readers_take_the_floor_from_the_file(tmp_path: Path) -> None:
    # A raised floor in the file reaches both readers: neither keeps a value of its own.
    data = json.loads(security.SECURITY_FILE.read_text())
    data["vllm_security_floor"] = "0.30.0"
    raised = tmp_path / "security.json"
    raised.write_text(json.dumps(data))
    assert security.load_security_file(raised).vllm_security_floor == "0.30.0"
    assert rules.read_security_floor(raised).version == "0.30.0"


def test_the_opt_in_setting_names_the_floor() -> None:
    description = AccessSettings.model_fields["allow_insecure_image"].description
    assert description is not None and f"(v{security.SECURITY_FLOOR})" in description
