"""Every registered claim holds, and every planted-bug mutant is rejected (CONTRIBUTING.md, "Claims").

Adding a claim to the registry adds its tests here automatically.
"""

from __future__ import annotations

import pytest

from attnverify import registry

CLAIMS = registry.claims()
MUTANT_CASES = [(c, m) for c in CLAIMS for m in c.mutants]


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_claim_holds(claim: registry.Claim) -> None:
    evidence = claim.run()
    failures = "\n".join(f"{f.name}: {f.metric:.3g} > {f.tolerance:.3g} {f.note}" for f in evidence.failures())
    assert evidence.holds, failures
    assert evidence.cases > 0
    assert evidence.metric <= evidence.tolerance


@pytest.mark.parametrize(("claim", "mutant"), MUTANT_CASES, ids=lambda x: getattr(x, "id", getattr(x, "name", "")))
def test_mutant_rejected(claim: registry.Claim, mutant: registry.Mutant) -> None:
    evidence = claim.run_mutant(mutant)
    assert not evidence.holds, f"{claim.id} accepted the mutant {mutant.name}: {mutant.description}"
    # Rejected for a wrong number, not only because the mutant crashed.
    numeric = [f for f in evidence.failures() if not f.name.endswith(": raised")]
    assert numeric, [f.note for f in evidence.failures()]


def test_every_claim_has_mutants_and_a_statement() -> None:
    for claim in CLAIMS:
        assert claim.mutants, f"{claim.id} has no mutant: nothing shows its check can fail"
        assert claim.statement.strip() and claim.kind in registry.KINDS
        assert not any(ord(ch) < 32 for ch in claim.statement), f"{claim.id}: a lost backslash in the statement?"
        assert claim.id.startswith(claim.paper.key + ".") or "." in claim.id


def test_registry_select() -> None:
    assert registry.select([]) == CLAIMS
    assert [c.id for c in registry.select(["aaren.scan*"])] == ["aaren.scan_equals_causal_softmax"]
    with pytest.raises(KeyError, match="no claim matches"):
        registry.select(["nothing.*"])
    assert registry.get("aaren.shift_invariance").kind == "identity"
