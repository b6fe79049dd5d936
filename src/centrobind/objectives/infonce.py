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

:func:`infonce_rows` is the one-directional, row-weighted kernel the distributed path uses (local
rows against gathered global columns, positives at an offset); :func:`symmetric_infonce_global`
combines two of them into the distributed symmetric loss.

All kernels compute in float32 for half/bfloat16 inputs and in the input precision otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "infonce_rows",
    "nce_sym_reference",
    "row_cross_entropy",
    "symmetric_infonce",
    "symmetric_infonce_global",
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
# symmetric kernel (single process)


#: A common shift ``c >= max L`` is used for the exponentials when every row and column has an
#: entry within this many units of ``c`` (their diagonal): no row or column sum can underflow
#: then, and one ``exp`` pass serves both softmaxes. Otherwise rows and columns get their own
#: maxima (two ``exp`` passes). float32 qualifies for all ``s <= 30`` with unit vectors.
SAFE_SHIFT_RANGE = {torch.float64: 600.0, torch.float32: 60.0}


def _common_shift(as_: Tensor, bt: Tensor, pos: Tensor) -> Tensor | None:
    """``c = max_i |s a_i| max_j |b_j| >= max L`` if ``min_i L_ii >= c - range``, else None."""
    c = torch.linalg.vector_norm(as_, dim=1).max() * torch.linalg.vector_norm(bt, dim=1).max()
    if bool(pos.min() >= c - SAFE_SHIFT_RANGE.get(as_.dtype, 60.0)):
        return c
    return None


def _sym_full_shift(L: Tensor, c: Tensor, n: int, need_grad: bool):
    """Fast path: ``E = exp(L - c)`` once; ``G = E (1 / (2n rs_i) + 1 / (2n cs_j)) - I / n``."""
    E = L.sub_(c).exp_()
    rs, cs = E.sum(1), E.sum(0)
    lse_r, lse_c = rs.log().add_(c), cs.log().add_(c)
    if not need_grad:
        return lse_r, lse_c, None
    F = torch.add(rs.reciprocal_().mul_(0.5 / n)[:, None], cs.reciprocal_().mul_(0.5 / n)[None, :])
    E.mul_(F)
    E.diagonal().sub_(1.0 / n)
    return lse_r, lse_c, E


def _sym_full(L: Tensor, n: int, need_grad: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Row/column log-sum-exp of logits ``L [n, n]`` (destroyed) and ``G = dloss/dL`` in place."""
    m_r = L.amax(1, keepdim=True)
    E = torch.sub(L, m_r).exp_()
    rs = E.sum(1, keepdim=True)
    lse_r = (m_r + rs.log()).squeeze(1)
    m_c = L.amax(0, keepdim=True)
    L.sub_(m_c).exp_()
    cs = L.sum(0, keepdim=True)
    lse_c = (m_c + cs.log()).squeeze(0)
    if not need_grad:
        return lse_r, lse_c, None
    E.mul_(rs.reciprocal_().mul_(0.5 / n))  # P_row / (2n)
    L.mul_(cs.reciprocal_().mul_(0.5 / n))  # P_col / (2n)
    E.add_(L)
    E.diagonal().sub_(1.0 / n)
    return lse_r, lse_c, E


def _sym_chunked_stats(as_: Tensor, bt: Tensor, chunk: int, c: Tensor | None
                       ) -> tuple[Tensor, Tensor]:
    """Row and column log-sum-exp of ``as_ @ bt^T`` computed in row blocks of ``chunk``.

    With a common shift ``c`` the column sums simply accumulate; otherwise a running column
    maximum rescales them (online log-sum-exp).
    """
    n = as_.shape[0]
    lse_r = as_.new_empty(n)
    s_c = as_.new_zeros(n)
    m_c = as_.new_full((n,), float("-inf"))
    buf = as_.new_empty(min(chunk, n), n)
    buf2 = torch.empty_like(buf) if c is None else None
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        Lb = torch.mm(as_[r0:r1], bt.t(), out=buf[: r1 - r0])
        if c is not None:
            Lb.sub_(c).exp_()
            lse_r[r0:r1] = Lb.sum(1).log_().add_(c)
            s_c.add_(Lb.sum(0))
            continue
        m = Lb.amax(1, keepdim=True)
        E = torch.sub(Lb, m, out=buf2[: r1 - r0]).exp_()
        lse_r[r0:r1] = m.squeeze(1) + E.sum(1).log()
        m_new = torch.maximum(m_c, Lb.amax(0))
        s_c.mul_((m_c - m_new).exp_())
        s_c.add_(Lb.sub_(m_new).exp_().sum(0))
        m_c = m_new
    if c is not None:
        return lse_r, s_c.log_().add_(c)
    return lse_r, m_c + s_c.log()


def _sym_chunked_grads(
    as_: Tensor, at: Tensor, bt: Tensor, lse_r: Tensor, lse_c: Tensor, c: Tensor | None,
    chunk: int, want_ga: bool, want_gb: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """``G b`` and ``G^T a`` with ``G`` recomputed in row blocks (never ``[n, n]`` at once)."""
    n = as_.shape[0]
    ga = torch.empty_like(at) if want_ga else None
    gb = torch.zeros_like(bt) if want_gb else None
    buf = as_.new_empty(min(chunk, n), n)
    buf2 = torch.empty_like(buf)
    if c is not None:  # G = exp(L - c) (alpha_i + gamma_j)
        alpha = (c - lse_r).exp_().mul_(0.5 / n)
        gamma = (c - lse_c).exp_().mul_(0.5 / n)
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        k = r1 - r0
        Lb = torch.mm(as_[r0:r1], bt.t(), out=buf[:k])
        if c is not None:
            P = Lb.sub_(c).exp_().mul_(torch.add(alpha[r0:r1, None], gamma[None, :],
                                                 out=buf2[:k]))
        else:
            P = torch.sub(Lb, lse_r[r0:r1, None], out=buf2[:k]).exp_()
            P.add_(Lb.sub_(lse_c[None, :]).exp_()).mul_(0.5 / n)
        P[:, r0:r1].diagonal().sub_(1.0 / n)
        if ga is not None:
            torch.mm(P, bt, out=ga[r0:r1])
        if gb is not None:
            gb.addmm_(P.t(), at[r0:r1])
    return ga, gb


class _SymmetricInfoNCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, s, row_valid, chunk_size, need_grad):
        T = max(a.shape[0], b.shape[0])
        wdt = _work_dtype(a, b)
        s_w = s.detach().to(wdt)
        out = torch.zeros(T, dtype=wdt, device=a.device)
        states: list = []
        for t in range(T):
            idx = _valid_index(row_valid, t)
            at, bt = _take(a, t, idx, wdt), _take(b, t, idx, wdt)
            n = at.shape[0]
            if n == 0:
                states.append(None)
                continue
            as_ = at * s_w
            pos = (as_ * bt).sum(1)
            c = _common_shift(as_, bt, pos)
            if chunk_size is None or chunk_size >= n:
                L = torch.mm(as_, bt.t())
                if c is not None:
                    lse_r, lse_c, G = _sym_full_shift(L, c, n, need_grad)
                else:
                    lse_r, lse_c, G = _sym_full(L, n, need_grad)
                states.append((idx, G, None, None, None))
            else:
                lse_r, lse_c = _sym_chunked_stats(as_, bt, chunk_size, c)
                states.append((idx, None, lse_r, lse_c, c))
            out[t] = ((lse_r + lse_c).mul_(0.5).sub_(pos)).mean()
        ctx.save_for_backward(a, b, s)
        ctx.states, ctx.wdt, ctx.chunk = states, wdt, chunk_size
        return out

    @staticmethod
    def backward(ctx, grad_out):
        a, b, s = ctx.saved_tensors
        need_a, need_b, need_s = ctx.needs_input_grad[:3]
        wdt, chunk = ctx.wdt, ctx.chunk
        s_w = s.detach().to(wdt)
        grad_out = grad_out.to(wdt)
        ga_all = torch.zeros(a.shape, dtype=wdt, device=a.device) if need_a else None
        gb_all = torch.zeros(b.shape, dtype=wdt, device=b.device) if need_b else None
        gs = torch.zeros((), dtype=wdt, device=a.device)
        for t, st in enumerate(ctx.states):
            if st is None:
                continue
            idx, G, lse_r, lse_c, c = st
            at, bt = _take(a, t, idx, wdt), _take(b, t, idx, wdt)
            want_ga = need_a or (need_s and not need_b)
            if G is not None:
                ga = torch.mm(G, bt) if want_ga else None
                gb = torch.mm(G.t(), at) if need_b else None
            else:
                ga, gb = _sym_chunked_grads(at * s_w, at, bt, lse_r, lse_c, c, chunk, want_ga,
                                            need_b)
            g = grad_out[t]
            if need_s:
                gs += g * ((at * ga).sum() if ga is not None else (bt * gb).sum())
            coef = g * s_w
            if need_a:
                _put(ga_all, t, idx, ga.mul_(coef))
            if need_b:
                _put(gb_all, t, idx, gb.mul_(coef))
        return (
            ga_all.to(a.dtype) if need_a else None,
            gb_all.to(b.dtype) if need_b else None,
            gs.to(s.dtype) if need_s else None,
            None, None, None,
        )


def symmetric_infonce(
    a: Tensor,
    b: Tensor,
    logit_scale: float | Tensor,
    row_valid: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """``T`` independent symmetric InfoNCE terms, fused: ``out[t] = nce_sym(a_t, b_t)``.

    ``nce_sym(a, b) = mean_{i valid} [ (lse_j L_ij + lse_j L_ji) / 2 - L_ii ]`` with
    ``L = s a b^T`` restricted to the valid samples of the term (rows *and* columns), i.e. exactly
    the loss on the subset. A term with no valid sample is 0 (one sample gives 0 as well); callers
    drop terms with fewer than 2 valid samples.

    Args:
        a: ``[T, N, D]`` (or ``[1, N, D]``, broadcast over terms, e.g. a shared anchor).
        b: ``[T, N, D]`` (or ``[1, N, D]``).
        logit_scale: ``s``, float or 0-dim tensor (gets gradient if it requires grad).
        row_valid: optional ``[T, N]`` bool, True where sample ``n`` counts for term ``t``.
        chunk_size: process the logits in row blocks of this many rows (forward and backward);
            peak extra memory ``~2 chunk_size N`` floats per call instead of ``(T + 2) N^2``.

    Returns:
        ``[T]`` per-term losses (float32 for half/bfloat16 inputs, else the input dtype).

    Example:
        >>> z = torch.nn.functional.normalize(torch.randn(3, 8, 4), dim=-1)
        >>> symmetric_infonce(z[:1], z[1:], 10.0).shape   # anchor 0 vs modalities 1 and 2
        torch.Size([2])
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
    need = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad or s.requires_grad)
    return _SymmetricInfoNCE.apply(a, b, s, row_valid, chunk_size, need)


# ----------------------------------------------------------------------------------------------
# one-directional, row-weighted kernel (distributed: local rows vs global columns)


def _rows_full(L: Tensor, w: Tensor, p: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """Row log-sum-exp of ``L [n, K]`` (destroyed) and ``G = w_i (softmax_i - onehot(p_i))``."""
    m = L.amax(1, keepdim=True)
    L.sub_(m).exp_()
    rs = L.sum(1, keepdim=True)
    lse = (m + rs.log()).squeeze(1)
    if not need_grad:
        return lse, None
    L.mul_(rs.reciprocal_().mul_(w[:, None]))
    L.index_put_((torch.arange(L.shape[0], device=L.device), p), -w, accumulate=True)
    return lse, L


class _RowInfoNCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, s, row_weight, col_valid, pos, chunk_size, need_grad):
        T = row_weight.shape[0]
        wdt = _work_dtype(q, k)
        s_w = s.detach().to(wdt)
        out = torch.zeros(T, dtype=wdt, device=q.device)
        states: list = []
        for t in range(T):
            r_idx = (row_weight[t] != 0).nonzero().squeeze(1)
            c_idx = _valid_index(col_valid, t)
            p = pos[r_idx]
            if c_idx is not None:
                p = (col_valid[t].long().cumsum(0) - 1)[p]
            qt, kt = _take(q, t, r_idx, wdt), _take(k, t, c_idx, wdt)
            if qt.shape[0] == 0 or kt.shape[0] == 0:
                states.append(None)
                continue
            w = row_weight[t, r_idx].to(wdt)
            qs = qt * s_w
            pos_logit = (qs * kt.index_select(0, p)).sum(1)
            n = qt.shape[0]
            if chunk_size is None or chunk_size >= n:
                lse, G = _rows_full(torch.mm(qs, kt.t()), w, p, need_grad)
            else:
                lse = torch.cat([torch.logsumexp(torch.mm(qs[r0:r0 + chunk_size], kt.t()), 1)
                                 for r0 in range(0, n, chunk_size)])
                G = None
            out[t] = (w * (lse - pos_logit)).sum()
            states.append((r_idx, c_idx, p, w, G, lse))
        ctx.save_for_backward(q, k, s)
        ctx.states, ctx.wdt, ctx.chunk = states, wdt, chunk_size
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, s = ctx.saved_tensors
        need_q, need_k, need_s = ctx.needs_input_grad[:3]
        wdt, chunk = ctx.wdt, ctx.chunk
        s_w = s.detach().to(wdt)
        grad_out = grad_out.to(wdt)
        gq_all = torch.zeros(q.shape, dtype=wdt, device=q.device) if need_q else None
        gk_all = torch.zeros(k.shape, dtype=wdt, device=k.device) if need_k else None
        gs = torch.zeros((), dtype=wdt, device=q.device)
        for t, st in enumerate(ctx.states):
            if st is None:
                continue
            r_idx, c_idx, p, w, G, lse = st
            qt, kt = _take(q, t, r_idx, wdt), _take(k, t, c_idx, wdt)
            want_gq = need_q or (need_s and not need_k)
            if G is not None:
                gq = torch.mm(G, kt) if want_gq else None
                gk = torch.mm(G.t(), qt) if need_k else None
            else:
                n = qt.shape[0]
                qs = qt * s_w
                gq = torch.empty_like(qt) if want_gq else None
                gk = torch.zeros_like(kt) if need_k else None
                for r0 in range(0, n, chunk):
                    r1 = min(n, r0 + chunk)
                    P = torch.mm(qs[r0:r1], kt.t()).sub_(lse[r0:r1, None]).exp_()
                    P.mul_(w[r0:r1, None])
                    P.index_put_((torch.arange(r1 - r0, device=P.device), p[r0:r1]), -w[r0:r1],
                                 accumulate=True)
                    if gq is not None:
                        torch.mm(P, kt, out=gq[r0:r1])
                    if gk is not None:
                        gk.addmm_(P.t(), qt[r0:r1])
            g = grad_out[t]
            if need_s:
                gs += g * ((qt * gq).sum() if gq is not None else (kt * gk).sum())
            coef = g * s_w
            if need_q:
                _put(gq_all, t, r_idx, gq.mul_(coef))
            if need_k:
                _put(gk_all, t, c_idx, gk.mul_(coef))
        return (
            gq_all.to(q.dtype) if need_q else None,
            gk_all.to(k.dtype) if need_k else None,
            gs.to(s.dtype) if need_s else None,
            None, None, None, None, None,
        )


def infonce_rows(
    q: Tensor,
    k: Tensor,
    logit_scale: float | Tensor,
    row_weight: Tensor,
    col_valid: Tensor | None = None,
    pos: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """One-directional weighted InfoNCE for ``T`` terms: rows ``q`` against columns ``k``.

    ``out[t] = sum_i w_ti [ logsumexp_{j valid} (s q_ti . k_tj) - s q_ti . k_t,pos_i ]``; rows
    with ``w_ti = 0`` are skipped, invalid columns excluded (subsetting). The positive column of
    every weighted row must be valid.

    Args:
        q: ``[T, n, D]`` rows (or ``[1, n, D]`` broadcast).
        k: ``[T, K, D]`` columns (or ``[1, K, D]``).
        logit_scale: ``s``, float or 0-dim tensor.
        row_weight: ``[T, n]`` float weights (0 = row absent).
        col_valid: optional ``[T, K]`` bool.
        pos: ``[n]`` long, column index of row ``i``'s positive (default ``arange(n)``).
        chunk_size: row-block size (forward and backward), bounding memory to ``chunk_size x K``.

    Returns:
        ``[T]`` weighted sums.

    Example:
        >>> z = torch.nn.functional.normalize(torch.randn(2, 6, 4), dim=-1)
        >>> w = torch.full((1, 6), 1 / 6)
        >>> infonce_rows(z[:1], z[1:], 5.0, w).shape     # = nce(z0, z1)
        torch.Size([1])
    """
    T = row_weight.shape[0]
    if q.dim() != 3 or k.dim() != 3 or q.shape[2] != k.shape[2]:
        raise ValueError(
            f"q, k must be [T, n, D], [T, K, D]; got {tuple(q.shape)}, {tuple(k.shape)}"
        )
    n, K = q.shape[1], k.shape[1]
    if tuple(row_weight.shape) != (T, n) or q.shape[0] not in (1, T) or k.shape[0] not in (1, T):
        raise ValueError("row_weight must be [T, n] with q, k of T or 1 terms")
    if col_valid is not None:
        col_valid = col_valid.to(device=k.device, dtype=torch.bool)
        if tuple(col_valid.shape) != (T, K):
            raise ValueError(f"col_valid must be [T, K] = [{T}, {K}], got {tuple(col_valid.shape)}")
    if pos is None:
        pos = torch.arange(n, device=q.device)
    s = _as_scale(logit_scale, q)
    need = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or s.requires_grad)
    return _RowInfoNCE.apply(q, k, s, row_weight.to(q.device), col_valid, pos.to(q.device),
                             chunk_size, need)


def symmetric_infonce_global(
    a_loc: Tensor,
    b_loc: Tensor,
    a_glob: Tensor,
    b_glob: Tensor,
    logit_scale: float | Tensor,
    row_weight: Tensor,
    col_valid: Tensor | None,
    offset: int,
    chunk_size: int | None = None,
) -> Tensor:
    """Distributed symmetric InfoNCE share of one rank: local rows vs global columns, both ways.

    ``out[t] = sum_i w_ti [ (lse_j s a_i . B_j + lse_j s b_i . A_j) / 2 - s a_i . b_i ]`` over local
    rows ``i`` (global index ``offset + i``) and valid global columns ``j``. With
    ``w_ti = W / n_valid_t`` (and valid rows only), the mean over the ``W`` ranks equals
    :func:`symmetric_infonce` on the concatenated batch.

    Args:
        a_loc, b_loc: ``[T or 1, n, D]`` this rank's rows.
        a_glob, b_glob: ``[T or 1, W n, D]`` gathered (differentiably) global columns.
        logit_scale: ``s``.
        row_weight: ``[T, n]`` per-row weights (0 for absent rows).
        col_valid: ``[T, W n]`` bool or None.
        offset: global index of this rank's first sample (``rank * n``).
        chunk_size: row-block size.

    Returns:
        ``[T]``.

    Example:
        >>> z = torch.nn.functional.normalize(torch.randn(2, 6, 4), dim=-1)
        >>> w = torch.full((1, 6), 1 / 6)
        >>> x = symmetric_infonce_global(z[:1], z[1:], z[:1], z[1:], 5.0, w, None, 0)
        >>> torch.allclose(x, symmetric_infonce(z[:1], z[1:], 5.0))   # W = 1
        True
    """
    n = a_loc.shape[1]
    pos = torch.arange(n, device=a_loc.device) + offset
    half = row_weight * 0.5
    return (infonce_rows(a_loc, b_glob, logit_scale, half, col_valid, pos, chunk_size)
            + infonce_rows(b_loc, a_glob, logit_scale, half, col_valid, pos, chunk_size))


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
    row = F.cross_entropy(logits.masked_fill(~v[:, None, :], ninf).transpose(1, 2), labels,
                          reduction="none")
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
