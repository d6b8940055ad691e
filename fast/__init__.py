"""Verified fast implementations: vectorized torch on CPU, Triton kernels on CUDA.

Importing this package pulls in torch only (no sympy, hypothesis or the claim registry);
each function validates its input once and dispatches on device (see ``_dispatch``).
"""

from attnverify.fast.aaren import Aaren, AarenState, combine, prefix_softmax_attention
from attnverify.fast.dsf import gated_linear_attention, selective_scan
from attnverify.fast.lla import local_linear_attention
from attnverify.fast.mpnn_vn import segment_linear_attention
from attnverify.fast.rfa import limit_kernel_gram, random_feature_attention_features

__all__ = [
    "Aaren",
    "AarenState",
    "combine",
    "gated_linear_attention",
    "limit_kernel_gram",
    "local_linear_attention",
    "prefix_softmax_attention",
    "random_feature_attention_features",
    "segment_linear_attention",
    "selective_scan",
]
