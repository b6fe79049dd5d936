"""Progress bars that suit where they are written.

On a terminal (or in a notebook) :func:`progress_bar` is tqdm's usual live bar. When the stream
is not a terminal (stderr redirected to a log file, a pipe, CI), a live bar rewrites itself with
carriage returns many times a second and floods the log; there it is a :class:`LogBar`, which
writes one plain line at the start, at most one every :data:`LOG_INTERVAL` seconds, and one at
the end.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from tqdm import tqdm

__all__ = ["LOG_INTERVAL", "LogBar", "progress_bar"]

#: Seconds between two lines of a :class:`LogBar`.
LOG_INTERVAL = 30.0


class LogBar(tqdm):  # type: ignore[misc]
    """A tqdm bar for logs: plain lines (no ``\\r``), at most one per ``interval`` seconds, plus
    the first and the last state."""

    def __init__(self, *args: Any, interval: float | None = None, **kwargs: Any) -> None:
        self._every = LOG_INTERVAL if interval is None else float(interval)
        self._shown_at = -math.inf
        self._shown: tuple[Any, ...] | None = None  # (n, postfix, desc) last written
        self._closing = False
        kwargs.pop("dynamic_ncols", None)
        kwargs["ascii"] = True
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg is not None or getattr(self, "fp", None) is None:
            return False  # a request to clear the line: nothing to clear in a log
        now = time.monotonic()
        state = (self.n, self.postfix, self.desc)
        if state == self._shown:
            return False  # nothing new (the elapsed time alone is no news)
        done = self.total is not None and self.n >= self.total
        first_done = done and (self._shown is None or self._shown[0] < self.n)
        if self._closing or first_done or now - self._shown_at >= self._every:
            self.fp.write(str(self) + "\n")
            self.fp.flush()
            self._shown_at, self._shown = now, state
        return True

    def clear(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to clear: lines already written stay."""

    def close(self) -> None:
        if not self.disable:
            self._closing = True
            self.display()
            self.leave = False  # tqdm would write the last state again plus a newline
        super().close()


def _interactive(stream: Any) -> bool:
    """A terminal, or a Jupyter kernel (tqdm.auto draws a widget there)."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):
        pass
    return "ipykernel" in sys.modules


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """``tqdm.auto.tqdm(*args, **kwargs)`` on a terminal, a :class:`LogBar` elsewhere (same
    arguments; ``file`` defaults to stderr)."""
    stream = kwargs.get("file") or sys.stderr
    if kwargs.get("disable") or _interactive(stream):
        from tqdm.auto import tqdm as auto

        return auto(*args, **kwargs)
    return LogBar(*args, **kwargs)
