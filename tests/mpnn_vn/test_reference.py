"""The reference constructions: MPNN + VN vs dense attention, the edge message kept apart, Ω, Results B-C, sympy."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.utils import to_dense_adj

from attnverify.numerics import identity_tolerance, scaled_error
from attnverify.proofs_checks import mpnn_vn as proofs
from attnverify.reference import mpnn_vn as ref
from attnverify.theory.mpnn_vn import DV, D, collision_pair, deepsets_case, depth_case, graph_case
from tests.strategies import graph_batches

F64 = torch.float64


@settings(max_examples=25)
@given(case=graph_batches(max_graphs=4, max_nodes=30))
def test_mpnn_vn_layer_equals_dense_attention(case) -> None:
    out = ref.MPNNVN(case.Wq, case.Wk, case.Wv)(case.x, case.edge_index, case.batch)
    assert scaled_error(out, case.ground_truth(F64), case.scale(F64)) <= identity_tolerance(F64)


@settings(max_examples=25)
@given(case=graph_batches(max_graphs=3, max_nodes=20), seed=st.integers(0, 99))
def test_edge_message_adds_the_neighbour_sum_and_nothing_else(case, seed) -> None:
    """With ``W_E ≠ 0`` the layer is attention plus ``A X W_E``: the graph-edge message has its own weights."""
    W_edge = torch.randn(D, DV, generator=torch.Generator().manual_seed(seed), dtype=F64)
    out = ref.MPNNVN(case.Wq, case.Wk, case.Wv, W_edge=W_edge)(case.x, case.edge_index, case.batch)
    A = to_dense_adj(case.edge_index, max_num_nodes=case.x.shape[0])[0].to(F64)  # A[source, target]
    expected = case.ground_truth(F64) + A.T @ case.x @ W_edge
    assert scaled_error(out, expected, expected.abs().max()) <= identity_tolerance(F64)


def test_vn_state_is_one_per_graph_and_starts_at_zero() -> None:
    """A batch of two graphs, one of them a single node: that node's output is its own value exactly."""
    case = graph_case((1, 5), "complete", seed=3)
    out = ref.MPNNVN(case.Wq, case.Wk, case.Wv)(case.x, case.edge_index, case.batch)
    assert scaled_error(out[:1], case.x[:1] @ case.Wv, (case.x[:1] @ case.Wv).abs().max()) <= 1e-15


@pytest.mark.parametrize(("m", "d"), [(8, 8), (20, 8), (3, 4)])
def test_gaussian_omega(m: int, d: int) -> None:
    iid = ref.gaussian_omega(m, d, seed=1)
    orth = ref.gaussian_omega(m, d, seed=1, orthogonal=True)
    assert iid.shape == orth.shape == (m, d)
    assert torch.equal(iid, ref.gaussian_omega(m, d, seed=1))  # frozen by its seed
    for start in range(0, m, d):
        block = orth[start : start + d]
        gram = block @ block.T
        assert (gram - torch.diag(torch.diagonal(gram))).abs().max() < 1e-12  # orthogonal rows within a block
    batched = ref.gaussian_omega(m, d, seed=1, orthogonal=True, batch=(3,))
    assert batched.shape == (3, m, d)


def test_favor_features_positive_and_unbiased_in_expectation_of_many() -> None:
    x, y = torch.tensor([0.3, -0.2], dtype=F64), torch.tensor([0.1, 0.4], dtype=F64)
    omega = ref.gaussian_omega(200_000, 2, seed=0)
    fx, fy = ref.favor_plus_features(torch.stack([x, y]), omega)
    assert bool((fx > 0).all())
    assert abs(float(fx @ fy) - float(torch.exp(x @ y))) < 5e-3


def test_softmax_by_depth_single_node_and_order() -> None:
    case = depth_case(seed=4)
    out = ref.softmax_by_depth(case.x[:1], case.Wq, case.Wk, case.Wv, case.anchors[:1], 8.0)
    assert scaled_error(out, case.x[:1] @ case.Wv, 1.0) <= 1e-15


@given(n=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_deepsets_d1_recovers_softmax_attention(n: int, seed: int) -> None:
    x, Wq, Wk, Wv = deepsets_case(n, seed)
    truth = ref.softmax_attention_layer(x, torch.zeros(n, dtype=torch.long), Wq, Wk, Wv)
    assert scaled_error(ref.deepsets_attention_d1(x, Wq, Wk, Wv), truth, (x @ Wv).abs().max()) <= 1e-8


def test_collision_pair_shares_n_minus_1_power_sums() -> None:
    a, b = collision_pair()
    assert all(abs(float((a**k).sum() - (b**k).sum())) < 1e-12 for k in (1, 2))
    assert abs(float((a**3).sum() - (b**3).sum())) > 1e-3


def test_symbolic_steps_hold() -> None:
    steps = proofs.reassociation() + proofs.favor_moments() + proofs.newton_identities() + proofs.fewer_power_sums()
    assert all(s.holds for s in steps), [s.name for s in steps if not s.holds]
