"""The fused InfoNCE kernels against the straightforward reference: values, gradients, chunking,
masks, broadcasting, dtypes."""

import pytest
import torch
import torch.nn.functional as F

from centrobind.objectives import infonce as infonce_module
from centrobind.objectives import nce_sym_reference, symmetric_infonce
from centrobind.objectives.infonce import Columns

DT = torch.float64
DEFAULT_SHIFT_RANGE = dict(infonce_module.SAFE_SHIFT_RANGE)


@pytest.fixture(params=["common_shift", "per_row_col_max"], autouse=True)
def exp_path(request, monkeypatch):
    """Run every test through both exponentiation paths of the fused kernel."""
    if request.param == "per_row_col_max":
        monkeypatch.setattr(
            infonce_module, "SAFE_SHIFT_RANGE", {torch.float64: -1e30, torch.float32: -1e30}
        )
    return request.param


def inputs(T, N, D, seed=0, dtype=DT, broadcast_a=False, s=3.0):
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(1 if broadcast_a else T, N, D, generator=g, dtype=DT), dim=-1)
    b = F.normalize(torch.randn(T, N, D, generator=g, dtype=DT), dim=-1)
    a = a.to(dtype).requires_grad_()
    b = b.to(dtype).requires_grad_()
    return a, b, torch.tensor(s, dtype=dtype, requires_grad=True)


def rand_valid(T, N, seed=0, p=0.6):
    g = torch.Generator().manual_seed(seed + 99)
    v = torch.rand(T, N, generator=g) < p
    v[:, :2] = True
    return v


def check(out, ref, params, atol=1e-10, weights=None):
    torch.testing.assert_close(out, ref, atol=atol, rtol=0)
    w = torch.linspace(0.5, 1.5, out.shape[0], dtype=out.dtype) if weights is None else weights
    g1 = torch.autograd.grad((out * w).sum(), params)
    g2 = torch.autograd.grad((ref * w.to(ref.dtype)).sum(), params)
    for x, y in zip(g1, g2, strict=True):
        torch.testing.assert_close(x, y.to(x.dtype), atol=atol, rtol=0)


@pytest.mark.parametrize("T,N,D", [(1, 2, 3), (3, 9, 4), (4, 16, 8)])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("broadcast_a", [False, True])
def test_kernel_matches_reference(T, N, D, masked, broadcast_a):
    a, b, s = inputs(T, N, D, broadcast_a=broadcast_a)
    v = rand_valid(T, N) if masked else None
    check(symmetric_infonce(a, b, s, v), nce_sym_reference(a, b, s, v), [a, b, s])


@pytest.mark.parametrize("chunk", [1, 3, 4, 7, 12, 50])
@pytest.mark.parametrize("masked", [False, True])
def test_chunked_equals_unchunked(chunk, masked):
    a, b, s = inputs(3, 12, 5, seed=1)
    v = rand_valid(3, 12, seed=1) if masked else None
    check(
        symmetric_infonce(a, b, s, v, chunk_size=chunk),
        symmetric_infonce(a, b, s, v),
        [a, b, s],
        atol=1e-12,
    )


@pytest.mark.parametrize("chunk", [None, 5])
def test_chunked_float32_close_to_float64(chunk):
    a, b, s = inputs(2, 37, 16, seed=2, dtype=torch.float32, s=30.0)
    out = symmetric_infonce(a, b, s, chunk_size=chunk)
    ref = nce_sym_reference(a.double(), b.double(), s.double())
    check(out.double(), ref, [a, b, s], atol=1e-5)


def test_masked_equals_explicit_subset():
    a, b, s = inputs(3, 10, 4, seed=3)
    v = rand_valid(3, 10, seed=3)
    out = symmetric_infonce(a, b, s, v, chunk_size=3)
    for t in range(3):
        idx = v[t].nonzero().squeeze(1)
        sub = symmetric_infonce(a[t : t + 1, idx], b[t : t + 1, idx], s)
        torch.testing.assert_close(out[t], sub[0], atol=1e-12, rtol=0)
    # gradients of absent rows are exactly zero
    ga, gb = torch.autograd.grad(out.sum(), [a, b])
    assert (ga[~v] == 0).all() and (gb[~v] == 0).all()


def test_empty_and_single_sample_terms_are_zero():
    a, b, s = inputs(3, 5, 4, seed=4)
    v = torch.tensor([[False] * 5, [True] + [False] * 4, [True] * 5])
    out = symmetric_infonce(a, b, s, v)
    assert out[0] == 0 and abs(out[1].item()) < 1e-12 and out[2] > 0
    check(out, nce_sym_reference(a, b, s, v), [a, b, s])


def test_float_logit_scale_and_partial_requires_grad():
    a, b, s = inputs(2, 8, 4, seed=5)
    out = symmetric_infonce(a, b, 3.0)
    torch.testing.assert_close(out, nce_sym_reference(a, b, 3.0))
    # only s requires grad; only b requires grad (uses the G^T a route for grad_s)
    a0, b0 = a.detach(), b.detach()
    for pa, pb in [(False, False), (False, True), (True, False)]:
        x = a0.clone().requires_grad_(pa)
        y = b0.clone().requires_grad_(pb)
        ss = torch.tensor(3.0, dtype=DT, requires_grad=True)
        params = [p for p in (x, y) if p.requires_grad] + [ss]
        for chunk in (None, 3):
            check(
                symmetric_infonce(x, y, ss, chunk_size=chunk), nce_sym_reference(x, y, ss), params
            )


def test_no_grad_mode_and_detached_inputs():
    a, b, s = inputs(2, 8, 4, seed=6)
    with torch.no_grad():
        out = symmetric_infonce(a, b, s)
    assert not out.requires_grad
    torch.testing.assert_close(out, nce_sym_reference(a, b, s).detach())


@pytest.mark.parametrize("scale", [100.0, 1000.0])
def test_large_logit_scale_is_stable_in_float32(scale):
    a, b, s = inputs(2, 64, 8, seed=7, dtype=torch.float32, s=scale)
    for chunk in (None, 16):
        out = symmetric_infonce(a, b, s, chunk_size=chunk)
        ref = nce_sym_reference(a.double(), b.double(), s.double())
        assert torch.isfinite(out).all()
        check(out.double(), ref, [a, b, s], atol=1e-4 * scale / 100)


def test_bfloat16_inputs_compute_in_float32():
    a, b, s = inputs(2, 16, 8, seed=8)
    a16, b16 = a.detach().bfloat16().requires_grad_(), b.detach().bfloat16().requires_grad_()
    out = symmetric_infonce(a16, b16, s.float())
    assert out.dtype == torch.float32
    ref = nce_sym_reference(a16.double(), b16.double(), s)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    out.sum().backward()
    assert a16.grad.dtype == torch.bfloat16 and torch.isfinite(a16.grad.float()).all()


def test_input_validation():
    a, b, s = inputs(2, 6, 3)
    with pytest.raises(ValueError):
        symmetric_infonce(a[0], b, s)
    with pytest.raises(ValueError):
        symmetric_infonce(a, b[:, :5], s)
    with pytest.raises(ValueError):
        symmetric_infonce(a, b, s, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError):
        symmetric_infonce(a, b, s, chunk_size=0)


# ---------------------------------------------------------------------------------------------
# gathered columns (the distributed path), simulated in one process


@pytest.mark.parametrize("chunk", [None, 2, 5])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("broadcast_a", [False, True])
def test_rank_shares_with_gathered_columns_average_to_the_whole_batch(chunk, masked, broadcast_a):
    """W ranks of n rows each, scored against the whole batch as gathered columns: the mean of
    the shares equals the single-process loss, and their summed gradient is W times its
    gradient (what the all-reduce of the gather hands back to each rank)."""
    W, n, T = 3, 4, 3
    a, b, s = inputs(T, W * n, 5, seed=12, broadcast_a=broadcast_a)
    v = rand_valid(T, W * n, seed=12, p=0.7) if masked else None
    if v is not None:
        v[:, n : n + 1] = False  # a rank with a row absent from every term
    shares = []
    for r in range(W):
        sl = slice(r * n, (r + 1) * n)
        cols = Columns(a, b, v, r * n, W)
        shares.append(
            symmetric_infonce(a[:, sl], b[:, sl], s, None if v is None else v[:, sl], chunk, cols)
        )
    out = torch.stack(shares).mean(0)
    check(out, nce_sym_reference(a, b, s, v), [a, b, s])


def test_one_rank_columns_equal_no_columns():
    a, b, s = inputs(3, 9, 4, seed=10, broadcast_a=True)
    v = rand_valid(3, 9, seed=10)
    for chunk in (None, 4):
        out = symmetric_infonce(a, b, s, v, chunk, Columns(a, b, v, 0, 1))
        check(out, symmetric_infonce(a, b, s, v), [a, b, s])


def test_columns_validation():
    a, b, s = inputs(2, 6, 3)
    with pytest.raises(ValueError, match="columns"):
        symmetric_infonce(a, b, s, columns=Columns(a[:, :4], b, None, 0, 2))
    with pytest.raises(ValueError, match="offset"):
        symmetric_infonce(a, b, s, columns=Columns(a, b, None, 3, 2))
    with pytest.raises(ValueError, match="valid"):
        symmetric_infonce(a, b, s, columns=Columns(a, b, torch.ones(2, 5, dtype=torch.bool), 0, 1))


def test_common_shift_is_used_only_when_safe(monkeypatch):
    """The default guard: SAFE_SHIFT_RANGE restored whatever the autouse fixture set."""
    monkeypatch.setattr(infonce_module, "SAFE_SHIFT_RANGE", DEFAULT_SHIFT_RANGE)
    calls = []
    real = infonce_module._full
    monkeypatch.setattr(
        infonce_module,
        "_full",
        lambda L, c, *args: calls.append(c is not None) or real(L, c, *args),
    )
    a, b, _ = inputs(1, 32, 8, seed=11, dtype=torch.float32)
    symmetric_infonce(a, b, 1 / 0.07)  # |L| <= 14.3: safe
    assert calls == [True]
    symmetric_infonce(a, b, 100.0)  # random rows: some diagonal far below the bound
    assert calls == [True, False]
