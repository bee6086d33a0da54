"""Brute-force float64 references, written straight from SPEC §2–§3 (per-sample loops, explicit
pseudo-inverses): slow and obviously right, to test the fast library code against."""

from __future__ import annotations

import itertools

import numpy as np


def class_stats(H, y, C):
    H = np.asarray(H, dtype=np.float64)
    y = np.asarray(y)
    N, p = H.shape
    mu = np.stack([H[y == c].mean(axis=0) for c in range(C)])
    Sw = np.zeros((p, p))
    for i in range(N):
        d = H[i] - mu[y[i]]
        Sw += np.outer(d, d)
    return mu, Sw / N


def geometry(H, y, W, b, C):
    H = np.asarray(H, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    y = np.asarray(y)
    mu, Sw = class_stats(H, y, C)
    muG = mu.mean(axis=0)
    Mbar = (mu - muG).T
    Sb = Mbar @ Mbar.T / C
    out = {}
    out["nc1"] = np.trace(Sw @ np.linalg.pinv(Sb, rcond=1e-10, hermitian=True)) / C
    out["nc1_trace_ratio"] = np.trace(Sw) / np.trace(Sb)
    var = np.array([np.mean(np.sum((H[y == c] - mu[c]) ** 2, axis=1)) for c in range(C)])
    pairs = list(itertools.combinations(range(C), 2))
    out["cdnv"] = np.mean(
        [(var[a] + var[c]) / (2 * np.sum((mu[a] - mu[c]) ** 2)) for a, c in pairs]
    )

    def norms_std_mean(V):
        n = np.linalg.norm(V, axis=1)
        return np.std(n, ddof=1) / np.mean(n)

    def cos_pairs(V):
        return np.array(
            [V[a] @ V[c] / (np.linalg.norm(V[a]) * np.linalg.norm(V[c])) for a, c in pairs]
        )

    for name, V in (("means", Mbar.T), ("classifier", W)):
        out[f"equinorm_{name}"] = norms_std_mean(V)
        cs = cos_pairs(V)
        out[f"equiangular_{name}"] = np.std(cs, ddof=1) if len(cs) > 1 else 0.0
        out[f"maxangle_{name}"] = np.mean(np.abs(cs + 1.0 / (C - 1)))
    out["nc3"] = np.sum((W.T / np.linalg.norm(W) - Mbar / np.linalg.norm(Mbar)) ** 2)
    credit, mismatch = decision_outcomes(H, y, W, b, mu)
    out["nc4"] = float(np.mean(mismatch))
    out["accuracy"] = float(np.mean(credit))
    # SNR: singular values of Σ_W^{-1/2} M̄ via eigendecomposition
    ev, Q = np.linalg.eigh(Sw)
    Sw_mhalf = Q @ np.diag(ev**-0.5) @ Q.T
    out["snr"] = np.linalg.svd(Sw_mhalf @ Mbar, compute_uv=False)[: min(H.shape[1], C - 1)]
    G = Mbar.T @ Mbar
    etf = (np.eye(C) - np.ones((C, C)) / C) / np.sqrt(C - 1)
    out["etf_error_means"] = np.linalg.norm(G / np.linalg.norm(G) - etf)
    G = W @ Mbar
    out["etf_error_wm"] = np.linalg.norm(G / np.linalg.norm(G) - etf)
    return out


def tie_coefficient(p):
    """SPEC §2 ties: 4·(p + 6)·u, twice the worst-case rounding of a length-p dot product."""
    return 4.0 * (p + 6) * np.finfo(np.float64).eps / 2


def decision_sets(H, W, b, mu):
    """Per sample (A, B): the classifier's maximisers and the nearest class means, each within
    the tie tolerance of the best (ncmse.collapse.decisions's definition), by per-sample, per-class
    loops.

    A = {c : w_c·h + b_c ≥ max − k (max‖w‖ ‖h‖ + max|b|)}
    B = {c : ½‖x − m̄_c‖² ≤ min + k (‖x‖ + r)(r + ‖μ_G‖)},  x = h − μ_G, m̄_c = μ_c − μ_G,
    r = max‖m̄_c‖, k = tie_coefficient(p).
    """
    H, W, b, mu = (np.asarray(a, dtype=np.float64) for a in (H, W, b, mu))
    C, p = W.shape
    k = tie_coefficient(p)
    mu_g = mu.mean(axis=0)
    mbar = mu - mu_g
    r = max(np.linalg.norm(m) for m in mbar)
    wmax = max(np.linalg.norm(w) for w in W)
    bmax = max(abs(v) for v in b)
    sets = []
    for h in H:
        s = np.array([float(np.dot(W[c], h)) + b[c] for c in range(C)])
        A = set(np.flatnonzero(s >= s.max() - k * (wmax * np.linalg.norm(h) + bmax)).tolist())
        x = h - mu_g
        d = np.array([0.5 * np.sum((x - mbar[c]) ** 2) for c in range(C)])
        tau = k * (np.linalg.norm(x) + r) * (r + np.linalg.norm(mu_g))
        sets.append((A, set(np.flatnonzero(d <= d.min() + tau).tolist())))
    return sets


def decision_outcomes(H, y, W, b, mu):
    """(credit [N], mismatch [N]): [y ∈ A]/|A| and A ∩ B = ∅ of :func:`decision_sets`."""
    sets = decision_sets(H, W, b, mu)
    credit = np.array([float(int(c) in A) / len(A) for (A, _), c in zip(sets, np.asarray(y))])
    mismatch = np.array([not (A & B) for A, B in sets])
    return credit, mismatch


def mse_loss(H, y, W, b, C, lam):
    H, W, b = (np.asarray(a, dtype=np.float64) for a in (H, W, b))
    E = np.eye(C)[np.asarray(y)]
    R = H @ W.T + b - E
    return 0.5 * np.mean(np.sum(R**2, axis=1)) + 0.5 * lam * (np.sum(W**2) + np.sum(b**2))


def ridge_ls(H, y, C, lam):
    """argmin over (W, b) of the SPEC loss, by the explicit normal equations."""
    H = np.asarray(H, dtype=np.float64)
    N = H.shape[0]
    Ht = np.hstack([H, np.ones((N, 1))])
    E = np.eye(C)[np.asarray(y)]
    A = Ht.T @ Ht / N + lam * np.eye(Ht.shape[1])
    Wt = np.linalg.solve(A, Ht.T @ E / N).T
    return Wt[:, :-1], Wt[:, -1]


def mp_decomposition(H, y, W, b, C, lam, dps=60):
    """SPEC §3 (loss, L_NC1, L_NC2/3, L_⊥, L_LS) in mpmath at ``dps`` digits, straight from the
    samples: the raw augmented second moment A, W̃_LS = (M̃ diag π)ᵀ A⁻¹ by LU, each term by its
    formula. The float64 inputs are taken as exact."""
    import mpmath

    with mpmath.workdps(dps):
        H = [[mpmath.mpf(float(v)) for v in row] for row in np.asarray(H, dtype=np.float64)]
        y = [int(v) for v in np.asarray(y)]
        W = mpmath.matrix([[mpmath.mpf(float(v)) for v in row] for row in np.asarray(W)])
        b = mpmath.matrix([mpmath.mpf(float(v)) for v in np.asarray(b)])
        lam = mpmath.mpf(lam)
        N, p = len(H), len(H[0])
        n = [sum(1 for v in y if v == c) for c in range(C)]
        mu = mpmath.matrix(C, p)
        for h, c in zip(H, y):
            for j in range(p):
                mu[c, j] += h[j] / n[c]
        Sw = mpmath.matrix(p, p)
        A = mpmath.matrix(p + 1, p + 1)
        for h, c in zip(H, y):
            ht = [*h, mpmath.mpf(1)]
            for i in range(p + 1):
                for j in range(p + 1):
                    A[i, j] += ht[i] * ht[j] / N
            for i in range(p):
                for j in range(p):
                    Sw[i, j] += (h[i] - mu[c, i]) * (h[j] - mu[c, j]) / N
        for i in range(p + 1):
            A[i, i] += lam
        R = mpmath.matrix(p + 1, C)  # M̃ diag π
        for c in range(C):
            for j in range(p):
                R[j, c] = mu[c, j] * n[c] / N
            R[p, c] = mpmath.mpf(n[c]) / N
        cols = [
            mpmath.lu_solve(A, mpmath.matrix([R[i, c] for i in range(p + 1)])) for c in range(C)
        ]
        Wls = mpmath.matrix([[cols[k][j] for j in range(p)] for k in range(C)])  # [C, p]
        bls = mpmath.matrix([cols[k][p] for k in range(C)])

        def quad(v, M):  # vᵀ M v for a list v
            return sum(v[i] * M[i, j] * v[j] for i in range(len(v)) for j in range(len(v)))

        def loss(Wm, bm):
            total = mpmath.mpf(0)
            for h, c in zip(H, y):
                for k in range(C):
                    r = sum(Wm[k, j] * h[j] for j in range(p)) + bm[k] - (1 if k == c else 0)
                    total += r * r
            reg = sum(Wm[k, j] ** 2 for k in range(C) for j in range(p)) + sum(v**2 for v in bm)
            return total / (2 * N) + lam / 2 * reg

        Swl = Sw + lam * mpmath.eye(p)
        nc1 = sum(quad([Wls[k, j] for j in range(p)], Swl) for k in range(C))
        nc1 = (nc1 + lam * sum(v**2 for v in bls)) / 2
        nc23 = mpmath.mpf(0)
        for c in range(C):
            for k in range(C):
                r = sum(Wls[k, j] * mu[c, j] for j in range(p)) + bls[k] - (1 if k == c else 0)
                nc23 += mpmath.mpf(n[c]) / N * r * r
        nc23 /= 2
        perp = (
            sum(
                quad([W[k, j] - Wls[k, j] for j in range(p)] + [b[k] - bls[k]], A) for k in range(C)
            )
            / 2
        )
        out = {"loss": loss(W, b), "loss_nc1": nc1, "loss_nc23": nc23, "loss_perp": perp}
        out["loss_ls"] = nc1 + nc23
        return {k: float(v) for k, v in out.items()}
