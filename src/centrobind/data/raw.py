"""Raw items as training data: a featurize manifest read directly, items decoded per batch.

A manifest (CSV/TSV/JSONL/Parquet, :mod:`centrobind.featurize.manifest`) has one row per paired
sample and one column per modality. Each modality column gets a :class:`ColumnPlan`:

``image``     image files -> float32 ``[C, S, S]`` in [0, 1] (``size`` 32, ``gray`` false).
              Augmentation: random resized crop (area 0.7-1.0 of the image, aspect 3/4-4/3),
              horizontal flip (p 0.5, ``flip``), brightness/contrast jitter of +-10%.
              Without augmentation: the whole image resized to ``S x S``.
``audio``     PCM WAV -> mono float32 ``[1, T]`` at ``rate`` (16000) Hz, ``seconds`` (1.0) long:
              the first window, zero-padded. Augmentation: a random window of a longer clip,
              gain +-6 dB, Gaussian noise at 0.5% of full scale.
``array``     per-item ``.npy`` arrays (sensors; read with ``allow_pickle=False``), every item of a
              column the same shape (the first readable one fixes it), e.g. ``[3, 128]``.
              Augmentation: a random circular shift along the last axis (up to ``shift`` 10% of
              it), amplitude scale +-10%, Gaussian noise of 2% of the item's std.
``text``      texts -> ``length`` (32) hashed word ids (CRC32 of the lower-cased word modulo
              ``vocab - 1``, plus 1; 0 = padding), for a ``bow`` tower. Augmentation: each word
              dropped with p 0.1 (at least one kept).
``features``  a frozen featurize encoder (``minilm``, ``pixels``, ``timm:...``, ``hf:...``) run
              ONCE over the column when the data is opened (its features are fixed, so they are
              computed once, not every epoch); no augmentation.
``backbone``  a trainable featurize encoder's own preprocessing (:class:`BackboneDecoder`); the
              tower runs the network every step. Images (``timm``: resize, centre crop,
              normalise) -> ``[3, S, S]``, no augmentation. Texts (``minilm``, ``st:``, ``hf:``)
              -> ``[2, length]`` token ids + attention mask from the model's tokenizer
              (``length``: default the model's maximum); augmentation: word drop as ``text``.
              Audio (``hf:`` wav2vec2-like) -> ``[1, T]``, the first ``seconds`` (1.0) at the
              model's rate, normalised by its feature extractor, zero-padded; augmentation as
              ``audio``, before normalising.

Every decoded item is flattened to ``[prod(shape)]``, so a batch of a modality is a float tensor
``[B, prod(shape)]`` and the towers reshape it (:mod:`centrobind.towers`).

Two ways to train on them:

- :func:`load_raw` decodes every item once, without augmentation, into a
  :class:`~centrobind.data.MultimodalDataset` held in memory: the whole pipeline (splits,
  training, evaluate, embed, search) then runs unchanged. For data that fits in memory.
- :class:`RawSource` is a :class:`~centrobind.data.source.TrainSource` that streams: batches are
  decoded with augmentation in DataLoader worker processes while the model trains, on CPU or GPU.

An item that cannot be read (missing, truncated, wrong shape) never stops training: its row is
treated as missing for that modality, counted (``skipped_items``, written to ``run.json``) and
warned about. :func:`manifest_state` / :func:`check_manifest` refuse a manifest that changed
since the run started.
"""

from __future__ import annotations

import hashlib
import math
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from centrobind.errors import CentrobindWarning, DatasetError

from .source import Batch, GlobalShuffle, RowOrder, TrainSource, batch_positions, rank_share

__all__ = [
    "ArrayDecoder",
    "AudioDecoder",
    "ColumnPlan",
    "ImageDecoder",
    "RawData",
    "RawSource",
    "TextDecoder",
    "check_manifest",
    "decoder_from_entry",
    "load_raw",
    "manifest_state",
    "open_raw",
]

NDArray = np.ndarray[Any, Any]
_MAX_WARNED = 5


# --------------------------------------------------------------------------- decoders


class Decoder:
    """One column's items -> fixed-shape float32 arrays (``shape``); ``rng`` None: no
    augmentation (evaluation, inference). Subclasses are plain picklable objects."""

    kind: str = "?"
    shape: tuple[int, ...] = ()
    reads_text = False  # items are texts, not file paths

    def decode(self, cell: str, rng: np.random.Generator | None) -> NDArray:
        raise NotImplementedError

    def entry(self) -> dict[str, Any]:
        """JSON record (``run.json`` ``raw``); :func:`decoder_from_entry` reads it back."""
        opts = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "shape"}
        return {"kind": self.kind, "shape": list(self.shape), "options": opts}


class ImageDecoder(Decoder):
    kind = "image"

    def __init__(self, size: int = 32, gray: bool = False, flip: bool = True) -> None:
        self.size, self.gray, self.flip = int(size), bool(gray), bool(flip)
        self.shape = (1 if self.gray else 3, self.size, self.size)

    def decode(self, cell: str, rng: np.random.Generator | None) -> NDArray:
        from PIL import Image

        with Image.open(cell) as im:
            im.load()
            im = im.convert("L" if self.gray else "RGB")
        if rng is not None:  # random resized crop
            w, h = im.size
            area = w * h * rng.uniform(0.7, 1.0)
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw = min(w, max(1, round(math.sqrt(area * ratio))))
            ch = min(h, max(1, round(math.sqrt(area / ratio))))
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            im = im.crop((x0, y0, x0 + cw, y0 + ch))
        im = im.resize((self.size, self.size), Image.Resampling.BILINEAR)
        x = np.asarray(im, dtype=np.float32).reshape(self.size, self.size, -1) / 255.0
        x = np.ascontiguousarray(x.transpose(2, 0, 1))
        if rng is not None:
            if self.flip and rng.random() < 0.5:
                x = x[:, :, ::-1]
            mean = x.mean()
            x = (x - mean) * rng.uniform(0.9, 1.1) + mean * rng.uniform(0.9, 1.1)
        return np.asarray(x, dtype=np.float32)


class AudioDecoder(Decoder):
    kind = "audio"

    def __init__(self, rate: int = 16000, seconds: float = 1.0) -> None:
        self.rate, self.seconds = int(rate), float(seconds)
        self.shape = (1, int(round(self.rate * self.seconds)))

    def decode(self, cell: str, rng: np.random.Generator | None) -> NDArray:
        from centrobind.featurize.encoders.audio_io import read_wav

        t = self.shape[1]
        seg = _audio_window(read_wav(cell, self.rate), t, rng)
        out = np.zeros(t, np.float32)
        out[: seg.shape[0]] = seg
        return _gain_noise(out, rng)[None, :]


def _audio_window(x: NDArray, t: int, rng: np.random.Generator | None) -> NDArray:
    """At most ``t`` samples of a clip ``[T]``: the first ones, or (augmenting) a random window."""
    start = 0
    if rng is not None and x.shape[0] > t:
        start = int(rng.integers(0, x.shape[0] - t + 1))
    return x[start : start + t]


def _gain_noise(x: NDArray, rng: np.random.Generator | None) -> NDArray:
    """Augmentation of a waveform: gain +-6 dB, Gaussian noise at 0.5% of full scale."""
    if rng is None:
        return x
    x = x * np.float32(10 ** (rng.uniform(-6, 6) / 20))
    noise = np.asarray(rng.standard_normal(x.shape), dtype=np.float32)
    return np.asarray(x + np.float32(0.005) * noise, dtype=np.float32)


def _drop_words(words: list[str], rng: np.random.Generator | None) -> list[str]:
    """Augmentation of a text: each word dropped with p 0.1, at least one kept (seeded)."""
    if rng is None or len(words) < 2:
        return words
    keep = rng.random(len(words)) >= 0.1
    keep[int(rng.integers(0, len(words)))] = True
    return [w for w, k in zip(words, keep, strict=True) if k]


class ArrayDecoder(Decoder):
    kind = "array"

    def __init__(self, shape: Sequence[int], shift: float = 0.1) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.shift = float(shift)

    def decode(self, cell: str, rng: np.random.Generator | None) -> NDArray:
        x = np.load(cell, allow_pickle=False)
        if x.dtype.kind not in "biuf":
            raise ValueError(f"not a numeric array (dtype {x.dtype})")
        if tuple(x.shape) != self.shape:
            raise ValueError(f"shape {list(x.shape)}, the column's items are {list(self.shape)}")
        x = np.asarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise ValueError("NaN/inf values")
        if rng is not None:
            t = self.shape[-1]
            k = int(round(self.shift * t))
            if k:
                x = np.roll(x, int(rng.integers(-k, k + 1)), axis=-1)
            std = float(x.std()) or 1.0
            x = x * np.float32(rng.uniform(0.9, 1.1))
            x = x + np.float32(0.02 * std) * rng.standard_normal(x.shape).astype(np.float32)
        return np.ascontiguousarray(x, dtype=np.float32)

    def entry(self) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.shape), "options": {"shift": self.shift}}


class TextDecoder(Decoder):
    kind = "text"
    reads_text = True

    def __init__(self, length: int = 32, vocab: int = 32768) -> None:
        self.length, self.vocab = int(length), int(vocab)
        self.shape = (self.length,)

    def decode(self, cell: str, rng: np.random.Generator | None) -> NDArray:
        words = _drop_words(cell.lower().split(), rng)
        ids = [zlib.crc32(w.encode()) % (self.vocab - 1) + 1 for w in words[: self.length]]
        out = np.zeros(self.length, np.float32)
        out[: len(ids)] = ids
        return out


class BackboneDecoder(Decoder):
    """A trainable featurize encoder's own preprocessing of an item, to its fixed training input
    (``Encoder.train_input``): images as the encoder prepares them (e.g. timm's resize + crop +
    normalise; no augmentation), texts tokenised to ``[2, L]`` ids + mask (augmented: words
    dropped as for ``text``), audio read at the model's rate, cut to ``T`` samples (augmented: a
    random window, gain, noise as for ``audio``), normalised and zero-padded to ``[1, T]``."""

    kind = "backbone"

    def __init__(self, spec: str, shape: Sequence[int], encoder: Any = None) -> None:
        self.spec = spec
        self.shape = tuple(int(s) for s in shape)
        self._enc = encoder
        self.reads_text = getattr(encoder, "kind", None) == "text"

    def decode(self, cell: str, rng: np.random.Generator | None) -> NDArray:
        enc = self._enc
        if enc.kind == "text":
            text = cell if rng is None else " ".join(_drop_words(cell.split(), rng))
            prepared = enc.prepare(text)
        elif enc.kind == "audio":
            prepared = _gain_noise(_audio_window(enc.prepare(cell), self.shape[-1], rng), rng)
        else:
            prepared = enc.prepare(cell)
        x = np.asarray(enc.train_input(prepared, self.shape), dtype=np.float32)
        if math.prod(x.shape) != math.prod(self.shape):
            raise ValueError(f"prepared shape {list(x.shape)}, expected {list(self.shape)}")
        return x.reshape(self.shape)

    def entry(self) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.shape), "options": {"spec": self.spec}}


def decoder_from_entry(entry: Mapping[str, Any]) -> Decoder:
    """Rebuild a decoder from its :meth:`Decoder.entry` (``run.json`` ``raw``)."""
    kind, opts = entry.get("kind"), dict(entry.get("options", {}))
    if kind == "image":
        return ImageDecoder(**opts)
    if kind == "audio":
        return AudioDecoder(**opts)
    if kind == "array":
        return ArrayDecoder(entry["shape"], **opts)
    if kind == "text":
        return TextDecoder(**opts)
    if kind == "backbone":
        from centrobind.featurize.encoders import load_encoder

        enc = load_encoder(str(opts["spec"]), allow_random=True)
        return BackboneDecoder(str(opts["spec"]), entry["shape"], enc)
    raise DatasetError(f"unknown raw item kind {kind!r} (image, audio, array, text, backbone)")


# --------------------------------------------------------------------------- plans


@dataclass
class ColumnPlan:
    """How one modality column is read: ``kind`` (image, audio, array, text, features, backbone),
    decoder ``options`` and, for ``features`` / ``backbone``, the featurize encoder ``spec``."""

    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    spec: str | None = None


def _first_readable_array(cells: list[str | None]) -> tuple[int, ...]:
    for c in cells:
        if c is None:
            continue
        try:
            arr = np.load(c, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            continue
        return tuple(int(s) for s in arr.shape)
    raise DatasetError("no readable .npy item in the column")


def _make_decoder(plan: ColumnPlan, cells: list[str | None], kind: str | None) -> Decoder:
    """The decoder of a raw column (``kind``: the column's item kind, a hint for ``hf:``)."""
    if plan.kind == "image":
        return ImageDecoder(**plan.options)
    if plan.kind == "audio":
        return AudioDecoder(**plan.options)
    if plan.kind == "array":
        shape = plan.options.get("shape") or _first_readable_array(cells)
        return ArrayDecoder(shape, **{k: v for k, v in plan.options.items() if k != "shape"})
    if plan.kind == "text":
        return TextDecoder(**plan.options)
    if plan.kind == "backbone":
        from centrobind.featurize.encoders import load_encoder

        enc = load_encoder(
            str(plan.spec), device="cpu", allow_random=bool(plan.options.get("random")), kind=kind
        )
        shape = enc.train_shape(plan.options)
        if shape is None:
            raise DatasetError(f"encoder {plan.spec!r} cannot be trained on raw items")
        return BackboneDecoder(str(plan.spec), shape, enc)
    raise DatasetError(f"unknown column kind {plan.kind!r}")


# --------------------------------------------------------------------------- manifest state


def manifest_state(path: str | Path) -> dict[str, Any]:
    """``{"manifest", "sha256", "bytes"}`` of a manifest file (recorded when a run starts)."""
    p = Path(path).resolve()
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"manifest": str(p), "sha256": h.hexdigest(), "bytes": p.stat().st_size}


def check_manifest(saved: Mapping[str, Any], path: str | Path | None = None) -> None:
    """Raise :class:`DatasetError` (one line) when the manifest recorded in ``saved`` (from
    :func:`manifest_state`) changed since: another file, other bytes."""
    p = Path(path if path is not None else str(saved["manifest"]))
    if not p.is_file():
        raise DatasetError(f"{p}: the run's manifest is gone")
    now = manifest_state(p)
    if now["sha256"] != saved.get("sha256"):
        raise DatasetError(
            f"{p}: the manifest changed since the run started (sha256 {now['sha256'][:12]} != "
            f"{str(saved.get('sha256'))[:12]}); restore it or start a new run"
        )


# --------------------------------------------------------------------------- opened data


@dataclass
class RawData:
    """A manifest opened for training: cells per modality (absolute paths for files), decoders
    for raw columns, the features of frozen-encoder columns (``[N, F]``, NaN rows = missing or
    unreadable), labels, and the unreadable (row, reason) pairs found so far per modality."""

    modalities: list[str]
    cells: dict[str, list[str | None]]
    decoders: dict[str, Decoder]
    features: dict[str, NDArray]
    labels: dict[str, NDArray]
    state: dict[str, Any]
    featurizers: dict[str, dict[str, Any]]
    failed: dict[str, dict[int, str]]
    label_maps: dict[str, dict[str, int]]

    def __len__(self) -> int:
        return len(next(iter(self.cells.values())))

    @property
    def shapes(self) -> dict[str, list[int]]:
        """modality -> item shape (raw columns only)."""
        return {m: list(d.shape) for m, d in self.decoders.items()}

    @property
    def dims(self) -> dict[str, int]:
        """modality -> flat width of a row."""
        return {
            m: math.prod(self.decoders[m].shape)
            if m in self.decoders
            else self.features[m].shape[1]
            for m in self.modalities
        }

    @property
    def name(self) -> str:
        return Path(str(self.state["manifest"])).stem

    @property
    def splits(self) -> dict[str, Tensor]:
        """A manifest has no stored splits (the run makes seeded ones)."""
        return {}

    @property
    def meta(self) -> dict[str, Any]:
        """What a run records about the data (as :func:`load_raw`'s dataset ``meta``)."""
        return {
            "raw": self.record(),
            "shapes": self.shapes,
            "featurizers": self.featurizers,
            "skipped_items": self.skipped_counts(),
            "label_maps": self.label_maps,
        }

    def split_indices(
        self, fractions: Sequence[float], seed: int = 0, stratify: str | None = None
    ) -> dict[str, Tensor]:
        """Seeded train/val/test rows, exactly as a dataset of the same rows and labels splits
        (:meth:`~centrobind.data.MultimodalDataset.split_indices`)."""
        from .dataset import MultimodalDataset

        z = torch.zeros(len(self), 1)
        labels = {k: torch.from_numpy(v) for k, v in self.labels.items()}
        return MultimodalDataset({"a": z, "b": z}, labels=labels).split_indices(
            fractions, seed=seed, stratify=stratify
        )

    def take(self, rows: Sequence[int] | NDArray | Tensor) -> Any:
        """Rows decoded once, without augmentation: a
        :class:`~centrobind.data.MultimodalDataset` of flat rows (e.g. the validation rows)."""
        from .dataset import MultimodalDataset

        idx = np.asarray(rows, dtype=np.int64)
        feats: dict[str, Tensor] = {}
        mask = np.zeros((len(self.modalities), len(idx)), bool)
        for i, m in enumerate(self.modalities):
            x, ok, bad = self.decode_rows(m, idx)
            self.note_failures(m, bad)
            feats[m], mask[i] = torch.from_numpy(x), ok
        labels = {k: torch.from_numpy(v[idx]) for k, v in self.labels.items()}
        return MultimodalDataset(
            feats, mask=torch.from_numpy(mask), labels=labels, name=self.name, meta=self.meta
        )

    def skipped_counts(self) -> dict[str, int]:
        return {m: len(self.failed[m]) for m in self.modalities if self.failed[m]}

    def record(self) -> dict[str, Any]:
        """What ``run.json`` keeps about the raw data (``raw``): the manifest state, the
        decoders, the label columns."""
        return {
            **self.state,
            "decoders": {m: d.entry() for m, d in self.decoders.items()},
            "labels": list(self.labels),
        }

    def decode_rows(
        self, m: str, rows: NDArray, views: tuple[int, int] | None = None
    ) -> tuple[NDArray, NDArray, dict[int, str]]:
        """Rows of modality ``m`` -> (float32 ``[len(rows), width]``, bool present ``[len]``,
        {row: reason} for items that could not be read). ``views`` ``(seed, epoch)``: augment,
        each item with its own generator seeded by ``(seed, epoch, row, modality)``, so a row's
        view depends on nothing else (batch, rank, worker)."""
        if m not in self.decoders:
            x = self.features[m][rows]
            ok = np.asarray(np.isfinite(x).all(axis=1), dtype=bool)
            return np.where(ok[:, None], x, 0.0).astype(np.float32), ok, {}
        dec = self.decoders[m]
        width = math.prod(dec.shape)
        out = np.zeros((len(rows), width), np.float32)
        ok = np.zeros(len(rows), bool)
        bad: dict[int, str] = {}
        k = self.modalities.index(m)
        for i, r in enumerate(rows.tolist()):
            cell = self.cells[m][r]
            if cell is None:
                continue
            rng = None if views is None else np.random.default_rng([*views, r, k, 0xA06])
            try:
                out[i] = dec.decode(cell, rng).reshape(-1)
                ok[i] = True
            except Exception as e:  # noqa: BLE001 - any unreadable item is skipped and counted
                why = "file not found" if isinstance(e, FileNotFoundError) else str(e)
                bad[r] = f"{cell}: {' '.join(why.split())[:160]}"
        return out, ok, bad

    def note_failures(self, m: str, bad: Mapping[int, str]) -> None:
        """Count newly unreadable items and warn about the first few (one line each)."""
        new = {r: why for r, why in bad.items() if r not in self.failed[m]}
        for r, why in sorted(new.items()):
            if sum(len(v) for v in self.failed.values()) < _MAX_WARNED:
                warnings.warn(
                    f"row {r}, {m}: unreadable item skipped (treated as missing): {why}",
                    CentrobindWarning,
                    stacklevel=3,
                )
            self.failed[m][r] = why


def _read_cells(manifest: Any, m: str, kind: str) -> list[str | None]:
    col = manifest.columns[m]
    if kind == "text":
        return list(col)
    return [manifest.resolve(c) if c is not None else None for c in col]


def _featurize_column(
    spec: str, cells: list[str | None], device: str, kind: str | None
) -> tuple[NDArray, dict[str, Any], dict[int, str]]:
    """Run a frozen featurize encoder once over a column: float32 ``[N, F]`` (NaN rows: missing
    or unreadable), its ``meta.json`` entry, {row: reason}."""
    from centrobind.featurize.encoders import load_encoder

    enc = load_encoder(spec, device=device, kind=kind)
    x = np.full((len(cells), enc.dim), np.nan, np.float32)
    bad: dict[int, str] = {}
    rows, prepared = [], []
    for r, c in enumerate(cells):
        if c is None:
            continue
        try:
            prepared.append(enc.prepare(c))
            rows.append(r)
        except Exception as e:  # noqa: BLE001 - an unreadable item is skipped and counted
            why = "file not found" if isinstance(e, FileNotFoundError) else str(e)
            bad[r] = f"{c}: {' '.join(why.split())[:160]}"
    for i in range(0, len(rows), 64):
        x[rows[i : i + 64]] = np.asarray(enc.forward(prepared[i : i + 64]), dtype=np.float32)
    return x, enc.entry(), bad


def open_raw(
    manifest: str | Path,
    plans: Mapping[str, ColumnPlan],
    labels: Sequence[str] = (),
    device: str = "cpu",
) -> RawData:
    """Open a manifest for training: check the columns, build the decoders, run the frozen
    encoders of ``features`` columns once, encode the label columns."""
    from centrobind.featurize.labels import encode_labels
    from centrobind.featurize.manifest import column_kind, read_manifest

    man = read_manifest(manifest)
    for name in [*plans, *labels]:
        if name not in man.columns:
            raise DatasetError(
                f"{man.path}: no column {name!r} (columns: {', '.join(man.columns)})"
            )
    mods = list(plans)
    if len(mods) < 2:
        raise DatasetError(f"{man.path}: training needs at least 2 modality columns, got {mods}")
    data = RawData(mods, {}, {}, {}, {}, manifest_state(man.path), {}, {m: {} for m in mods}, {})
    for m in mods:
        plan = plans[m]
        guess = column_kind(man.columns[m])
        data.cells[m] = _read_cells(
            man,
            m,
            "text"
            if plan.kind == "text" or (plan.kind in ("features", "backbone") and guess == "text")
            else "file",
        )
        if plan.kind == "features":
            hint = guess if guess != "text" else None
            x, entry, bad = _featurize_column(str(plan.spec), data.cells[m], device, hint)
            data.features[m], data.featurizers[m] = x, entry
            data.note_failures(m, bad)
        else:
            try:
                hint = guess if guess in ("text", "image", "audio") else None
                data.decoders[m] = _make_decoder(plan, data.cells[m], hint)
            except DatasetError as e:
                raise DatasetError(f"{man.path}: column {m!r}: {e}") from None
    for name in labels:
        data.labels[name], data.label_maps[name] = encode_labels(name, man.columns[name])
    return data


def load_raw(
    manifest: str | Path,
    plans: Mapping[str, ColumnPlan],
    labels: Sequence[str] = (),
    device: str = "cpu",
    name: str | None = None,
) -> Any:
    """Decode every item once (no augmentation) into an in-memory
    :class:`~centrobind.data.MultimodalDataset` of flat rows (see the module docstring).
    Unreadable items become missing rows, counted in ``meta["skipped_items"]`` and warned about.
    ``meta["raw"]`` (:meth:`RawData.record`), ``meta["shapes"]`` and ``meta["featurizers"]``
    say how to read the same items again."""

    data = open_raw(manifest, plans, labels, device)
    ds = data.take(np.arange(len(data)))
    if name is not None:
        ds.name = name
    return ds


# --------------------------------------------------------------------------- streaming


class _BatchDecoder(
    torch.utils.data.Dataset[tuple[dict[str, Tensor], Tensor, dict[str, dict[int, str]]]]
):
    """Map-style dataset over the batches of one epoch (index = batch number): a worker decodes
    a whole batch (augmentation: :meth:`RawData.decode_rows`)."""

    def __init__(self, data: RawData, augment: bool) -> None:
        self.data = data
        self.augment = augment
        self.batches: list[NDArray] = []
        self.seed = 0
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> tuple[dict[str, Tensor], Tensor, dict[str, dict[int, str]]]:
        rows = self.batches[b]
        views = (self.seed, self.epoch) if self.augment else None
        feats, oks, bad = {}, [], {}
        for m in self.data.modalities:
            x, ok, fails = self.data.decode_rows(m, rows, views)
            feats[m] = torch.from_numpy(x)
            oks.append(ok)
            bad[m] = fails
        return feats, torch.from_numpy(np.stack(oks)), bad


class RawSource(TrainSource):
    """Training rows decoded from raw items while training (a :class:`TrainSource`).

    Args:
        data: an opened manifest (:func:`open_raw`).
        rows: the training rows (positions in the manifest), e.g. the run's train split.
        order: the row order (default :class:`GlobalShuffle`).
        workers: DataLoader worker processes decoding batches (0: in this process).
        augment: decode with the augmentations of the module docstring.
        device: where batches go (``pin_memory`` and non-blocking copies on CUDA).

    Batches are ``features[m]`` float32 ``[B, prod(shape_m)]`` and the mask ``[M, B]`` (False
    where an item is missing or unreadable). Before each epoch the manifest is checked against
    its state when opened (:func:`check_manifest`).
    """

    def __init__(
        self,
        data: RawData,
        rows: Sequence[int] | NDArray | Tensor | None = None,
        order: RowOrder | None = None,
        workers: int = 2,
        augment: bool = True,
        device: str | torch.device = "cpu",
        prefetch: int = 2,
    ) -> None:
        self.data = data
        self.modalities = list(data.modalities)
        all_rows = np.arange(len(data)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.rows = all_rows.astype(np.int64)
        self.order = order or GlobalShuffle()
        self.workers = int(workers)
        self.device = torch.device(device)
        self.prefetch = prefetch
        self._ds = _BatchDecoder(data, augment)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def dims(self) -> dict[str, int]:
        """Modality -> flat row width (items flattened)."""
        return self.data.dims

    def batches(
        self,
        epoch: int,
        seed: int,
        batch_size: int,
        drop_last: bool,
        *,
        start: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> Iterator[Batch]:
        check_manifest(self.data.state)
        positions = list(batch_positions(self.order, len(self), seed, epoch, batch_size, drop_last))
        self._ds.batches = [self.rows[rank_share(p, rank, world)] for p in positions]
        self._ds.seed, self._ds.epoch = seed, epoch
        pin = self.device.type == "cuda"
        loader = torch.utils.data.DataLoader(
            self._ds,
            batch_size=None,
            sampler=range(start, len(positions)),
            num_workers=self.workers,
            pin_memory=pin,
            prefetch_factor=self.prefetch if self.workers else None,
        )
        for feats, ok, bad in loader:
            for m, fails in bad.items():
                if fails:
                    self.data.note_failures(m, fails)
            yield (
                {m: x.to(self.device, non_blocking=pin) for m, x in feats.items()},
                ok.to(self.device, non_blocking=pin),
            )

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "raw",
            **self.order.describe(),
            "workers": self.workers,
            "augment": self._ds.augment,
            "manifest": self.data.state["manifest"],
            "sha256": self.data.state["sha256"],
            "skipped_items": self.data.skipped_counts(),
        }
