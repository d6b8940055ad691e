"""Causal linear attention (identity feature map), chunked, on one device.

``o_t = Σ_{s<=t} (q_t · k_s) v_s + q_t S_0`` for an optional initial state ``S_0`` (``D × Dv``),
divided by ``Σ_{s<=t} q_t · k_s + q_t z_0`` when normalizing.  The chunked form (chunk ``C``):
``O_c = [(Q_c K_c^T) ⊙ Ψ] V_c + Q_c S_c`` with ``S_c = S_0 + Σ_{b<c} K_b^T V_b`` (the LASP-2
identity applied to chunks of one sequence).  Cost ``O(T C D + T D Dv)``; memory ``O(T D Dv / C)``.
Verified against ``attnverify.reference.linear_attention``.  Differentiable through torch ops.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnverify.fast._dispatch import accumulation_dtype, require_float, require_same, require_tensor

CHUNK = 64


def _chunked(q: Tensor, k: Tensor, v: Tensor, initial_state: Tensor | None) -> Tensor:
    """``q, k: (B, H, T, D)``, ``v: (B, H, T, E)``, ``initial_state: (B, H, D, E)`` → ``(B, H, T, E)``."""
    T = q.shape[2]
    n_chunks = -(-T // CHUNK)
    pad = n_chunks * CHUNK - T
    if pad:
        q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    qc, kc, vc = (t.unflatten(2, (n_chunks, CHUNK)) for t in (q, k, v))  # (B, H, n, C, ·)
    states = kc.transpose(-1, -2) @ vc  # (B, H, n, D, E): K_c^T V_c
    carried = states.cumsum(2) - states  # Σ_{b<c} K_b^T V_b
    if initial_state is not None:
        carried = carried + initial_state[:, :, None]
    causal = torch.ones(CHUNK, CHUNK, dtype=torch.bool, device=q.device).tril()
    scores = (qc @ kc.transpose(-1, -2)).masked_fill(~causal, 0.0)
    out = scores @ vc + qc @ carried
    return out.flatten(2, 3)[:, :, :T]


def validate_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    """``q, k: (B, H, T, D)`` and ``v: (B, H, T, Dv)``, floating, one dtype and device; raise naming the argument."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        require_tensor(name, t)
        require_float(name, t)
        if t.dim() != 4:
            raise ValueError(f"{name}: expected shape (B, H, T, D), got {tuple(t.shape)}")
    require_same(("q", "k"), q, k)
    require_same(("q", "v"), q, v)
    if k.shape != q.shape:
        raise ValueError(f"k: expected the shape of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v: expected shape {(*q.shape[:3], 'Dv')}, got {tuple(v.shape)}")


def causal_linear_attention(
    q: Tensor, k: Tensor, v: Tensor, *, normalize: bool = False, initial_state: Tensor | None = None
) -> Tensor:
    """Causal linear attention ``o_t = Σ_{s<=t} (q_t · k_s) v_s`` (+ ``q_t S_0``), optionally normalized.

    Args:
        q, k: ``(B, H, T, D)``; v: ``(B, H, T, Dv)``; same dtype and device.
        normalize: divide by ``Σ_{s<=t} q_t · k_s`` (+ ``q_t z_0``); the caller keeps it away from 0
            (e.g. positive features).
        initial_state: ``(B, H, D, Dv)`` (``(B, H, D, Dv + 1)`` with the key sum ``z_0`` as the last
            column when ``normalize``): the state of the tokens before this sequence.

    Returns ``(B, H, T, Dv)`` in the input dtype (float16/bfloat16 accumulate in float32).
    """
    validate_qkv(q, k, v)
    dv = v.shape[-1]
    expected = (*q.shape[:2], q.shape[-1], dv + int(normalize))
    if initial_state is not None:
        require_tensor("initial_state", initial_state)
        if initial_state.shape != expected:
            raise ValueError(f"initial_state: expected shape {expected}, got {tuple(initial_state.shape)}")
    dtype, acc = q.dtype, accumulation_dtype(q.dtype)
    q, k, v = q.to(acc), k.to(acc), v.to(acc)
    if normalize:
        v = torch.cat([v, torch.ones_like(v[..., :1])], -1)
    out = _chunked(q, k, v, None if initial_state is None else initial_state.to(acc))
    if normalize:
        out = out[..., :dv] / out[..., dv:]
    return out.to(dtype)
