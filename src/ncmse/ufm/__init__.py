"""Unconstrained features model (SPEC §4–§5): flows, closed form, plain GD, ``ncmse ufm``.

* :mod:`ncmse.ufm.closed_form` — ``c1 log ω + c2 ω² + c3 ω⁴ = a + t`` solved for arrays of t
* :mod:`ncmse.ufm.model` — features with prescribed SNR, LS classifier, analytic gradients
* :mod:`ncmse.ufm.flows` — central-path, projected (paper) and step-then-renormalise flows
* :mod:`ncmse.ufm.gd` — plain GD on (W, b, H) with every SPEC §2–§3 measurement
* :mod:`ncmse.ufm.config`, :mod:`ncmse.ufm.runner` — options and the run directory (figures are
  the report's: :mod:`ncmse.report.ufm_figures`)

The names below are imported on first use (``ncmse ufm --help`` does not import torch).
"""

from __future__ import annotations

from ncmse.lazy import lazy_names

_LAZY = {
    "Law": "ncmse.ufm.closed_form",
    "projected_law": "ncmse.ufm.closed_form",
    "variant_law": "ncmse.ufm.closed_form",
    "predicted_nc1": "ncmse.ufm.closed_form",
    "simulate_flow": "ncmse.ufm.flows",
    "FlowResult": "ncmse.ufm.flows",
    "make_features": "ncmse.ufm.model",
    "UFMConfig": "ncmse.ufm.config",
    "run_ufm": "ncmse.ufm.runner",
}

__all__ = [
    "FlowResult",
    "Law",
    "UFMConfig",
    "make_features",
    "predicted_nc1",
    "projected_law",
    "run_ufm",
    "simulate_flow",
    "variant_law",
]


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
