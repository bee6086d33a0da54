"""Unconstrained features model (SPEC §4–§5): flows, closed form, plain GD, ``ncmse ufm``.

* :mod:`ncmse.ufm.closed_form` — ``c1 log ω + c2 ω² + c3 ω⁴ = a + t`` solved for arrays of t
* :mod:`ncmse.ufm.model` — features with prescribed SNR, LS classifier, analytic gradients
* :mod:`ncmse.ufm.flows` — central-path, projected (paper) and step-then-renormalise flows
* :mod:`ncmse.ufm.gd` — plain GD on (W, b, H) with every SPEC §2–§3 measurement
* :mod:`ncmse.ufm.runner`, :mod:`ncmse.ufm.cli`, :mod:`ncmse.ufm.plots` — run directory + figures
"""

from ncmse.ufm.closed_form import Law, predicted_nc1, projected_law, variant_law
from ncmse.ufm.flows import FlowResult, simulate_flow
from ncmse.ufm.model import make_features

__all__ = [
    "Law",
    "projected_law",
    "variant_law",
    "predicted_nc1",
    "simulate_flow",
    "FlowResult",
    "make_features",
]
