"""MPNN + virtual node as graph-transformer attention (Cai, Hy, Yu, Wang, ICML 2023, arXiv 2301.11956), plainly.

Our formulation (book/mpnn_vn.md, "Our formulation vs the paper's"): graphs are torch_geometric
batches (node features ``x: (N, d)``, a sorted ``batch: (N,)`` of graph ids, ``edge_index: (2, E)``);
one virtual node (VN) per graph, scoped by ``batch``, starting at zero, never a row of ``x``,
never aggregating itself and never among the keys.  Attention sums over every node of a graph,
the node itself included, ignores the edges, and has no ``1/sqrt(d_k)`` (fold it into ``W_Q``).

* :func:`linear_attention_layer`: dense kernel attention per graph (the target of Result A).
* :class:`MPNNVN`: Result A as one ``MessagePassing`` layer (gather to the VN, broadcast back).
* :func:`softmax_by_depth`: Result C, softmax attention by ``L`` VN layers under separability.
* :func:`favor_plus_features`, :func:`gaussian_omega`: FAVOR+ positive random features.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import MessagePassing

FeatureMap = Callable[[Tensor], Tensor]


def elu1(u: Tensor) -> Tensor:
    """``φ(u) = elu(u) + 1 > 0``, the feature map of Katharopoulos et al. (arXiv 2006.16236, §3.2)."""
    return F.elu(u) + 1


def gaussian_omega(
    m: int,
    d: int,
    *,
    seed: int,
    orthogonal: bool = False,
    batch: tuple[int, ...] = (),
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """A frozen ``Ω: (*batch, m, d)`` drawn from an explicit seeded generator (arXiv 2009.14794, §2.4).

    iid: rows ``w_r ~ N(0, I_d)``.  Orthogonal: blocks of ``d`` orthonormal rows (the Q factor of a
    Gaussian matrix, signs fixed so it is Haar distributed), each row rescaled by an independent
    ``chi_d`` norm, so every row is still marginally ``N(0, I_d)``.  ``batch`` draws independent ``Ω``s.
    """
    g = torch.Generator().manual_seed(seed)
    if not orthogonal:
        return torch.randn(*batch, m, d, generator=g, dtype=torch.float64).to(dtype)
    blocks = math.ceil(m / d)
    q, r = torch.linalg.qr(torch.randn(*batch, blocks, d, d, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]  # columns of a Haar matrix
    rows = q.transpose(-1, -2).reshape(*batch, blocks * d, d)[..., :m, :]
    norms = torch.randn(*batch, m, d, generator=g, dtype=torch.float64).norm(dim=-1, keepdim=True)
    return (rows * norms).to(dtype)


def favor_plus_features(u: Tensor, omega: Tensor) -> Tensor:
    """``φ⁺(u) = m^{-1/2} exp(-|u|²/2) (exp(w_r·u))_{r=1..m}`` (arXiv 2009.14794, Lemma 1).

    ``u: (..., d)``, ``omega: (m, d)`` -> ``(..., m)``.
    """
    m = omega.shape[0]
    return torch.exp(u @ omega.T - (u * u).sum(-1, keepdim=True) / 2) / math.sqrt(m)


def graphs(batch: Tensor) -> list[Tensor]:
    """The node indices of each graph ``0..max(batch)`` (an empty graph gets an empty index)."""
    count = int(batch.max()) + 1 if batch.numel() else 0
    return [torch.nonzero(batch == g).flatten() for g in range(count)]


def linear_attention_layer(
    x: Tensor, batch: Tensor, Wq: Tensor, Wk: Tensor, Wv: Tensor, feature_map: FeatureMap = elu1
) -> Tensor:
    """Dense kernel attention over each graph's nodes (arXiv 2006.16236, eq. 4), ``x: (N, d)`` -> ``(N, d_v)``.

    ``LA(X)_i = Σ_j φ(q_i)·φ(k_j) v_j / Σ_j φ(q_i)·φ(k_j)``, ``j`` over the nodes of ``i``'s graph,
    ``j = i`` included; ``q = x W_Q``, ``k = x W_K``, ``v = x W_V``.  Costs ``O(Σ_g n_g²)``.
    """
    out = x.new_zeros(x.shape[0], Wv.shape[1])
    for nodes in graphs(batch):
        X = x[nodes]  # (n, d)
        A = feature_map(X @ Wq) @ feature_map(X @ Wk).T  # (n, n): A_ij = φ(q_i)·φ(k_j)
        out[nodes] = (A @ (X @ Wv)) / A.sum(1, keepdim=True)
    return out


def softmax_attention_layer(x: Tensor, batch: Tensor, Wq: Tensor, Wk: Tensor, Wv: Tensor) -> Tensor:
    """``SA(X)_i = Σ_j softmax_j(q_i·k_j) v_j`` over each graph's nodes (the target of Result C)."""
    out = x.new_zeros(x.shape[0], Wv.shape[1])
    for nodes in graphs(batch):
        X = x[nodes]
        out[nodes] = torch.softmax((X @ Wq) @ (X @ Wk).T, dim=1) @ (X @ Wv)
    return out


class MPNNVN(MessagePassing):
    """Result A (arXiv 2301.11956, §3): one heterogeneous MPNN + VN layer that computes kernel attention.

    Three message types with their own parameters, each a sum aggregation:

    * graph edge ``j -> i``: ``ψ_gg(x_j) = x_j W_E`` (``W_E = 0`` unless given: the attention ignores edges);
    * node ``j`` -> its VN: ``ψ_gv(x_j) = [vec(φ(k_j) v_jᵀ); φ(k_j)]``, so the VN state is ``s = (S, z)``;
    * VN -> node ``i``: ``ψ_vg(s) = s``.

    The node update is ``U(x_i, a_i, s) = φ(q_i)ᵀ S / φ(q_i)ᵀ z + a_i``, with ``a_i`` the graph-edge sum.
    VN width ``m d_v + m`` (``m`` features).
    """

    def __init__(
        self,
        Wq: Tensor,
        Wk: Tensor,
        Wv: Tensor,
        feature_map: FeatureMap = elu1,
        W_edge: Tensor | None = None,
    ) -> None:
        super().__init__(aggr="sum")
        self.Wq, self.Wk, self.Wv, self.feature_map = Wq, Wk, Wv, feature_map
        self.W_edge = torch.zeros_like(Wv) if W_edge is None else W_edge

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor, num_graphs: int | None = None) -> Tensor:
        N, B = x.shape[0], (num_graphs if num_graphs is not None else int(batch.max()) + 1 if batch.numel() else 0)
        dv = self.Wv.shape[1]
        nodes = torch.arange(N, device=x.device)
        # Graph edges (source j -> target i): a_i = Σ_{j ∈ N(i)} ψ_gg(x_j).
        a = self.propagate(edge_index, h=x, kind="graph", size=(N, N))
        # Gather, node j -> VN b_j: s_g = Σ_{j: b_j = g} ψ_gv(x_j) = (vec S_g, z_g); the VN starts at 0.
        s = self.propagate(torch.stack([nodes, batch]), h=x, kind="to_vn", size=(N, B))
        # Broadcast, VN b_i -> node i: each node receives its own graph's VN state only.
        r = self.propagate(torch.stack([batch, nodes]), h=s, kind="from_vn", size=(B, N))
        m = r.shape[1] // (dv + 1)
        S, z = r[:, : m * dv].reshape(N, m, dv), r[:, m * dv :]  # (N, m, d_v), (N, m)
        phi_q = self.feature_map(x @ self.Wq)  # (N, m)
        return torch.einsum("nm,nmv->nv", phi_q, S) / (phi_q * z).sum(1, keepdim=True) + a

    def message(self, h_j: Tensor, kind: str) -> Tensor:
        if kind == "graph":
            return h_j @ self.W_edge
        if kind == "to_vn":
            phi_k, v = self.feature_map(h_j @ self.Wk), h_j @ self.Wv  # (E, m), (E, d_v)
            return torch.cat([(phi_k[:, :, None] * v[:, None, :]).flatten(1), phi_k], 1)
        return h_j  # from_vn: the VN state as it is


def softmax_by_depth(x: Tensor, Wq: Tensor, Wk: Tensor, Wv: Tensor, anchors: Tensor, beta: float) -> Tensor:
    """Result C (arXiv 2301.11956, §4; our reconstruction): softmax attention of one graph by ``L`` VN layers.

    ``x: (n, d)``, ``anchors: (L, d)``, score ``α(x, a) = x·a``.  Layer ``t``:

    1. the VN gathers ``Σ_j e^{βα(x_j, a_t)} (k_j, v_j, 1)`` and divides, so ``π_tj = softmax_j(βα(x_j, a_t))``;
    2. it broadcasts ``(k̃_t, ṽ_t) = Σ_j π_tj (k_j, v_j)``;
    3. node ``i`` adds ``e^{q_i·k̃_t} ṽ_t`` to ``num_i`` and ``e^{q_i·k̃_t}`` to ``den_i``.

    The output is ``num_i / den_i``.  Width ``O(d)`` per node; both exponentials are shifted by a
    running maximum (exact, as in a stable softmax).  With ``L = n`` separating anchors it tends to
    ``SA(X)`` as ``β`` grows.
    """
    q, k, v = x @ Wq, x @ Wk, x @ Wv  # (n, d_k), (n, d_k), (n, d_v)
    n = x.shape[0]
    mx = x.new_full((n, 1), -math.inf)  # running max of q_i·k̃_t
    num, den = x.new_zeros(n, Wv.shape[1]), x.new_zeros(n, 1)
    for a in anchors:
        w = torch.softmax(beta * (x @ a), dim=0)  # π_t·: (n,)
        k_t, v_t = w @ k, w @ v  # the VN's broadcast
        s = q @ k_t  # (n,)
        new = torch.maximum(mx, s[:, None])
        scale, e = torch.exp(mx - new), torch.exp(s[:, None] - new)
        num, den, mx = num * scale + e * v_t, den * scale + e, new
    return num / den


def newton_elementary(p: Tensor) -> Tensor:
    """Elementary symmetric polynomials ``e_0..e_n`` from power sums ``p_1..p_n`` (Newton's identities).

    ``k e_k = Σ_{i=1}^{k} (-1)^{i-1} e_{k-i} p_i``, ``e_0 = 1``.
    """
    n = p.shape[0]
    e = [p.new_ones(())]
    for k in range(1, n + 1):
        e.append(sum((-1) ** (i - 1) * e[k - i] * p[i - 1] for i in range(1, k + 1)) / k)
    return torch.stack(e)


def deepsets_attention_d1(x: Tensor, Wq: Tensor, Wk: Tensor, Wv: Tensor) -> Tensor:
    """Result B for ``d = 1`` (arXiv 2301.11956, §4; our construction): softmax attention through ``n`` power sums.

    ``x: (n, 1)``; ``W*: (1, 1)``.  The VN sums ``ψ(x_j) = (x_j, x_j², ..., x_j^n)`` into the power sums
    ``p_1..p_n``; Newton's identities give ``e_1..e_n``; the roots of ``Σ_k (-1)^k e_k t^{n-k}`` are the
    multiset ``{x_j}``; each node ``i`` then computes ``Σ_j softmax_j(q_i k_j) v_j`` over that multiset.
    Exact up to the conditioning of the roots (distinct, well-separated features).
    """
    n = x.shape[0]
    powers = torch.arange(1, n + 1, dtype=x.dtype)
    p = (x.reshape(n, 1) ** powers).sum(0)  # the VN state: (n,) power sums
    e = newton_elementary(p)
    coeffs = torch.stack([(-1) ** k * e[k] for k in range(n + 1)])  # t^n, t^{n-1}, ..., t^0
    companion = torch.zeros(n, n, dtype=x.dtype)
    companion[0, :] = -coeffs[1:]
    if n > 1:
        companion[1:, :-1] = torch.eye(n - 1, dtype=x.dtype)
    roots = torch.linalg.eigvals(companion).real.reshape(n, 1)  # the recovered multiset
    q, k, v = x @ Wq, roots @ Wk, roots @ Wv
    return torch.softmax(q @ k.T, dim=1) @ v
