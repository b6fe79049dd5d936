"""What ``centrobind serve`` serves, without the web framework: a trained run, a corpus embedded
once per modality, and the queries a page or an API client can make against it.

Every user mistake raises :class:`BadRequest` (or :class:`NotFound`) with one line that the app
turns into a 4xx response; nothing here depends on FastAPI.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CentrobindError
from ..inference import Model, load, load_corpus
from ..saved_index import SavedIndex
from ..search import Index

__all__ = ["BadRequest", "NotFound", "Explorer", "MEDIA_TYPES"]

# The only raw files served, by suffix: a listed item with any other suffix is never sent.
MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".wav": "audio/wav",
    ".wave": "audio/wav",
}
MAX_IMAGE_PIXELS = 40_000_000  # an uploaded image larger than this is refused before decoding


class BadRequest(CentrobindError, ValueError):
    """The request is wrong (HTTP 400); the message says how."""


class NotFound(CentrobindError, LookupError):
    """No such modality, row or item (HTTP 404)."""


@dataclass
class _Target:
    """One searchable modality of the corpus: an index over the rows that have it."""

    index: Index | SavedIndex  # ids = corpus row numbers
    rows: np.ndarray  # int64 [n]: the corpus rows in the index, ascending
    position: dict[int, int]  # corpus row -> index position


class Explorer:
    """A run and a corpus ready for queries.

    Args:
        run: a run folder (``centrobind train --out``).
        corpus: a dataset folder (or builtin name) with any of the run's modalities; made by
            ``centrobind featurize``, it also gives raw items (texts, image and audio files).
        media_root: raw files are served only from inside this folder (symlinks resolved);
            default: the corpus folder's parent, which holds the manifest's files when
            ``featurize --out`` was written beside the manifest.
        device: where the encoders run (``"auto"``: cuda when available).
        index_dirs: saved indexes (one target modality each) to use instead of embedding the
            corpus for that modality.
    """

    def __init__(
        self,
        run: str | os.PathLike[str],
        corpus: str | os.PathLike[str],
        media_root: str | os.PathLike[str] | None = None,
        device: str = "auto",
        index_dirs: list[str | os.PathLike[str]] | None = None,
    ) -> None:
        t0 = time.perf_counter()
        self.run_path = Path(run)
        self.model: Model = load(run, device=device)
        self.ds = load_corpus(str(corpus))
        self.corpus_dir = Path(corpus).resolve() if Path(corpus).is_dir() else None
        self.corpus_name = str(corpus)
        mods = [m for m in self.model.modalities if m in self.ds.modalities]
        if not mods:
            raise CentrobindError(
                f"the corpus {corpus} has none of the run's modalities "
                f"({', '.join(self.model.modalities)}); it has {', '.join(self.ds.modalities)}"
            )
        # modalities the run does not know are not searchable; the CLI says so
        self.ignored = [m for m in self.ds.modalities if m not in self.model.modalities]
        default_root = self.corpus_dir.parent if self.corpus_dir is not None else Path.cwd()
        self.media_root = Path(media_root if media_root is not None else default_root).resolve()
        self._lock = threading.Lock()  # featurizers and encoders: one query at a time
        saved = _saved_indexes(self.model, index_dirs or [])
        self.targets = {m: saved.get(m) or self._build_target(m) for m in mods}
        self.items = {m: self._read_items(m) for m in mods}
        self.labels = self._labels()
        self.split_of = self._splits()
        for m in self.model.modalities:  # load the text encoders now, not in the first query
            if self.kind(m) == "text":
                _encode(self.model, m, ["warm-up"])
        self.started = time.time()
        self.load_seconds = time.perf_counter() - t0

    # -- set-up ---------------------------------------------------------------------------------

    def _build_target(self, m: str) -> _Target:
        index = self.model.index(self.ds, modality=m)
        rows = np.asarray(index.ids, dtype=np.int64)
        return _Target(index, rows, {int(r): i for i, r in enumerate(rows.tolist())})

    def _read_items(self, m: str) -> list[str | None] | None:
        if self.corpus_dir is None:
            return None
        from ..featurize import read_items

        items = read_items(self.corpus_dir, m)
        if items is not None and len(items) != len(self.ds):
            raise CentrobindError(
                f"{self.corpus_dir}/items/{m}.jsonl has {len(items)} lines for {len(self.ds)} rows"
            )
        return items

    def _labels(self) -> dict[str, tuple[np.ndarray, dict[int, str]]]:
        """task -> (int64 ``[N]``, value -> name from ``meta.json`` ``label_maps``)."""
        maps = self.ds.meta.get("label_maps") if isinstance(self.ds.meta, dict) else None
        out = {}
        for task, values in self.ds.labels.items():
            names: dict[int, str] = {}
            given = maps.get(task) if isinstance(maps, dict) else None
            if isinstance(given, dict):
                names = {int(v): str(k) for k, v in given.items() if isinstance(v, int)}
            out[task] = (values.cpu().numpy().astype(np.int64), names)
        return out

    def _splits(self) -> np.ndarray | None:
        """Each row's split name: the run's own split when the corpus is the data it was trained
        on (:meth:`_is_training_data`), else the corpus's ``splits/``; None when neither."""
        n = len(self.ds)
        splits: dict[str, Any] = self.model.run.splits if self._is_training_data() else {}
        if not splits:
            splits = self.ds.splits
        if not splits:
            return None
        out = np.full(n, "", dtype=object)
        for name, rows in splits.items():
            idx = np.asarray(rows.cpu().numpy() if hasattr(rows, "cpu") else rows, dtype=np.int64)
            out[idx[(idx >= 0) & (idx < n)]] = name
        return out

    def _is_training_data(self) -> bool:
        """Whether the corpus is the data the run was trained on: its recorded digests
        (``d2:``, cheap) or its content fingerprint (``b2:``) equal the run's."""
        saved = self.model.run.meta.get("fingerprint")
        if not isinstance(saved, str):
            return False
        if saved.startswith("d2:"):
            from ..digests import data_digest

            try:
                return self.corpus_dir is not None and data_digest(self.corpus_dir) == saved
            except CentrobindError:  # changed since recorded: not the training data
                return False
        if saved.startswith("b2:"):
            from ..data.fingerprint import fingerprint

            return fingerprint(self.ds) == saved
        return False

    # -- describing -----------------------------------------------------------------------------

    def kind(self, m: str) -> str:
        """``text`` / ``image`` / ``audio`` for a featurized modality, else ``features``."""
        return str(self.model.featurizers.get(m, {}).get("kind") or "features")

    def info(self) -> dict[str, Any]:
        """The run's modalities and what each can do (the ``/api/modalities`` body)."""
        mods = []
        for m in self.model.modalities:
            entry = self.model.featurizers.get(m, {})
            target = self.targets.get(m)
            mods.append(
                {
                    "name": m,
                    "kind": self.kind(m),
                    "input_dim": self.model.dims[m],
                    "featurizer": entry.get("spec"),
                    "indexed": 0 if target is None else len(target.rows),
                    "raw_items": self.items.get(m) is not None,
                }
            )
        return {
            "run": str(self.run_path),
            "corpus": self.corpus_name,
            "rows": len(self.ds),
            "embed_dim": self.model.embed_dim,
            "modalities": mods,
            "labels": list(self.labels),
            "splits": self.split_of is not None,
        }

    def hit(self, m: str, row: int, score: float) -> dict[str, Any]:
        """One search hit: row, score, split, labels and how to show the item."""
        out: dict[str, Any] = {"row": row, "modality": m, "score": round(float(score), 6)}
        if self.split_of is not None and self.split_of[row]:
            out["split"] = str(self.split_of[row])
        labels = {}
        for task, (values, names) in self.labels.items():
            v = int(values[row])
            if v >= 0:
                labels[task] = names.get(v, str(v))
        if labels:
            out["labels"] = labels
        items = self.items.get(m)
        if items is not None and items[row] is not None:
            if self.kind(m) == "text":
                out["text"] = items[row]
            else:
                out["url"] = f"/api/items/{m}/{row}"
        return out

    # -- queries --------------------------------------------------------------------------------

    def _target(self, m: str) -> _Target:
        if m not in self.targets:
            have = ", ".join(self.targets)
            raise BadRequest(f"unknown target modality {m!r}; the corpus has: {have}")
        return self.targets[m]

    def search(self, query: np.ndarray, target: str, k: int) -> list[dict[str, Any]]:
        """``query`` float32 ``[D]`` (unit norm) -> the ``k`` best hits in ``target``."""
        t = self._target(target)
        scores, ids = t.index.search(query[None].astype(np.float32), k)
        return [
            self.hit(target, int(i), float(s))
            for s, i in zip(scores[0].tolist(), ids[0].tolist(), strict=True)
        ]

    def text_modality(self, modality: str | None) -> str:
        """The featurized text modality a raw text query goes through."""
        texts = [m for m in self.model.modalities if self.kind(m) == "text"]
        if modality is None:
            if not texts:
                raise BadRequest("this run has no featurized text modality: search by vector")
            return texts[0]
        self._modality(modality)
        if modality not in texts:
            raise BadRequest(
                f"modality {modality!r} does not take text; text modalities: "
                f"{', '.join(texts) or 'none'}"
            )
        return modality

    def _modality(self, m: str) -> None:
        if m not in self.model.dims:
            raise BadRequest(
                f"unknown modality {m!r}; this run has {', '.join(self.model.modalities)}"
            )

    def encode_texts(self, texts: list[str], modality: str | None = None) -> np.ndarray:
        """Raw texts -> ``[n, D]`` through the run's text featurizer."""
        m = self.text_modality(modality)
        with self._lock:
            return _encode(self.model, m, texts)

    def encode_features(self, modality: str, x: list[list[float]]) -> np.ndarray:
        """Input features ``[n, D_m]`` as stored in the dataset -> ``[n, D]``."""
        self._modality(modality)
        arr = np.asarray(x, dtype=np.float64)
        with self._lock:
            return _encode(self.model, modality, arr)

    def encode_file(self, data: bytes, modality: str | None, filename: str = "") -> np.ndarray:
        """An uploaded image or WAV file -> ``[1, D]``; the modality is found from the file when
        not given (the run's only image or audio modality)."""
        kind = _sniff(data)
        if modality is None:
            if kind is None:
                raise BadRequest(
                    "the file is neither an image Pillow can read nor a PCM WAV file"
                    + (f" ({filename})" if filename else "")
                )
            found = [m for m in self.model.modalities if self.kind(m) == kind]
            if len(found) != 1:
                many = f"several {kind} modalities ({', '.join(found)})"
                raise BadRequest(
                    f"this run has {many if found else f'no {kind} modality'}; name one with "
                    "modality="
                )
            modality = found[0]
        self._modality(modality)
        want = self.kind(modality)
        if want not in ("image", "audio"):
            raise BadRequest(f"modality {modality!r} ({want}) does not take files")
        if kind != want:
            what = "an image Pillow can read" if want == "image" else "a PCM WAV file"
            raise BadRequest(f"modality {modality!r} takes {what}; this file is not one")
        if kind == "image":
            _check_image_size(data)
        suffix = ".wav" if kind == "audio" else ".img"
        fd, tmp = tempfile.mkstemp(prefix="centrobind-upload-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            with self._lock:
                return _encode(self.model, modality, [tmp])
        finally:
            os.unlink(tmp)

    def item_vector(self, modality: str, row: int) -> np.ndarray:
        """The corpus's own embedding of ``row`` in ``modality`` (``[D]``): "search with this"."""
        t = self._target(modality)
        pos = t.position.get(int(row))
        if pos is None:
            raise NotFound(f"corpus row {row} has no {modality!r} item")
        return np.asarray(t.index.embeddings[pos], dtype=np.float32)

    def item(self, modality: str, row: int) -> tuple[str, Any]:
        """``("text", str)`` or ``("file", (path, media type))`` for a corpus item.

        Files are served only when listed in the corpus's ``items/`` for that row, with a known
        image/audio suffix, and inside :attr:`media_root` after resolving symlinks.
        """
        if modality not in self.targets:
            raise NotFound(f"unknown modality {modality!r}")
        items = self.items.get(modality)
        if not 0 <= row < len(self.ds):
            raise NotFound(f"no row {row}: the corpus has rows 0..{len(self.ds) - 1}")
        item = None if items is None else items[row]
        if item is None:
            raise NotFound(f"row {row} has no raw {modality!r} item")
        if self.kind(modality) == "text":
            return "text", item
        path = Path(item).resolve()
        media = MEDIA_TYPES.get(path.suffix.lower())
        if media is None or not path.is_relative_to(self.media_root):
            raise NotFound(f"row {row}'s {modality!r} file is not served (outside the media root)")
        if not path.is_file():
            raise NotFound(f"row {row}'s {modality!r} file is gone from the disk")
        return "file", (path, media)


def _encode(model: Model, modality: str, x: Any) -> np.ndarray:
    """``model.encode`` with its ValueErrors (bad width, NaN, unreadable item) as BadRequest."""
    try:
        return np.asarray(model.encode(modality, x), dtype=np.float32)
    except (ValueError, CentrobindError) as e:
        raise BadRequest(" ".join(str(e).split())) from None


def _sniff(data: bytes) -> str | None:
    """``"audio"`` for a RIFF/WAVE file, ``"image"`` for anything Pillow recognises, else None."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio"
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)):  # reads the header only
            return "image"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def _check_image_size(data: bytes) -> None:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
    if w * h > MAX_IMAGE_PIXELS:
        raise BadRequest(f"the image is {w} x {h} pixels; at most {MAX_IMAGE_PIXELS:,} are taken")


def _saved_indexes(model: Model, dirs: list[str | os.PathLike[str]]) -> dict[str, _Target]:
    """Saved indexes (``centrobind index build``) by target modality, each refused in one line
    when built with other weights than the served run's or over a corpus changed since."""
    out = {}
    for d in dirs:
        try:
            index = model.load_index(d)
        except CentrobindError as e:
            raise CentrobindError(f"--index: {e}") from None
        rows = np.asarray(index.ids, dtype=np.int64)
        out[index.target] = _Target(index, rows, {int(r): i for i, r in enumerate(rows.tolist())})
    return out
