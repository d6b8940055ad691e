"""Hypothesis strategies: draw shapes, kinds and seeds (not raw floats), so failures shrink small."""

from __future__ import annotations

from hypothesis import strategies as st

from attnverify.theory.aaren import ScanCase, scan_case

SCORE_KINDS = ("normal", "wide", "shifted", "spread", "ramp", "spike", "grid", "constant")
MASK_KINDS = ("none", "random", "leftpad")

lengths = st.one_of(
    st.sampled_from([1, 2, 3]),
    st.integers(1, 8).flatmap(lambda k: st.sampled_from([2**k - 1, 2**k, 2**k + 1])),
    st.integers(1, 257),
)
"""Sequence lengths in [1, 257], favouring 1, 2, 3 and 2^k ± 1 (chunk and tile edges)."""

leads = st.sampled_from([(), (1,), (3,), (2, 3)])


@st.composite
def scan_cases(draw: st.DrawFn, max_n: int | None = None, masks: tuple[str, ...] = MASK_KINDS) -> ScanCase:
    """A :class:`ScanCase` from drawn length, width, batch shape, score and mask kinds and seed."""
    n = draw(lengths if max_n is None else lengths.filter(lambda n: n <= max_n))
    return scan_case(
        n,
        dv=draw(st.integers(1, 16)),
        lead=draw(leads),
        scores=draw(st.sampled_from(SCORE_KINDS)),
        mask=draw(st.sampled_from(masks)),
        seed=draw(st.integers(0, 2**16)),
    )


@st.composite
def graph_batches(draw: st.DrawFn, max_graphs: int = 6, max_nodes: int = 50, favor: bool = False):  # type: ignore[no-untyped-def]
    """A torch_geometric batch (:class:`attnverify.theory.mpnn_vn.GraphCase`) from drawn graph sizes in
    ``1..max_nodes`` (favouring 1, 2, 7 and 50), edge kind and seed; ``favor``: a frozen Ω and bounded inputs."""
    from attnverify.reference.mpnn_vn import gaussian_omega
    from attnverify.theory.mpnn_vn import DK, GRAPH_KINDS, graph_case

    size = st.one_of(st.sampled_from([n for n in (1, 2, 7, 50) if n <= max_nodes]), st.integers(1, max_nodes))
    sizes = draw(st.lists(size, min_size=1, max_size=max_graphs))
    seed = draw(st.integers(0, 2**16))
    omega = None
    if favor:
        omega = gaussian_omega(draw(st.sampled_from([1, 3, 16, 33])), DK, seed=seed, orthogonal=draw(st.booleans()))
    kind = draw(st.sampled_from(GRAPH_KINDS))
    return graph_case(sizes, kind, seed=seed, omega=omega, scaled=not favor and draw(st.booleans()))
