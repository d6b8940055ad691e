"""Causal linear attention (identity feature map): the no-decay case of ``fast.dsf.gated_linear_attention``.

``o_t = Σ_{s<=t} (q_t · k_s) v_s + q_t S_0`` for an optional initial state ``S_0`` (``D × Dv``),
divided by ``Σ_{s<=t} q_t · k_s + q_t z_0`` when normalizing.  One chunked engine serves the whole
linear-recurrence family (book/dsf.md); this module keeps the linear-attention API that the
sequence-parallel path (LASP-2) builds on.  Verified against ``attnverify.reference.linear_attention``.
"""

from __future__ import annotations

from torch import Tensor

from attnverify.fast.dsf import gated_linear_attention, validate_qkv

__all__ = ["CHUNK", "causal_linear_attention", "validate_qkv"]

CHUNK = 64


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
    return gated_linear_attention(q, k, v, normalize=normalize, chunk_size=CHUNK, initial_state=initial_state)
