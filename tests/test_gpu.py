"""The ``gpu`` tier: the claims' checks on CUDA, where the Triton kernel joins the scan subject.

Run with ``pytest -m gpu`` on a machine with CUDA; skipped without it.
"""

from __future__ import annotations

import pytest
import torch

from attnverify import registry
from attnverify.fast import Aaren
from attnverify.numerics import scaled_error

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CUDA = torch.device("cuda")


@pytest.mark.parametrize("claim", [c for c in registry.claims() if c.paper.key == "aaren"], ids=lambda c: c.id)
def test_claims_hold_on_cuda(claim: registry.Claim) -> None:
    evidence = claim.run(registry.CheckContext(device=CUDA))
    assert evidence.holds, [f"{f.name}: {f.metric:.3g} > {f.tolerance:.3g}" for f in evidence.failures()]


def test_module_on_cuda_matches_cpu() -> None:
    layer = Aaren(64, 4, dtype=torch.float64)
    x = torch.randn(2, 300, 64, dtype=torch.float64)
    with torch.no_grad():
        want = layer(x)
        got = layer.to(CUDA)(x.to(CUDA)).cpu()
    assert scaled_error(got, want, want.abs().max()) <= 1e-12
