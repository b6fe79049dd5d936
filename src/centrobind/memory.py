"""Refuse a model that cannot fit before allocating it: parameters counted on the ``meta``
device, capacity from the GPU or from physical RAM capped by a cgroup limit."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["check_parameter_memory", "count_parameters", "memory_capacity"]


def count_parameters(factory: Callable[[], nn.Module]) -> int:
    """Number of parameter elements of the module that ``factory()`` builds, counted on the
    ``meta`` device: no memory is allocated, whatever the size."""
    with torch.device("meta"):
        module = factory()
    return sum(p.numel() for p in module.parameters())


def _cgroup_limit() -> int | None:
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(f).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def memory_capacity(device: str | torch.device = "cpu") -> int | None:
    """Total memory in bytes that ``device`` can hold (GPU memory for CUDA; physical RAM, capped
    by a cgroup limit, otherwise); None when unknown."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return int(torch.cuda.get_device_properties(index).total_memory)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = None
    limit = _cgroup_limit()
    if ram is None:
        return limit
    return min(ram, limit) if limit is not None else int(ram)


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_parameter_memory(
    n_params: int,
    device: str | torch.device = "cpu",
    *,
    bytes_per_param: int = 4,
    copies: int = 5,
    what: str = "training",
    hint: str = "lower --embed-dim / hidden / depth",
) -> int:
    """Refuse a model whose parameters cannot fit in ``device``'s memory.

    ``copies`` is how many parameter-sized buffers the job needs: training with AdamW holds
    weights, gradients, two moment buffers and the best epoch's copy (5); inference 1-2.

    Returns:
        the estimated bytes.

    Raises:
        ConfigError: one line with the parameter count, the estimate and the capacity.
    """
    need = int(n_params) * bytes_per_param * copies
    cap = memory_capacity(device)
    if cap is not None and need > cap:
        raise ConfigError(
            f"the model has {n_params:,} parameters: {what} needs about {_gib(need)} but "
            f"{torch.device(device).type} memory is {_gib(cap)}; {hint}"
        )
    return need
