"""Phase transitions on real traces: quiet on healthy minutes, there when latency faults strike.

Reads the Nezha development corpus (``/work/shared/data/nezha``, see its README:
real TrainTicket and OnlineBoutique spans with injected faults). Spans are
grouped by service (pod name minus its hash suffix) + operation name, with
``duration_ms`` as the metric, in start-time order, and replayed through a
``Furnace`` the way ``crackle-otel analyze`` does: a group is cooled each time it
has filled half its kiln, and every group once more at the end; a standing
pattern is reported once.

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
import csv
import gzip
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

from crackle_otel.otel.config import CrackleConfig
from crackle_otel.otel.furnace import Furnace
from crackle_otel.patterns import PatternKind
from crackle_otel.profile import ThermalProfile

POD = re.compile(r"^(.*)-[0-9a-f]{8,10}-[0-9a-z]{5}$")
LATENCY_FAULTS = {"cpu_contention", "cpu_consumed", "network_delay"}
ONSET_WINDOW_S = (-15.0, 120.0)
MAX_GROUPS = 1000


def read_spans(data: Path, files: list[str]) -> list[tuple[float, str, float]]:
    """(start time s, group, duration ms) of every distinct span in ``files``, in start-time order."""
    seen: set[tuple[str, str]] = set()
    spans = []
    for name in files:
        with gzip.open(data / name, "rt", newline="") as handle:
            for row in csv.DictReader(handle):
                key = (row["TraceID"], row["SpanID"])
                if key in seen:
                    continue
                seen.add(key)
                match = POD.match(row["PodName"])
                service = match.group(1) if match else row["PodName"]
                spans.append((int(row["StartTimeUnixNano"]) / 1e9, f"{service} | {row['OperationName']}",
                              int(row["Duration"]) / 1000.0))
    spans.sort()
    return spans


def replay(spans, profile: ThermalProfile):
    """Patterns reported by a furnace fed these spans (cooled as ``analyze`` cools)."""
    # Every group analysed (TrainTicket has ~240 service | operation groups; the default cap is for memory).
    furnace = Furnace(CrackleConfig(profile=profile, max_groups=MAX_GROUPS), keep_reported=100_000)
    for start, group, duration in spans:
        furnace.record(group, group.split(" | ", 1)[1], {"duration_ms": duration}, timestamp=start)
        if furnace.has_filled_groups:
            furnace.cool(only_filled=True)
    furnace.cool()
    return furnace.reported_patterns()


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
