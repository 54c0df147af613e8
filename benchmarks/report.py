"""What `crackle-otel analyze --report` costs, in one process and with detector workers (``--jobs``).

Two inputs of about ``--spans`` spans (default 100,000), written as OTLP JSON lines (the collector
file exporter's default), each timed ``--rounds`` times, the ways below interleaved:

- ``demo``: the demo's workload, run again with new seeds one after the other in time (24 runs of
  4,200 spans: a cluster, shifts and a broken law in each);
- ``nezha``: a real-trace window from ``../shared/data/nezha`` (OnlineBoutique, the minutes around a
  CPU fault in recommendationservice, then the following files until the span count is reached; read
  through ``benchmarks/nezha.py``). Skipped with a note when the data is not there.

For each: ``report --jobs N`` = ``analyze_files`` with plot data kept (``evidence=True``) plus writing
the HTML (``render_report``), i.e. what ``--report`` runs, with the detectors in N-1 worker processes
(``--jobs`` lists the N, default ``1,<usable cores>``; 1, the code before workers, is the baseline,
measured in the same run); ``plain --jobs N`` = the same without a report, at the largest N (what
``--report`` adds); all in a process prepared as the command prepares its own
(``prepare_batch_process``). Times: wall seconds, what the user waits for; CPU seconds of this process
and of the worker processes (``RUSAGE_CHILDREN``: the workers end before ``analyze_files`` returns);
how long the HTML alone took; the report's size. The findings of every way must be the same (checked).
Ranges are min-max over the rounds.

    python benchmarks/report.py [--spans 100000] [--rounds 3] [--jobs 1,2] [--data ../shared/data/nezha]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from crackle_otel.cli import positive_int
from crackle_otel.demo import CHECKOUTS, SIMULATED_SPAN_GAP_S, run_workload, save_spans
from crackle_otel.gateway.analyze import AnalysisSummary, analyze_files, prepare_batch_process
from crackle_otel.gateway.detector_workers import usable_cores
from crackle_otel.otel.config import CrackleConfig
from crackle_otel.report.html import render_report

DEMO_START_NS = 1_790_000_000 * 10**9
NEZHA_FAULT = "ob-2022-08-23-23"  # cpu_contention in recommendationservice: latency 38x in its own spans


def demo_file(path: Path, spans: int) -> int:
    provider = TracerProvider(resource=Resource.create({"service.name": "crackle-demo-shop"}))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("crackle-demo")
    run_ns = int((CHECKOUTS + 2) * SIMULATED_SPAN_GAP_S * 1e9)
    written = seed = 0
    while written < spans:
        written += run_workload(tracer, seed=seed, start_ns=DEMO_START_NS + seed * run_ns)
        seed += 1
    provider.shutdown()
    return save_spans(exporter.get_finished_spans(), str(path))


def nezha_file(path: Path, data: Path, spans: int) -> tuple[int, str] | None:
    sys.path.insert(0, str(Path(__file__).parent))
    import nezha  # benchmarks/nezha.py: the corpus as SDK spans

    fault = next((f for f in nezha.faults(data) if f.id == NEZHA_FAULT), None)
    if fault is None:
        return None
    system_files = sorted((data / fault.files[0].relative_to(data).parent).glob("*.csv.gz"))
    ordered = list(dict.fromkeys([*fault.files_pre, *fault.files,
                                  *(f for f in system_files if f.name > fault.files[-1].name)]))
    chosen, rows = [], []
    for file in ordered:
        chosen.append(file)
        rows = nezha.read_rows(chosen)
        if len(rows) >= spans:
            break
    rows = rows[:spans]  # the first spans by start time
    count = save_spans(nezha.readable_spans(rows), str(path))
    return count, f"{fault.id} ({fault.fault_type} in {fault.service}), files {chosen[0].name}..{chosen[-1].name}"


def children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


class Timing:
    """Wall and CPU seconds (this process, its workers) of one way over the rounds, and what it found."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.workers_cpu: list[float] = []
        self.html: list[float] = []
        self.sizes: list[int] = []
        self.findings: list[list[str]] = []

    def run(self, path: Path, config: CrackleConfig, jobs: int, out: Path | None) -> None:
        """analyze_files (and the HTML when ``out``), timed."""
        gc.collect()
        started, cpu, workers = time.perf_counter(), time.process_time(), children_cpu()
        summary = analyze_files([str(path)], config, evidence=out is not None, jobs=jobs)
        rendered = time.perf_counter()
        if out is not None:
            self.sizes.append(render_report(summary, str(out), title=path.name))
        done = time.perf_counter()
        self.wall.append(done - started)
        self.cpu.append(time.process_time() - cpu)
        self.workers_cpu.append(children_cpu() - workers)
        self.html.append(done - rendered)
        self.findings.append(found(summary))

    def line(self) -> str:
        total = [own + workers for own, workers in zip(self.cpu, self.workers_cpu)]
        text = f"{span_range(self.wall)} wall, {span_range(total)} CPU"
        if max(self.workers_cpu) > 0:
            text += f" ({span_range(self.cpu)} this process, {span_range(self.workers_cpu)} workers)"
        return text


def found(summary: AnalysisSummary) -> list[str]:
    return [finding.pattern.to_json() for finding in summary.findings]


def span_range(values: list[float], unit: str = "s", scale: float = 1.0) -> str:
    low, high = min(values) * scale, max(values) * scale
    return f"{low:.2f}-{high:.2f} {unit}" if high - low >= 0.005 else f"{low:.2f} {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--jobs", default=f"1,{usable_cores()}", help="the --jobs values compared (1: the baseline)")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "nezha")
    args = parser.parse_args()
    prepare_batch_process()  # as `crackle-otel analyze` does in its process (allocator, garbage collector)
    config = CrackleConfig.load({}, exporter="none")
    with tempfile.TemporaryDirectory() as tmp:
        inputs: list[tuple[str, Path, int, str]] = []
        demo = Path(tmp) / "demo.jsonl"
        inputs.append(("demo", demo, demo_file(demo, args.spans), "the demo's workload, consecutive runs"))
        if (args.data / "manifest.json").exists():
            real = Path(tmp) / "nezha.jsonl"
            made = nezha_file(real, args.data.resolve(), args.spans)
            if made is not None:
                inputs.append(("nezha", real, made[0], made[1]))
        else:
            print(f"(no Nezha data at {args.data}: the real-trace input is skipped)")
        print(f"analyze --report, {args.rounds} rounds each, the ways interleaved; --jobs 1 is the baseline "
              f"(one process), plain = analyze without --report; {usable_cores()} usable cores, "
              f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start")
        jobs_list = sorted({int(j) for j in args.jobs.split(",")})
        for name, path, spans, what in inputs:
            ways = {f"report --jobs {jobs}": (jobs, Path(tmp) / f"{name}.html") for jobs in jobs_list}
            ways[f"plain --jobs {jobs_list[-1]}"] = (jobs_list[-1], None)
            timings = {way: Timing() for way in ways}
            for _ in range(args.rounds):
                for way, (jobs, out) in ways.items():
                    timings[way].run(path, config, jobs, out)
            reference = timings[f"report --jobs {jobs_list[0]}"].findings[0]
            for way, timing in timings.items():
                if any(f != reference for f in timing.findings):
                    raise SystemExit(f"{name}: {way} found other findings than report --jobs {jobs_list[0]}")
            print(f"\n{name}: {spans:,} spans, {os.path.getsize(path) / 2**20:.0f} MiB of OTLP JSON; {what}")
            print(f"  findings              {len(reference)} (the same every way and round)")
            for way, timing in timings.items():
                print(f"  {way:<21} {timing.line()}")
            baseline = timings[f"report --jobs {jobs_list[0]}"]
            for jobs in jobs_list[1:]:
                timing = timings[f"report --jobs {jobs}"]
                ratios = [w / b for w, b in zip(timing.wall, baseline.wall)]
                print(f"  --jobs {jobs} / --jobs {jobs_list[0]}      {min(ratios):.2f}-{max(ratios):.2f}x in wall time "
                      f"(round by round)")
            report = timings[f"report --jobs {jobs_list[-1]}"]
            print(f"  of which the HTML     {span_range(report.html, 'ms', 1000)}")
            print(f"  report size           {max(report.sizes) / 2**20:.2f} MiB "
                  f"({(max(report.sizes) - len_plotly()) / 2**10:.0f} KiB besides plotly.js)")
        print(f"\nload average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")


def len_plotly() -> int:
    from crackle_otel.report.html import plotly_js

    return len(plotly_js().encode("utf-8"))


if __name__ == "__main__":
    main()
