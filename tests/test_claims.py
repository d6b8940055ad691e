"""Every registered claim holds, and every planted-bug mutant is rejected (CONTRIBUTING.md, "Claims").

Adding a claim to the registry adds its tests here automatically.
"""

from __future__ import annotations

import re

import pytest
import torch

from attnverify import registry

CLAIMS = registry.claims()
TOPICS = {"linear_attention": "lasp2"}
"""Claim id families named after a topic rather than the paper's key, with the paper they come from."""
MUTANT_CASES = [(c, m) for c in CLAIMS for m in c.mutants]


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_claim_holds(claim: registry.Claim) -> None:
    evidence = claim.run()
    failures = "\n".join(f"{f.name}: {f.metric:.3g} > {f.tolerance:.3g} {f.note}" for f in evidence.failures())
    assert evidence.verdict == "holds", failures
    assert evidence.metric <= evidence.tolerance
    # Evidence for every (implementation, dtype) pair, numeric cases only.
    per_pair = evidence.details["cases_per_pair"]
    assert per_pair and all(n > 0 for n in per_pair.values()), per_pair
    # Every convention the claim lists is judged, by one finding.
    names = [f.name for f in evidence.findings]
    for convention in claim.conventions:
        assert sum(n.startswith(f"convention {convention.name}:") for n in names) == 1, (convention.name, names)


@pytest.mark.parametrize(("claim", "mutant"), MUTANT_CASES, ids=lambda x: getattr(x, "id", getattr(x, "name", "")))
def test_mutant_rejected(claim: registry.Claim, mutant: registry.Mutant) -> None:
    evidence = claim.run_mutant(mutant)
    assert evidence.verdict == "fails", f"{claim.id} accepted the mutant {mutant.name}: {mutant.description}"
    # Rejected for a wrong number, not only because the mutant crashed.
    numeric = [f for f in evidence.failures() if not f.name.endswith(": raised")]
    assert numeric, [f.note for f in evidence.failures()]


def test_every_claim_has_mutants_and_a_statement() -> None:
    for claim in CLAIMS:
        assert claim.mutants, f"{claim.id} has no mutant: nothing shows its check can fail"
        assert claim.statement.strip() and claim.kind in registry.KINDS
        assert not any(ord(ch) < 32 for ch in claim.statement), f"{claim.id}: a lost backslash in the statement?"
        assert re.fullmatch(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*", claim.id), f"{claim.id}: expected 'family.snake_case'"
        family = claim.id.partition(".")[0]
        assert TOPICS.get(family, family) == claim.paper.key, f"{claim.id}: id family vs paper {claim.paper.key}"
        assert claim.dtypes and set(claim.dtypes) <= set(registry.ALL_DTYPES)
        assert claim.devices and set(claim.devices) <= set(registry.DEVICES)


def test_mutants_and_our_implementations_take_the_subjects_arguments() -> None:
    """``--impl`` refuses a callable whose signature cannot take the subject's arguments; ours all can."""
    for claim in CLAIMS:
        if claim.subject is None:
            continue
        assert claim.subject.args is not None, f"{claim.id}: declare the subject's arguments (Subject.args)"
        for fn in [m.fn for m in claim.mutants] + [i.fn for i in claim.subject.implementations(torch.device("cpu"))]:
            assert claim.subject.cannot_call(fn) is None, (claim.id, claim.subject.cannot_call(fn))


def test_registry_select() -> None:
    assert registry.select([]) == CLAIMS
    assert [c.id for c in registry.select(["aaren.scan*"])] == ["aaren.scan_equals_causal_softmax"]
    with pytest.raises(KeyError, match="no claim matches"):
        registry.select(["nothing.*"])
    assert registry.get("aaren.shift_invariance").kind == "identity"
