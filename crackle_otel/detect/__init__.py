"""Detectors: pure functions ``detect(matrix, profile) -> list[Pattern]``.

Each module finds one family of patterns over a ``MetricMatrix``;
``run_detectors`` runs the ones the profile enables, isolating failures so one
broken detector cannot hide what the others found.
"""

from __future__ import annotations

import logging
from typing import Callable, Collection

import numpy as np
from threadpoolctl import ThreadpoolController

from ..errors import CoolInterrupted
from ..matrix import MetricMatrix
from ..patterns import Pattern
from ..profile import ThermalProfile
from . import attribution, clustering, conservation, correlation, phase, shift
from ._interrupt import checkpoint, interruptible
from .consolidate import consolidate

logger = logging.getLogger(__name__)

Detector = Callable[[MetricMatrix, ThermalProfile], list[Pattern]]

DETECTORS: dict[str, tuple[str, Detector]] = {
    # name: (profile switch, detector)
    "clustering": ("clustering", clustering.detect),
    "phase_transition": ("phase_transitions", phase.detect),
    "edge_shift": ("phase_transitions", shift.detect),  # a stream's newest tasks: where incidents begin
    "conservation": ("conservation", conservation.detect),
    "correlation": ("correlations", correlation.detect),
    "attribution": ("attribution", attribution.detect),
}
# Cheap enough to run at every cool of a stream; the others run on a slower cadence (otel/furnace.py).
EDGE_DETECTORS = frozenset({"edge_shift"})

_blas_threads: ThreadpoolController | None = None


def _one_blas_thread():
    """A context that holds BLAS to one thread. The controller is made once: making one
    reads /proc/self/maps to find the libraries (0.3-3 ms, more than a small group's whole
    edge look); by the first cool numpy's and scipy's BLAS are loaded (the detectors import them)."""
    global _blas_threads
    if _blas_threads is None:
        _blas_threads = ThreadpoolController()
    return _blas_threads.limit(limits=1, user_api="blas")


def run_detectors(
    matrix: MetricMatrix, profile: ThermalProfile, *, should_stop: Callable[[], bool] | None = None,
    only: Collection[str] | None = None,
) -> tuple[list[Pattern], dict[str, str]]:
    """Every enabled detector over ``matrix``: (patterns by confidence, errors by detector).

    ``should_stop``: checked between detectors and at safe points inside them
    (``_interrupt``); once it returns True the cool raises ``CoolInterrupted``.
    ``only``: names (keys of ``DETECTORS``) to run, if not all of them.
    """
    patterns: list[Pattern] = []
    errors: dict[str, str] = {}
    if matrix.n_tasks < profile.rate.min_tasks or matrix.n_metrics == 0:
        return patterns, errors
    # One BLAS thread: a cool runs beside someone else's service and must not take every core
    # (multi-threaded OpenBLAS made a cool 5-20x slower on a busy 2-core machine, not faster).
    # Extreme but valid values (1e308) overflow squares and sums: the detectors treat the
    # resulting inf/NaN as missing, so numpy's warnings would only be noise on the host's stderr.
    with _one_blas_thread(), np.errstate(all="ignore"), interruptible(should_stop):
        for name, (switch, detector) in DETECTORS.items():
            if not getattr(profile, switch) or (only is not None and name not in only):
                continue
            checkpoint()
            try:
                patterns.extend(detector(matrix, profile))
            except CoolInterrupted:
                raise
            except Exception as exc:  # a detector bug must not lose the other findings
                logger.exception("crackle detector %s failed", name)
                errors[name] = f"{type(exc).__name__}: {exc}"
    patterns = consolidate(patterns, matrix, profile)
    patterns.sort(key=lambda p: (-p.confidence, p.kind.value, p.key))
    return patterns, errors
