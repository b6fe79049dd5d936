"""Saved search indexes: embed a corpus once, then search it without re-embedding.

``centrobind index build`` / :func:`build_index` writes an index folder:

- ``index.json``: ``format``, ``run`` (``path``, ``weights_sha256`` of its ``model.safetensors``),
  ``corpus`` (``path``: absolute folder or builtin name, ``digest``, ``rows``, ``items``),
  ``target``, ``dtype``, ``dim``, ``count``, ``faiss`` (``spec``, ``params``) or null,
  ``created`` (UTC), ``centrobind`` (version).
- ``embeddings.npy``: float32 or float16 ``[count, D]``, unit rows: the corpus rows that have the
  target modality, in row order.
- ``ids.npy``: int64 ``[count]``, the corpus row of each embedding.
- ``faiss.index`` (with ``--faiss SPEC``): faiss's own file format (``faiss.write_index``).
- ``items.offsets.npy`` (when the corpus has ``items/<target>.jsonl``): int64 ``[N + 1]``, the
  byte offset of each corpus row's line, so ``search`` shows raw items without reading them all.

It is written into a temporary sibling folder renamed at the end (an existing index folder is
replaced); a full disk is one line and leaves nothing. The corpus is read block by block and
never held whole.

:func:`load_index` opens an index without reading its embeddings and refuses, in one line, an
index built with other weights than the run given (or than its recorded run has now) and a corpus
that changed since (cheap: the corpus's recorded digests, ``d2:``, see
:mod:`centrobind.digests`; without them, sizes plus sampled windows of its data files,
``s1:``; a builtin by its content fingerprint). :meth:`SavedIndex.search` is exact by default: it
reads ``corpus_chunk`` rows at a time with plain reads (the pages are not mapped into the
process, so resident memory stays one block plus the running top-k whatever ``count`` is) and
ranks exactly as :class:`centrobind.Index` does (score descending, ties by ascending row).
With a ``faiss.index`` it searches that instead (approximate for IVF/HNSW; faiss holds its index
in memory).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .data import BUILTINS, load
from .data.fingerprint import fingerprint
from .data.npywriter import NpyWriter
from .data.ondisk import open_dataset
from .digests import _sample, data_digest, data_files
from .diskfull import disk_full_errors
from .errors import CentrobindError, CentrobindWarning, DatasetError
from .runs import Run, embed_features, load_run
from .search import _as_matrix, _block_topk, _order_rows

__all__ = ["INDEX_FORMAT", "SavedIndex", "build_index", "load_index", "run_digest"]

INDEX_FORMAT = "centrobind-index/1"
#: Corpus rows read and embedded per block while building.
BUILD_ROWS = 1 << 16
#: At most this many rows (a seeded sample) train a faiss index that needs training (IVF, PQ).
FAISS_TRAIN_ROWS = 1 << 18
_DTYPES = ("float32", "float16")


def run_digest(run_dir: str | os.PathLike[str]) -> str:
    """SHA-256 of a run's ``model.safetensors`` (weights and standardisation): its identity."""
    h = hashlib.sha256()
    with open(Path(run_dir) / "model.safetensors", "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _corpus_ref(corpus: str | os.PathLike[str]) -> tuple[str, Path | None]:
    """(what ``index.json`` records, the folder or None for a builtin)."""
    p = Path(corpus)
    if p.is_dir():
        return str(p.resolve()), p
    if str(corpus) in BUILTINS:
        return str(corpus), None
    raise CentrobindError(f"{corpus}: corpus is not a dataset folder or a builtin ({BUILTINS})")


def corpus_digest(corpus: str | os.PathLike[str]) -> str:
    """A cheap identity of a corpus (see the module docstring): ``d2:``, ``s1:`` or ``b2:``."""
    _, folder = _corpus_ref(corpus)
    if folder is None:
        return fingerprint(load(str(corpus)))
    recorded = data_digest(folder)
    if recorded is not None:
        return recorded
    h = hashlib.blake2b(digest_size=16)
    for p in data_files(folder):
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            h.update(f"{p.relative_to(folder).as_posix()}|{size}|{_sample(f, size)}\n".encode())
    return "s1:" + h.hexdigest()


def _file_sample(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return {"size": size, "sample": _sample(f, size)}


# -- building ----------------------------------------------------------------------------------


def _corpus_blocks(
    corpus: str | os.PathLike[str], target: str, dim: int
) -> tuple[int, Iterator[tuple[int, np.ndarray, np.ndarray]]]:
    """``(N, blocks)``: blocks of ``(first row, features float32 [b, D_m], present bool [b])``
    of the target modality, read from disk (a folder) or from a builtin in memory."""
    _, folder = _corpus_ref(corpus)
    if folder is None:
        ds = load(str(corpus))
        mods, dims = ds.modalities, ds.dims
    else:
        disk = open_dataset(folder, min_modalities=1)
        mods, dims = disk.modalities, disk.dims
    if target not in mods:
        raise CentrobindError(f"the corpus has no modality {target!r} ({', '.join(mods)})")
    if dims[target] != dim:
        raise CentrobindError(
            f"modality {target!r} has dim {dims[target]} in the corpus but {dim} in the run"
        )
    n = len(ds) if folder is None else len(disk)

    def blocks() -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for a in range(0, n, BUILD_ROWS):
            b = min(n, a + BUILD_ROWS)
            if folder is None:
                yield a, ds.features[target][a:b].numpy(), ds.present(target)[a:b].numpy()
                continue
            x = disk.stores[target].read(a, b)
            missing = np.isnan(x).all(axis=1)
            bad = ~missing & ~np.isfinite(x).all(axis=1)
            if bad.any():
                raise DatasetError(
                    f"{disk.stores[target].path}: row {a + int(np.flatnonzero(bad)[0])} has "
                    "NaN/inf in a present sample (a missing sample must be an all-NaN row)"
                )
            yield a, x, ~missing

    return n, blocks()


def _write_item_offsets(folder: Path | None, target: str, n: int, out: Path) -> Any:
    """``out/items.offsets.npy`` for the corpus's ``items/<target>.jsonl`` when it has one line
    per corpus row; returns its ``index.json`` entry (None: no items used)."""
    if folder is None:
        return None
    path = folder / "items" / f"{target}.jsonl"
    if not path.is_file():
        return None
    with open(path, "rb") as f, NpyWriter(out, np.int64) as w:
        pos, buf = 0, []
        for line in f:
            buf.append(pos)
            pos += len(line)
            if len(buf) == 1 << 16:
                w.write(np.asarray(buf))
                buf = []
        w.write(np.asarray([*buf, pos]))
        lines = w.rows - 1
    if lines != n:
        out.unlink()
        warnings.warn(
            f"{path}: {lines} lines for {n} corpus rows; raw items are not shown for this index",
            CentrobindWarning,
            stacklevel=3,
        )
        return None
    return {"file": f"items/{target}.jsonl", **_file_sample(path)}


def _faiss_module() -> Any:
    try:
        import faiss
    except ImportError:
        raise CentrobindError(
            'a faiss index needs faiss: pip install "centrobind[faiss]" (faiss-cpu)'
        ) from None
    return faiss


def _build_faiss(emb: _Rows, spec: str, params: str | None, seed: int, path: Path) -> None:
    """Train (on a seeded sample of at most :data:`FAISS_TRAIN_ROWS`) and fill a faiss index
    from the saved embeddings, block by block; write it to ``path``."""
    faiss = _faiss_module()
    try:
        index = faiss.index_factory(emb.dim, spec, faiss.METRIC_INNER_PRODUCT)
        if params:
            faiss.ParameterSpace().set_index_parameters(index, params)
    except RuntimeError as e:
        raise CentrobindError(f"--faiss {spec!r}: {_faiss_message(e)}") from None
    if not index.is_trained:
        rng = np.random.default_rng([seed, 0xFA155])
        n_train = min(emb.count, FAISS_TRAIN_ROWS)
        rows = np.sort(rng.choice(emb.count, n_train, replace=False))
        try:
            index.train(emb.take(rows))
        except RuntimeError as e:
            raise CentrobindError(
                f"--faiss {spec!r}: training failed: {_faiss_message(e)}"
            ) from None
    for _, block in emb.blocks(BUILD_ROWS):
        index.add(np.ascontiguousarray(block.numpy()))
    faiss.write_index(index, str(path))


def _faiss_message(e: BaseException) -> str:
    """faiss's "Error in <C++ signature> at <file>:<line>: <why>" -> "<why>"."""
    text = " ".join(str(e).split())
    text = re.sub(r"^.*?Error in .*? at \S+:\d+: (Error: )?", "", text)
    return text[:200]


def build_index(
    run: str | os.PathLike[str] | Run,
    corpus: str | os.PathLike[str],
    target: str,
    out: str | os.PathLike[str],
    faiss: str | None = None,
    faiss_params: str | None = None,
    dtype: str = "float32",
    batch_size: int = 8192,
    device: str | None = None,
    seed: int = 0,
    progress: bool = False,
) -> SavedIndex:
    """Embed the rows of ``corpus`` (a dataset folder or builtin name) that have modality
    ``target`` with ``run`` (a run folder or a loaded :class:`~centrobind.runs.Run`) and save a
    search index in folder ``out`` (module docstring). Memory: one block of
    :data:`BUILD_ROWS` rows, whatever the corpus size (plus the faiss index when asked).

    Args:
        faiss: a faiss index-factory string (``"IVF1024,Flat"``, ``"HNSW32"``, ...) to build too.
        faiss_params: faiss search parameters saved as the default (``"nprobe=16"``,
            ``"efSearch=64"``).
        dtype: ``"float32"`` or ``"float16"`` (half the disk and reads; scores within ~1e-3).
        seed: the faiss training sample.
        device: where the run's encoders run (for a run folder).

    Returns:
        the new index (:func:`load_index` of ``out``).
    """
    if dtype not in _DTYPES:
        raise CentrobindError(f"--dtype must be float32 or float16, got {dtype!r}")
    out = Path(out)
    if out.exists() and not (out / "index.json").is_file():
        if not out.is_dir() or any(out.iterdir()):
            raise CentrobindError(f"{out}: exists and is not an index folder; choose a new --out")
    r = run if isinstance(run, Run) else load_run(Path(run), device=device)
    if target not in r.binder.dims:
        raise CentrobindError(
            f"unknown modality {target!r}; this run has {', '.join(r.binder.modalities)}"
        )
    ref, folder = _corpus_ref(corpus)
    digest = corpus_digest(corpus)
    n, blocks = _corpus_blocks(corpus, target, r.binder.dims[target])
    meta: dict[str, Any] = {
        "format": INDEX_FORMAT,
        "run": {"path": str(Path(r.path).resolve()), "weights_sha256": run_digest(r.path)},
        "corpus": {"path": ref, "digest": digest, "rows": n, "items": None},
        "target": target,
        "dtype": dtype,
        "dim": int(r.binder.embed_dim),
        "count": 0,
        "faiss": {"spec": faiss, "params": faiss_params} if faiss else None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "centrobind": _version(),
    }
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with disk_full_errors(out):
            _write_folder(tmp, meta, r, blocks, n, folder, seed, batch_size, progress)
            if corpus_digest(corpus) != digest:
                raise CentrobindError(f"{corpus}: the corpus changed while it was indexed")
            _replace_folder(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return load_index(out, run=r, check=False)


def _write_folder(
    tmp: Path,
    meta: dict[str, Any],
    run: Run,
    blocks: Iterator[tuple[int, np.ndarray, np.ndarray]],
    n: int,
    folder: Path | None,
    seed: int,
    batch_size: int,
    progress: bool,
) -> None:
    """Every file of an index into ``tmp`` (see :func:`build_index`), ``index.json`` last."""
    from tqdm.auto import tqdm

    target, dim = meta["target"], meta["dim"]
    tmp.mkdir(parents=True)
    with (
        NpyWriter(tmp / "embeddings.npy", meta["dtype"], (dim,)) as emb,
        NpyWriter(tmp / "ids.npy", np.int64) as ids,
        tqdm(total=n, desc="index", unit="row", disable=not progress) as bar,
    ):
        for a, x, present in blocks:
            keep = np.flatnonzero(present)
            if len(keep):
                z = embed_features(run, target, torch.from_numpy(x[keep]), batch_size)
                emb.write(z.numpy())
                ids.write(keep + a)
            bar.update(len(present))
    if emb.rows == 0:
        raise CentrobindError(f"the corpus has no row with modality {target!r}")
    meta["count"] = emb.rows
    meta["corpus"]["items"] = _write_item_offsets(folder, target, n, tmp / "items.offsets.npy")
    if meta["faiss"]:
        rows = _Rows(tmp / "embeddings.npy", meta["dtype"], dim, meta["count"])
        _build_faiss(
            rows, meta["faiss"]["spec"], meta["faiss"]["params"], seed, tmp / "faiss.index"
        )
    text = json.dumps(meta, indent=1) + "\n"
    with open(tmp / "index.json", "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _replace_folder(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing (index or empty) ``out`` is replaced."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if old.exists():
            os.replace(old, out)
        raise
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def _version() -> str:
    from . import __version__

    return __version__


# -- reading and searching ---------------------------------------------------------------------


class _Rows:
    """The rows of a saved ``[count, D]`` ``.npy`` read with plain reads (no memory map)."""

    def __init__(self, path: Path, dtype: str, dim: int, count: int) -> None:
        self.path, self.dim, self.count = path, dim, count
        self.dtype = np.dtype(dtype)
        try:
            with open(path, "rb") as f:
                major, _ = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0
                if major != 1:
                    read = np.lib.format.read_array_header_2_0
                shape, fortran, found = read(f)
                self.offset = f.tell()
                size = os.fstat(f.fileno()).st_size
        except (OSError, ValueError) as e:
            raise CentrobindError(f"{path}: unreadable ({' '.join(str(e).split())})") from None
        if shape != (count, dim) or found != self.dtype or fortran:
            raise CentrobindError(
                f"{path}: holds {found} {shape}, index.json says {self.dtype} ({count}, {dim})"
            )
        if size < self.offset + count * dim * self.dtype.itemsize:
            raise CentrobindError(f"{path}: truncated ({size} bytes); rebuild the index")

    def blocks(self, rows: int) -> Iterator[tuple[int, Tensor]]:
        """``(first row, float32 [b, D])`` blocks of ``rows`` rows, in order. Each block is
        valid until the next one is read (one buffer is reused)."""
        buf = np.empty((min(rows, max(self.count, 1)), self.dim), dtype=self.dtype)
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self.offset)
            for a in range(0, self.count, rows):
                b = min(self.count, a + rows) - a
                view = buf[:b].data.cast("B")
                got = 0
                while got < len(view):
                    k = f.readinto(view[got:])
                    if not k:
                        raise CentrobindError(f"{self.path}: truncated; rebuild the index")
                    got += k
                yield a, torch.from_numpy(buf[:b]).float()

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (sorted) as float32 ``[len(rows), D]``."""
        arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
        return np.ascontiguousarray(arr[rows], dtype=np.float32)


def topk_blocks(
    blocks: Iterator[tuple[int, Tensor]], queries: Tensor, k: int, query_chunk: int = 1024
) -> tuple[Tensor, Tensor]:
    """Exact top-``k`` over corpus blocks ``(first row, [b, D])`` read once, in order, for
    ``queries [q, D]`` -> ``(scores [q, k], rows [q, k])`` (``k`` at most the corpus rows), best
    first, ties by ascending row: the same ranking as :func:`centrobind.search.topk_exact`.
    Memory: one ``[query_chunk, b]`` score block plus the running ``[q, 2k]``."""
    q = queries.shape[0]
    chunks = [queries[s : s + query_chunk] for s in range(0, q, query_chunk)]
    best = [(torch.empty(len(c), 0), torch.empty(len(c), 0, dtype=torch.long)) for c in chunks]
    for offset, block in blocks:
        for j, qb in enumerate(chunks):
            s, i = _block_topk(qb @ block.T, k, offset)
            s, i = _order_rows(torch.cat([best[j][0], s], 1), torch.cat([best[j][1], i], 1))
            best[j] = (s[:, :k], i[:, :k])
    if not chunks:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    return torch.cat([b[0] for b in best]), torch.cat([b[1] for b in best])


class SavedIndex:
    """A saved index folder, opened by :func:`load_index` (module docstring).

    Attributes:
        path: the folder; ``meta``: its ``index.json``; ``target``: the corpus modality;
        ``run_path``: the run it was built with; ``corpus``: the corpus folder (or builtin name)
        it was built from; ``ids``: int64 ``[count]`` corpus rows (memory-mapped).

    :meth:`search` returns corpus row numbers, like :meth:`centrobind.Index.search`.
    """

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path, self.meta = path, meta
        self.target: str = meta["target"]
        self.run_path = Path(meta["run"]["path"])
        self.corpus: str = meta["corpus"]["path"]
        self.count: int = int(meta["count"])
        self._rows = _Rows(path / "embeddings.npy", meta["dtype"], int(meta["dim"]), self.count)
        self.ids: np.ndarray = _open_ids(path / "ids.npy", self.count)
        self._faiss: Any = None

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return (
            f"SavedIndex({str(self.path)!r}, target={self.target!r}, count={self.count}, "
            f"D={self.dim}, {self.meta['dtype']}, faiss={self.faiss_spec!r})"
        )

    @property
    def dim(self) -> int:
        """``D``, the embedding width."""
        return self._rows.dim

    @property
    def faiss_spec(self) -> str | None:
        """The faiss index-factory string of ``faiss.index``, None without one."""
        f = self.meta.get("faiss")
        return f["spec"] if f else None

    @property
    def embeddings(self) -> np.ndarray:
        """The saved embeddings ``[count, D]`` as a read-only memory map (float32 or float16)."""
        out: np.ndarray = np.load(self.path / "embeddings.npy", mmap_mode="r", allow_pickle=False)
        return out

    def search(
        self,
        queries: np.ndarray | Tensor,
        k: int = 10,
        backend: str = "auto",
        faiss_params: str | None = None,
        corpus_chunk: int = 16384,
        query_chunk: int = 1024,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` corpus rows with the highest inner product for each query.

        Args:
            queries: float ``[q, D]`` (one ``[D]`` vector is ``[1, D]``), e.g. from
                :meth:`centrobind.inference.Model.encode`.
            k: hits per query (more than ``count`` returns them all).
            backend: ``"auto"`` (faiss when the index has ``faiss.index``, else exact),
                ``"exact"`` or ``"faiss"``.
            faiss_params: faiss search parameters (``"nprobe=32"``), default those saved.
            corpus_chunk, query_chunk: block sizes of the exact search (memory: one
                ``query_chunk x corpus_chunk`` float32 score block and one corpus block).

        Returns:
            ``(scores, ids)``: float32 ``[q, min(k, count)]`` best first, and int64 corpus rows.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if backend not in ("auto", "exact", "faiss"):
            raise ValueError(f"unknown backend {backend!r}; use 'auto', 'exact' or 'faiss'")
        if corpus_chunk < 1 or query_chunk < 1:
            raise ValueError("corpus_chunk and query_chunk must be >= 1")
        q = _as_matrix(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have {q.shape[1]} columns, the index has D = {self.dim}")
        kk = min(int(k), self.count)
        if kk == 0 or q.shape[0] == 0:
            return np.empty((q.shape[0], kk), np.float32), np.empty((q.shape[0], kk), np.int64)
        use_faiss = backend == "faiss" or (backend == "auto" and self.faiss_spec is not None)
        if use_faiss:
            s, rows = self._faiss_search(q.numpy(), kk, faiss_params)
        else:
            st, rt = topk_blocks(self._rows.blocks(corpus_chunk), q, kk, query_chunk)
            s, rows = st.numpy(), rt.numpy()
        return s, np.asarray(self.ids[rows.reshape(-1)]).reshape(rows.shape)

    def _faiss_search(
        self, q: np.ndarray, k: int, params: str | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.faiss_spec is None:
            raise CentrobindError(f"{self.path}: has no faiss.index (built without --faiss)")
        faiss = _faiss_module()
        if self._faiss is None:
            self._faiss = faiss.read_index(str(self.path / "faiss.index"))
            if self._faiss.ntotal != self.count:
                raise CentrobindError(f"{self.path}/faiss.index: holds {self._faiss.ntotal} rows")
        params = params if params is not None else self.meta["faiss"].get("params")
        try:
            faiss.ParameterSpace().set_index_parameters(self._faiss, params or "")
        except RuntimeError as e:
            raise CentrobindError(f"faiss parameters {params!r}: {_faiss_message(e)}") from None
        s, rows = self._faiss.search(np.ascontiguousarray(q, dtype=np.float32), k)
        if (rows < 0).any():
            raise CentrobindError(
                f"the faiss index found fewer than k = {k} hits for a query; search more lists "
                "(e.g. nprobe=64) or use the exact backend"
            )
        return s.astype(np.float32), rows.astype(np.int64)

    def items(self, rows: Sequence[int]) -> list[str | None] | None:
        """The corpus's raw items (texts / file paths) of corpus rows ``rows``, None when the
        corpus had no ``items/<target>.jsonl`` (one line per row) when the index was built."""
        entry = self.meta["corpus"].get("items")
        if not entry or not Path(self.corpus).is_dir():
            return None
        offsets = np.load(self.path / "items.offsets.npy", mmap_mode="r", allow_pickle=False)
        out: list[str | None] = []
        with open(Path(self.corpus) / entry["file"], "rb") as f:
            for r in rows:
                f.seek(int(offsets[r]))
                v = json.loads(f.read(int(offsets[r + 1] - offsets[r])))
                out.append(v if isinstance(v, str) else None)
        return out

    def check(self, run: str | os.PathLike[str] | Run | None = None) -> None:
        """Refuse (one line) other weights than the index was built with (``run``, default
        the recorded run when it still exists) and a corpus that changed since. A corpus that
        is gone is a warning (search still works; no raw items)."""
        where = f"index {self.path}"
        run_dir = Path(run.path) if isinstance(run, Run) else Path(run) if run else None
        if run_dir is None and (self.run_path / "model.safetensors").is_file():
            run_dir = self.run_path
        if run_dir is not None:
            try:
                now = run_digest(run_dir)
            except OSError as e:
                raise CentrobindError(
                    f"{run_dir}: cannot read its weights ({e.strerror})"
                ) from None
            if now != self.meta["run"]["weights_sha256"]:
                raise CentrobindError(
                    f"{where} was built with other weights (run {self.run_path}) than {run_dir} "
                    "has; rebuild it with `centrobind index build`"
                )
        ref = self.corpus
        if not Path(ref).is_dir() and ref not in BUILTINS:
            warnings.warn(
                f"{where}: its corpus {ref} is gone; searching without checking it (no raw items)",
                CentrobindWarning,
                stacklevel=2,
            )
            return
        try:
            changed = corpus_digest(ref) != self.meta["corpus"]["digest"]
            entry = self.meta["corpus"].get("items")
            if entry and not changed:
                changed = _file_sample(Path(ref) / entry["file"]) != {
                    "size": entry["size"],
                    "sample": entry["sample"],
                }
        except (DatasetError, OSError):
            changed = True
        if changed:
            raise CentrobindError(
                f"{where}: its corpus {ref} changed since the index was built; rebuild it with "
                "`centrobind index build`"
            )


def _open_ids(path: Path, count: int) -> np.ndarray:
    try:
        ids: np.ndarray = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise CentrobindError(f"{path}: unreadable ({' '.join(str(e).split())})") from None
    if ids.shape != (count,) or ids.dtype != np.int64:
        raise CentrobindError(f"{path}: holds {ids.dtype} {ids.shape}, expected int64 ({count},)")
    return ids


def _read_meta(path: Path) -> dict[str, Any]:
    file = path / "index.json"
    if not file.is_file():
        raise CentrobindError(f"{path}: not an index folder (no index.json)")
    try:
        meta = json.loads(file.read_bytes().decode("utf-8"))
        if meta.get("format") != INDEX_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {INDEX_FORMAT!r}")
        str(meta["run"]["path"]), str(meta["run"]["weights_sha256"]), str(meta["target"])
        str(meta["corpus"]["path"]), str(meta["corpus"]["digest"])
        int(meta["count"]), int(meta["dim"])
        if meta["dtype"] not in _DTYPES:
            raise ValueError(f"dtype {meta['dtype']!r}")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        why = " ".join(str(e).split())[:160] or type(e).__name__
        raise CentrobindError(f"{file}: not a valid index description ({why})") from None
    return dict(meta)


def load_index(
    path: str | os.PathLike[str],
    run: str | os.PathLike[str] | Run | None = None,
    check: bool = True,
) -> SavedIndex:
    """Open a saved index folder (written by :func:`build_index`) without reading its
    embeddings.

    With ``check`` (default), refuses in one line an index built with other weights than
    ``run`` (a run folder or :class:`~centrobind.runs.Run`; default: the run recorded in
    ``index.json``, when it still exists) and one whose corpus changed since it was built
    (:meth:`SavedIndex.check`). Query with ``centrobind.load(index.run_path)`` (or the run
    given), e.g. ``index.search(model.encode("fac", x), k=10)``.
    """
    p = Path(path)
    index = SavedIndex(p, _read_meta(p))
    if check:
        index.check(run)
    return index
