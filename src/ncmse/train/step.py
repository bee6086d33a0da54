"""The training step of one run: the :class:`Step` protocol, its eager reference, the fast step.

The loop calls a :class:`Step`, whose contract is ``step(x, y) -> (objective, correct)``:
forward, loss, backward, SGD step, both returns detached device tensors (no host
synchronisation). :class:`TrainStep` is that step in its plainest form — no precision handling,
PyTorch's global float32 flags as they are — the reference the tests compare :class:`FastStep`
against bit for bit, and the baseline ``benchmarks/bench_gpu.py`` times. ``ncmse train`` runs
:class:`FastStep` (eager, or captured once in a CUDA graph and replayed), which gives the same
numbers on every path:

* **eager** (CPU, or ``cuda_graph=False``, or a batch of another size): the plain step of
  :class:`TrainStep`, ``out = model(x); loss = criterion(out, y); zero_grad; backward;
  optimizer.step()``.
* **graphed** (CUDA, one process, batches of the static size): the same Python code is captured
  in a ``torch.cuda.CUDAGraph`` after ``warmup_steps`` real eager steps on a side stream (which
  create the momentum buffers and let cuDNN choose its algorithms); each later batch is copied
  into the graph's static input buffers and the graph replayed on the caller's stream: no host
  synchronisation, one launch instead of hundreds. The learning rate is a constant of the
  captured optimizer step, so the graph is captured again whenever it changes (twice per paper
  run, at the milestones) or after a checkpoint is loaded (:meth:`FastStep.invalidate`). The
  final partial batch (60 000 = 468 × 128 + 96 on Fashion-MNIST) runs eagerly with the same code:
  nothing is dropped, the math of every step is the eager math.

Precision (config key ``precision``, recorded in ``summary.json``):

* ``fp32`` — strict IEEE float32: TF32 off for convolutions and matmuls.
* ``tf32`` — TF32 tensor cores allowed for convolutions and matmuls (10-bit mantissa products,
  float32 accumulation); CUDA only, no effect on the CPU.
* ``bf16`` — TF32 allowed, and the forward pass and loss under ``torch.autocast(bfloat16)``
  (logits cast back to float32 before the loss; parameters, gradients and optimizer state stay
  float32).

Measurements are not part of the step: :func:`float32_math` gives them the run's float32 setting
(never autocast).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ncmse.errors import ConfigError

__all__ = [
    "PRECISIONS",
    "FastStep",
    "Step",
    "TrainStep",
    "autocast_for",
    "check_precision",
    "float32_math",
]

#: values of the ``precision`` config key
PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16")


def check_precision(precision: str) -> str:
    """Validate a ``precision`` value.

    Raises
    ------
    ConfigError
        If it is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ConfigError(
            f"precision={precision!r} is not valid; choose one of {list(PRECISIONS)} "
            "(fp32: strict float32, tf32: TF32 tensor cores, bf16: bfloat16 autocast)"
        )
    return precision


def _tf32_flags() -> tuple[bool, bool]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _set_tf32_flags(matmul: bool, cudnn: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


@contextlib.contextmanager
def float32_math(precision: str, device: torch.device) -> Iterator[None]:
    """Set the float32 convolution/matmul mode of ``precision`` on CUDA; restore it on exit.

    ``fp32`` turns TF32 off for both convolutions and matmuls (strict), ``tf32``/``bf16`` turn it
    on for both. A no-op on other devices.
    """
    check_precision(precision)
    if torch.device(device).type != "cuda":
        yield
        return
    saved = _tf32_flags()
    allow = precision != "fp32"
    if saved == (allow, allow):
        yield
        return
    _set_tf32_flags(allow, allow)
    try:
        yield
    finally:
        _set_tf32_flags(*saved)


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast(bfloat16)`` for ``bf16`` (cache off: safe in graph capture), else none."""
    if check_precision(precision) == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


@runtime_checkable
class Step(Protocol):
    """What the training loop calls once per batch (:class:`FastStep`, :class:`TrainStep`, or
    another engine with this interface)."""

    #: the module trained (the DDP wrapper under torchrun)
    model: nn.Module
    #: (index, size) of the pack the run trains in; (0, 1) alone
    pack: tuple[int, int]

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on one batch; returns (objective, number correct), detached, on the device."""
        ...

    def invalidate(self) -> None:
        """Forget any state captured from the model, optimizer or criterion (they were
        replaced: a checkpoint was loaded)."""
        ...

    def describe(self) -> dict[str, Any] | None:
        """What ran, for ``summary.json`` ``engine``; None to record nothing."""
        ...


class TrainStep:
    """The eager reference step: forward, ``criterion(out, y)`` (mean over the batch), backward,
    optimizer step, under whatever float32 flags PyTorch has (module docstring).

    Parameters
    ----------
    model : nn.Module
        The module to call (the DDP wrapper under torchrun).
    optimizer : torch.optim.Optimizer
    criterion : nn.Module
        ``criterion(logits[B, C], labels[B]) -> scalar``.
    """

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.criterion = criterion
        #: (index, size) of the pack this run trains in; (0, 1) alone
        self.pack: tuple[int, int] = (0, 1)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on one batch; returns (objective, number correct), detached, on the device."""
        out = self.model(x)
        objective = self.criterion(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizer.step()
        return objective.detach(), (out.detach().argmax(dim=1) == y).sum()

    def invalidate(self) -> None:
        """Nothing is captured: every call reads the current modules."""

    def describe(self) -> None:
        """Records nothing in ``summary.json``."""
        return None


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class FastStep:
    """One SGD step per call, eager or CUDA-graphed (module docstring).

    Parameters
    ----------
    model : nn.Module
        The network (possibly wrapped in DistributedDataParallel; then never graphed).
    optimizer : torch.optim.Optimizer
        Stepped once per call (its learning rate may change between calls).
    criterion : nn.Module
        ``criterion(logits, labels) -> scalar`` (mean over the batch).
    precision : {"fp32", "tf32", "bf16"}
        See the module docstring.
    channels_last : bool
        Keep the model and 4-D input batches in ``torch.channels_last``.
    cuda_graph : bool
        Capture batches of ``batch_size`` rows in a CUDA graph (ignored off CUDA and for DDP).
    batch_size : int, optional
        The static batch size; None: the size of the first batch.
    warmup_steps : int
        Eager steps before the first capture.

    Notes
    -----
    On the CPU (and on CUDA without graphs) every call is :class:`TrainStep`'s plain step, so
    the parameters after an epoch are bit-identical to it.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion: nn.Module,
        *,
        precision: str = "fp32",
        channels_last: bool = False,
        cuda_graph: bool = False,
        batch_size: int | None = None,
        warmup_steps: int = 3,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self._graph: Any = None
        self.criterion = criterion
        self.precision = check_precision(precision)
        params = list(_unwrap(model).parameters())
        self.device = params[0].device if params else torch.device("cpu")
        self.channels_last = bool(channels_last)
        if self.channels_last:
            _unwrap(model).to(memory_format=torch.channels_last)  # 4-D weights only
        ddp = isinstance(model, nn.parallel.DistributedDataParallel)
        self.graphed = bool(cuda_graph) and self.device.type == "cuda" and not ddp
        self.batch_size = batch_size
        self.warmup_steps = max(1, int(warmup_steps))
        self.captures = 0
        self.capture_error: str | None = None
        #: (index, size) of the pack this run trains in; (0, 1) alone
        self.pack: tuple[int, int] = (0, 1)
        self._graph_lrs: list[float] | None = None
        self._warm = 0
        self._side: Any = None
        self._static: tuple[torch.Tensor, torch.Tensor] | None = None
        self._outputs: tuple[torch.Tensor, torch.Tensor] | None = None

    # ---- public ------------------------------------------------------------------------------

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on one batch; returns (objective, number correct), detached, on the device."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with float32_math(self.precision, self.device):
            if self.batch_size is None:
                self.batch_size = len(y)
            if self.graphed and len(y) == self.batch_size:
                return self._graphed(x, y)
            return self._compute(x, y)

    def invalidate(self) -> None:
        """Forget the captured graph (after the optimizer, model or criterion was replaced)."""
        self._graph = None
        self._graph_lrs = None
        self._outputs = None

    @property
    def criterion(self) -> nn.Module:
        """The loss module; assigning another one re-captures the graph at the next step."""
        return self._criterion

    @criterion.setter
    def criterion(self, criterion: nn.Module) -> None:
        if criterion is not getattr(self, "_criterion", None):
            self._criterion = criterion
            self.invalidate()

    def describe(self) -> dict[str, Any]:
        """What ran, for ``summary.json``: precision, layout, graphs, cuDNN autotuning, pack."""
        return {
            "precision": self.precision,
            "channels_last": self.channels_last,
            "cuda_graph": self.graphed,
            "graph_captures": self.captures,
            "graph_capture_error": self.capture_error,
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)
            if self.device.type == "cuda"
            else None,
            "last_partial_batch": "eager (same math), not dropped",
            "pack_size": self.pack[1],
        }

    # ---- internals ---------------------------------------------------------------------------

    def _lrs(self) -> list[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def _compute(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The plain step of TrainStep (the logits cast to float32 for the loss)."""
        with autocast_for(self.precision, self.device):
            out = self.model(x)
            objective = self.criterion(out.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizer.step()
        return objective.detach(), (out.detach().argmax(dim=1) == y).sum()

    def _graphed(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._graph is not None and self._graph_lrs != self._lrs():
            self.invalidate()
        if self._static is None:
            self._static = (torch.empty_like(x), torch.empty_like(y))
        sx, sy = self._static
        if self._graph is None and self._warm < self.warmup_steps:
            self._warm += 1
            return self._side_step(x, y)
        if self._graph is None and not self._capture():
            return self._compute(x, y)  # capture failed: this run continues eagerly
        sx.copy_(x)
        sy.copy_(y)
        self._graph.replay()
        objective, correct = self._outputs
        return objective.clone(), correct.clone()

    def _side_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """An eager warm-up step on a side stream (as CUDA graph capture asks), joined back."""
        here = torch.cuda.current_stream(self.device)
        if self._side is None:
            self._side = torch.cuda.Stream(self.device)
        self._side.wait_stream(here)
        with torch.cuda.stream(self._side):
            sx, sy = self._static
            sx.copy_(x)
            sy.copy_(y)
            objective, correct = self._compute(sx, sy)
        here.wait_stream(self._side)
        # the allocator must not hand these blocks out before the other stream is done with them
        x.record_stream(self._side)
        y.record_stream(self._side)
        objective.record_stream(here)
        correct.record_stream(here)
        return objective, correct

    def _capture(self) -> bool:
        """Record ``_compute`` on the static buffers (recording does not execute it).

        Returns False (and turns graphs off for this step, with a warning) if the capture fails;
        nothing of the step has run then, so the caller runs it eagerly.
        """
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._outputs = self._compute(*self._static)
        except Exception as exc:  # noqa: BLE001 - any capture failure: fall back, loudly
            self.graphed = False
            self._outputs = None
            self.capture_error = f"{type(exc).__name__}: {exc}"[:500]
            warnings.warn(
                f"CUDA graph capture failed ({self.capture_error}); the run continues with "
                "eager steps (same math, slower). Set cuda_graph=false to silence this.",
                RuntimeWarning,
                stacklevel=4,
            )
            self.optimizer.zero_grad(set_to_none=True)
            return False
        self._graph = graph
        self._graph_lrs = self._lrs()
        self.captures += 1
        return True
