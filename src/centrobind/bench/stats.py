"""Statistics and wording shared by every suite's report section: mean +- std over seeds
(:func:`aggregate`), comparisons that state which side is ahead and whether the gap exceeds one
standard deviation (:func:`compare`), one-line findings (:func:`standing`) and markdown tables.

Metric keys in a row (all test-split figures; retrieval in percent, R^2 in [.., 1]):
``R@1``/``R@5`` mean cross-modal over all ordered pairs; ``R@1_excl/<k>`` over the pairs involving
neither modality k; ``pair/<a>-><b>`` R@1 of one pair; ``loo_R@1`` and ``loo/<b>`` leave-one-out
retrieval (query = the other modalities fused; Symile: their elementwise product, scored by MIP);
``probe/<task>/<view>`` linear-probe accuracy (view = a modality or ``fused``);
``r2/<group>/<view>`` latent recovery; ``seconds`` training (or fitting) wall time; ``epochs``
epochs run; ``step_ms`` mean time of a training step; ``peak_mib`` peak memory of one training
step; optionally ``logit_scale`` (the scale a method trained with).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DESIGN_KEYS",
    "REFERENCE",
    "Agg",
    "Comparison",
    "Stat",
    "aggregate",
    "best_of",
    "compare",
    "describe_variant",
    "fixed_anchors",
    "fmt",
    "markdown_table",
    "methods_in",
    "scale_column",
    "seeds_text",
    "setting_labels",
    "settings_of",
    "standing",
    "stats_of",
]

Stat = tuple[float, float, int]  # (mean, std over seeds with ddof=1, number of seeds)
Agg = dict[tuple[str, str, str], dict[str, Stat]]

ID_KEYS = ("suite", "setting", "method", "seed")
#: Row keys that describe a job's data rather than a result. Where one (suite, setting) holds
#: several rows per method and seed (a sweep), :func:`aggregate` splits the setting by the one of
#: these that varies, so a mean over sweep levels is never shown as if it were seed variance.
DESIGN_KEYS = ("noise_m1", "p")
#: The method every finding is stated against (``meta["reference_method"]`` overrides it).
REFERENCE = "CentroBind"


# --------------------------------------------------------------------------- aggregation


def _sweep_key(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """The design key that varies within one (suite, setting) that repeats a (method, seed)."""
    seen: set[tuple] = set()
    repeated = False
    for r in rows:
        ident = (r["method"], r["seed"])
        repeated |= ident in seen
        seen.add(ident)
    if not repeated:
        return None
    for key in DESIGN_KEYS:
        if len({r.get(key) for r in rows}) > 1:
            return key
    return None


def setting_labels(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The setting label of every row: its ``setting``, plus ``" <key>=<value>"`` in a sweep."""
    by_setting: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by_setting[(r["suite"], r["setting"])].append(r)
    keys = {k: _sweep_key(v) for k, v in by_setting.items()}
    out = []
    for r in rows:
        key = keys[(r["suite"], r["setting"])]
        v = r.get(key) if key is not None else None
        level = f"{v:g}" if isinstance(v, int | float) else str(v)
        out.append(r["setting"] if key is None else f"{r['setting']} {key}={level}")
    return out


def aggregate(
    rows: Iterable[Mapping[str, Any]],
    derive: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
) -> Agg:
    """``(suite, setting, method) -> {metric: (mean, std, n)}`` (std over seeds, ddof=1).

    A sweep setting (several rows per method and seed) is split per level: its setting becomes
    e.g. ``"sweep noise_m1=0.5"``. ``derive(rows) -> rows`` adds keys first (default: every
    registered suite's :meth:`~centrobind.bench.base.Suite.derive`).
    """
    if derive is None:
        from .suites import derive_all

        derive = derive_all
    rows = derive([dict(r) for r in rows])
    labels = setting_labels(rows)
    groups: dict[tuple[str, str, str], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r, label in zip(rows, labels, strict=True):
        key = (r["suite"], label, r["method"])
        for k, v in r.items():
            if k not in ID_KEYS and isinstance(v, int | float) and not isinstance(v, bool):
                groups[key][k].append(float(v))
    out: Agg = {}
    for key, metrics in groups.items():
        out[key] = {}
        for k, vals in metrics.items():
            n = len(vals)
            mean = sum(vals) / n
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
            out[key][k] = (mean, std, n)
    return out


def fmt(stat: Stat | None, digits: int = 1, sign: bool = False) -> str:
    """``mean ± std`` (just ``mean`` for one seed; ``–`` when missing)."""
    if stat is None:
        return "–"
    mean, std, n = stat
    if round(mean, digits) == 0:
        mean = 0.0  # never print "-0.0"
    m = f"{mean:+.{digits}f}" if sign else f"{mean:.{digits}f}"
    return f"{m} ± {std:.{digits}f}" if n > 1 else m


# --------------------------------------------------------------------------- comparisons


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` on one metric (higher is better).

    ``winner`` is None when the means are equal at the printed precision. ``noise`` is the larger
    of the two standard deviations over seeds (None with a single seed: no spread estimate);
    the gap is "within noise" when it is no larger than that.
    """

    a: str
    sa: Stat
    b: str
    sb: Stat
    digits: int = 1

    @property
    def gap(self) -> float:
        """``mean(a) - mean(b)`` of the means as printed (rounded to ``digits``), so the stated
        gap is always the difference of the two numbers shown."""
        return round(round(self.sa[0], self.digits) - round(self.sb[0], self.digits), self.digits)

    @property
    def winner(self) -> str | None:
        if self.gap == 0:
            return None
        return self.a if self.gap > 0 else self.b

    @property
    def noise(self) -> float | None:
        if min(self.sa[2], self.sb[2]) < 2:
            return None
        return max(self.sa[1], self.sb[1])

    @property
    def within_noise(self) -> bool | None:
        """True/False; None without a spread estimate (one seed)."""
        if self.noise is None:
            return None
        return abs(self.gap) <= self.noise

    def verdict(self, seed_note: bool = True) -> str:
        """E.g. ``"AllPairs ahead by 1.3, more than one std (0.4)"``. ``seed_note=False`` leaves
        out the "one seed: no spread estimate" note (for a sentence that states it once)."""
        d = self.digits
        if self.winner is None:
            return f"equal at this precision ({self.sa[0]:.{d}f})"
        lead = f"{self.winner} ahead by {abs(self.gap):.{d}f}"
        if self.noise is None:
            return f"{lead}, one seed: no spread estimate" if seed_note else lead
        noise = f"{self.noise:.{d}f}" if round(self.noise, d) > 0 else f"< {0.5 * 10**-d:.{d + 1}f}"
        if self.within_noise:
            return f"{lead}, within noise (one std is {noise})"
        return f"{lead}, more than one std ({noise})"

    def sentence(self, sign: bool = False) -> str:
        """``"<a> <mean ± std> vs <b> <mean ± std>: <verdict>"``."""
        d = self.digits
        a, b = fmt(self.sa, d, sign), fmt(self.sb, d, sign)
        return f"{self.a} {a} vs {self.b} {b}: {self.verdict()}"


def compare(a: str, sa: Stat, b: str, sb: Stat, digits: int = 1) -> Comparison:
    """Compare two ``(mean, std, n)`` statistics; see :class:`Comparison`."""
    return Comparison(a, tuple(sa), b, tuple(sb), digits)  # type: ignore[arg-type]


def seeds_text(n: int) -> str:
    """``"1 seed"``, ``"3 seeds"``."""
    return f"{n} seed" + ("" if n == 1 else "s")


def standing(
    stats: Mapping[str, Mapping[str, Stat]],
    metric: str,
    label: str,
    ref: str = REFERENCE,
    digits: int = 1,
    list_ahead: int = 3,
    sign: bool = False,
) -> str | None:
    """One line: where ``ref`` stands among ``stats`` (``{method: {metric: stat}}``) on
    ``metric``: its rank, the (at most ``list_ahead``) methods ahead of it with their gap and
    whether it exceeds one std, and the closest method behind it. None without ``ref``."""
    if ref not in stats or metric not in stats[ref]:
        return None
    sr = stats[ref][metric]
    cmps = [
        compare(m, st[metric], ref, sr, digits)
        for m, st in stats.items()
        if m != ref and metric in st
    ]
    if not cmps:
        return None

    def gap(c: Comparison) -> str:
        if c.noise is None:
            tag = "one seed"
        else:
            tag = "within noise" if c.within_noise else "beyond noise"
        return f"{c.a} {c.sa[0]:.{digits}f} ({c.gap:+.{digits}f}, {tag})"

    ahead = sorted((c for c in cmps if c.winner == c.a), key=lambda c: -c.gap)
    equal = [c for c in cmps if c.winner is None]
    behind = sorted((c for c in cmps if c.winner == ref), key=lambda c: -c.gap)
    text = f"{label}: {ref} {fmt(sr, digits, sign)}, rank {len(ahead) + 1} of {len(cmps) + 1}"
    if ahead:
        shown = ", ".join(gap(c) for c in ahead[:list_ahead])
        more = f" and {len(ahead) - list_ahead} more" if len(ahead) > list_ahead else ""
        text += f"; ahead of it: {shown}{more}"
    if equal:
        text += "; level: " + ", ".join(c.a for c in equal)
    if behind:
        text += f"; next behind: {gap(behind[0])}"
    return text + "."


def fixed_anchors(stats: Mapping[str, Any]) -> list[str]:
    """The plain ``FixedAnchor(k)`` methods among ``stats`` (no variants)."""
    return [m for m in stats if re.fullmatch(r"FixedAnchor\([^)]*\)", m)]


def best_of(
    stats: Mapping[str, Mapping[str, Stat]], methods: Sequence[str], metric: str
) -> str | None:
    """The method of ``methods`` with the highest mean ``metric`` (None if none has it)."""
    have = [m for m in methods if metric in stats.get(m, {})]
    return max(have, key=lambda m: stats[m][metric][0]) if have else None


# --------------------------------------------------------------------------- method variants

_TAGS = {
    "grad": "gradient through the centroid",
    "detach": "no gradient through the centroid",
    "norm": "L2-normalised centroid",
    "unnorm": "unnormalised centroid",
    "learned-w": "learned softmax modality weights (gradient through the anchor)",
    "no-pretrain": "anchor encoder not pre-trained (a random frozen encoder)",
    "paper": "the paper's full centroid (self_weight 1)",
    "loo": "leave-one-out centroid (self_weight 0)",
    "learned-scale": "learnable logit scale from the chosen value, clamped to at most 2x",
    "official": "the authors' recipe: label smoothing 0.1, learned temperature from 0.07, "
    "no-grad gather (no ITM head)",
}


def describe_variant(name: str, ref: str = REFERENCE) -> str:
    """What a method name's suffix says it changes, e.g. ``CentroBind[grad,norm]`` ->
    "gradient through the centroid, L2-normalised centroid". Unknown tags are quoted."""
    if name == ref:
        return "the default (reference)"
    m = re.fullmatch(r"(?P<base>[^\[+]+(?:\([^)]*\))?)(?:\[(?P<tags>[^\]]*)\])?(?P<rest>.*)", name)
    if m is None:
        return name
    bits: list[str] = []
    if m["base"] != ref:
        bits.append(f"{m['base']} instead of {ref}")
    for tag in (m["tags"] or "").split(","):
        tag = tag.strip()
        if not tag:
            continue
        if tag in _TAGS:
            bits.append(_TAGS[tag])
        elif re.fullmatch(r"lr[0-9.e-]+", tag):
            bits.append(f"learning rate {tag[2:]}")
        elif re.fullmatch(r"s=?[0-9.]+", tag):
            bits.append(f"logit scale {tag.lstrip('s=')}")
        else:
            bits.append(f"'{tag}'")
    intra = re.fullmatch(r"\+intra([0-9.]+)", m["rest"])
    if intra:
        bits.append(f"intra-modal term with weight λ = {intra[1]}")
    elif m["rest"]:
        bits.append(f"'{m['rest']}'")
    return ", ".join(bits) if bits else name


# --------------------------------------------------------------------------- tables


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def methods_in(agg: Agg, suite: str, setting: str) -> list[str]:
    """The methods of one suite/setting, in the order they first appear."""
    seen: list[str] = []
    for s, st, m in agg:
        if s == suite and st == setting and m not in seen:
            seen.append(m)
    return seen


def stats_of(agg: Agg, suite: str, setting: str) -> dict[str, dict[str, Stat]]:
    """``{method: {metric: stat}}`` of one suite/setting."""
    return {m: agg[(suite, setting, m)] for m in methods_in(agg, suite, setting)}


def settings_of(agg: Agg, suite: str) -> list[str]:
    """The settings of ``suite``, in the order they first appear."""
    seen: list[str] = []
    for s, st, _ in agg:
        if s == suite and st not in seen:
            seen.append(st)
    return seen


def scale_column(stats: Mapping[str, Mapping[str, Stat]]) -> bool:
    """Whether any method carries a ``logit_scale`` (the tables then get that column)."""
    return any("logit_scale" in st for st in stats.values())
