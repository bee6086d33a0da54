"""Run ``python -m MODULE ARGS...`` and kill it after a run's epoch N, as a crash would.

Usage::

    python tests/kill_after.py N MODULE [ARGS...]    # e.g. N=3 ncmse train --out RUN ...

The process ends with ``os._exit(3)`` (no cleanup, no final summary, the run directory's lock
left behind as by a kill) right after epoch ``N`` of a run ended — its rows, summary and (when
due) checkpoint written — before any run trains its next epoch (a run resumed at epoch ``N``
ends before it trains). In a pack (``MODULE = ncmse.cli.pack``) every run of the round has ended
its epoch by then. It wraps
:func:`ncmse.train.loop.lockstep_epoch`, the loop every run's epochs go through; the library
itself has no kill switch.
"""

from __future__ import annotations

import os
import runpy
import sys

#: the exit status of the simulated kill
KILLED = 3


def main(argv: list[str]) -> None:
    """Arm the kill after epoch ``argv[0]`` and run module ``argv[1]`` with ``argv[2:]``."""
    import ncmse.train.loop as loop

    after, module, *args = argv
    epoch = int(after)
    train_epochs = loop.lockstep_epoch

    def lockstep_epoch(trainers, *rest, **kw):  # type: ignore[no-untyped-def]
        if any(t.state.epoch == epoch for t in trainers):
            os._exit(KILLED)
        return train_epochs(trainers, *rest, **kw)

    loop.lockstep_epoch = lockstep_epoch
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
