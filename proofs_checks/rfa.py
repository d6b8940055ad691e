"""Random-feature attention (arXiv 2307.11353): sympy proofs of the limit-kernel formulas and the
experiment protocol of the statistical claims (book/rfa.md).

The symbolic steps back ``rfa.limit_kernel_closed_form``; the protocol (targets, a ridge fit with
``lambda`` chosen on a validation split, relative test error) is shared by every statistical claim
so that each model is fitted the same way (one protocol, book/rfa.md "Our formulation vs the paper's").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sympy as sp
import torch
from torch import Tensor

from attnverify.proofs_checks.symbolic import SymbolicStep, difference, zero
from attnverify.reference import rfa as ref

# ---------------------------------------------------------------------------
# Symbolic steps (book/rfa.md, "The limit kernel")
# ---------------------------------------------------------------------------

_rho, _t = sp.symbols("rho t", real=True)
_h, _k = sp.symbols("h k", real=True)
_eta, _etap, _s = sp.symbols("eta eta_p s", positive=True)
_a, _b, _z = sp.symbols("a b z", real=True)
_m, _v = sp.symbols("m v", positive=True)


def _npdf(x: sp.Expr) -> sp.Expr:
    return sp.exp(-(x**2) / 2) / sp.sqrt(2 * sp.pi)


def _ncdf(x: sp.Expr) -> sp.Expr:
    return (1 + sp.erf(x / sp.sqrt(2))) / 2


def _bivariate_density(h: sp.Expr, k: sp.Expr, rho: sp.Expr) -> sp.Expr:
    q2 = 1 - rho**2
    return sp.exp(-(h**2 - 2 * rho * h * k + k**2) / (2 * q2)) / (2 * sp.pi * sp.sqrt(q2))


def biased_relu_moment(a: sp.Expr, b: sp.Expr, eta: sp.Expr, etap: sp.Expr, rho: sp.Expr, phi2: sp.Expr) -> sp.Expr:
    """The non-zero-mean ReLU moment, with ``Phi_2(alpha, beta; rho)`` passed in as ``phi2``."""
    alpha, beta = a / eta, b / etap
    q = sp.sqrt(1 - rho**2)
    return (
        (a * b + rho * eta * etap) * phi2
        + a * etap * _npdf(beta) * _ncdf((alpha - rho * beta) / q)
        + b * eta * _npdf(alpha) * _ncdf((beta - rho * alpha) / q)
        + eta * etap * q * _npdf(sp.sqrt((alpha**2 - 2 * rho * alpha * beta + beta**2) / q**2)) / sp.sqrt(2 * sp.pi)
    )


def arccos_relu_moment(eta: sp.Expr, etap: sp.Expr, rho: sp.Expr) -> sp.Expr:
    return eta * etap * (sp.sqrt(1 - rho**2) + (sp.pi - sp.acos(rho)) * rho) / (2 * sp.pi)


def limit_kernel_steps() -> tuple[SymbolicStep, ...]:
    """The sympy facts behind the closed forms; each residual must simplify to 0."""
    steps = []
    # Plackett: d/drho phi_2 = d^2/(dh dk) phi_2, so d/drho Phi_2(h, k; rho) = phi_2(h, k; rho)
    dens = _bivariate_density(_h, _k, _rho)
    steps.append(
        SymbolicStep("Plackett: d phi2/d rho = d2 phi2/(dh dk)", zero(sp.diff(dens, _rho) - sp.diff(dens, _h, _k)))
    )
    # Phi_2(0, 0; rho) = Phi_2(0, 0; 0) + int_0^rho phi_2(0, 0; t) dt = 1/4 + arcsin(rho)/(2 pi)
    integral = sp.integrate(_bivariate_density(0, 0, _t), (_t, 0, _rho), conds="none")
    phi2_origin = sp.Rational(1, 4) + sp.asin(_rho) / (2 * sp.pi)
    steps.append(
        SymbolicStep("Phi2(0,0;rho) = 1/4 + asin(rho)/(2 pi)", difference(sp.Rational(1, 4) + integral, phi2_origin))
    )
    # the biased form at a = b = 0 is the arc-cosine form
    biased0 = biased_relu_moment(sp.Integer(0), sp.Integer(0), _eta, _etap, _rho, phi2_origin)
    arccos = arccos_relu_moment(_eta, _etap, _rho).rewrite(sp.asin)
    steps.append(SymbolicStep("biased moment at a = b = 0 equals the arc-cosine moment", difference(biased0, arccos)))
    # at rho = 0 the biased form factorises into prod (a Phi(alpha) + eta phi(alpha))
    alpha, beta = _a / _eta, _b / _etap
    factor = (_a * _ncdf(alpha) + _eta * _npdf(alpha)) * (_b * _ncdf(beta) + _etap * _npdf(beta))
    at0 = biased_relu_moment(_a, _b, _eta, _etap, sp.Integer(0), _ncdf(alpha) * _ncdf(beta))
    steps.append(SymbolicStep("biased moment at rho = 0 factorises", difference(at0, factor)))
    # E ReLU(u) = eta/sqrt(2 pi), E ReLU(u)^2 = eta^2/2 for u ~ N(0, eta^2)
    first = sp.integrate(_eta * _z * _npdf(_z), (_z, 0, sp.oo))
    second = sp.integrate((_eta * _z) ** 2 * _npdf(_z), (_z, 0, sp.oo))
    steps.append(SymbolicStep("E ReLU(u) = eta/sqrt(2 pi)", difference(first, _eta / sp.sqrt(2 * sp.pi))))
    steps.append(SymbolicStep("E ReLU(u)^2 = eta^2/2", difference(second, _eta**2 / 2)))
    # lognormal moment: E e^w = e^{m + v/2} for w ~ N(m, v), with w = u + u', v = eta^2 + eta'^2 + 2c
    mgf = sp.integrate(sp.exp(_z) * sp.exp(-((_z - _m) ** 2) / (2 * _v)) / sp.sqrt(2 * sp.pi * _v), (_z, -sp.oo, sp.oo))
    steps.append(
        SymbolicStep("E exp(w) = exp(m + v/2), w ~ N(m, v)", difference(mgf.rewrite(sp.erf), sp.exp(_m + _v / 2)))
    )
    # on the sphere |x~|^2 = 2, so rho = (1 + x0.x0')(1 + xi.xj')/4 for every s
    c0, cij = sp.symbols("c_0 c_ij", real=True)
    rho_sphere = _s**2 * (1 + c0) * (1 + cij) / sp.sqrt((_s**2 * 2 * 2) * (_s**2 * 2 * 2))
    steps.append(
        SymbolicStep("rho on the sphere = (1 + x0.x0')(1 + xi.xj')/4", difference(rho_sphere, (1 + c0) * (1 + cij) / 4))
    )
    return tuple(steps)


# ---------------------------------------------------------------------------
# Targets and the fitting protocol (book/rfa.md, "The experiments")
# ---------------------------------------------------------------------------

TARGETS = ("linear", "quadratic", "cos3", "degenerate")


def target(name: str, x0: Tensor, X: Tensor) -> Tensor:
    """``(n,)`` noiseless labels: ``(1/N) sum_i <x0, xi>`` (``linear``), its square-per-key version
    (``quadratic``), ``(1/N) sum_i cos(3 <x0, xi>)`` (``cos3``), or the degenerate pairwise control
    ``(1/N^2) sum_ij <xi, xj>^2`` (``degenerate``: orthogonal to every ``(1/N) sum_i F(x0, xi)``)."""
    inner = torch.einsum("bk,bik->bi", x0, X)
    if name == "linear":
        return inner.mean(-1)
    if name == "quadratic":
        return (inner**2).mean(-1)
    if name == "cos3":
        return torch.cos(3 * inner).mean(-1)
    if name == "degenerate":
        return (torch.einsum("bik,bjk->bij", X, X) ** 2).mean((-2, -1))
    raise ValueError(f"name: expected one of {TARGETS}, got {name!r}")


def relative_mse(pred: Tensor, truth: Tensor) -> float:
    """``mean (f_hat - f*)^2 / Var(f*)`` on the test set (the relative excess risk, noiseless labels)."""
    return float(((pred - truth) ** 2).mean() / truth.var())


RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
"""``lambda`` candidates in units of ``tr(K_hat)/n^2``, so that the kernel-ridge shift ``n lambda`` runs over
these multiples of the mean eigenvalue ``tr(K_hat)/n`` (the same for every model)."""


@dataclass(frozen=True)
class Data:
    """A training set and a test set of one seed: inputs and noiseless labels."""

    x0: Tensor
    X: Tensor
    y: Tensor
    x0_test: Tensor
    X_test: Tensor
    y_test: Tensor

    def first(self, n: int) -> Data:
        """The first ``n`` training points (nested designs share data across ``n``)."""
        return Data(self.x0[:n], self.X[:n], self.y[:n], self.x0_test, self.X_test, self.y_test)


def make_data(name: str, n: int, n_test: int, N: int, d: int, seed: int) -> Data:
    g = torch.Generator().manual_seed(10_007 * seed + 17)
    x0, X = ref.sample_inputs(n, N, d, g)
    x0t, Xt = ref.sample_inputs(n_test, N, d, g)
    return Data(x0, X, target(name, x0, X), x0t, Xt, target(name, x0t, Xt))


@dataclass(frozen=True)
class Fit:
    error: float
    """Relative test MSE."""
    ridge: float
    """The chosen ``lambda``."""


def fit_and_test(model: Any, data: Data, heads: int) -> Fit:
    """Ridge with ``lambda`` from :data:`RIDGE_GRID` ``x tr(K_hat)/n^2`` chosen on a 20 % validation split,
    then the model fitted on all the data and scored on the test set.

    ``model`` has ``features(x0, X) -> (n, p)``, ``fit(x0, X, y, ridge)``, ``predict(x0, X)``; ``heads``
    is its ``M`` (``K_hat = Phi Phiᵀ / M``).  The validation fits are the reference ridge
    (:func:`attnverify.reference.rfa.ridge_solutions`, one Gram matrix for the whole grid) on the model's
    features, the same protocol for every model; only the final fit and the test predictions are the model's own.
    """
    n = data.y.shape[0]
    cut = n - n // 5
    Phi = model.features(data.x0, data.X).to(torch.float64)
    scale = float((Phi**2).sum()) / (n * heads) / n
    ridges = [c * scale for c in RIDGE_GRID]
    solutions = ref.ridge_solutions(Phi[:cut], data.y[:cut], ridges, heads)
    _, ridge = min(zip((relative_mse(Phi[cut:] @ v, data.y[cut:]) for v in solutions), ridges, strict=True))
    model.fit(data.x0, data.X, data.y, ridge)
    return Fit(relative_mse(model.predict(data.x0_test, data.X_test), data.y_test), ridge)
