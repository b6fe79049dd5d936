"""Resume an interrupted benchmark: every finished run is appended to ``<out>/runs.jsonl``.

A run is reused only when its key matches exactly: the job (method, seed, data, evaluation
asked for, logit scale), the training budget, and a digest of the installed ``centrobind`` code
that computes a number and torch's version. Editing the library therefore starts the affected
runs afresh instead of mixing numbers from two versions of the code; a line cut short by a crash
is ignored. Inside ``bench/`` only the modules that run a job are in the digest
(:data:`_COMPUTE`): the suites, the scale protocol and the report only decide which jobs exist,
and a job's identity is its ``repr``.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from ..eval import to_builtin

__all__ = ["RunCache", "code_digest"]

#: Files outside ``bench/`` that only present results; editing them keeps the cached runs valid.
_PRESENTATION = {"cli.py", "__main__.py"}
#: The ``bench/`` modules that compute a job's numbers (the rest of ``bench/`` is not digested).
_COMPUTE = {"jobs.py", "methods.py", "gcca.py"}


@cache
def code_digest() -> str:
    """sha256 over the package's files that can change a number (sources and bundled data) and
    torch's version."""
    import torch

    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256(torch.__version__.encode())
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name in _PRESENTATION or "__pycache__" in p.parts:
            continue
        if p.parent.name == "bench" and p.parent.parent == root and p.name not in _COMPUTE:
            continue
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


class RunCache:
    """Append-only record of finished runs in ``path`` (JSON lines ``{"key", "result"}``).

    Example:
        >>> import tempfile
        >>> c = RunCache(Path(tempfile.mkdtemp()) / "runs.jsonl")
        >>> c.put(("job", 1), {"R@1": 50.0})
        >>> RunCache(c.path).get(("job", 1)), RunCache(c.path).get(("job", 2))
        ({'R@1': 50.0}, None)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._done: dict[str, dict[str, Any]] = {}
        self._torn = False  # the file ends inside a line: the next entry starts a new one
        if self.path.exists():
            with self.path.open("rb") as fb:
                size = fb.seek(0, os.SEEK_END)
                if size:
                    fb.seek(size - 1)
                    self._torn = fb.read(1) != b"\n"
            with self.path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        self._done[entry["key"]] = entry["result"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut short by a crash: that run is simply redone

    @staticmethod
    def key(obj: Any) -> str:
        """The cache key of ``obj`` (a job and its budget: their ``repr``) under this code."""
        return hashlib.sha256((code_digest() + repr(obj)).encode()).hexdigest()

    def __len__(self) -> int:
        return len(self._done)

    def get(self, obj: Any) -> dict[str, Any] | None:
        return self._done.get(self.key(obj))

    def put(self, obj: Any, result: dict[str, Any]) -> None:
        """Record ``result`` and flush it to disk before returning."""
        k = self.key(obj)
        result = to_builtin(result)
        self._done[k] = result
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(("\n" if self._torn else "") + json.dumps({"key": k, "result": result}) + "\n")
            self._torn = False
            f.flush()
            os.fsync(f.fileno())
