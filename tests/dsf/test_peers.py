"""flash-linear-attention's naive references checked by our GLA and Lightning claims (``pip install -e .[peers]``).

They compute in float32 whatever the input dtype, so they are held to the float32 tolerance; in float64
the claims reject them by about 2e-7 (book/dsf.md, "Peers").
"""

from __future__ import annotations

import pytest
import torch

from attnverify import registry
from attnverify.registry import CheckContext
from attnverify.theory.dsf import PEERS

pytest.importorskip("fla.ops.gla.naive", reason="flash-linear-attention (fla-core) is not installed: .[peers]")


@pytest.mark.parametrize(("claim_id", "peer"), PEERS, ids=lambda x: getattr(x, "__name__", x))
def test_peer_holds_in_float32_and_is_rejected_in_float64(claim_id: str, peer: object) -> None:
    claim = registry.get(claim_id)
    in_f32 = claim.run(CheckContext(dtypes=(torch.float32,)), impl=peer, label="peer")
    assert in_f32.holds, [f.name for f in in_f32.failures()]
    in_f64 = claim.run(CheckContext(dtypes=(torch.float64,)), impl=peer, label="peer")
    assert not in_f64.holds and 1e-10 < in_f64.metric < 1e-5
