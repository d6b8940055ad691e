"""``segment_linear_attention`` against the dense float64 reference: properties, bad input, NaN scratch, gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from attnverify.fast import mpnn_vn as mpnn_vn_fast
from attnverify.fast import segment_linear_attention
from attnverify.fast.mpnn_vn import layout, size_classes
from attnverify.numerics import identity_tolerance, scaled_error
from attnverify.reference import mpnn_vn as ref
from attnverify.theory.mpnn_vn import DV, graph_case
from tests.strategies import graph_batches

F64, F32 = torch.float64, torch.float32


def fast(case, dtype=F64, feature_map=None, **kw):  # type: ignore[no-untyped-def]
    x, _, batch, Wq, Wk, Wv, *omega = case.args(dtype, "cpu")
    if omega:
        return segment_linear_attention(x, batch, Wq, Wk, Wv, "favor+", omega=omega[0], **kw)
    return segment_linear_attention(x, batch, Wq, Wk, Wv, feature_map or "elu1", **kw)


@given(case=graph_batches(), dtype=st.sampled_from([F64, F32]))
def test_elu1_matches_dense_reference(case, dtype) -> None:
    out = fast(case, dtype)
    assert out.dtype == dtype and out.shape == (case.x.shape[0], DV)
    tol = identity_tolerance(dtype, max(case.sizes))
    assert scaled_error(out, case.ground_truth(dtype), case.scale(dtype)) <= tol


@given(case=graph_batches(favor=True), dtype=st.sampled_from([F64, F32]))
def test_favor_matches_dense_reference(case, dtype) -> None:
    tol = identity_tolerance(dtype, max(case.sizes))
    assert scaled_error(fast(case, dtype), case.ground_truth(dtype), case.scale(dtype)) <= tol


@given(case=graph_batches(max_graphs=3, max_nodes=20))
def test_callable_feature_map(case) -> None:
    """Any positive map works, e.g. ``exp`` (softmax-free) or a two-part map with m = 2 d_k."""

    def two_part(u: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.nn.functional.softplus(u), torch.exp(-u.abs())], -1)

    for phi in (torch.exp, two_part):
        c = case.rounded(F64)
        truth = ref.linear_attention_layer(c.x, c.batch, c.Wq, c.Wk, c.Wv, phi)
        assert scaled_error(fast(case, feature_map=phi), truth, case.scale(F64)) <= identity_tolerance(F64, 50)


def test_favor_large_norms_stay_finite() -> None:
    """|q|, |k| up to 60: the plain features overflow float32 (exp(w·k) past e^88), the log-space ones do not."""
    case = graph_case((7, 30, 1), "empty", seed=3, omega=ref.gaussian_omega(16, 4, seed=3))
    big = type(case)(case.label, case.x * 30, case.edge_index, case.batch, case.Wq, case.Wk, case.Wv, case.omega)
    out = fast(big, F32)
    assert torch.isfinite(out).all()
    naive = ref.favor_plus_features((big.x @ big.Wk).float(), big.omega.float())
    assert not torch.isfinite(naive).all() or (naive == 0).any()
    truth = big.ground_truth(F64)
    mask = torch.isfinite(truth).all(1)
    assert mask.any()
    assert scaled_error(out[mask], truth[mask], big.scale(F32)[mask]) <= 1e-3


def test_empty_graphs_with_num_graphs() -> None:
    """Graph ids with gaps are empty graphs when num_graphs says so: no rows, others unchanged."""
    case = graph_case((3, 5, 2), "erdos_renyi", seed=1)
    x, _, batch, Wq, Wk, Wv = case.args(F64, "cpu")
    spaced = torch.tensor([0, 2, 5])[batch]  # graphs 1, 3, 4 and 6 are empty
    out = segment_linear_attention(x, spaced, Wq, Wk, Wv, num_graphs=7)
    assert scaled_error(out, case.ground_truth(F64), case.scale(F64)) <= identity_tolerance(F64)
    none = segment_linear_attention(x[:0], batch[:0], Wq, Wk, Wv, num_graphs=3)
    assert none.shape == (0, DV)


def test_batch_independence_and_skewed_sizes() -> None:
    """A graph's rows do not change when a 500-node graph joins the batch (tiles never cross graphs)."""
    small = graph_case((10, 1, 3), "empty", seed=2)
    both = graph_case((10, 1, 3, 500), "empty", seed=2)
    n = small.x.shape[0]
    alone = fast(type(small)(small.label, both.x[:n], small.edge_index, small.batch, both.Wq, both.Wk, both.Wv))
    assert scaled_error(fast(both)[:n], alone, small.scale(F64)) <= identity_tolerance(F64)


@pytest.mark.parametrize("sizes", [(1,), (8, 9, 63, 64, 65, 1, 2, 3), (200,), (10,) * 9 + (500,), (3, 3, 3)])
def test_layout_covers_each_node_once(sizes) -> None:
    """Every node sits in exactly one block, padded by less than 2^(1/4), and is written to its own output row."""
    counts_in = torch.tensor(sizes)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), counts_in)
    counts, _, classes = size_classes(batch, len(sizes) + 1)  # one trailing empty graph
    assert sorted(torch.cat(classes).tolist()) == list(range(len(sizes)))
    for ids in classes:
        assert bool((counts[ids] * 2**0.25 > counts[ids].max()).all())
    blocks = layout(batch, len(sizes) + 1)
    N = len(batch)
    rows = torch.cat([torch.arange(N)[b.rows] if isinstance(b.rows, slice) else b.rows for b in blocks])
    dest = torch.cat([torch.arange(N + 1)[b.dest] if isinstance(b.dest, slice) else b.dest for b in blocks])
    valid = torch.cat([torch.ones(b.G * b.n, dtype=torch.bool) if b.valid is None else b.valid for b in blocks])
    assert torch.equal(dest[valid], rows[valid]) and bool((dest[~valid] == N).all())
    assert torch.equal(dest[valid].sort().values, torch.arange(N))


@pytest.mark.parametrize("feature_map", ["elu1", "favor+", "callable"])
def test_small_blocks_split_classes_and_graphs(monkeypatch, feature_map: str) -> None:
    """Blocks of 8 rows: classes span several blocks (gathered and contiguous), a 30-node graph is a block alone."""
    monkeypatch.setattr(mpnn_vn_fast, "BLOCK_ROWS", 8)
    omega = ref.gaussian_omega(6, 4, seed=1) if feature_map == "favor+" else None
    sizes = (2, 2, 2, 2, 2, 3, 1, 3, 30, 3, 7, 3, 1)
    case = graph_case(sizes, "empty", seed=11, omega=omega)
    phi = torch.exp if feature_map == "callable" else case.feature_map()
    c = case.rounded(F64)
    truth = ref.linear_attention_layer(c.x, c.batch, c.Wq, c.Wk, c.Wv, phi)
    assert len(layout(case.batch, len(sizes))) >= 7
    out = fast(case, F64, torch.exp if feature_map == "callable" else None)
    assert scaled_error(out, truth, case.scale(F64)) <= identity_tolerance(F64, 30)


def test_nan_scratch(nan_scratch) -> None:
    case = graph_case((7, 1, 50), "complete", seed=4)
    out = fast(case)
    assert torch.isfinite(out).all()
    assert scaled_error(out, case.ground_truth(F64), case.scale(F64)) <= identity_tolerance(F64)


@pytest.mark.parametrize("feature_map", ["elu1", "favor+", "callable"])
@pytest.mark.parametrize("block_rows", [4096, 2])
def test_gradcheck(monkeypatch, feature_map: str, block_rows: int) -> None:
    """Gradients through the blocked path, and (blocks of 2 rows) through graphs streamed in row blocks."""
    monkeypatch.setattr(mpnn_vn_fast, "BLOCK_ROWS", block_rows)
    omega = ref.gaussian_omega(5, 4, seed=0) if feature_map == "favor+" else None
    case = graph_case((3, 1, 4), "empty", seed=5, omega=omega)
    x, _, batch, Wq, Wk, Wv, *_ = case.args(F64, "cpu")
    phi = torch.exp if feature_map == "callable" else feature_map
    inputs = tuple(t.clone().requires_grad_() for t in (x, Wq, Wk, Wv))

    def fn(x, Wq, Wk, Wv):  # type: ignore[no-untyped-def]
        return segment_linear_attention(x, batch, Wq, Wk, Wv, phi, omega=omega)

    assert torch.autograd.gradcheck(fn, inputs)


def _args():  # type: ignore[no-untyped-def]
    case = graph_case((3, 2), "empty", seed=0)
    x, _, batch, Wq, Wk, Wv = case.args(F64, "cpu")
    return x, batch, Wq, Wk, Wv


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda a: {**a, "batch": a["batch"].flip(0)}, ValueError, "batch: expected graph ids sorted"),
        (lambda a: {**a, "batch": a["batch"][:-1]}, ValueError, r"batch: expected shape \(5,\)"),
        (lambda a: {**a, "batch": a["batch"].double()}, TypeError, "batch: expected an integer tensor"),
        (lambda a: {**a, "batch": a["batch"] * 2}, ValueError, "batch: graph ids have gaps"),
        (lambda a: {**a, "batch": a["batch"] - 1}, ValueError, "batch: expected graph ids >= 0"),
        (lambda a: {**a, "batch": [0, 0, 0, 1, 1]}, TypeError, "batch: expected a torch.Tensor"),
        (lambda a: {**a, "num_graphs": 1}, ValueError, "batch: graph id 1 is out of range"),
        (lambda a: {**a, "Wq": a["Wq"][:-1]}, ValueError, r"Wq: expected shape \(d, ·\)"),
        (lambda a: {**a, "Wk": a["Wk"][:, :-1]}, ValueError, "Wk: expected the shape of Wq"),
        (lambda a: {**a, "Wv": a["Wv"].T}, ValueError, r"Wv: expected shape \(d, ·\)"),
        (lambda a: {**a, "Wv": a["Wv"].float()}, TypeError, "Wv: expected the dtype of x"),
        (lambda a: {**a, "x": a["x"][None]}, ValueError, r"x: expected shape \(N, d\)"),
        (lambda a: {**a, "x": a["x"].long()}, TypeError, "x: expected dtype"),
        (lambda a: {**a, "feature_map": "relu"}, ValueError, "feature_map: expected 'elu1', 'favor\\+'"),
        (lambda a: {**a, "feature_map": 3}, TypeError, "feature_map: expected"),
        (lambda a: {**a, "feature_map": torch.tanh}, ValueError, "feature_map: returned non-positive"),
        (lambda a: {**a, "feature_map": lambda u: u * 0}, ValueError, "feature_map: returned non-positive"),
        (lambda a: {**a, "feature_map": "favor+"}, ValueError, "omega: feature_map='favor\\+' needs"),
        (lambda a: {**a, "feature_map": "favor+", "omega": torch.ones(3, 5, dtype=F64)}, ValueError, "omega: expected"),
        (lambda a: {**a, "omega": torch.ones(3, 4, dtype=F64)}, ValueError, "omega: only used with"),
        (lambda a: {**a, "backend": "cuda"}, ValueError, "backend: expected"),
    ],
)
def test_bad_input_names_the_argument(change, error, match) -> None:
    x, batch, Wq, Wk, Wv = _args()
    kwargs = change({"x": x, "batch": batch, "Wq": Wq, "Wk": Wk, "Wv": Wv})
    with pytest.raises(error, match=match):
        segment_linear_attention(**kwargs)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_accumulates_in_float32(dtype: torch.dtype) -> None:
    """Half-precision inputs: the output has their dtype, within 2u + the float32 tolerance of float64 truth."""
    case = graph_case((7, 1, 50, 13), "erdos_renyi", seed=9)
    out = fast(case, dtype)
    assert out.dtype == dtype
    assert scaled_error(out.double(), case.ground_truth(dtype), case.scale(dtype)) <= identity_tolerance(dtype, 50)


@pytest.mark.parametrize("form", mpnn_vn_fast.FORMS)
def test_every_form_matches_and_differentiates(monkeypatch, form: str) -> None:
    """Each product order (``V`` projected or ``W_V`` after the sums; state or quadratic) is exact, differentiable."""
    monkeypatch.setattr(mpnn_vn_fast, "choose_form", lambda *_: form)
    case = graph_case((7, 1, 12, 5, 8, 10, 11), "empty", seed=6)  # 7 padded to 8, 10 to 11: padded blocks
    assert scaled_error(fast(case), case.ground_truth(F64), case.scale(F64)) <= identity_tolerance(F64, 12)
    x, _, batch, Wq, Wk, Wv = graph_case((7, 1, 8), "empty", seed=5).args(F64, "cpu")
    inputs = tuple(t.clone().requires_grad_() for t in (x, Wq, Wk, Wv))
    assert torch.autograd.gradcheck(lambda *a: segment_linear_attention(a[0], batch, *a[1:]), inputs)


def test_form_choice_follows_the_multiply_adds() -> None:
    """Tiny graphs: quadratic; large ones: ``W_V`` after the sums (``m d d_v`` once instead of ``n d d_v``)."""
    assert mpnn_vn_fast.choose_form(4, 64, 64, 64) == "quadratic"
    assert mpnn_vn_fast.choose_form(200, 64, 64, 64) == "state_x"
    assert mpnn_vn_fast.choose_form(200, 64, 256, 16) == "state"
    assert mpnn_vn_fast.choose_form(4, 64, 16, 256) == "quadratic_x"
