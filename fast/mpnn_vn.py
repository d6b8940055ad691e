"""Kernel (linear) attention over each graph of a torch_geometric batch, by segment sums: what the VN computes.

Cai, Hy, Yu and Wang (arXiv 2301.11956, §3) show that one MPNN + virtual-node layer computes linear
or Performer attention exactly: each graph's VN gathers ``S_g = Σ_{j∈g} φ(k_j) v_jᵀ`` and
``z_g = Σ_{j∈g} φ(k_j)`` and broadcasts them back, and node ``i`` reads
``φ(q_i)ᵀ S_g / φ(q_i)ᵀ z_g``.  :func:`segment_linear_attention` is that computation for a whole
batch at once, verified against the dense per-graph reference (book/mpnn_vn.md).

On the CPU the batch is cut into blocks of whole graphs of one size class (:func:`layout`), each padded
to its class's largest graph; a block gathers its rows of ``x`` once and runs the projections, the
features and two batched GEMMs while everything it touches stays in cache.  No ``(N, m, d_v)`` outer
products, no per-graph Python loop, padding below ``2^{1/4}`` whatever the spread of sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

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
    step = batch[1:] - batch[:-1]
    if bool((step < 0).any()):
        raise ValueError("batch: expected graph ids sorted in non-decreasing order (as torch_geometric batches are)")
    first, last = int(batch[0]), int(batch[-1])
    if first < 0:
        raise ValueError(f"batch: expected graph ids >= 0, got {first}")
    if num_graphs is None:
        if first != 0 or bool((step > 1).any()):
            present = int(torch.unique_consecutive(batch).numel())
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


def _features(
    qk: Tensor,
    feature_map: FeatureMapArg,
    omega: Tensor | None,
    group: Callable[[], tuple[Tensor, int]],
    valid: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """``(φ(Q), φ(K))`` from ``qk = [Q | K]``, up to one positive factor per query row and one per graph
    (both cancel in the ratio); rows where ``valid`` is False (padding) get zero key features.

    ``group()`` gives each row's graph and the number of graphs (FAVOR+'s per-graph key shift only).
    """
    dk = qk.shape[1] // 2
    if feature_map == "elu1":
        phi = F.elu(qk).add_(1)  # one pass for both (elu's backward keeps its input, so add_ is safe)
        if valid is not None:
            phi[:, dk:].mul_(valid[:, None])
        return phi[:, :dk], phi[:, dk:]
    q, k = qk[:, :dk], qk[:, dk:]
    if feature_map == "favor+":
        from torch_geometric.utils import scatter

        assert omega is not None
        # log φ⁺(u) = Ω u - |u|²/2 (- log(m)/2, which cancels): shift queries by their row maximum and
        # keys by one constant per graph, so no exponential overflows (a per-key shift would not cancel).
        log_q = q @ omega.T - (q * q).sum(1, keepdim=True) / 2
        log_k = k @ omega.T - (k * k).sum(1, keepdim=True) / 2
        row_max = log_k.detach().amax(1)
        if valid is not None:
            row_max = row_max.masked_fill(~valid, -math.inf)
        index, graphs = group()
        log_k = log_k - scatter(row_max, index, dim=0, dim_size=graphs, reduce="max")[index, None]
        if valid is not None:
            log_k = log_k.masked_fill(~valid[:, None], -math.inf)  # padding: exp(-inf) = 0
        return torch.exp(log_q - log_q.detach().amax(1, keepdim=True)), torch.exp(log_k)
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
    return phi_q, phi_k if valid is None else phi_k * valid[:, None]


BLOCK_ROWS = 4096
"""Padded rows per block: a block's projections, features and products (under 2 kB a row at
``d = d_k = d_v = 64``, some 7 MB a block) stay in a share of the last-level cache instead of streaming
through memory, and a batch takes few enough blocks that per-operation overheads stay small (single-thread
CPU time on a shared 2-core machine: 4096 rows some 10% below 8192 for both benchmark batches)."""
CLASSES_PER_OCTAVE = 4
"""Size classes ``(2^{c/4}, 2^{(c+1)/4}]``: padding a graph to its class's largest wastes < 2^{1/4} - 1 of its rows."""


@dataclass(frozen=True)
class Block:
    """``G`` graphs of one size class, each padded to ``n`` rows: ``rows`` of ``x`` (a slice when they are
    contiguous and unpadded), ``valid`` (``G n``, bool) marking real rows (``None``: no padding), and
    ``dest``: the output row of each padded row (a slice, or a tensor holding ``N`` for padding)."""

    G: int
    n: int
    rows: slice | Tensor
    valid: Tensor | None
    dest: slice | Tensor

    def take(self, t: Tensor) -> Tensor:
        """This block's rows of the node-ordered ``t`` (padding rows repeat a real row; ``valid`` masks them)."""
        return t[self.rows] if isinstance(self.rows, slice) else t.index_select(0, self.rows)

    def group(self, device: torch.device) -> Tensor:
        """``(G n,)``: each padded row's graph within the block."""
        return torch.arange(self.G, device=device).repeat_interleave(self.n)


def size_classes(batch: Tensor, B: int) -> tuple[Tensor, Tensor, list[Tensor]]:
    """``(counts, ptr, [graph ids per class])``: the non-empty graphs grouped by :data:`CLASSES_PER_OCTAVE`
    size classes, ids ascending within a class."""
    counts = torch.bincount(batch, minlength=B)
    ptr = torch.cumsum(counts, 0) - counts
    graphs = torch.nonzero(counts).flatten()
    key = torch.ceil(CLASSES_PER_OCTAVE * torch.log2(counts[graphs].double())).long()
    order = torch.argsort(key, stable=True)
    _, per_class = torch.unique_consecutive(key[order], return_counts=True)
    return counts, ptr, list(torch.split(graphs[order], per_class.tolist()))


def layout(batch: Tensor, B: int) -> list[Block]:
    """Blocks of at most :data:`BLOCK_ROWS` padded rows, each holding whole graphs of one size class.

    A graph larger than a block is a block of its own, unpadded (its rows are contiguous).  All index
    work is vectorized per class (a few dozen classes at most); the only per-graph step is for graphs
    of more than :data:`BLOCK_ROWS` nodes.
    """
    N = batch.shape[0]
    counts, ptr, classes = size_classes(batch, B)
    blocks: list[Block] = []
    for ids in classes:
        sizes = counts[ids]
        G, n = len(ids), int(sizes.max())
        if n > BLOCK_ROWS:
            for first, size in zip(ptr[ids].tolist(), sizes.tolist(), strict=True):
                rows = slice(first, first + size)
                blocks.append(Block(1, size, rows, None, rows))
            continue
        per = max(1, BLOCK_ROWS // n)
        position = torch.arange(n, device=batch.device)
        valid = position < sizes[:, None]  # (G, n)
        index = ptr[ids, None] + position
        full = bool(valid.all())
        if full and int(ids[-1] - ids[0]) == G - 1:  # equal sizes, consecutive ids: rows [first, first + G n)
            first = int(ptr[ids[0]])
            for s in range(0, G, per):
                rows = slice(first + s * n, first + min(G, s + per) * n)
                blocks.append(Block(min(per, G - s), n, rows, None, rows))
            continue
        dest = index.masked_fill(~valid, N)  # padding writes to a spare row past the end
        index = index.clamp(max=N - 1)  # padding repeats a real row; `valid` keeps it out of every sum
        for rows, ok, to in zip(torch.split(index, per), torch.split(valid, per), torch.split(dest, per), strict=True):
            blocks.append(Block(rows.shape[0], n, rows.flatten(), None if full else ok.flatten(), to.flatten()))
    return blocks


FORMS = ("quadratic", "state", "state_x", "quadratic_x")
"""How a block multiplies (per graph of ``n`` rows): ``(Φ_Q Φ_Kᵀ) V``, ``Φ_Q (Φ_Kᵀ V)``,
``Φ_Q ((Φ_Kᵀ X) W_V)`` and ``((Φ_Q Φ_Kᵀ) X) W_V``; the ``_x`` forms never project ``V = X W_V``."""


def choose_form(n: int, m: int, d: int, dv: int) -> str:
    """The form of :data:`FORMS` with the fewest multiply-adds for graphs of ``n`` rows (ties: the earlier)."""
    cost = {
        "quadratic": n * d * dv + n * n * (m + dv + 1),
        "state": n * d * dv + n * m * (2 * dv + 2),
        "state_x": n * m * (d + dv + 2) + m * d * dv,
        "quadratic_x": n * n * (m + d + 1) + n * d * dv,
    }
    return min(FORMS, key=cost.__getitem__)


def _attend(phi_q: Tensor, phi_k: Tensor, block: Block, form: str, vx: Tensor, Wv: Tensor | None = None) -> Tensor:
    """One block's ``φ(q_i)ᵀ S_g / φ(q_i)ᵀ z_g`` (``G n`` rows, padding rows included) in ``form``.

    ``vx`` is ``V`` (forms ``quadratic``, ``state``) or ``X`` (the ``_x`` forms, ``S_g = (Φ_Kᵀ X_g) W_V``,
    which replaces the ``n d d_v`` projection by ``m d d_v`` per graph).  Padding rows of ``Φ_K`` must be
    zero (:func:`_features` zeroes them), so padding adds nothing to any sum; ``z_g = Φ_Kᵀ 1`` is a column
    sum of ``Φ_K`` and the quadratic form's denominator a row sum of ``Φ_Q Φ_Kᵀ``.
    """
    G, n, m = block.G, block.n, phi_k.shape[1]
    Q, K, VX = phi_q.reshape(G, n, m), phi_k.reshape(G, n, m), vx.reshape(G, n, -1)
    if form in ("quadratic", "quadratic_x"):
        A = torch.bmm(Q, K.transpose(1, 2))
        num = torch.bmm(A, VX)
        if Wv is not None:
            num = num.view(G * n, -1) @ Wv
        return num.reshape(G * n, -1) / A.sum(2).view(G * n, 1)
    S = torch.bmm(K.transpose(1, 2), VX)
    if Wv is not None:
        S = (S.view(G * m, -1) @ Wv).view(G, m, -1)
    out = torch.bmm(Q, torch.cat([S, K.sum(1).unsqueeze(2)], 2)).view(G * n, -1)
    return out[:, :-1] / out[:, -1:]


def _assemble(outs: list[Tensor], blocks: list[Block], N: int) -> Tensor:
    """The blocks' outputs written once into node order (padding rows go to a spare row, then dropped)."""
    if len(blocks) == 1 and isinstance(blocks[0].dest, slice):  # one unpadded block: rows 0..N-1 in order
        return outs[0]
    out = outs[0].new_empty(N + 1, outs[0].shape[1])
    for blk, o in zip(blocks, outs, strict=True):
        if isinstance(blk.dest, slice):
            out[blk.dest] = o
        else:
            out.index_copy_(0, blk.dest, o)
    return out[:N]


def segment_attention_torch(phi_q: Tensor, phi_k: Tensor, v: Tensor, batch: Tensor, B: int) -> Tensor:
    """``out_i = φ(q_i)ᵀ S_{b_i} / φ(q_i)ᵀ z_{b_i}`` from node-ordered features, block by block (:func:`layout`)."""
    blocks, m, dv = layout(batch, B), phi_k.shape[1], v.shape[1]
    outs = []
    for blk in blocks:
        form = "quadratic" if choose_form(blk.n, m, dv, dv) == "quadratic" else "state"
        keys = blk.take(phi_k) if blk.valid is None else blk.take(phi_k) * blk.valid[:, None]
        outs.append(_attend(blk.take(phi_q), keys, blk, form, blk.take(v)))
    return _assemble(outs, blocks, batch.shape[0])


def _streamed(x: Tensor, W: Tensor, Wv: Tensor, feature_map: FeatureMapArg) -> Tensor:
    """One graph larger than a block, in row blocks: ``[P | z] = Σ Φ_Kᵀ [X | 1]`` over them, ``S = P W_V``,
    then each block read out.  Every block's work stays in cache, so the time grows linearly with ``n``;
    ``φ(Q)`` is kept (``n m``)."""
    state, queries = None, []
    for rows in torch.split(x, BLOCK_ROWS):
        phi_q, phi_k = _features(rows @ W, feature_map, None, _no_groups, None)
        part = torch.cat([phi_k.T @ rows, phi_k.sum(0)[:, None]], 1)
        state = part if state is None else state + part
        queries.append(phi_q)
    assert state is not None
    state = torch.cat([state[:, :-1] @ Wv, state[:, -1:]], 1)
    outs = [phi_q @ state for phi_q in queries]
    return torch.cat([out[:, :-1] / out[:, -1:] for out in outs])


def _no_groups() -> tuple[Tensor, int]:
    raise AssertionError("graph ids are only needed for FAVOR+'s key shift")


def _segment_torch(
    x: Tensor,
    Wq: Tensor,
    Wk: Tensor,
    Wv: Tensor,
    batch: Tensor,
    B: int,
    feature_map: FeatureMapArg,
    m: int,
    omega: Tensor | None,
) -> Tensor:
    """Projections, features and attention block by block: a block gathers its rows of ``x`` once and
    runs one GEMM for ``[Q | K] = x [W_Q | W_K]`` (``[Q | K | V]`` when its form projects ``V``), so its
    intermediates stay in cache; ``m`` (the feature count, ``d_k`` for a callable) picks each block's form."""
    blocks = layout(batch, B)
    dk, d, dv = Wq.shape[1], x.shape[1], Wv.shape[1]
    Wqk = torch.cat([Wq, Wk], 1)
    Wqkv = torch.cat([Wqk, Wv], 1)
    outs = []
    for blk in blocks:
        if blk.n > BLOCK_ROWS and feature_map != "favor+":  # (FAVOR+'s key shift needs the whole graph)
            outs.append(_streamed(x[blk.rows], Wqk, Wv, feature_map))
            continue
        form = choose_form(blk.n, m, d, dv)
        rows = blk.take(x)
        projected = form in ("quadratic", "state")
        qkv = rows @ (Wqkv if projected else Wqk)
        phi_q, phi_k = _features(
            qkv[:, : 2 * dk], feature_map, omega, lambda b=blk: (b.group(x.device), b.G), blk.valid
        )
        vx, w = (qkv[:, 2 * dk :], None) if projected else (rows, Wv)
        outs.append(_attend(phi_q, phi_k, blk, form, vx, w))
    return _assemble(outs, blocks, x.shape[0])


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

    Returns ``(N, d_v)``.  Cost ``O(N m (d_k + d_v))`` time (``n² (m + d_v)`` for a graph of ``n < m``
    nodes, whichever is less) and ``O(N (m + d_v))`` memory; differentiable (torch autograd).
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
    omega = None if omega is None else omega.to(acc)
    if chosen == "triton":
        from attnverify.fast.triton.mpnn_vn import segment_attention_triton

        dk = Wq.shape[1]
        qkv = x @ torch.cat([Wq, Wk, Wv], 1)  # one GEMM for the three projections
        phi_q, phi_k = _features(qkv[:, : 2 * dk], feature_map, omega, lambda: (batch, B), None)
        out = segment_attention_triton(phi_q, phi_k, qkv[:, 2 * dk :], batch, B)
    else:
        m = omega.shape[0] if omega is not None else Wq.shape[1]
        out = _segment_torch(x, Wq, Wk, Wv, batch, B, feature_map, m, omega)
    return out.to(out_dtype)
