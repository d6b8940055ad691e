"""Planted bugs for the Aaren claims: small, realistic wrong implementations.

Each mutant has the signature of the subject it replaces; the claims that list it must
reject it (``tests/test_claims.py`` proves they do).  Several are bugs seen in public code
or made while writing attnverify (book/aaren.md, "The mutants, and how each is rejected").
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnverify.fast.aaren import Aaren, AarenState, readout
from attnverify.reference import aaren as ref
from attnverify.registry import Mutant

NEG_INF = float("-inf")

# ---------------------------------------------------------------------------
# Scan subject: fn(scores (..., N), values (..., N, Dv)) -> (..., N, Dv)
# ---------------------------------------------------------------------------


def exclusive_scan(scores: Tensor, values: Tensor) -> Tensor:
    """Emits the prefix *before* folding in token k: ``o_k`` attends to ``1..k-1``."""
    x = ref.leaf(scores, values)
    prefix = ref.identity(scores.shape[:-1], values.shape[-1], dtype=values.dtype)
    outputs = []
    for k in range(scores.shape[-1]):
        outputs.append(ref.readout(prefix))
        prefix = ref.combine(prefix, ref.ScanState(x.m[..., k], x.u[..., k], x.w[..., k, :]))
    return torch.stack(outputs, -2)


def no_max_shift(scores: Tensor, values: Tensor) -> Tensor:
    """``cumsum(e^s v) / cumsum(e^s)``: exact in real arithmetic, overflows past ``s ≈ 709`` (float64)."""
    e = torch.exp(scores)
    return torch.cumsum(e[..., None] * values, -2) / torch.cumsum(e, -1)[..., None]


def mixed_reference_max(scores: Tensor, values: Tensor) -> Tensor:
    """Each term scaled by the running max at its *own* position, then a plain cumsum (seen in public code)."""
    r = torch.cummax(scores, -1).values
    e = torch.exp(scores - r.masked_fill(r == NEG_INF, 0.0))
    return torch.cumsum(e[..., None] * values, -2) / torch.cumsum(e, -1).clamp_min(1e-300)[..., None]


def identity_m_zero(scores: Tensor, values: Tensor) -> Tensor:
    """A sequential scan started from ``(0, 0, 0)`` instead of ``(-inf, 0, 0)``: a floor of 0 on the max."""
    x = ref.leaf(scores, values)
    batch = scores.shape[:-1]
    prefix = ref.ScanState(
        torch.zeros(batch, dtype=values.dtype),
        torch.zeros(batch, dtype=values.dtype),
        torch.zeros((*batch, values.shape[-1]), dtype=values.dtype),
    )
    outputs = []
    for k in range(scores.shape[-1]):
        prefix = ref.combine(prefix, ref.ScanState(x.m[..., k], x.u[..., k], x.w[..., k, :]))
        outputs.append(ref.readout(prefix))
    return torch.stack(outputs, -2)


def chunk_common_max(scores: Tensor, values: Tensor, chunk: int = 16) -> Tensor:
    """Per chunk, one common max ``M_c`` and a cumsum, with no spread check: rows whose prefix max is
    far below ``M_c`` underflow to 0/0."""
    n = scores.shape[-1]
    batch = scores.shape[:-1]
    carry = ref.identity(batch, values.shape[-1], dtype=values.dtype)
    pieces = []
    for start in range(0, n, chunk):
        s, v = scores[..., start : start + chunk], values[..., start : start + chunk, :]
        M = torch.maximum(carry.m, s.amax(-1))
        safe_M = M.masked_fill(M == NEG_INF, 0.0)
        e = torch.exp(s - safe_M[..., None])
        a = ref.rescale(carry.m, M)
        u = carry.u[..., None] * a[..., None] + torch.cumsum(e, -1)
        w = carry.w[..., None, :] * a[..., None, None] + torch.cumsum(e[..., None] * v, -2)
        pieces.append(w / u[..., None])
        carry = ref.ScanState(M, u[..., -1], w[..., -1, :])
    return torch.cat(pieces, -2)


def low_precision_accumulator(scores: Tensor, values: Tensor) -> Tensor:
    """The right algorithm with ``m, u, w`` kept in the input dtype: bfloat16 cannot count past 256."""
    return ref.sequential_scan(scores, values)


def quadratic_matmul(scores: Tensor, values: Tensor) -> Tensor:
    """``softmax(S + mask) V`` as one matrix product, empty rows set to 0: exact for finite values, but
    ``0 · NaN = NaN`` above the diagonal sends a later (or masked) non-finite value to every row."""
    n = scores.shape[-1]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    S = scores[..., None, :].expand(*scores.shape, n).masked_fill(~causal, NEG_INF)
    return torch.softmax(S, -1).nan_to_num(0.0) @ values


def masked_weight_zero(scores: Tensor, values: Tensor) -> Tensor:
    """A sequential scan whose masked tokens keep their values under a zero weight (leaf ``(-inf, 0, 0·v)``
    rather than ``e``): exact for finite padding, NaN from NaN or ``±inf`` padding on."""
    masked = scores == NEG_INF
    x = ref.leaf(scores, values)
    x = ref.ScanState(x.m, x.u, torch.where(masked[..., None], 0.0 * values, x.w))
    state = ref.identity(scores.shape[:-1], values.shape[-1], dtype=values.dtype)
    outputs = []
    for k in range(scores.shape[-1]):
        state = ref.combine(state, ref.ScanState(x.m[..., k], x.u[..., k], x.w[..., k, :]))
        outputs.append(ref.readout(state))
    return torch.stack(outputs, -2)


EXCLUSIVE_SCAN = Mutant("exclusive_scan", "exclusive instead of inclusive prefix (o_k misses token k)", exclusive_scan)
NO_MAX_SHIFT = Mutant("no_max_shift", "no max-shift: cumsum(e^s v)/cumsum(e^s) overflows", no_max_shift)
MIXED_REFERENCE_MAX = Mutant(
    "mixed_reference_max", "terms scaled by the running max at their own position, then summed", mixed_reference_max
)
IDENTITY_M_ZERO = Mutant("identity_m_zero", "scan identity (0, 0, 0) instead of (-inf, 0, 0)", identity_m_zero)
CHUNK_COMMON_MAX = Mutant(
    "chunk_common_max", "one max per chunk and a cumsum, without a spread check (underflow)", chunk_common_max
)
LOW_PRECISION_ACCUMULATOR = Mutant(
    "low_precision_accumulator",
    "state accumulated in bfloat16/float16 instead of float32",
    low_precision_accumulator,
    dtypes=(torch.bfloat16, torch.float16),
)
QUADRATIC_MATMUL = Mutant(
    "quadratic_matmul", "masked quadratic form as a matrix product: 0·NaN reaches earlier rows", quadratic_matmul
)
MASKED_WEIGHT_ZERO = Mutant(
    "masked_weight_zero", "masked tokens weighted by 0 instead of dropped: NaN padding poisons", masked_weight_zero
)

# ---------------------------------------------------------------------------
# Cell subject: fn(scores, values) -> CellTrajectory (m, c, a)
# ---------------------------------------------------------------------------


def cell_init_m_zero(scores: Tensor, values: Tensor) -> ref.CellTrajectory:
    """The stable cell started from ``m_0 = 0`` (the paper's initial state is unconfirmed: book/aaren.md)."""
    batch = scores.shape[:-1]
    zero = torch.zeros(batch, dtype=values.dtype)
    initial = ref.ScanState(zero, zero.clone(), torch.zeros((*batch, values.shape[-1]), dtype=values.dtype))
    return ref.unroll(ref.stable_cell_step, initial, scores, values)


def _cell_step_a_not_rescaled(state: ref.ScanState, s_k: Tensor, v_k: Tensor) -> ref.ScanState:
    m_k = torch.maximum(state.m, s_k)
    fresh = ref.rescale(s_k, m_k)
    c_k = state.u * ref.rescale(state.m, m_k) + fresh
    a_k = state.w + v_k * fresh[..., None]  # bug: a_{k-1} kept at the old reference point
    return ref.ScanState(m_k, c_k, a_k)


def cell_a_not_rescaled(scores: Tensor, values: Tensor) -> ref.CellTrajectory:
    """Rescales ``c`` when the max grows but not ``a``."""
    initial = ref.identity(scores.shape[:-1], values.shape[-1], dtype=values.dtype)
    return ref.unroll(_cell_step_a_not_rescaled, initial, scores, values)


PLAIN_CELL = Mutant("plain_cell", "the plain cell: no running max, e^{s} overflows", ref.plain_rnn)
CELL_INIT_M_ZERO = Mutant("cell_init_m_zero", "stable cell started from m_0 = 0", cell_init_m_zero)
CELL_A_NOT_RESCALED = Mutant("cell_a_not_rescaled", "c rescaled when the max grows, a not", cell_a_not_rescaled)

# ---------------------------------------------------------------------------
# Operator subject: fn((m, u, w), (m, u, w)) -> (m, u, w)
# ---------------------------------------------------------------------------

State = tuple[Tensor, Tensor, Tensor]


def combine_unguarded(x: State, y: State) -> State:
    """``exp(m_x - m)`` with no guard: ``e ⊕ e`` evaluates ``exp(-inf + inf) = NaN``."""
    m = torch.maximum(x[0], y[0])
    a, b = torch.exp(x[0] - m), torch.exp(y[0] - m)
    return m, a * x[1] + b * y[1], a[..., None] * x[2] + b[..., None] * y[2]


def combine_w_unscaled(x: State, y: State) -> State:
    """Rescales ``u`` but adds ``w`` as it is."""
    m = torch.maximum(x[0], y[0])
    a, b = ref.rescale(x[0], m), ref.rescale(y[0], m)
    return m, a * x[1] + b * y[1], x[2] + y[2]


def combine_left_reference(x: State, y: State) -> State:
    """Keeps the left operand's reference point instead of the max: ``exp(m_y - m_x)`` overflows."""
    b = torch.exp(y[0] - x[0])
    return x[0], x[1] + b * y[1], x[2] + b[..., None] * y[2]


COMBINE_UNGUARDED = Mutant("combine_unguarded", "no guard for m = -inf (NaN from e ⊕ e)", combine_unguarded)
COMBINE_W_UNSCALED = Mutant("combine_w_unscaled", "u rescaled to the common max, w not", combine_w_unscaled)
COMBINE_LEFT_REFERENCE = Mutant(
    "combine_left_reference", "result referenced to the left operand's max, not the larger one", combine_left_reference
)

# ---------------------------------------------------------------------------
# Streaming subject: fn(d_model, n_heads, dtype) -> module with forward / init_state / step
# ---------------------------------------------------------------------------


class _HistoryAaren(Aaren):
    """Streams by keeping every token and re-running attention: right outputs, growing state."""

    def init_state(self, batch_size: int) -> AarenState:  # type: ignore[override]
        empty = torch.zeros(batch_size, 0, self.d_model, dtype=self.query.dtype)
        return AarenState(empty, empty, empty)

    def step(self, x_t: Tensor, state: AarenState, mask_t: Tensor | None = None) -> tuple[Tensor, AarenState]:  # type: ignore[override]
        history = torch.cat([state.m, x_t[:, None]], 1)
        return self.forward(history)[:, -1], AarenState(history, history, history)


class _ZeroInitAaren(Aaren):
    """Starts the stream from ``m = 0``: rows whose first scores are below about -745 underflow."""

    def init_state(self, batch_size: int) -> AarenState:  # type: ignore[override]
        state = super().init_state(batch_size)
        return state._replace(m=torch.zeros_like(state.m))


class _StaleAaren(Aaren):
    """Emits the output of the state *before* the new token (an exclusive stream)."""

    def step(self, x_t: Tensor, state: AarenState, mask_t: Tensor | None = None) -> tuple[Tensor, AarenState]:  # type: ignore[override]
        _, new = super().step(x_t, state, mask_t)
        return readout(state.u, state.w).flatten(-2).to(x_t.dtype), new


STEP_KEEPS_HISTORY = Mutant(
    "step_keeps_history",
    "step keeps every token and re-scans (state grows)",
    lambda d_model, n_heads, dtype: _HistoryAaren(d_model, n_heads, dtype=dtype),
)
STEP_INIT_M_ZERO = Mutant(
    "step_init_m_zero",
    "init_state with m = 0",
    lambda d_model, n_heads, dtype: _ZeroInitAaren(d_model, n_heads, dtype=dtype),
)
STEP_EMITS_STALE = Mutant(
    "step_emits_stale",
    "step returns the output before folding in x_t",
    lambda d_model, n_heads, dtype: _StaleAaren(d_model, n_heads, dtype=dtype),
)


class _ModuleHistoryAaren(Aaren):
    """Keeps every token on the module itself and re-runs ``forward`` over them: right outputs and a
    right-sized state, but storage and step cost that grow with t."""

    def init_state(self, batch_size: int) -> AarenState:  # type: ignore[override]
        self.seen: list[tuple[Tensor, Tensor]] = []
        return super().init_state(batch_size)

    def step(self, x_t: Tensor, state: AarenState, mask_t: Tensor | None = None) -> tuple[Tensor, AarenState]:  # type: ignore[override]
        _, new = super().step(x_t, state, mask_t)
        keep = torch.ones(x_t.shape[0], dtype=torch.bool, device=x_t.device) if mask_t is None else mask_t
        self.seen.append((x_t, keep))
        tokens, masks = zip(*self.seen, strict=True)
        return self.forward(torch.stack(tokens, 1), torch.stack(masks, 1))[:, -1], new


MODULE_KEEPS_HISTORY = Mutant(
    "module_keeps_history",
    "step keeps every token on the module and re-runs forward (state right-sized, module grows)",
    lambda d_model, n_heads, dtype: _ModuleHistoryAaren(d_model, n_heads, dtype=dtype),
)


class _UnscaledAaren(Aaren):
    """``forward`` and ``step`` agree with each other but both leave out the score scale the module reports."""

    def _scores_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, v = super()._scores_values(x)
        return s / self.scale, v


FORWARD_AND_STEP_UNSCALED = Mutant(
    "forward_and_step_unscaled",
    "forward and step consistent with each other, both without the score scale (only the reference sees it)",
    lambda d_model, n_heads, dtype: _UnscaledAaren(d_model, n_heads, dtype=dtype),
)
