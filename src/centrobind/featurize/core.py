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
from centrobind.runlock import LOCK_NAME

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
    shard: str = ""  # "I/N (rows lo-hi)" when this process featurized one shard
    finalized: bool = True  # meta.json written (a shard: the last one to finish writes it)

    def line(self) -> str:
        """One summary line, e.g. for the CLI."""
        parts = [
            f"{m} {self.encoded[m]} ok, {self.empty[m]} empty, {self.failed[m]} unreadable"
            for m in self.modalities
        ]
        resumed = (
            f"; {self.resumed_rows} rows resumed from an earlier run" if self.resumed_rows else ""
        )
        what = f"shard {self.shard}, {self.rows} rows," if self.shard else f"{self.rows} rows"
        done = ""
        if self.shard:
            done = (
                "; all shards done: the dataset is complete"
                if self.finalized
                else "; other shards still running (the last to finish completes the dataset)"
            )
        return (
            f"featurized {what} into {self.out} in {self.seconds:.1f}s: "
            + "; ".join(parts)
            + resumed
            + (
                f" (unreadable rows listed in {self.out}/featurize*.json)"
                if sum(self.failed.values())
                else ""
            )
            + done
        )

    def lists(self) -> str:
        """The final modality and label lists, e.g. ``modalities: caption (minilm), image
        (pixels); labels: shape``."""
        mods = ", ".join(f"{m} ({self.encoders[m]})" for m in self.modalities)
        labels = ", ".join(self.labels) or "none (--label COLUMN adds one)"
        return f"modalities: {mods}; labels: {labels}"


@dataclass(frozen=True)
class Layout:
    """Where one featurize process writes: the whole manifest (``count`` 1) or shard ``index``
    (0-based) of ``count``, rows ``[index * N // count, (index + 1) * N // count)``, into
    ``modalities/<m>/<index:05d>.npy`` (a shard folder, read as one modality), stored as
    ``dtype``."""

    index: int = 0
    count: int = 1
    dtype: str = "float32"

    @classmethod
    def parse(cls, shard: str | tuple[int, int] | None, dtype: str) -> Layout:
        if dtype not in ("float32", "float16"):
            raise CentrobindError(f"--dtype must be float32 or float16, got {dtype!r}")
        if shard is None:
            return cls(dtype=dtype)
        if isinstance(shard, str):
            a, sep, b = shard.partition("/")
            if not (sep and a.strip().isdigit() and b.strip().isdigit()):
                raise CentrobindError(f"--shard expects I/N (e.g. 0/4), got {shard!r}")
            shard = (int(a), int(b))
        i, n = shard
        if n < 1 or not 0 <= i < n:
            raise CentrobindError(f"--shard I/N needs N >= 1 and 0 <= I < N, got {i}/{n}")
        return cls(i, n, dtype)

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def rows(self, n: int) -> tuple[int, int]:
        return self.index * n // self.count, (self.index + 1) * n // self.count

    def tag(self, index: int | None = None) -> str:
        return f"{self.index if index is None else index:05d}-of-{self.count:05d}"

    @property
    def state_name(self) -> str:
        return f"featurize-shard-{self.tag()}.json" if self.sharded else STATE

    @property
    def lock_name(self) -> str:
        return f".featurize-shard-{self.tag()}.lock" if self.sharded else LOCK_NAME

    def features(self, out: Path, m: str) -> Path:
        if self.sharded:
            return out / "modalities" / m / f"{self.index:05d}.npy"
        return out / "modalities" / f"{m}.npy"


def _fingerprint(
    manifest: Path, specs: dict[str, str], labels: list[str], chunk: int, layout: Layout
) -> str:
    what: dict[str, Any] = {
        "manifest": file_sha256(manifest),
        "encoders": specs,
        "labels": labels,
        "chunk": chunk,
    }
    if layout.sharded or layout.dtype != "float32":  # as before for the defaults (resumable)
        what.update(shards=layout.count, dtype=layout.dtype)
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


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


_FLOAT16_MAX = float(np.finfo(np.float16).max)


def _encode_chunk(
    enc: Encoder, items: list[tuple[int, str]], batch_size: int, dtype: str = "float32"
) -> tuple[list[int], np.ndarray, dict[int, str]]:
    """Encode ``(row, item)`` pairs: (rows encoded, float32 [n, dim], {row: reason} failed).
    With ``dtype`` float16, a row beyond its range fails (never stored as inf)."""
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
            fin = np.isfinite(x).all(axis=1).reshape(-1)
            fits = fin if dtype == "float32" else fin & (np.abs(x) <= _FLOAT16_MAX).all(axis=1)
            finite: list[bool] = [bool(v) for v in fits]
            for r, good, f in zip(rs, finite, fin.tolist(), strict=True):
                if not f:
                    failed[r] = f"{item_of[r]}: encoder produced NaN/inf"
                elif not good:
                    failed[r] = (
                        f"{item_of[r]}: a value beyond float16's range (65504); featurize with "
                        "--dtype float32"
                    )
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
    dtype: str = "float32",
    shard: str | tuple[int, int] | None = None,
) -> FeaturizeSummary:
    """Featurize ``manifest`` (CSV/TSV/JSONL/Parquet) into the dataset folder ``out``.

    ``encoders`` maps a column to an encoder spec (default by column kind: text -> ``minilm``,
    image files -> ``imstats``, audio files -> ``logmel``); ``labels`` names label columns. Rows
    are processed in chunks of ``chunk_rows`` (batches of ``batch_size`` inside) and written to
    memory-mapped ``.npy`` files of ``dtype`` (``float16``: half the disk and reads); re-running
    the same call after an interruption skips the chunks already written. Unreadable items are
    reported by row and stored as missing. The folder gets ``digests.json`` (cheap integrity
    checks, ``centrobind verify``).

    ``shard="I/N"`` (or ``(I, N)``, 0-based) featurizes only the I-th of N contiguous row ranges,
    into ``modalities/<m>/<I:05d>.npy``: N processes (or machines sharing the folder) run at
    once, each resumable on its own; the last one to finish writes the labels, items,
    ``meta.json`` and digests, and the folder is one dataset.
    """
    t0 = time.perf_counter()
    if batch_size < 1:
        raise CentrobindError(f"--batch-size must be >= 1, got {batch_size}")
    if chunk_rows < 1:
        raise CentrobindError(f"chunk_rows must be >= 1, got {chunk_rows}")
    encoders, labels = dict(encoders or {}), list(labels or [])
    man = read_manifest(manifest)
    mods, kinds, specs = _plan(man, encoders, labels)
    layout = Layout.parse(shard, dtype)
    dev = device_name(device)
    out = Path(out)
    fp = _fingerprint(man.path, specs, labels, chunk_rows, layout)
    ProgressState.open(out, fp, layout.state_name)  # refuse a folder not ours before locking it
    from centrobind.runlock import RunLock

    # a second featurize into `out` (or of the same shard) fails at once
    with RunLock(out, purpose="featurize", name=layout.lock_name):
        summary = _featurize_locked(
            out, man, mods, kinds, specs, labels, fp, dev, allow_random, progress,
            batch_size, chunk_rows, layout,
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
    layout: Layout,
) -> FeaturizeSummary:
    """:func:`featurize` while it holds ``out``'s (or its shard's) lock: resume check, encode,
    write; then the dataset's labels, items, meta.json and digests (a shard: once all are done)."""
    if layout.count > len(man):
        raise CentrobindError(
            f"--shard {layout.index}/{layout.count}: more shards than the manifest's "
            f"{len(man)} rows; use at most {len(man)}"
        )
    lo, hi = layout.rows(len(man))
    part = man.part(lo, hi) if layout.sharded else man
    n = len(part)
    state = ProgressState.open(out, fp, layout.state_name)
    n_chunks = (n + chunk_rows - 1) // chunk_rows
    _recheck(out, part, mods, state, n, chunk_rows, layout)
    live = _load_encoders(mods, kinds, specs, state, n_chunks, dev, allow_random, out)
    out.mkdir(parents=True, exist_ok=True)
    state.save()
    items = _column_items(part, mods, state)
    encoded_now, seconds_now, resumed = _encode_columns(
        out, n, mods, items, live, state, chunk_rows, batch_size, progress, part.where, layout
    )
    summary = FeaturizeSummary(out=out, rows=n, modalities=mods, encoders=specs, labels=labels)
    for m in mods:
        failed_rows = {int(r) for r in state.modality(m)["failed"]}
        empty = sum(c is None for c in part.columns[m])
        summary.empty[m] = empty
        summary.failed[m] = len(failed_rows)
        summary.encoded[m] = n - empty - len(failed_rows)
        if seconds_now[m] > 0:
            summary.items_per_s[m] = encoded_now[m] / seconds_now[m]
    summary.resumed_rows = resumed
    if layout.sharded:
        summary.shard = f"{layout.index}/{layout.count} (rows {lo}-{hi - 1})"
        state.data["complete"] = True
        state.save()
        summary.finalized = _finish_shards(out, man, mods, labels, fp, layout)
    else:
        failed = {m: {int(r) for r in state.modality(m)["failed"]} for m in mods}
        entries = {m: state.modality(m)["entry"] for m in mods}
        _write_dataset(out, man, mods, labels, failed, entries, layout)
        state.data["complete"] = True
        state.save()
    _warn_empty_rows(part, mods, state)
    _warn_label_like(summary, part, state)
    dead = [m for m in mods if summary.encoded[m] == 0 and not layout.sharded]
    if dead:
        raise CentrobindError(
            f"column {dead[0]!r}: no item could be read ({summary.failed[dead[0]]} unreadable, "
            f"see {out / STATE})"
        )
    return summary


def _write_dataset(
    out: Path,
    man: Manifest,
    mods: list[str],
    labels: list[str],
    failed: dict[str, set[int]],
    entries: dict[str, Any],
    layout: Layout,
) -> None:
    """The dataset's labels, items (``None`` for unreadable rows), ``meta.json`` (the dataset
    is complete once it exists) and ``digests.json``, over the whole manifest."""
    from centrobind.digests import record_digests

    label_maps = _write_labels(out, man, labels)
    for m in mods:
        resolve = entries[m]["kind"] != "text"
        cells = man.columns[m]
        write_items(
            out,
            m,
            [
                None if (c is None or r in failed[m]) else (man.resolve(c) if resolve else c)
                for r, c in enumerate(cells)
            ],
        )
    _write_meta(out, man, mods, labels, label_maps, entries, layout)
    record_digests(out)


def _finish_shards(
    out: Path, man: Manifest, mods: list[str], labels: list[str], fp: str, layout: Layout
) -> bool:
    """Once every shard's state says complete, write the dataset's shared files (one shard at a
    time, under ``.finalize.lock``; a shard that finishes while another checks waits for it, so
    the last one always sees all done). True when the dataset is complete."""
    import fcntl

    n = len(man)
    with open(out / ".finalize.lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes
        failed: dict[str, set[int]] = {m: set() for m in mods}
        entries: dict[str, Any] = {}
        for i in range(layout.count):
            path = out / f"featurize-shard-{layout.tag(i)}.json"
            try:
                st = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return False
            if st.get("fingerprint") != fp or st.get("complete") is not True:
                return False
            lo = i * n // layout.count
            for m in mods:
                ms = st["modalities"][m]
                failed[m].update(lo + int(r) for r in ms["failed"])
                entries.setdefault(m, ms["entry"])
        _write_dataset(out, man, mods, labels, failed, entries, layout)
        dead = [
            m
            for m in mods
            if all(c is None or r in failed[m] for r, c in enumerate(man.columns[m]))
        ]
        if dead:
            raise CentrobindError(
                f"column {dead[0]!r}: no item could be read in any shard (see "
                f"{out}/featurize-shard-*.json)"
            )
    return True


def _warn_empty_rows(man: Manifest, mods: list[str], state: ProgressState) -> None:
    """Warn about rows with no modality at all (every cell empty or unreadable)."""
    n = len(man)
    has = np.zeros(n, dtype=bool)
    for m in mods:
        failed = {int(r) for r in state.modality(m)["failed"]}
        has |= np.array([c is not None and r not in failed for r, c in enumerate(man.columns[m])])
    empty = np.flatnonzero(~has)
    if len(empty):
        rows = (empty[:10] + man.offset).tolist()  # rows of the whole manifest (a shard: offset)
        shown = ", ".join(map(str, rows)) + (", ..." if len(empty) > 10 else "")
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


def _features_ok(path: Path, n: int, dim: int, dtype: str = "float32") -> bool:
    """``path`` is a ``dtype`` ``[n, dim]`` ``.npy`` file of its own (not a symlink: featurize
    writes into it) (its header read, nothing else)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        mm = np.lib.format.open_memmap(path, mode="r")
        ok = mm.shape == (n, dim) and mm.dtype == np.dtype(dtype)
        del mm
        return ok
    except (OSError, ValueError):
        return False


def _recheck(
    out: Path,
    man: Manifest,
    mods: list[str],
    state: ProgressState,
    n: int,
    chunk_rows: int,
    layout: Layout,
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
        path = layout.features(out, m)
        if ms.get("created") and not _features_ok(path, n, int(ms["entry"]["dim"]), layout.dtype):
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
    layout: Layout = Layout(),
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
            mm = open_features(
                layout.features(out, m), n, enc.dim, not ms.get("created"), layout.dtype
            )
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
                rows, x, failed = _encode_chunk(enc, pairs, batch_size, layout.dtype)
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
    entries: dict[str, Any],
    layout: Layout,
) -> None:
    """Write ``<out>/meta.json``; the dataset is complete once it exists."""
    from centrobind.checkpoint import atomic_write_text

    meta = {
        "name": out.resolve().name,
        "modalities": mods,
        "labels": labels,
        "featurizers": {m: entries[m] for m in mods},
        "label_maps": label_maps,
        "source": str(man.path),
        "dtype": layout.dtype,
        "shards": layout.count,
    }
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
