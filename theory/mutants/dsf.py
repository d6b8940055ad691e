"""Planted bugs for the DSF, GLA and Lightning claims: small, realistic wrong implementations.

Each mutant has the signature of the subject it replaces (``theory/dsf.py``); the claims that list
it must reject it by a numeric finding (``tests/test_claims.py``).  They are the bug classes of
book/dsf.md, "The mutants": product-range off-by-ones, add-then-decay, normalizer slips, a clamped
``Λ <= 1``, the Kronecker order, broadcasting, signs, un-rebased exponentials, carried states.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from attnverify.reference import dsf as ref
from attnverify.registry import Mutant

Parts = tuple[Tensor, Tensor, Tensor, Tensor]


def _mutant(name: str, fn: Callable[..., object]) -> Mutant:
    """A mutant described by its function's docstring."""
    return Mutant(name, " ".join((fn.__doc__ or "").split()), fn)


def _parts(dsf: ref.DSF) -> Parts:
    return dsf.Lam, dsf.B, dsf.C, dsf.D


# ---------------------------------------------------------------------------
# Matrix form: fn(Lam, B, C, D) -> Φ
# ---------------------------------------------------------------------------


def _matrix_form(Lam: Tensor, B: Tensor, C: Tensor, D: Tensor, lo: int, hi: int, with_d: bool) -> Tensor:
    """``Φ_ij = C_i (Π_{k=j+lo}^{i-1+hi} Λ_k) B_j``: the right range is ``lo = 1, hi = 1``."""
    L, dy, d = Lam.shape[0], C.shape[1], B.shape[2]
    phi = torch.zeros(L * dy, L * d, dtype=Lam.dtype)
    for i in range(L):
        for j in range(i + 1):
            decay = torch.prod(Lam[j + lo : i + hi], dim=0)
            block = C[i] @ (decay[:, None] * B[j]) + (D[i] if with_d and i == j else 0)
            phi[i * dy : (i + 1) * dy, j * d : (j + 1) * d] = block
    return phi


def product_includes_j(Lam: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """``Π_{k=j}^{i} Λ_k``: token ``j``'s own decay applied to its write."""
    return _matrix_form(Lam, B, C, D, 0, 1, True)


def product_drops_i(Lam: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """``Π_{k=j+1}^{i-1} Λ_k``: the query step's decay left out."""
    return _matrix_form(Lam, B, C, D, 1, 0, True)


def diagonal_without_d(Lam: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """``Φ_ii = C_i B_i``: the feed-through ``D_i`` forgotten."""
    return _matrix_form(Lam, B, C, D, 1, 1, False)


PRODUCT_INCLUDES_J = _mutant("product_includes_j", product_includes_j)
PRODUCT_DROPS_I = _mutant("product_drops_i", product_drops_i)
DIAGONAL_WITHOUT_D = _mutant("diagonal_without_D", diagonal_without_d)

# ---------------------------------------------------------------------------
# Attention converters: fn(u, W_Q, W_K, W_V) -> (Λ, B, C, D)
# ---------------------------------------------------------------------------


def linear_key_side_normalizer(u: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor) -> Parts:
    """``η_i = ψ(k_i)ᵀ Σ_{j<=i} ψ(k_j)``: the normalizer built from the key instead of the query."""
    k = ref.elu1(u @ W_K.T)
    eta = (k * torch.cumsum(k, 0)).sum(-1)
    return _parts(ref.attention_dsf(ref.elu1(u @ W_Q.T), k, torch.log(eta), W_V))


def linear_sqrt_m(u: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor) -> Parts:
    """Softmax's ``1/√m`` carried over to linear attention: ``φ(q/√m)``."""
    return _parts(ref.linear_attention_dsf(u, W_Q / math.sqrt(W_Q.shape[0]), W_K, W_V))


def linear_clamped(u: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor) -> Parts:
    """``Λ`` clamped to ``<= 1`` "for stability", as if attention were a contraction."""
    Lam, B, C, D = _parts(ref.linear_attention_dsf(u, W_Q, W_K, W_V))
    return Lam.clamp(max=1.0), B, C, D


def linear_kron_swapped(u: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor) -> Parts:
    """``B_i = η_i^{-1} W_V ⊗ ψ(k_i)`` (column-major) while ``C_i`` stays row-major."""
    Lam, B, C, D = _parts(ref.linear_attention_dsf(u, W_Q, W_K, W_V))
    q, k = ref.elu1(u @ W_Q.T), ref.elu1(u @ W_K.T)
    eta = (q * torch.cumsum(k, 0)).sum(-1)
    B = torch.stack([torch.kron(W_V, k[i, :, None]) / eta[i] for i in range(u.shape[0])])
    return Lam, B, C, D


def softmax_clamped(u: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor) -> Parts:
    """``Λ`` clamped to ``<= 1``: wrong exactly where the query's normalizer shrinks."""
    Lam, B, C, D = _parts(ref.softmax_attention_dsf(u, W_Q, W_K, W_V))
    return Lam.clamp(max=1.0), B, C, D


def softmax_key_only_normalizer(u: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor) -> Parts:
    """``ν_i = Σ_{j<=i} e^{q_jᵀk_j/√m}``: a running sum of each token's own score, blind to the query ``q_i``."""
    q, k = u @ W_Q.T, u @ W_K.T
    s = q @ k.T / math.sqrt(q.shape[1])
    log_nu = torch.logcumsumexp(torch.diagonal(s), 0)
    return _parts(
        ref.attention_dsf(
            torch.exp(s).masked_fill(~ref.lower(u.shape[0]), 0.0), torch.eye(u.shape[0], dtype=u.dtype), log_nu, W_V
        )
    )


def softmax_all_keys(u: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor) -> Parts:
    """``ν_i = Σ_j e^{q_iᵀk_j/√m}`` over *all* tokens: the causal mask forgotten in the normalizer."""
    q, k = u @ W_Q.T, u @ W_K.T
    L = u.shape[0]
    s = q @ k.T / math.sqrt(q.shape[1])
    return _parts(
        ref.attention_dsf(
            torch.exp(s).masked_fill(~ref.lower(u.shape[0]), 0.0),
            torch.eye(L, dtype=u.dtype),
            torch.logsumexp(s, -1),
            W_V,
        )
    )


def softmax_no_scale(u: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor) -> Parts:
    """Scores ``q_iᵀk_j`` without ``1/√m``."""
    return _parts(ref.softmax_attention_dsf(u, W_Q * math.sqrt(W_Q.shape[0]), W_K, W_V))


LINEAR_KEY_SIDE = _mutant("key_side_normalizer", linear_key_side_normalizer)
LINEAR_SQRT_M = _mutant("sqrt_m_in_linear_attention", linear_sqrt_m)
LINEAR_CLAMPED = _mutant("clamped_lambda", linear_clamped)
LINEAR_KRON = _mutant("transposed_kronecker_order", linear_kron_swapped)
SOFTMAX_CLAMPED = _mutant("clamped_lambda", softmax_clamped)
SOFTMAX_KEY_ONLY = _mutant("key_only_normalizer", softmax_key_only_normalizer)
SOFTMAX_ALL_KEYS = _mutant("normalizer_over_all_tokens", softmax_all_keys)
SOFTMAX_NO_SCALE = _mutant("no_inverse_sqrt_m", softmax_no_scale)

# ---------------------------------------------------------------------------
# Normalized attention: fn(u, W_Q, W_K, W_V, w, b, g) -> (Λ, B, C, D)
# ---------------------------------------------------------------------------


def normalized_inverted_ratio(u: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor, w: Tensor, b: Tensor, g: str) -> Parts:
    """``Λ_i = η(u_i) / η(u_{i-1})``: the ratio upside down."""
    Lam, B, C, D = _parts(ref.normalized_attention_dsf(u, W_Q, W_K, W_V, w, b, g))
    return 1 / Lam, B, C, D


def normalized_clamped(u: Tensor, W_Q: Tensor, W_K: Tensor, W_V: Tensor, w: Tensor, b: Tensor, g: str) -> Parts:
    """``Λ`` clamped to ``<= 1``."""
    Lam, B, C, D = _parts(ref.normalized_attention_dsf(u, W_Q, W_K, W_V, w, b, g))
    return Lam.clamp(max=1.0), B, C, D


NORMALIZED_INVERTED = _mutant("inverted_normalizer_ratio", normalized_inverted_ratio)
NORMALIZED_CLAMPED = _mutant("clamped_lambda", normalized_clamped)

# ---------------------------------------------------------------------------
# Selective scan: fn(u (Bt, d, L), delta, A (d, n), B (Bt, n, L), C, D (d,)) -> (Bt, d, L)
# ---------------------------------------------------------------------------


def _scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, bug: str) -> Tensor:
    bt, d, L = u.shape
    s = torch.zeros(bt, d, A.shape[1], dtype=u.dtype, device=u.device)
    ys = []
    for t in range(L):
        dt = delta[:, :1, t, None].expand(bt, d, 1) if bug == "shared_delta" else delta[:, :, t, None]
        decay = torch.exp(dt * (A.abs() if bug == "positive_A" else A))
        write = dt * u[:, :, t, None] * B[:, None, :, t]
        if bug == "zoh_input":
            write = (decay - 1) / A * u[:, :, t, None] * B[:, None, :, t]
        s = decay * (s + write) if bug == "write_then_decay" else decay * s + write
        ys.append((s * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, -1)
    return y if D is None or bug == "no_skip" else y + D[:, None] * u


def scan_positive_a(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None) -> Tensor:
    """``e^{Δ|A|}``: the sign of ``A`` lost (a growing state)."""
    return _scan(u, delta, A, B, C, D, "positive_A")


def scan_shared_delta(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None) -> Tensor:
    """Channel 0's ``Δ`` broadcast to every channel (SSD's per-head step taken for S6's per-channel one)."""
    return _scan(u, delta, A, B, C, D, "shared_delta")


def scan_zoh_input(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None) -> Tensor:
    """ZOH input ``(e^{ΔA} - 1)/A b`` where the claim (and the Mamba kernel) use Euler ``Δ b``."""
    return _scan(u, delta, A, B, C, D, "zoh_input")


def scan_write_then_decay(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None) -> Tensor:
    """``s_t = e^{Δ_t A}(s_{t-1} + Δ_t u_t B_t)``: add, then decay."""
    return _scan(u, delta, A, B, C, D, "write_then_decay")


def scan_no_skip(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None) -> Tensor:
    """The skip term ``D u`` dropped."""
    return _scan(u, delta, A, B, C, D, "no_skip")


SCAN_POSITIVE_A = _mutant("positive_A", scan_positive_a)
SCAN_SHARED_DELTA = _mutant("delta_shared_across_channels", scan_shared_delta)
SCAN_ZOH_INPUT = _mutant("zoh_input_for_euler", scan_zoh_input)
SCAN_WRITE_THEN_DECAY = _mutant("add_then_decay", scan_write_then_decay)
SCAN_NO_SKIP = _mutant("skip_term_dropped", scan_no_skip)

# ---------------------------------------------------------------------------
# qLSTM: fn(x, W_f, W_i, W_o, alpha=None) -> (Λ, B, C, D);  RG-LRU: fn(u, theta, W_a, b_a, W_x, b_x)
# ---------------------------------------------------------------------------


def qlstm_sigmoid_sign(x: Tensor, W_f: Tensor, W_i: Tensor, W_o: Tensor, alpha: Tensor | None = None) -> Parts:
    """Reversed gate ``σ(W_f x)^{relu(α)}``: ``σ(x)`` written for ``σ(-x)``."""
    Lam, B, C, D = _parts(ref.qlstm_dsf(x, W_f, W_i, W_o, alpha))
    if alpha is not None:
        Lam = torch.sigmoid(x @ W_f.T) ** torch.relu(alpha)
    return Lam, B, C, D


def qlstm_no_relu(x: Tensor, W_f: Tensor, W_i: Tensor, W_o: Tensor, alpha: Tensor | None = None) -> Parts:
    """Reversed gate ``e^{-α softplus(W_f x)}``: the exponent without ``relu`` (``Λ > 1`` for ``α < 0``)."""
    Lam, B, C, D = _parts(ref.qlstm_dsf(x, W_f, W_i, W_o, alpha))
    if alpha is not None:
        Lam = torch.exp(-alpha * ref.softplus(x @ W_f.T))
    return Lam, B, C, D


def qlstm_gates_swapped(x: Tensor, W_f: Tensor, W_i: Tensor, W_o: Tensor, alpha: Tensor | None = None) -> Parts:
    """Input and output gates swapped (``B = diag(o)``, ``C = diag(ι)``)."""
    Lam, B, C, D = _parts(ref.qlstm_dsf(x, W_f, W_i, W_o, alpha))
    return Lam, C, B, D


def rglru_sqrt_one_minus_a(u: Tensor, theta: Tensor, W_a: Tensor, b_a: Tensor, W_x: Tensor, b_x: Tensor) -> Parts:
    """Input scale ``√(1 - a_i)`` for ``√(1 - a_i²)``."""
    Lam, B, C, D = _parts(ref.rglru_dsf(u, theta, W_a, b_a, W_x, b_x))
    return Lam, B / torch.sqrt(1 + Lam)[:, :, None], C, D


def rglru_theta_sign(u: Tensor, theta: Tensor, W_a: Tensor, b_a: Tensor, W_x: Tensor, b_x: Tensor) -> Parts:
    """``a_i = e^{-8 r_i softplus(θ)}``: ``σ(-θ)`` written for ``σ(θ)``."""
    return _parts(ref.rglru_dsf(u, -theta, W_a, b_a, W_x, b_x))


def rglru_no_constant(u: Tensor, theta: Tensor, W_a: Tensor, b_a: Tensor, W_x: Tensor, b_x: Tensor) -> Parts:
    """``a_i = σ(θ)^{r_i}``: the constant ``c = 8`` dropped from the exponent."""
    Lam, B, C, D = _parts(ref.rglru_dsf(u, theta, W_a, b_a, W_x, b_x))
    a = Lam ** (1 / ref.RGLRU_C)
    return a, B / torch.sqrt(1 - Lam**2)[:, :, None] * torch.sqrt(1 - a**2)[:, :, None], C, D


QLSTM_SIGN = _mutant("sigmoid_of_plus_x", qlstm_sigmoid_sign)
QLSTM_NO_RELU = _mutant("exponent_without_relu", qlstm_no_relu)
QLSTM_GATES_SWAPPED = _mutant("input_output_gates_swapped", qlstm_gates_swapped)
RGLRU_SQRT = _mutant("sqrt_one_minus_a", rglru_sqrt_one_minus_a)
RGLRU_THETA_SIGN = _mutant("sigmoid_of_minus_theta", rglru_theta_sign)
RGLRU_NO_CONSTANT = _mutant("exponent_without_c", rglru_no_constant)

# ---------------------------------------------------------------------------
# Taylor features: fn(x (L, m), order) -> (L, Σ_{p<=P} m^p)
# ---------------------------------------------------------------------------


def _features(x: Tensor, order: int, power_scale: float, factorial_power: float) -> Tensor:
    L, m = x.shape
    parts, power = [torch.ones(L, 1, dtype=x.dtype, device=x.device)], torch.ones(L, 1, dtype=x.dtype, device=x.device)
    for p in range(1, order + 1):
        power = (power[:, :, None] * x[:, None, :]).reshape(L, -1)
        parts.append(power / (m ** (p * power_scale) * math.factorial(p) ** factorial_power))
    return torch.cat(parts, 1)


def taylor_full_factorial(x: Tensor, order: int) -> Tensor:
    """``x^{⊗p} / (m^{p/4} p!)``: ``p!`` where ``√p!`` belongs (the kernel gets ``1/p!²``)."""
    return _features(x, order, 0.25, 1.0)


def taylor_no_m_scale(x: Tensor, order: int) -> Tensor:
    """``x^{⊗p} / √p!``: the ``m^{-p/4}`` dropped (the kernel of ``e^{qᵀk}``, not ``e^{qᵀk/√m}``)."""
    return _features(x, order, 0.0, 0.5)


TAYLOR_FULL_FACTORIAL = _mutant("full_factorial", taylor_full_factorial)
TAYLOR_NO_M_SCALE = _mutant("no_m_scale", taylor_no_m_scale)

# ---------------------------------------------------------------------------
# GLA: fn(q, k, v, log_decay) -> o;  Lightning: fn(q, k, v, log_lambda (H,)) -> o
# ---------------------------------------------------------------------------


def _gla_chunks(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None, bug: str, chunk: int = 16) -> Tensor:
    """A one-level chunked GLA (weights ``e^{G_t - G_j}`` elementwise in log space) with one planted ``bug``."""
    if log_decay is None:
        log_decay = torch.zeros(q.shape[:3], dtype=q.dtype, device=q.device)
    g = log_decay[..., None].expand(q.shape) if log_decay.dim() == 3 else log_decay
    Bt, H, T, Dk = q.shape
    S = torch.zeros(Bt, H, Dk, v.shape[-1], dtype=q.dtype, device=q.device)
    outs = []
    for start in range(0, T, chunk):
        qb, kb, vb, gb = (t[:, :, start : start + chunk] for t in (q, k, v, g))
        G = gb.cumsum(2) - (gb if bug == "exclusive_cumsum" else 0)
        c = qb.shape[2]
        causal = ref.lower(c).to(q.device)
        gap = G[:, :, :, None, :] - G[:, :, None, :, :] + (gb[:, :, None, :, :] if bug == "add_then_decay" else 0)
        P = (qb[:, :, :, None] * kb[:, :, None] * torch.exp(gap.masked_fill(~causal[:, :, None], -math.inf))).sum(-1)
        outs.append(P @ vb + (qb * torch.exp(G)) @ S)
        last = G[:, :, -1:]
        writes = (kb * torch.exp(last - G + (gb if bug == "add_then_decay" else 0))).transpose(-1, -2) @ vb
        S = (S if bug == "carry_not_decayed" else torch.exp(last).transpose(-1, -2) * S) + writes
    return torch.cat(outs, 2)


def gla_carry_not_decayed(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None) -> Tensor:
    """The state carried into the next chunk is not decayed by the chunk's total gate."""
    return _gla_chunks(q, k, v, log_decay, "carry_not_decayed")


def gla_exclusive_cumsum(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None) -> Tensor:
    """Exclusive cumsum ``G_t = Σ_{s<t} g_s``: each weight ``e^{G_t - G_j}`` shifted by one step."""
    return _gla_chunks(q, k, v, log_decay, "exclusive_cumsum")


def gla_add_then_decay(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None) -> Tensor:
    """``S_t = diag(e^{g_t})(S_{t-1} + k_t v_tᵀ)``: the token's own write decayed by its own gate."""
    return _gla_chunks(q, k, v, log_decay, "add_then_decay")


def gla_literal_parallel(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor | None) -> Tensor:
    """The literal parallel form ``((Q ⊙ e^G)(K ⊙ e^{-G})ᵀ ⊙ M) V``: exact on paper, ``e^{-G}`` overflows."""
    if log_decay is None:
        log_decay = torch.zeros(q.shape[:3], dtype=q.dtype, device=q.device)
    G = (log_decay[..., None] if log_decay.dim() == 3 else log_decay).cumsum(2)
    T = q.shape[2]
    scores = ((q * torch.exp(G)) @ (k * torch.exp(-G)).transpose(-1, -2)) * ref.lower(q.shape[2]).to(q.device)
    return scores[..., :T, :T] @ v


GLA_CARRY = _mutant("carried_state_not_decayed", gla_carry_not_decayed)
GLA_EXCLUSIVE = _mutant("exclusive_cumsum", gla_exclusive_cumsum)
GLA_ADD_THEN_DECAY = _mutant("add_then_decay", gla_add_then_decay)
GLA_LITERAL = _mutant("unrebased_exp_minus_G", gla_literal_parallel)


def _lightning(q: Tensor, k: Tensor, v: Tensor, log_lambda: Tensor, bug: str, block: int = 16) -> Tensor:
    """Lightning's block form (``reference.dsf.lightning_block_form``) with one planted ``bug``."""
    Bt, H, T, _ = q.shape
    lam = log_lambda[:, None]
    KV = torch.zeros(Bt, H, q.shape[3], v.shape[3], dtype=q.dtype, device=q.device)
    outs = []
    for start in range(0, T, block):
        Qb, Kb, Vb = q[:, :, start : start + block], k[:, :, start : start + block], v[:, :, start : start + block]
        b = Qb.shape[2]
        j = torch.arange(b, dtype=q.dtype, device=q.device)
        gap = (j[:, None] - j[None, :]).clamp_min(0)
        Dmask = torch.exp(log_lambda[:, None, None] * gap)
        Dmask = Dmask if bug == "intra_not_causal" else Dmask * ref.lower(b).to(q.device)
        inter_power = j if bug == "query_power_off_by_one" else j + 1
        outs.append(((Qb @ Kb.transpose(-1, -2)) * Dmask) @ Vb + torch.exp(lam * inter_power)[..., None] * (Qb @ KV))
        key_power = b - j if bug == "key_power_off_by_one" else b - 1 - j
        KV = torch.exp(lam * b)[..., None] * KV + (torch.exp(lam * key_power)[..., None] * Kb).transpose(-1, -2) @ Vb
    return torch.cat(outs, 2)


def lightning_query_power(q: Tensor, k: Tensor, v: Tensor, log_lambda: Tensor) -> Tensor:
    """Inter-block term scaled by ``λ^j`` instead of ``λ^{j+1}`` (in-block index ``j`` from 0)."""
    return _lightning(q, k, v, log_lambda, "query_power_off_by_one")


def lightning_key_power(q: Tensor, k: Tensor, v: Tensor, log_lambda: Tensor) -> Tensor:
    """State update with ``λ^{B-j}`` instead of ``λ^{B-1-j}``."""
    return _lightning(q, k, v, log_lambda, "key_power_off_by_one")


def lightning_intra_not_causal(q: Tensor, k: Tensor, v: Tensor, log_lambda: Tensor) -> Tensor:
    """The in-block decay mask without its causal ``1[i >= j]``."""
    return _lightning(q, k, v, log_lambda, "intra_not_causal")


LIGHTNING_QUERY_POWER = _mutant("query_power_off_by_one", lightning_query_power)
LIGHTNING_KEY_POWER = _mutant("key_power_off_by_one", lightning_key_power)
LIGHTNING_NOT_CAUSAL = _mutant("intra_block_not_causal", lightning_intra_not_causal)
