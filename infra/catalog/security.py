"""Security facts the renderer enforces: the vLLM image floor.

(The GPU floor, compute capability 7.5, lives with the GPU facts in infra/catalog/gpus.py.)"""

from __future__ import annotations

from typing import Final

# vLLM images older than this carry a known API-key bypass and other published advisories; they
# render only with the explicit opt-in `allowInsecureImage` (and the proxy in front).
SECURITY_FLOOR: Final = "0.22.0"
ADVISORIES_BELOW_FLOOR: Final = (
    "CVE-2026-48746 (API-key bypass)",
    "CVE-2025-59425 (API-key check open to a timing attack)",
    "CVE-2026-27893",
)
