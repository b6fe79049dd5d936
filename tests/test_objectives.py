"""Binding objectives against brute-force, loop-based references (float64), plus hand checks.

The references below loop over samples / pairs / tuples and subset the samples explicitly for
masks; they share no code with the library.
"""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from symile import Symile as SymilePackage

from centrobind.objectives import (
    OBJECTIVES,
    AllPairs,
    CentroBind,
    FixedAnchor,
    Gram,
    Objective,
    ObjectiveOutput,
    Symile,
    make_objective,
)
from centrobind.objectives.gram import adjugate_det, gram_volumes

DT = torch.float64


# ---------------------------------------------------------------------------------------------
# brute-force references


def _ce(logits_row, target):
    return torch.logsumexp(logits_row, 0) - logits_row[target]


def nce_bf(a, b, s):
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        row = torch.stack([s * torch.dot(a[i], b[j]) for j in range(n)])
        total = total + _ce(row, i)
    return total / n


def nce_sym_bf(a, b, s):
    return (nce_bf(a, b, s) + nce_bf(b, a, s)) / 2


def _present(mask, mods, N):
    return [n for n in range(N) if all(mask is None or bool(mask[m, n]) for m in mods)]


def _mean_terms(terms, z, s):
    if not terms:
        return z.sum() * 0, terms
    return sum(terms.values()) / len(terms), terms


def centrobind_bf(z, s, mask=None, weights=None, detach=True, normalize=False):
    M, N, D = z.shape
    w = [1.0] * M if weights is None else weights
    anchors = []
    for n in range(N):
        num, den = torch.zeros(D, dtype=z.dtype), 0.0
        for m in range(M):
            if mask is None or bool(mask[m, n]):
                zz = z[m, n].detach() if detach else z[m, n]
                num = num + w[m] * zz
                den = den + w[m]
        c = num / den
        if normalize:
            c = c / c.norm()
        anchors.append(c)
    c = torch.stack(anchors)
    terms = {}
    for m in range(M):
        idx = _present(mask, [m], N)
        if len(idx) >= 2:
            terms[f"c-{m}"] = nce_sym_bf(c[idx], z[m][idx], s)
    return _mean_terms(terms, z, s)


def centrobind_loo_bf(
    z, s, mask=None, weights=None, detach=True, normalize=False, alpha=0.0, sample_weights=None
):
    """Leave-one-out (``alpha = 0``): term m's anchor for sample n is the weighted mean of the
    OTHER present modalities (with a positive weight); samples without one are left out of term m.
    ``alpha > 0``: modality m itself joins its anchor with weight ``alpha * w_m``.
    ``sample_weights[k][n]``: per-sample weights instead of ``weights``."""
    M, N, D = z.shape
    w = [1.0] * M if weights is None else weights
    terms = {}
    for m in range(M):
        idx, anchors = [], []
        for n in range(N):
            if sample_weights is not None:
                w = [float(sample_weights[k][n]) for k in range(M)]
            if mask is not None and not bool(mask[m, n]):
                continue
            num, den = torch.zeros(D, dtype=z.dtype), 0.0
            for k in range(M):
                if k != m and (mask is None or bool(mask[k, n])) and float(w[k]) > 0:
                    zz = z[k, n].detach() if detach else z[k, n]
                    num = num + w[k] * zz
                    den = den + w[k]
            if den == 0.0:
                continue  # only modality m (with a positive weight) present: no anchor
            own = z[m, n].detach() if detach else z[m, n]
            num, den = num + alpha * w[m] * own, den + alpha * w[m]
            c = num / den
            anchors.append(c / c.norm() if normalize else c)
            idx.append(n)
        if len(idx) >= 2:
            terms[f"c-{m}"] = nce_sym_bf(torch.stack(anchors), z[m][idx], s)
    return _mean_terms(terms, z, s)


def pairs_bf(z, s, pairs, mask=None):
    N = z.shape[1]
    terms = {}
    for i, j in pairs:
        idx = _present(mask, [i, j], N)
        if len(idx) >= 2:
            terms[f"{i}-{j}"] = nce_sym_bf(z[i][idx], z[j][idx], s)
    return _mean_terms(terms, z, s)


def symile_bf(z, s, mask=None, perms=None):
    """``perms=None``: all N^(M-1) tuples; else ``perms[m][k]`` permutes anchor m's k-th other."""
    M, N, _ = z.shape
    idx = _present(mask, range(M), N)
    terms = {}
    if len(idx) < 2:
        return _mean_terms(terms, z, s)
    zv = z[:, idx]
    n = len(idx)

    def mip(m, i, others, cand):
        v = zv[m, i]
        for l, c in zip(others, cand, strict=True):
            v = v * zv[l, c]
        return s * v.sum()

    for m in range(M):
        others = [l for l in range(M) if l != m]
        total = 0.0
        for i in range(n):
            if perms is None:
                tuples = list(itertools.product(range(n), repeat=M - 1))
                target = tuples.index((i,) * (M - 1))
            else:
                tuples = [
                    (i,) * (M - 1) if j == i else tuple(int(perms[m][k][j]) for k in range(M - 1))
                    for j in range(n)
                ]
                target = i
            row = torch.stack([mip(m, i, others, c) for c in tuples])
            total = total + _ce(row, target)
        terms[f"{m}->rest"] = total / n
    return _mean_terms(terms, z, s)


def volume_bf(vectors, eps):
    V = torch.stack(vectors)
    return torch.sqrt(torch.clamp(torch.linalg.det(V @ V.T), min=eps))


def gram_bf(z, s, k=0, mask=None, eps=1e-6):
    M, N, _ = z.shape
    idx = _present(mask, range(M), N)
    terms = {}
    if len(idx) < 2:
        return _mean_terms(terms, z, s)
    zv = z[:, idx]
    n = len(idx)
    others = [m for m in range(M) if m != k]
    logits = [
        [-s * volume_bf([zv[k, i]] + [zv[m, j] for m in others], eps) for j in range(n)]
        for i in range(n)
    ]
    rows = sum(_ce(torch.stack(logits[i]), i) for i in range(n)) / n
    cols = sum(_ce(torch.stack([logits[i][j] for i in range(n)]), j) for j in range(n)) / n
    terms[f"{k}->rest"] = rows
    terms[f"rest->{k}"] = cols
    return _mean_terms(terms, z, s)


# ---------------------------------------------------------------------------------------------
# helpers


def rand_z(M, N, D, seed=0, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(M, N, D, generator=g, dtype=dtype), dim=-1)


def rand_mask(M, N, seed=0, p=0.7):
    g = torch.Generator().manual_seed(seed + 1000)
    m = torch.rand(M, N, generator=g) < p
    m[:, :2] = True  # every term has >= 2 complete samples
    return m


def grads(loss, inputs):
    return torch.autograd.grad(loss, inputs, allow_unused=True)


def assert_match(out, ref, z, s, atol=1e-10):
    ref_loss, ref_terms = ref
    assert isinstance(out, ObjectiveOutput)
    assert out.loss.dim() == 0
    assert set(out.terms) == set(ref_terms)
    for k in ref_terms:
        torch.testing.assert_close(out.terms[k], ref_terms[k], atol=atol, rtol=0)
    torch.testing.assert_close(out.loss, ref_loss, atol=atol, rtol=0)
    g1 = grads(out.loss, [z, s])
    g2 = grads(ref_loss, [z, s])
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


def leaf(z, s=3.0):
    return z.clone().requires_grad_(), torch.tensor(s, dtype=z.dtype, requires_grad=True)


SIZES = [(2, 6, 3), (3, 6, 4), (5, 5, 3)]


# ---------------------------------------------------------------------------------------------
# each objective vs its brute-force reference


@pytest.mark.parametrize("M,N,D", SIZES)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"detach_anchor": False},
        {"detach_anchor": False, "normalize_anchor": True},
        {"normalize_anchor": True, "chunk_size": 4},
    ],
)
def test_centrobind_matches_bruteforce(M, N, D, masked, opts):
    z, s = leaf(rand_z(M, N, D, seed=M))
    mask = rand_mask(M, N, seed=M) if masked else None
    out = CentroBind(centroid="full", **opts)(z, s, mask=mask)
    ref = centrobind_bf(
        z,
        s,
        mask,
        detach=opts.get("detach_anchor", True),
        normalize=opts.get("normalize_anchor", False),
    )
    assert_match(out, ref, z, s)


@pytest.mark.parametrize("M,N,D", SIZES)
def test_centrobind_fixed_weights(M, N, D):
    z, s = leaf(rand_z(M, N, D, seed=7))
    mask = rand_mask(M, N, seed=7)
    w = [float(i + 1) for i in range(M)]
    out = CentroBind(centroid="full", weights=w, detach_anchor=False)(z, s, mask=mask)
    assert_match(out, centrobind_bf(z, s, mask, weights=w, detach=False), z, s)


@pytest.mark.parametrize("M,N,D", SIZES)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"detach_anchor": False},
        {"detach_anchor": False, "normalize_anchor": True, "chunk_size": 2},
        {"normalize_anchor": True, "chunk_size": 4},
        {"weights": "fixed"},
        {"weights": "fixed", "detach_anchor": False, "chunk_size": 3},
    ],
)
@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.7])
def test_centrobind_leave_one_out_matches_bruteforce(M, N, D, masked, opts, alpha):
    z, s = leaf(rand_z(M, N, D, seed=M + 20))
    mask = None
    if masked:
        mask = rand_mask(M, N, seed=M + 20)
        mask[:, 2] = False
        mask[0, 2] = True  # sample 2 has modality 0 only: no anchor for term 0
    opts = dict(opts)
    w = None
    if opts.pop("weights", None) == "fixed":
        w = [0.0] + [float(i + 1) for i in range(1, M)]  # a zero weight never forms an anchor
    out = CentroBind(self_weight=alpha, weights=w, **opts)(z, s, mask=mask)
    ref = centrobind_loo_bf(
        z,
        s,
        mask,
        weights=w,
        detach=opts.get("detach_anchor", True),
        normalize=opts.get("normalize_anchor", False),
        alpha=alpha,
    )
    assert_match(out, ref, z, s)


def agreement_bf(z, mask, floor=1e-3):
    """``w[m][n] = max(cos(z_mn, mean of the other present z_kn), 0) + floor`` by loops."""
    M, N, _ = z.shape
    w = [[floor] * N for _ in range(M)]
    for m in range(M):
        for n in range(N):
            others = [z[k, n] for k in range(M) if k != m and (mask is None or bool(mask[k, n]))]
            if others:
                c = torch.stack(others).mean(0)
                cos = float(z[m, n] @ c) / (float(z[m, n].norm()) * float(c.norm()))
                w[m][n] = max(cos, 0.0) + floor
    return w


@pytest.mark.parametrize("M,N,D", SIZES)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 0.25])
def test_centrobind_agreement_weights_match_bruteforce(M, N, D, masked, alpha):
    z, s = leaf(rand_z(M, N, D, seed=M + 40))
    mask = rand_mask(M, N, seed=M + 40) if masked else None
    out = CentroBind(self_weight=alpha, agreement=True)(z, s, mask=mask)
    w = agreement_bf(z.detach(), mask)
    assert_match(out, centrobind_loo_bf(z, s, mask, alpha=alpha, sample_weights=w), z, s)
    plain = CentroBind(self_weight=alpha)(z, s, mask=mask).loss
    # two modalities agree with each other equally: the weights change nothing there
    assert torch.allclose(out.loss, plain) == (M == 2)
    with pytest.raises(ValueError, match="per sample"):
        CentroBind(agreement=True, weights=[1.0] * M)


def test_centrobind_leave_one_out_hand_check():
    """M = 2: the anchor of each modality is the other one (detached), i.e. CLIP's loss value."""
    z, s = leaf(rand_z(2, 7, 3, seed=5))
    out = CentroBind(centroid="leave_one_out")(z, s)
    torch.testing.assert_close(out.terms["c-0"], nce_sym_bf(z[1], z[0], s))
    torch.testing.assert_close(out.terms["c-1"], nce_sym_bf(z[0], z[1], s))
    full = CentroBind(centroid="full")(z, s)
    assert not torch.allclose(out.loss, full.loss)  # the paper's form is a different loss
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, :5] = False  # samples 0..4 only have modality 0: term 0 keeps samples 5, 6
    out = CentroBind(centroid="leave_one_out")(z, s, mask=mask)
    torch.testing.assert_close(out.terms["c-0"], nce_sym_bf(z[1, 5:], z[0, 5:], s))
    mask[1, 5] = False
    assert sorted(CentroBind(centroid="leave_one_out")(z, s, mask=mask).terms) == []


def test_centrobind_self_weight_aliases_and_default():
    """alpha = 1 is the paper's full centroid, alpha = 0 leave-one-out; the default is 0.25."""
    z, s = leaf(rand_z(3, 9, 4, seed=11))
    mask = rand_mask(3, 9, seed=11)
    full, one = (
        CentroBind(centroid="full")(z, s, mask=mask),
        CentroBind(self_weight=1)(z, s, mask=mask),
    )
    torch.testing.assert_close(full.loss, one.loss)
    torch.testing.assert_close(full.loss, centrobind_bf(z, s, mask)[0])
    loo = CentroBind(centroid="leave_one_out")(z, s, mask=mask)
    torch.testing.assert_close(loo.loss, CentroBind(self_weight=0.0)(z, s, mask=mask).loss)
    assert CentroBind().self_weight == 0.25 and CentroBind().centroid == "self_weight"
    torch.testing.assert_close(
        CentroBind()(z, s, mask=mask).loss, centrobind_loo_bf(z, s, mask, alpha=0.25)[0]
    )
    assert CentroBind(centroid="full", self_weight=1.0).self_weight == 1.0  # agreeing: fine
    for bad in (
        {"centroid": "full", "self_weight": 0.25},
        {"centroid": "leave_one_out", "self_weight": 1},
    ):
        with pytest.raises(ValueError, match="conflicts"):
            CentroBind(**bad)
    for bad_alpha in (-0.1, 1.5):
        with pytest.raises(ValueError, match="self_weight"):
            CentroBind(self_weight=bad_alpha)


@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("alpha", [0.0, 0.25])
def test_centrobind_leave_one_out_learned_weights(detach, alpha):
    obj = CentroBind(
        self_weight=alpha, weights="learned", num_modalities=3, detach_anchor=detach
    ).double()
    with torch.no_grad():
        obj.weight_logits.copy_(torch.tensor([0.3, -0.2, 0.5]))
    z, s = leaf(rand_z(3, 8, 4, seed=6))
    mask = rand_mask(3, 8, seed=6)
    w = torch.softmax(obj.weight_logits.detach(), 0).tolist()
    out = obj(z, s, mask=mask)
    assert_match(out, centrobind_loo_bf(z, s, mask, weights=w, detach=detach, alpha=alpha), z, s)
    obj(z, s, mask=mask).loss.backward()
    g = obj.weight_logits.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("M,N,D", SIZES)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("anchor", [0, -1])
def test_fixed_anchor_matches_bruteforce(M, N, D, masked, anchor):
    z, s = leaf(rand_z(M, N, D, seed=11))
    mask = rand_mask(M, N, seed=11) if masked else None
    k = anchor % M
    out = FixedAnchor(anchor=anchor)(z, s, mask=mask)
    assert_match(out, pairs_bf(z, s, [(k, m) for m in range(M) if m != k], mask), z, s)


@pytest.mark.parametrize("M,N,D", SIZES)
@pytest.mark.parametrize("masked", [False, True])
def test_all_pairs_matches_bruteforce(M, N, D, masked):
    z, s = leaf(rand_z(M, N, D, seed=13))
    mask = rand_mask(M, N, seed=13) if masked else None
    pairs = [(a, b) for a in range(M) for b in range(a + 1, M)]
    assert_match(AllPairs(chunk_size=4)(z, s, mask=mask), pairs_bf(z, s, pairs, mask), z, s)


@pytest.mark.parametrize("M,N,D", [(2, 6, 3), (3, 5, 4), (5, 4, 3)])
@pytest.mark.parametrize("masked", [False, True])
def test_symile_n_squared_matches_bruteforce(M, N, D, masked):
    z, s = leaf(rand_z(M, N, D, seed=17))
    mask = rand_mask(M, N, seed=17, p=0.8) if masked else None
    out = Symile("n_squared")(z, s, mask=mask)
    assert_match(out, symile_bf(z, s, mask), z, s)


@pytest.mark.parametrize("M,N,D", SIZES)
@pytest.mark.parametrize("masked", [False, True])
def test_symile_n_matches_bruteforce(M, N, D, masked):
    z, s = leaf(rand_z(M, N, D, seed=19))
    mask = rand_mask(M, N, seed=19, p=0.8) if masked else None
    n = N if mask is None else int(mask.all(0).sum())
    g = torch.Generator().manual_seed(5)
    perms = torch.stack(
        [torch.stack([torch.randperm(n, generator=g) for _ in range(M - 1)]) for _ in range(M)]
    )
    out = Symile("n")(z, s, mask=mask, permutations=perms)
    assert_match(out, symile_bf(z, s, mask, perms=perms), z, s)
    # the generator route draws exactly these permutations
    out2 = Symile("n", generator=torch.Generator().manual_seed(5))(z, s, mask=mask)
    torch.testing.assert_close(out2.loss, out.loss, atol=0, rtol=0)


@pytest.mark.parametrize("M,N,D", SIZES)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("anchor", [0, 1])
def test_gram_matches_bruteforce(M, N, D, masked, anchor):
    z, s = leaf(rand_z(M, N, D + 2, seed=23))  # D >= M so volumes are not all 0
    mask = rand_mask(M, N, seed=23, p=0.8) if masked else None
    out = Gram(anchor=anchor)(z, s, mask=mask)
    assert_match(out, gram_bf(z, s, anchor, mask), z, s)


# ---------------------------------------------------------------------------------------------
# hand-checkable cases


def _aligned(M, N):
    """All modalities equal, rows distinct one-hot vectors."""
    return torch.eye(N, dtype=DT)[None].repeat(M, 1, 1)


# GRAM only at M = 2: equal non-anchor modalities span no volume (V = 0 for every pair).
@pytest.mark.parametrize(
    "name, M",
    [
        (n, m)
        for n in ("centrobind", "fixed_anchor", "all_pairs", "symile", "gram")
        for m in (2, 3, 4)
        if n != "gram" or m == 2
    ],
)
def test_aligned_embeddings_give_near_zero_loss(name, M):
    # (Symile's "n" sampling can draw the positive tuple as a negative: use "n_squared")
    obj = make_objective(name, **({"negative_sampling": "n_squared"} if name == "symile" else {}))
    out = obj(_aligned(M, 6), 50.0)
    assert float(out.loss) < 1e-15 + 6 * math.exp(-50 * (0.99 if name == "gram" else 1.0))


@pytest.mark.parametrize("name", ["centrobind", "fixed_anchor", "all_pairs", "symile", "gram"])
@pytest.mark.parametrize("M", [2, 3, 5])
def test_identical_samples_give_log_n(name, M):
    N = 7
    v = F.normalize(torch.randn(M, 1, 5, dtype=DT), dim=-1)
    out = make_objective(name)(v.expand(M, N, 5).contiguous(), 10.0)
    torch.testing.assert_close(out.loss, torch.tensor(math.log(N), dtype=DT))
    for t in out.terms.values():
        torch.testing.assert_close(t, torch.tensor(math.log(N), dtype=DT))


def test_gram_two_modalities_is_sine():
    z = rand_z(2, 6, 4, seed=3)
    cos = z[0] @ z[1].T
    V = gram_volumes(z[0], z[1:], eps=0.0)
    torch.testing.assert_close(V, torch.sqrt(1 - cos**2), atol=1e-12, rtol=0)
    s = 4.0
    logits = -s * torch.sqrt((1 - cos**2).clamp_min(1e-6))
    lab = torch.arange(6)
    expect = (F.cross_entropy(logits, lab) + F.cross_entropy(logits.T, lab)) / 2
    torch.testing.assert_close(Gram()(z, s).loss, expect)


@pytest.mark.parametrize("name", ["all_pairs", "fixed_anchor"])
def test_two_modalities_is_clip(name):
    z, s = leaf(rand_z(2, 9, 5, seed=4))
    logits = s * z[0] @ z[1].T
    lab = torch.arange(9)
    clip = (F.cross_entropy(logits, lab) + F.cross_entropy(logits.T, lab)) / 2
    out = make_objective(name)(z, s)
    torch.testing.assert_close(out.loss, clip)
    for a, b in zip(grads(out.loss, [z, s]), grads(clip, [z, s]), strict=True):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------------------------
# Symile vs the symile package


@pytest.mark.parametrize("M", [3, 4])
def test_symile_n_squared_matches_package(M):
    z, s = leaf(rand_z(M, 6, 8, seed=M))
    ours = Symile("n_squared")(z, s).loss
    theirs = SymilePackage("n_squared")(list(z), s)
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
    for a, b in zip(grads(ours, [z, s]), grads(theirs, [z, s]), strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("M", [2, 3, 5])
def test_symile_n_matches_package_with_same_seed(M):
    z, s = leaf(rand_z(M, 10, 8, seed=M))
    torch.manual_seed(123)
    theirs = SymilePackage("n")(list(z), s)
    torch.manual_seed(123)
    ours = Symile("n")(z, s).loss
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
    for a, b in zip(grads(ours, [z, s]), grads(theirs, [z, s]), strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    torch.manual_seed(124)
    other = Symile("n")(z, s).loss
    assert abs(other.item() - theirs.item()) > 1e-6  # permutations matter: the test can fail


# ---------------------------------------------------------------------------------------------
# GRAM volumes: Schur/adjugate vs brute-force determinants, degenerate inputs


@pytest.mark.parametrize("M", [2, 3, 4, 5, 7])
def test_gram_volumes_match_determinants(M):
    z = rand_z(M, 5, M + 1, seed=M)
    z[2 % M, 3] = z[1, 3]  # a singular candidate block (for M > 2)
    V = gram_volumes(z[0], z[1:], eps=0.0)
    for i in range(5):
        for j in range(5):
            G = torch.stack([z[0, i]] + [z[m, j] for m in range(1, M)])
            det = torch.linalg.det(G @ G.T).clamp_min(0)
            torch.testing.assert_close(V[i, j], det.sqrt(), atol=1e-7, rtol=0)


def test_adjugate_matches_inverse():
    g = torch.Generator().manual_seed(0)
    for L in range(1, 7):
        X = torch.randn(4, L, L + 2, generator=g, dtype=DT)
        B = X @ X.transpose(1, 2)
        adj, det = adjugate_det(B)
        torch.testing.assert_close(det, torch.linalg.det(B))
        torch.testing.assert_close(adj, det[:, None, None] * torch.linalg.inv(B))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("M", [2, 3, 4])
def test_gram_nearly_collinear_has_finite_gradients(dtype, M):
    base = F.normalize(torch.randn(1, 6, 5, dtype=dtype), dim=-1)
    z = F.normalize(base + 1e-7 * torch.randn(M, 6, 5, dtype=dtype), dim=-1)
    z[:, 3] = z[0, 3]  # exactly collinear too
    z.requires_grad_()
    s = torch.tensor(20.0, dtype=dtype, requires_grad=True)
    out = Gram()(z, s)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert torch.isfinite(z.grad).all() and torch.isfinite(s.grad)


# ---------------------------------------------------------------------------------------------
# missing modalities


@pytest.mark.parametrize("name", ["centrobind", "fixed_anchor", "all_pairs", "symile", "gram"])
def test_masked_equals_subset_when_rows_are_complete(name):
    """Masking whole samples out = dropping them; NaN in absent rows never leaks."""
    z = rand_z(3, 9, 4, seed=31)
    keep = torch.tensor([1, 1, 0, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    mask = keep[None].expand(3, 9)
    zn = z.clone()
    zn[:, ~keep] = float("nan")
    zn.requires_grad_()
    opts = {"generator": torch.Generator().manual_seed(0)} if name == "symile" else {}
    out = make_objective(name, **opts)(zn, 5.0, mask=mask)
    opts = {"generator": torch.Generator().manual_seed(0)} if name == "symile" else {}
    ref = make_objective(name, **opts)(z[:, keep], 5.0)
    torch.testing.assert_close(out.loss, ref.loss)
    out.loss.backward()
    assert torch.isfinite(zn.grad).all()
    assert (zn.grad[:, ~keep] == 0).all()


def test_terms_with_fewer_than_two_samples_are_absent():
    z, s = leaf(rand_z(3, 6, 4))
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[2, 1:] = False  # modality 2 present for one sample only
    assert sorted(CentroBind()(z, s, mask=mask).terms) == ["c-0", "c-1"]
    assert sorted(AllPairs()(z, s, mask=mask).terms) == ["0-1"]
    assert sorted(FixedAnchor(anchor=2)(z, s, mask=mask).terms) == []
    assert Symile()(z, s, mask=mask).terms == {}
    assert Gram()(z, s, mask=mask).terms == {}
    # no term: a graph-connected zero
    for obj in [FixedAnchor(anchor=2), Symile(), Gram()]:
        out = obj(z, s, mask=mask)
        assert out.loss.item() == 0.0 and out.loss.requires_grad
        gz, gs = grads(out.loss, [z, s])
        assert (gz == 0).all() and gs == 0


def test_centrobind_anchor_uses_present_modalities_only():
    z = torch.tensor(
        [[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]], [[9.0, 9.0], [1.0, 1.0]]], dtype=DT
    )
    mask = torch.tensor([[True, True], [True, True], [False, True]])
    from centrobind.objectives.centrobind import centroid_anchor

    c = centroid_anchor(z.masked_fill(~mask[..., None], 0), mask)
    torch.testing.assert_close(c, torch.tensor([[0.5, 0.5], [2 / 3, 2 / 3]], dtype=DT))


# ---------------------------------------------------------------------------------------------
# inputs, options and the registry


def test_dict_input_names_and_anchor():
    z = rand_z(3, 8, 4)
    d = {"img": z[0], "txt": z[1], "aud": z[2]}
    mask = {
        "img": torch.ones(8, dtype=torch.bool),
        "txt": torch.ones(8, dtype=torch.bool),
        "aud": torch.arange(8) < 5,
    }
    out = CentroBind()(d, 5.0, mask=mask)
    assert sorted(out.terms) == ["c-aud", "c-img", "c-txt"]
    ref = CentroBind()(z, 5.0, mask=torch.stack(list(mask.values())))
    torch.testing.assert_close(out.loss, ref.loss)
    assert sorted(FixedAnchor(anchor="txt")(d, 5.0).terms) == ["txt-aud", "txt-img"]
    assert sorted(Gram(anchor="aud")(d, 5.0).terms) == ["aud->rest", "rest->aud"]
    assert sorted(AllPairs()(d, 5.0).terms) == ["img-aud", "img-txt", "txt-aud"]
    with pytest.raises(ValueError, match="unknown modality"):
        FixedAnchor(anchor="video")(d, 5.0)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_float_and_tensor_logit_scale(name):
    z = rand_z(3, 6, 4).requires_grad_()
    mk = (
        (lambda: make_objective(name, generator=torch.Generator().manual_seed(0)))
        if name == "symile"
        else (lambda: make_objective(name))
    )
    a = mk()(z, 7.0).loss
    s = torch.tensor(7.0, dtype=DT, requires_grad=True)
    b = mk()(z, s).loss
    torch.testing.assert_close(a, b)
    b.backward()
    assert s.grad is not None and s.grad != 0
    assert z.grad is not None and torch.isfinite(z.grad).all()
    c = mk()(z, torch.tensor([7.0], dtype=torch.float32)).loss  # float32, shape [1]
    torch.testing.assert_close(c, a, atol=1e-6, rtol=0)


def test_learned_weights_get_gradients():
    for detach in (True, False):
        obj = CentroBind(centroid="full", weights="learned", num_modalities=3, detach_anchor=detach)
        z = rand_z(3, 8, 4).float().requires_grad_()
        obj(z, 5.0).loss.backward()
        g = obj.weight_logits.grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    # equal to fixed weights softmax(logits) (with the anchor detached or not)
    obj = CentroBind(centroid="full", weights="learned", num_modalities=3, detach_anchor=False)
    with torch.no_grad():
        obj.weight_logits.copy_(torch.tensor([0.3, -0.2, 0.5]))
    z = rand_z(3, 8, 4)
    w = torch.softmax(torch.tensor([0.3, -0.2, 0.5], dtype=DT), 0).tolist()
    ref = centrobind_bf(z, 5.0, weights=w, detach=False)[0]
    torch.testing.assert_close(obj(z.float(), 5.0).loss.double(), ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="num_modalities"):
        CentroBind(weights="learned")
    with pytest.raises(ValueError, match="configured for 3"):
        obj(rand_z(4, 8, 4).float(), 5.0)


def test_option_validation():
    with pytest.raises(ValueError):
        CentroBind(weights=[1.0, -1.0])
    with pytest.raises(ValueError):
        CentroBind(weights="uniform")
    with pytest.raises(ValueError, match="centroid"):
        CentroBind(centroid="median")
    with pytest.raises(ValueError):
        Symile("n_cubed")
    with pytest.raises(ValueError, match="2 modalities"):
        AllPairs()(rand_z(1, 4, 3), 1.0)
    with pytest.raises(ValueError, match=r"\[M, N\]"):
        AllPairs()(rand_z(2, 4, 3), 1.0, mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[M, N, D\]"):
        AllPairs()(torch.zeros(4, 3), 1.0)
    with pytest.raises(ValueError, match="permutations"):
        Symile()(rand_z(3, 4, 3), 1.0, permutations=torch.zeros(3, 2, 5, dtype=torch.long))


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_non_finite_present_embeddings_raise(name):
    z = rand_z(3, 6, 4)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 4] = False
    for bad in (float("nan"), float("inf"), -float("inf")):
        zb = z.clone()
        zb[2, 3, 1] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            make_objective(name)(zb, 5.0, mask=mask)
        with pytest.raises(ValueError, match="NaN or inf"):
            make_objective(name)(zb.float(), 5.0)
        zb = z.clone()
        zb[1, 4] = bad  # absent: allowed, never reaches the loss
        assert torch.isfinite(make_objective(name)(zb, 5.0, mask=mask).loss)
    huge = z * 1e300  # finite, but its sum overflows: not an error
    assert make_objective(name)(huge, 5.0).loss is not None


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
@pytest.mark.parametrize("scale", [float("nan"), float("inf"), 0.0, -1.0])
def test_bad_logit_scale_raises(name, scale):
    z = rand_z(3, 6, 4)
    with pytest.raises(ValueError, match="logit_scale"):
        make_objective(name)(z, scale)
    with pytest.raises(ValueError, match="logit_scale"):
        make_objective(name)(z, torch.tensor(scale, requires_grad=True))


def test_make_objective_registry():
    assert set(OBJECTIVES) == {"centrobind", "fixed_anchor", "all_pairs", "symile", "gram"}
    z = rand_z(3, 6, 4)
    for name in OBJECTIVES:
        obj = make_objective(name)
        assert isinstance(obj, Objective) and isinstance(obj, OBJECTIVES[name])
        assert torch.isfinite(obj(z, 5.0).loss)
    assert make_objective("fixed_anchor", anchor=2).anchor == 2
    assert make_objective("centrobind", chunk_size=3, detach_anchor=False).chunk_size == 3
    with pytest.raises(ValueError, match="centrobind, fixed_anchor, all_pairs, symile, gram"):
        make_objective("clip")
    with pytest.raises(TypeError):
        make_objective("gram", chunk_size=4)
    assert Symile.requires_all_modalities and Gram.requires_all_modalities
    assert not CentroBind.requires_all_modalities


# ---------------------------------------------------------------------------------------------
# batched implementation: the number of executed ops does not grow with N


def _count_ops(fn):
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.n


@pytest.mark.parametrize("name", [*sorted(OBJECTIVES), "centrobind_loo"])
def test_no_python_loop_over_samples(name):
    def run(N):
        z = rand_z(4, N, 6).requires_grad_()
        mask = torch.ones(4, N, dtype=torch.bool)
        mask[1, 0] = False
        opts = {"generator": torch.Generator().manual_seed(0)} if name == "symile" else {}
        if name == "centrobind_loo":
            name_, opts = "centrobind", {"centroid": "leave_one_out", "weights": [0, 1, 2, 3]}
        else:
            name_ = name

        def go():
            make_objective(name_, **opts)(z, 5.0, mask=mask).loss.backward()

        return go

    assert _count_ops(run(8)) == _count_ops(run(24))


@pytest.mark.parametrize("name", ["centrobind", "all_pairs", "fixed_anchor", "symile", "gram"])
def test_backward_under_bf16_autocast(name):
    """The trainer runs the step under bf16 autocast on CUDA; CPU autocast reproduces the dtype
    mix that once broke the fused kernel's backward (bf16 products saved, fp32 in backward)."""
    torch.manual_seed(0)
    z = F.normalize(torch.randn(3, 16, 8), dim=-1).requires_grad_()
    obj = make_objective(name)
    ref = obj(z, 5.0).loss
    (g_ref,) = torch.autograd.grad(ref, z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = obj(z, 5.0).loss
    (g,) = torch.autograd.grad(out, z)
    assert torch.isfinite(g).all()
    assert abs(float(out) - float(ref)) < 0.05
    assert float((g - g_ref).abs().max()) < 0.05
