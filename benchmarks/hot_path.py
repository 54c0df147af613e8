"""Microseconds per span added by CrackleSpanProcessor, next to the SDK's BatchSpanProcessor.

Each run builds a fresh SDK TracerProvider with one of four processor set-ups,
ends N spans (6 attributes, 4 of them numeric) and then force-flushes every
processor, timing the flush separately: deferred work (the BSP worker's
exports, crackle's drain + extraction + cool) is therefore counted, not hidden
on a background thread. Set-ups:

- ``none``    : no processor (the baseline: span creation and end in the SDK);
- ``batch``   : BatchSpanProcessor with an exporter that returns SUCCESS;
- ``crackle`` : CrackleSpanProcessor (default profile and configuration) with a
                ConsoleEmitter writing to os.devnull;
- ``both``    : the two together.

Single thread (``--spans`` spans) and ``--threads`` threads (``--spans-per-thread``
each). Set-ups are interleaved within each round and each figure is the median
over ``--rounds`` rounds; "added" is measured against the no-processor run of
the same round. The issue's bar: crackle_added / batch_added <= 1.0 (end + flush),
and crackle's stats() must account for every span (recorded + dropped == ended).

    python benchmarks/hot_path.py [--rounds 5] [--spans 20000] [--threads 8] [--spans-per-thread 5000]

Exit status 1 when the ratio is above 1.0 or an accounting check fails.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from crackle_otel.otel.config import CrackleConfig
from crackle_otel.otel.emit import ConsoleEmitter
from crackle_otel.otel.processor import CrackleSpanProcessor

SETUPS = ("none", "batch", "crackle", "both")
HOSTS = tuple(f"shop-{i}" for i in range(8))


class CountingNoOpExporter(SpanExporter):
    """Exports nothing, successfully; counts spans so BSP drops can be derived (ended - exported)."""

    def __init__(self) -> None:
        self.exported = 0
        self._lock = threading.Lock()

    def export(self, spans) -> SpanExportResult:
        with self._lock:
            self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


@dataclass
class RunResult:
    spans: int
    end_seconds: float
    flush_seconds: dict[str, float] = field(default_factory=dict)  # processor name -> force_flush time
    crackle_stats: dict | None = None
    batch_dropped: int | None = None

    @property
    def total_seconds(self) -> float:
        return self.end_seconds + sum(self.flush_seconds.values())


def end_spans(tracer, count: int, offset: int) -> None:
    """The workload: ``count`` request-like spans, each created with 6 attributes and ended."""
    for i in range(offset, offset + count):
        span = tracer.start_span(
            "GET /checkout",
            attributes={
                "http.route": "/checkout",
                "host.name": HOSTS[i % 8],
                "records_in": 1000 + i % 17,
                "records_out": 990 + i % 13,
                "db.time_ms": 12.5 + (i % 29) * 0.1,
                "cart.items": i % 9,
            },
        )
        span.end()


def run_once(setup: str, threads: int, spans_per_thread: int, devnull) -> RunResult:
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}), sampler=ALWAYS_ON)
    exporter = batch = crackle = None
    if setup in ("batch", "both"):
        exporter = CountingNoOpExporter()
        batch = BatchSpanProcessor(exporter)
        provider.add_span_processor(batch)
    if setup in ("crackle", "both"):
        # CrackleConfig() directly: defaults only, no CRACKLE_* variables from the environment.
        crackle = CrackleSpanProcessor(ConsoleEmitter(devnull), config=CrackleConfig())
        provider.add_span_processor(crackle)
    tracer = provider.get_tracer("bench")
    total = threads * spans_per_thread
    gc.collect()

    if threads == 1:
        started = time.perf_counter()
        end_spans(tracer, spans_per_thread, 0)
        ended = time.perf_counter()
    else:
        barrier = threading.Barrier(threads + 1)

        def worker(index: int) -> None:
            barrier.wait()
            end_spans(tracer, spans_per_thread, index * spans_per_thread)

        pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
        for thread in pool:
            thread.start()
        barrier.wait()
        started = time.perf_counter()
        for thread in pool:
            thread.join()
        ended = time.perf_counter()

    result = RunResult(spans=total, end_seconds=ended - started)
    for name, processor in (("batch", batch), ("crackle", crackle)):
        if processor is not None:
            flush_started = time.perf_counter()
            processor.force_flush(30_000)
            result.flush_seconds[name] = time.perf_counter() - flush_started
    if crackle is not None:
        result.crackle_stats = crackle.stats()
    if exporter is not None:
        result.batch_dropped = total - exporter.exported
    provider.shutdown()
    return result


def accounting_ok(result: RunResult) -> bool:
    stats = result.crackle_stats
    if stats is None:
        return True
    return (
        stats["spans_ended"] == result.spans
        and stats["spans_pending"] == 0
        and stats["spans_recorded"] + stats["spans_dropped"] == stats["spans_ended"]
    )


def median(values) -> float:
    return statistics.median(list(values))


def report(title: str, rounds: list[dict[str, RunResult]]) -> tuple[float, bool]:
    """Print one table; return (median crackle/batch ratio on end+flush, accounting all ok)."""
    spans = rounds[0]["none"].spans
    baseline_total = [r["none"].total_seconds / spans * 1e6 for r in rounds]
    print(f"\n{title}: {spans} spans per run, median of {len(rounds)} interleaved rounds")
    header = (
        f"{'setup':<8} {'end us/span':>11} {'flush ms':>9} {'total us/span':>13} {'added us/span':>13}"
        f" {'added (end only)':>16}   accounting (recorded + dropped = ended)"
    )
    print(header)
    print("-" * len(header))
    added: dict[str, list[float]] = {}
    added_end: dict[str, list[float]] = {}
    all_ok = True
    for setup in SETUPS:
        runs = [r[setup] for r in rounds]
        total_us = [run.total_seconds / spans * 1e6 for run in runs]
        end_us = [run.end_seconds / spans * 1e6 for run in runs]
        added[setup] = [t - b for t, b in zip(total_us, baseline_total)]
        added_end[setup] = [e - r["none"].end_seconds / spans * 1e6 for e, r in zip(end_us, rounds)]
        flush_ms = median(sum(run.flush_seconds.values()) * 1e3 for run in runs)
        notes = []
        if runs[0].crackle_stats is not None:
            ok = all(accounting_ok(run) for run in runs)
            all_ok &= ok
            s = runs[-1].crackle_stats
            notes.append(
                f"crackle {s['spans_recorded']} + {s['spans_dropped']} = {s['spans_ended']}"
                f" {'ok' if ok else 'MISMATCH'} (cools {s['cools']}, cool {s['cool_seconds_total'] * 1e3:.0f} ms)"
            )
        if runs[0].batch_dropped is not None:
            notes.append(f"bsp dropped {median(run.batch_dropped for run in runs):.0f}")
        print(
            f"{setup:<8} {median(end_us):>11.2f} {flush_ms:>9.1f} {median(total_us):>13.2f}"
            f" {median(added[setup]):>+13.2f} {median(added_end[setup]):>+16.2f}   {'; '.join(notes)}"
        )
    ratios = [c / b if b > 0 else float("inf") for c, b in zip(added["crackle"], added["batch"])]
    ratios_end = [c / b if b > 0 else float("inf") for c, b in zip(added_end["crackle"], added_end["batch"])]
    ratio = median(ratios)
    print(
        f"crackle_added / batch_added = {ratio:.2f} (end + flush; per round: "
        f"{', '.join(f'{x:.2f}' for x in ratios)});  end only: {median(ratios_end):.2f}"
    )
    return ratio, all_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--spans", type=int, default=20_000, help="spans in the single-thread runs")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--spans-per-thread", type=int, default=5_000)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    results: dict[str, list[dict[str, RunResult]]] = {"single": [], "threaded": []}
    with open(os.devnull, "w") as devnull:
        for setup in SETUPS:  # warm-up: imports, code paths, allocator
            run_once(setup, 1, 2_000, devnull)
        for round_number in range(args.rounds):
            # Rotate the order each round so drift (thermal, other load) does not favour one set-up.
            order = SETUPS[round_number % 4 :] + SETUPS[: round_number % 4]
            single = {s: run_once(s, 1, args.spans, devnull) for s in order}
            threaded = {s: run_once(s, args.threads, args.spans_per_thread, devnull) for s in order}
            results["single"].append(single)
            results["threaded"].append(threaded)

    ratio_single, ok_single = report("single thread", results["single"])
    ratio_threaded, ok_threaded = report(f"{args.threads} threads", results["threaded"])
    passed = ratio_single <= 1.0 and ratio_threaded <= 1.0 and ok_single and ok_threaded
    print(
        f"\n{'PASS' if passed else 'FAIL'}: ratio single {ratio_single:.2f}, threaded {ratio_threaded:.2f} (bar <= 1.0);"
        f" accounting {'ok' if ok_single and ok_threaded else 'MISMATCH'}; took {time.perf_counter() - started:.0f} s"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
