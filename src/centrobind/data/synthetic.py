"""Synthetic multimodal data with known latent structure.

Modalities are named ``m1..mM`` (1-based); ``m1`` is the usual anchor. Latent factor groups,
each i.i.d. standard normal:

* ``shared`` (``shared_dim``): seen by every modality;
* ``pair`` (``pair_dim``): seen only by the two modalities in ``pair`` (1-based, never ``m1``;
  default ``(2, 3)`` = ``m2`` and ``m3``);
* ``private_<m>`` (``private_dim``): seen only by modality ``m<m>``.

Modality ``m`` = a fixed random 2-layer tanh MLP of the concatenation of the factors it sees,
standardised per feature, plus Gaussian noise of std ``noise[m]``. Every factor group ``g`` also
gives a label task ``g``: ``n_classes`` balanced quantile bins of a fixed random 1-D projection of
the group's factors. The true factors are kept in ``ds.factors``.

Randomness comes from independent ``numpy`` streams spawned from ``SeedSequence(seed)`` (one per
factor group, per modality map, per modality noise and per label task), so the same arguments give
bit-identical data, and e.g. changing ``noise`` leaves the factors and maps unchanged.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from centrobind.data.dataset import MultimodalDataset
from centrobind.errors import DatasetError

__all__ = ["make_synthetic"]


def _err(msg: str) -> DatasetError:
    return DatasetError(f"synthetic: {msg}")


def _int_param(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise _err(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _per_modality(value: object, name: str, m: int) -> list[object]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != m:
            raise _err(f"{name} has {len(value)} entries but n_modalities={m}")
        return list(value)
    return [value] * m


def make_synthetic(
    n_samples: int = 3000,
    n_modalities: int = 4,
    dims: int | Sequence[int] = 64,
    noise: float | Sequence[float] = 0.1,
    shared_dim: int = 4,
    pair_dim: int = 4,
    private_dim: int = 4,
    pair: tuple[int, int] | None = (2, 3),
    n_classes: int = 4,
    seed: int = 0,
) -> MultimodalDataset:
    """Generate a synthetic dataset (see the module docstring).

    Args:
        n_samples: N.
        n_modalities: M >= 2 (modalities ``m1..mM``).
        dims: D_m, one int for all modalities or a list of M.
        noise: noise std added to the standardised features, one float or a list of M.
        shared_dim, pair_dim, private_dim: factor group sizes (``pair_dim``/``private_dim`` may be
            0 to drop those groups).
        pair: the two non-anchor modalities (1-based, in ``2..M``) that see the ``pair`` factor;
            None drops the pair factor (required when ``n_modalities == 2`` and ``pair_dim > 0``).
        n_classes: classes per label task (balanced).
        seed: random seed.

    Returns:
        ``MultimodalDataset`` named ``"synthetic"``: features ``m<i>`` float32 ``[N, D_i]``,
        factors/labels ``shared``, ``pair``, ``private_1..private_M``.
    """
    m = _int_param(n_modalities, "n_modalities", 2)
    n_classes = _int_param(n_classes, "n_classes", 2)
    n = _int_param(n_samples, "n_samples", n_classes)
    seed = _int_param(seed, "seed", 0)
    shared_dim = _int_param(shared_dim, "shared_dim", 1)
    pair_dim = _int_param(pair_dim, "pair_dim", 0)
    private_dim = _int_param(private_dim, "private_dim", 0)
    dim_list = [_int_param(d, "dims", 1) for d in _per_modality(dims, "dims", m)]
    noise_list = _noise_list(noise, m)
    pair_mods = _pair_modalities(pair, pair_dim, m)

    root = np.random.SeedSequence(seed)
    s_factors, s_maps, s_noise, s_labels = root.spawn(4)
    groups = ["shared", "pair"] + [f"private_{i + 1}" for i in range(m)]
    sizes = [shared_dim, pair_dim if pair_mods else 0] + [private_dim] * m
    factors: dict[str, np.ndarray] = {}
    for g, k, ss in zip(groups, sizes, s_factors.spawn(len(groups)), strict=True):
        if k > 0:
            factors[g] = np.random.default_rng(ss).standard_normal((n, k))

    features = _features(factors, pair_mods, dim_list, noise_list, s_maps, s_noise)
    labels = _labels(factors, groups, n, n_classes, s_labels)
    return MultimodalDataset(
        features,
        labels=labels,
        factors={g: f.astype(np.float32) for g, f in factors.items()},
        name="synthetic",
    )


def _noise_list(noise: object, m: int) -> list[float]:
    """``noise`` (one number or a list of ``m``) as ``m`` finite stds >= 0."""
    noise_list: list[float] = []
    for s in _per_modality(noise, "noise", m):
        if (
            isinstance(s, bool)
            or not isinstance(s, numbers.Real)
            or not np.isfinite(float(s))
            or float(s) < 0
        ):
            raise _err(f"noise must be a finite number >= 0 (or a list of {m}), got {s!r}")
        noise_list.append(float(s))
    return noise_list


def _pair_modalities(pair: object, pair_dim: int, m: int) -> tuple[int, ...]:
    """The 0-based indices of the two modalities that see the pair factor; ``()`` when there is
    no pair factor (``pair`` None or ``pair_dim`` 0)."""
    if pair is None or pair_dim <= 0:
        return ()
    if (
        not isinstance(pair, Sequence)
        or len(pair) != 2
        or not all(isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in pair)
    ):
        raise _err(f"pair must be two 1-based modality numbers, got {pair!r}")
    if m == 2:
        raise _err(
            "n_modalities=2 leaves no two non-anchor modalities for the pair factor; "
            "pass pair=None or pair_dim=0"
        )
    a, b = int(pair[0]), int(pair[1])
    if a == b or not (2 <= a <= m and 2 <= b <= m):
        raise _err(
            f"pair must be two different modality numbers in 2..{m} (1-based, not the "
            f"anchor m1), got {tuple(pair)}"
        )
    return (a - 1, b - 1)


def _features(
    factors: dict[str, np.ndarray],
    pair_mods: tuple[int, ...],
    dims: list[int],
    noise: list[float],
    s_maps: np.random.SeedSequence,
    s_noise: np.random.SeedSequence,
) -> dict[str, np.ndarray]:
    """Modality ``m<i>`` float32 ``[N, D_i]``: a random tanh MLP of the factors it sees,
    standardised per feature, plus noise of std ``noise[i]`` (one seed stream per map and per
    noise draw)."""
    features: dict[str, np.ndarray] = {}
    m = len(dims)
    map_seeds = s_maps.spawn(m)
    noise_seeds = s_noise.spawn(m)
    for i in range(m):
        seen = ["shared"]
        if i in pair_mods:
            seen.append("pair")
        if f"private_{i + 1}" in factors:
            seen.append(f"private_{i + 1}")
        z = np.concatenate([factors[g] for g in seen], axis=1)
        k = z.shape[1]
        hidden = max(32, 4 * k)
        rng = np.random.default_rng(map_seeds[i])
        w1 = rng.standard_normal((k, hidden)) / np.sqrt(k)
        b1 = 0.1 * rng.standard_normal(hidden)
        w2 = rng.standard_normal((hidden, dims[i])) / np.sqrt(hidden)
        x = np.tanh(z @ w1 + b1) @ w2
        x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-12)
        eps = np.random.default_rng(noise_seeds[i]).standard_normal(x.shape)
        features[f"m{i + 1}"] = (x + noise[i] * eps).astype(np.float32)
    return features


def _labels(
    factors: dict[str, np.ndarray],
    groups: list[str],
    n: int,
    n_classes: int,
    s_labels: np.random.SeedSequence,
) -> dict[str, np.ndarray]:
    """Label task per factor group: ``n_classes`` balanced quantile bins (int64 ``[N]``) of a
    random 1-D projection of the group's factors (one seed stream per group in ``groups``)."""
    labels: dict[str, np.ndarray] = {}
    label_seeds = s_labels.spawn(len(groups))
    for g, ss in zip(groups, label_seeds, strict=True):
        if g not in factors:
            continue
        w = np.random.default_rng(ss).standard_normal(factors[g].shape[1])
        order = np.argsort(factors[g] @ w, kind="stable")
        y = np.empty(n, dtype=np.int64)
        y[order] = np.arange(n) * n_classes // n
        labels[g] = y
    return labels
