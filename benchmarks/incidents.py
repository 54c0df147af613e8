"""Real faults, replayed: is crackle quiet while healthy and right when something breaks?

    python benchmarks/incidents.py --data ../shared/data/nezha [--system TrainTicket] [--fault ID] [-v]

For each fault of the Nezha corpus (see benchmarks/nezha.py) a fresh
``CrackleSpanProcessor`` at default settings sees, in span end order and with
the original trace/span ids and timestamps: the system's fault-free minute
(shifted in time to just before the window), the files wholly before the
injection, then the fault's window. It cools every ``cool_interval_millis``
of *span* time (``cool_now`` at each interval boundary; the cooler thread
itself stays idle; ``cool_now`` does what its interval cool would), so a replay faster
than real time behaves like real time.

Printed per fault and per system:
- AS@1 / AS@3: the root-cause service is the top / among the top-3 origins of
  the first incident whose named origin began changing after the onset window opened (injection - 10 s
  for latency faults, - 70 s for code faults, whose onset can precede it), as
  that incident stood a minute after its first report (an incident is
  reported again when its likely origin changes: evidence from sparse
  services arrives later); the same at its first report is printed too;
- delay: injection -> first report naming the root-cause service (an incident
  ranking it in its top 3, or any pattern of one of its groups);
- reported patterns and incidents per fault-free minute, system-wide;
- runtime, spans/s of the replay, and the cooler's CPU share at real rates
  (CPU seconds spent draining and cooling / seconds of span time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nezha  # noqa: E402

from crackle_otel import Pattern  # noqa: E402
from crackle_otel.otel.processor import CrackleSpanProcessor  # noqa: E402

INCIDENT = "incident"
SETTLE_S = 60.0  # an incident's origin is scored as it stood this long after its first report
QUEUE = 2_000_000  # holds a whole cool interval of the replay: nothing is dropped for speed


class Recorder:
    """An emitter that keeps every reported pattern with the span time it was reported at."""

    def __init__(self) -> None:
        self.now = 0.0
        self.reported: list[tuple[float, Pattern]] = []

    def emit(self, patterns) -> None:
        self.reported.extend((self.now, p) for p in patterns)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {"patterns_emitted": len(self.reported)}


def service_of_group(group: str) -> str:
    return group.split(" | ", 1)[0].split(" -> ", 1)[-1] if " -> " in group else group.split(" | ", 1)[0]


def origins(pattern: Pattern) -> list[str]:
    """Ranked origin services of an incident ("svc (score), svc (score)" in its explanation's ``origins``)."""
    ranked = pattern.explanation.get("origins", "")
    return [item.strip().rsplit(" (", 1)[0] for item in ranked.split(", ") if item.strip()]


@dataclass
class Outcome:
    fault: nezha.Fault
    spans: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    span_seconds: float = 0.0
    healthy_minutes: float = 0.0
    healthy_patterns: list[Pattern] = field(default_factory=list)
    first_incident: Pattern | None = None  # its first report
    settled_incident: Pattern | None = None  # its last report within SETTLE_S of the first
    first_incident_delay: float | None = None
    first_rc_delay: float | None = None
    after_onset: list[tuple[float, Pattern]] = field(default_factory=list)

    @property
    def top(self) -> list[str]:
        """The first incident's origins, as it stood SETTLE_S after it was first reported."""
        return origins(self.settled_incident) if self.settled_incident else []

    @property
    def top_at_first_report(self) -> list[str]:
        return origins(self.first_incident) if self.first_incident else []


def replay(fault: nezha.Fault) -> Outcome:
    outcome = Outcome(fault)
    window = nezha.read_rows(fault.files_pre + fault.files)
    baseline = nezha.read_rows([fault.baseline])
    shift = window[0].start_ns - max(r.end_ns for r in baseline) - 1_000_000_000
    recorder = Recorder()
    processor = CrackleSpanProcessor(recorder, max_queue_size=QUEUE, drain_batch_size=QUEUE)
    interval_ns = processor.config.cool_interval_millis * 1_000_000
    healthy_end_s = (max(r.end_ns for r in baseline) + shift) / 1e9
    opens = fault.inject_s - (10 if fault.is_latency else 70)
    started = time.perf_counter()
    first_ns = None
    next_cool = None

    def cool(now_ns: int) -> None:
        recorder.now = now_ns / 1e9
        before = time.thread_time()
        processor.cool_now()
        outcome.cpu += time.thread_time() - before

    spans = list(nezha.readable_spans(baseline, shift_ns=shift)) + list(nezha.readable_spans(window))
    for span in spans:
        if first_ns is None:
            first_ns = span.end_time
            next_cool = first_ns + interval_ns
        while span.end_time >= next_cool:
            cool(next_cool)
            next_cool += interval_ns
        processor.on_end(span)
    cool(next_cool)
    # Scored: what the live cools reported. The replay's end is not a moment of the incident (the stream
    # would go on), so what the shutdown's final cool adds (every group's full look) is not counted.
    live_reports = len(recorder.reported)
    processor.shutdown()
    del recorder.reported[live_reports:]
    outcome.seconds = time.perf_counter() - started
    outcome.spans = len(spans)
    outcome.span_seconds = (next_cool - first_ns) / 1e9
    outcome.healthy_minutes = (healthy_end_s - first_ns / 1e9) / 60
    for at, pattern in recorder.reported:
        if at <= healthy_end_s + interval_ns / 1e9:
            if at <= healthy_end_s:
                outcome.healthy_patterns.append(pattern)
            continue
        if at < opens:
            continue
        outcome.after_onset.append((at, pattern))
        is_incident = pattern.kind.slug == INCIDENT
        if is_incident and pattern.statistics.get("origin_start_timestamp", at) < opens:
            continue  # its origin changed before the fault could act: not this fault's incident
        if is_incident and outcome.first_incident is None:
            outcome.first_incident = outcome.settled_incident = pattern
            outcome.first_incident_delay = at - fault.inject_s
        elif (is_incident and pattern.key == outcome.first_incident.key
              and at - fault.inject_s <= outcome.first_incident_delay + SETTLE_S):
            outcome.settled_incident = pattern
        names_rc = (fault.service in origins(pattern)[:3]) if is_incident else service_of_group(pattern.group) == fault.service
        if names_rc and outcome.first_rc_delay is None:
            outcome.first_rc_delay = at - fault.inject_s
    return outcome


def share(values: list[bool]) -> str:
    return f"{sum(values) / len(values):.2f} ({sum(values)}/{len(values)})" if values else "—"


def summarise(outcomes: list[Outcome], verbose: bool) -> None:
    by_system = defaultdict(list)
    for o in outcomes:
        by_system[o.fault.system].append(o)
    for system, items in by_system.items():
        print(f"\n== {system} ==")
        for kind_filter, label in ((lambda o: o.fault.is_latency, "latency faults"), (lambda o: True, "all faults")):
            chosen = [o for o in items if kind_filter(o)]
            print(f"  {label:15s} AS@1 {share([o.top[:1] == [o.fault.service] for o in chosen])}"
                  f"  AS@3 {share([o.fault.service in o.top[:3] for o in chosen])}"
                  f"  (at the first report: AS@1 {share([o.top_at_first_report[:1] == [o.fault.service] for o in chosen])})")
        delays = [o.first_rc_delay for o in items if o.fault.is_latency and o.first_rc_delay is not None]
        missed = sum(1 for o in items if o.fault.is_latency and o.first_rc_delay is None)
        if delays:
            print(f"  first report on the root cause, latency faults: median {statistics.median(delays):.0f} s,"
                  f" max {max(delays):.0f} s, none in {missed}")
        minutes = sum(o.healthy_minutes for o in items)
        healthy = [p for o in items for p in o.healthy_patterns]
        kinds = Counter(p.kind.slug for p in healthy)
        print(f"  healthy: {len(healthy) / minutes:.1f} reported patterns per minute"
              f" ({sum(1 for p in healthy if p.kind.slug == INCIDENT) / minutes:.2f} incidents) over {minutes:.1f} min;"
              f" by kind {dict(kinds)}")
        spans = sum(o.spans for o in items)
        seconds = sum(o.seconds for o in items)
        print(f"  replay: {spans:,} spans in {seconds:.1f} s ({spans / seconds:,.0f} spans/s);"
              f" cooler CPU share at real rates {sum(o.cpu for o in items) / sum(o.span_seconds for o in items):.1%}"
              f" (per fault {min(o.cpu / o.span_seconds for o in items):.1%}-{max(o.cpu / o.span_seconds for o in items):.1%})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=nezha.DEFAULT_DATA)
    parser.add_argument("--system", choices=("TrainTicket", "OnlineBoutique"))
    parser.add_argument("--fault", action="append", help="fault id (repeatable)")
    parser.add_argument("--latency-only", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the patterns of each fault")
    args = parser.parse_args(argv)
    chosen = [f for f in nezha.faults(args.data)
              if (args.system is None or f.system == args.system)
              and (not args.fault or f.id in args.fault)
              and (not args.latency_only or f.is_latency)]
    outcomes = []
    print(f"{'fault':18s} {'type':15s} {'root cause':30s} {'top origins':60s} {'incident':>8s} {'rc':>6s} healthy/min")
    for fault in chosen:
        o = replay(fault)
        outcomes.append(o)
        mark = "*" if o.top[:1] == [fault.service] else ("+" if fault.service in o.top[:3] else " ")
        delay = lambda d: "—" if d is None else f"{d:+.0f}s"  # noqa: E731
        print(f"{fault.id:18s} {fault.fault_type:15s} {fault.service:30s} {mark}{','.join(o.top[:3]):59s}"
              f" {delay(o.first_incident_delay):>8s} {delay(o.first_rc_delay):>6s}"
              f" {len(o.healthy_patterns) / o.healthy_minutes:5.1f}", flush=True)
        if args.verbose:
            for p in o.healthy_patterns:
                print(f"      healthy: {p.group}: {p.description[:200]}")
            for at, p in o.after_onset[:40]:
                print(f"      {at - fault.inject_s:+6.0f}s {p.kind.slug:22s} {p.group}: {p.description[:160]}")
    summarise(outcomes, args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
