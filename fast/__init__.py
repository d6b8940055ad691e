"""Verified fast implementations: vectorized torch on CPU, Triton kernels on CUDA.

Importing this package pulls in torch only (no sympy, hypothesis or the claim registry);
each function validates its input once and dispatches on device (see ``_dispatch``).
"""

from attnverify.fast.aaren import Aaren, AarenState, combine, prefix_softmax_attention

__all__ = ["Aaren", "AarenState", "combine", "prefix_softmax_attention"]
