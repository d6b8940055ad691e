"""A kernel author's own prefix-attention kernels, as an outside project would write them.

``prefix_attention`` is causal softmax attention with one query per position, written the plain
way (a softmax per position); ``exclusive_prefix_attention`` has the classic bug of an
exclusive scan: position k attends to tokens before k only.
"""

from __future__ import annotations

import torch
from torch import Tensor


def prefix_attention(scores: Tensor, values: Tensor) -> Tensor:
    """``o_k = sum_{i<=k} softmax(s_1..s_k)_i v_i``, one position at a time; 0 where every token so far
    is masked (-inf)."""
    values = values.masked_fill((scores == float("-inf"))[..., None], 0)  # padding may hold garbage
    rows = [
        torch.softmax(scores[..., : k + 1], -1)[..., None, :] @ values[..., : k + 1, :] for k in range(scores.shape[-1])
    ]
    out = torch.cat(rows, -2) if rows else values.clone()
    return torch.nan_to_num(out, nan=0.0)  # softmax over no token is NaN: our output is 0


def exclusive_prefix_attention(scores: Tensor, values: Tensor) -> Tensor:
    """Wrong: ``o_k`` attends to ``1..k-1`` (and ``o_1`` is 0)."""
    out = prefix_attention(scores, values)
    shifted = prefix_attention(scores[..., :-1], values[..., :-1, :])
    return torch.cat([torch.zeros_like(out[..., :1, :]), shifted], -2)
