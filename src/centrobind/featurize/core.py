"""``featurize()``: a manifest of raw texts / images / audio -> a centrobind dataset folder.

Output (the README "Data format", plus what ``centrobind.load`` needs to featurize queries)::

    <out>/modalities/<column>.npy   float32 [N, D_m]; all-NaN row = empty cell or unreadable item
    <out>/labels/<column>.npy       int64 [N] for each --label column (-1 = empty cell)
    <out>/items/<column>.jsonl      the raw item per row (text or absolute path; null = missing)
    <out>/meta.json                 modalities, labels, featurizers, label_maps, source
    <out>/featurize.json            progress (resume) and the unreadable rows with reasons
    <out>/.lock                     held while featurize writes (a second one is refused)

A re-run of the same command resumes: chunks already written are kept only while the files they
read are unchanged (size, modification and change time of every file item, checked per chunk);
a chunk whose files changed, or a modality whose ``.npy`` is missing or damaged, is encoded
again (with a warning), so no two rows ever mix old and new contents of an item.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from centrobind.errors import CentrobindError, CentrobindWarning

from .encoders import Encoder, check_item_file, check_spec, device_name, load_encoder
from .items import write_items
from .labels import encode_labels, label_like
from .manifest import Manifest, column_kind, read_manifest
from .writer import STATE, ProgressState, file_sha256, open_features

__all__ = ["DEFAULT_ENCODERS", "FeaturizeSummary", "featurize"]

# imstats, not pixels, for images: pooled colour and shape statistics survive a shift or a change
# of size (rawdata suite, held-out label P@5: pixels 68, imstats 97; bench/rawdata.py)
DEFAULT_ENCODERS = {"text": "minilm", "image": "imstats", "audio": "logmel"}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_MAX_PRINTED = 20


@dataclass
class FeaturizeSummary:
    """What :func:`featurize` did. Counts are per modality (column)."""

    out: Path
    rows: int
    modalities: list[str]
    encoders: dict[str, str]
    encoded: dict[str, int] = field(default_factory=dict)  # rows with features
    empty: dict[str, int] = field(default_factory=dict)  # empty cells (missing by design)
    failed: dict[str, int] = field(default_factory=dict)  # unreadable / corrupt items
    resumed_rows: int = 0  # rows skipped because an earlier run finished their chunk
    seconds: float = 0.0
    items_per_s: dict[str, float] = field(default_factory=dict)  # items encoded this run / s
    labels: list[str] = field(default_factory=list)
    label_like: dict[str, str] = field(default_factory=dict)  # modality -> why it looks a label

    def line(self) -> str:
        """One summary line, e.g. for the CLI."""
        parts = [
            f"{m} {self.encoded[m]} ok, {self.empty[m]} empty, {self.failed[m]} unreadable"
            for m in self.modalities
        ]
        resumed = (
            f"; {self.resumed_rows} rows resumed from an earlier run" if self.resumed_rows else ""
        )
        return (
            f"featurized {self.rows} rows into {self.out} in {self.seconds:.1f}s: "
            + "; ".join(parts)
            + resumed
            + (
                f" (unreadable rows listed in {self.out / STATE})"
                if sum(self.failed.values())
                else ""
            )
        )

    def lists(self) -> str:
        """The final modality and label lists, e.g. ``modalities: caption (minilm), image
        (pixels); labels: shape``."""
        mods = ", ".join(f"{m} ({self.encoders[m]})" for m in self.modalities)
        labels = ", ".join(self.labels) or "none (--label COLUMN adds one)"
        return f"modalities: {mods}; labels: {labels}"


def _fingerprint(manifest: Path, specs: dict[str, str], labels: list[str], chunk: int) -> str:
    blob = json.dumps(
        {"manifest": file_sha256(manifest), "encoders": specs, "labels": labels, "chunk": chunk},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _plan(
    man: Manifest, encoders: dict[str, str], labels: list[str]
) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Check column names; decide modalities, their kinds and encoder specs."""
    cols = list(man.columns)
    for name in list(encoders) + labels:
        if name not in man.columns:
            raise CentrobindError(f"{man.path}: no column {name!r} (columns: {', '.join(cols)})")
    both = set(encoders) & set(labels)
    if both:
        raise CentrobindError(f"column {sorted(both)[0]!r} is given both as a label and a modality")
    mods = [c for c in cols if c not in labels]
    if not mods:
        raise CentrobindError(f"{man.path}: no modality columns (every column is a --label)")
    for name in labels:  # it becomes labels/<name>.npy: never a path out of the folder
        if not _NAME.match(name):
            raise CentrobindError(
                f"{man.path}: column name {name!r} cannot be a label name "
                "(letters, digits, _ . - only; it becomes a file name)"
            )
    kinds, specs = {}, {}
    for m in mods:
        if not _NAME.match(m):
            raise CentrobindError(
                f"{man.path}: column name {m!r} cannot be a modality name "
                "(letters, digits, _ . - only; it becomes a file name)"
            )
        cells = man.columns[m]
        if all(c is None for c in cells):
            raise CentrobindError(f"{man.path}: column {m!r} is empty (every cell is missing)")
        kinds[m] = column_kind(cells)
        specs[m] = encoders.get(m) or DEFAULT_ENCODERS[kinds[m]]
    return mods, kinds, specs


def _encode_chunk(
    enc: Encoder, items: list[tuple[int, str]], batch_size: int
) -> tuple[list[int], np.ndarray, dict[int, str]]:
    """Encode ``(row, item)`` pairs: (rows encoded, float32 [n, dim], {row: reason} failed)."""
    failed: dict[int, str] = {}
    item_of = dict(items)
    ok_rows: list[int] = []
    prepared: list[Any] = []
    for row, item in items:
        try:
            if enc.kind != "text":
                check_item_file(item)  # a named pipe would block open() forever
            prepared.append(enc.prepare(item))
            ok_rows.append(row)
        except Exception as e:  # any decoding problem marks the row missing, never a crash
            failed[row] = f"{item}: {_reason(e)}"
    rows_out: list[int] = []
    outs: list[np.ndarray] = []
    for i in range(0, len(prepared), batch_size):
        rows, batch = ok_rows[i : i + batch_size], prepared[i : i + batch_size]
        try:
            parts = [(rows, np.asarray(enc.forward(batch), dtype=np.float32))]
        except Exception:  # isolate the item(s) the encoder cannot take
            parts = []
            for r, p in zip(rows, batch, strict=True):
                try:
                    parts.append(([r], np.asarray(enc.forward([p]), dtype=np.float32)))
                except Exception as e:
                    failed[r] = f"{item_of[r]}: encoder failed: {_reason(e)}"
        for rs, x in parts:
            finite: list[bool] = [bool(v) for v in np.isfinite(x).all(axis=1).reshape(-1)]
            for r, good in zip(rs, finite, strict=True):
                if not good:
                    failed[r] = f"{item_of[r]}: encoder produced NaN/inf"
            rows_out.extend(r for r, good in zip(rs, finite, strict=True) if good)
            outs.append(x[np.asarray(finite, dtype=bool)])
    x = np.concatenate(outs) if outs else np.zeros((0, enc.dim), np.float32)
    return rows_out, x, failed


def _reason(e: BaseException) -> str:
    if isinstance(e, FileNotFoundError):
        return "file not found"
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg[:200]


def featurize(
    manifest: str | Path,
    out: str | Path,
    encoders: dict[str, str] | None = None,
    labels: list[str] | None = None,
    batch_size: int = 32,
    device: str = "auto",
    allow_random: bool = False,
    progress: bool = True,
    *,
    chunk_rows: int = 1024,
) -> FeaturizeSummary:
    """Featurize ``manifest`` (CSV/TSV/JSONL/Parquet) into the dataset folder ``out``.

    ``encoders`` maps a column to an encoder spec (default by column kind: text -> ``minilm``,
    image files -> ``imstats``, audio files -> ``logmel``); ``labels`` names label columns. Rows
    are processed in chunks of ``chunk_rows`` (batches of ``batch_size`` inside) and written to
    memory-mapped ``.npy`` files; re-running the same call after an interruption skips the
    chunks already written. Unreadable items are reported by row and stored as missing.
    """
    t0 = time.perf_counter()
    if batch_size < 1:
        raise CentrobindError(f"--batch-size must be >= 1, got {batch_size}")
    if chunk_rows < 1:
        raise CentrobindError(f"chunk_rows must be >= 1, got {chunk_rows}")
    encoders, labels = dict(encoders or {}), list(labels or [])
    man = read_manifest(manifest)
    mods, kinds, specs = _plan(man, encoders, labels)
    dev = device_name(device)
    out = Path(out)
    fp = _fingerprint(man.path, specs, labels, chunk_rows)
    ProgressState.open(out, fp)  # refuse a folder that is not ours before locking it
    from centrobind.runlock import RunLock

    with RunLock(out, purpose="featurize"):  # a second featurize into `out` fails at once
        summary = _featurize_locked(
            out, man, mods, kinds, specs, labels, fp, dev, allow_random, progress,
            batch_size, chunk_rows,
        )  # fmt: skip
    summary.seconds = time.perf_counter() - t0
    return summary


def _featurize_locked(
    out: Path,
    man: Manifest,
    mods: list[str],
    kinds: dict[str, str],
    specs: dict[str, str],
    labels: list[str],
    fp: str,
    dev: str,
    allow_random: bool,
    progress: bool,
    batch_size: int,
    chunk_rows: int,
) -> FeaturizeSummary:
    """:func:`featurize` while it holds ``out``'s lock: resume check, encode, write."""
    n = len(man)
    state = ProgressState.open(out, fp)
    n_chunks = (n + chunk_rows - 1) // chunk_rows
    _recheck(out, man, mods, state, n, chunk_rows)
    live = _load_encoders(mods, kinds, specs, state, n_chunks, dev, allow_random, out)
    out.mkdir(parents=True, exist_ok=True)
    state.save()
    items = _column_items(man, mods, state)
    encoded_now, seconds_now, resumed = _encode_columns(
        out, n, mods, items, live, state, chunk_rows, batch_size, progress, man.where
    )

    # Labels, items, meta.json (the dataset is complete once meta.json is written).
    label_maps = _write_labels(out, man, labels)
    summary = FeaturizeSummary(out=out, rows=n, modalities=mods, encoders=specs, labels=labels)
    for m in mods:
        failed_rows = {int(r) for r in state.modality(m)["failed"]}
        empty = sum(c is None for c in man.columns[m])
        summary.empty[m] = empty
        summary.failed[m] = len(failed_rows)
        summary.encoded[m] = n - empty - len(failed_rows)
        write_items(out, m, [None if r in failed_rows else v for r, v in enumerate(items[m])])
        if seconds_now[m] > 0:
            summary.items_per_s[m] = encoded_now[m] / seconds_now[m]
    _write_meta(out, man, mods, labels, label_maps, state)
    state.data["complete"] = True
    state.save()
    summary.resumed_rows = resumed
    _warn_empty_rows(man, mods, state)
    _warn_label_like(summary, man, state)
    dead = [m for m in mods if summary.encoded[m] == 0]
    if dead:
        raise CentrobindError(
            f"column {dead[0]!r}: no item could be read ({summary.failed[dead[0]]} unreadable, "
            f"see {out / STATE})"
        )
    return summary


def _warn_empty_rows(man: Manifest, mods: list[str], state: ProgressState) -> None:
    """Warn about rows with no modality at all (every cell empty or unreadable)."""
    n = len(man)
    has = np.zeros(n, dtype=bool)
    for m in mods:
        failed = {int(r) for r in state.modality(m)["failed"]}
        has |= np.array([c is not None and r not in failed for r, c in enumerate(man.columns[m])])
    empty = np.flatnonzero(~has)
    if len(empty):
        shown = ", ".join(map(str, empty[:10].tolist())) + (", ..." if len(empty) > 10 else "")
        warnings.warn(
            f"{len(empty)} row(s) have no modality: every cell is empty or unreadable (row "
            f"{shown}); they stay in the dataset as empty rows, which training and evaluation "
            "leave out",
            CentrobindWarning,
            stacklevel=3,
        )


def _stamp(items: list[str | None], lo: int, hi: int) -> str:
    """What a chunk's file items looked like: size, modification and change time (ns) and file
    type of each file of rows ``lo..hi-1`` (one ``stat`` per item; nothing is read)."""
    h = hashlib.sha256()
    for r in range(lo, hi):
        path = items[r]
        if path is None:
            continue
        try:
            st = os.stat(path)
            seen = f"{stat.S_IFMT(st.st_mode)}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
        except OSError as e:
            seen = f"error {e.errno}"
        h.update(f"{r}\0{path}\0{seen}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


def _features_ok(path: Path, n: int, dim: int) -> bool:
    """``path`` is a float32 ``[n, dim]`` ``.npy`` file of its own (not a symlink: featurize
    writes into it) (its header read, nothing else)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        mm = np.lib.format.open_memmap(path, mode="r")
        ok = mm.shape == (n, dim) and mm.dtype == np.float32
        del mm
        return ok
    except (OSError, ValueError):
        return False


def _recheck(
    out: Path, man: Manifest, mods: list[str], state: ProgressState, n: int, chunk_rows: int
) -> None:
    """Before resuming: a modality whose ``.npy`` is missing or damaged is encoded again, and
    so is every finished chunk whose file items changed since (:func:`_stamp`); warned."""
    n_chunks = (n + chunk_rows - 1) // chunk_rows
    for m in mods:
        ms = state.modality(m)
        if any(c >= n_chunks for c in ms["done"]):
            raise CentrobindError(
                f"{out / STATE}: chunk numbers out of range (edited?); delete {out}"
            )
        if ms["entry"] is None:
            continue
        path = out / "modalities" / f"{m}.npy"
        if ms.get("created") and not _features_ok(path, n, int(ms["entry"]["dim"])):
            warnings.warn(
                f"{path} is missing or damaged: encoding {m} again", CentrobindWarning, stacklevel=3
            )
            if path.is_symlink() or path.is_file() or path.is_fifo():
                path.unlink()  # a new file in its place, never written through a symlink
            ms.update(done=[], failed={}, stamps={}, created=False)
            continue
        if ms["entry"]["kind"] == "text" or not ms["done"]:
            continue
        items = [man.resolve(c) if c is not None else None for c in man.columns[m]]
        stamps = ms.setdefault("stamps", {})
        changed = []
        for c in sorted(ms["done"]):
            lo, hi = c * chunk_rows, min(n, (c + 1) * chunk_rows)
            if stamps.get(str(c)) != _stamp(items, lo, hi):
                changed.append(c)
                ms["done"].remove(c)
                stamps.pop(str(c), None)
                for r in range(lo, hi):
                    ms["failed"].pop(str(r), None)
        if changed:
            spans = [(c * chunk_rows, min(n, (c + 1) * chunk_rows) - 1) for c in changed]
            rows = ", ".join(f"{lo}-{hi}" for lo, hi in spans)
            warnings.warn(
                f"{m}: files changed since they were encoded (size or time; rows {rows}): "
                "encoding those rows again",
                CentrobindWarning,
                stacklevel=3,
            )


def _warn_label_like(summary: FeaturizeSummary, man: Manifest, state: ProgressState) -> None:
    """A :class:`CentrobindWarning` per text modality that looks like a label (recorded in
    ``summary.label_like``): a label featurized as content leaks the answer into the data."""
    for m in summary.modalities:
        why = None
        if state.modality(m)["entry"]["kind"] == "text":
            why = label_like(m, man.columns[m])
        if why:
            summary.label_like[m] = why
            warnings.warn(
                f"column {m!r} looks like a label, not content ({why}); it became a text "
                f"modality, so a model can match rows by it; if it is a label, featurize again "
                f"with --label {m}",
                CentrobindWarning,
                stacklevel=3,
            )


def _load_encoders(
    mods: list[str],
    kinds: dict[str, str],
    specs: dict[str, str],
    state: ProgressState,
    n_chunks: int,
    device: str,
    allow_random: bool,
    out: Path,
) -> dict[str, Encoder]:
    """The encoder of every modality that still has work, recording its entry in ``state``.

    All are built before any is run (bad specs fail fast): names first, then the weight-free
    families before the ones that load a model.
    """
    for m in mods:
        check_spec(specs[m])
    live: dict[str, Encoder] = {}
    weightless = ("pixels", "imstats", "logmel")
    for m in sorted(mods, key=lambda m: specs[m].split(":")[0] not in weightless):
        ms = state.modality(m)
        if len(ms["done"]) < n_chunks or ms["entry"] is None:
            # a column of image/audio files must get an encoder of that kind; any other column
            # (texts, or files with unknown suffixes) takes whatever kind the encoder has
            hint = kinds[m] if kinds[m] != "text" else None
            live[m] = load_encoder(specs[m], device=device, allow_random=allow_random, kind=hint)
            if ms["entry"] is not None and ms["entry"]["dim"] != live[m].dim:
                raise CentrobindError(f"{out}: {m} was started with another width; delete {out}")
            ms["entry"] = live[m].entry()
    return live


def _column_items(
    man: Manifest, mods: list[str], state: ProgressState
) -> dict[str, list[str | None]]:
    """Each modality's items per row: texts as they are, files as absolute paths (None: empty).

    File kinds follow the encoder's kind, not only the column's look.
    """
    items: dict[str, list[str | None]] = {}
    for m in mods:
        if state.modality(m)["entry"]["kind"] != "text":
            items[m] = [man.resolve(c) if c is not None else None for c in man.columns[m]]
        else:
            items[m] = list(man.columns[m])
    return items


def _encode_columns(
    out: Path,
    n: int,
    mods: list[str],
    items: dict[str, list[str | None]],
    live: dict[str, Encoder],
    state: ProgressState,
    chunk_rows: int,
    batch_size: int,
    progress: bool,
    where: Callable[[int], str] = "row {}".format,
) -> tuple[dict[str, int], dict[str, float], int]:
    """Encode every chunk not done yet into ``<out>/modalities/<m>.npy`` (progress bar on
    stderr, the first unreadable items printed by ``where(row)``, their place in the manifest).
    Returns (items encoded now per modality,
    seconds spent encoding per modality, rows resumed from an earlier run)."""
    n_chunks = (n + chunk_rows - 1) // chunk_rows
    todo = sum(
        min(chunk_rows, n - c * chunk_rows)
        for m in mods
        for c in range(n_chunks)
        if c not in state.modality(m)["done"]
    )
    from centrobind.logbar import progress_bar

    bar = progress_bar(
        total=todo, disable=not progress, unit="item", desc="featurize", file=sys.stderr
    )
    printed = 0
    encoded_now: dict[str, int] = {m: 0 for m in mods}
    seconds_now: dict[str, float] = {m: 0.0 for m in mods}
    resumed = 0
    try:
        for m in mods:
            ms = state.modality(m)
            done = set(ms["done"])
            resumed += sum(min(chunk_rows, n - c * chunk_rows) for c in done)
            if len(done) == n_chunks:
                continue
            enc = live[m]
            mm = open_features(out / "modalities" / f"{m}.npy", n, enc.dim, not ms.get("created"))
            if not ms.get("created"):
                ms["created"] = True
                state.save()
            bar.set_description(f"featurize {m}")
            for c in range(n_chunks):
                if c in done:
                    continue
                lo, hi = c * chunk_rows, min(n, (c + 1) * chunk_rows)
                pairs = [(r, v) for r in range(lo, hi) if (v := items[m][r]) is not None]
                if enc.kind != "text":  # what the files look like before they are read
                    ms.setdefault("stamps", {})[str(c)] = _stamp(items[m], lo, hi)
                t = time.perf_counter()
                rows, x, failed = _encode_chunk(enc, pairs, batch_size)
                seconds_now[m] += time.perf_counter() - t
                encoded_now[m] += len(rows)
                mm[lo:hi] = np.nan
                if rows:
                    mm[np.asarray(rows)] = x
                mm.flush()
                for r, why in sorted(failed.items()):
                    ms["failed"][str(r)] = why
                    if printed < _MAX_PRINTED:
                        bar.write(
                            f"{where(r)}, {m}: unreadable, stored as missing: {why}",
                            file=sys.stderr,
                        )
                    printed += 1
                ms["done"].append(c)
                state.save()
                bar.update(hi - lo)
            del mm
    finally:
        bar.close()
    if printed > _MAX_PRINTED:
        print(f"... and {printed - _MAX_PRINTED} more unreadable items", file=sys.stderr)
    return encoded_now, seconds_now, resumed


def _write_labels(out: Path, man: Manifest, labels: list[str]) -> dict[str, dict[str, int]]:
    """Write ``<out>/labels/<name>.npy`` (int64, -1 = empty) per label column; returns the
    label maps ``{name: {original value: int}}``."""
    from centrobind.checkpoint import atomic_write

    label_maps = {}
    for name in labels:
        arr, mapping = encode_labels(name, man.columns[name])
        (out / "labels").mkdir(exist_ok=True)
        atomic_write(out / "labels" / f"{name}.npy", lambda f, a=arr: np.save(f, a))
        label_maps[name] = mapping
    return label_maps


def _write_meta(
    out: Path,
    man: Manifest,
    mods: list[str],
    labels: list[str],
    label_maps: dict[str, dict[str, int]],
    state: ProgressState,
) -> None:
    """Write ``<out>/meta.json``; the dataset is complete once it exists."""
    from centrobind.checkpoint import atomic_write_text

    meta = {
        "name": out.resolve().name,
        "modalities": mods,
        "labels": labels,
        "featurizers": {m: state.modality(m)["entry"] for m in mods},
        "label_maps": label_maps,
        "source": str(man.path),
    }
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
