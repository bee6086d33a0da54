"""The directory lock: exactly one holder under a race, freed when its holder is SIGKILLed."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from ncmse.errors import BusyError
from ncmse.rundir.lock import DirLock, hold, holder, is_locked

WORKERS = 4
TRIALS = 120


def _contender(root: str, barrier, wins, index: int) -> None:
    """Each trial: wait for all, try the lock of a fresh directory once, report, hold until all
    have tried, let go."""
    for trial in range(TRIALS):
        lock = DirLock(os.path.join(root, f"t{trial}"), "run directory")
        barrier.wait()
        try:
            lock.acquire()
        except BusyError:
            pass
        else:
            wins[trial * WORKERS + index] = 1
        barrier.wait()  # everybody has tried while the winner still holds it
        lock.release()


def test_processes_released_together_get_exactly_one_holder(tmp_path):
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(WORKERS)
    wins = ctx.Array("b", WORKERS * TRIALS, lock=False)
    procs = [
        ctx.Process(target=_contender, args=(str(tmp_path), barrier, wins, i))
        for i in range(WORKERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    per_trial = [sum(wins[t * WORKERS : (t + 1) * WORKERS]) for t in range(TRIALS)]
    assert per_trial == [1] * TRIALS


HOLDER = textwrap.dedent(
    """
    import sys, time
    from ncmse.rundir.lock import DirLock
    lock = DirLock(sys.argv[1], "run directory").acquire()
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_sigkilled_holder_frees_the_lock_and_is_named_while_alive(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert is_locked(tmp_path)
        with pytest.raises(BusyError) as err:
            DirLock(tmp_path, "run directory").acquire()
        msg = str(err.value)
        assert f"pid {proc.pid}" in msg and str(tmp_path) in msg and "kill it" in msg
        assert holder(tmp_path)["pid"] == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not is_locked(tmp_path)
    lock = DirLock(tmp_path).acquire()  # free at once: no stale pid to clean up
    assert holder(tmp_path)["pid"] == os.getpid()
    lock.release()


def test_wait_gives_up_and_nesting_in_one_process(tmp_path):
    first = DirLock(tmp_path).acquire()
    with pytest.raises(BusyError):
        DirLock(tmp_path).acquire(wait=0.2, poll=0.05)  # a second holder in this process
    first.release()
    with hold(tmp_path, "run directory") as outer, hold(tmp_path) as inner:
        assert outer is inner and outer.held
        assert not is_locked(tmp_path)  # held by this very process
    assert DirLock(tmp_path).acquire().held
