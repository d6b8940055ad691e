"""Planted bugs for the random-feature attention claims (book/rfa.md, "The mutants").

Two subjects: the feature map ``fn(x0, X, W) -> (n, M*D)`` and the model factory
``fn(d, M, s2, mean, activation, seed)`` whose object has ``features``, ``fit`` and ``predict``.
Every mutant has its subject's signature and is a bug from the pitfalls of book/rfa.md.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor

from attnverify.reference import rfa as ref
from attnverify.registry import Mutant

F64 = (torch.float64,)

# ---------------------------------------------------------------------------
# Feature-map subject: fn(x0 (n, d), X (n, N, d), W (M, D, D)) -> (n, M*D)
# ---------------------------------------------------------------------------


def _scores(x0: Tensor, X: Tensor, W: Tensor) -> tuple[Tensor, Tensor]:
    xt0, Xt = ref.augment(x0), ref.augment(X)
    return torch.einsum("bk,mkl,bil->bmi", xt0, W, Xt), Xt


def sqrt_n_pooling(x0: Tensor, X: Tensor, W: Tensor) -> Tensor:
    """Keys pooled by ``1/sqrt(N)`` (the softmax-attention habit of scaling by a square root)."""
    u, Xt = _scores(x0, X, W)
    return (torch.einsum("bmi,bil->bml", torch.relu(u), Xt) / math.sqrt(X.shape[1])).reshape(x0.shape[0], -1)


def softmax_pooling(x0: Tensor, X: Tensor, W: Tensor) -> Tensor:
    """ReLU scores normalised by their sum, as softmax normalises (the layer pools by ``1/N``)."""
    u, Xt = _scores(x0, X, W)
    w = torch.relu(u)
    w = w / w.sum(-1, keepdim=True).clamp_min(1e-300)
    return torch.einsum("bmi,bil->bml", w, Xt).reshape(x0.shape[0], -1)


def query_among_keys(x0: Tensor, X: Tensor, W: Tensor) -> Tensor:
    """The query also counted as a key: ``1/(N+1)`` over ``x_0..x_N``."""
    return ref.features(x0, torch.cat([x0[:, None, :], X], dim=1), W)


def transposed_score(x0: Tensor, X: Tensor, W: Tensor) -> Tensor:
    """``u_i = x~iᵀ W x~0`` (the transpose): the same law, a different function of ``W``."""
    return ref.features(x0, X, W.transpose(-1, -2))


def key_major_columns(x0: Tensor, X: Tensor, W: Tensor) -> Tensor:
    """Column ``k*M + m`` instead of ``m*D + k``: a reshape-order mismatch, invisible in the kernel."""
    n, M, D = x0.shape[0], W.shape[0], W.shape[-1]
    return ref.features(x0, X, W).reshape(n, M, D).transpose(1, 2).reshape(n, M * D)


def scores_unaugmented(x0: Tensor, X: Tensor, W: Tensor) -> Tensor:
    """Augmentation missing from the scores: ``u_i = x0ᵀ W[:d, :d] xi`` (the pooled tokens still augmented)."""
    d = x0.shape[-1]
    u = torch.einsum("bk,mkl,bil->bmi", x0, W[:, :d, :d], X)
    return (torch.einsum("bmi,bil->bml", torch.relu(u), ref.augment(X)) / X.shape[1]).reshape(x0.shape[0], -1)


SQRT_N_POOLING = Mutant("sqrt_n_pooling", "keys pooled by 1/sqrt(N) instead of 1/N", sqrt_n_pooling)
SOFTMAX_POOLING = Mutant("softmax_pooling", "ReLU scores normalised by their sum (softmax habit)", softmax_pooling)
QUERY_AMONG_KEYS = Mutant("query_among_keys", "the query counted as one more key", query_among_keys)
TRANSPOSED_SCORE = Mutant("transposed_score", "score x~iᵀ W x~0 instead of x~0ᵀ W x~i", transposed_score)
KEY_MAJOR_COLUMNS = Mutant("key_major_columns", "features reshaped key-major instead of head-major", key_major_columns)
SCORES_UNAUGMENTED = Mutant("scores_unaugmented", "augmentation [x; 1] missing from the scores", scores_unaugmented)

# ---------------------------------------------------------------------------
# Model subject: fn(d, M, s2, mean, activation, seed) -> object with features / fit / predict
# ---------------------------------------------------------------------------


class _Redrawn(ref.RandomFeatureAttention, abc.ABC):
    """Draws ``W`` in the constructor and overrides it afterwards in ways the pitfalls name."""

    def __init__(self, d: int, M: int, s2: float, mean: str, activation: str, seed: int) -> None:
        super().__init__(d, M, s2, mean, activation, seed)
        G = (self.W - ref.mean_matrix(d, mean)) / math.sqrt(s2)  # the standard Gaussian part
        self.W = self.weights(G, ref.mean_matrix(d, mean), s2)

    @abc.abstractmethod
    def weights(self, G: Tensor, W0: Tensor, s2: float) -> Tensor:
        """The wrong ``W`` built from the standard Gaussian part ``G`` and the mean ``W0``."""


class WeightStdS2(_Redrawn):
    """``W = W0 + s^2 G``: the variance written where the standard deviation belongs."""

    def weights(self, G: Tensor, W0: Tensor, s2: float) -> Tensor:
        return W0 + s2 * G


class MeanScaledByS(_Redrawn):
    """``W = s (W0 + G)``: the mean scaled together with the noise."""

    def weights(self, G: Tensor, W0: Tensor, s2: float) -> Tensor:
        return math.sqrt(s2) * (W0 + G)


class MeanOnAugmented(_Redrawn):
    """``W0 = I_D``: the mean also on the augmented coordinate (mean score ``<x0, xi> + 1``)."""

    def weights(self, G: Tensor, W0: Tensor, s2: float) -> Tensor:
        D = W0.shape[0]
        return (torch.eye(D, dtype=W0.dtype) if W0.any() else W0) + math.sqrt(s2) * G


class MeanIgnored(ref.RandomFeatureAttention):
    """The ``mean`` option accepted but never used: every model is zero-mean."""

    def __init__(self, d: int, M: int, s2: float, mean: str, activation: str, seed: int) -> None:
        super().__init__(d, M, s2, "zero", activation, seed)


class RedrawPerCall(ref.RandomFeatureAttention):
    """A fresh ``W`` on every call of ``features`` (the model is re-sampled between fit and predict)."""

    def features(self, x0: Tensor, X: Tensor) -> Tensor:
        self.calls = getattr(self, "calls", 0) + 1
        g = torch.Generator().manual_seed(7919 * self.calls)
        self.W = ref.draw_weights(self.M, self.d, self.s2, self.mean, g)
        return super().features(x0, X)


class RidgeScaledTwice(ref.RandomFeatureAttention):
    """Penalty ``lambda n M |v|^2`` on the mean loss: ``lambda`` scaled by ``n`` twice (shift ``n^2 lambda M``)."""

    def fit(self, x0: Tensor, X: Tensor, y: Tensor, ridge: float) -> RidgeScaledTwice:
        return super().fit(x0, X, y, ridge * y.shape[0])  # type: ignore[return-value]


class ModelQueryAmongKeys(ref.RandomFeatureAttention):
    """The model's features count the query as one more key."""

    def features(self, x0: Tensor, X: Tensor) -> Tensor:
        return query_among_keys(x0, X, self.W)


class SEOverEntries(ref.RandomFeatureAttention):
    """The standard error of ``K_hat_M`` from its ``M D`` entry products taken as independent samples.

    ``K_hat_M = D * mean(entries)``, so the SE is reported as ``D * SD(entries) / sqrt(M D)``; the ``D`` entries
    of one head share its scores, and the right SE is the SD of the per-head sums over ``sqrt(M)``.
    """

    def kernel_estimate(self, x0: Tensor, X: Tensor, x0p: Tensor, Xp: Tensor) -> tuple[Tensor, Tensor]:
        n = x0.shape[0]
        f = self.features(torch.cat([x0, x0p]), torch.cat([X, Xp]))
        prod = f[:n] * f[n:]  # (n, M D): entry products
        D = prod.shape[1] // self.M
        return prod.sum(-1) / self.M, D * prod.std(-1) / math.sqrt(prod.shape[1])


class RidgeNotScaledWithN(ref.RandomFeatureAttention):
    """Penalty ``lambda M |v|^2`` on the summed loss ``|y - Phi v|^2``: shift ``lambda M``, not ``n lambda M``."""

    def fit(self, x0: Tensor, X: Tensor, y: Tensor, ridge: float) -> RidgeNotScaledWithN:
        return super().fit(x0, X, y, ridge / y.shape[0])  # type: ignore[return-value]


WEIGHT_STD_S2 = Mutant("weight_std_s2", "W = W0 + s^2 G (variance used as standard deviation)", WeightStdS2, F64)
MEAN_SCALED_BY_S = Mutant("mean_scaled_by_s", "W = s (W0 + G): the mean scaled by s", MeanScaledByS, F64)
MEAN_ON_AUGMENTED = Mutant("mean_on_augmented", "W0 = I_D touches the augmented coordinate", MeanOnAugmented, F64)
MEAN_IGNORED = Mutant("mean_ignored", "the biased option silently draws zero-mean W", MeanIgnored, F64)
REDRAW_PER_CALL = Mutant(
    "redraw_per_call", "W redrawn on every call (fit and predict see different heads)", RedrawPerCall, F64
)
RIDGE_SCALED_TWICE = Mutant("ridge_scaled_twice", "ridge lambda multiplied by n twice", RidgeScaledTwice, F64)
MODEL_QUERY_AMONG_KEYS = Mutant(
    "model_query_among_keys", "the model counts the query as a key", ModelQueryAmongKeys, F64
)
SE_OVER_ENTRIES = Mutant(
    "se_over_entries", "standard error of K_hat_M over the M*D entries instead of the M heads", SEOverEntries, F64
)
RIDGE_NOT_SCALED_WITH_N = Mutant(
    "ridge_not_scaled_with_n", "ridge lambda not scaled with n (penalty on the summed loss)", RidgeNotScaledWithN, F64
)
