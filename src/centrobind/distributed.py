"""Where this process runs: its device, and its place in a ``torchrun`` group.

The one home of both concerns for the whole package (config checks, training, run folders,
inference, featurizing, the CLI):

- :func:`resolve_device`: a device name -> :class:`torch.device`, refused in one line when this
  machine lacks it;
- :func:`rank_and_world`, :func:`is_main_process`, :func:`barrier`: this process's rank and the
  world size (``0, 1`` outside ``torchrun``);
- :func:`init_distributed`: join the process group under ``torchrun``;
- :func:`peer_lost`, :func:`rank_died`, :func:`distributed_failure`, :func:`sigterm_received`:
  when another rank dies, the survivor says so in one line (which rank, ``--resume``).

A floor-1 module: it imports :mod:`centrobind.errors` and, only when a function needs it,
``torch`` (so ``import centrobind.config`` and a CLI error about bad input stay fast).

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> rank_and_world()  # a plain single process
    (0, 1)
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import CentrobindError, ConfigError

__all__ = [
    "DEVICE_CHOICES",
    "RankLostError",
    "barrier",
    "distributed_failure",
    "init_distributed",
    "is_main_process",
    "peer_lost",
    "rank_and_world",
    "rank_died",
    "resolve_device",
    "sigterm_deferred",
    "sigterm_received",
]

if TYPE_CHECKING:
    import torch

#: What a device name may be (the ``--device`` help).
DEVICE_CHOICES = "auto (CUDA when available, else CPU) | cpu | cuda | cuda:N | mps"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The device to run on: ``auto`` is CUDA when available, else CPU; under ``torchrun``
    (``LOCAL_RANK`` set) a bare ``cuda`` is this process's GPU, ``cuda:LOCAL_RANK``.

    Raises:
        ConfigError: one line, for a name that is not ``cpu``/``cuda[:N]``/``mps``/``auto``, or a
            device this machine does not have (``CUDA is not available on this machine``).
    """
    import torch

    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {str(device)!r} (use auto, cpu, cuda, cuda:N or mps)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {str(device)!r}: CUDA is not available on this machine")
        if dev.index is None and "LOCAL_RANK" in os.environ:
            dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA "
                "device(s)"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {str(device)!r}: MPS is not available on this machine")
    return dev


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of this process in the initialised process group, else ``(0, 1)``."""
    if "torch" not in sys.modules:  # no process group without torch: stay light
        return 0, 1
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 (and outside ``torchrun``): the process that writes files and reports."""
    return rank_and_world()[0] == 0


def barrier() -> None:
    """Wait for every rank (no-op outside ``torchrun``)."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def init_distributed(device: str = "auto") -> bool:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) join the process group: NCCL
    when ``device`` resolves to CUDA (this process's GPU, ``LOCAL_RANK``), else gloo. Returns
    whether this process is one of several ranks."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        on_cuda = resolve_device(device).type == "cuda"
        if on_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if on_cuda else "gloo")
        _note_sigterm()
    return True


class RankLostError(CentrobindError):
    """Another rank of the ``torchrun`` group is gone; this one stops too."""


#: SIGTERM handling in a ``torchrun`` group on gloo (see :func:`_note_sigterm`).
_SIGTERM: dict[str, Any] = {"seen": False, "deferring": 0}


def sigterm_received() -> bool:
    """True once SIGTERM arrived while :func:`sigterm_deferred` was active (training then stops
    after its current step)."""
    return bool(_SIGTERM["seen"])


@contextlib.contextmanager
def sigterm_deferred() -> Iterator[None]:
    """While inside (a training loop), SIGTERM only sets :func:`sigterm_received` in a process
    that :func:`init_distributed` put in a gloo group; outside, it kills as usual."""
    _SIGTERM["deferring"] += 1
    try:
        yield
    finally:
        _SIGTERM["deferring"] -= 1


def _note_sigterm() -> None:
    """On gloo (CPU) ranks, SIGTERM inside :func:`sigterm_deferred` sets a flag instead of
    killing at once: torchrun sends it to the surviving ranks when one dies, and the survivor's
    next collective (gloo sees the dead peer's closed socket at once) then fails and says which
    rank is gone (:func:`rank_died`) instead of dying without a word; when every rank got it,
    training stops cleanly after its current step. Not on NCCL, whose collectives may block
    instead of failing. Main thread only."""
    import torch.distributed as dist

    if threading.current_thread() is not threading.main_thread():
        return
    if dist.get_backend() != "gloo":
        return

    def handler(signum: int, frame: Any) -> None:
        if _SIGTERM["deferring"]:
            _SIGTERM["seen"] = True
        else:  # not training: the usual end
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)


#: What gloo / NCCL say when another rank's process is gone (killed, crashed, its machine down).
_PEER_LOST = (
    "connection reset by peer",
    "connection closed by peer",
    "broken pipe",
    "connection refused",
    "socket timeout",
    "nccl communicator was aborted",
    "remote process exited",
)


def peer_lost(e: BaseException) -> bool:
    """True when a collective failed because another rank is gone."""
    import torch.distributed as dist

    dist_error = getattr(dist, "DistError", None)
    text = str(e).lower()
    return (dist_error is not None and isinstance(e, dist_error)) or any(
        t in text for t in _PEER_LOST
    )


def rank_died(when: str = "", kept: str = "") -> RankLostError:
    """The one line of a surviving rank when a collective failed because another rank is gone:
    which rank, what was kept, how to continue (``when``: e.g. ``" at step 40"``)."""
    rank, world = rank_and_world()
    who = f"rank {1 - rank} of 2" if world == 2 else f"another of the {world} ranks"
    return RankLostError(
        f"{who} stopped (its process died or lost its connection){when}; rank {rank} stops "
        f"too; {kept or 'the run folder keeps its last checkpoint'}; run the same command with "
        "--resume to continue"
    )


def distributed_failure(e: BaseException) -> RankLostError | None:
    """:func:`rank_died` when ``e`` says another rank is gone (under several ranks), else None."""
    if rank_and_world()[1] > 1 and isinstance(e, RuntimeError) and peer_lost(e):
        return rank_died()
    return None
