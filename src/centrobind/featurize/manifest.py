"""Manifests: one row per paired sample, one column per modality (CSV, TSV, JSONL or Parquet).

A cell is a text string or a file path relative to the manifest's folder; an empty cell (``""``,
JSON ``null``, a Parquet null) means the modality is missing for that row. Columns named as labels
are read as labels, every other column is a modality.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from centrobind.errors import CentrobindError

__all__ = ["Manifest", "read_manifest", "column_kind", "IMAGE_EXTS", "AUDIO_EXTS"]

IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
AUDIO_EXTS = frozenset({".wav", ".wave", ".flac", ".mp3", ".ogg", ".m4a"})
FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass
class Manifest:
    """A manifest in memory: ``columns[name]`` is a list of ``N`` cells (``str`` or ``None``).

    ``base`` is the folder that relative file paths are resolved against; ``lines[i]`` is the
    line of the file where row ``i`` starts (None for Parquet, which has no lines).
    """

    path: Path
    base: Path
    columns: dict[str, list[str | None]]
    lines: list[int] | None = None
    offset: int = 0  # the first row's number in the whole manifest (a part of it: :meth:`part`)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def resolve(self, cell: str) -> str:
        """Absolute path of a file cell (relative paths are relative to the manifest folder)."""
        p = Path(cell).expanduser()
        return str(p if p.is_absolute() else (self.base / p).resolve())

    def where(self, row: int) -> str:
        """Where data row ``row`` (0-based) is in the file, for messages: ``"line 7"`` (CSV, TSV,
        JSONL; the header is line 1) or ``"row 5"`` (Parquet)."""
        return f"line {self.lines[row]}" if self.lines is not None else f"row {row + self.offset}"

    def part(self, lo: int, hi: int) -> Manifest:
        """Rows ``lo..hi-1`` as a manifest of their own (messages still name the whole file's
        lines and rows)."""
        cols = {k: v[lo:hi] for k, v in self.columns.items()}
        lines = self.lines[lo:hi] if self.lines is not None else None
        return Manifest(self.path, self.base, cols, lines, self.offset + lo)


def _cell(v: Any) -> str | None:
    """Normalise one cell: None/NaN/empty -> None, numbers -> their text, strings stripped."""
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, (dict, list)):
        raise ValueError(f"nested value {json.dumps(v)[:40]}")
    s = str(v).strip()
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # JSON can spell a lone surrogate ("\ud800"): not text
        raise ValueError("not valid Unicode text (a lone surrogate)") from None
    return s or None


#: Longest CSV/TSV cell accepted (the csv module's own default, 131,072 characters, is shorter
#: than texts that JSONL takes without complaint).
MAX_CSV_FIELD = 2**31 - 1


def _read_csv(path: Path, delimiter: str) -> tuple[list[str], list[list[Any]], list[int]]:
    old_limit = csv.field_size_limit(MAX_CSV_FIELD)
    try:
        return _read_csv_rows(path, delimiter)
    except csv.Error as e:  # e.g. a NUL byte, an unterminated quote at the end
        raise CentrobindError(f"{path}: not a readable CSV file ({e})") from None
    finally:
        csv.field_size_limit(old_limit)


def _read_csv_rows(path: Path, delimiter: str) -> tuple[list[str], list[list[Any]], list[int]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise CentrobindError(f"{path}: empty manifest (no header row)") from None
        rows, lines = [], []
        start = reader.line_num + 1
        for i, row in enumerate(reader):
            first, start = start, reader.line_num + 1  # a quoted cell may span several lines
            if not row:  # a blank line: an empty cell in a one-column manifest, else skipped
                if len(header) != 1:
                    continue
                row = [""]
            if len(row) != len(header):
                raise CentrobindError(
                    f"{path}: line {reader.line_num} has {len(row)} fields, the header has "
                    f"{len(header)} (row {i})"
                )
            rows.append(row)
            lines.append(first)
    return [h.strip() for h in header], rows, lines


def _read_jsonl(path: Path) -> tuple[list[str], list[list[Any]], list[int]]:
    header: list[str] = []
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise CentrobindError(
                    f"{path}: line {lineno} is not valid JSON ({e.msg})"
                ) from None
            if not isinstance(rec, dict):
                raise CentrobindError(f"{path}: line {lineno} is not a JSON object")
            for k in rec:
                if k not in header:
                    header.append(k)
            records.append(rec)
            lines.append(lineno)
    return header, [[r.get(k) for k in header] for r in records], lines


def _read_parquet(path: Path) -> tuple[list[str], list[list[Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CentrobindError(
            f"{path}: reading Parquet needs pyarrow (pip install 'centrobind[parquet]')"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise CentrobindError(
            f"{path}: unreadable Parquet file: {' '.join(str(e).split())}"
        ) from None
    header = list(table.column_names)
    cols = [table.column(c).to_pylist() for c in header]
    return header, [list(r) for r in zip(*cols, strict=True)] if cols else []


def read_manifest(path: str | Path) -> Manifest:
    """Read a manifest; the format comes from the suffix (.csv, .tsv, .jsonl/.ndjson,
    .parquet/.pq). Raises :class:`CentrobindError` (one line) for any problem."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise CentrobindError(f"{path}: unknown manifest format {path.suffix!r} (use {known})")
    if not path.is_file():
        what = "not a regular file" if path.exists() else "manifest not found"
        raise CentrobindError(f"{path}: {what}")
    lines: list[int] | None = None
    try:
        if fmt in ("csv", "tsv"):
            header, rows, lines = _read_csv(path, "," if fmt == "csv" else "\t")
        elif fmt == "jsonl":
            header, rows, lines = _read_jsonl(path)
        else:
            header, rows = _read_parquet(path)
    except UnicodeDecodeError:
        raise CentrobindError(f"{path}: not UTF-8 text (is it really {fmt}?)") from None
    if not header:
        raise CentrobindError(f"{path}: no columns")
    if len(set(header)) != len(header) or any(not h for h in header):
        raise CentrobindError(f"{path}: column names must be unique and non-empty: {header}")
    if not rows:
        raise CentrobindError(f"{path}: no data rows")
    columns: dict[str, list[str | None]] = {h: [] for h in header}
    for i, row in enumerate(rows):
        for h, v in zip(header, row, strict=True):
            try:
                columns[h].append(_cell(v))
            except ValueError as e:
                where = f"line {lines[i]}" if lines is not None else f"row {i}"
                raise CentrobindError(f"{path}: {where}, column {h!r}: {e}") from None
    return Manifest(path=path.resolve(), base=path.resolve().parent, columns=columns, lines=lines)


def column_kind(cells: list[str | None]) -> str:
    """``"image"`` / ``"audio"`` if every non-empty cell has an image / audio file suffix, else
    ``"text"``."""
    present = [c for c in cells if c is not None]
    suffixes = {Path(c).suffix.lower() for c in present}
    if present and suffixes <= IMAGE_EXTS:
        return "image"
    if present and suffixes <= AUDIO_EXTS:
        return "audio"
    return "text"
