"""Use a trained space: ``centrobind.load(run_dir)`` -> encode features or raw items, then search.

Two ways to embed, on purpose:

- :meth:`Model.encode` (this module) is the user-facing one. It takes a modality's *raw input
  features* ``[n, D_m]`` (numpy or torch, float32/float64) exactly as they are stored in the
  dataset, applies the run's standardisation, runs the encoder in eval mode in batches and returns
  L2-normalised float32 ``[n, D]``. For a run trained on a featurized dataset it also takes the raw
  items (a list of texts, or of image/audio file paths) and runs the recorded featurizer first.
  It gives exactly what ``centrobind embed`` writes.
- :meth:`centrobind.models.Binder.embed` is the low-level module method: it expects features that
  are *already standardised* (as the training loop feeds them) and does no checking. Calling it on
  raw features gives wrong vectors without a warning.

Example::

    model = centrobind.load("runs/cb")
    z = model.encode("fac", x_fac)                             # [n, D] float32, unit rows
    index = model.index("mfeat", modality="pix")               # corpus rows of pix
    scores, ids = index.search(z, k=5)                         # [n, 5], [n, 5]
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from .data import MultimodalDataset, as_dataset
from .distributed import resolve_device
from .errors import CentrobindError, CentrobindWarning
from .runs import FUSED_KEY, Run, embed_dataset, embed_features, is_run_data, load_run
from .search import Index

if TYPE_CHECKING:
    from .saved_index import SavedIndex

__all__ = ["Model", "DatasetEmbeddings", "load", "load_corpus", "FUSED_KEY", "SPLITS"]

#: What ``split`` may name (:meth:`Model.index`, ``centrobind search --split``).
SPLITS = ("train", "val", "test", "all")


def load_corpus(data: str | os.PathLike[str] | MultimodalDataset) -> MultimodalDataset:
    """A dataset for embedding or search: a builtin name, or a folder with >= 1 modality."""
    if isinstance(data, os.PathLike):
        data = Path(data)
    return as_dataset(data, min_modalities=1)


@dataclass
class DatasetEmbeddings:
    """What :meth:`Model.encode_dataset` returns.

    ``embeddings[m]``: float32 ``[N, D]`` for each modality the dataset holds (in run order),
    L2-normalised, NaN rows where the modality is missing; ``masks[m]``: bool ``[N]`` (True =
    present); ``fused``: float32 ``[N, D]``, the L2-normalised mean of each row's present
    modalities.
    """

    embeddings: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    fused: np.ndarray

    @property
    def modalities(self) -> list[str]:
        return list(self.embeddings)

    def __getitem__(self, modality: str) -> np.ndarray:
        return self.embeddings[modality]


class Model:
    """A trained run ready for inference (build it with :func:`load`).

    Attributes:
        modalities: the run's modality names (model order).
        dims: modality -> input feature width ``D_m``.
        embed_dim: ``D`` of the shared space.
        featurizers: modality -> featurizer entry (``{"spec", "kind", "version", "dim", ...}``)
            for a run trained on a featurized dataset, else ``{}``.
        device: where the encoders run.
        run: the underlying :class:`~centrobind.runs.Run` (binder, standardizer, config).
    """

    def __init__(self, run: Run, device: str | torch.device = "auto") -> None:
        self.run = run
        self.device = resolve_device(device)
        self.binder = run.binder.to(self.device).eval()
        self.standardizer = run.standardizer
        self.modalities: list[str] = list(run.binder.modalities)
        self.dims: dict[str, int] = dict(run.binder.dims)
        self.embed_dim: int = int(run.binder.embed_dim)
        self.featurizers: dict[str, dict[str, Any]] = dict(_featurizers(run) or {})
        self._encoders: dict[str, Any] = {}
        self._split_cache: tuple[MultimodalDataset, np.ndarray | None] | None = None

    def __repr__(self) -> str:
        dims = ", ".join(f"{m}={d}" for m, d in self.dims.items())
        return f"centrobind.Model({self.run.path}, modalities=[{dims}], D={self.embed_dim})"

    # -- encoding ------------------------------------------------------------------------------

    def _check_modality(self, modality: str) -> None:
        if modality not in self.dims:
            raise ValueError(f"unknown modality {modality!r}; this run has {self.modalities}")

    def featurize(self, modality: str, items: Sequence[str]) -> np.ndarray:
        """Raw items (texts, or image/audio file paths) -> input features ``[n, D_m]`` with the
        featurizer the run's training data was made with."""
        self._check_modality(modality)
        entry = self.featurizers.get(modality)
        raw = (self.run.meta.get("raw") or {}).get("decoders", {}).get(modality)
        if entry is None and isinstance(raw, dict):
            return self._decode(modality, raw, items)
        if entry is None:
            raise ValueError(
                f"modality {modality!r}: this run was not trained on featurized data for it, so "
                f"it takes input features [n, {self.dims[modality]}], not raw items"
            )
        bad = [i for i, it in enumerate(items) if not isinstance(it, str)]
        if bad:
            raise ValueError(
                f"modality {modality!r}: raw items must be strings (texts or file paths); "
                f"item {bad[0]} is {type(items[bad[0]]).__name__}"
            )
        bad = [i for i, it in enumerate(items) if not it.isascii() and not _utf8(it)]
        if bad:  # e.g. a command-line argument that was not UTF-8
            raise ValueError(
                f"modality {modality!r}: item {bad[0]} ({items[bad[0]]!r:.80}) is not valid "
                "Unicode text (a lone surrogate)"
            )
        items = list(items)
        if entry.get("kind") in ("image", "audio"):
            items = [os.path.abspath(os.path.expanduser(p)) for p in items]
        if modality not in self._encoders:
            from .featurize import encoder_from_meta

            dev = "cuda" if self.device.type == "cuda" else "cpu"
            self._encoders[modality] = encoder_from_meta(entry, device=dev)
        feats = np.asarray(self._encoders[modality].encode(items), dtype=np.float32)
        if feats.ndim != 2 or feats.shape != (len(items), self.dims[modality]):
            raise ValueError(
                f"modality {modality!r}: featurizer {entry.get('spec')!r} returned shape "
                f"{feats.shape}, the run expects [{len(items)}, {self.dims[modality]}]"
            )
        return feats

    def _decode(self, modality: str, entry: dict[str, Any], items: Sequence[str]) -> np.ndarray:
        """Raw items of a raw-item modality (files, or texts for hashed words) -> flat rows
        ``[n, D_m]``, decoded as in training without augmentation."""
        from .data.raw import decoder_from_entry

        if modality not in self._encoders:
            self._encoders[modality] = decoder_from_entry(entry)
        dec = self._encoders[modality]
        out = np.zeros((len(items), self.dims[modality]), np.float32)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise ValueError(f"modality {modality!r}: item {i} is not a string")
            path = item if dec.reads_text else os.path.abspath(os.path.expanduser(item))
            try:
                out[i] = dec.decode(path, None).reshape(-1)
            except Exception as e:  # noqa: BLE001 - one line naming the item
                why = "file not found" if isinstance(e, FileNotFoundError) else str(e)
                raise ValueError(
                    f"modality {modality!r}: item {i} ({item!r:.120}): {why}"
                ) from None
        return out

    def _features(self, modality: str, x: Any) -> Tensor:
        """Raw items or an ``[n, D_m]`` array -> checked float32 tensor ``[n, D_m]`` (CPU)."""
        if isinstance(x, str):
            x = [x]
        if isinstance(x, (list, tuple)) and (len(x) == 0 or isinstance(x[0], str)):
            if len(x) == 0:
                return torch.empty(0, self.dims[modality])
            x = self.featurize(modality, x)
        if isinstance(x, Tensor):
            t = x.detach()
        else:
            arr = np.asarray(x)
            if arr.dtype.kind not in "biuf":
                raise ValueError(
                    f"modality {modality!r}: expected a numeric array [n, {self.dims[modality]}] "
                    f"(or a list of raw items), got dtype {arr.dtype}"
                )
            t = torch.from_numpy(np.ascontiguousarray(arr))
        if t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"modality {modality!r}: expected real numbers, got {t.dtype}")
        if t.dim() != 2:
            raise ValueError(
                f"modality {modality!r}: expected a 2-D array [n, {self.dims[modality]}], "
                f"got shape {tuple(t.shape)}"
            )
        if t.shape[1] != self.dims[modality]:
            raise ValueError(
                f"modality {modality!r}: expected {self.dims[modality]} features per row, "
                f"got {t.shape[1]}"
            )
        t = t.to(device="cpu", dtype=torch.float32)
        finite = torch.isfinite(t).all(dim=1)
        if not bool(finite.all()):
            row = int((~finite).nonzero()[0, 0])
            raise ValueError(
                f"modality {modality!r}: row {row} has NaN/inf; drop missing rows before encoding"
            )
        return t

    def _embed(self, modality: str, t: Tensor, batch_size: int) -> Tensor:
        """Checked float32 ``[n, D_m]`` (CPU) -> float32 ``[n, D]`` (CPU)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return embed_features(self.run, modality, t, batch_size)

    def encode(
        self,
        modality: str,
        x: np.ndarray | Tensor | Sequence[str] | str,
        batch_size: int = 4096,
        device: str | torch.device | None = None,
        convert_to_tensor: bool = False,
    ) -> np.ndarray | Tensor:
        """Embed inputs of one modality into the shared space.

        Args:
            modality: one of :attr:`modalities`.
            x: input features ``[n, D_m]`` (numpy or torch, float32/float64, as stored in the
                dataset; the run's standardisation is applied here), or, for a run trained on a
                featurized dataset, raw items: a list of texts / file paths (a single string is
                one item).
            batch_size: rows per forward pass.
            device: move the model there first (default: stay on :attr:`device`).
            convert_to_tensor: return a CPU torch tensor instead of numpy.

        Returns:
            float32 ``[n, D]``, unit-norm rows.

        Raises:
            ValueError: unknown modality, wrong width or ndim, NaN/inf rows, raw items for a
                run without a featurizer for ``modality``.
        """
        self._check_modality(modality)
        t = self._features(modality, x)
        if device is not None and resolve_device(device) != self.device:
            self.to(device)
        z = self._embed(modality, t, batch_size)
        return z if convert_to_tensor else z.numpy()

    def to(self, device: str | torch.device) -> Model:
        """Move the encoders to ``device`` (in place); returns self."""
        self.device = resolve_device(device)
        self.binder.to(self.device)
        self._encoders.clear()
        return self

    def encode_dataset(
        self, data: str | os.PathLike[str] | MultimodalDataset, batch_size: int = 4096
    ) -> DatasetEmbeddings:
        """Embed every row of a dataset that holds any non-empty subset of the run's modalities
        (a folder path, a builtin name, or a :class:`MultimodalDataset` of input features).

        Modalities of the dataset that the run does not know are an error; so is a width that
        differs from the run's.
        """
        emb, masks, fused = embed_dataset(self.run, load_corpus(data), batch_size)
        return DatasetEmbeddings(
            {m: e.numpy() for m, e in emb.items()},
            {m: k.numpy() for m, k in masks.items()},
            fused.numpy(),
        )

    # -- search --------------------------------------------------------------------------------

    def index(
        self,
        corpus: str | os.PathLike[str] | MultimodalDataset | np.ndarray | Tensor | Sequence[str],
        modality: str,
        ids: Sequence[Any] | np.ndarray | None = None,
        backend: str = "exact",
        batch_size: int = 4096,
        split: str | None = None,
        **backend_options: Any,
    ) -> Index:
        """A search :class:`~centrobind.search.Index` over ``corpus`` embedded as ``modality``.

        ``corpus`` is a dataset: a folder path or builtin name (a ``str`` or path is always
        read as one; a name that is neither is an error, never one raw item) or a
        :class:`MultimodalDataset`; its rows where ``modality`` is present are indexed, with
        their row numbers as ids (or ``ids[row]`` when ``ids`` gives one id per dataset row). Or
        input features ``[N, D_m]`` / a list of raw items for :meth:`encode` (ids default to
        ``0..N-1``). ``backend`` and ``backend_options`` go to :class:`~centrobind.search.Index`.

        ``split`` (``"train"``, ``"val"``, ``"test"`` or ``"all"``; None = all) keeps only the
        rows of that split of the run; the corpus must then be the run's own dataset. Searching
        the rows the run was trained on flatters it: ``split="test"`` gives held-out figures.
        """
        self._check_modality(modality)
        if split is not None and split not in SPLITS:
            raise CentrobindError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        if isinstance(corpus, (MultimodalDataset, os.PathLike, str)):
            ds = load_corpus(corpus)
            if modality not in ds.modalities:
                raise CentrobindError(f"the corpus has no modality {modality!r} ({ds.modalities})")
            if ds.dims[modality] != self.dims[modality]:
                raise CentrobindError(
                    f"the corpus's {modality!r} has {ds.dims[modality]} features per row, the "
                    f"run takes {self.dims[modality]} (was the corpus featurized with another "
                    "encoder than the run's training data?)"
                )
            keep = ds.present(modality).cpu()
            if split not in (None, "all"):
                where = self.split_of(ds, None if isinstance(corpus, MultimodalDataset) else corpus)
                if where is None:
                    raise CentrobindError(_NOT_RUN_DATA.format(split=split))
                keep &= torch.from_numpy(where == split)
            rows = keep.nonzero().squeeze(1)
            z = self._embed(modality, ds.features[modality].cpu().float()[rows], batch_size)
            row_ids = rows.numpy() if ids is None else np.asarray(ids)[rows.numpy()]
            return Index(z.numpy(), ids=row_ids, backend=backend, **backend_options)
        if split not in (None, "all"):
            raise CentrobindError(_NOT_RUN_DATA.format(split=split))
        emb = self.encode(modality, corpus, batch_size=batch_size)
        return Index(emb, ids=ids, backend=backend, **backend_options)

    def split_of(
        self, ds: MultimodalDataset, folder: str | os.PathLike[str] | None = None
    ) -> np.ndarray | None:
        """The split of each row of ``ds`` (``"train"``, ``"val"``, ``"test"``, or ``""`` for a
        row in none), ``[N]`` str, when ``ds`` (loaded from ``folder``, if any) is the dataset
        the run was trained on; else None.
        """
        cached = self._split_cache
        if cached is not None and cached[0] is ds:
            return cached[1]
        out: np.ndarray | None = None
        where = Path(folder) if folder is not None and Path(folder).is_dir() else None
        if is_run_data(self.run, ds, where):
            out = np.full(len(ds), "", dtype=object)
            for name in ("train", "val", "test"):
                out[self.run.splits[name].cpu().numpy()] = name
        self._split_cache = (ds, out)
        return out

    def build_index(
        self,
        corpus: str | os.PathLike[str],
        target: str,
        out: str | os.PathLike[str],
        **options: Any,
    ) -> SavedIndex:
        """Embed ``corpus`` (a dataset folder or builtin) as ``target`` once and save a search
        index in folder ``out``: :func:`centrobind.saved_index.build_index` (its ``options``:
        ``faiss``, ``faiss_params``, ``dtype``, ``batch_size``, ``seed``, ``progress``)."""
        from .saved_index import build_index

        return build_index(self.run, corpus, target, out, **options)

    def load_index(self, path: str | os.PathLike[str], check: bool = True) -> SavedIndex:
        """A saved index folder (:meth:`build_index`), refused in one line when built with other
        weights than this model's or when its corpus changed since:
        :func:`centrobind.saved_index.load_index`. Search it with :meth:`encode`'s vectors."""
        from .saved_index import load_index

        return load_index(path, run=self.run, check=check)


_NOT_RUN_DATA = (
    "split {split!r} needs the corpus to be the dataset this run was trained on (same rows and "
    "content); another corpus has no train/val/test rows of this run"
)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _featurizers(run: Run) -> dict[str, dict[str, Any]] | None:
    """``run.json["featurizers"]`` (written by ``train_run`` for featurized data), else None."""
    found = run.meta.get("featurizers")
    if found is None:
        path = Path(run.path) / "run.json"
        if path.is_file():
            try:
                found = json.loads(path.read_text()).get("featurizers")
            except (json.JSONDecodeError, OSError, AttributeError):
                found = None
    return found if isinstance(found, dict) else None


def load(run_dir: str | os.PathLike[str], device: str | torch.device = "auto") -> Model:
    """Load a run folder for inference: binder, standardisation, modalities, featurizers.

    Weights are mapped to ``device`` (``"auto"``: cuda when available, else cpu), so a run
    trained on a GPU loads on a CPU-only machine.
    """
    return Model(load_run(Path(run_dir)), device=device)


def _items(corpus: Any, modality: str) -> list[str | None] | None:
    """The corpus's raw items (texts / file paths) for ``modality`` where it has them."""
    if isinstance(corpus, MultimodalDataset) or not Path(str(corpus)).is_dir():
        return None
    try:
        from .featurize import read_items
    except ImportError:  # the featurize package is not installed in this build
        return None
    return read_items(corpus, modality)


def _encode_queries(
    model: Model,
    queries: Sequence[str] | None,
    query_data: str | os.PathLike[str] | MultimodalDataset | None,
    query_modality: str | None,
) -> tuple[list[str], np.ndarray | Tensor]:
    """The queries of :func:`search_corpus` as (one label each, their embeddings ``[Q, D]``): raw
    texts through the run's (only, or chosen) featurized text modality, else the rows of
    ``query_data`` that have ``query_modality``."""
    if queries is not None:
        text = [m for m, e in model.featurizers.items() if e.get("kind") == "text"]
        if query_modality is None:
            if not text:
                raise CentrobindError(
                    "a raw text query needs a run trained on featurized data with a text "
                    f"modality; this run has none ({', '.join(model.modalities)}); use "
                    "--query-data DATASET --query-modality MODALITY"
                )
            if len(text) > 1:
                raise CentrobindError(
                    f"the run has several text modalities ({', '.join(text)}); choose one "
                    "with --query-modality"
                )
            query_modality = text[0]
        elif query_modality not in text:
            raise CentrobindError(
                f"--query-modality {query_modality!r} is not a featurized text modality of "
                f"this run (text modalities: {', '.join(text) or 'none'})"
            )
        labels = [repr(q) for q in queries]
        qz = model.encode(query_modality, list(queries))
    else:
        if query_modality is None:
            raise CentrobindError("--query-data needs --query-modality MODALITY")
        model._check_modality(query_modality)
        qds = load_corpus(query_data)  # type: ignore[arg-type]
        if query_modality not in qds.modalities:
            raise CentrobindError(
                f"the query data has no modality {query_modality!r} ({qds.modalities})"
            )
        rows = qds.present(query_modality).cpu().nonzero().squeeze(1)
        labels = [f"row {int(r)} ({query_modality})" for r in rows]
        qz = model.encode(query_modality, qds.features[query_modality].cpu()[rows])
    return labels, qz


def _hits(
    labels: list[str],
    scores: np.ndarray,
    ids: np.ndarray,
    corpus: Any,
    target: str,
    corpus_ds: MultimodalDataset | None,
    where: np.ndarray | None,
    saved_index: SavedIndex | None,
    saved_labels: dict[str, tuple[np.ndarray, Any]],
) -> list[dict[str, Any]]:
    """:func:`search_corpus`'s result: per query its label and hits (``scores``/``ids``
    ``[Q, k]``), each hit with its raw item, split and labels where the corpus (or the saved
    index's corpus folder: ``saved_labels``) has them."""
    all_items = _items(corpus, target) if saved_index is None else None
    if all_items is not None and corpus_ds is not None and len(all_items) != len(corpus_ds):
        raise CentrobindError(
            f"{Path(str(corpus)) / 'items' / (target + '.jsonl')}: has {len(all_items)} lines "
            f"but the corpus has {len(corpus_ds)} rows (cut short or edited?); featurize the "
            "corpus again"
        )
    names = _label_names(corpus_ds) if corpus_ds is not None else {}
    out = []
    for label, srow, irow in zip(labels, scores, ids, strict=True):
        hits = []
        rows = irow.tolist()
        items = saved_index.items(rows) if saved_index is not None else None
        for j, (s, i) in enumerate(zip(srow.tolist(), rows, strict=True)):
            hit: dict[str, Any] = {"id": int(i), "score": round(float(s), 6)}
            item = items[j] if items is not None else all_items[i] if all_items else None
            if item is not None:
                hit["item"] = item
            if where is not None:
                hit["split"] = where[i]
            if corpus_ds is not None and names:
                hit["labels"] = {t: f(int(corpus_ds.labels[t][i])) for t, f in names.items()}
            elif saved_labels:
                hit["labels"] = {t: f(int(a[i])) for t, (a, f) in saved_labels.items()}
            hits.append(hit)
        out.append({"query": label, "hits": hits})
    return out


def search_corpus(
    model: Model,
    corpus: str | os.PathLike[str] | MultimodalDataset | None,
    target: str | None,
    k: int = 10,
    queries: Sequence[str] | None = None,
    query_data: str | os.PathLike[str] | MultimodalDataset | None = None,
    query_modality: str | None = None,
    split: str | None = None,
    saved: str | os.PathLike[str] | None = None,
    saved_options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """What ``centrobind search`` does: embed the corpus rows that have ``target``, embed the
    queries (raw texts, or the rows of ``query_data`` that have ``query_modality``), search.
    ``saved``: search a saved index folder instead (:meth:`Model.load_index`; ``corpus`` and
    ``target`` are then the index's), without embedding the corpus; ``saved_options`` go to
    its :meth:`~centrobind.saved_index.SavedIndex.search` (``backend``, ``faiss_params``).

    ``split`` keeps the corpus rows of one split of the run (see :meth:`Model.index`). When the
    corpus is the run's own dataset each hit names its ``split``, and searching all of it warns
    (:class:`~centrobind.errors.CentrobindWarning`) that training rows are among the hits.

    Returns one ``{"query": str, "hits": [{"id": row, "score": s[, "item": raw item][, "split":
    name][, "labels": {task: value}]}]}`` per query (label values as named in the dataset's
    ``meta.json`` ``label_maps`` when it has them, else ids; None = unlabelled). Raises
    :class:`CentrobindError` (one line) for bad input.
    """
    if (queries is None) == (query_data is None):
        raise CentrobindError("give either --query TEXT... or --query-data DATASET")
    if not isinstance(k, int) or k < 1:
        raise CentrobindError(f"-k must be a positive integer, got {k}")
    saved_index = model.load_index(saved) if saved is not None else None
    if saved_index is not None:
        corpus, target = saved_index.corpus, saved_index.target
    if corpus is None or target is None:
        raise CentrobindError("give the corpus and its target modality (or a saved index)")
    if saved_index is not None and split not in (None, "all"):
        raise CentrobindError("--split does not go with --index: search the run's corpus instead")
    corpus_ds: MultimodalDataset | None = None
    where: np.ndarray | None = None
    saved_labels: dict[str, tuple[np.ndarray, Any]] = {}
    try:
        labels, qz = _encode_queries(model, queries, query_data, query_modality)
        if saved_index is not None:
            scores, ids = saved_index.search(qz, k, **(saved_options or {}))
            where, saved_labels = _index_context(model, saved_index)
        else:
            corpus_ds = load_corpus(corpus)
            folder = None if isinstance(corpus, MultimodalDataset) else corpus
            where = model.split_of(corpus_ds, folder)  # (cached: index() asks again)
            scores, ids = model.index(corpus_ds, target, split=split).search(qz, k)
    except ValueError as e:
        raise CentrobindError(" ".join(str(e).split())) from None
    if where is not None and split in (None, "all"):
        n_train = int((where == "train").sum())
        warnings.warn(
            f"the corpus is the dataset this run was trained on: {n_train} of its {len(where)} "
            "rows are training rows, which the run has seen paired; each hit shows its split, "
            "and --split test searches the held-out rows only",
            CentrobindWarning,
            stacklevel=2,
        )
    return _hits(labels, scores, ids, corpus, target, corpus_ds, where, saved_index, saved_labels)


def _index_context(
    model: Model, saved: SavedIndex
) -> tuple[np.ndarray | None, dict[str, tuple[np.ndarray, Any]]]:
    """What a saved index's hits show without loading its corpus: each row's split ``[N]`` when
    the corpus is the run's own data (its recorded identity equals the run's data fingerprint),
    else None; and the corpus folder's labels, memory-mapped, with their shown values."""
    from .checkpoint import load_tensors

    where = None
    splits = model.run.path / "splits.safetensors"
    run_fp = load_tensors(splits)[1].get("fingerprint") if splits.is_file() else None
    n = int(saved.meta["corpus"]["rows"])
    if run_fp and run_fp == saved.meta["corpus"]["digest"] and n == model.run.meta.get("n_rows"):
        where = np.full(n, "", dtype=object)
        for name in ("train", "val", "test"):
            where[model.run.splits[name].cpu().numpy()] = name
    labels: dict[str, tuple[np.ndarray, Any]] = {}
    folder = Path(saved.corpus)
    if (folder / "labels").is_dir():
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        maps = meta.get("label_maps") if isinstance(meta, dict) else None
        files = sorted((folder / "labels").glob("*.npy"))
        order = meta.get("labels") if isinstance(meta, dict) else None
        if isinstance(order, list):  # the dataset's own order of its label tasks
            files.sort(key=lambda q: order.index(q.stem) if q.stem in order else len(order))
        for p in files:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
            if arr.shape != (n,):
                continue
            mapping = maps.get(p.stem) if isinstance(maps, dict) else None
            back = {v: k for k, v in mapping.items()} if isinstance(mapping, dict) else {}
            labels[p.stem] = (arr, lambda i, back=back: None if i < 0 else back.get(i, i))
    return where, labels


def _label_names(ds: MultimodalDataset) -> dict[str, Any]:
    """``{task: id -> shown value}``: the original value from ``meta.json`` ``label_maps`` when
    the dataset has it (featurized data), else the id; None for -1 (unlabelled)."""
    maps = ds.meta.get("label_maps") if isinstance(ds.meta, dict) else None
    out: dict[str, Any] = {}
    for task in ds.labels:
        mapping = maps.get(task) if isinstance(maps, dict) else None
        back = {v: k for k, v in mapping.items()} if isinstance(mapping, dict) else {}
        out[task] = lambda i, back=back: None if i < 0 else back.get(i, i)
    return out


def format_hits(results: list[dict[str, Any]], width: int = 80) -> str:
    """Human-readable tables of :func:`search_corpus` results."""
    lines: list[str] = []
    for n, res in enumerate(results):
        if n:
            lines.append("")
        lines.append(f"query {n}: {res['query']}")
        rows = [["rank", "id", "score", "split", "label", "item"]]
        for r, h in enumerate(res["hits"], 1):
            item = " ".join(str(h.get("item", "")).split())
            item = item if len(item) <= width else item[: width - 3] + "..."
            labels = h.get("labels") or {}
            label = " ".join(
                str(v) if len(labels) == 1 else f"{t}={v}"
                for t, v in labels.items()
                if v is not None
            )
            rows.append(
                [str(r), str(h["id"]), f"{h['score']:.4f}", h.get("split", ""), label, item]
            )
        used = [c for c in range(len(rows[0])) if c < 3 or any(row[c] for row in rows[1:])]
        rows = [[row[c] for c in used] for row in rows]
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        for row in rows:
            cells = [
                c.rjust(w) if j < 3 else c.ljust(w) if j < len(row) - 1 else c
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)
