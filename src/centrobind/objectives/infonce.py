"""Shared InfoNCE kernels: fused symmetric InfoNCE for ``T`` terms at once, closed-form backward.

Notation (``s`` = logit scale, rows ``a_i``, columns ``b_j``, over the valid samples only)::

    nce(a, b)     = mean_i [ logsumexp_j (s a_i . b_j) - s a_i . b_i ]
    nce_sym(a, b) = (nce(a, b) + nce(b, a)) / 2
                  = mean_i [ (lse_row_i + lse_col_i) / 2 - L_ii ],   L = s a b^T

The gradient w.r.t. the logits is closed-form, ``dnce_sym/dL = (P_row + P_col - 2 I) / (2 n)``
with ``P_row`` / ``P_col`` the row / column softmax of the *same* ``L``; hence

    grad_a = s G b,   grad_b = s G^T a,   grad_s = sum(G * a b^T) = sum_i a_i . (G b)_i .

:func:`symmetric_infonce` computes ``L`` once per term, both log-sum-exps from it and (when a
gradient is needed) ``G`` in place in the forward, so the backward is just the two matmuls: close
to the matmul floor (``1`` forward + ``2`` backward ``[N, N, D]`` products per term; one fewer
when an input needs no gradient, e.g. CentroBind's detached anchor) and far below the
straightforward ``cross_entropy`` + autograd version (:func:`nce_sym_reference`). When every
diagonal logit is within :data:`SAFE_SHIFT_RANGE` of the bound ``c = max|s a_i| max|b_j|`` (always
for unit vectors and ``s <= 30`` in float32) a single ``exp(L - c)`` pass serves both softmaxes,
``G = exp(L - c) (1 / (2n rs_i) + 1 / (2n cs_j)) - I / n``; otherwise rows and columns are
shifted by their own maxima (two ``exp`` passes), which is safe for any scale.
With ``chunk_size`` it never materialises more than ``chunk_size x N`` logits: forward in row
blocks (column log-sum-exp with a running max / sum), backward recomputing each block.

Missing samples are handled by *subsetting* (each term's valid rows are gathered with
``index_select`` before the matmul and gradients scattered back), which equals masking absent
columns with ``-inf`` and dropping absent rows, and is cheaper.

Under ``torch.distributed`` the same kernel scores this rank's rows against the gathered columns
(:class:`Columns`, positives at an offset): two ``[n, W n]`` row-only blocks per term instead of
one ``[N, N]`` block whose columns serve the second direction. A single process is the one-rank
case (``columns=None``: the columns are the rows).

All kernels compute in float32 for half/bfloat16 inputs and in the input precision otherwise.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Columns",
    "nce_sym_reference",
    "row_cross_entropy",
    "symmetric_infonce",
]


# ----------------------------------------------------------------------------------------------
# helpers


def _work_dtype(*tensors: Tensor) -> torch.dtype:
    dt = tensors[0].dtype
    for t in tensors[1:]:
        dt = torch.promote_types(dt, t.dtype)
    return torch.float32 if dt in (torch.float16, torch.bfloat16) else dt


def _as_scale(logit_scale: float | Tensor, like: Tensor) -> Tensor:
    if isinstance(logit_scale, Tensor):
        if logit_scale.numel() != 1:
            raise ValueError(f"logit_scale must have one element, got {tuple(logit_scale.shape)}")
        return logit_scale.reshape(()).to(like.device)
    return torch.tensor(float(logit_scale), dtype=_work_dtype(like), device=like.device)


def _valid_index(valid: Tensor | None, t: int) -> Tensor | None:
    """Indices of True entries of ``valid[t]``, or None when there is no mask / all are valid."""
    if valid is None:
        return None
    v = valid[t]
    idx = v.nonzero().squeeze(1)
    return None if idx.numel() == v.numel() else idx


def _take(x: Tensor, t: int, idx: Tensor | None, dtype: torch.dtype) -> Tensor:
    """Row subset ``x[t or 0][idx]`` as ``dtype`` (a view when nothing changes)."""
    xt = x[t if x.shape[0] > 1 else 0]
    if idx is not None:
        xt = xt.index_select(0, idx)
    return xt.to(dtype)


def _put(grad: Tensor, t: int, idx: Tensor | None, value: Tensor) -> None:
    """Write (or, for a broadcast ``[1, N, D]`` input, accumulate) ``value`` into ``grad``."""
    broadcast = grad.shape[0] == 1
    gt = grad[0 if broadcast else t]
    if idx is None:
        gt.add_(value)
    else:
        gt.index_add_(0, idx, value)


def _check_pair(a: Tensor, b: Tensor, name_a: str = "a", name_b: str = "b") -> int:
    if a.dim() != 3 or b.dim() != 3:
        raise ValueError(
            f"{name_a}, {name_b} must be [T, N, D]; got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    Ta, Tb = a.shape[0], b.shape[0]
    if a.shape[2] != b.shape[2] or not (Ta == Tb or 1 in (Ta, Tb)):
        raise ValueError(f"incompatible shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return max(Ta, Tb)


# ----------------------------------------------------------------------------------------------
# the kernel: this rank's rows against the columns (on one rank, the rows themselves)


class Columns(NamedTuple):
    """The columns of a batch gathered over ``W`` ranks, for a rank that holds only some rows.

    Attributes:
        a: ``[T or 1, K, D]`` gathered ``a`` of all ranks (differentiably, see
            :func:`~centrobind.objectives.distributed.all_gather_with_grad`).
        b: ``[T or 1, K, D]`` gathered ``b``.
        valid: ``[T, K]`` bool, or None when every column counts.
        offset: global column index of this rank's first row.
        world: ``W``. A term's value on this rank is ``W / K_valid`` times the sum over its valid
            rows, so that the mean over the ranks is the loss of the whole batch.
    """

    a: Tensor
    b: Tensor
    valid: Tensor | None
    offset: int
    world: int


#: A common shift ``c >= max L`` is used for the exponentials when every row (and column) has an
#: entry within this many units of ``c`` (its positive): no row or column sum can underflow
#: then, and one ``exp`` pass serves both softmaxes. Otherwise rows and columns get their own
#: maxima (two ``exp`` passes). float32 qualifies for all ``s <= 30`` with unit vectors.
SAFE_SHIFT_RANGE = {torch.float64: 600.0, torch.float32: 60.0}


def _common_shift(qs: Tensor, k: Tensor, pos: Tensor) -> Tensor | None:
    """``c = max_i |s q_i| max_j |k_j| >= max L`` if ``min_i pos_i >= c - range``, else None."""
    c: Tensor = torch.linalg.vector_norm(qs, dim=1).max() * torch.linalg.vector_norm(k, dim=1).max()
    if bool(pos.min() >= c - SAFE_SHIFT_RANGE.get(qs.dtype, 60.0)):
        return c
    return None


def _sub_positives(P: Tensor, r0: int, p: Tensor | None, val: float) -> None:
    """``P[i, positive of row r0 + i] -= val``: the diagonal when ``p`` is None, else ``p``."""
    k = P.shape[0]
    if p is None:
        P[:, r0 : r0 + k].diagonal().sub_(val)
    else:
        P[torch.arange(k, device=P.device), p[r0 : r0 + k]] -= val


def _full(
    L: Tensor, c: Tensor | None, both: bool, h: float, p: Tensor | None, need_grad: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Row (and, when ``both``, column) log-sum-exp of the logits ``L [n, K]`` (destroyed), and
    ``G = dloss/dL = h (P_row [+ P_col]) - h (1 [+ 1]) onehot(positive)`` written in place.

    With a common shift ``c``: one ``E = exp(L - c)`` serves rows and columns,
    ``G = E (h / rs_i [+ h / cs_j]) - ...``; otherwise rows and columns use their own maxima.
    """
    if c is not None:
        E = L.sub_(c).exp_()
        rs = E.sum(1)
        lse_r = rs.log().add_(c)
        cs = E.sum(0) if both else None
        lse_c = cs.log().add_(c) if cs is not None else None
        if not need_grad:
            return lse_r, lse_c, None
        f = rs.reciprocal_().mul_(h)[:, None]
        if cs is not None:
            f = torch.add(f, cs.reciprocal_().mul_(h)[None, :])
        E.mul_(f)
    else:
        m_r = L.amax(1, keepdim=True)
        E = torch.sub(L, m_r).exp_() if both else L.sub_(m_r).exp_()
        rs = E.sum(1, keepdim=True)
        lse_r = (m_r + rs.log()).squeeze(1)
        lse_c = cs = None
        if both:
            m_c = L.amax(0, keepdim=True)
            L.sub_(m_c).exp_()
            cs = L.sum(0, keepdim=True)
            lse_c = (m_c + cs.log()).squeeze(0)
        if not need_grad:
            return lse_r, lse_c, None
        E.mul_(rs.reciprocal_().mul_(h))  # h P_row
        if cs is not None:
            E.add_(L.mul_(cs.reciprocal_().mul_(h)))  # + h P_col
    _sub_positives(E, 0, p, h * (2 if both else 1))
    return lse_r, lse_c, E


def _chunked_stats(
    qs: Tensor, k: Tensor, chunk: int, c: Tensor | None, both: bool
) -> tuple[Tensor, Tensor | None]:
    """Row (and column) log-sum-exp of ``qs @ k^T`` computed in row blocks of ``chunk``.

    With a common shift ``c`` the column sums simply accumulate; otherwise a running column
    maximum rescales them (online log-sum-exp).
    """
    n, K = qs.shape[0], k.shape[0]
    lse_r = qs.new_empty(n)
    s_c = qs.new_zeros(K)
    m_c = qs.new_full((K,), float("-inf"))
    buf = qs.new_empty(min(chunk, n), K)
    buf2 = torch.empty_like(buf) if c is None and both else None
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        Lb = torch.mm(qs[r0:r1], k.t(), out=buf[: r1 - r0])
        if c is not None:
            Lb.sub_(c).exp_()
            lse_r[r0:r1] = Lb.sum(1).log_().add_(c)
            if both:
                s_c.add_(Lb.sum(0))
            continue
        if not both:
            lse_r[r0:r1] = torch.logsumexp(Lb, 1)
            continue
        assert buf2 is not None
        m = Lb.amax(1, keepdim=True)
        E = torch.sub(Lb, m, out=buf2[: r1 - r0]).exp_()
        lse_r[r0:r1] = m.squeeze(1) + E.sum(1).log()
        m_new = torch.maximum(m_c, Lb.amax(0))
        s_c.mul_((m_c - m_new).exp_())
        s_c.add_(Lb.sub_(m_new).exp_().sum(0))
        m_c = m_new
    if not both:
        return lse_r, None
    if c is not None:
        return lse_r, s_c.log_().add_(c)
    return lse_r, m_c + s_c.log()


def _chunked_grads(
    q: Tensor,
    k: Tensor,
    s: Tensor,
    lse_r: Tensor,
    lse_c: Tensor | None,
    c: Tensor | None,
    chunk: int,
    h: float,
    p: Tensor | None,
    want_q: bool,
    want_k: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """``G k`` and ``G^T q`` with ``G`` recomputed in row blocks (never ``[n, K]`` at once)."""
    n, K = q.shape[0], k.shape[0]
    qs = q * s
    gq = torch.empty_like(q) if want_q else None
    gk = torch.zeros_like(k) if want_k else None
    buf = qs.new_empty(min(chunk, n), K)
    buf2 = torch.empty_like(buf)
    both = lse_c is not None
    if c is not None:  # G = exp(L - c) (alpha_i [+ gamma_j])
        alpha = (c - lse_r).exp_().mul_(h)
        gamma = (c - lse_c).exp_().mul_(h) if lse_c is not None else None
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        Lb = torch.mm(qs[r0:r1], k.t(), out=buf[: r1 - r0])
        if c is not None:
            P = Lb.sub_(c).exp_()
            if gamma is not None:
                P.mul_(torch.add(alpha[r0:r1, None], gamma[None, :], out=buf2[: r1 - r0]))
            else:
                P.mul_(alpha[r0:r1, None])
        else:
            P = torch.sub(Lb, lse_r[r0:r1, None], out=buf2[: r1 - r0]).exp_()
            if lse_c is not None:
                P.add_(Lb.sub_(lse_c[None, :]).exp_())
            P.mul_(h)
        _sub_positives(P, r0, p, h * (2 if both else 1))
        if gq is not None:
            torch.mm(P, k, out=gq[r0:r1])
        if gk is not None:
            gk.addmm_(P.t(), q[r0:r1])
    return gq, gk


#: Per block of a term, what the backward needs: ``(G, None, None, None)`` when ``G`` was formed
#: in the forward, else ``(None, lse_row, lse_col, shift)`` to recompute it in chunks.
_BlockState = tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]
#: Per term: ``(row index, column index, positive columns, h, block states)``.
_TermState = tuple[Tensor | None, Tensor | None, Tensor | None, float, list[_BlockState]]


class _InfoNCE(torch.autograd.Function):
    """Fused symmetric InfoNCE of ``T`` terms; see :func:`symmetric_infonce`.

    Per term, the logits are computed in *blocks* ``L = s q k^T``: on one rank a single block
    ``(a, b)`` whose rows give ``nce(a, b)`` and whose columns give ``nce(b, a)``; with gathered
    columns two row-only blocks ``(a_local, b_global)`` and ``(b_local, a_global)``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        a: Tensor,
        b: Tensor,
        s: Tensor,
        a_cols: Tensor | None,
        b_cols: Tensor | None,
        row_valid: Tensor | None,
        col_valid: Tensor | None,
        offset: int,
        world: int,
        chunk: int | None,
        need_grad: bool,
    ) -> Tensor:
        T = max(a.shape[0], b.shape[0])
        wdt = _work_dtype(a, b)
        s_w = s.detach().to(wdt)
        one_rank = a_cols is None
        out = torch.zeros(T, dtype=wdt, device=a.device)
        states: list[_TermState | None] = []
        for t in range(T):
            r_idx = _valid_index(row_valid, t)
            at, bt = _take(a, t, r_idx, wdt), _take(b, t, r_idx, wdt)
            n = at.shape[0]
            if one_rank:
                c_idx, p, K = r_idx, None, n
            else:
                assert a_cols is not None and b_cols is not None
                c_idx = _valid_index(col_valid, t)
                K = b_cols.shape[1] if c_idx is None else c_idx.numel()
                p = offset + (torch.arange(a.shape[1], device=a.device) if r_idx is None else r_idx)
                if c_idx is not None:
                    assert col_valid is not None  # c_idx comes from it
                    p = (col_valid[t].long().cumsum(0) - 1)[p]
            if n == 0 or K == 0:
                states.append(None)
                continue
            h = 0.5 * world / K
            as_ = at * s_w
            pos = (as_ * bt).sum(1)
            if one_rank:  # the columns are the rows: L^T gives the second direction
                blocks = [(as_, bt, True)]
            else:
                assert a_cols is not None and b_cols is not None
                blocks = [
                    (as_, _take(b_cols, t, c_idx, wdt), False),
                    (bt * s_w, _take(a_cols, t, c_idx, wdt), False),
                ]
            st: list[_BlockState] = []
            lse: list[Tensor] = []
            for qs, k, both in blocks:
                c = _common_shift(qs, k, pos)
                if chunk is None or chunk >= n:
                    lse_r, lse_c, G = _full(torch.mm(qs, k.t()), c, both, h, p, need_grad)
                    st.append((G, None, None, None))
                else:
                    lse_r, lse_c = _chunked_stats(qs, k, chunk, c, both)
                    st.append((None, lse_r, lse_c, c))
                lse += [lse_r] if lse_c is None else [lse_r, lse_c]
            out[t] = (lse[0] + lse[1]).mul_(0.5).sub_(pos).sum() * (2 * h)
            states.append((r_idx, c_idx, p, h, st))
        ctx.save_for_backward(a, b, s, a_cols, b_cols)
        ctx.states, ctx.wdt, ctx.chunk = states, wdt, chunk
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        a, b, s, a_cols, b_cols = ctx.saved_tensors
        need_s = ctx.needs_input_grad[2]
        wdt, chunk = ctx.wdt, ctx.chunk
        s_w = s.detach().to(wdt)
        grad_out = grad_out.to(wdt)

        def zeros(x: Tensor, i: int) -> Tensor | None:
            return (
                torch.zeros(x.shape, dtype=wdt, device=x.device)
                if ctx.needs_input_grad[i]
                else None
            )

        ga, gb, gac, gbc = zeros(a, 0), zeros(b, 1), None, None
        if a_cols is not None:
            gac, gbc = zeros(a_cols, 3), zeros(b_cols, 4)
        gs = torch.zeros((), dtype=wdt, device=a.device)
        for t, state in enumerate(ctx.states):
            if state is None:
                continue
            r_idx, c_idx, p, h, st = state
            at, bt = _take(a, t, r_idx, wdt), _take(b, t, r_idx, wdt)
            # (rows q, their gradient, columns k, their gradient, column indices)
            if a_cols is None:
                blocks = [(at, ga, bt, gb, r_idx)]
            else:
                blocks = [
                    (at, ga, _take(b_cols, t, c_idx, wdt), gbc, c_idx),
                    (bt, gb, _take(a_cols, t, c_idx, wdt), gac, c_idx),
                ]
            g = grad_out[t]
            coef = g * s_w
            for (q, gq_all, k, gk_all, k_idx), (G, lse_r, lse_c, c) in zip(blocks, st, strict=True):
                want_q = gq_all is not None or (need_s and gk_all is None)
                want_k = gk_all is not None
                if G is not None:
                    gq = torch.mm(G, k) if want_q else None
                    gk = torch.mm(G.t(), q) if want_k else None
                else:
                    gq, gk = _chunked_grads(q, k, s_w, lse_r, lse_c, c, chunk, h, p, want_q, want_k)
                if need_s and gq is not None:
                    gs += g * (q * gq).sum()
                elif need_s:
                    assert gk is not None  # need_s -> want_q or want_k
                    gs += g * (k * gk).sum()
                if gq_all is not None:
                    assert gq is not None  # want_q
                    _put(gq_all, t, r_idx, gq.mul_(coef))
                if gk_all is not None:
                    assert gk is not None  # want_k
                    _put(gk_all, t, k_idx, gk.mul_(coef))

        def cast(gx: Tensor | None, x: Tensor) -> Tensor | None:
            return None if gx is None else gx.to(x.dtype)

        return (
            cast(ga, a),
            cast(gb, b),
            gs.to(s.dtype) if need_s else None,
            cast(gac, a_cols),
            cast(gbc, b_cols),
            None,
            None,
            None,
            None,
            None,
            None,
        )


def _checked_columns(columns: Columns, a: Tensor, T: int) -> Columns:
    """``columns`` checked against the rows ``a`` ``[T or 1, N, D]`` of ``T`` terms, its
    ``valid`` mask as bool on ``a``'s device."""
    a_cols, b_cols, col_valid, offset, world = columns
    N = a.shape[1]
    Tc = _check_pair(a_cols, b_cols, "columns.a", "columns.b")
    K = a_cols.shape[1]
    if b_cols.shape[1] != K or a_cols.shape[2] != a.shape[2] or Tc not in (1, T):
        raise ValueError(
            f"columns must be [T or 1, K, D]; got {tuple(a_cols.shape)}, "
            f"{tuple(b_cols.shape)} for rows {tuple(a.shape)}"
        )
    if col_valid is not None:
        col_valid = col_valid.to(device=a.device, dtype=torch.bool)
        if tuple(col_valid.shape) != (T, K):
            raise ValueError(
                f"columns.valid must be [T, K] = [{T}, {K}], got {tuple(col_valid.shape)}"
            )
    if not 0 <= offset <= K - N:
        raise ValueError(f"columns.offset {offset} out of range for N={N}, K={K}")
    return Columns(a_cols, b_cols, col_valid, offset, world)


def symmetric_infonce(
    a: Tensor,
    b: Tensor,
    logit_scale: float | Tensor,
    row_valid: Tensor | None = None,
    chunk_size: int | None = None,
    columns: Columns | None = None,
) -> Tensor:
    """``T`` independent symmetric InfoNCE terms, fused: ``out[t] = nce_sym(a_t, b_t)``.

    ``nce_sym(a, b) = mean_{i valid} [ (lse_j L_ij + lse_j L_ji) / 2 - L_ii ]`` with
    ``L = s a b^T`` restricted to the valid samples of the term (rows *and* columns), i.e. exactly
    the loss on the subset. A term with no valid sample is 0 (one sample gives 0 as well); callers
    drop terms with fewer than 2 valid samples.

    Under ``torch.distributed`` the rows are this rank's samples and ``columns`` the gathered
    batch: ``out[t] = W / K_valid sum_{i valid} [ (lse_j s a_i . B_j + lse_j s b_i . A_j) / 2 -
    s a_i . b_i ]`` (positives at ``offset + i``), whose mean over ranks is the loss of the whole
    batch. ``columns=None`` is the one-rank case (columns = rows, ``W = 1``, offset 0), where one
    ``N x N`` product serves both directions.

    Args:
        a: ``[T, N, D]`` (or ``[1, N, D]``, broadcast over terms, e.g. a shared anchor).
        b: ``[T, N, D]`` (or ``[1, N, D]``).
        logit_scale: ``s``, float or 0-dim tensor (gets gradient if it requires grad).
        row_valid: optional ``[T, N]`` bool, True where sample ``n`` counts for term ``t``.
        chunk_size: process the logits in row blocks of this many rows (forward and backward);
            peak extra memory ``~2 chunk_size N`` floats per call instead of ``(T + 2) N^2``.
        columns: the gathered columns (:class:`Columns`), or None on one rank.

    Returns:
        ``[T]`` per-term losses (float32 for half/bfloat16 inputs, else the input dtype).

    Example:
        >>> z = torch.nn.functional.normalize(torch.randn(3, 8, 4), dim=-1)
        >>> symmetric_infonce(z[:1], z[1:], 10.0).shape   # anchor 0 vs modalities 1 and 2
        torch.Size([2])
        >>> x = symmetric_infonce(z[:1], z[1:], 10.0, columns=Columns(z[:1], z[1:], None, 0, 1))
        >>> torch.allclose(x, symmetric_infonce(z[:1], z[1:], 10.0))   # one rank, gathered
        True
    """
    T = _check_pair(a, b)
    N = a.shape[1]
    if b.shape[1] != N:
        raise ValueError(f"a and b need the same N; got {a.shape[1]} and {b.shape[1]}")
    if row_valid is not None:
        row_valid = row_valid.to(device=a.device, dtype=torch.bool)
        if row_valid.dim() == 1:
            row_valid = row_valid.expand(T, N)
        if tuple(row_valid.shape) != (T, N):
            raise ValueError(f"row_valid must be [T, N] = [{T}, {N}], got {tuple(row_valid.shape)}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    s = _as_scale(logit_scale, a)
    a_cols = b_cols = col_valid = None
    offset, world = 0, 1
    if columns is not None:
        a_cols, b_cols, col_valid, offset, world = _checked_columns(columns, a, T)
    grads = any(x is not None and x.requires_grad for x in (a, b, s, a_cols, b_cols))
    need = torch.is_grad_enabled() and grads
    # torch leaves ``Function.apply`` unannotated (an untyped classmethod returning Any).
    # The kernel picks its own precision (_work_dtype); under an outer autocast (bf16 training on
    # CUDA) its products would come out in bf16 and backward, run outside autocast, would mix them
    # with fp32, so the forward runs with autocast off.
    with torch.autocast(a.device.type, enabled=False):
        out: Tensor = _InfoNCE.apply(  # type: ignore[no-untyped-call]
            a, b, s, a_cols, b_cols, row_valid, col_valid, offset, world, chunk_size, need
        )
    return out


# ----------------------------------------------------------------------------------------------
# references and generic helpers


def nce_sym_reference(
    a: Tensor, b: Tensor, logit_scale: float | Tensor, row_valid: Tensor | None = None
) -> Tensor:
    """Straightforward ``nce_sym`` (``F.cross_entropy`` both ways + autograd), for tests/benchmarks.

    Same contract as :func:`symmetric_infonce` (without chunking); invalid columns are masked
    with ``-inf`` and invalid rows dropped from the mean. Materialises ``[T, N, N]``.

    Example:
        >>> z = torch.nn.functional.normalize(torch.randn(2, 5, 3, dtype=torch.float64), dim=-1)
        >>> ref = nce_sym_reference(z[:1], z[1:], 4.0)
        >>> torch.allclose(ref, symmetric_infonce(z[:1], z[1:], 4.0))
        True
    """
    T = _check_pair(a, b)
    N = a.shape[1]
    logits = torch.matmul(a, b.transpose(1, 2)) * logit_scale
    logits = logits.expand(T, N, N)
    labels = torch.arange(N, device=a.device).expand(T, N)
    if row_valid is None:
        row = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
        col = F.cross_entropy(logits, labels, reduction="none")
        return ((row + col) / 2).mean(1)
    v = row_valid.to(device=a.device, dtype=torch.bool).expand(T, N)
    ninf = torch.finfo(logits.dtype).min
    row = F.cross_entropy(
        logits.masked_fill(~v[:, None, :], ninf).transpose(1, 2), labels, reduction="none"
    )
    col = F.cross_entropy(logits.masked_fill(~v[:, :, None], ninf), labels, reduction="none")
    per = torch.where(v, (row + col) / 2, torch.zeros_like(row))
    return per.sum(1) / v.sum(1).clamp_min(1).to(per.dtype)


def row_cross_entropy(logits: Tensor, target: Tensor | None = None, scale: float = 1.0) -> Tensor:
    """``scale * sum_i CE(logits_i, target_i)``; ``target`` defaults to the diagonal ``arange``.

    With ``scale = 1 / n`` this is ``F.cross_entropy(..., reduction="mean")``; the distributed
    paths use ``scale = W / n_global`` (see :mod:`centrobind.objectives.distributed`).

    Args:
        logits: ``[n, K]``.
        target: ``[n]`` long, or None for ``arange(n)``.
        scale: multiplier of the summed cross-entropy.

    Example:
        >>> row_cross_entropy(torch.zeros(4, 4), scale=1 / 4)   # log 4
        tensor(1.3863)
    """
    if target is None:
        target = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, target, reduction="sum") * scale
