"""``ncmse sweep``: a grid of training runs, run here or submitted to SLURM, then collected.

The grid is presets × seeds × learning rates × weight decays (flags and/or a sweep YAML file),
with ``--set`` overrides applied to every run. Each run gets the directory
``SWEEP_DIR/runs/<preset>-s<seed>-lr<lr>-wd<wd>`` and is executed as its own
``python -m ncmse train`` process: finished runs are skipped, killed ones resume from their last
checkpoint, so rerunning the same command continues an interrupted sweep. ``--lr-grid paper``
runs the paper's 25 learning rates and selects, per (preset, weight decay), the one with the
lowest final test error (mean over seeds).

Examples
--------
::

    ncmse sweep --preset fashion-cnn-mse fashion-cnn-ce --seeds 0 1 2 --out sweeps/fashion
    ncmse sweep --preset paper-cifar10-resnet18-mse --lr-grid paper --out sweeps/lr \\
        --executor slurm --partition gpu --time 12:00:00 --gpus 1
    ncmse sweep -f configs/sweeps/fashion-cpu.yaml --dry-run
"""

from ncmse.sweep.core import EXECUTORS, SweepOptions, format_plan, plan, run_sweep
from ncmse.sweep.execute import SlurmOptions, TrainJob, train_argv
from ncmse.sweep.grid import (
    PAPER_LR_GRID,
    RunSpec,
    SweepSpec,
    expand,
    load_sweep_file,
    lr_grid,
    run_name,
)

__all__ = [
    "EXECUTORS",
    "PAPER_LR_GRID",
    "RunSpec",
    "SlurmOptions",
    "SweepOptions",
    "SweepSpec",
    "TrainJob",
    "expand",
    "format_plan",
    "load_sweep_file",
    "lr_grid",
    "plan",
    "run_name",
    "run_sweep",
    "train_argv",
]
