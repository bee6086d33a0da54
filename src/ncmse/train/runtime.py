"""Where a run executes: device resolution, torch's global settings and the environment record.

Used by ``ncmse train``, ``ncmse measure`` and ``ncmse ufm`` (one rule for ``--device auto``).
"""

from __future__ import annotations

import os
import platform
import socket
from typing import Any

import numpy as np
import torch

from ncmse import __version__
from ncmse.errors import ConfigError

__all__ = ["configure_torch", "environment", "resolve_device"]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: ``cuda:local_rank`` when CUDA is available, else ``cpu``; others as named.

    >>> resolve_device("cpu")
    device(type='cpu')

    Raises
    ------
    ConfigError
        For ``cuda`` without CUDA, or an unknown name.
    """
    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"device={name!r} is not one of auto, cpu, cuda, cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but CUDA is not available; use --set device=cpu or auto")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name.startswith("cuda:"):
        return torch.device(name)
    return torch.device("cuda", local_rank)


def environment(device: torch.device, world_size: int = 1) -> dict[str, Any]:
    """Software and hardware facts recorded in ``summary.json`` (``environment``)."""
    env: dict[str, Any] = {
        "ncmse": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "device": str(device),
        "world_size": world_size,
        "num_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def configure_torch(cfg: Any, device: torch.device) -> None:
    """Apply a run config's process-wide settings: ``num_threads``, ``deterministic`` (which
    also decides ``cudnn.benchmark`` on CUDA: autotuning when not deterministic)."""
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg.deterministic
