"""`crackle-otel analyze --jobs N`: detectors in worker processes, the same findings as one process.

The input: three runs of the demo's workload one after the other (a slow cluster,
latency shifts, a broken conservation law and the incidents between services in
each), analysed in windows of 1,024 spans so that every group cools many times.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from crackle_otel import detect
from crackle_otel.cli import main
from crackle_otel.demo import CHECKOUTS, SIMULATED_SPAN_GAP_S, run_workload, save_spans
from crackle_otel.gateway.analyze import analyze_files
from crackle_otel.gateway.detector_workers import DetectorWorkerFailed, can_fork_workers
from crackle_otel.otel.config import CrackleConfig

pytestmark = pytest.mark.skipif(not can_fork_workers(), reason="detector workers are forked")

START_NS = 1_790_000_000 * 10**9
WINDOW = ["--kiln-capacity", "1024"]


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory) -> Path:
    provider = TracerProvider(resource=Resource.create({"service.name": "crackle-demo-shop"}))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    run_ns = int((CHECKOUTS + 2) * SIMULATED_SPAN_GAP_S * 1e9)
    for seed in range(3):
        run_workload(provider.get_tracer("crackle-demo"), seed=seed, start_ns=START_NS + seed * run_ns)
    path = tmp_path_factory.mktemp("demo") / "demo.jsonl"
    save_spans(exporter.get_finished_spans(), str(path))
    provider.shutdown()
    return path


def _children(parent: int | None = None) -> list[int]:
    """Processes whose parent is ``parent`` (this one by default), live or not yet reaped."""
    parent = os.getpid() if parent is None else parent
    mine = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            if int(fields[1]) == parent:
                mine.append(int(entry))
    return mine


@pytest.fixture
def earlier_children() -> set[int]:
    """This process's children before the test: those of other tests' session fixtures (the browser's driver)."""
    return set(_children())


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _run_cli(argv: list[str], timeout_s: float = 120.0) -> int:
    """``main(argv)`` with a time limit: a run that hangs fails the test instead of blocking it."""
    outcome: list[int | BaseException] = []

    def run() -> None:
        try:
            outcome.append(main(argv))
        except BaseException as error:  # noqa: BLE001 (handed to the test)
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"crackle-otel {' '.join(argv)} still running after {timeout_s} s"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def test_two_jobs_print_the_same_findings_as_one(demo_runs, capsys, earlier_children):
    printed = {}
    for jobs in ("1", "2", "3"):
        assert main(["analyze", "--json", *WINDOW, "--jobs", jobs, str(demo_runs)]) == 0
        out, err = capsys.readouterr()
        printed[jobs] = (out.splitlines(), err)
    lines, summary = printed["1"]
    kinds = {json.loads(line)["kind"] for line in lines}
    assert {"attribution", "phase_transition", "conservation_violation", "correlation"} <= kinds, kinds
    assert all(json.loads(line)["input"]["windows"] >= 1 for line in lines)
    assert printed["2"] == (lines, summary)
    assert printed["3"] == (lines, summary)
    assert not set(_children()) - earlier_children


def test_worker_processes_give_the_same_findings_and_plot_data_through_the_api(demo_runs, earlier_children):
    config = CrackleConfig.load({}, exporter="none", kiln_capacity=1024)
    one = analyze_files([str(demo_runs)], config, evidence=True, jobs=1)
    two = analyze_files([str(demo_runs)], config, evidence=True, jobs=2)
    assert len(one.findings) > 5
    assert [(f.pattern, f.evidence, f.spans, f.windows, f.count, f.places) for f in two.findings] == \
        [(f.pattern, f.evidence, f.spans, f.windows, f.count, f.places) for f in one.findings]
    same_counters = {k: v for k, v in one.stats.items() if not k.startswith("cool_seconds")}
    assert {k: two.stats[k] for k in same_counters} == same_counters
    assert not set(_children()) - earlier_children


def _dies_in_a_worker(parent: int):
    def detector(matrix, profile):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would
        return []

    return detector


def test_a_worker_that_dies_fails_the_run_with_a_clear_error_and_leaves_no_process(demo_runs, capsys, monkeypatch, earlier_children):
    # Forked workers run the detectors of the parent's memory: this one kills the worker that runs it.
    monkeypatch.setitem(detect.DETECTORS, "correlation", ("correlations", _dies_in_a_worker(os.getpid())))
    assert _run_cli(["analyze", "--json", *WINDOW, "--jobs", "2", str(demo_runs)]) == 1
    out, err = capsys.readouterr()
    assert out == ""  # incomplete findings are not printed as if they were all
    assert "crackle-otel analyze: a detector worker process ended abruptly" in err
    assert "--jobs 1" in err
    assert not set(_children()) - earlier_children and not multiprocessing.active_children()
    # The same detector in this process (--jobs 1) is no worker: it runs and the run succeeds.
    assert _run_cli(["analyze", "--json", *WINDOW, "--jobs", "1", str(demo_runs)]) == 0


def test_the_api_raises_when_a_worker_dies(demo_runs, monkeypatch, earlier_children):
    monkeypatch.setitem(detect.DETECTORS, "clustering", ("clustering", _dies_in_a_worker(os.getpid())))
    config = CrackleConfig.load({}, exporter="none", kiln_capacity=1024)
    with pytest.raises(DetectorWorkerFailed, match="ended abruptly"):
        analyze_files([str(demo_runs)], config, jobs=3)
    assert not set(_children()) - earlier_children


def test_jobs_must_be_a_positive_whole_number(demo_runs, capsys):
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit) as stopped:
            main(["analyze", "--jobs", bad, str(demo_runs)])
        assert stopped.value.code == 2
        assert "--jobs" in capsys.readouterr().err


def test_workers_end_with_an_analysis_that_is_killed(demo_runs):
    # SIGKILL leaves the analysing process no time to stop its workers: they must not outlive it.
    analysis = subprocess.Popen([sys.executable, "-m", "crackle_otel.cli", "analyze", *WINDOW, "--jobs", "3",
                                 str(demo_runs), str(demo_runs), str(demo_runs)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(workers := _children(analysis.pid)) < 2:
            assert analysis.poll() is None and time.monotonic() < deadline, "the workers never started"
            time.sleep(0.05)
    finally:
        analysis.kill()
        analysis.wait()
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if _running(pid)]


def test_workers_that_cannot_start_fail_the_run_with_a_clear_error(demo_runs, capsys, monkeypatch):
    def refused():
        raise BlockingIOError(11, "Resource temporarily unavailable")  # what fork() says at the process limit

    monkeypatch.setattr(os, "fork", refused)
    assert _run_cli(["analyze", "--jobs", "2", str(demo_runs)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "could not start detector worker processes" in err and "--jobs 1" in err
