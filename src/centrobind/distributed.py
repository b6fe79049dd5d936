"""Where this process runs: its device, and its place in a ``torchrun`` group.

The one home of both concerns for the whole package (config checks, training, run folders,
inference, featurizing, the CLI):

- :func:`resolve_device`: a device name -> :class:`torch.device`, refused in one line when this
  machine lacks it;
- :func:`rank_and_world`, :func:`is_main_process`, :func:`barrier`: this process's rank and the
  world size (``0, 1`` outside ``torchrun``);
- :func:`init_distributed`: join the process group under ``torchrun``.

A floor-0 module: it imports ``torch`` and :mod:`centrobind.errors` only, so every layer may use it.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> rank_and_world()  # a plain single process
    (0, 1)
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .errors import ConfigError

__all__ = [
    "DEVICE_CHOICES",
    "barrier",
    "init_distributed",
    "is_main_process",
    "rank_and_world",
    "resolve_device",
]

#: What a device name may be (the ``--device`` help).
DEVICE_CHOICES = "auto (CUDA when available, else CPU) | cpu | cuda | cuda:N | mps"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The device to run on: ``auto`` is CUDA when available, else CPU; under ``torchrun``
    (``LOCAL_RANK`` set) a bare ``cuda`` is this process's GPU, ``cuda:LOCAL_RANK``.

    Raises:
        ConfigError: one line, for a name that is not ``cpu``/``cuda[:N]``/``mps``/``auto``, or a
            device this machine does not have (``CUDA is not available on this machine``).
    """
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
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 (and outside ``torchrun``): the process that writes files and reports."""
    return rank_and_world()[0] == 0


def barrier() -> None:
    """Wait for every rank (no-op outside ``torchrun``)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def init_distributed(device: str = "auto") -> bool:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) join the process group: NCCL
    when ``device`` resolves to CUDA (this process's GPU, ``LOCAL_RANK``), else gloo. Returns
    whether this process is one of several ranks."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        on_cuda = resolve_device(device).type == "cuda"
        if on_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if on_cuda else "gloo")
    return True
