"""What `crackle-otel analyze --report` costs: the analysis, the plot data, the HTML file.

Two inputs of about ``--spans`` spans (default 100,000), written as OTLP JSON lines (the collector
file exporter's default), each timed ``--rounds`` times, the two ways interleaved:

- ``demo``: the demo's workload, run again with new seeds one after the other in time (24 runs of
  4,200 spans: a cluster, shifts and a broken law in each);
- ``nezha``: a real-trace window from ``../shared/data/nezha`` (OnlineBoutique, the minutes around a
  CPU fault in recommendationservice, then the following files until the span count is reached; read
  through ``benchmarks/nezha.py``). Skipped with a note when the data is not there.

For each: ``plain`` = ``analyze_files`` as `crackle-otel analyze` runs without a report, in a process
prepared as the command prepares its own (``prepare_batch_process``) (the
baseline, measured in the same run); ``report`` = the same with plot data kept (``evidence=True``)
plus writing the HTML (``render_report``), i.e. what ``--report`` runs; the ratio report/plain (in
CPU seconds of this process, which a machine shared with other work disturbs less than wall time);
how long the HTML alone took; the report's size. Ranges are min-max over the rounds.

    python benchmarks/report.py [--spans 100000] [--rounds 3] [--data ../shared/data/nezha]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from crackle_otel.demo import CHECKOUTS, SIMULATED_SPAN_GAP_S, run_workload, save_spans
from crackle_otel.gateway.analyze import analyze_files, prepare_batch_process
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


def timed_plain(path: Path, config: CrackleConfig) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, findings) of analyze without a report."""
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    summary = analyze_files([str(path)], config)
    return time.perf_counter() - started, time.process_time() - cpu, len(summary.findings)


def timed_report(path: Path, config: CrackleConfig, out: Path) -> tuple[float, float, float, int]:
    """(wall seconds, CPU seconds, seconds writing the HTML, bytes) of analyze --report."""
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    summary = analyze_files([str(path)], config, evidence=True)
    rendered = time.perf_counter()
    size = render_report(summary, str(out), title=path.name)
    done = time.perf_counter()
    return done - started, time.process_time() - cpu, done - rendered, size


def span_range(values: list[float], unit: str = "s", scale: float = 1.0) -> str:
    low, high = min(values) * scale, max(values) * scale
    return f"{low:.2f}-{high:.2f} {unit}" if high - low >= 0.005 else f"{low:.2f} {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
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
        print(f"analyze --report, {args.rounds} rounds each, plain and report interleaved "
              f"(plain = analyze without --report, the baseline)")
        for name, path, spans, what in inputs:
            plain, plain_cpu, report, report_cpu, html, sizes, findings = [], [], [], [], [], [], 0
            for _ in range(args.rounds):
                seconds, cpu, findings = timed_plain(path, config)
                plain.append(seconds)
                plain_cpu.append(cpu)
                total, cpu, render, size = timed_report(path, config, Path(tmp) / f"{name}.html")
                report.append(total)
                report_cpu.append(cpu)
                html.append(render)
                sizes.append(size)
            ratios = [r / p for r, p in zip(report_cpu, plain_cpu)]
            print(f"\n{name}: {spans:,} spans, {os.path.getsize(path) / 2**20:.0f} MiB of OTLP JSON; {what}")
            print(f"  findings            {findings}")
            print(f"  plain analyze       {span_range(plain)} wall, {span_range(plain_cpu)} CPU")
            print(f"  analyze --report    {span_range(report)} wall, {span_range(report_cpu)} CPU "
                  f"({min(ratios):.2f}-{max(ratios):.2f}x plain in CPU)")
            print(f"  of which the HTML   {span_range(html, 'ms', 1000)}")
            print(f"  report size         {max(sizes) / 2**20:.2f} MiB "
                  f"({(max(sizes) - len_plotly()) / 2**10:.0f} KiB besides plotly.js)")


def len_plotly() -> int:
    from crackle_otel.report.html import plotly_js

    return len(plotly_js().encode("utf-8"))


if __name__ == "__main__":
    main()
