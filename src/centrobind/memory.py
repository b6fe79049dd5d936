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


def _limit_file(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) < 1 << 60 else None


def cgroup_limits(
    proc_cgroup: str | Path = "/proc/self/cgroup", root: str | Path = "/sys/fs/cgroup"
) -> list[int]:
    """The memory limits (bytes) of this process's own cgroup and its ancestors, from
    ``/proc/self/cgroup``: cgroup v2 (``0::/path`` -> ``memory.max``) and v1 (``N:memory:/path``
    -> ``memory/.../memory.limit_in_bytes``), as set by SLURM, systemd or a container."""
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return []
    root = Path(root)
    found: list[int] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":  # v2 unified hierarchy
            base, name = root, "memory.max"
        elif "memory" in controllers.split(","):
            base = root / "memory" if (root / "memory").is_dir() else root / controllers
            name = "memory.limit_in_bytes"
        else:
            continue
        path = Path(rel.strip() or "/")
        for anc in [path, *path.parents]:  # the tightest limit up the tree applies
            limit = _limit_file(base / str(anc).lstrip("/") / name)
            if limit is not None:
                found.append(limit)
    return found


def _cgroup_limit() -> int | None:
    limits = cgroup_limits()
    return min(limits) if limits else None


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
