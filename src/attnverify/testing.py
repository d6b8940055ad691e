"""Use the claims from your own pytest suite: :func:`assert_claim` and :func:`claims_params`.

::

    from attnverify.testing import assert_claim, claims_params

    @pytest.mark.parametrize("claim_id", claims_params("aaren.scan_*", "aaren.shift_*"))
    def test_my_kernel(claim_id):
        assert_claim(claim_id, my_prefix_attention)

The same checks as ``attnverify verify --impl`` run on the callable, against float64 ground
truth; a failing claim raises :class:`AssertionError` listing its failing findings.  A claim with
no case for the requested dtypes or device skips the test (``pytest.skip``), saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from attnverify import registry
from attnverify.evidence import Evidence


def _dtypes(dtypes: Iterable[torch.dtype | str] | None) -> tuple[torch.dtype, ...] | None:
    if dtypes is None:
        return None
    if isinstance(dtypes, torch.dtype | str):
        dtypes = (dtypes,)
    names = {registry.dtype_name(d): d for d in registry.ALL_DTYPES}
    chosen = []
    for d in dtypes:
        dtype = names.get(d) if isinstance(d, str) else d
        if dtype not in registry.ALL_DTYPES:
            raise ValueError(f"dtypes: expected dtypes among {', '.join(names)}, got {d!r}")
        chosen.append(dtype)
    if not chosen:
        raise ValueError("dtypes: expected at least one dtype (None: the claim's defaults)")
    return tuple(chosen)


def _skip(reason: str) -> None:
    import pytest

    pytest.skip(reason)


def assert_claim(
    claim_id: str,
    fn: Callable[..., Any],
    *,
    dtypes: Iterable[torch.dtype | str] | None = None,
    device: str | torch.device = "cpu",
    budget: registry.Budget = "default",
    seed: int = 0,
) -> Evidence:
    """Run claim ``claim_id``'s check on ``fn`` in place of its subject; raise if it fails.

    ``dtypes`` (default float64 and float32) are narrowed to those the claim applies to.  Raises
    :class:`AssertionError` listing the failing findings, :class:`TypeError` when ``fn``'s signature
    cannot take the subject's arguments, ``KeyError`` for an unknown claim; skips the calling test when
    the claim is not applicable (or CUDA is asked for and missing).  Returns the evidence when it holds.
    """
    claim = registry.get(claim_id)
    if claim.subject is None:
        raise ValueError(f"claim_id: {claim_id} has no subject that fn could replace")
    if not callable(fn):
        raise TypeError(f"fn: expected a callable with the signature {claim.subject.signature}, got {fn!r}")
    why = claim.subject.cannot_call(fn)
    if why is not None:
        raise TypeError(f"fn: {why} (subject {claim.subject.name}: {claim.subject.signature})")
    if budget not in registry.BUDGETS:
        raise ValueError(f"budget: expected one of {', '.join(registry.BUDGETS)}, got {budget!r}")
    where = torch.device(device)
    if where.type == "cuda" and not torch.cuda.is_available():
        _skip("device: cuda requested but torch.cuda.is_available() is False")
    ctx = registry.CheckContext(budget=budget, device=where, dtypes=_dtypes(dtypes), seed=seed)
    label = getattr(fn, "__qualname__", None) or type(fn).__name__
    evidence = claim.run(ctx, impl=fn, label=label)
    if evidence.verdict == "not applicable":
        _skip(f"{claim_id}: not applicable: {evidence.details['reason']}")
    if evidence.verdict == "fails":
        failures = evidence.failures()
        lines = [
            f"- {f.name}: {f.metric:.3g} > {f.tolerance:.3g}" + (f" ({f.note})" if f.note else "") for f in failures
        ]
        raise AssertionError(
            f"{claim_id} fails for {label} ({len(failures)} of {len(evidence.findings)} findings):\n" + "\n".join(lines)
        )
    return evidence


def claims_params(*patterns: str) -> list[Any]:
    """``pytest.param(claim_id, id=claim_id)`` for every claim matching the globs (all claims if none),
    for ``@pytest.mark.parametrize("claim_id", claims_params(...))``.  Raises ``KeyError`` for a
    pattern that matches nothing."""
    import pytest

    return [pytest.param(claim.id, id=claim.id) for claim in registry.select(patterns)]
