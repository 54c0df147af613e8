"""One finding, one pattern: the last step of a cool, after every detector ran.

Detectors are independent, so the same spans can be described twice (a cluster
and an outlier set over the same slow tasks; a conservation law and the
correlations its terms imply; an attribution and the cluster it explains).
``consolidate`` folds such descriptions into one pattern before they are
reported. It sees every detector's output of one cool of one group.
"""

from __future__ import annotations

from ..matrix import MetricMatrix
from ..patterns import Pattern
from ..profile import ThermalProfile


def consolidate(patterns: list[Pattern], matrix: MetricMatrix, profile: ThermalProfile) -> list[Pattern]:
    """The patterns of one cool with duplicate descriptions of the same finding folded together."""
    return patterns
