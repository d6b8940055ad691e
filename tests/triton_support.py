"""What every Triton test module shares: its markers and the device its kernels run on.

The kernels run compiled on CUDA, or under ``TRITON_INTERPRET=1`` on the CPU, which must be set
before ``import triton`` (``tests/test_triton_tier.py`` starts that tier in its own process).
"""

from __future__ import annotations

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
TRITON_MARKS = [
    pytest.mark.triton,
    pytest.mark.skipif(
        not (CUDA or os.environ.get("TRITON_INTERPRET") == "1"), reason="needs CUDA or TRITON_INTERPRET=1"
    ),
]
DEVICE = "cuda" if CUDA else "cpu"
