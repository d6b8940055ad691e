"""Planted bugs for the MPNN + VN claims: small, realistic wrong implementations (book/mpnn_vn.md, "The mutants").

Each has the signature of the subject it replaces; every claim listing it must reject it by a
numeric finding (``tests/test_claims.py``).  Most are the pitfalls of building a virtual node by
hand: the VN leaking into its own sum or the keys, a misplaced normaliser, edges or other graphs
leaking into the attention, the VN injected before the local convolution, padding fed through φ, a
dropped self term, a redrawn ``Ω``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch_geometric.utils import to_dense_batch

from attnverify.reference import mpnn_vn as ref
from attnverify.registry import Mutant

# ---------------------------------------------------------------------------
# Attention subjects: fn(x, edge_index, batch, Wq, Wk, Wv[, omega]) -> (N, d_v)
# ---------------------------------------------------------------------------


def _phi(omega: Tensor | None) -> Callable[[Tensor], Tensor]:
    """elu+1 for the linear claim, FAVOR+ with the given frozen ``Ω`` for the Performer claim."""
    return ref.elu1 if omega is None else (lambda u: ref.favor_plus_features(u, omega))


def _per_graph(
    x: Tensor, batch: Tensor, Wq: Tensor, Wk: Tensor, Wv: Tensor, phi: Callable[[Tensor], Tensor], extra_key: str
) -> Tensor:
    """Dense attention per graph with one extra (key, value) row built from the graph: the VN as a node."""
    out = x.new_zeros(x.shape[0], Wv.shape[1])
    for nodes in ref.graphs(batch):
        X = x[nodes]
        vn = torch.zeros_like(X[:1]) if extra_key == "zero" else X.mean(0, keepdim=True)
        keys = torch.cat([X, vn])
        A = phi(X @ Wq) @ phi(keys @ Wk).T
        out[nodes] = A @ (keys @ Wv) / A.sum(1, keepdim=True)
    return out


def vn_zero_row_in_keys(x, edge_index, batch, Wq, Wk, Wv, omega=None):  # type: ignore[no-untyped-def]
    """The VN is stored as an extra all-zero node of each graph and attended over: ``φ(0) ≠ 0`` enters z."""
    return _per_graph(x, batch, Wq, Wk, Wv, _phi(omega), "zero")


def vn_mean_row_aggregated(x, edge_index, batch, Wq, Wk, Wv, omega=None):  # type: ignore[no-untyped-def]
    """The VN starts as its graph's mean feature (OGB style) and is summed with the nodes: it aggregates itself."""
    return _per_graph(x, batch, Wq, Wk, Wv, _phi(omega), "mean")


def _vn_sums(x: Tensor, batch: Tensor, Wk: Tensor, Wv: Tensor, phi: Callable[[Tensor], Tensor]):  # type: ignore[no-untyped-def]
    B = int(batch.max()) + 1
    phi_k, v = phi(x @ Wk), x @ Wv
    S = x.new_zeros(B, phi_k.shape[1], Wv.shape[1]).index_add_(0, batch, phi_k[:, :, None] * v[:, None, :])
    z = x.new_zeros(B, phi_k.shape[1]).index_add_(0, batch, phi_k)
    return S, z


def normalizer_at_vn(x, edge_index, batch, Wq, Wk, Wv, omega=None):  # type: ignore[no-untyped-def]
    """The VN divides ``S`` by its total key mass ``1ᵀz`` before the broadcast, instead of each node by ``φ(q_i)ᵀz``."""
    phi = _phi(omega)
    S, z = _vn_sums(x, batch, Wk, Wv, phi)
    return torch.einsum("nm,nmv->nv", phi(x @ Wq), S[batch]) / z.sum(1)[batch, None]


def numerator_mean_aggregated(x, edge_index, batch, Wq, Wk, Wv, omega=None):  # type: ignore[no-untyped-def]
    """Mean aggregation for ``S`` and sum for ``z`` (mixing mean and sum): outputs divided by ``n``."""
    phi = _phi(omega)
    S, z = _vn_sums(x, batch, Wk, Wv, phi)
    n = torch.bincount(batch).to(x.dtype)
    phi_q = phi(x @ Wq)
    return torch.einsum("nm,nmv->nv", phi_q, S[batch]) / n[batch, None] / (phi_q * z[batch]).sum(1, keepdim=True)


def edges_in_attention(x, edge_index, batch, Wq, Wk, Wv, omega=None):  # type: ignore[no-untyped-def]
    """Attention restricted to the neighbours and the node itself (a local layer), not the whole graph."""
    phi = _phi(omega)
    N = x.shape[0]
    allowed = torch.eye(N, dtype=torch.bool)
    allowed[edge_index[1], edge_index[0]] = True
    A = (phi(x @ Wq) @ phi(x @ Wk).T) * allowed.to(x.dtype)
    return A @ (x @ Wv) / A.sum(1, keepdim=True)


def one_vn_for_the_batch(x, edge_index, batch, Wq, Wk, Wv, omega=None):  # type: ignore[no-untyped-def]
    """One VN shared by every graph of the batch: attention crosses graphs."""
    return ref.linear_attention_layer(x, torch.zeros_like(batch), Wq, Wk, Wv, _phi(omega))


def padding_through_phi(x, edge_index, batch, Wq, Wk, Wv, omega=None):  # type: ignore[no-untyped-def]
    """``to_dense_batch`` pads ``x`` with zeros and φ is applied afterwards: padded keys ``φ(0)`` count."""
    phi = _phi(omega)
    X, mask = to_dense_batch(x, batch)  # (B, n_max, d), zero rows padded
    A = phi(X @ Wq) @ phi(X @ Wk).transpose(1, 2)
    return (A @ (X @ Wv) / A.sum(2, keepdim=True))[mask]


def self_term_dropped(x, edge_index, batch, Wq, Wk, Wv, omega=None):  # type: ignore[no-untyped-def]
    """The sum skips ``j = i``: a one-node graph divides 0 by 0."""
    phi = _phi(omega)
    same = (batch[:, None] == batch[None, :]) & ~torch.eye(x.shape[0], dtype=torch.bool)
    A = (phi(x @ Wq) @ phi(x @ Wk).T) * same.to(x.dtype)
    return A @ (x @ Wv) / A.sum(1, keepdim=True)


def omega_redrawn(x, edge_index, batch, Wq, Wk, Wv, omega):  # type: ignore[no-untyped-def]
    """Each call draws its own ``Ω`` (of the right shape) instead of using the frozen one it was given."""
    fresh = ref.gaussian_omega(omega.shape[0], omega.shape[1], seed=10_000 + x.shape[0], dtype=x.dtype)
    return ref.linear_attention_layer(x, batch, Wq, Wk, Wv, _phi(fresh))


def per_key_shift(x, edge_index, batch, Wq, Wk, Wv, omega):  # type: ignore[no-untyped-def]
    """FAVOR+ in log space with each key shifted by its own maximum: the shifts no longer cancel."""
    log_k = (x @ Wk) @ omega.T - ((x @ Wk) ** 2).sum(1, keepdim=True) / 2
    phi_k = torch.exp(log_k - log_k.amax(1, keepdim=True))
    phi_q = ref.favor_plus_features(x @ Wq, omega)
    out = x.new_zeros(x.shape[0], Wv.shape[1])
    for nodes in ref.graphs(batch):
        A = phi_q[nodes] @ phi_k[nodes].T
        out[nodes] = A @ (x[nodes] @ Wv) / A.sum(1, keepdim=True)
    return out


def vn_before_local_conv(x, edge_index, batch, Wq, Wk, Wv, omega=None):  # type: ignore[no-untyped-def]
    """OGB-style ordering: the VN's broadcast enters the node states *before* the local convolution, whose mean
    over each node and its in-neighbours then mixes the neighbours' attention readouts into every output."""
    h = ref.linear_attention_layer(x, batch, Wq, Wk, Wv, _phi(omega))
    src, dst = edge_index
    degree = torch.ones(x.shape[0], dtype=x.dtype).index_add_(0, dst, torch.ones(dst.shape[0], dtype=x.dtype))
    return h.index_add(0, dst, h[src]) / degree[:, None]


VN_ZERO_ROW_IN_KEYS = Mutant("vn_zero_row_in_keys", vn_zero_row_in_keys.__doc__ or "", vn_zero_row_in_keys)
VN_MEAN_ROW_AGGREGATED = Mutant("vn_aggregates_itself", vn_mean_row_aggregated.__doc__ or "", vn_mean_row_aggregated)
NORMALIZER_AT_VN = Mutant("normalizer_at_vn", normalizer_at_vn.__doc__ or "", normalizer_at_vn)
NUMERATOR_MEAN = Mutant("divided_by_n", numerator_mean_aggregated.__doc__ or "", numerator_mean_aggregated)
EDGES_IN_ATTENTION = Mutant("edges_in_attention", edges_in_attention.__doc__ or "", edges_in_attention)
ONE_VN_FOR_THE_BATCH = Mutant("cross_graph_leakage", one_vn_for_the_batch.__doc__ or "", one_vn_for_the_batch)
PADDING_THROUGH_PHI = Mutant("padding_before_phi", padding_through_phi.__doc__ or "", padding_through_phi)
VN_BEFORE_LOCAL_CONV = Mutant("vn_before_local_conv", vn_before_local_conv.__doc__ or "", vn_before_local_conv)
SELF_TERM_DROPPED = Mutant("self_term_dropped", self_term_dropped.__doc__ or "", self_term_dropped)
OMEGA_REDRAWN = Mutant("omega_redrawn", omega_redrawn.__doc__ or "", omega_redrawn)
PER_KEY_SHIFT = Mutant("per_key_shift", per_key_shift.__doc__ or "", per_key_shift)

# ---------------------------------------------------------------------------
# Result C subject: fn(x, Wq, Wk, Wv, anchors, beta) -> (n, d_v)
# ---------------------------------------------------------------------------


def depth_off_by_one(x, Wq, Wk, Wv, anchors, beta):  # type: ignore[no-untyped-def]
    """The layer loop stops one short (``range(L - 1)``): one node is never selected."""
    return ref.softmax_by_depth(x, Wq, Wk, Wv, anchors[:-1], beta)


def sharpness_ignored(x, Wq, Wk, Wv, anchors, beta):  # type: ignore[no-untyped-def]
    """The VN's selection softmax forgets ``β`` (uses ``β = 1``): the error never shrinks."""
    return ref.softmax_by_depth(x, Wq, Wk, Wv, anchors, 1.0)


def vn_mean_not_softmax(x, Wq, Wk, Wv, anchors, beta):  # type: ignore[no-untyped-def]
    """The VN divides its gathered ``Σ_j e^{βα_j}(k_j, v_j)`` by ``n`` (mean aggregation), not by ``Σ_j e^{βα_j}``."""
    q, k, v = x @ Wq, x @ Wk, x @ Wv
    num, den = torch.zeros(x.shape[0], Wv.shape[1], dtype=x.dtype), torch.zeros(x.shape[0], 1, dtype=x.dtype)
    for a in anchors:
        s = beta * (x @ a)
        w = torch.exp(s - s.max()) / x.shape[0]
        e = torch.exp(q @ (w @ k))[:, None]
        num, den = num + e * (w @ v), den + e
    return num / den


def selection_scaled_by_sqrt_d(x, Wq, Wk, Wv, anchors, beta):  # type: ignore[no-untyped-def]
    """The VN's selection scores get dot-product attention's ``1/√d`` (sharpness ``β/√d``): the leakage exceeds
    the bound derived for ``β``."""
    return ref.softmax_by_depth(x, Wq, Wk, Wv, anchors, beta / math.sqrt(x.shape[1]))


DEPTH_OFF_BY_ONE = Mutant("depth_off_by_one", depth_off_by_one.__doc__ or "", depth_off_by_one)
SHARPNESS_IGNORED = Mutant("sharpness_ignored", sharpness_ignored.__doc__ or "", sharpness_ignored)
VN_MEAN_NOT_SOFTMAX = Mutant("vn_mean_not_softmax", vn_mean_not_softmax.__doc__ or "", vn_mean_not_softmax)
SELECTION_SCALED = Mutant(
    "selection_scaled_by_sqrt_d", selection_scaled_by_sqrt_d.__doc__ or "", selection_scaled_by_sqrt_d
)

# ---------------------------------------------------------------------------
# FAVOR+ subject: fn(u (..., d), omega (m, d)) -> (..., m)
# ---------------------------------------------------------------------------


def no_norm_factor(u, omega):  # type: ignore[no-untyped-def]
    """``m^{-1/2} exp(Ω u)`` without ``exp(-|u|²/2)``: estimates ``e^{x·y + (|x|² + |y|²)/2}``."""
    return torch.exp(u @ omega.T) / math.sqrt(omega.shape[0])


def full_norm_factor(u, omega):  # type: ignore[no-untyped-def]
    """``exp(-|u|²)`` instead of ``exp(-|u|²/2)`` (a factor 2 lost): biased low."""
    return torch.exp(u @ omega.T - (u * u).sum(-1, keepdim=True)) / math.sqrt(omega.shape[0])


def scale_one_over_m(u, omega):  # type: ignore[no-untyped-def]
    """Each feature scaled by ``1/m`` instead of ``m^{-1/2}``: the kernel estimate shrinks by ``1/m``."""
    return ref.favor_plus_features(u, omega) / math.sqrt(omega.shape[0])


def one_row_broadcast(u, omega):  # type: ignore[no-untyped-def]
    """Every feature uses the first row ``w_1`` (a broadcasting slip): unbiased, but no averaging at all."""
    return ref.favor_plus_features(u, omega[:1].expand_as(omega))


NO_NORM_FACTOR = Mutant("no_norm_factor", no_norm_factor.__doc__ or "", no_norm_factor)
FULL_NORM_FACTOR = Mutant("norm_factor_squared", full_norm_factor.__doc__ or "", full_norm_factor)
SCALE_ONE_OVER_M = Mutant("scale_one_over_m", scale_one_over_m.__doc__ or "", scale_one_over_m)
ONE_ROW_BROADCAST = Mutant("one_row_broadcast", one_row_broadcast.__doc__ or "", one_row_broadcast)

# ---------------------------------------------------------------------------
# DeepSets subject (d = 1): fn(x (n, 1), Wq, Wk, Wv (1, 1)) -> (n, 1)
# ---------------------------------------------------------------------------


def _decode(x: Tensor, Wq: Tensor, Wk: Tensor, Wv: Tensor, e: Tensor) -> Tensor:
    """Roots of ``Σ (-1)^k e_k t^{n-k}`` (companion matrix), then softmax attention over them."""
    n = e.shape[0] - 1
    companion = torch.zeros(n, n, dtype=x.dtype)
    companion[0, :] = -torch.stack([(-1) ** k * e[k] for k in range(1, n + 1)])
    if n > 1:
        companion[1:, :-1] = torch.eye(n - 1, dtype=x.dtype)
    roots = torch.linalg.eigvals(companion).real.reshape(n, 1)
    return torch.softmax((x @ Wq) @ (roots @ Wk).T, dim=1) @ (roots @ Wv)


def n_minus_1_power_sums(x, Wq, Wk, Wv):  # type: ignore[no-untyped-def]
    """The VN keeps only ``p_1..p_{n-1}`` (width one short) and the decoder takes ``e_n = 0``."""
    n = x.shape[0]
    p = (x.reshape(n, 1) ** torch.arange(1, n + 1, dtype=x.dtype)).sum(0)
    e = ref.newton_elementary(p[: n - 1])
    return _decode(x, Wq, Wk, Wv, torch.cat([e, e.new_zeros(1)]))


def newton_sign_slip(x, Wq, Wk, Wv):  # type: ignore[no-untyped-def]
    """Newton's identities without the alternating sign: ``k e_k = Σ_i e_{k-i} p_i``."""
    n = x.shape[0]
    p = (x.reshape(n, 1) ** torch.arange(1, n + 1, dtype=x.dtype)).sum(0)
    e = [p.new_ones(())]
    for k in range(1, n + 1):
        e.append(sum(e[k - i] * p[i - 1] for i in range(1, k + 1)) / k)
    return _decode(x, Wq, Wk, Wv, torch.stack(e))


def power_means(x, Wq, Wk, Wv):  # type: ignore[no-untyped-def]
    """Mean aggregation at the VN: ``p_k / n`` decoded as if they were the power sums."""
    n = x.shape[0]
    p = (x.reshape(n, 1) ** torch.arange(1, n + 1, dtype=x.dtype)).mean(0)
    return _decode(x, Wq, Wk, Wv, ref.newton_elementary(p))


N_MINUS_1_POWER_SUMS = Mutant("n_minus_1_power_sums", n_minus_1_power_sums.__doc__ or "", n_minus_1_power_sums)
NEWTON_SIGN_SLIP = Mutant("newton_sign_slip", newton_sign_slip.__doc__ or "", newton_sign_slip)
POWER_MEANS = Mutant("power_means_at_vn", power_means.__doc__ or "", power_means)
