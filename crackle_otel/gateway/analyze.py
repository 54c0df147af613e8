"""`crackle-otel analyze FILE...`: find patterns in spans saved to files, offline.

Reads the collector file exporter's output (OTLP JSON lines, or length-prefixed
protobuf with ``format: proto``) and protobuf dumps, optionally gzipped (see
``otlp_files``), through the same feeder and furnace as ``serve``: spans are
grouped by service + span name into bounded kilns, a group is cooled each time
it has filled half its kiln, and every group once more at the end; memory does
not grow with the file.

It speaks about the whole input, not about a window: every detection of every
cool goes to a ``FindingLedger`` that keeps one finding per standing pattern,
places change points as span ordinals in the files (``SpanPositions``) and
counts clusters and outliers over the whole input. The findings are printed
(or written as JSON lines, exported, rendered with ``--report``) at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Sequence

from ..otel.config import CrackleConfig, CrackleConfigError
from ..otel.delivery import Delivery, written_stats
from ..otel.emit import ConsoleEmitter, span_context_of
from ..otel.extract import ExtractionRules
from ..otel.furnace import Emitter, Furnace
from ..patterns import Pattern
from ..report.findings import Finding, FindingLedger, SpanPositions
from .detector_workers import DetectorWorkerFailed, DetectorWorkers, can_fork_workers, usable_cores
from .feed import RequestFeeder
from .otlp_files import DEFAULT_MAX_RECORD_BYTES, FileFormatError, OTLPFile, ProblemLog

_PROGRESS_MIN_BYTES = 16 * 1024 * 1024  # "auto" shows progress for files at least this large
_PROGRESS_INTERVAL_S = 0.25
# glibc mallopt parameters (malloc.h) and the values analyze sets in its own process (see keep_freed_memory).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEPT_MMAP_THRESHOLD = 4 * 2**20
_KEPT_TRIM_THRESHOLD = 32 * 2**20
_BATCH_GC_THRESHOLD = 50_000  # container allocations (net) between two young-generation collections


def prepare_batch_process() -> None:
    """Settings for a process that does nothing but ``analyze`` (the CLI's): allocator and garbage collector.

    Freed memory is kept for reuse (``keep_freed_memory``). The cyclic garbage
    collector looks at young objects every 50,000 net container allocations instead
    of 700: a kiln's ring of tasks keeps its newest Python objects alive, so the
    default made a full collection over every live object every few thousand spans
    (1.4 s per 100k spans, to find some 600 objects in cycles: spans and their JSON
    documents are freed by reference counting). Not for a host service's process.
    """
    keep_freed_memory()
    gc.set_threshold(_BATCH_GC_THRESHOLD, *gc.get_threshold()[1:])


def keep_freed_memory() -> bool:
    """Let this process's allocator keep freed memory for reuse (glibc); True if it was set.

    The detectors make numpy temporaries of 0.1-1 MiB by the thousand (a change-point
    search's cost grid, a window's columns). glibc gives such blocks to the kernel when
    they are freed (each one mmapped, or the heap's top trimmed past 128 KiB) and takes
    them back, page-faulting and zeroing every page, at the next allocation: a fifth of
    ``analyze``'s CPU time on 100k spans. Here blocks below 4 MiB come from the heap and
    up to 32 MiB of free heap is kept. For ``crackle-otel analyze``'s own process only: a
    library must not retune the allocator of the service it runs in.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
        return (mallopt(_M_MMAP_THRESHOLD, _KEPT_MMAP_THRESHOLD) == 1
                and mallopt(_M_TRIM_THRESHOLD, _KEPT_TRIM_THRESHOLD) == 1)
    except (OSError, AttributeError, TypeError):  # not glibc (musl has no such knobs): keep its defaults
        return False


class JsonLinesEmitter:
    """One JSON object per pattern (``Pattern.to_dict``, group included) per line.

    Each involved task also gets ``trace_id`` / ``span_id`` in hex, the form
    trace backends search by.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream
        self._written = 0
        self._dropped = 0
        self._closed = False

    @property
    def stream(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stdout

    @staticmethod
    def document(pattern: Pattern) -> dict[str, Any]:
        document = pattern.to_dict()
        for task, entry in zip(pattern.involved, document["involved"]):
            context = span_context_of(task.identity)
            if context is not None:
                entry["trace_id"] = f"{context.trace_id:032x}"
                entry["span_id"] = f"{context.span_id:016x}"
        return document

    def emit(self, patterns: Sequence[Pattern]) -> None:
        for pattern in patterns:
            self.write(self.document(pattern))

    def write(self, document: dict[str, Any]) -> None:
        """One JSON line (a pattern's document, perhaps with more fields)."""
        if self._closed:
            self._dropped += 1
            return
        try:
            self.stream.write(json.dumps(document, sort_keys=True) + "\n")
            self._written += 1
        except OSError:  # e.g. `crackle-otel analyze --json f | head`: the reader went away
            self._closed = True
            self._dropped += 1

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        try:
            self.stream.flush()
            return True
        except OSError:
            self._closed = True
            return False

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        self.force_flush(timeout_millis)

    def stats(self) -> dict[str, int]:
        return written_stats(self._written, self._dropped)


class ProgressLine:
    """A one-line progress report on stderr, rewritten in place (no dependency on tqdm)."""

    def __init__(self, stream: IO[str] | None = None, *, enabled: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self._last = 0.0
        self._started = time.monotonic()
        self._shown = False

    def update(self, name: str, done: int, total: int, spans: int, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < _PROGRESS_INTERVAL_S:
            return
        self._last = now
        rate = spans / max(now - self._started, 1e-9)
        percent = 100.0 * done / total if total else 100.0
        self.stream.write(
            f"\r{name}: {percent:5.1f}%  {done / 2**20:,.1f}/{total / 2**20:,.1f} MiB  "
            f"{spans:,} spans  {rate:,.0f} spans/s  "
        )
        self.stream.flush()
        self._shown = True

    def finish(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


@dataclass
class AnalysisSummary:
    files: int = 0
    unreadable: list[str] = field(default_factory=list)
    incomplete: int = 0  # files not read to their end (truncated stream, missing decompressor)
    requests: int = 0
    spans: int = 0
    skipped_records: int = 0
    problems: ProblemLog = field(default_factory=ProblemLog)
    stats: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)  # one per standing pattern, most confident first
    findings_kept: int = 0  # also those an incident explains (listed in it), as held in memory
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    seconds: float = 0.0


class _PlacedFurnace(Furnace):
    """A furnace that notes which span of the input each task it keeps was made from."""

    def __init__(self, config: CrackleConfig, positions: SpanPositions, ledger: FindingLedger,
                 detection: DetectorWorkers | None = None) -> None:
        super().__init__(config, None, keep_reported=0, observer=ledger, detection=detection)
        self.positions = positions
        self.ordinal: Callable[[], int] = lambda: 0
        self.first_timestamp = float("inf")
        self.last_timestamp = float("-inf")

    def _kept(self, group: str, tasks: list[Any], ordinals: list[Any]) -> None:
        # Ordinals come with the feeder's span batches; a metric collection's task is placed at the span count.
        self.positions.note_many(group, ordinals if ordinals[0] is not None else [self.ordinal()] * len(ordinals))
        first, last = self.first_timestamp, self.last_timestamp
        for task in tasks:  # comparisons, not min()/max() over a generator: this runs per task
            timestamp = task[2]
            if timestamp < first:
                first = timestamp
            if timestamp > last:
                last = timestamp
        self.first_timestamp, self.last_timestamp = first, last


def analyze_files(
    paths: Sequence[str],
    config: CrackleConfig,
    emitter: Emitter | None = None,
    *,
    progress: ProgressLine | None = None,
    max_problems_kept: int = 10,
    evidence: bool = False,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    jobs: int = 1,
) -> AnalysisSummary:
    """Stream every file through a feeder and furnace; at the end, one pattern per standing finding goes to
    ``emitter`` (most confident first) and the findings are in the summary (with plot data if ``evidence``).

    ``jobs``: processes that analyse: this one, which reads and records, and ``jobs - 1`` forked
    workers that run the detectors of each cooled window (``detector_workers``), started here and
    ended before this returns; the findings are the same as with 1. Where the platform cannot fork,
    1. Raises ``DetectorWorkerFailed`` when a worker died: its findings would be incomplete. For
    ``crackle-otel analyze``'s own process (or a script's), never a host service's.
    """
    if jobs > 1 and can_fork_workers():
        with DetectorWorkers(jobs - 1) as workers:
            return _analyze(paths, config, emitter, progress, max_problems_kept, evidence, max_record_bytes, workers)
    return _analyze(paths, config, emitter, progress, max_problems_kept, evidence, max_record_bytes, None)


def _analyze(paths: Sequence[str], config: CrackleConfig, emitter: Emitter | None, progress: ProgressLine | None,
             max_problems_kept: int, evidence: bool, max_record_bytes: int,
             workers: DetectorWorkers | None) -> AnalysisSummary:
    started = time.perf_counter()
    positions = SpanPositions(config.kiln_capacity)
    ledger = FindingLedger(positions=positions, keep="widest", max_involved=config.profile.max_involved, evidence=evidence)
    furnace = _PlacedFurnace(config, positions, ledger, workers)
    feeder = RequestFeeder(
        furnace,
        ExtractionRules(allow=config.attributes_allow, deny=config.attributes_deny, group_by=config.group_by),
        max_metric_streams=config.max_groups * config.max_metrics_per_group,
    )
    furnace.ordinal = lambda: feeder.spans_seen
    summary = AnalysisSummary(problems=ProblemLog(keep=max_problems_kept))
    for path in paths:
        try:
            source = OTLPFile(path, summary.problems, max_record_bytes=max_record_bytes)
        except OSError as error:
            summary.unreadable.append(f"{path}: {error.strerror or error}")
            continue
        summary.files += 1
        name = os.path.basename(path)
        positions.start_file(name, feeder.spans_seen + 1)
        try:
            for record in source.records(feeder.rules):  # JSON trace lines come extracted: no protobuf on the way
                feeder.feed(record)
                # Cool a group once half its kiln is new, before the ring buffer overwrites it.
                if furnace.has_filled_groups:
                    furnace.cool(only_filled=True)
                if progress is not None:
                    progress.update(name, *source.progress(), feeder.spans_seen)
        except (FileFormatError, OSError, EOFError) as error:  # e.g. a truncated gzip stream
            summary.problems.add(path, f"{error}; stopped reading this file")
            summary.incomplete += 1
        if progress is not None:
            progress.update(name, *source.progress(), feeder.spans_seen, force=True)
            progress.finish()
        summary.requests += source.counters.requests
        summary.skipped_records += source.counters.skipped_records
        if source.size and not source.counters.requests and not source.counters.skipped_records:
            summary.unreadable.append(f"{path}: no OTLP record found in it")
    furnace.cool(final=True)
    summary.spans = feeder.spans_seen
    summary.findings = ledger.findings()
    summary.findings_kept = len(ledger)
    if furnace.first_timestamp <= furnace.last_timestamp:
        summary.first_timestamp, summary.last_timestamp = furnace.first_timestamp, furnace.last_timestamp
    stats = furnace.stats()
    stats["patterns_reported"] = len(summary.findings)  # one per standing finding, not per window
    summary.stats = {**feeder.stats(), **stats}
    if emitter is not None and summary.findings:
        emitter.emit([finding.pattern for finding in summary.findings])
    summary.seconds = time.perf_counter() - started
    return summary


def _report(summary: AnalysisSummary, stream: IO[str]) -> None:
    stats = summary.stats
    stream.write(
        f"crackle-otel analyze: {summary.spans:,} spans in {summary.requests:,} requests from {summary.files} "
        f"file(s): {stats.get('tasks_recorded', 0):,} tasks analysed in {stats.get('groups', 0)} groups, "
        f"{stats.get('patterns_reported', 0)} patterns\n"
    )
    skipped = stats.get("tasks_overflowed", 0)
    if skipped:
        stream.write(f"  {skipped:,} spans not analysed: more than max_groups={stats.get('max_groups', '?')} groups "
                     "(raise --max-groups)\n")
    if summary.skipped_records:
        stream.write(f"  {summary.skipped_records:,} records skipped (logs: not analysed)\n")
    if summary.problems.count:
        stream.write(f"  {summary.problems.count:,} malformed records skipped; the first ones:\n")
        for line in summary.problems.first:
            stream.write(f"    {line}\n")
    for line in summary.unreadable:
        stream.write(f"  cannot read {line}\n")


def _input_document(finding: Finding) -> dict[str, Any]:
    """Where in the input a finding stands, for --json."""
    return {
        "windows": finding.windows,
        "window_tasks": finding.window_tasks,
        "group_tasks": finding.group_tasks,
        "count": finding.count,
        "count_exact": finding.count_exact,
        "first_seen": finding.first_seen,
        "last_seen": finding.last_seen,
        "places": finding.places,
        "scope": finding.scope,
    }


def _print_findings(findings: Sequence[Finding], as_json: bool) -> None:
    if as_json:
        printer = JsonLinesEmitter()
        for finding in findings:
            printer.write({**printer.document(finding.pattern), "input": _input_document(finding)})
        printer.force_flush()
        return
    ConsoleEmitter(max_tasks_shown=3).emit([finding.pattern for finding in findings])


def run_analyze(args: argparse.Namespace) -> int:
    from .service import analysis_overrides, with_scheme

    try:
        # CRACKLE_EXPORTER is validated like every variable, though analyze prints (and exports with a flag).
        config = CrackleConfig.load(**analysis_overrides(args))
    except CrackleConfigError as error:
        print(f"crackle-otel analyze: {error}", file=sys.stderr)
        return 2
    render = None
    if args.report:
        from ..report.html import ReportUnavailable, plotly_js, render_report

        try:
            plotly_js()  # before reading anything: a missing extra is a usage error, found at once
        except ReportUnavailable as error:
            print(f"crackle-otel analyze: {error}", file=sys.stderr)
            return 2
        render = render_report
    exporter: Emitter | None = None
    if args.export_endpoint:
        from opentelemetry.sdk.resources import Resource

        from ..otel.emit import PatternEmitter

        exporter = PatternEmitter.otlp(
            endpoint=with_scheme(args.export_endpoint),
            protocol=args.export_protocol,
            resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "crackle-otel-analyze"}),
            max_links=config.max_links,
            export_timeout_millis=config.export_timeout_millis,
        )
    show_progress = args.progress
    if show_progress is None:  # auto: on a terminal, for large inputs
        total = sum(os.path.getsize(p) for p in args.files if os.path.isfile(p))
        show_progress = sys.stderr.isatty() and total >= _PROGRESS_MIN_BYTES
    prepare_batch_process()
    progress = ProgressLine(enabled=show_progress)
    try:
        summary = analyze_files(args.files, config, exporter, progress=progress,
                                max_record_bytes=args.max_record_bytes or DEFAULT_MAX_RECORD_BYTES,
                                evidence=render is not None, jobs=args.jobs or usable_cores())
    except DetectorWorkerFailed as error:
        progress.finish()
        print(f"crackle-otel analyze: {error}; no findings reported (--jobs 1 runs the detectors in this process)",
              file=sys.stderr)
        if exporter is not None:
            exporter.shutdown(timeout_millis=config.export_timeout_millis)
        return 1
    _print_findings(summary.findings, args.json)
    summary.stats["max_groups"] = config.max_groups
    _report(summary, sys.stderr)
    failed = False
    if exporter is not None:
        exporter.shutdown(timeout_millis=config.export_timeout_millis)
        delivery = Delivery.of(exporter.stats())
        print(f"crackle-otel analyze: to {args.export_endpoint}: {delivery.describe()}", file=sys.stderr)
        if delivery.nothing_delivered:
            print(f"crackle-otel analyze: nothing reached {args.export_endpoint}", file=sys.stderr)
            failed = True
    if render is not None:
        try:
            size = render(summary, args.report, title=", ".join(os.path.basename(p) for p in args.files))
            print(f"crackle-otel analyze: report written to {args.report} ({size / 2**20:.1f} MiB)", file=sys.stderr)
        except OSError as error:
            print(f"crackle-otel analyze: cannot write the report {args.report}: {error}", file=sys.stderr)
            failed = True
    if summary.spans == 0:
        print("crackle-otel analyze: no span could be read from the input", file=sys.stderr)
        return 1
    # Exit 1 when some input was not analysed (a file that could not be opened or read to its end),
    # or when none of the patterns reached --export-endpoint.
    return 1 if failed or summary.unreadable or summary.incomplete else 0
