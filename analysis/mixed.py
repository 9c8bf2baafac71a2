"""Linear mixed models with one grouping factor, fitted exactly and fast.

Model (for participant ``i`` with ``n_i`` rows)::

    y_i = X_i beta + Z_i b_i + e_i,    b_i ~ N(0, sigma^2 Lambda Lambda'),   e_i ~ N(0, sigma^2 I)

``Lambda`` is the lower-triangular relative covariance factor (as in lme4, parameter vector
``theta`` = its lower triangle, diagonal >= 0). Writing ``M_i = Lambda' Z_i'Z_i Lambda + I``,
``V_i = I + Z_i Lambda Lambda' Z_i'`` and ``|V_i| = |M_i|`` (Sylvester), Woodbury gives every
quadratic form in ``V_i^{-1}`` from the per-participant cross-products ``Z_i'Z_i``, ``Z_i'X_i``,
``Z_i'y_i`` and the pooled ``X'X``, ``X'y``, ``y'y``. With ``A = sum X_i'V_i^{-1}X_i``,
``beta = A^{-1} sum X_i'V_i^{-1}y_i`` and ``r2 = sum (y_i - X_i beta)'V_i^{-1}(y_i - X_i beta)``,
the profiled deviances (-2 log-likelihood with beta and sigma^2 at their optimum for theta) are

    ML:    d(theta) = sum log|M_i| + N (1 + log(2 pi r2 / N))
    REML:  d(theta) = sum log|M_i| + log|A| + (N - p) (1 + log(2 pi r2 / (N - p)))

exactly lme4's criteria (Bates et al. 2015, eq. 34 and 41), so ``loglik = -d / 2`` is comparable
with R's ``logLik()``. The sufficient statistics are computed in one pass over the rows; each
deviance evaluation then costs O(participants) with q x q blocks (q <= 3), vectorized across
participants. The analytic gradient (derived in :func:`_evaluate`) drives L-BFGS-B.

Inference: ``Var(beta) = sigma^2 A^{-1}``; p-values and intervals use Satterthwaite degrees of
freedom computed like lmerTest (Kuznetsova et al. 2017): the Hessian of the unprofiled deviance
in ``(theta, sigma)`` gives the asymptotic covariance of the variance parameters, and the
Jacobian of ``Var(beta)`` with respect to them gives ``df = 2 Var(l'beta)^2 / (g' A g)``.
Everything is scale-free: the Hessian is taken in ``(theta, sigma / sigma_hat)``, the fit uses
centered predictors (the intercept absorbs their means), and tolerances are relative, so df and
p-values are the same whatever the units of the outcome and predictors.

Bad input is refused with :class:`analysis.errors.ColumnError` naming the column: +-inf,
numbers stored as text, a constant or exactly explained outcome, values too large to square.

Assumptions: Gaussian random effects and residuals, residuals independent and homoscedastic
within and between participants, missing rows missing at random given the observed data (then
(RE)ML stays consistent under outcome-dependent dropout).

Models with more than three random effects per participant go to statsmodels' MixedLM.
"""

from __future__ import annotations

import functools
import math
import re
import warnings as _warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg as sla
from scipy import optimize, stats

from analysis.errors import ColumnError, FormulaError, InsufficientDataError

MAX_PROFILED_RE = 3
SINGULAR_TOL = 1e-4  # lme4's isSingular() tolerance on the diagonal of the (scaled) factor
MIN_GROUPS = 3
WARM_START_GROUPS = 20_000  # above this, start from the optimum on a random half of it

__all__ = ["MixedResult", "fit", "profiled_deviance", "sufficient_stats", "SufficientStats"]


# --------------------------------------------------------------------------------------------
# Sufficient statistics
# --------------------------------------------------------------------------------------------
@dataclass
class SufficientStats:
    """Per-participant cross-products, stored component-major (last axis = participant).

    ``S[a, b, i] = (Z_i'Z_i)[a, b]``, ``ZXy[a, k, i] = (Z_i'[X_i y_i])[a, k]``, and
    ``T = [X y]'[X y]`` pooled over all rows.
    """

    S: np.ndarray
    ZXy: np.ndarray
    T: np.ndarray
    n_obs: int
    n_groups: int
    p: int
    q: int


def sufficient_stats(
    X: np.ndarray, Z: np.ndarray, y: np.ndarray, codes: np.ndarray, n_groups: int
) -> SufficientStats:
    """One pass over the rows: per-group sums of the Z-involving cross-products.

    ``codes`` are integer group codes 0..n_groups-1. ``np.bincount`` with weights sums each
    product column by group in O(N) without materializing an N x k x k array.
    """
    n, p = X.shape
    q = Z.shape[1]
    Xy = np.column_stack([X, y])
    S = np.empty((q, q, n_groups))
    for a in range(q):
        for b in range(a, q):
            S[a, b] = S[b, a] = np.bincount(codes, weights=Z[:, a] * Z[:, b], minlength=n_groups)
    ZXy = np.empty((q, p + 1, n_groups))
    for a in range(q):
        for k in range(p + 1):
            ZXy[a, k] = np.bincount(codes, weights=Z[:, a] * Xy[:, k], minlength=n_groups)
    T = Xy.T @ Xy
    return SufficientStats(S=S, ZXy=ZXy, T=T, n_obs=n, n_groups=n_groups, p=p, q=q)


# --------------------------------------------------------------------------------------------
# Small batched linear algebra (component-major: arrays are (q, q, m) or (q, r, m))
# --------------------------------------------------------------------------------------------
def _chol(A: np.ndarray) -> np.ndarray:
    """Cholesky factors of m symmetric positive definite q x q matrices, A shape (q, q, m)."""
    q = A.shape[0]
    L = np.zeros_like(A)
    for j in range(q):
        d = A[j, j] - sum(L[j, k] ** 2 for k in range(j))
        L[j, j] = np.sqrt(d)
        for i in range(j + 1, q):
            L[i, j] = (A[i, j] - sum(L[i, k] * L[j, k] for k in range(j))) / L[j, j]
    return L


def _fwd(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve L X = B for lower-triangular L (q, q, m); B is (q, m) or (q, r, m)."""
    q = L.shape[0]
    X = np.empty_like(B)
    extra = (slice(None),) * (B.ndim - 2)  # broadcast L[i, k] (m,) over the r axis
    for i in range(q):
        acc = B[i].copy()
        for k in range(i):
            acc -= L[(i, k, *[None] * len(extra))] * X[k]
        X[i] = acc / L[(i, i, *[None] * len(extra))]
    return X


def _bwd(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve L' X = B for lower-triangular L (q, q, m); B is (q, m) or (q, r, m)."""
    q = L.shape[0]
    X = np.empty_like(B)
    nx = B.ndim - 2
    for i in reversed(range(q)):
        acc = B[i].copy()
        for k in range(i + 1, q):
            acc -= L[(k, i, *[None] * nx)] * X[k]
        X[i] = acc / L[(i, i, *[None] * nx)]
    return X


def _cho_solve(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve (L L') x = b for a lower Cholesky factor L (p is small: plain LAPACK solve)."""
    return np.linalg.solve(L @ L.T, b)


@functools.lru_cache(maxsize=16)
def _tril(q: int) -> tuple[np.ndarray, np.ndarray]:
    return np.tril_indices(q)


def _lambda(theta: np.ndarray, q: int) -> np.ndarray:
    Lam = np.zeros((q, q))
    Lam[_tril(q)] = theta
    return Lam


# --------------------------------------------------------------------------------------------
# The deviance and its gradient
# --------------------------------------------------------------------------------------------
@dataclass
class _Eval:
    dev: float
    beta: np.ndarray
    r2: float
    A: np.ndarray
    cholA: np.ndarray
    logdetM: float
    logdetA: float
    grad: np.ndarray | None = None
    g_logdet: np.ndarray | None = None  # d(sum log|M_i| [+ log|A|])/d theta
    g_r2: np.ndarray | None = None  # d r2 / d theta
    u: np.ndarray | None = None  # spherical conditional modes, (q, m)


def _evaluate(theta: np.ndarray, st: SufficientStats, reml: bool, grad: bool = True) -> _Eval:
    """Profiled deviance at ``theta`` and, if asked, its gradient.

    Gradient (differentiating through Sigma = Lambda Lambda', dSigma = dL L' + L dL'):
      d sum log|V_i| / dLambda = 2 sum P_i Lambda,      P_i Lambda = S_i Lambda M_i^{-1}
      d r2 / dLambda          = -2 sum w_i u_i',        u_i = M_i^{-1} Lambda' Z_i'e_i,
                                             w_i = Z_i'V_i^{-1}e_i = Z_i'e_i - S_i Lambda u_i
      d log|A| / dLambda      = -2 sum K_i A^{-1} H_i', K_i = Z_i'V_i^{-1}X_i,
                                                        H_i = M_i^{-1} Lambda' Z_i'X_i
    (the r2 term uses the envelope theorem: beta is optimal, so d r2 needs no d beta).
    """
    q, p, N = st.q, st.p, st.n_obs
    Lam = _lambda(theta, q)
    # Participants are processed in blocks so the intermediates stay in cache: the cost per
    # evaluation is then linear in the number of participants, not worse.
    blocks = [_block_factor(Lam, st.S[:, :, b], st.ZXy[:, :, b]) for b in _blocks(st.n_groups)]
    logdetM = float(sum(blk.logdetM for blk in blocks))
    W = st.T - sum(blk.CtC for blk in blocks)
    A = W[:p, :p]
    try:
        cholA = np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        return _Eval(np.inf, np.full(p, np.nan), np.nan, A, A, logdetM, np.nan)
    beta = _cho_solve(cholA, W[:p, p])
    r2 = float(W[p, p] - W[:p, p] @ beta)
    logdetA = 2.0 * float(np.sum(np.log(np.diag(cholA))))
    if r2 <= 0:
        return _Eval(np.inf, beta, r2, A, cholA, logdetM, logdetA)
    n_eff = N - p if reml else N
    dev = logdetM + n_eff * (1.0 + math.log(2.0 * math.pi * r2 / n_eff))
    if reml:
        dev += logdetA
    out = _Eval(dev, beta, r2, A, cholA, logdetM, logdetA)
    if not grad:
        return out

    Ainv = _cho_solve(cholA, np.eye(p)) if reml else None
    g_logdet = np.zeros((q, q))
    g_r2 = np.zeros((q, q))
    us = []
    for blk, b in zip(blocks, _blocks(st.n_groups), strict=True):
        gl, gr, u = _block_gradient(blk, st.ZXy[:, :, b], beta, Ainv)
        g_logdet += gl
        g_r2 += gr
        us.append(u)
    tril = _tril(q)
    out.g_logdet = g_logdet[tril]
    out.g_r2 = g_r2[tril]
    out.grad = out.g_logdet + (n_eff / r2) * out.g_r2
    out.u = np.concatenate(us, axis=1)
    return out


BLOCK = 4096  # participants per block (intermediates of a block fit in cache)


def _blocks(m: int) -> list[slice]:
    return [slice(i, min(i + BLOCK, m)) for i in range(0, m, BLOCK)]


@dataclass
class _Block:
    SL: np.ndarray  # S_i Lambda
    Lc: np.ndarray  # chol(M_i)
    C: np.ndarray  # Lc^{-1} Lambda' Z_i'[X_i y_i]
    logdetM: float
    CtC: np.ndarray  # sum_i C_i'C_i = sum_i [X y]'Z Lambda M^{-1} Lambda' Z'[X y]


def _block_factor(Lam: np.ndarray, S: np.ndarray, ZXy: np.ndarray) -> _Block:
    q = Lam.shape[0]
    SL = np.einsum("acm,cb->abm", S, Lam)
    M = np.einsum("ca,cbm->abm", Lam, SL)
    for a in range(q):
        M[a, a] += 1.0
    Lc = _chol(M)
    C = _fwd(Lc, np.einsum("ca,crm->arm", Lam, ZXy))
    logdetM = 2.0 * float(np.sum(np.log(np.diagonal(Lc, axis1=0, axis2=1))))
    return _Block(SL, Lc, C, logdetM, np.einsum("arm,asm->rs", C, C))


def _block_gradient(
    blk: _Block, ZXy: np.ndarray, beta: np.ndarray, Ainv: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient contributions of a block (see _evaluate) and its conditional modes u."""
    q, p = blk.Lc.shape[0], len(beta)
    ext = np.append(-beta, 1.0)
    u = _bwd(blk.Lc, np.einsum("arm,r->am", blk.C, ext))
    eye = np.broadcast_to(np.eye(q)[:, :, None], blk.Lc.shape).copy()
    Linv = _fwd(blk.Lc, eye)
    Minv = np.einsum("kam,kbm->abm", Linv, Linv)
    g_logdet = 2.0 * np.einsum("acm,cbm->ab", blk.SL, Minv)
    Ze = ZXy[:, p, :] - np.einsum("apm,p->am", ZXy[:, :p, :], beta)
    w = Ze - np.einsum("abm,bm->am", blk.SL, u)
    g_r2 = -2.0 * (w @ u.T)
    if Ainv is not None:  # REML: d log|A|
        H = _bwd(blk.Lc, blk.C[:, :p, :])
        K = ZXy[:, :p, :] - np.einsum("abm,bpm->apm", blk.SL, H)
        KA = np.einsum("apm,pk->akm", K, Ainv)
        g_logdet = g_logdet - 2.0 * np.einsum("akm,bkm->ab", KA, H)
    return g_logdet, g_r2, u


def profiled_deviance(theta: np.ndarray, st: SufficientStats, reml: bool = True) -> float:
    """The profiled (RE)ML deviance at ``theta`` (see the module docstring)."""
    return _evaluate(np.asarray(theta, float), st, reml, grad=False).dev


# --------------------------------------------------------------------------------------------
# Optimization
# --------------------------------------------------------------------------------------------
@dataclass
class _OptInfo:
    theta: np.ndarray
    dev: float
    n_evals: int
    message: str
    success: bool
    grad: np.ndarray
    n_starts: int


def _minimize(st: SufficientStats, reml: bool, starts: list[np.ndarray]) -> _OptInfo:
    """L-BFGS with the analytic gradient; each result is polished by a restart.

    The diagonal of Lambda is left unbounded: the deviance only depends on Lambda Lambda',
    which is unchanged when a column of Lambda changes sign, so a negative diagonal is as
    good as its mirror (normalized to >= 0 afterwards). lme4 bounds the diagonal at 0 instead,
    but there the gradient in that direction vanishes by symmetry and a bounded quasi-Newton
    method can stall on the boundary at a saddle. The relative function tolerance is near
    machine precision (the deviance is O(N)); the gradient tolerance scales with the number of
    participants. The second start is tried when the first ends with a gradient that is not
    small, and the better optimum is kept.
    """
    n_evals = 0

    def fun(th: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal n_evals
        n_evals += 1
        ev = _evaluate(th, st, reml)
        if not np.isfinite(ev.dev):
            return 1e300, np.zeros_like(th)
        return ev.dev, ev.grad

    gtol = 1e-7 * max(st.n_groups, 10)
    opts = {"ftol": 1e-14, "gtol": gtol, "maxiter": 2000, "maxcor": 20}

    def run(th0: np.ndarray):
        res = optimize.minimize(fun, th0, jac=True, method="L-BFGS-B", options=opts)
        # A restart clears the quasi-Newton memory: cheap, and it removes the occasional
        # early stop of the line search on a flat ridge.
        res2 = optimize.minimize(fun, res.x, jac=True, method="L-BFGS-B", options=opts)
        return res2 if res2.fun <= res.fun else res

    best = None
    n_starts = 0
    for th0 in starts:
        n_starts += 1
        res = run(th0)
        if best is None or res.fun < best.fun:
            best = res
        if np.max(np.abs(fun(best.x)[1])) < 1e3 * gtol:
            break
    assert best is not None
    theta = _normalize_theta(np.asarray(best.x, float), st.q)
    return _OptInfo(
        theta=theta,
        dev=float(best.fun),
        n_evals=n_evals,
        message=str(best.message),
        success=bool(best.success),
        grad=fun(theta)[1],
        n_starts=n_starts,
    )


def _normalize_theta(theta: np.ndarray, q: int) -> np.ndarray:
    """Flip the sign of each column of Lambda whose diagonal is negative (same covariance)."""
    Lam = _lambda(theta, q)
    Lam = Lam * np.where(np.diag(Lam) < 0, -1.0, 1.0)[None, :]
    return Lam[_tril(q)]


def _numgrad_hessian(fgrad, x: np.ndarray, rel_step: float = 1e-4) -> np.ndarray:
    """Hessian by central differences of an analytic gradient (error O(h^2), h ~ 1e-4)."""
    k = len(x)
    H = np.empty((k, k))
    for j in range(k):
        h = rel_step * max(abs(x[j]), 1e-1)
        e = np.zeros(k)
        e[j] = h
        H[:, j] = (fgrad(x + e) - fgrad(x - e)) / (2 * h)
    return (H + H.T) / 2


# --------------------------------------------------------------------------------------------
# Satterthwaite degrees of freedom (lmerTest's method)
# --------------------------------------------------------------------------------------------
def _unprofiled_grad(phi: np.ndarray, st: SufficientStats, reml: bool) -> np.ndarray:
    """Gradient of the deviance in (theta, sigma), beta at its optimum for theta.

    D(theta, sigma) = sum log|M_i| + r2(theta)/sigma^2 + N log(2 pi sigma^2)
                      [REML: + log|A(theta)| - p log(2 pi sigma^2)]     (lmerTest's devfun_vp)
    """
    theta, sigma = phi[:-1], phi[-1]
    ev = _evaluate(theta, st, reml)
    n_eff = st.n_obs - st.p if reml else st.n_obs
    g_theta = ev.g_logdet + ev.g_r2 / sigma**2
    g_sigma = -2.0 * ev.r2 / sigma**3 + 2.0 * n_eff / sigma
    return np.append(g_theta, g_sigma)


def _k_blocks(theta: np.ndarray, st: SufficientStats) -> np.ndarray:
    """K_i = Z_i' V_i^{-1} X_i for every participant, shape (q, p, m)."""
    q, p = st.q, st.p
    Lam = _lambda(theta, q)
    SL = np.einsum("acm,cb->abm", st.S, Lam)
    M = np.einsum("ca,cbm->abm", Lam, SL)
    for a in range(q):
        M[a, a] += 1.0
    Lc = _chol(M)
    GX = np.einsum("ca,cpm->apm", Lam, st.ZXy[:, :p, :])
    H = _bwd(Lc, _fwd(Lc, GX))  # M^{-1} Lambda' Z'X
    return st.ZXy[:, :p, :] - np.einsum("abm,bpm->apm", SL, H)


def _vcov_jacobian(theta: np.ndarray, sigma: float, st: SufficientStats, Ainv: np.ndarray):
    """d Var(beta) / d(theta, sigma) analytically, Var(beta) = sigma^2 A^{-1}.

    For theta_k = Lambda[a, b]: dA/dtheta_k = -sum_i (K_ia' (Lambda'K_i)_b + transpose), with
    K_ia the a-th row of K_i; then dA^{-1} = -A^{-1} dA A^{-1}.
    """
    q = st.q
    K = _k_blocks(theta, st)
    LK = np.einsum("ca,cpm->apm", _lambda(theta, q), K)
    rows, cols = _tril(q)
    jac = np.empty((len(theta) + 1, st.p, st.p))
    for k, (a, b) in enumerate(zip(rows, cols, strict=True)):
        outer = np.einsum("pm,rm->pr", K[a], LK[b])
        dA = -(outer + outer.T)
        jac[k] = -(sigma**2) * Ainv @ dA @ Ainv
    jac[-1] = 2.0 * sigma * Ainv
    return jac


@dataclass
class _Satt:
    acov: np.ndarray  # asymptotic covariance of (theta, sigma)
    jac: np.ndarray  # d Var(beta) / d phi, shape (k, p, p)
    warnings: list[str]


def _unprofiled_hessian(theta: np.ndarray, sigma: float, st: SufficientStats, reml: bool):
    """Hessian of the deviance in (theta, tau) with tau = sigma / sigma_hat (``sigma`` is the
    estimate sigma_hat, so tau = 1 at the optimum).

    lmerTest differentiates in (theta, sigma); sigma carries the outcome's units, and a finite
    difference step of 1e-4 * max(sigma, 0.1) was then 10% of sigma when the residual SD was
    1e-3 (and the Hessian's entries in sigma, O(N / sigma^2), dwarfed or vanished next to those
    in theta, which the eigenvalue cut-offs then dropped): df were right only for residual SDs
    between about 1e-3 and 1e4. theta is already relative to sigma, so in (theta, tau) every
    entry is free of the data's units. The Satterthwaite df are invariant to this
    reparametrization (the delta method's Jacobian changes by the same factor)."""

    def grad(x: np.ndarray) -> np.ndarray:
        g = _unprofiled_grad(np.append(x[:-1], sigma * x[-1]), st, reml)
        g[-1] *= sigma  # d/dtau = sigma_hat d/dsigma
        return g

    return _numgrad_hessian(grad, np.append(theta, 1.0))


def _profiled_hessian(H_full: np.ndarray) -> np.ndarray:
    """Hessian of the profiled deviance in theta from the unprofiled one (Schur complement:
    sigma is at its optimum for every theta)."""
    return H_full[:-1, :-1] - np.outer(H_full[:-1, -1], H_full[-1, :-1]) / H_full[-1, -1]


def _satterthwaite_parts(
    theta: np.ndarray, sigma: float, st: SufficientStats, H_full: np.ndarray, Ainv: np.ndarray
) -> _Satt:
    """Asymptotic covariance of (theta, tau) and d Var(beta) / d(theta, tau) (see
    :func:`_unprofiled_hessian`); the eigenvalue cut-off is relative to the largest."""
    msgs: list[str] = []
    evals, evecs = np.linalg.eigh(H_full)
    tol = 1e-8 * max(abs(evals).max(), np.finfo(float).tiny)
    if np.any(evals < -tol):
        msgs.append(
            "Satterthwaite: the Hessian of the deviance in the variance parameters is not "
            "positive definite; degrees of freedom use its positive part"
        )
    keep = evals > tol
    Hinv = (evecs[:, keep] / evals[keep]) @ evecs[:, keep].T
    jac = _vcov_jacobian(theta, sigma, st, Ainv)
    jac[-1] *= sigma  # d Var(beta) / d tau
    return _Satt(acov=2.0 * Hinv, jac=jac, warnings=msgs)


def _satterthwaite_df(L: np.ndarray, vcov: np.ndarray, satt: _Satt) -> float:
    """df = 2 (l' V l)^2 / (g' Acov g), g_k = l' (dV/dphi_k) l."""
    v = float(L @ vcov @ L)
    g = np.einsum("i,kij,j->k", L, satt.jac, L)
    denom = float(g @ satt.acov @ g)
    if denom <= 0 or not np.isfinite(denom):
        return float("nan")
    return 2.0 * v**2 / denom


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass
class MixedResult:
    """A fitted linear mixed model. Tables are pandas objects indexed by term name.

    ``cov_re`` is the covariance matrix of the random effects in data units,
    ``sigma2`` the residual variance, ``loglik`` the maximized (RE)ML log-likelihood on lme4's
    scale, ``df`` Satterthwaite degrees of freedom, ``warnings`` every convergence,
    boundary (singular) or inference problem found; they are never silenced.
    """

    formula: str
    group: str
    random: str
    reml: bool
    engine: str
    fe: pd.Series
    se: pd.Series
    df: pd.Series
    vcov: pd.DataFrame
    cov_re: pd.DataFrame
    sigma2: float
    loglik: float
    n_obs: int
    n_groups: int
    converged: bool
    singular: bool
    warnings: list[str] = field(default_factory=list)
    optimizer: dict[str, Any] = field(default_factory=dict)
    theta: np.ndarray | None = None
    random_effects: pd.DataFrame | None = None
    fitted: np.ndarray | None = None
    residuals: np.ndarray | None = None
    y_name: str = ""
    x_sd: pd.Series | None = None  # SD of each fixed-effect column in the fitted rows
    x_binary: pd.Series | None = None  # column takes only the values 0 and 1
    y_sd: float = float("nan")
    _satt: _Satt | None = None

    def standardized(self) -> pd.DataFrame:
        """Standardized effects: beta * SD(x) / SD(y) for continuous predictors, beta / SD(y)
        for 0/1 indicators (a Cohen's d-like shift); SD(y) is the outcome's total SD over the
        fitted rows. Interval bounds are scaled the same way. The intercept is left empty."""
        if self.x_sd is None or self.x_binary is None:
            raise ValueError("design SDs unavailable")
        scale = np.where(self.x_binary, 1.0, self.x_sd) / self.y_sd
        scale = pd.Series(np.where(self.x_sd > 0, scale, np.nan), index=self.fe.index)
        ci = self.conf_int()
        return pd.DataFrame(
            {
                "std_estimate": self.fe * scale,
                "std_ci_lower": ci["lower"] * scale,
                "std_ci_upper": ci["upper"] * scale,
            }
        )

    @property
    def t(self) -> pd.Series:
        return self.fe / self.se

    @property
    def p(self) -> pd.Series:
        return pd.Series(2 * stats.t.sf(np.abs(self.t), self.df), index=self.fe.index)

    @property
    def sd_re(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.cov_re)), index=self.cov_re.index)

    @property
    def corr_re(self) -> pd.DataFrame:
        sd = self.sd_re.to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            c = self.cov_re.to_numpy() / np.outer(sd, sd)
        return pd.DataFrame(c, index=self.cov_re.index, columns=self.cov_re.columns)

    @property
    def n_params(self) -> int:
        q = self.cov_re.shape[0]
        return len(self.fe) + q * (q + 1) // 2 + 1

    @property
    def aic(self) -> float:
        return -2 * self.loglik + 2 * self.n_params

    @property
    def bic(self) -> float:
        return -2 * self.loglik + math.log(self.n_obs) * self.n_params

    def conf_int(self, level: float = 0.95) -> pd.DataFrame:
        """Wald intervals with Satterthwaite t quantiles (normal when df is unavailable)."""
        df = self.df.to_numpy(dtype=float)
        z = np.where(np.isfinite(df), stats.t.ppf(0.5 + level / 2, np.where(df > 0, df, 1)), 0)
        z = np.where(np.isfinite(df), z, stats.norm.ppf(0.5 + level / 2))
        lo = self.fe - z * self.se
        hi = self.fe + z * self.se
        return pd.DataFrame({"lower": lo, "upper": hi})

    def summary_frame(self, level: float = 0.95) -> pd.DataFrame:
        ci = self.conf_int(level)
        return pd.DataFrame(
            {
                "estimate": self.fe,
                "se": self.se,
                "df": self.df,
                "t": self.t,
                "p": self.p,
                "ci_lower": ci["lower"],
                "ci_upper": ci["upper"],
            }
        )

    def contrast(self, weights: dict[str, float], level: float = 0.95) -> dict[str, float]:
        """Estimate, SE, Satterthwaite df, p and CI of a linear combination of fixed effects."""
        unknown = set(weights) - set(self.fe.index)
        if unknown:
            raise FormulaError(f"contrast names unknown terms: {', '.join(sorted(unknown))}")
        L = np.array([weights.get(n, 0.0) for n in self.fe.index])
        est = float(L @ self.fe.to_numpy())
        V = self.vcov.to_numpy()
        se = math.sqrt(float(L @ V @ L))
        dfv = _satterthwaite_df(L, V, self._satt) if self._satt is not None else float("nan")
        crit = stats.t.ppf(0.5 + level / 2, dfv) if np.isfinite(dfv) else stats.norm.ppf(0.975)
        tval = est / se if se > 0 else float("nan")
        pv = 2 * (stats.t.sf(abs(tval), dfv) if np.isfinite(dfv) else stats.norm.sf(abs(tval)))
        return {
            "estimate": est,
            "se": se,
            "df": dfv,
            "t": tval,
            "p": float(pv),
            "ci_lower": est - crit * se,
            "ci_upper": est + crit * se,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (no per-row arrays)."""
        tab = self.summary_frame()
        return {
            "formula": self.formula,
            "group": self.group,
            "random": self.random,
            "reml": self.reml,
            "engine": self.engine,
            "n_obs": self.n_obs,
            "n_groups": self.n_groups,
            "fixed_effects": {k: {c: _num(v) for c, v in row.items()} for k, row in tab.iterrows()},
            "cov_re": {
                r: {c: _num(self.cov_re.loc[r, c]) for c in self.cov_re.columns}
                for r in self.cov_re.index
            },
            "sigma2": _num(self.sigma2),
            "loglik": _num(self.loglik),
            "aic": _num(self.aic),
            "bic": _num(self.bic),
            "converged": self.converged,
            "singular": self.singular,
            "warnings": list(self.warnings),
            "optimizer": {
                k: _num(v) if isinstance(v, float) else v for k, v in self.optimizer.items()
            },
        }

    def __str__(self) -> str:
        lines = [
            f"Linear mixed model ({'REML' if self.reml else 'ML'}, engine {self.engine})",
            f"  {self.formula}   random {self.random} | {self.group}",
            f"  {self.n_obs} observations, {self.n_groups} groups, logLik {self.loglik:.4f}",
            self.summary_frame().to_string(float_format=lambda v: f"{v:.5g}"),
            "Random effects (SD):",
            self.sd_re.to_string(float_format=lambda v: f"{v:.5g}"),
            f"Residual SD {math.sqrt(self.sigma2):.5g}",
        ]
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# --------------------------------------------------------------------------------------------
# Design matrices
# --------------------------------------------------------------------------------------------
_RANDOM_RE = re.compile(r"^\s*~")


def _parse_formula(formula: str) -> tuple[str, str]:
    if "~" not in formula:
        raise FormulaError(f"formula {formula!r} needs an outcome and '~', e.g. 'who5 ~ time'")
    lhs, rhs = formula.split("~", 1)
    if not lhs.strip() or not rhs.strip():
        raise FormulaError(f"formula {formula!r} needs an outcome and predictors around '~'")
    return lhs.strip(), rhs.strip()


def _required_columns(rhs: str) -> set[str]:
    from formulaic import Formula

    try:
        return set(Formula(rhs).required_variables)
    except Exception as err:  # formulaic raises several parser error types
        raise FormulaError(f"cannot parse formula part {rhs!r}: {err}") from err


_SIMPLE_RHS = re.compile(r"^\s*(?:(0|1)\s*\+\s*)?[A-Za-z_]\w*(?:\s*\+\s*[A-Za-z_]\w*)*\s*$")


def _simple_matrix(rhs: str, data: pd.DataFrame) -> pd.DataFrame | None:
    """Fast path for sums of numeric column names (``a + b``, ``1 + a``, ``0 + a``, ``1``):
    numpy instead of formulaic, which matters in simulation loops. None = use formulaic."""
    rhs = rhs.strip()
    if rhs in ("1", "0 + 1", "1 + 0"):
        return pd.DataFrame({"Intercept": np.ones(len(data))})
    if not _SIMPLE_RHS.match(rhs):
        return None
    parts = [t.strip() for t in rhs.split("+")]
    intercept = True
    if parts[0] in ("0", "1"):
        intercept = parts.pop(0) == "1"
    if len(set(parts)) != len(parts):
        return None
    cols = {}
    if intercept:
        cols["Intercept"] = np.ones(len(data))
    for c in parts:
        s = data[c]
        if not (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)):
            return None  # categorical or boolean: formulaic encodes it
        cols[c] = s.to_numpy(dtype=float)
    return pd.DataFrame(cols)


def _model_matrix(rhs: str, data: pd.DataFrame) -> pd.DataFrame:
    from formulaic import model_matrix

    fast = _simple_matrix(rhs, data)
    if fast is not None:
        return fast
    try:
        mm = model_matrix(rhs, data, na_action="raise")
    except Exception as err:
        raise FormulaError(f"cannot build the design for {rhs!r}: {err}") from err
    return pd.DataFrame(np.asarray(mm, dtype=float), columns=list(mm.columns))


@dataclass
class Design:
    """Design matrices of the complete rows, with integer group codes (0..groups-1)."""

    y: np.ndarray
    X: np.ndarray
    Z: np.ndarray
    codes: np.ndarray
    groups: pd.Index
    fe_names: list[str]
    re_names: list[str]
    y_name: str
    n_dropped: int
    data: pd.DataFrame


def build_design(data: pd.DataFrame, formula: str, group: str, random: str) -> Design:
    """Parse ``formula`` and ``random`` against ``data``; drop rows missing any used column."""
    y_name, rhs = _parse_formula(formula)
    if not _RANDOM_RE.match(random or ""):
        raise FormulaError(f"random part {random!r} must start with '~', e.g. '~ time' or '~ 1'")
    re_rhs = random.split("~", 1)[1].strip() or "1"
    needed = {y_name, group} | _required_columns(rhs) | _required_columns(re_rhs)
    missing = sorted(c for c in needed if c not in data.columns)
    if missing:
        raise FormulaError(
            f"formula names unknown column(s): {', '.join(missing)}; "
            f"available: {', '.join(map(str, data.columns))}"
        )
    cols = sorted(needed)
    sub = data[cols]
    for c in cols:
        if c != group:
            _check_column(sub[c], c, is_outcome=c == y_name)
    complete = sub.notna().all(axis=1).to_numpy()
    if len(np.unique(sub.loc[complete, group])) < MIN_GROUPS:
        raise InsufficientDataError(_missing_summary(sub, group, complete))
    sub = sub.loc[complete].reset_index(drop=True)
    y = sub[y_name].to_numpy(dtype=float)
    Xdf = _model_matrix(rhs, sub)
    Zdf = _model_matrix(re_rhs, sub)
    codes, uniques = pd.factorize(sub[group], sort=True)
    return Design(
        y=y,
        X=Xdf.to_numpy(),
        Z=Zdf.to_numpy(),
        codes=codes.astype(np.intp),
        groups=pd.Index(uniques, name=group),
        fe_names=list(Xdf.columns),
        re_names=list(Zdf.columns),
        y_name=y_name,
        n_dropped=int((~complete).sum()),
        data=sub,
    )


TOO_LARGE = 1e150  # squares of larger values overflow double precision in cross-products


def _is_text(s: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s)


def _check_column(s: pd.Series, name: str, is_outcome: bool) -> None:
    """Refuse values no model can use, naming the column: numbers stored as text (formulaic
    would make one dummy per distinct value), infinite or overflowing values, a text outcome.
    Text columns of real categories are left to formulaic (dummy-coded, as lme4 does)."""
    if _is_text(s):
        values = s.dropna()
        numeric = pd.to_numeric(values, errors="coerce")
        if len(values) and numeric.notna().all():
            raise ColumnError(
                name,
                "text_numbers",
                f"column {name!r} holds numbers stored as text (e.g. {values.iloc[0]!r}); "
                "convert it to a numeric type: text columns would be treated as categories, "
                "one dummy per distinct value",
            )
        if is_outcome:
            raise ColumnError(name, "text", f"outcome column {name!r} is text, not numeric")
        return
    if is_outcome and not (
        pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)
    ):
        raise ColumnError(name, "text", f"outcome column {name!r} is not numeric ({s.dtype})")
    if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return
    v = s.to_numpy(dtype=float, na_value=np.nan)
    inf = np.isinf(v)
    if inf.any():
        raise ColumnError(
            name,
            "non_finite",
            f"column {name!r} has {int(inf.sum())} infinite value(s) (+-inf, first in row "
            f"{s.index[np.argmax(inf)]!r}); replace them by a finite value or by missing (NaN)",
        )
    big = np.nanmax(np.abs(v), initial=0.0)
    if big > TOO_LARGE:
        raise ColumnError(
            name,
            "too_large",
            f"column {name!r} has values up to {big:.3g}, too large to square in double "
            "precision; rescale it (e.g. divide by a power of ten)",
        )


def _missing_summary(sub: pd.DataFrame, group: str, complete: np.ndarray) -> str:
    """Why too few participants have complete rows: which columns are missing where."""
    n_groups = len(np.unique(sub.loc[complete, group]))
    parts = []
    for c in sub.columns:
        miss = int(sub[c].isna().sum())
        if miss:
            parts.append((miss, f"{c!r} missing in {miss} of {len(sub)} rows"))
    detail = "; ".join(t for _, t in sorted(parts, reverse=True)) or "no missing values"
    if complete.sum() == 0 and len(parts) > 1:
        detail += " (no row has all of these columns at once)"
    return (
        f"{n_groups} participant(s) with complete data; a mixed model needs at least "
        f"{MIN_GROUPS}: {detail}"
    )


def _rank(A: np.ndarray, centre: bool = False) -> int:
    """Numerical rank relative to each column's own scale, as lme4's check (pivoted QR,
    tolerance 1e-7 on the diagonal of R).

    With ``centre`` (the design has an intercept) the other columns are centered first, so a
    predictor like 1e5 + N(0, 1) counts by its variation, not by its distance from zero: it
    is independent of the intercept (lme4 fits it). A column whose variation is below 1e-10 of
    its magnitude is constant in double precision and adds nothing."""
    A = np.asarray(A, dtype=float)
    if centre:
        mean = A.mean(axis=0)
        rms = np.sqrt(np.mean(A * A, axis=0))
        varying = A.std(axis=0) > 1e-10 * rms
        A = np.column_stack([np.ones(len(A)), (A - mean)[:, varying]])
    scale = np.sqrt(np.sum(A * A, axis=0))
    A = A[:, scale > 0] / scale[scale > 0]
    if A.shape[1] == 0:
        return 0
    r = sla.qr(A, mode="r", pivoting=True)[0]
    d = np.abs(np.diag(r))
    return int(np.sum(d > 1e-7 * d.max()))


def _constant_columns(X: np.ndarray, names: list[str]) -> list[str]:
    """Non-intercept columns that do not vary (relative to their magnitude)."""
    rms = np.sqrt(np.mean(X * X, axis=0))
    const = X.std(axis=0) <= 1e-10 * rms
    return [n for n, c in zip(names, const, strict=True) if c and n != "Intercept"]


def _has_intercept(d: Design) -> bool:
    return bool(np.any(np.all(d.X == 1.0, axis=0)))


def _check_outcome(d: Design) -> None:
    """A constant outcome, or one the fixed effects explain exactly, leaves no residual
    variance: every variance estimate would be degenerate (lme4 fails or returns sigma = 0)."""
    y, name = d.y, d.y_name
    scale = max(float(np.max(np.abs(y))), np.finfo(float).tiny)
    if float(np.ptp(y)) <= 1e-12 * scale:
        raise ColumnError(
            name,
            "constant",
            f"outcome {name!r} is constant ({y[0]:.6g} in all {len(y)} complete rows): "
            "nothing varies to be modelled",
        )
    beta, *_ = np.linalg.lstsq(d.X, y, rcond=None)
    resid = y - d.X @ beta
    spread = np.linalg.norm(y - y.mean()) if _has_intercept(d) else np.linalg.norm(y)
    if np.linalg.norm(resid) <= 1e-10 * spread:
        terms = [n for n in d.fe_names if n != "Intercept"] or ["the intercept"]
        raise ColumnError(
            name,
            "zero_residual",
            f"outcome {name!r} is an exact linear function of {', '.join(terms)}: the "
            "residual variance is zero, so the model's variances cannot be estimated",
        )


def _check_design(d: Design) -> None:
    n, p = d.X.shape
    q = d.Z.shape[1]
    n_groups = len(d.groups)
    if n_groups < MIN_GROUPS:
        raise InsufficientDataError(
            f"{n_groups} participant(s) with complete data; a mixed model needs at least "
            f"{MIN_GROUPS}"
        )
    if n <= p + 1:
        raise InsufficientDataError(
            f"{n} complete observations for {p} fixed effects; need more observations"
        )
    if n <= n_groups and q > 0:
        raise InsufficientDataError(
            f"{n} observations for {n_groups} participants: every participant has one wave, so "
            "within-person variation cannot be separated from residual error; need more waves"
        )
    _check_outcome(d)
    rank = _rank(d.X, centre=_has_intercept(d))
    if rank < p:
        const = _constant_columns(d.X, d.fe_names) if _has_intercept(d) else []
        why = (
            f"constant: {', '.join(const)}"
            if const
            else f"some predictors are collinear among {', '.join(d.fe_names)}"
        )
        raise FormulaError(
            f"fixed-effect design is rank deficient ({rank} of {p} columns independent): {why}"
        )
    if q and _rank(d.Z, centre=bool(np.any(np.all(d.Z == 1.0, axis=0)))) < q:
        raise FormulaError(
            f"random-effect design {', '.join(d.re_names)} is rank deficient (constant column?)"
        )
    if q > 1:
        counts = np.bincount(d.codes)
        if counts.max() < 2:
            raise InsufficientDataError("random slopes need at least two waves per participant")


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------
def fit(
    data: pd.DataFrame,
    formula: str,
    group: str,
    random: str = "~ time",
    reml: bool = True,
    engine: str = "auto",
    satterthwaite: bool = True,
    keep_data: bool = True,
) -> MixedResult:
    """Fit ``formula`` with random effects ``random`` (unstructured covariance) per ``group``.

    ``formula`` is a Wilkinson formula (formulaic syntax, e.g. ``"who5 ~ time + C(wave)"``);
    ``random`` its random-effects part, intercept included unless written ``~ 0 + x``.
    ``engine``: ``"auto"`` (profiled likelihood for up to three random effects, else
    statsmodels), ``"profiled"`` or ``"statsmodels"``. Rows with a missing value in any used
    column are dropped (``optimizer["n_dropped"]``).
    """
    design = build_design(data, formula, group, random)
    _check_design(design)
    q = design.Z.shape[1]
    if engine == "auto":
        engine = "profiled" if q <= MAX_PROFILED_RE else "statsmodels"
    if engine == "statsmodels":
        return _fit_statsmodels(design, formula, group, random, reml)
    if engine != "profiled":
        raise ValueError(f"unknown engine {engine!r}")
    return _fit_profiled(design, formula, group, random, reml, satterthwaite, keep_data)


def _warm_start(
    d: Design, X: np.ndarray, st: SufficientStats, reml: bool, starts: list[np.ndarray]
) -> np.ndarray:
    """Optimum on a random subset of participants: a start close to the full-data optimum,
    so the full data (O(participants) per evaluation) need only a few iterations."""
    rng = np.random.default_rng(0)
    sub = np.sort(rng.choice(st.n_groups, WARM_START_GROUPS // 2, replace=False))
    rows = np.isin(d.codes, sub)
    Xy = np.column_stack([X[rows], d.y[rows]])
    st_sub = SufficientStats(
        S=np.ascontiguousarray(st.S[:, :, sub]),
        ZXy=np.ascontiguousarray(st.ZXy[:, :, sub]),
        T=Xy.T @ Xy,
        n_obs=int(rows.sum()),
        n_groups=len(sub),
        p=st.p,
        q=st.q,
    )
    return _minimize(st_sub, reml, starts).theta


def _centre_columns(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Xc, T^-1): X with every column but the intercept centered, and the map from the
    centered coefficients back to X's (identity when there is no all-ones column)."""
    p = X.shape[1]
    ones = np.flatnonzero(np.all(X == 1.0, axis=0))
    if len(ones) == 0:
        return X, np.eye(p)
    k = int(ones[0])
    means = X.mean(axis=0)
    means[k] = 0.0
    Tinv = np.eye(p)
    Tinv[k] -= means  # beta_0 = beta_c0 - sum_j mean_j beta_j
    return X - means, Tinv


def _design_scales(d: Design) -> dict[str, Any]:
    sd = d.X.std(axis=0)
    binary = np.all((d.X == 0) | (d.X == 1), axis=0) & (sd > 0)
    return {
        "x_sd": pd.Series(sd, index=d.fe_names),
        "x_binary": pd.Series(binary, index=d.fe_names),
        "y_sd": float(d.y.std()),
    }


def _fit_profiled(
    d: Design,
    formula: str,
    group: str,
    random: str,
    reml: bool,
    satterthwaite: bool,
    keep_data: bool,
) -> MixedResult:
    n, p = d.X.shape
    q = d.Z.shape[1]
    # Whiten Z (Z* = Z T with Z*'Z*/N = I): an equivalent parametrization of the unstructured
    # covariance that makes theta ~ 1 whatever the predictors' units, so one set of optimizer
    # tolerances fits all data. Sigma_b = T Sigma* T'.
    R = np.linalg.cholesky(d.Z.T @ d.Z / n).T
    Tm = sla.solve_triangular(R, np.eye(q))
    Zs = d.Z @ Tm
    # Center the other columns when there is an intercept: X = Xc T with T unit upper
    # triangular, so beta = T^-1 beta_c, Var(beta) = T^-1 Var(beta_c) T^-T and |A| (hence the
    # REML likelihood) is unchanged. A predictor like 1e5 + N(0, 1) then costs no precision
    # (uncentered, X'V^-1 X is near singular in double precision).
    Xc, Tinv = _centre_columns(d.X)
    st = sufficient_stats(Xc, Zs, d.y, d.codes, len(d.groups))
    eye = np.eye(q)[_tril(q)]
    starts = [eye, 0.3 * eye]
    if st.n_groups > WARM_START_GROUPS:
        starts = [_warm_start(d, Xc, st, reml, starts), *starts]
    opt = _minimize(st, reml, starts)
    ev = _evaluate(opt.theta, st, reml)
    n_eff = n - p if reml else n
    sigma2 = ev.r2 / n_eff
    Lam = _lambda(opt.theta, q)
    cov_re = sigma2 * Tm @ Lam @ Lam.T @ Tm.T
    vcov_c = sigma2 * _cho_solve(ev.cholA, np.eye(p))
    vcov = Tinv @ vcov_c @ Tinv.T
    beta = Tinv @ ev.beta
    se = np.sqrt(np.diag(vcov))
    msgs: list[str] = []

    singular = bool(np.min(np.abs(np.diag(Lam))) < SINGULAR_TOL) if q else False
    if singular:
        msgs.append(
            "boundary (singular) fit: the random-effects covariance is (nearly) singular, "
            "e.g. a variance at zero or a correlation at +-1; consider a simpler random part"
        )
    converged = True
    # One Hessian serves both the convergence check (profiled, in theta) and Satterthwaite
    # (unprofiled, in theta and sigma).
    H_full = _unprofiled_hessian(opt.theta, math.sqrt(sigma2), st, reml)
    H = _profiled_hessian(H_full)
    # Newton step implied by the gradient (lme4's scaled-gradient check); at a singular fit the
    # directions of zero variance are flat, so only the well-curved directions are checked.
    evals_h, evecs_h = np.linalg.eigh(H)
    curved = evals_h > 1e-8 * max(np.abs(evals_h).max(), np.finfo(float).tiny)
    g_proj = evecs_h.T @ opt.grad
    step = np.abs(evecs_h[:, curved] @ (g_proj[curved] / evals_h[curved]))
    if not singular and not curved.all():
        converged = False
        msgs.append(
            "convergence: the deviance's Hessian is not positive definite at the optimum; "
            "the estimates may not be a minimum"
        )
    if np.max(step, initial=0.0) > 1e-3:
        converged = False
        msgs.append(
            f"convergence: scaled gradient {np.max(step):.2g} > 1e-3 at the optimizer's stop "
            f"({opt.message})"
        )

    df = np.full(p, np.nan)
    satt = None
    if satterthwaite:
        satt = _satterthwaite_parts(opt.theta, math.sqrt(sigma2), st, H_full, vcov_c / sigma2)
        satt.jac = np.einsum("ab,kbc,dc->kad", Tinv, satt.jac, Tinv)  # to the original X
        msgs += satt.warnings
        for j in range(p):
            L = np.zeros(p)
            L[j] = 1.0
            df[j] = _satterthwaite_df(L, vcov, satt)
        if np.any(~np.isfinite(df)):
            msgs.append("Satterthwaite df could not be computed for some terms (normal used)")

    fitted = resid = None
    re_frame = None
    if ev.u is not None:
        b = (Tm @ (Lam @ ev.u)).T  # (m, q): BLUPs in data units
        re_frame = pd.DataFrame(b, index=d.groups, columns=d.re_names)
        if keep_data:
            fitted = d.X @ beta + np.sum(d.Z * b[d.codes], axis=1)
            resid = d.y - fitted
    loglik = -ev.dev / 2.0
    return MixedResult(
        formula=formula,
        group=group,
        random=random,
        reml=reml,
        engine="profiled",
        fe=pd.Series(beta, index=d.fe_names),
        se=pd.Series(se, index=d.fe_names),
        df=pd.Series(df, index=d.fe_names),
        vcov=pd.DataFrame(vcov, index=d.fe_names, columns=d.fe_names),
        cov_re=pd.DataFrame(cov_re, index=d.re_names, columns=d.re_names),
        sigma2=float(sigma2),
        loglik=float(loglik),
        n_obs=n,
        n_groups=len(d.groups),
        converged=converged,
        singular=singular,
        warnings=msgs,
        optimizer={
            "method": "L-BFGS-B (analytic gradient)",
            "message": opt.message,
            "n_evals": opt.n_evals,
            "n_starts": opt.n_starts,
            "max_abs_gradient": float(np.max(np.abs(opt.grad), initial=0.0)),
            "max_scaled_gradient": float(np.max(step, initial=0.0)),
            "n_dropped": d.n_dropped,
        },
        theta=opt.theta,
        random_effects=re_frame,
        fitted=fitted,
        residuals=resid,
        y_name=d.y_name,
        _satt=satt,
        **_design_scales(d),
    )


# --------------------------------------------------------------------------------------------
# statsmodels fallback
# --------------------------------------------------------------------------------------------
def _fit_statsmodels(d: Design, formula: str, group: str, random: str, reml: bool) -> MixedResult:
    """MixedLM for designs the profiled engine does not take (more than 3 random effects).

    Satterthwaite df are not available here; intervals use the normal distribution.
    """
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    msgs: list[str] = []
    model = sm.MixedLM(d.y, d.X, groups=d.codes, exog_re=d.Z)
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        res = model.fit(reml=reml, method=["lbfgs", "bfgs", "nm"])
    for w in caught:
        if issubclass(w.category, ConvergenceWarning | UserWarning | RuntimeWarning):
            msgs.append(f"statsmodels: {w.message}")
    p = d.X.shape[1]
    fe = np.asarray(res.fe_params)
    vcov = np.asarray(res.cov_params())[:p, :p]
    cov_re = np.asarray(res.cov_re)
    singular = bool(np.linalg.eigvalsh(cov_re / max(res.scale, 1e-300)).min() < SINGULAR_TOL**2)
    if singular:
        msgs.append("boundary (singular) fit: the random-effects covariance is (nearly) singular")
    msgs.append("Satterthwaite df unavailable with the statsmodels engine; normal intervals used")
    return MixedResult(
        formula=formula,
        group=group,
        random=random,
        reml=reml,
        engine="statsmodels",
        fe=pd.Series(fe, index=d.fe_names),
        se=pd.Series(np.sqrt(np.diag(vcov)), index=d.fe_names),
        df=pd.Series(np.full(p, np.inf), index=d.fe_names),
        vcov=pd.DataFrame(vcov, index=d.fe_names, columns=d.fe_names),
        cov_re=pd.DataFrame(cov_re, index=d.re_names, columns=d.re_names),
        sigma2=float(res.scale),
        loglik=float(res.llf),
        n_obs=len(d.y),
        n_groups=len(d.groups),
        converged=bool(res.converged),
        singular=singular,
        warnings=msgs + ([] if res.converged else ["statsmodels did not converge"]),
        optimizer={"method": "statsmodels MixedLM", "n_dropped": d.n_dropped},
        y_name=d.y_name,
        **_design_scales(d),
    )
