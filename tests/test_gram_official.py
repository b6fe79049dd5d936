"""Gram[official]: GRAM's own training recipe (label smoothing 0.1, a learnable temperature from
0.07, the other side gathered without gradient), against a hand-computed case and an independent
transcription of the official loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from centrobind.objectives import Gram

OFFICIAL = {"label_smoothing": 0.1, "temperature": 0.07, "no_grad_gather": True}


def test_hand_computed_two_modalities():
    # anchors e1, e2 and candidates e1, e2: V = sqrt(max(1 - cos^2, eps)) is sqrt(eps) on the
    # diagonal and 1 off it; each row is a 2-way softmax with margin d = (1 - sqrt(eps)) / 0.07.
    # CE with smoothing 0.1 over 2 classes: -(0.95 log p + 0.05 log(1 - p)), p = sigmoid(d),
    # = log(1 + e^-d) + 0.05 d; both directions and both rows are equal.
    z = torch.stack([torch.eye(2), torch.eye(2)]).double()
    eps = 1e-6
    d = (1 - math.sqrt(eps)) / 0.07
    want = math.log1p(math.exp(-d)) + 0.05 * d
    obj = Gram(eps=eps, **OFFICIAL).double()
    obj.temperature.data.fill_(0.07)  # exactly 0.07 in float64
    out = obj(z, 123.0)  # the passed scale is unused: tau is learned
    assert float(out.loss.detach()) == pytest.approx(want, rel=1e-5)
    assert sorted(out.terms) == ["0->rest", "rest->0"]
    plain = Gram(eps=eps)(z, 1 / 0.07)  # no smoothing: the same margin, CE log(1 + e^-d)
    assert float(plain.loss) == pytest.approx(math.log1p(math.exp(-d)), rel=1e-9)


def _official_loss(z: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """The official ``forward_ret`` area loss on one process, written out independently: the
    volume from ``torch.det`` of the stacked Gram matrix, ``concat_all_gather`` = ``detach``."""
    t, others = z[0], z[1:]

    def volume(a: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
        rows = [a[:, None, :].expand(-1, rest.shape[1], -1)]
        rows += [r[None, :, :].expand(a.shape[0], -1, -1) for r in rest]
        vecs = torch.stack(rows, -2)  # [na, nc, M, D]
        return torch.det(vecs @ vecs.transpose(-1, -2)).abs().sqrt()

    vol = volume(t, others.detach()) / tau
    vol_t = volume(t.detach(), others).T / tau
    target = torch.arange(z.shape[1])
    return (
        F.cross_entropy(-vol, target, label_smoothing=0.1)
        + F.cross_entropy(-vol_t, target, label_smoothing=0.1)
    ) / 2


def test_matches_an_independent_transcription_of_the_official_loss():
    g = torch.Generator().manual_seed(0)
    z0 = F.normalize(torch.randn(3, 6, 5, generator=g, dtype=torch.float64), dim=-1)
    za, zb = z0.clone().requires_grad_(), z0.clone().requires_grad_()
    obj = Gram(eps=1e-12, **OFFICIAL).double()
    ours = obj(za, 1.0).loss
    tau = obj.temperature.detach().clone().requires_grad_()
    ref = _official_loss(zb, tau)
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-9)
    ours.backward()
    ref.backward()
    assert torch.allclose(za.grad, zb.grad, atol=1e-9)
    assert obj.temperature is not None and obj.temperature.grad is not None
    assert float(obj.temperature.grad) == pytest.approx(float(tau.grad), rel=1e-7)
    # the no-grad gather matters: the full-gradient loss has other gradients
    zc = z0.clone().requires_grad_()
    Gram(eps=1e-12, label_smoothing=0.1).double()(zc, 1 / 0.07).loss.backward()
    assert not torch.allclose(zc.grad, za.grad, atol=1e-6)


def test_anchor_rows_get_gradient_only_from_their_own_logits():
    # with the other side a constant, row i's anchor embedding enters only row i of "k->rest"
    z = F.normalize(torch.randn(3, 8, 4, generator=torch.Generator().manual_seed(1)), dim=-1)
    z = z.requires_grad_()
    out = Gram(**OFFICIAL)(z, 1.0)
    (g,) = torch.autograd.grad(out.terms["0->rest"], z)
    assert g[1:].abs().max() == 0  # candidates: no gradient from the anchor's direction
    assert g[0].abs().max() > 0
    (g,) = torch.autograd.grad(out.terms["rest->0"], z)
    assert g[0].abs().max() == 0 and g[1:].abs().max() > 0


def test_learned_scale_and_bad_options():
    obj = Gram(**OFFICIAL)
    assert obj.learned_logit_scale() == pytest.approx(1 / 0.07)
    assert Gram().learned_logit_scale() is None
    with pytest.raises(ValueError):
        Gram(label_smoothing=1.0)
    with pytest.raises(ValueError):
        Gram(temperature=0.0)
