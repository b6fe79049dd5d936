"""The benchmark's progress bar: it names the job(s) running now (not the one that just
finished) and says what happens during the silent start (worker processes importing torch).

Worker processes announce the job they start on a queue (:func:`init_worker`, :func:`announced`);
the main process reads it between completions (:meth:`JobProgress.poll`).
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["JobProgress", "announced", "init_worker"]

_EVENTS: Any = None  # in a worker process: the queue it announces started jobs on


def init_worker(events: Any, init: Callable[[], None]) -> None:
    """Worker initializer: remember the queue ``events``, then run ``init()``."""
    global _EVENTS
    _EVENTS = events
    init()


def announced(fn: Callable[..., Any], index: int, *args: Any) -> Any:
    """In a worker: put ``index`` on the queue (job ``index`` starts now), return ``fn(*args)``."""
    if _EVENTS is not None:
        _EVENTS.put(index)
    return fn(*args)


class JobProgress:
    """A tqdm bar over ``labels`` (one per job) whose status is the running job.

    ``started(i)`` / ``finished(i)`` report job ``i``; ``poll(events)`` reads the indices workers
    announced; ``tick()`` redraws (the elapsed time moves even while no job finishes).
    """

    def __init__(
        self,
        labels: Sequence[str],
        desc: str,
        disable: bool = False,
        workers: int = 1,
    ) -> None:
        from ..logbar import progress_bar

        self.labels = list(labels)
        self.running: dict[int, None] = {}  # insertion-ordered: the oldest first
        self.done: set[int] = set()
        self.bar = progress_bar(
            total=len(self.labels), desc=desc, unit="run", disable=disable, dynamic_ncols=True
        )
        if workers > 1:
            self.status(f"starting {workers} worker processes (importing torch)")
        elif self.labels:
            self.status(f"preparing {self.labels[0]}")

    def status(self, text: str) -> None:
        self.bar.set_postfix_str(text, refresh=True)

    @property
    def postfix(self) -> str:
        """The status text shown now."""
        return str(self.bar.postfix or "")

    def _show(self) -> None:
        if self.running:
            first = next(iter(self.running))
            more = len(self.running) - 1
            self.status(f"running {self.labels[first]}" + (f" (+{more} more)" if more else ""))
        elif len(self.done) < len(self.labels):
            self.status("waiting for a worker")
        else:
            self.status("writing the report")

    def started(self, i: int) -> None:
        if i not in self.done:
            self.running[i] = None
            self._show()

    def finished(self, i: int) -> None:
        self.running.pop(i, None)
        self.done.add(i)
        self.bar.update(1)
        self._show()

    def poll(self, events: Any) -> None:
        """Read every job index announced on ``events`` so far (non-blocking)."""
        while True:
            try:
                i = events.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return
            self.started(int(i))

    def tick(self) -> None:
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
