"""Process-group facts and RNG state of a run (torchrun / DistributedDataParallel).

``init_distributed`` initialises ``torch.distributed`` from torchrun's environment when
``WORLD_SIZE > 1``; :func:`process_group` destroys it on the way out; :func:`broadcast` sends rank
0's Python object to every rank. :func:`capture_rng` / :func:`restore_rng` carry every RNG state a
training step may consume (exact resume).
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ncmse.train.config import Config
from ncmse.train.runtime import resolve_device

__all__ = [
    "DistInfo",
    "broadcast",
    "capture_rng",
    "init_distributed",
    "process_group",
    "restore_rng",
]


@dataclass(frozen=True)
class DistInfo:
    """Process-group facts of this process (``world_size == 1`` when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes files."""
        return self.rank == 0


def init_distributed(cfg: Config) -> DistInfo:
    """Initialise ``torch.distributed`` from torchrun's env vars when ``WORLD_SIZE > 1``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.device, local_rank)
    backend = cfg.dist_backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def broadcast(obj: Any, dist_info: DistInfo) -> Any:
    if dist_info.world_size == 1:
        return obj

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def process_group(dist_info: DistInfo) -> Iterator[None]:
    """Destroy the process group that :func:`init_distributed` created, on the way out."""
    try:
        yield
    finally:
        if dist_info.world_size > 1:
            if dist.is_initialized():
                dist.destroy_process_group()


def capture_rng() -> dict[str, Any]:
    """Every RNG state a training step may consume (torch, CUDA, NumPy, Python)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the global state is what code uses)
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
