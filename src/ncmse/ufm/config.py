"""Options of a UFM experiment and the names of the flows (no torch: the CLI parser reads them)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ncmse.errors import InputError

__all__ = ["FLOWS", "METHODS", "UFMConfig"]

#: feature flows: the paper's projected (renormalised) flow, step-then-renormalise, central path
FLOWS = ("projected", "variant", "central")
#: integrators of the flows
METHODS = ("euler", "heun")


@dataclass
class UFMConfig:
    """Options of ``ncmse ufm`` (see :mod:`ncmse.cli.ufm` for their meaning)."""

    n: int = 10
    num_classes: int = 10
    p: int = 20
    omega0: list[float] = field(default_factory=list)
    flow: str = "all"
    t_end: float = 1e6
    num_records: int = 40
    rel_step: float | None = 1e-2
    dt: float | None = None
    method: str = "heun"
    central_t_end: float = 1e4
    lam: float = 5e-3
    lam_h: float = 1e-3
    lr: float = 0.5
    steps: int = 10000
    seed: int = 0
    device: str = "auto"

    def resolved_omega0(self) -> list[float]:
        """``ω(0)``; default ``geomspace(0.3, 3, C − 1)``."""
        if self.omega0:
            return [float(w) for w in self.omega0]
        return [float(w) for w in np.geomspace(0.3, 3.0, self.num_classes - 1)]

    def flow_names(self) -> list[str]:
        """The flows to simulate."""
        if self.flow == "all":
            return list(FLOWS)
        if self.flow not in FLOWS:
            raise InputError(f"unknown --flow {self.flow!r}; choose all or one of {FLOWS}")
        return [self.flow]
