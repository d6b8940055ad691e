"""``attnverify.testing`` used the way an outside project's test suite would use it."""

from __future__ import annotations

import pytest
import torch

from attnverify.testing import assert_claim, claims_params
from tests.example_kernels import exclusive_prefix_attention, prefix_attention


@pytest.mark.parametrize("claim_id", claims_params("aaren.scan_*", "aaren.shift_*"))
def test_my_kernel_keeps_the_claims(claim_id: str) -> None:
    assert_claim(claim_id, prefix_attention)


def test_a_wrong_kernel_fails_with_its_findings() -> None:
    with pytest.raises(AssertionError) as exc:
        assert_claim("aaren.scan_equals_causal_softmax", exclusive_prefix_attention, dtypes=["float64"])
    message = str(exc.value)
    assert message.startswith("aaren.scan_equals_causal_softmax fails for exclusive_prefix_attention")
    assert "exclusive_prefix_attention [float64]: error vs masked quadratic softmax" in message
    assert "o_1 = v_1" in message and "[float32]" not in message


def test_a_claim_without_cases_for_the_dtype_skips() -> None:
    with pytest.raises(pytest.skip.Exception, match=r"not applicable.*applies to float64, float32"):
        assert_claim("aaren.shift_invariance", prefix_attention, dtypes=[torch.bfloat16])


def test_arguments_are_checked_before_any_check_runs() -> None:
    with pytest.raises(TypeError, match=r"fn: .*cannot be called as fn\(scores, values\)"):
        assert_claim("aaren.scan_equals_causal_softmax", lambda scores: scores)
    with pytest.raises(ValueError, match="dtypes: expected dtypes among"):
        assert_claim("aaren.scan_equals_causal_softmax", prefix_attention, dtypes=["float8"])
    with pytest.raises(ValueError, match="budget: expected one of"):
        assert_claim("aaren.scan_equals_causal_softmax", prefix_attention, budget="huge")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="unknown claim"):
        assert_claim("aaren.nothing", prefix_attention)
    with pytest.raises(KeyError, match="no claim matches"):
        claims_params("nothing.*")
