"""Security facts the renderer enforces: the vLLM image floor, from data/security.json.

That file is the floor's one home: the policy pack (policy/rules.py) reads the same file, and the
`allowInsecureImage` setting's description is built from `SECURITY_FLOOR`.
(The GPU floor, compute capability 7.5, lives with the GPU facts in infra/catalog/gpus.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic import BaseModel, field_validator, model_validator

from vllm_endpoint.infra.catalog.data_files import STRICT, DataFile, data_path, load_data_file
from vllm_endpoint.infra.catalog.vllm_flags import VllmVersion

SECURITY_FILE: Final = data_path("security.json")


def _release(value: str) -> str:
    VllmVersion.parse(value)  # a ValueError names the text and what a release looks like
    return value


class Advisory(BaseModel):
    model_config = STRICT

    id: str
    summary: str | None = None
    fixed_in: str

    _release = field_validator("fixed_in")(_release)

    def __str__(self) -> str:
        return f"{self.id} ({self.summary})" if self.summary else self.id


class SecurityFile(DataFile):
    about: str
    vllm_security_floor: str
    advisories_below_floor: tuple[Advisory, ...]

    _release = field_validator("vllm_security_floor")(_release)

    @model_validator(mode="after")
    def _floor_covers_every_advisory(self) -> SecurityFile:
        # A floor below an advisory's fix would let an image with that advisory pass unannounced.
        floor = VllmVersion.parse(self.vllm_security_floor)
        above = [f"{a.id} (fixed in {a.fixed_in})" for a in self.advisories_below_floor
                 if VllmVersion.parse(a.fixed_in) > floor]
        if above:
            raise ValueError(f"vllm_security_floor {self.vllm_security_floor} is below the fix of "
                             f"{', '.join(above)}: raise the floor")
        return self


def load_security_file(path: Path = SECURITY_FILE) -> SecurityFile:
    return load_data_file(SecurityFile, path)


_DATA: Final = load_security_file()
# vLLM images older than this carry a known API-key bypass and other published advisories; they
# render only with the explicit opt-in `allowInsecureImage` (and the proxy in front).
SECURITY_FLOOR: Final = _DATA.vllm_security_floor
ADVISORIES_BELOW_FLOOR: Final = tuple(str(advisory) for advisory in _DATA.advisories_below_floor)
