"""Phase transitions on real traces: quiet on healthy minutes, there when latency faults strike.

Reads the Nezha development corpus (``/work/shared/data/nezha``, see its README:
real TrainTicket and OnlineBoutique spans with injected faults). Spans are
grouped by service (pod name minus its hash suffix) + operation name, with
``duration_ms`` as the metric, in start-time order, and cooled the way
``crackle-otel analyze`` cools a group's kiln (see ``replay``). What is measured
is the detectors' own output, before the incidents layer folds changes across
groups (``benchmarks/incidents.py`` measures that).

- healthy: the two fault-free baseline files; patterns reported per minute of
  traffic (phase transitions, and every kind for reference);
- faults: each latency fault (cpu_contention, cpu_consumed, network_delay) over its
  files (pre-injection context included); found when a phase transition on a
  group of the root-cause service, or on a client span calling it, changes
  within [inject - 15 s, inject + 120 s].

    python benchmarks/real_traffic.py [--data /work/shared/data/nezha] [--all-detectors]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np

from nezha import read_rows  # benchmarks/ is on sys.path when run as a script

from crackle_otel.detect import run_detectors
from crackle_otel.matrix import MetricMatrix
from crackle_otel.patterns import PatternKind
from crackle_otel.profile import ThermalProfile

LATENCY_FAULTS = {"cpu_contention", "cpu_consumed", "network_delay"}
ONSET_WINDOW_S = (-15.0, 120.0)
KILN_CAPACITY = 4096  # the default kiln of a group


def read_spans(data: Path, files: list[str]) -> list[tuple[float, str, float]]:
    """(start time s, group, duration ms) of every distinct span in ``files``, in start-time order."""
    return [(row.start_ns / 1e9, f"{row.service} | {row.operation}", (row.end_ns - row.start_ns) / 1e6)
            for row in read_rows([data / name for name in files])]


def replay(spans, profile: ThermalProfile):
    """Patterns the detectors find per group, cooled as ``analyze`` cools a kiln.

    Each group's spans go through a sliding window of KILN_CAPACITY spans, cooled
    every time half of it is new and once at the end; a pattern standing over
    several cools (same key) counts once, with the group set. The incidents
    layer that folds changes across groups is left out on purpose: this measures
    what the detectors themselves say.
    """
    by_group: dict[str, list[tuple[float, float]]] = {}
    for start, group, duration in spans:
        by_group.setdefault(group, []).append((start, duration))
    reported = []
    for group, rows in by_group.items():
        times = np.array([r[0] for r in rows])
        durations = np.array([r[1] for r in rows])
        seen: set[str] = set()
        ends = list(range(KILN_CAPACITY // 2, len(rows), KILN_CAPACITY // 2)) + [len(rows)]
        for end in ends:
            start = max(0, end - KILN_CAPACITY)
            n = end - start
            matrix = MetricMatrix(values=durations[start:end, None], metric_names=("duration_ms",),
                                  labels=(group,) * n, timestamps=times[start:end], identities=(None,) * n)
            patterns, _ = run_detectors(matrix, profile)
            for pattern in patterns:
                if pattern.key not in seen:
                    seen.add(pattern.key)
                    reported.append(dataclasses.replace(pattern, group=group))
    return reported


def healthy(data: Path, manifest: dict, profile: ThermalProfile) -> None:
    print("healthy baselines: patterns reported per minute of traffic")
    for system, info in manifest["systems"].items():
        spans = read_spans(data, [info["baseline"]])
        minutes = (spans[-1][0] - spans[0][0]) / 60.0
        patterns = replay(spans, profile)
        kinds = Counter(p.kind for p in patterns)
        phase_count = kinds.get(PatternKind.PHASE_TRANSITION, 0)
        groups = len({group for _, group, _ in spans})
        print(f"  {system}: {len(spans)} spans, {groups} groups, {minutes:.1f} min: "
              f"{phase_count / minutes:.2f} phase transitions/min ({phase_count}), "
              f"{len(patterns) / minutes:.2f} patterns of all kinds/min "
              f"({', '.join(f'{k.slug} {v}' for k, v in sorted(kinds.items(), key=lambda kv: kv[0].slug))})")
        for pattern in patterns:
            if pattern.kind is PatternKind.PHASE_TRANSITION:
                print(f"    - [{pattern.group}] {pattern.description[:220]}")


def _relevant(group: str, root_cause: str) -> bool:
    service, operation = group.split(" | ", 1)
    squashed = root_cause.replace("-", "").lower()
    return service == root_cause or squashed in operation.replace("-", "").lower()


def faults(data: Path, manifest: dict, profile: ThermalProfile, verbose: bool) -> None:
    print("latency faults: a phase transition on the root cause (or a call to it) near the injection")
    found = 0
    chosen = [f for f in manifest["faults"] if f["fault_type"] in LATENCY_FAULTS]
    for fault in chosen:
        spans = read_spans(data, [*fault.get("files_pre", []), *fault["files"]])
        patterns = [p for p in replay(spans, profile) if p.kind is PatternKind.PHASE_TRANSITION]
        inject = fault["inject_unix"]
        hits = [
            p for p in patterns
            if _relevant(p.group, fault["root_cause_service"])
            and ONSET_WINDOW_S[0] <= p.statistics.get("change_timestamp", -1e18) - inject <= ONSET_WINDOW_S[1]
        ]
        found += bool(hits)
        best = max(hits, key=lambda p: p.confidence) if hits else None
        summary = f"[{best.group}] {best.description[:160]}" if best else "-"
        print(f"  {fault['id']:<18} {fault['fault_type']:<15} {fault['root_cause_service']:<30} "
              f"{'FOUND' if hits else 'missed'}  ({len(patterns)} phase patterns in window) {summary}")
        if verbose:
            for pattern in patterns:
                offset = pattern.statistics.get("change_timestamp", np.nan) - inject
                print(f"      {offset:+7.1f}s [{pattern.group}] {pattern.description[:200]}")
    print(f"  found {found} of {len(chosen)} latency faults")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/nezha"))
    parser.add_argument("--all-detectors", action="store_true", help="run every detector, not only phase transitions")
    parser.add_argument("--only", choices=["healthy", "faults"])
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    manifest = json.loads((args.data / "manifest.json").read_text())
    profile = ThermalProfile.default()
    if not args.all_detectors:
        profile = profile.without_clustering().without_conservation().without_correlations()
    if args.only in (None, "healthy"):
        healthy(args.data, manifest, profile)
    if args.only in (None, "faults"):
        faults(args.data, manifest, profile, args.verbose)


if __name__ == "__main__":
    main()
