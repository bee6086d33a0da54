"""Closed-form singular-value dynamics of the renormalised UFM flows (SPEC §5.3–§5.4).

Time convention
---------------
``t`` is gradient-flow time for the loss of SPEC §3,
``L = ½ (1/N) Σ ‖W h + b − e_y‖² + (λ/2)(‖W‖² + ‖b‖²)`` with the classifier eliminated
(``λ = 0``), i.e. the features obey ``dH/dt = −∇_H L_LS(H)`` (projected or renormalised).
A loss scaled by ``κ`` (``κ L``) runs ``κ`` times faster: its time is ``τ = t / κ``.
With this convention the continually renormalised (projected) flow obeys

    dω_j/dt = (1/n) ω_j / (C + ω_j²)²
    ⇔  c1 log ω_j + c2 ω_j² + c3 ω_j⁴ = a_j + t,   c1 = n C², c2 = n C, c3 = n / 4,

and the step-then-renormalise variant obeys

    dω_j/dt = ω_j / (n C (C + ω_j²))
    ⇔  c1 log ω_j + c2 ω_j² = a_j + t,              c1 = n C², c2 = n C / 2, c3 = 0.

Both laws are verified against simulations in ``tests/ufm/test_ufm_flows.py``.

Solving the implicit law
------------------------
With ``s = log ω`` the left-hand side ``F(s) = c1 s + c2 e^{2s} + c3 e^{4s}`` is strictly
increasing and convex.  A bracket ``lo ≤ s* ≤ hi`` with finite ends is available in closed
form (see :func:`_bracket`); Newton's method started at the upper end of a bracket of a
convex increasing function decreases monotonically to the root, so no iterate ever leaves
``[s*, hi]`` and ``e^{4s}`` cannot overflow even for ``t = 1e12`` or beyond.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ncmse.errors import InputError, ShapeError

__all__ = [
    "Law",
    "projected_law",
    "variant_law",
    "law_for_flow",
    "predicted_nc1",
    "omega_ratio",
]

_MAX_NEWTON_ITERATIONS = 100
_NEWTON_TOL = 1e-14
_CHUNK = 1 << 15


def _positive_omega(omega0: ArrayLike) -> NDArray[np.float64]:
    """Validate ``ω(0)``: a non-empty 1-D array of finite, strictly positive numbers."""
    w = np.asarray(omega0, dtype=np.float64)
    if w.ndim == 0:
        w = w[None]
    if w.ndim != 1 or w.size == 0:
        raise ShapeError(
            f"omega0 must be a non-empty 1-D array of singular values, got shape {w.shape}; "
            "pass e.g. omega0=[0.3, 1.0, 3.0]"
        )
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise InputError(
            f"omega0 must be finite and strictly positive (got {w.tolist()}); a zero singular "
            "value stays zero under the flow and has no logarithm: drop it or make it positive"
        )
    return w


def _times(t: ArrayLike) -> NDArray[np.float64]:
    """Validate times: finite and non-negative; returned as a 1-D float64 array."""
    tt = np.atleast_1d(np.asarray(t, dtype=np.float64))
    if tt.ndim != 1:
        raise ShapeError(f"t must be a scalar or a 1-D array of times, got shape {tt.shape}")
    if not np.all(np.isfinite(tt)) or np.any(tt < 0):
        raise InputError("t must contain finite, non-negative times (t = 0 is ω(0))")
    return tt


@dataclass(frozen=True)
class Law:
    """The implicit law ``c1 log ω + c2 ω² + c3 ω⁴ = a + t`` of one flow.

    Parameters
    ----------
    c1, c2 : float
        Positive coefficients of ``log ω`` and ``ω²``.
    c3 : float
        Non-negative coefficient of ``ω⁴`` (0 for the step-then-renormalise variant).
    name : str
        ``"projected"`` or ``"variant"`` (informative only).
    """

    c1: float
    c2: float
    c3: float
    name: str = "custom"

    def __post_init__(self) -> None:
        if not (self.c1 > 0 and self.c2 > 0 and self.c3 >= 0):
            raise InputError(
                f"law coefficients need c1 > 0, c2 > 0, c3 >= 0, got "
                f"({self.c1}, {self.c2}, {self.c3}); check n and C are positive"
            )

    # -- the law itself ---------------------------------------------------------------------
    def invariant(self, omega: ArrayLike) -> NDArray[np.float64]:
        """``F(ω) = c1 log ω + c2 ω² + c3 ω⁴`` elementwise; ``F(ω(t)) − t`` is conserved."""
        w = np.asarray(omega, dtype=np.float64)
        w2 = w * w
        return self.c1 * np.log(w) + self.c2 * w2 + self.c3 * w2 * w2

    def rate(self, omega: ArrayLike) -> NDArray[np.float64]:
        """``dω/dt = 1 / F'(ω) = ω / (c1 + 2 c2 ω² + 4 c3 ω⁴)``."""
        w = np.asarray(omega, dtype=np.float64)
        w2 = w * w
        return w / (self.c1 + 2.0 * self.c2 * w2 + 4.0 * self.c3 * w2 * w2)

    def asymptote(self, t: ArrayLike) -> NDArray[np.float64]:
        """Leading large-``t`` behaviour: ``(t/c3)^{1/4}``, or ``(t/c2)^{1/2}`` when ``c3 = 0``."""
        tt = np.asarray(t, dtype=np.float64)
        if self.c3 > 0:
            return np.sqrt(np.sqrt(tt / self.c3))
        return np.sqrt(tt / self.c2)

    def omega(self, t: ArrayLike, omega0: ArrayLike) -> NDArray[np.float64]:
        """Solve the law for ``ω_j(t)``.

        Parameters
        ----------
        t : array_like, shape (T,) or scalar
            Non-negative flow times (convention in the module docstring).
        omega0 : array_like, shape (k,)
            Positive initial singular values ``ω_j(0)``.

        Returns
        -------
        ndarray, shape (T, k)
            ``ω_j(t_i)``; exact at ``t = 0`` up to rounding, finite for ``t`` up to ~1e300.
        """
        w0 = _positive_omega(omega0)
        tt = _times(t)
        rhs = self.invariant(w0)[None, :] + tt[:, None]  # (T, k)
        return np.exp(self._solve_log(rhs))

    # -- numerics ---------------------------------------------------------------------------
    def _initial_guess(self, rhs: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
        """Upper bound ``hi ≥ s*`` and a close starting point ``s_g ≤ hi`` for Newton.

        * ``rhs ≤ F(0) = c2 + c3`` (so ``s* ≤ 0``): ``F(s) ≥ c1 s`` gives ``hi = min(0, rhs/c1)``,
          within ``(c2 + c3)/c1 ≤ 1/C`` of the root.
        * ``rhs > F(0)`` (so ``s* > 0`` and every term of ``F`` is in ``[0, rhs]``): each
          single-term solution ``rhs/c1``, ``½ log(rhs/c2)``, ``¼ log(rhs/c3)`` bounds ``s*`` from
          above and, at ``rhs/3``, one of them bounds it from below (``s_lo``).  Freezing the
          log term at ``s_lo`` and solving the quadratic ``c3 u² + c2 u = rhs − c1 s_lo`` in
          ``u = ω²`` gives an upper bound that is exact when the log term is negligible.
        """
        f0 = self.c2 + self.c3
        big = rhs > f0
        safe = np.where(big, rhs, f0 + 1.0)
        log_safe = np.log(safe)
        hi = np.minimum(safe / self.c1, 0.5 * (log_safe - np.log(self.c2)))
        lo = np.minimum(safe / (3.0 * self.c1), 0.5 * (log_safe - np.log(3.0 * self.c2)))
        if self.c3 > 0:
            hi = np.minimum(hi, 0.25 * (log_safe - np.log(self.c3)))
            lo = np.minimum(lo, 0.25 * (log_safe - np.log(3.0 * self.c3)))
        np.maximum(lo, 0.0, out=lo)
        q = safe - self.c1 * lo
        u = 2.0 * q / (self.c2 + np.sqrt(self.c2 * self.c2 + 4.0 * self.c3 * q))
        guess = np.minimum(hi, 0.5 * np.log(u))
        small_hi = np.minimum(rhs / self.c1, 0.0)
        return np.where(big, hi, small_hi), np.where(big, guess, small_hi)

    def _newton_chunk(self, rhs: NDArray[np.float64]) -> NDArray[np.float64]:
        """Newton iterations on one 1-D chunk of right-hand sides (in place, cache-sized)."""
        hi, s = self._initial_guess(rhs)
        e2 = np.empty_like(s)
        f = np.empty_like(s)
        df = np.empty_like(s)
        for _ in range(_MAX_NEWTON_ITERATIONS):
            np.multiply(s, 2.0, out=e2)
            np.exp(e2, out=e2)  # e^{2s}
            np.multiply(e2, e2, out=df)  # e^{4s}
            np.multiply(df, self.c3, out=df)  # c3 e^{4s}
            np.multiply(e2, self.c2, out=e2)  # c2 e^{2s}
            np.multiply(s, self.c1, out=f)
            f += e2
            f += df
            f -= rhs  # F(s) - rhs
            df *= 4.0
            df += self.c1
            df += 2.0 * e2  # F'(s)
            f /= df  # Newton step
            s -= f
            np.minimum(s, hi, out=s)
            if float(np.max(np.abs(f))) <= _NEWTON_TOL:
                break
        return s

    def _solve_log(self, rhs: NDArray[np.float64]) -> NDArray[np.float64]:
        """Safeguarded Newton for ``F(s) = rhs``, vectorised over cache-sized chunks.

        Started at or right of the root of a convex increasing ``F``, Newton decreases
        monotonically to it (quadratically near it); iterates are clamped at ``hi`` to guard
        against rounding.  Stops when every step is below ``1e-14`` in ``s = log ω`` (i.e.
        relative ``1e-14`` in ``ω``).
        """
        flat = np.ascontiguousarray(rhs, dtype=np.float64).ravel()
        out = np.empty_like(flat)
        for start in range(0, flat.size, _CHUNK):
            out[start : start + _CHUNK] = self._newton_chunk(flat[start : start + _CHUNK])
        return out.reshape(rhs.shape)


def projected_law(n: int, num_classes: int) -> Law:
    """Law of the continually renormalised (projected) flow: ``c = (nC², nC, n/4)``."""
    n, c = _check_nc(n, num_classes)
    return Law(c1=n * c * c, c2=n * c, c3=n / 4.0, name="projected")


def variant_law(n: int, num_classes: int) -> Law:
    """Law of the step-then-renormalise variant: ``c = (nC², nC/2, 0)``."""
    n, c = _check_nc(n, num_classes)
    return Law(c1=n * c * c, c2=n * c / 2.0, c3=0.0, name="variant")


def law_for_flow(flow: str, n: int, num_classes: int) -> Law:
    """The law of ``flow`` (``"projected"`` or ``"variant"``)."""
    if flow == "projected":
        return projected_law(n, num_classes)
    if flow == "variant":
        return variant_law(n, num_classes)
    raise InputError(
        f"no closed form for flow {flow!r}: only 'projected' and 'variant' have one "
        "(the central-path and plain-GD dynamics are simulated only)"
    )


def _check_nc(n: int, num_classes: int) -> tuple[float, float]:
    if n < 1 or num_classes < 2:
        raise InputError(
            f"need n >= 1 samples per class and C >= 2 classes, got n={n}, C={num_classes}"
        )
    return float(n), float(num_classes)


def predicted_nc1(omega: ArrayLike) -> NDArray[np.float64]:
    """``nc1 = Σ_j ω_j^{-2}`` (whitened coordinates) along the last axis.

    Parameters
    ----------
    omega : array_like, shape (..., k)

    Returns
    -------
    ndarray, shape (...)
    """
    w = np.asarray(omega, dtype=np.float64)
    return np.sum(1.0 / (w * w), axis=-1)


def omega_ratio(omega: ArrayLike) -> NDArray[np.float64]:
    """``ω_max / ω_min`` along the last axis; shape (...)."""
    w = np.asarray(omega, dtype=np.float64)
    return np.max(w, axis=-1) / np.min(w, axis=-1)
