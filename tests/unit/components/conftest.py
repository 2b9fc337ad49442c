"""The components' tests plan target=local for a described machine, never for the one running the tests
(whose GPUs, user and home differ from one CI machine to the next)."""

from __future__ import annotations

import pytest

from tests.unit.components.test_components import LOCAL_MACHINE
from vllm_endpoint.infra.plan import local_machine


@pytest.fixture(autouse=True)
def _described_local_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_machine, "probe_local_machine", lambda: LOCAL_MACHINE)
