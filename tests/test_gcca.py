import torch

from centrobind.bench.gcca import GCCA


def _brute_force(views, k, reg):
    """MAX-VAR by the textbook route: top-k eigenvectors of sum_m X_m (X_m^T X_m + rI)^-1 X_m^T."""
    n = next(iter(views.values())).shape[0]
    total = torch.zeros(n, n, dtype=torch.float64)
    for x in views.values():
        xc = x.double() - x.double().mean(0)
        r = reg * float(torch.linalg.svdvals(xc)[0] ** 2)
        total += xc @ torch.linalg.solve(xc.T @ xc + r * torch.eye(x.shape[1], dtype=torch.float64), xc.T)
    evals, evecs = torch.linalg.eigh(total)
    return evecs[:, -k:], evals[-k:]


def test_gcca_matches_brute_force_subspace_and_maps():
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(80, 3, generator=g)
    views = {m: torch.cat([shared, torch.randn(80, 2, generator=g)], 1) @ torch.randn(5, d, generator=g)
             + 0.1 * torch.randn(80, d, generator=g) for m, d in [("a", 7), ("b", 4), ("c", 6)]}
    k = 3
    model = GCCA(k=k, reg=1e-2).fit(views)
    ref, _ = _brute_force(views, k, 1e-2)
    # Same k-dim subspace: the projection matrices agree.
    emb_unnorm = {m: (views[m].double() - model.means[m]) @ model.weights[m] for m in views}
    # W_m regresses view m onto G, so sum_m X_m W_m = (sum_m P_m) G = G diag(eigenvalues)
    total = sum(emb_unnorm.values())
    q = torch.linalg.qr(total)[0]
    assert torch.allclose(q @ q.T, ref @ ref.T, atol=1e-6)
    # the views share a 3-d factor: paired rows land together, unpaired ones do not
    emb = model.transform(views)
    sims = emb["a"] @ emb["b"].T
    assert sims.diagonal().mean() > 0.6
    assert sims.mean() < 0.2
    assert emb["a"].shape == (80, k)
