"""Aggregate benchmark rows (mean +- std over seeds) and write results.json, results.csv and
report.md.

Metric keys in a row (all test-split figures; retrieval in percent, R^2 in [.., 1]):
``R@1``/``R@5`` mean cross-modal over all ordered pairs; ``R@1_excl/<k>`` over the pairs involving
neither modality k; ``pair/<a>-><b>`` R@1 of one pair; ``loo_R@1`` and ``loo/<b>`` leave-one-out
retrieval (query = the other modalities fused; Symile: their elementwise product, scored by MIP);
``probe/<task>/<view>`` linear-probe accuracy (view = a modality or ``fused``);
``r2/<group>/<view>`` latent recovery; ``seconds`` training (or fitting) wall time; ``epochs``
epochs run; optionally ``logit_scale`` (the scale a method trained with).

Every finding sentence of the report is generated from the comparison it states
(:func:`compare`): which side is ahead, by how much, and whether the gap is within one standard
deviation over seeds. Nothing in the report depends on which methods happen to win.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..checkpoint import atomic_write_text

__all__ = [
    "Comparison",
    "aggregate",
    "compare",
    "fmt",
    "markdown_table",
    "render_report",
    "standing",
    "summary_table",
    "write_results",
]

Stat = tuple[float, float, int]  # (mean, std over seeds with ddof=1, number of seeds)
Agg = dict[tuple[str, str, str], dict[str, Stat]]

_ID = ("suite", "setting", "method", "seed")
#: Row keys that describe a job's data rather than a result. Where one (suite, setting) holds
#: several rows per method and seed (a sweep), :func:`aggregate` splits the setting by the one of
#: these that varies, so a mean over sweep levels is never shown as if it were seed variance.
DESIGN_KEYS = ("noise_m1", "p")
#: The method every finding is stated against (``meta["reference_method"]`` overrides it).
REFERENCE = "CentroBind"
#: Synthetic data: the modalities that share the "pair" factor.
PAIR_MODALITIES = ("m2", "m3")

LOO_DEFINITION = (
    "Leave-one-out R@1: for each modality b, the query of a test row is the L2-normalised mean of "
    "the row's other modalities' embeddings and the gallery is modality b's embeddings of all "
    "test rows; R@1 is the % of queries whose own row ranks first, averaged over b (Symile: the "
    "elementwise product of the other modalities, scored by inner product; GRAM: the volume "
    "spanned by the other modalities plus the candidate)."
)


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


def _derived(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows plus summary R^2 keys: ``r2/pair`` (mean over the pair modalities' own embeddings),
    ``r2/private`` (mean over m of private_m from m's own embedding) and their gain over the
    ``Untrained`` row of the same suite, setting, seed and design keys (``gain/r2/pair``, ...)."""
    out = [dict(r) for r in rows]
    for r in out:
        pair = [r.get(f"r2/pair/{m}") for m in PAIR_MODALITIES]
        nums = [v for v in pair if isinstance(v, int | float)]
        if len(nums) == len(pair):
            r["r2/pair"] = sum(nums) / len(nums)
        priv = {
            k: v
            for k, v in r.items()
            if re.fullmatch(r"r2/private_\d+/m\d+", k) and isinstance(v, int | float)
        }
        own = [v for k, v in priv.items() if k.split("/")[1][8:] == k.split("/")[2][1:]]
        if own:
            r["r2/private"] = sum(own) / len(own)

    def cell(r: Mapping[str, Any]) -> tuple:
        return (r["suite"], r["setting"], r["seed"], *(r.get(k) for k in DESIGN_KEYS))

    untrained = {cell(r): r for r in out if r["method"] == "Untrained"}
    for r in out:
        u = untrained.get(cell(r))
        if u is None:
            continue
        for k in ("r2/pair", "r2/private"):
            if k in r and k in u:
                r[f"gain/{k}"] = r[k] - u[k]
    return out


def aggregate(rows: Iterable[Mapping[str, Any]]) -> Agg:
    """``(suite, setting, method) -> {metric: (mean, std, n)}`` (std over seeds, ddof=1).

    A sweep setting (several rows per method and seed) is split per level: its setting becomes
    e.g. ``"sweep noise_m1=0.5"``. Adds the derived keys of :func:`_derived`.
    """
    rows = _derived(list(rows))
    labels = setting_labels(rows)
    groups: dict[tuple[str, str, str], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r, label in zip(rows, labels, strict=True):
        key = (r["suite"], label, r["method"])
        for k, v in r.items():
            if k not in _ID and isinstance(v, int | float) and not isinstance(v, bool):
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


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def standing(
    stats: Mapping[str, Mapping[str, Stat]],
    metric: str,
    label: str,
    ref: str = REFERENCE,
    digits: int = 1,
    list_behind: int = 2,
    sign: bool = False,
) -> str | None:
    """One finding: where ``ref`` stands among ``stats`` (``{method: {metric: stat}}``) on
    ``metric``. Names every method ahead of ``ref`` or equal to it, each with its comparison, and
    the ``list_behind`` closest of those behind it (the rest counted). None without ``ref``."""
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

    def item(c: Comparison) -> str:
        return f"{c.a} {fmt(c.sa, digits, sign)} ({c.verdict(seed_note=False)})"

    ahead = sorted((c for c in cmps if c.winner == c.a), key=lambda c: -c.gap)
    equal = [c for c in cmps if c.winner is None]
    behind = sorted((c for c in cmps if c.winner == ref), key=lambda c: -c.gap)
    parts = [f"{label}: {ref} {fmt(sr, digits, sign)}"]
    if ahead:
        parts.append(
            f"{len(ahead)} of {len(cmps)} other methods ahead of it: "
            + "; ".join(item(c) for c in ahead)
        )
    else:
        parts.append(f"no other method ahead of it ({len(cmps)} compared)")
    if equal:
        parts.append("equal at this precision: " + ", ".join(c.a for c in equal))
    if behind:
        shown = behind[:list_behind]
        txt = "; ".join(item(c) for c in shown)
        if len(shown) == len(behind):
            parts.append(f"behind it: {txt}")
        else:
            rest = len(behind) - len(shown)
            parts.append(f"{len(behind)} behind it, the closest: {txt}; {rest} more further behind")
    text = "; ".join(parts) + "."
    if any(c.noise is None for c in cmps if c.winner is not None):
        text += " (One seed: no spread estimate for these gaps.)"
    return text


def _fixed_anchors(stats: Mapping[str, Mapping[str, Stat]]) -> list[str]:
    return [m for m in stats if re.fullmatch(r"FixedAnchor\([^)]*\)", m)]


def _best(
    stats: Mapping[str, Mapping[str, Stat]], methods: Sequence[str], metric: str
) -> str | None:
    have = [m for m in methods if metric in stats[m]]
    return max(have, key=lambda m: stats[m][metric][0]) if have else None


def excluded_view_finding(
    stats: Mapping[str, Mapping[str, Stat]], label: str, ref: str = REFERENCE
) -> str | None:
    """``ref`` against FixedAnchor(k) on the pairs not involving view k, for every such k."""
    items: list[Comparison] = []
    for fa in _fixed_anchors(stats):
        k = fa[len("FixedAnchor(") : -1]
        metric = f"R@1_excl/{k}"
        if ref in stats and metric in stats[ref] and metric in stats[fa]:
            items.append(compare(ref, stats[ref][metric], fa, stats[fa][metric]))
    if not items:
        return None
    ahead = [c for c in items if c.winner == ref]
    txt = "; ".join(
        f"without {c.b[len('FixedAnchor(') : -1]}: {fmt(c.sa)} vs {fmt(c.sb)}, "
        f"{c.verdict(seed_note=False)}"
        for c in items
    )
    if any(c.noise is None for c in items if c.winner is not None):
        txt += " (one seed: no spread estimate for these gaps)"
    return (
        f"{label}, R@1 on the pairs not involving view k (the pairs FixedAnchor(k) never trains "
        f"directly), {ref} vs FixedAnchor(k): {ref} ahead for {len(ahead)} of {len(items)} views. "
        f"{txt}."
    )


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


# --------------------------------------------------------------------------- output files


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(rows: list[dict[str, Any]], out: Path, meta: dict[str, Any]) -> None:
    """``results.json`` (every number, every seed, plus run metadata) and ``results.csv``."""
    atomic_write_text(out / "results.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    keys: list[str] = list(_ID)
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = out / ".results.csv.tmp"
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    tmp.replace(out / "results.csv")


def _methods(agg: Agg, suite: str, setting: str) -> list[str]:
    seen: list[str] = []
    for s, st, m in agg:
        if s == suite and st == setting and m not in seen:
            seen.append(m)
    return seen


def _stats(agg: Agg, suite: str, setting: str) -> dict[str, dict[str, Stat]]:
    return {m: agg[(suite, setting, m)] for m in _methods(agg, suite, setting)}


def _settings(agg: Agg, suite: str) -> list[str]:
    seen: list[str] = []
    for s, st, _ in agg:
        if s == suite and st not in seen:
            seen.append(st)
    return seen


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text headline: mean R@1 and fused probe per suite/setting/method (a sweep per
    level: its spread is over seeds, never over levels)."""
    agg = aggregate(rows)
    width = max([24] + [len(f"{s}/{st}") + 1 for s, st, _ in agg])
    lines = [f"{'suite/setting':{width}} {'method':32} {'R@1':>14} {'probe(fused)':>14}"]
    for (suite, setting, method), st in agg.items():
        probe = next(
            (v for k, v in st.items() if k.startswith("probe/") and k.endswith("/fused")), None
        )
        lines.append(
            f"{suite + '/' + setting:{width}} {method:32} {fmt(st.get('R@1')):>14} {fmt(probe):>14}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- the report


def _seed_counts(agg: Agg) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for (suite, setting, _), st in agg.items():
        n = max((v[2] for v in st.values()), default=0)
        out[(suite, setting)] = max(out.get((suite, setting), 0), n)
    return out


def _budget_text(meta: Mapping[str, Any]) -> str:
    """Epoch budget and early stopping, stated as they act (off when patience >= the budget)."""
    pat = meta.get("patience")
    budgets = [("", meta["epochs"])]
    if meta.get("synthetic_epochs") not in (None, meta["epochs"]):
        budgets.append(("synthetic: ", meta["synthetic_epochs"]))
    ep = ", ".join(f"{p}{e}" for p, e in budgets)
    sel = (
        "the weights of the epoch with the best validation mean R@1 (Symile, GRAM: their own "
        "leave-one-out R@1) are kept"
    )
    if pat is None:
        return f"{ep} epochs, no early stopping; {sel}"
    off = [f"{p}{e}" for p, e in budgets if pat >= e]
    if len(off) == len(budgets):
        stop = (
            f"no early stopping (patience {pat} >= the epoch budget): every method trains "
            "every epoch"
        )
    elif off:
        stop = (
            f"early stopping with patience {pat} (it never triggers where the budget is "
            f"{', '.join(off)} epochs)"
        )
    else:
        stop = f"early stopping with patience {pat}"
    return f"{ep} epochs max; {stop}; {sel}"


def _scale_text(meta: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    if meta.get("logit_scale_protocol"):
        return str(meta["logit_scale_protocol"])
    if any("logit_scale" in r for r in rows):
        return "each method's logit scale as listed in the tables' 'logit scale' column"
    return "fixed logit scale 10 (Symile: 10 D^(M/2-1))"


def quick_banner(meta: Mapping[str, Any], agg: Agg) -> list[str]:
    """The warning at the top of a ``--quick`` (or single-seed) report; [] otherwise."""
    seeds = _seed_counts(agg)
    few = sorted({n for n in seeds.values()}) or [int(meta["seeds"])]
    quick = bool(meta.get("quick"))
    if not quick and min(few) > 1:
        return []
    lines: list[str] = []
    if quick:
        epochs = meta["epochs"]
        syn = meta.get("synthetic_epochs")
        ep = f"{epochs}-epoch" + (f" ({syn} on synthetic)" if syn not in (None, epochs) else "")
        n = str(few[0]) if len(few) == 1 else f"{few[0]}–{few[-1]}"
        lines.append(
            f"> **This is a {n}-seed, {ep} smoke run (`--quick`): its numbers are not the "
            "benchmark's results.** It checks that every method trains and is scored end to end."
        )
    if min(few) < 2:
        lines.append(
            "> With one seed there is no spread estimate: no difference below is shown to exceed "
            "seed-to-seed noise."
        )
    budget = max(meta["epochs"], meta.get("synthetic_epochs") or 0)
    if meta.get("patience") is not None and meta["patience"] >= budget:
        lines.append(
            f"> Early stopping is off here (patience {meta['patience']} >= {budget} epochs)."
        )
    if quick:
        lines.append(
            "> The results are the full run: `centrobind benchmark` (committed in docs/benchmark/)."
        )
    return lines + [""]


def cap_warnings(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> list[str]:
    """A line for every suite/setting where at least half the trained runs ended at the epoch
    cap (so early stopping did not end them): those scores measure what each method learns
    within the budget, not a converged space. [] for ``--quick`` runs (their banner says so).

    Example:
        >>> meta = {"epochs": 100, "synthetic_epochs": 60, "quick": False}
        >>> rows = [{"suite": "synthetic", "setting": "clean", "epochs": 60}] * 3
        >>> cap_warnings(rows, meta)[0][:60]
        '> **synthetic/clean: 3 of 3 trained runs stopped at the 60-e'
    """
    if meta.get("quick"):
        return []

    def cap(suite: str) -> int:
        return (
            int(meta.get("synthetic_epochs") or meta["epochs"])
            if suite == "synthetic"
            else int(meta["epochs"])
        )

    counts: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        if not r.get("epochs"):
            continue  # GCCA, Raw, Untrained: nothing trained
        c = counts.setdefault((r["suite"], r["setting"].split(" ")[0]), [0, 0])
        c[0] += int(r["epochs"] >= cap(r["suite"]))
        c[1] += 1
    lines = [
        f"> **{suite}/{setting}: {hit} of {n} trained runs stopped at the {cap(suite)}-epoch "
        "cap**, not by early stopping: these scores compare what each method learns within that "
        "budget, not converged spaces."
        for (suite, setting), (hit, n) in counts.items()
        if hit * 2 >= n
    ]
    return lines + [""] if lines else []


def render_report(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> str:
    """Write figures into ``out`` and return the markdown of ``report.md``."""
    from . import plots

    agg = aggregate(rows)
    ref = meta.get("reference_method", REFERENCE)
    seeds = _seed_counts(agg)
    other = sorted(
        {(s, st.split(" ")[0], n) for (s, st), n in seeds.items() if n != meta["seeds"]},
        key=str,
    )
    seed_extra = " (" + ", ".join(f"{s}/{st}: {n}" for s, st, n in other) + ")" if other else ""
    parts = [
        "# centrobind benchmark",
        "",
        *quick_banner(meta, agg),
        *cap_warnings(rows, meta),
        f"Command: `{meta['command']}`  ",
        f"Seeds: {meta['seeds']}{seed_extra} (seed s = split s and initialisation s); budget per "
        f"method: {_budget_text(meta)}; batch {meta['batch_size']}, embedding D = "
        f"{meta['embed_dim']}, {_scale_text(meta, rows)}, AdamW lr {meta['lr']}, warm-up + "
        f"cosine. Splits 70/10/20 (train/val/test), stratified. Machine: {meta['machine']}. "
        f"Wall time: {meta['wall_seconds']:.0f} s.",
        "",
        "All figures are on the held-out test split, mean ± std over seeds (std with ddof = 1; "
        "one seed: the value alone). Retrieval in %, chance R@1 = 100/N_test. Pairwise retrieval "
        "ranks by cosine, except GRAM (its own area score, i.e. cos²); Symile is trained for its "
        "multilinear score over ALL modalities, so its pairwise-cosine figures are near chance by "
        "construction and its own retrieval is the leave-one-out column. " + LOO_DEFINITION,
        "",
        f"Findings compare each method with the default {ref}: a gap is 'within noise' when it "
        "is no larger than the larger of the two standard deviations over seeds.",
        "",
        "<!-- findings -->",
    ]
    groups: list[tuple[str, list[str]]] = []
    for suite, section in (
        ("mfeat", _mfeat_section),
        ("synthetic", _synthetic_section),
        ("missing", _missing_section),
    ):
        if any(k[0] == suite for k in agg):
            findings: list[str] = []
            parts += section(agg, rows, out, plots, findings, ref)
            groups.append((suite, findings))
    block = ["## Findings", ""]
    for suite, findings in groups:
        if findings:
            block += [f"**{suite}**", "", *[f"- {f}" for f in findings], ""]
    at = parts.index("<!-- findings -->")
    parts[at : at + 1] = block
    return "\n".join(parts) + "\n"


MFEAT_VIEWS = ["fac", "fou", "kar", "mor", "pix", "zer"]


def _scale_col(stats: Mapping[str, Mapping[str, Stat]]) -> bool:
    return any("logit_scale" in st for st in stats.values())


def _mfeat_section(
    agg: Agg,
    rows_all: list[dict[str, Any]],
    out: Path,
    plots: ModuleType,
    findings: list[str],
    ref: str,
) -> list[str]:
    mods = MFEAT_VIEWS
    stats = _stats(agg, "mfeat", "mfeat")
    probe_key = next(
        (k for st in stats.values() for k in st if k.startswith("probe/") and k.endswith("/fused")),
        "probe/digit/fused",
    )
    task = probe_key.split("/")[1]
    best = _best(stats, _fixed_anchors(stats), "R@1")
    lines = _mfeat_main_table(stats, probe_key, mods)
    findings += _mfeat_findings(stats, probe_key, mods, best, ref)
    lines += _mfeat_view_figures(agg, stats, mods, best, out, plots, ref)
    lines += _mfeat_probe_table(stats, task, mods)
    abl = _stats(agg, "mfeat", "ablation")
    if abl:
        lines += _mfeat_ablation_table(abl, probe_key, ref)
        findings += _mfeat_ablation_findings(abl, stats, rows_all, ref)
    return lines


def _mfeat_main_table(
    stats: Mapping[str, Mapping[str, Stat]], probe_key: str, mods: Sequence[str]
) -> list[str]:
    """The mfeat headline table: R@1, R@5, leave-one-out R@1 and the fused probe per method."""
    scale = _scale_col(stats)
    table = [
        [m, fmt(st.get("R@1")), fmt(st.get("R@5")), fmt(st.get("loo_R@1")), fmt(st.get(probe_key))]
        + ([fmt(st.get("logit_scale"))] if scale else [])
        + [fmt(st.get("seconds"))]
        for m, st in stats.items()
    ]
    n_pairs = len(mods) * (len(mods) - 1)
    return [
        "## mfeat (UCI Multiple Features: 6 views of 2,000 digits)",
        "",
        markdown_table(
            ["method", f"R@1 ({n_pairs} pairs)", "R@5", "leave-one-out R@1", "fused linear probe"]
            + (["logit scale"] if scale else [])
            + ["train s"],
            table,
        ),
        "",
        LOO_DEFINITION,
        "",
    ]


def _mfeat_findings(
    stats: Mapping[str, Mapping[str, Stat]],
    probe_key: str,
    mods: Sequence[str],
    best: str | None,
    ref: str,
) -> list[str]:
    """Findings on the mfeat headline metrics: standings, ``ref`` vs the best fixed anchor and
    vs AllPairs, and the excluded-view comparison."""
    findings = []
    task = probe_key.split("/")[1]
    n_pairs = len(mods) * (len(mods) - 1)
    for metric, label in (
        ("R@1", f"mfeat, mean R@1 over the {n_pairs} ordered pairs"),
        ("loo_R@1", "mfeat, leave-one-out R@1"),
        (probe_key, f"mfeat, fused linear probe ({task}, % accuracy)"),
    ):
        f = standing(stats, metric, label, ref)
        if f:
            findings.append(f)
    if best and ref in stats and "R@1" in stats[ref]:
        findings.append(
            f"mfeat, {ref} vs the best fixed anchor ({best}) on mean R@1: "
            + compare(ref, stats[ref]["R@1"], best, stats[best]["R@1"]).sentence()
            + "."
        )
    if "AllPairs" in stats and ref in stats and "R@1" in stats[ref]:
        m = len(mods)
        findings.append(
            f"mfeat, AllPairs ({m * (m - 1) // 2} pairwise terms) vs {ref} ({m} terms) on mean "
            f"R@1: "
            + compare("AllPairs", stats["AllPairs"]["R@1"], ref, stats[ref]["R@1"]).sentence()
            + "."
        )
    f = excluded_view_finding(stats, "mfeat", ref)
    if f:
        findings.append(f)
    return findings


def _mfeat_view_figures(
    agg: Agg,
    stats: Mapping[str, Mapping[str, Stat]],
    mods: list[str],
    best: str | None,
    out: Path,
    plots: ModuleType,
    ref: str,
) -> list[str]:
    """The R@1-without-view-k table and figure, and the per-pair heatmaps (written to ``out``)."""
    excl = [m for m in stats if "R@1" in stats[m]]
    header = ["method"] + [f"without {k}" for k in mods]
    rows = [[m] + [fmt(stats[m].get(f"R@1_excl/{k}")) for k in mods] for m in excl]
    lines = [
        "### R@1 over the pairs not involving view k",
        "",
        "The pairs a fixed anchor k never trains directly. In the figure, each panel is one view "
        "k; FixedAnchor(k) is the hatched bar with a black edge.",
        "",
        markdown_table(header, rows),
        "",
        "![R@1 excluding view k](excluding_view.png)",
        "",
    ]
    plots.excluding_bars(agg, excl, mods, out / "excluding_view.png")
    if best and ref in stats:
        heat = [ref, best] + (["AllPairs"] if "AllPairs" in stats else [])
        plots.pair_heatmaps(agg, heat, mods, out / "pair_heatmaps.png")
        lines += [
            f"### Per-pair R@1: {', '.join(heat[:-1])} and {heat[-1]}",
            "",
            f"{best} is the best fixed anchor on mean R@1.",
            "",
            "![per-pair R@1](pair_heatmaps.png)",
            "",
        ]
    return lines


def _mfeat_probe_table(
    stats: Mapping[str, Mapping[str, Stat]], task: str, mods: list[str]
) -> list[str]:
    """Linear-probe accuracy per view and fused."""
    rows = [[m] + [fmt(stats[m].get(f"probe/{task}/{k}")) for k in mods + ["fused"]] for m in stats]
    return [
        f"### Linear-probe accuracy ({task}, %) per view and fused",
        "",
        "Raw = standardised input features (fused = all views concatenated).",
        "",
        markdown_table(["method"] + mods + ["fused"], rows),
        "",
    ]


def _mfeat_ablation_table(
    abl: Mapping[str, Mapping[str, Stat]], probe_key: str, ref: str
) -> list[str]:
    """The ablation variants' table (``abl``: the ``("mfeat", "ablation")`` stats)."""
    scale = _scale_col(abl)
    rows = [
        [m, describe_variant(m, ref), fmt(st.get("R@1")), fmt(st.get("loo_R@1"))]
        + [fmt(st.get(probe_key))]
        + ([fmt(st.get("logit_scale"))] if scale else [])
        + [fmt(st.get("seconds"))]
        for m, st in abl.items()
    ]
    n = max(v[2] for st in abl.values() for v in st.values())
    return [
        "### Ablations",
        "",
        f"Variants of the default {ref} (and of other methods) on the same {_seeds(n)}; the "
        f"{ref} row is its own run on these seeds. 'what differs' is read from the variant's "
        "name.",
        "",
        markdown_table(
            ["variant", "what differs", "R@1", "leave-one-out R@1", "fused probe"]
            + (["logit scale"] if scale else [])
            + ["train s"],
            rows,
        ),
        "",
    ]


def _mfeat_ablation_findings(
    abl: Mapping[str, Mapping[str, Stat]],
    stats: Mapping[str, Mapping[str, Stat]],
    rows_all: list[dict[str, Any]],
    ref: str,
) -> list[str]:
    """The ablations' standing, and each variant ``base[tag]`` vs its ``base`` method re-aggregated
    on the ablation seeds."""
    findings = []
    n = max(v[2] for st in abl.values() for v in st.values())
    f = standing(abl, "R@1", f"mfeat ablations, mean R@1 ({_seeds(n)})", ref, list_behind=99)
    if f:
        findings.append(f)
    abl_seeds = {
        r["seed"] for r in rows_all if r["suite"] == "mfeat" and r["setting"] == "ablation"
    }
    for m, st in abl.items():
        base = m.split("[")[0]
        if base == m or base == ref or base not in stats or "R@1" not in st:
            continue
        same = aggregate(
            r
            for r in rows_all
            if (r["suite"], r["setting"], r["method"]) == ("mfeat", "mfeat", base)
            and r["seed"] in abl_seeds
        ).get(("mfeat", "mfeat", base), {})
        if "R@1" in same:
            findings.append(
                f"mfeat ablation {m} ({describe_variant(m, base)}) vs {base} on the same "
                f"seeds, mean R@1: " + compare(m, st["R@1"], base, same["R@1"]).sentence() + "."
            )
    return findings


def _r2_cell(st: Mapping[str, Stat], key: str, is_untrained: bool) -> str:
    """``R² (Δ gain over the untrained encoder)``; the untrained row itself has no Δ."""
    gain = st.get(f"gain/{key}")
    delta = f" (Δ {fmt(gain, 2, sign=True)})" if gain is not None and not is_untrained else ""
    return fmt(st.get(key), 2) + delta


def _synthetic_section(
    agg: Agg,
    rows_all: list[dict[str, Any]],
    out: Path,
    plots: ModuleType,
    findings: list[str],
    ref: str,
) -> list[str]:
    lines = [
        "## synthetic (4 modalities: shared, pair (m2, m3) and private factors)",
        "",
        "R² = ridge regression from an embedding to the true factors (test split): shared from "
        "the fused embedding, pair = mean over m2 and m3's own embeddings, private = mean over m "
        "of private_m from m's own embedding. The untrained encoder (a randomly initialised "
        "Binder) is the reference: Δ in brackets = R² minus the untrained encoder's on the same "
        "seed, i.e. what training added (or removed). Probe = fused linear probe on the "
        "factor-derived labels.",
        "",
    ]
    settings = [s for s in ("clean", "weak-anchor") if s in _settings(agg, "synthetic")]
    per_setting = {s: _stats(agg, "synthetic", s) for s in settings}
    for setting, stats in per_setting.items():
        lines += _synthetic_setting_table(setting, stats)
        findings += _synthetic_setting_findings(setting, stats, ref)
    if len(per_setting) == 2:
        f = _clean_to_weak_finding(per_setting["clean"], per_setting["weak-anchor"], ref)
        if f:
            findings.append(f)
    lines += _synthetic_sweep(agg, rows_all, out, plots, findings, ref)
    return lines


def _synthetic_setting_table(setting: str, stats: Mapping[str, Mapping[str, Stat]]) -> list[str]:
    """One synthetic setting's table: retrieval, R² (with gains) and probes per method."""
    scale = _scale_col(stats)

    table = [
        [
            m,
            fmt(st.get("R@1")),
            fmt(st.get("R@1_excl/m1")),
            fmt(st.get("r2/shared/fused"), 2),
            _r2_cell(st, "r2/pair", m == "Untrained"),
            _r2_cell(st, "r2/private", m == "Untrained"),
            fmt(st.get("probe/shared/fused")),
            fmt(st.get("probe/pair/fused")),
        ]
        + ([fmt(st.get("logit_scale"))] if scale else [])
        + [fmt(st.get("seconds"))]
        for m, st in stats.items()
    ]
    noise = "0.1 on every modality" if setting == "clean" else "m1 noise 2.0, others 0.1"
    return [
        f"### {setting} ({noise})",
        "",
        markdown_table(
            [
                "method",
                "R@1",
                "R@1 without m1",
                "R² shared",
                "R² pair (Δ vs untrained)",
                "R² private (Δ vs untrained)",
                "probe shared",
                "probe pair",
            ]
            + (["logit scale"] if scale else [])
            + ["train s"],
            table,
        ),
        "",
    ]


def _synthetic_setting_findings(
    setting: str, stats: Mapping[str, Mapping[str, Stat]], ref: str
) -> list[str]:
    """One synthetic setting's findings: standings, AllPairs vs ``ref`` on the private factors,
    ``ref+intra`` variants, and learned vs uniform centroid weights."""
    findings = []
    for metric, label, digits in (
        ("R@1", "mean R@1", 1),
        ("R@1_excl/m1", "R@1 on the pairs without m1", 1),
        ("gain/r2/pair", "pair-factor R² gain over the untrained encoder", 2),
    ):
        trained = {m: st for m, st in stats.items() if m not in ("Untrained", "Raw")}
        f = standing(
            trained, metric, f"synthetic {setting}, {label}", ref, digits, sign=digits == 2
        )
        if f:
            findings.append(f)
    if "AllPairs" in stats and ref in stats:
        ap, cb = stats["AllPairs"], stats[ref]
        if "gain/r2/private" in ap and "gain/r2/private" in cb:
            findings.append(
                f"synthetic {setting}, private-factor R² gain over the untrained encoder: "
                + compare(
                    "AllPairs", ap["gain/r2/private"], ref, cb["gain/r2/private"], 2
                ).sentence(sign=True)
                + "."
            )
    for m, st in stats.items():
        if not re.fullmatch(re.escape(ref) + r"\+intra[0-9.]+", m) or ref not in stats:
            continue
        cb = stats[ref]
        if "gain/r2/private" in st and "gain/r2/private" in cb:
            findings.append(
                f"synthetic {setting}, {m} ({describe_variant(m, ref)}), private-factor R² "
                "gain over the untrained encoder: "
                + compare(m, st["gain/r2/private"], ref, cb["gain/r2/private"], 2).sentence(
                    sign=True
                )
                + "; its cost in mean R@1: "
                + compare(m, st["R@1"], ref, cb["R@1"]).sentence()
                + "."
            )
    lw = stats.get(f"{ref}[learned-w]")
    if lw and ref in stats and "R@1_excl/m1" in lw and "R@1_excl/m1" in stats[ref]:
        w = ", ".join(f"{k[2:]} {v[0]:.2f}" for k, v in lw.items() if k.startswith("w/"))
        findings.append(
            f"synthetic {setting}, learned centroid weights ({w}) vs uniform weights, R@1 on "
            "the pairs without m1: "
            + compare(
                f"{ref}[learned-w]", lw["R@1_excl/m1"], ref, stats[ref]["R@1_excl/m1"]
            ).sentence()
            + "."
        )
    return findings


def _clean_to_weak_finding(
    clean: Mapping[str, Mapping[str, Stat]], weak: Mapping[str, Mapping[str, Stat]], ref: str
) -> str | None:
    """How mean R@1 moves from the clean to the weak-anchor setting (``ref``, AllPairs, and the
    fixed anchors), or None when no method has both."""
    moves = [
        f"{m} {fmt(clean[m]['R@1'])} -> {fmt(weak[m]['R@1'])} "
        f"({round(weak[m]['R@1'][0], 1) - round(clean[m]['R@1'][0], 1):+.1f})"
        for m in clean
        if m in weak
        and "R@1" in clean[m]
        and "R@1" in weak[m]
        and m != "Untrained"
        and (m == ref or m == "AllPairs" or m.startswith("FixedAnchor("))
    ]
    if not moves:
        return None
    return "synthetic, clean -> weak anchor, mean R@1: " + "; ".join(moves) + "."


def _synthetic_sweep(
    agg: Agg,
    rows_all: list[dict[str, Any]],
    out: Path,
    plots: ModuleType,
    findings: list[str],
    ref: str,
) -> list[str]:
    """The sweep over m1's noise level: table, figure (written to ``out``) and standings."""
    sweep = [s for s in _settings(agg, "synthetic") if s.split(" ")[0] == "sweep"]
    if not sweep:
        return []
    levels = sorted(sweep, key=lambda s: float(s.split("=")[-1]) if "=" in s else 0.0)
    methods: list[str] = []
    for s in levels:
        methods += [m for m in _methods(agg, "synthetic", s) if m not in methods]
    table = [
        [m] + [fmt(agg.get(("synthetic", s, m), {}).get("R@1_excl/m1")) for s in levels]
        for m in methods
    ]
    plots.sweep_plot(rows_all, methods, out / "synthetic_sweep.png")
    n_seeds = max(
        n for (su, st), n in _seed_counts(agg).items() if su == "synthetic" and st in sweep
    )
    spread = (
        f"the spread is over {_seeds(n_seeds)} at each level"
        if n_seeds > 1
        else "one seed per level, so no spread is shown"
    )
    lines = [
        "### Sweep of m1's noise level",
        "",
        "R@1 on the pairs without m1 (the pairs FixedAnchor(m1) never trains) as m1 gets "
        f"noisier; {spread}.",
        "",
        markdown_table(["method"] + [f"m1 noise {s.split('=')[-1]}" for s in levels], table),
        "",
        "![sweep](synthetic_sweep.png)",
        "",
    ]
    for s in levels:
        f = standing(
            _stats(agg, "synthetic", s),
            "R@1_excl/m1",
            f"synthetic sweep, m1 noise {s.split('=')[-1]}, R@1 on the pairs without m1",
            ref,
        )
        if f:
            findings.append(f)
    return lines


def _missing_section(
    agg: Agg,
    rows_all: list[dict[str, Any]],
    out: Path,
    plots: ModuleType,
    findings: list[str],
    ref: str,
) -> list[str]:
    def rate(s: str) -> float:
        try:
            return float(s.split("=")[-1])
        except ValueError:
            return math.inf

    settings = sorted(_settings(agg, "missing"), key=rate)
    methods: list[str] = []
    for s in settings:
        methods += [m for m in _methods(agg, "missing", s) if m not in methods]
    table = [
        [m] + [fmt(agg.get(("missing", s, m), {}).get("R@1")) for s in settings] for m in methods
    ]
    plots.missing_plot(rows_all, methods, out / "missing.png")
    for s in settings:
        f = standing(_stats(agg, "missing", s), "R@1", f"missing modalities ({s}), mean R@1", ref)
        if f:
            findings.append(f)
    return [
        "## missing modalities (mfeat, training rows dropped per modality at rate p)",
        "",
        "Test set complete. CentroBind and AllPairs use the masks; FixedAnchor's terms can only "
        "use samples that have the anchor.",
        "",
        markdown_table(["method"] + [f"R@1 {s}" for s in settings], table),
        "",
        "![missing](missing.png)",
        "",
    ]
