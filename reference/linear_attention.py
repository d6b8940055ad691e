"""Causal linear attention, written plainly (identity feature map).

Shapes: ``q, k: (B, H, T, D)``, ``v: (B, H, T, Dv)``; per head the state is ``S in R^{D x Dv}``.
Two forms of the same map, for the LASP-2 identity (arXiv 2502.07563) and the fast paths to be
checked against: the masked quadratic form and the recurrence (write, then read).
"""

from __future__ import annotations

import torch
from torch import Tensor


def quadratic(q: Tensor, k: Tensor, v: Tensor, *, normalize: bool = False) -> Tensor:
    """``O = ((Q K^T) ⊙ Ψ) V`` with ``Ψ`` the lower-triangular ones (diagonal included).

    With ``normalize``, row ``t`` is divided by ``((Q K^T) ⊙ Ψ) 1``, i.e. ``Σ_{s<=t} q_t · k_s``.
    """
    t = q.shape[-2]
    psi = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    A = (q @ k.transpose(-1, -2)).masked_fill(~psi, 0.0)  # (B, H, T, T)
    out = A @ v
    return out / A.sum(-1, keepdim=True) if normalize else out


def recurrent(q: Tensor, k: Tensor, v: Tensor, *, normalize: bool = False) -> Tensor:
    """``S_t = S_{t-1} + k_t v_t^T``, ``z_t = z_{t-1} + k_t``; ``o_t = S_t^T q_t`` (``/ z_t · q_t``)."""
    B, H, T, D = q.shape
    S = torch.zeros(B, H, D, v.shape[-1], dtype=q.dtype, device=q.device)
    z = torch.zeros(B, H, D, dtype=q.dtype, device=q.device)
    outputs = []
    for t in range(T):
        S = S + k[:, :, t, :, None] * v[:, :, t, None, :]  # write
        z = z + k[:, :, t]
        o = (q[:, :, t, :, None] * S).sum(-2)  # read: S_t^T q_t
        outputs.append(o / (z * q[:, :, t]).sum(-1, keepdim=True) if normalize else o)
    return torch.stack(outputs, 2) if outputs else v.clone()
