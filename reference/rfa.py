"""Random-feature attention (Fu, Guo, Bai, Mei 2023), written plainly in float64.

Transcribes the model of arXiv 2307.11353 ("What can a Single Attention Layer Learn? A Study
Through the Random Features Lens", Sec. 2) in the formulation of ``book/rfa.md`` ("Our
formulation vs the paper's"): one multi-head attention layer whose query-key matrices are
random and frozen, ReLU in place of softmax, keys pooled by ``1/N``, only the values trained.
This is *not* Peng et al.'s "Random Feature Attention" (a softmax approximation).

Notation (one row ``b`` of a batch of ``n`` inputs):

* query ``x0: (n, d)``, keys ``X: (n, N, d)``; augmented tokens ``x~ = [x; 1]`` of width ``D = d + 1``;
* heads ``W: (M, D, D)``, ``W_m = W0 + s G_m`` with ``G_m`` standard Gaussian, drawn once;
* scores ``u_{bmi} = x~0ᵀ W_m x~i``; head features ``phi_m(X) = (1/N) sum_i sigma(u_i) x~i``;
* the feature matrix ``(n, M*D)`` is head-major: column ``m*D + k`` is entry ``k`` of head ``m``.

Nothing here validates its input beyond the constructor's arguments (the fast API does that).
Every modelling choice the paper might make differently is a field of :class:`RFAConfig`;
``PAPER_PINNED`` says none of them has been pinned to the paper's text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import special
from torch import Tensor

PAPER_PINNED = False
"""No choice below has been confirmed against the paper's text (book/rfa.md, "Our formulation vs the paper's")."""

ACTIVATIONS = ("relu", "exp")
MEANS = ("zero", "biased")
SOLVERS = ("auto", "primal", "dual")


@dataclass(frozen=True)
class RFAConfig:
    """Our formulation: every choice the paper might make differently, with our default."""

    s2: float = 0.25
    """Variance ``s^2`` of the Gaussian part of ``W``; 1/4 gives scores of unit variance on the sphere."""
    mean: str = "zero"
    """``"zero"``: ``W0 = 0``; ``"biased"``: ``W0 = diag(I_d, 0)`` (no mean on the augmented coordinate)."""
    activation: str = "relu"
    """``"relu"`` (the paper's) or ``"exp"`` (not the paper's model; a lognormal kernel)."""
    augment: bool = True
    """Tokens ``[x; 1]`` (``D = d + 1``); ``False`` uses ``x`` itself (``D = d``)."""
    radius: float = 1.0
    """Inputs uniform on the sphere of this radius."""
    solver: str = "auto"
    """Ridge solver: ``"auto"`` takes the dual when ``n < M D``."""


DEFAULTS = RFAConfig()


# ---------------------------------------------------------------------------
# Inputs and weights
# ---------------------------------------------------------------------------


def sample_sphere(shape: tuple[int, ...], d: int, generator: torch.Generator, radius: float = 1.0) -> Tensor:
    """``(*shape, d)`` points uniform on the sphere of ``radius`` in ``R^d`` (normalised Gaussians)."""
    g = torch.randn((*shape, d), generator=generator, dtype=torch.float64)
    return radius * g / g.norm(dim=-1, keepdim=True)


def sample_inputs(n: int, N: int, d: int, generator: torch.Generator, radius: float = 1.0) -> tuple[Tensor, Tensor]:
    """``n`` i.i.d. inputs: queries ``x0: (n, d)`` and keys ``X: (n, N, d)``, all uniform on the sphere."""
    return sample_sphere((n,), d, generator, radius), sample_sphere((n, N), d, generator, radius)


def augment(x: Tensor, on: bool = True) -> Tensor:
    """``x~ = [x; 1]`` along the last axis (``on=False``: ``x`` itself)."""
    if not on:
        return x
    return torch.cat([x, torch.ones((*x.shape[:-1], 1), dtype=x.dtype, device=x.device)], dim=-1)


def mean_matrix(d: int, mean: str, augment: bool = True) -> Tensor:
    """``W0``: zero, or ``diag(I_d, 0)`` (``"biased"``: mean score ``<x0, xi>``; the augmented coordinate untouched)."""
    D = d + 1 if augment else d
    W0 = torch.zeros((D, D), dtype=torch.float64)
    if mean == "biased":
        W0[:d, :d] = torch.eye(d, dtype=torch.float64)
    elif mean != "zero":
        raise ValueError(f"mean: expected one of {MEANS}, got {mean!r}")
    return W0


def draw_weights(M: int, d: int, s2: float, mean: str, generator: torch.Generator, augment: bool = True) -> Tensor:
    """``W: (M, D, D)``, ``W_m = W0 + s G_m`` with ``G_m`` i.i.d. standard Gaussian (only ``G`` is scaled by ``s``)."""
    D = d + 1 if augment else d
    G = torch.randn((M, D, D), generator=generator, dtype=torch.float64)
    return mean_matrix(d, mean, augment) + math.sqrt(s2) * G


def activate(u: Tensor, activation: str) -> Tensor:
    """``sigma(u)``: ReLU (the paper's) or exp."""
    if activation == "relu":
        return torch.relu(u)
    if activation == "exp":
        return torch.exp(u)
    raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")


# ---------------------------------------------------------------------------
# The model (arXiv 2307.11353, Sec. 2; book/rfa.md, "The model")
# ---------------------------------------------------------------------------


def features(x0: Tensor, X: Tensor, W: Tensor, activation: str = "relu", augmented: bool = True) -> Tensor:
    """``(n, M*D)``: head ``m``'s block is ``phi_{W_m}(X) = (1/N) sum_i sigma(x~0ᵀ W_m x~i) x~i``."""
    n, N = X.shape[0], X.shape[1]
    xt0, Xt = augment(x0, augmented), augment(X, augmented)  # (n, D), (n, N, D)
    # q_{bm} = W_mᵀ x~0, so that u_{bmi} = x~0ᵀ W_m x~i = <q_{bm}, x~i>           (n, M, D), (n, M, N)
    q = torch.einsum("bk,mkl->bml", xt0, W)
    u = torch.einsum("bml,bil->bmi", q, Xt)
    # phi_{bm} = (1/N) sum_i sigma(u_{bmi}) x~i                               (n, M, D)
    phi = torch.einsum("bmi,bil->bml", activate(u, activation), Xt) / N
    return phi.reshape(n, -1)


def ridge_solutions(Phi: Tensor, y: Tensor, ridges: Sequence[float], M: int, solver: str = "auto") -> list[Tensor]:
    """``v = argmin (1/n)|y - Phi v|^2 + ridge * M |v|^2`` for each ``ridge`` (the ``lambda M`` scaling mirrors
    the norm ball), one Gram matrix for all of them.

    Primal: ``v = (PhiᵀPhi + n lambda M I)^{-1} Phiᵀ y``; dual: ``v = Phiᵀ (Phi Phiᵀ + n lambda M I)^{-1} y``;
    ``"auto"`` takes the dual when ``n < Phi.shape[1]``.
    """
    n, p = Phi.shape
    if solver not in SOLVERS:
        raise ValueError(f"solver: expected one of {SOLVERS}, got {solver!r}")
    if solver == "dual" or (solver == "auto" and n < p):
        gram = Phi @ Phi.T
        eye = torch.eye(n, dtype=Phi.dtype)
        return [Phi.T @ torch.linalg.solve(gram + n * ridge * M * eye, y) for ridge in ridges]
    gram, rhs = Phi.T @ Phi, Phi.T @ y
    eye = torch.eye(p, dtype=Phi.dtype)
    return [torch.linalg.solve(gram + n * ridge * M * eye, rhs) for ridge in ridges]


def ridge_solve(Phi: Tensor, y: Tensor, ridge: float, M: int, solver: str = "auto") -> Tensor:
    """:func:`ridge_solutions` for one ``ridge``."""
    return ridge_solutions(Phi, y, [ridge], M, solver)[0]


class RandomFeatureAttention:
    """``f_M(X; V) = sum_m <v_m, phi_{W_m}(X)>`` with ``W`` drawn once at construction (Sec. 2)."""

    def __init__(
        self,
        d: int,
        M: int,
        s2: float = 0.25,
        mean: str = "zero",
        activation: str = "relu",
        seed: int = 0,
        *,
        augment: bool = True,
        solver: str = "auto",
    ) -> None:
        if not (isinstance(d, int) and d >= 1):
            raise ValueError(f"d: expected a positive int, got {d!r}")
        if not (isinstance(M, int) and M >= 1):
            raise ValueError(f"M: expected a positive int (heads), got {M!r}")
        if not s2 > 0:
            raise ValueError(f"s2: expected a positive variance, got {s2!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
        if solver not in SOLVERS:
            raise ValueError(f"solver: expected one of {SOLVERS}, got {solver!r}")
        self.d, self.M, self.s2, self.mean, self.activation = d, M, s2, mean, activation
        self.augment, self.solver = augment, solver
        self.W = draw_weights(M, d, s2, mean, torch.Generator().manual_seed(seed), augment)
        self.v: Tensor | None = None

    def features(self, x0: Tensor, X: Tensor) -> Tensor:
        """``(n, M*D)``, head-major, not scaled by ``1/sqrt(M)``."""
        return features(x0, X, self.W, self.activation, self.augment)

    def kernel_estimate(self, x0: Tensor, X: Tensor, x0p: Tensor, Xp: Tensor) -> tuple[Tensor, Tensor]:
        """``K_hat_M(X, X')`` per row pair ``(n,)`` and its standard error ``(n,)``.

        ``K_hat_M = (1/M) sum_m <phi_{W_m}(X), phi_{W_m}(X')>`` is a mean of ``M`` i.i.d. per-head products, so its
        standard error is their SD over **heads** divided by ``sqrt(M)``; the ``D`` entries of one head share its
        scores and are not independent samples.
        """
        n = x0.shape[0]
        f = self.features(torch.cat([x0, x0p]), torch.cat([X, Xp])).reshape(2 * n, self.M, -1)
        prod = (f[:n] * f[n:]).sum(-1)  # (n, M): one product per head
        return prod.mean(-1), prod.std(-1) / math.sqrt(self.M)

    def fit(self, x0: Tensor, X: Tensor, y: Tensor, ridge: float) -> RandomFeatureAttention:
        """Closed-form ridge with the ``lambda M`` scaling (:func:`ridge_solve`)."""
        self.v = ridge_solve(self.features(x0, X), y, ridge, self.M, self.solver)
        return self

    def predict(self, x0: Tensor, X: Tensor) -> Tensor:
        """``(n,)``: ``f_M(X; V)``."""
        if self.v is None:
            raise ValueError("predict: the model is not fitted (call fit first)")
        return self.features(x0, X) @ self.v


class RandomFeatureMLP:
    """Baseline: ``g(X) = sum_k a_k ReLU(<w_k, z>)``, ``z = vec(x~_{0:N}) / |vec(x~_{0:N})|``, ``w_k ~ N(0, I)``.

    ``M_prime`` trainable weights (equal trainable parameters to attention: ``M_prime = M D``); the
    same ridge with ``lambda M_prime`` scaling.  Its limit kernel is the arc-cosine kernel on ``z``.
    """

    def __init__(self, d: int, N: int, M_prime: int, seed: int = 0) -> None:
        if not (isinstance(N, int) and N >= 1):
            raise ValueError(f"N: expected a positive int (keys), got {N!r}")
        if not (isinstance(M_prime, int) and M_prime >= 1):
            raise ValueError(f"M_prime: expected a positive int, got {M_prime!r}")
        self.d, self.N, self.M = d, N, M_prime
        width = (N + 1) * (d + 1)
        self.w = torch.randn((width, M_prime), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        self.a: Tensor | None = None

    def inputs(self, x0: Tensor, X: Tensor) -> Tensor:
        """``z: (n, (N+1) D)``, the normalised concatenation of the augmented tokens."""
        z = augment(torch.cat([x0[:, None, :], X], dim=1)).reshape(x0.shape[0], -1)
        return z / z.norm(dim=-1, keepdim=True)

    def features(self, x0: Tensor, X: Tensor) -> Tensor:
        """``(n, M_prime)``: ``ReLU(<w_k, z>)``."""
        return torch.relu(self.inputs(x0, X) @ self.w)

    def fit(self, x0: Tensor, X: Tensor, y: Tensor, ridge: float) -> RandomFeatureMLP:
        self.a = ridge_solve(self.features(x0, X), y, ridge, self.M)
        return self

    def predict(self, x0: Tensor, X: Tensor) -> Tensor:
        if self.a is None:
            raise ValueError("predict: the model is not fitted (call fit first)")
        return self.features(x0, X) @ self.a


# ---------------------------------------------------------------------------
# The many-head limit kernel (book/rfa.md, "The limit kernel"; derived)
# ---------------------------------------------------------------------------


def bivariate_normal_cdf(h: np.ndarray, k: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """``Phi_2(h, k; rho) = P(Z1 <= h, Z2 <= k)``, standard margins, through Owen's T (scipy).

    ``Phi_2 = (Phi(h) + Phi(k))/2 - T(h, a_h) - T(k, a_k) - delta`` with ``a_h = (k - rho h)/(h q)``,
    ``q = sqrt(1 - rho^2)``, ``delta = 1/2`` when ``h k < 0`` (or one is 0 and the other negative);
    the limits ``h = 0``, ``k = 0`` and ``|rho| = 1`` are taken exactly.
    """
    h, k, rho = np.broadcast_arrays(*(np.asarray(t, dtype=np.float64) for t in (h, k, rho)))
    rho = np.clip(rho, -1.0, 1.0)
    q = np.sqrt(1.0 - rho * rho)
    out = np.empty(h.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        both = (h != 0) & (k != 0)
        general = 0.5 * (special.ndtr(h) + special.ndtr(k))
        general -= special.owens_t(h, (k - rho * h) / (h * q)) + special.owens_t(k, (h - rho * k) / (k * q))
        general -= np.where(h * k < 0, 0.5, 0.0)
        # h = 0 (k != 0): Phi_2 = Phi(k)/2 - T(k, -rho/q); symmetric for k = 0
        h_zero = 0.5 * special.ndtr(k) - special.owens_t(k, -rho / q)
        k_zero = 0.5 * special.ndtr(h) - special.owens_t(h, -rho / q)
        origin = 0.25 + np.arcsin(rho) / (2 * np.pi)
    out = np.where(both, general, np.where(h == 0, np.where(k == 0, origin, h_zero), k_zero))
    plus = special.ndtr(np.minimum(h, k))
    minus = np.maximum(special.ndtr(h) + special.ndtr(k) - 1.0, 0.0)
    return np.where(q == 0, np.where(rho > 0, plus, minus), out)


def relu_product_moment(a: np.ndarray, b: np.ndarray, eta: np.ndarray, etap: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """``E[ReLU(u) ReLU(u')]`` for Gaussian ``(u, u')``: means ``a, b``, SDs ``eta, eta'``, correlation ``rho``.

    ``(ab + rho eta eta') Phi_2(alpha, beta; rho) + a eta' phi(beta) Phi((alpha - rho beta)/q)
    + b eta phi(alpha) Phi((beta - rho alpha)/q)
    + eta eta' q phi(sqrt((alpha^2 - 2 rho alpha beta + beta^2)/q^2)) / sqrt(2 pi)``
    with ``alpha = a/eta``, ``beta = b/eta'``; at ``rho = 1`` the comonotone limit
    ``(ab + eta eta') Phi(t) + (a eta' + b eta - eta eta' t) phi(t)``, ``t = min(alpha, beta)``.
    """
    a, b, eta, etap, rho = np.broadcast_arrays(*(np.asarray(t, dtype=np.float64) for t in (a, b, eta, etap, rho)))
    rho = np.clip(rho, -1.0, 1.0)
    alpha, beta = a / eta, b / etap
    q = np.sqrt(1.0 - rho * rho)
    with np.errstate(divide="ignore", invalid="ignore"):
        safe_q = np.where(q > 0, q, 1.0)
        m = np.sqrt(np.maximum(alpha * alpha - 2 * rho * alpha * beta + beta * beta, 0.0) / (safe_q * safe_q))
        general = (
            (a * b + rho * eta * etap) * bivariate_normal_cdf(alpha, beta, rho)
            + a * etap * _phi(beta) * special.ndtr((alpha - rho * beta) / safe_q)
            + b * eta * _phi(alpha) * special.ndtr((beta - rho * alpha) / safe_q)
            + eta * etap * q * _phi(m) / math.sqrt(2 * math.pi)
        )
    t = np.minimum(alpha, beta)
    comonotone = (a * b + eta * etap) * special.ndtr(t) + (a * etap + b * eta - eta * etap * t) * _phi(t)
    return np.where(q > 0, general, comonotone)


def _phi(x: np.ndarray) -> np.ndarray:
    """Standard normal density."""
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def arccos_moment(eta: np.ndarray, etap: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Zero mean: ``E[ReLU(u) ReLU(u')] = eta eta' (sqrt(1 - rho^2) + (pi - arccos rho) rho) / (2 pi)`` (arc-cosine)."""
    rho = np.clip(np.asarray(rho, dtype=np.float64), -1.0, 1.0)
    return eta * etap * (np.sqrt(1.0 - rho * rho) + (np.pi - np.arccos(rho)) * rho) / (2 * np.pi)


def score_moments(
    x0: Tensor, X: Tensor, x0p: Tensor, Xp: Tensor, s2: float, mean: str, augmented: bool = True
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Joint law of ``(u_i(X), u_j(X'))``: means ``a (n,N,1)``, ``b (n,1,N)``, variances, covariance ``c (n,N,N)``."""
    d = x0.shape[-1]
    W0 = mean_matrix(d, mean, augmented).to(x0.dtype)
    xt0, Xt, xt0p, Xtp = (augment(t, augmented) for t in (x0, X, x0p, Xp))
    a = torch.einsum("bk,kl,bil->bi", xt0, W0, Xt)[:, :, None]
    b = torch.einsum("bk,kl,bil->bi", xt0p, W0, Xtp)[:, None, :]
    eta2 = s2 * (xt0 * xt0).sum(-1)[:, None, None] * (Xt * Xt).sum(-1)[:, :, None]
    etap2 = s2 * (xt0p * xt0p).sum(-1)[:, None, None] * (Xtp * Xtp).sum(-1)[:, None, :]
    c = s2 * (xt0 * xt0p).sum(-1)[:, None, None] * torch.einsum("bik,bjk->bij", Xt, Xtp)
    return a, b, eta2, etap2, c


def kappa(
    x0: Tensor, X: Tensor, x0p: Tensor, Xp: Tensor, s2: float = 0.25, mean: str = "zero", activation: str = "relu"
) -> Tensor:
    """``kappa_ij = E_W[sigma(u_i(X)) sigma(u_j(X'))]``: ``(n, N, N)`` for ``n`` row pairs."""
    a, b, eta2, etap2, c = (t.numpy() for t in score_moments(x0, X, x0p, Xp, s2, mean))
    if activation == "exp":  # lognormal moment E[e^{u + u'}]
        out = np.exp(a + b + 0.5 * (eta2 + etap2 + 2 * c))
    elif activation == "relu":
        eta, etap = np.sqrt(eta2), np.sqrt(etap2)
        rho = c / (eta * etap)
        out = arccos_moment(eta, etap, rho) if mean == "zero" else relu_product_moment(a, b, eta, etap, rho)
    else:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    return torch.from_numpy(np.ascontiguousarray(out))


def limit_kernel(
    x0: Tensor, X: Tensor, x0p: Tensor, Xp: Tensor, s2: float = 0.25, mean: str = "zero", activation: str = "relu"
) -> Tensor:
    """``K(X, X') = E_W <phi_W(X), phi_W(X')> = (1/N^2) sum_ij <x~i, x~'j> kappa_ij``: ``(n,)`` for row pairs."""
    N = X.shape[1]
    gram = torch.einsum("bik,bjk->bij", augment(X), augment(Xp))
    return (gram * kappa(x0, X, x0p, Xp, s2, mean, activation)).sum((-2, -1)) / N**2
