"""Kernel (linear) attention over each graph of a torch_geometric batch, by segment sums: what the VN computes.

Cai, Hy, Yu and Wang (arXiv 2301.11956, §3) show that one MPNN + virtual-node layer computes linear
or Performer attention exactly: each graph's VN gathers ``S_g = Σ_{j∈g} φ(k_j) v_jᵀ`` and
``z_g = Σ_{j∈g} φ(k_j)`` and broadcasts them back, and node ``i`` reads
``φ(q_i)ᵀ S_g / φ(q_i)ᵀ z_g``.  :func:`segment_linear_attention` is that computation for a whole
batch at once, verified against the dense per-graph reference (book/mpnn_vn.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from attnverify.fast._dispatch import (
    accumulation_dtype,
    require_float,
    require_same,
    require_tensor,
    select_backend,
)

FeatureMapArg = str | Callable[[Tensor], Tensor]
FEATURE_MAPS = ("elu1", "favor+")


def _validate_batch(batch: object, n: int, device: torch.device, num_graphs: int | None) -> tuple[Tensor, int]:
    batch = require_tensor("batch", batch)
    if batch.dtype.is_floating_point or batch.dtype.is_complex or batch.dtype == torch.bool:
        raise TypeError(f"batch: expected an integer tensor of graph ids, got dtype {batch.dtype}")
    if batch.dim() != 1 or batch.shape[0] != n:
        raise ValueError(f"batch: expected shape ({n},) (one graph id per row of x), got {tuple(batch.shape)}")
    if batch.device != device:
        raise ValueError(f"batch: expected the device of x ({device}), got {batch.device}")
    if num_graphs is not None and (not isinstance(num_graphs, int) or isinstance(num_graphs, bool) or num_graphs < 0):
        raise TypeError(f"num_graphs: expected None or a non-negative int, got {num_graphs!r}")
    if n == 0:
        return batch.long(), num_graphs or 0
    if bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch: expected graph ids sorted in non-decreasing order (as torch_geometric batches are)")
    first, last = int(batch[0]), int(batch[-1])
    if first < 0:
        raise ValueError(f"batch: expected graph ids >= 0, got {first}")
    if num_graphs is None:
        present = int(torch.unique_consecutive(batch).numel())
        if first != 0 or present != last + 1:
            raise ValueError(
                f"batch: graph ids have gaps ({present} distinct ids in 0..{last}); "
                "pass num_graphs to allow empty graphs"
            )
        return batch.long(), last + 1
    if last >= num_graphs:
        raise ValueError(f"batch: graph id {last} is out of range for num_graphs={num_graphs}")
    return batch.long(), num_graphs


def _validate_weights(x: Tensor, Wq: object, Wk: object, Wv: object) -> tuple[Tensor, Tensor, Tensor]:
    d = x.shape[1]
    weights = {"Wq": Wq, "Wk": Wk, "Wv": Wv}
    for name, w in weights.items():
        w = require_tensor(name, w)
        require_same(("x", name), x, w)
        if w.dim() != 2 or w.shape[0] != d:
            raise ValueError(f"{name}: expected shape (d, ·) with d = x.shape[1] = {d}, got {tuple(w.shape)}")
    Wq, Wk, Wv = weights["Wq"], weights["Wk"], weights["Wv"]
    if Wk.shape != Wq.shape:
        raise ValueError(
            f"Wk: expected the shape of Wq {tuple(Wq.shape)} (queries and keys share d_k), got {tuple(Wk.shape)}"
        )
    return Wq, Wk, Wv


def _features(q: Tensor, k: Tensor, batch: Tensor, B: int, feature_map: FeatureMapArg, omega: Tensor | None):
    """``(φ(Q), φ(K))`` up to one positive factor per query row and one per graph (both cancel in the ratio)."""
    if feature_map == "elu1":
        return F.elu(q) + 1, F.elu(k) + 1
    if feature_map == "favor+":
        from torch_geometric.utils import scatter

        assert omega is not None
        # log φ⁺(u) = Ω u - |u|²/2 (- log(m)/2, which cancels): shift queries by their row maximum and
        # keys by one constant per graph, so no exponential overflows (a per-key shift would not cancel).
        log_q = q @ omega.T - (q * q).sum(1, keepdim=True) / 2
        log_k = k @ omega.T - (k * k).sum(1, keepdim=True) / 2
        key_shift = scatter(log_k.detach().amax(1), batch, dim=0, dim_size=B, reduce="max")
        return torch.exp(log_q - log_q.detach().amax(1, keepdim=True)), torch.exp(log_k - key_shift[batch, None])
    phi_q, phi_k = feature_map(q), feature_map(k)
    for name, phi in (("φ(x Wq)", phi_q), ("φ(x Wk)", phi_k)):
        if not isinstance(phi, Tensor) or phi.dim() != 2 or phi.shape[0] != q.shape[0]:
            raise ValueError(f"feature_map: expected {name} to be a tensor of shape ({q.shape[0]}, m)")
        if not bool((phi > 0).all()) or not bool(torch.isfinite(phi).all()):
            raise ValueError(
                f"feature_map: returned non-positive or non-finite values for {name}; φ must map into (0, ∞)^m"
            )
    if phi_q.shape != phi_k.shape:
        raise ValueError(
            f"feature_map: φ(x Wq) and φ(x Wk) differ in shape: {tuple(phi_q.shape)} vs {tuple(phi_k.shape)}"
        )
    return phi_q, phi_k


def size_buckets(batch: Tensor, B: int) -> tuple[Tensor, Tensor, list[tuple[Tensor, int]]]:
    """Group the non-empty graphs by size into half-octave buckets ``(2^{k/2}, 2^{(k+1)/2}]``.

    Returns ``(counts, ptr, [(graph ids, largest size) per bucket])``; padding each graph to its bucket's
    largest wastes less than ``√2 - 1`` of the rows whatever the spread of sizes.
    """
    counts = torch.bincount(batch, minlength=B)
    ptr = torch.cumsum(counts, 0) - counts
    graphs = torch.nonzero(counts).flatten()
    key = torch.ceil(2 * torch.log2(counts[graphs].double())).long()
    order = torch.argsort(key, stable=True)
    _, per_key = torch.unique_consecutive(key[order], return_counts=True)
    buckets = []
    for ids in torch.split(graphs[order], per_key.tolist()):
        buckets.append((ids, int(counts[ids].max())))
    return counts, ptr, buckets


def segment_attention_torch(phi_q: Tensor, phi_k: Tensor, v: Tensor, batch: Tensor, B: int) -> Tensor:
    """``out_i = φ(q_i)ᵀ S_{b_i} / φ(q_i)ᵀ z_{b_i}`` per graph; cost ``O(N m d_v)``, no ``n²`` term.

    ``z_g = Σ_{j∈g} φ(k_j)`` is a segment sum over the sorted batch (torch_geometric ``segment``).
    For ``S_g = Σ_{j∈g} φ(k_j) v_jᵀ`` the graphs are bucketed by size (:func:`size_buckets`); in each
    bucket their rows are gathered into padded ``(G, n, ·)`` blocks, padded key rows pointing at a zero
    row (zero *after* φ), and one batched GEMM sums ``S`` and a second reads ``φ(q_i)ᵀ S`` out.  The rows
    come back in node order through one
    permutation.
    """
    from torch_geometric.utils import segment

    N, m = phi_k.shape
    counts, ptr, buckets = size_buckets(batch, B)
    z = segment(phi_k, torch.cat([ptr, ptr.new_full((1,), N)]))  # (B, m)
    keys = torch.cat([phi_k, phi_k.new_zeros(1, m)])  # row N is the zero row that padding points at
    # (a bucket of equal-size consecutive graphs needs neither padding nor a gather: it is a view)
    rows, outs = [], []
    for ids, n in buckets:
        G = len(ids)
        first = int(ptr[ids[0]])
        if bool((counts[ids] == n).all()) and int(ids[-1] - ids[0]) == G - 1:
            # Equal sizes, consecutive graphs: the bucket is the contiguous rows [first, first + G n), no gather.
            Q, K, V = (t[first : first + G * n].reshape(G, n, -1) for t in (phi_q, phi_k, v))
            rows.append(torch.arange(first, first + G * n, device=batch.device))
            outs.append(torch.bmm(Q, torch.bmm(K.transpose(1, 2), V)).flatten(0, 1))
            continue
        position = torch.arange(n, device=batch.device)
        valid = position < counts[ids, None]  # (G, n)
        index = torch.where(valid, ptr[ids, None] + position, N).flatten()
        K = keys.index_select(0, index).view(G, n, m)
        V = v.index_select(0, index.clamp(max=N - 1)).view(G, n, -1)
        Q = phi_q.index_select(0, index.clamp(max=N - 1)).view(G, n, m)
        keep = valid.flatten().nonzero().flatten()
        rows.append(index[keep])
        outs.append(torch.bmm(Q, torch.bmm(K.transpose(1, 2), V)).flatten(0, 1)[keep])  # (rows, d_v)
    den = (phi_q * z[batch]).sum(1, keepdim=True)
    if len(outs) == 1 and rows[0].numel() == N and bool((rows[0] == torch.arange(N, device=batch.device)).all()):
        return outs[0] / den  # already in node order
    inverse = torch.empty_like(batch)
    inverse[torch.cat(rows)] = torch.arange(N, device=batch.device)
    return torch.cat(outs)[inverse] / den


def segment_linear_attention(
    x: Tensor,
    batch: Tensor,
    Wq: Tensor,
    Wk: Tensor,
    Wv: Tensor,
    feature_map: FeatureMapArg = "elu1",
    *,
    omega: Tensor | None = None,
    num_graphs: int | None = None,
    backend: str | None = None,
) -> Tensor:
    """Linear attention within each graph of a batch (arXiv 2301.11956, §3, Result A; arXiv 2006.16236, eq. 4).

    ``out_i = Σ_{j ∈ g(i)} φ(q_i)·φ(k_j) v_j / Σ_{j ∈ g(i)} φ(q_i)·φ(k_j)`` with ``q = x Wq``,
    ``k = x Wk``, ``v = x Wv``; the sum runs over every node of ``i``'s graph, ``i`` included, and
    no ``1/sqrt(d_k)`` is applied (fold it into ``Wq``).

    Args:
        x: ``(N, d)`` node features of a batch of graphs.
        batch: ``(N,)`` integer graph ids, sorted (a torch_geometric ``Batch.batch``); ids ``0..B-1``
            without gaps unless ``num_graphs`` is given, in which case missing ids are empty graphs.
        Wq, Wk: ``(d, d_k)``; Wv: ``(d, d_v)``.
        feature_map: ``"elu1"`` (``elu(u) + 1``), ``"favor+"`` (FAVOR+ positive random features with
            the frozen ``omega: (m, d_k)``, computed in log space with a per-graph key shift), or a
            callable mapping ``(N, d_k)`` to positive ``(N, m)``.
        backend: ``None`` (Triton on CUDA, torch elsewhere), ``"torch"`` or ``"triton"``.

    Returns ``(N, d_v)``.  Cost ``O(N m (d_k + d_v))`` time and ``O(B m d_v + N (m + d_v))`` memory;
    differentiable (torch autograd).
    """
    x = require_tensor("x", x)
    require_float("x", x)
    if x.dim() != 2:
        raise ValueError(f"x: expected shape (N, d), got {tuple(x.shape)}")
    batch, B = _validate_batch(batch, x.shape[0], x.device, num_graphs)
    Wq, Wk, Wv = _validate_weights(x, Wq, Wk, Wv)
    if isinstance(feature_map, str):
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"feature_map: expected 'elu1', 'favor+' or a callable, got {feature_map!r}")
    elif not callable(feature_map):
        raise TypeError(f"feature_map: expected 'elu1', 'favor+' or a callable, got {type(feature_map).__name__}")
    if feature_map == "favor+":
        if omega is None:
            raise ValueError("omega: feature_map='favor+' needs the frozen random features omega of shape (m, d_k)")
        omega = require_tensor("omega", omega)
        require_same(("x", "omega"), x, omega)
        if omega.dim() != 2 or omega.shape[1] != Wq.shape[1] or omega.shape[0] == 0:
            raise ValueError(
                f"omega: expected shape (m, d_k) with m >= 1, d_k = {Wq.shape[1]}, got {tuple(omega.shape)}"
            )
    elif omega is not None:
        raise ValueError("omega: only used with feature_map='favor+'; pass None")
    chosen = select_backend(backend, x.device)
    out_dtype, acc = x.dtype, accumulation_dtype(x.dtype)
    if x.shape[0] == 0:
        return x.new_zeros(0, Wv.shape[1])
    x, Wq, Wk, Wv = (t.to(acc) for t in (x, Wq, Wk, Wv))
    dk = Wq.shape[1]
    qkv = x @ torch.cat([Wq, Wk, Wv], 1)  # one GEMM for the three projections
    q, k, v = qkv[:, :dk], qkv[:, dk : 2 * dk], qkv[:, 2 * dk :]
    phi_q, phi_k = _features(q, k, batch, B, feature_map, None if omega is None else omega.to(acc))
    if chosen == "triton":
        from attnverify.fast.triton.mpnn_vn import segment_attention_triton

        out = segment_attention_triton(phi_q, phi_k, v, batch, B)
    else:
        out = segment_attention_torch(phi_q, phi_k, v, batch, B)
    return out.to(out_dtype)
