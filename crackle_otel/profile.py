"""Thermal profiles: how sensitive a cool is, and which detectors run.

``CoolingRate`` carries every threshold the detectors use, so a profile is
fully described by its rate plus the switches below. Fast cooling finds more
(and weaker) patterns; slow cooling only strong, well-supported ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum


@dataclass(frozen=True)
class _Thresholds:
    significance: float  # family-wise / false-discovery level for statistical tests
    min_abs_correlation: float  # |r| (Pearson or Spearman) worth reporting
    min_normalized_mi: float  # mutual information / min(H(x), H(y))
    min_effect_size: float  # standardised mean shift (|Δμ| / pooled σ)
    min_variance_ratio: float  # σ_after / σ_before (or inverse) for spread shifts
    min_jsd: float  # Jensen-Shannon divergence (bits) for shape shifts
    min_level_ratio: float  # factor a level must move by, for metrics that vary by factors (latency)
    outlier_score: float  # robust z (median / MAD) beyond which a task is an outlier
    min_cluster_size: int  # smallest group reported as a cluster
    conservation_tolerance: float  # residual RMS relative to the scale of the terms
    min_tasks: int  # fewest tasks a detector needs before it says anything
    min_attributed_tasks: int  # fewest tasks an attribute value needs before it is compared with the rest
    min_superiority: float  # P(value's task > rest's task) (or below 1 - this) for a metric difference
    min_median_ratio: float  # ratio of medians (either way) for a metric difference, where medians are > 0
    min_rate_ratio: float  # ratio of failure (or other) rates for a rate difference
    min_shift_ratio: float  # newest tasks' median / the usual median (or inverse) for a shift at the edge


class CoolingRate(Enum):
    """Sensitivity presets; each exposes its thresholds as attributes."""

    FAST = _Thresholds(
        significance=0.05,
        min_abs_correlation=0.3,
        min_normalized_mi=0.10,
        min_effect_size=0.5,
        min_variance_ratio=1.5,
        min_jsd=0.05,
        min_level_ratio=1.25,
        outlier_score=3.5,
        min_cluster_size=3,
        conservation_tolerance=0.02,
        min_tasks=3,
        min_attributed_tasks=5,
        min_superiority=0.57,
        min_median_ratio=1.1,
        min_rate_ratio=1.5,
        min_shift_ratio=1.3,
    )
    MEDIUM = _Thresholds(
        significance=0.01,
        min_abs_correlation=0.5,
        min_normalized_mi=0.15,
        min_effect_size=0.8,
        min_variance_ratio=2.0,
        min_jsd=0.10,
        min_level_ratio=1.3,
        outlier_score=5.0,
        min_cluster_size=5,
        conservation_tolerance=0.01,
        min_tasks=8,
        min_attributed_tasks=10,
        min_superiority=0.6,
        min_median_ratio=1.2,
        min_rate_ratio=2.0,
        min_shift_ratio=1.5,
    )
    SLOW = _Thresholds(
        significance=0.001,
        min_abs_correlation=0.7,
        min_normalized_mi=0.25,
        min_effect_size=1.2,
        min_variance_ratio=3.0,
        min_jsd=0.20,
        min_level_ratio=1.5,
        outlier_score=7.0,
        min_cluster_size=10,
        conservation_tolerance=0.005,
        min_tasks=20,
        min_attributed_tasks=20,
        min_superiority=0.65,
        min_median_ratio=1.5,
        min_rate_ratio=3.0,
        min_shift_ratio=2.0,
    )

    def __getattr__(self, name: str):
        # Expose thresholds directly: CoolingRate.FAST.outlier_score.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.value, name)

    def thresholds(self) -> dict[str, float]:
        """Every threshold of this rate, by name."""
        return dict(vars(self.value))


@dataclass(frozen=True)
class ThermalProfile:
    """Which detectors run during a cool, and how sensitive they are.

    Build one from a preset and narrow it down::

        ThermalProfile.default().with_rate(CoolingRate.FAST).without_clustering()
    """

    rate: CoolingRate = CoolingRate.MEDIUM
    clustering: bool = True
    phase_transitions: bool = True
    conservation: bool = True
    correlations: bool = True
    attribution: bool = True
    # "Constant by design" metrics are at most a low-confidence note (review finding 2).
    constant_notes: bool = False
    # Cap on the tasks a pattern names; 128 matches OTel's default span link limit.
    max_involved: int = 128

    @classmethod
    def fast_cooling(cls) -> "ThermalProfile":
        """Low thresholds: more, weaker patterns (exploration)."""
        return cls(rate=CoolingRate.FAST)

    @classmethod
    def default(cls) -> "ThermalProfile":
        """Balanced thresholds."""
        return cls()

    @classmethod
    def slow_cooling(cls) -> "ThermalProfile":
        """High thresholds: only strong, well-supported patterns (production)."""
        return cls(rate=CoolingRate.SLOW)

    @classmethod
    def no_detection(cls) -> "ThermalProfile":
        """Every detector off (benchmarking the recording path)."""
        return cls(clustering=False, phase_transitions=False, conservation=False, correlations=False,
                   attribution=False)

    def with_rate(self, rate: CoolingRate) -> "ThermalProfile":
        return replace(self, rate=rate)

    def without_clustering(self) -> "ThermalProfile":
        return replace(self, clustering=False)

    def without_phase_transitions(self) -> "ThermalProfile":
        return replace(self, phase_transitions=False)

    def without_conservation(self) -> "ThermalProfile":
        return replace(self, conservation=False)

    def without_correlations(self) -> "ThermalProfile":
        return replace(self, correlations=False)

    def without_attribution(self) -> "ThermalProfile":
        return replace(self, attribution=False)

    def with_constant_notes(self) -> "ThermalProfile":
        return replace(self, constant_notes=True)

    def with_max_involved(self, limit: int) -> "ThermalProfile":
        if limit < 1:
            raise ValueError("max_involved must be at least 1")
        return replace(self, max_involved=limit)

    @property
    def detects_anything(self) -> bool:
        return self.clustering or self.phase_transitions or self.conservation or self.correlations or self.attribution
