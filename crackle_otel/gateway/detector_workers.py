"""`crackle-otel analyze --jobs N`: the detectors of each cooled window in worker processes.

The analysing process decodes, extracts and records spans; when a group cools, its
window (``MetricMatrix``) goes to a worker, which runs the profile's detectors on it
and sends the patterns back. The furnace reports them in cool order, from its state
as of each cool (``Furnace(detection=...)``), so the findings are those of one
process. Only for ``analyze``'s own process: the workers are forked from it (a spawned
worker would spend ~2 s of CPU importing numpy and scipy), never from a host service
or the gateway.
"""

from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing
import os
import signal
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Hashable, Sequence

from ..detect import run_detectors
from ..matrix import MetricMatrix
from ..patterns import InvolvedTask, Pattern
from ..profile import ThermalProfile

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_WINDOWS_IN_FLIGHT_PER_WORKER = 4  # enough to keep a worker busy while the analysing process records


class DetectorWorkerFailed(RuntimeError):
    """A detector worker process died (killed, out of memory ...) or could not run a window: findings incomplete."""


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and `taskset` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def can_fork_workers() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def _worker_started(parent: int) -> None:
    # Ctrl-C reaches the whole process group: the analysing process stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:  # end with the analysing process, even when it is killed and cannot shut the pool down
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it ended before the line above took effect
        os._exit(0)


def _detect(window: MetricMatrix, profile: ThermalProfile,
            only: frozenset[str] | None) -> tuple[list[Pattern], dict[str, str]]:
    return run_detectors(window, profile, only=only)


def _with_identities(pattern: Pattern, identities: Sequence[Hashable | None]) -> Pattern:
    if not pattern.involved:
        return pattern
    return dataclasses.replace(pattern, involved=tuple(
        InvolvedTask(task.label, task.role, task.index, task.timestamp, identities[task.index])
        for task in pattern.involved))


class _WorkerResult:
    """One window's detection, to come; a lost one raises ``DetectorWorkerFailed``.

    The window went without its tasks' identities (a fifth of its pickle and three quarters of the
    time pickling it: a tuple of two big ints per row); the detectors only copy a row's identity into
    the ``InvolvedTask`` of that row, which gets it back here.
    """

    __slots__ = ("_future", "_identities")

    def __init__(self, future: Future, identities: Sequence[Hashable | None] = ()) -> None:
        self._future = future
        self._identities = identities

    def done(self) -> bool:
        return self._future.done()

    def take_back(self) -> bool:
        return self._future.cancel()  # only while it waits in this process for a worker's queue

    def result(self) -> tuple[list[Pattern], dict[str, str]]:
        patterns, errors = _outcome(self._future)
        return [_with_identities(p, self._identities) for p in patterns], errors


def _worker_ended(error: BrokenProcessPool) -> DetectorWorkerFailed:
    return DetectorWorkerFailed(f"a detector worker process ended abruptly ({error})")


def _outcome(future: Future) -> Any:
    try:
        return future.result()
    except BrokenProcessPool as error:
        raise _worker_ended(error) from error
    except Exception as error:  # e.g. MemoryError or a window that could not be sent
        raise DetectorWorkerFailed(f"a detector worker could not analyse a window: "
                                   f"{type(error).__name__}: {error}") from error


class DetectorWorkers:
    """``workers`` forked processes that run detectors (a ``furnace.Detection``); a context manager.

    The processes start at once (forked while this process is small, before it starts
    threads of its own) and end at ``close()``: all of them, also after a failure.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("at least one worker process")
        if not can_fork_workers():
            raise DetectorWorkerFailed("worker processes need os.fork(), which this platform lacks")
        self.workers = workers
        self.max_in_flight = _WINDOWS_IN_FLIGHT_PER_WORKER * workers
        self._executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                             initializer=_worker_started, initargs=(os.getpid(),))
        try:  # with fork, the first task starts every worker
            _outcome(self._executor.submit(os.getpid))
            # Kept to end them in close() whatever the pool's own manager thread managed (see there).
            self._processes = list(getattr(self._executor, "_processes", {}).values())
        except OSError as error:  # e.g. fork() refused: the process limit, no memory
            self.close()
            raise DetectorWorkerFailed(f"could not start detector worker processes: {error}") from error
        except BaseException:
            self.close()
            raise

    def submit(self, window: MetricMatrix, profile: ThermalProfile, only: frozenset[str] | None) -> _WorkerResult:
        try:
            anonymous = dataclasses.replace(window, identities=(None,) * window.n_tasks)
            return _WorkerResult(self._executor.submit(_detect, anonymous, profile, only), window.identities)
        except BrokenProcessPool as error:  # a worker died earlier: said at once
            raise _worker_ended(error) from error

    def close(self) -> None:
        """Stop and reap every worker (windows not started are dropped)."""
        if not getattr(self._executor, "_broken", False):
            self._executor.shutdown(wait=True, cancel_futures=True)
            return
        # A worker died. The pool's manager thread may itself die (cancelled futures it then fails
        # raise InvalidStateError) before it kills and reaps the other workers, and the queue's
        # feeder thread may block on a pipe no worker reads: end the workers here, and neither
        # wait for that thread nor let the interpreter's exit wait for it.
        for process in getattr(self, "_processes", ()):
            if process.is_alive():
                process.kill()
            process.join(5)
        call_queue = getattr(self._executor, "_call_queue", None)
        if call_queue is not None:
            call_queue.cancel_join_thread()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "DetectorWorkers":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
