"""A hard time limit for tests that start processes (DDP with ``ddp_spawn``): a hang fails the test instead of CI.

    >>> with hard_timeout(120, "2-process DDP fit"):            # doctest: +SKIP
    ...     trainer.fit(model, datamodule=dm)

After ``seconds`` SIGALRM interrupts the main thread (where pytest runs tests); the child processes this process
started (the DDP ranks, deadlocked in a collective, ignore SIGTERM) are killed with SIGKILL, and ``TimeoutError`` is
raised. Only this process's own children are touched.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import signal


@contextlib.contextmanager
def hard_timeout(seconds: int, what: str):
    def expire(signum, frame):
        for child in multiprocessing.active_children():
            child.kill()
        raise TimeoutError(f"{what} did not finish within {seconds} s (a hang: a collective that not every rank "
                           "joined?); its processes were killed")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
