"""`crackle-otel analyze`: span files as the collector's file exporter writes them, analysed offline.

The files are written with the proto classes: OTLP JSON lines (format: json),
length-prefixed protobuf (format: proto), one bare ExportTraceServiceRequest,
and gzip. The workload: a latency shift in ``etl | GET /cart`` and records lost
between records_in and records_out in ``etl | process batch``.
"""

from __future__ import annotations

import gc
import gzip
import json
import platform
import re
import socket
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from crackle_otel.cli import main
from crackle_otel.gateway.analyze import analyze_files, keep_freed_memory
from crackle_otel.gateway.otlp_files import write_length_prefixed
from crackle_otel.gateway.otlp_json import message_to_otlp_json
from crackle_otel.otel.config import CrackleConfig
from otlp_sink import OTLPSink

SERVICE = "etl"
START_NS = 1_790_000_000 * 10**9
STEP_NS = 10_000_000
SPANS_PER_REQUEST = 200


def _value(value) -> common_pb2.AnyValue:
    if isinstance(value, str):
        return common_pb2.AnyValue(string_value=value)
    if isinstance(value, float):
        return common_pb2.AnyValue(double_value=value)
    return common_pb2.AnyValue(int_value=int(value))


def workload(n: int = 1000, seed: int = 0, *, cycles: int = 1):
    """ExportTraceServiceRequests of SPANS_PER_REQUEST spans, alternating the two groups.

    Each of ``cycles`` cycles of ``n`` spans (half per group) has its own latency shift
    and records violation, so a longer file holds more of the same, not one long drift.
    Returns (requests, identities of every span).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for cycle in range(cycles):
        half = n // 2
        latency = np.where(np.arange(half) < half // 2, rng.normal(20, 2, half), rng.normal(60, 4, half))
        records_in = np.round(rng.normal(1000, 30, half))
        errors = rng.poisson(2, half)
        lost = np.where(np.arange(half) >= int(half * 0.7), np.linspace(5, 300, half).round(), 0)
        for i in range(half):
            rows.append(("GET /cart", latency[i], {"items": int(rng.integers(1, 6))}))
            rows.append(("process batch", rng.normal(50, 5),
                         {"records_in": int(records_in[i]), "errors": int(errors[i]),
                          "records_out": int(records_in[i] - errors[i] - lost[i])}))
    requests, identities = [], set()
    for first in range(0, len(rows), SPANS_PER_REQUEST):
        request = trace_service_pb2.ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.add(key="service.name", value=_value(SERVICE))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "etl.app"
        for index in range(first, min(first + SPANS_PER_REQUEST, len(rows))):
            name, duration_ms, attributes = rows[index]
            trace_id, span_id = rng.integers(1, 2**62, 2).tolist()
            begin = START_NS + index * STEP_NS
            span = scope_spans.spans.add(trace_id=trace_id.to_bytes(16, "big"), span_id=span_id.to_bytes(8, "big"),
                                         name=name, start_time_unix_nano=begin,
                                         end_time_unix_nano=begin + int(duration_ms * 1e6))
            for key, value in attributes.items():
                span.attributes.add(key=key, value=_value(value))
            identities.add((trace_id, span_id))
        requests.append(request)
    return requests, identities


def write_json_lines(path: Path, requests, *, insert_garbage_at=()) -> Path:
    lines = [message_to_otlp_json(r) for r in requests]
    for position in sorted(insert_garbage_at):
        lines.insert(position - 1, '{"resourceSpans": [ this is not json')
    path.write_text("\n".join(lines) + "\n")
    return path


def write_framed(path: Path, requests) -> Path:
    with open(path, "wb") as out:
        write_length_prefixed(out, requests)
    return path


def config(**overrides) -> CrackleConfig:
    return CrackleConfig.load({}, **{"profile": "fast", "exporter": "none", **overrides})


class Collect:
    def __init__(self):
        self.patterns = []

    def emit(self, patterns):
        self.patterns.extend(patterns)

    def force_flush(self, timeout_millis=0):
        return True

    def shutdown(self, timeout_millis=0):
        pass

    def stats(self):
        return {"patterns_emitted": len(self.patterns)}


EXPECTED = {("phase_transition", f"{SERVICE} | GET /cart"), ("conservation_violation", f"{SERVICE} | process batch")}


# --------------------------------------------------------------------- CLI
def test_json_lines_file_prints_the_patterns_as_text(tmp_path, capsys):
    requests, _ = workload()
    path = write_json_lines(tmp_path / "spans.jsonl", requests)
    assert main(["analyze", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "[phase transition]" in out and f"group={SERVICE} | GET /cart" in out
    assert "[conservation violation]" in out and f"group={SERVICE} | process batch" in out
    assert "1,000 spans in 5 requests from 1 file(s)" in err


def test_length_prefixed_proto_with_json_output_links_to_the_file_spans(tmp_path, capsys):
    requests, identities = workload()
    path = write_framed(tmp_path / "spans.binpb", requests)
    assert main(["analyze", "--json", str(path)]) == 0
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(d["kind"], d["group"]) for d in documents} >= EXPECTED
    for document in documents:
        assert {"description", "confidence", "statistics", "metrics", "involved", "key"} <= set(document)
        for task in document["involved"]:
            assert (int(task["trace_id"], 16), int(task["span_id"], 16)) in identities
            assert tuple(task["identity"]) == (int(task["trace_id"], 16), int(task["span_id"], 16))


def test_every_format_gives_the_same_patterns(tmp_path):
    requests, _ = workload(seed=4)
    bare = trace_service_pb2.ExportTraceServiceRequest()
    for request in requests:
        bare.resource_spans.extend(request.resource_spans)  # one big request, e.g. a captured body
    files = {
        "jsonl": write_json_lines(tmp_path / "a.jsonl", requests),
        "framed": write_framed(tmp_path / "a.binpb", requests),
        "bare": tmp_path / "a.pb",
        "gzip": tmp_path / "a.jsonl.gz",
    }
    files["bare"].write_bytes(bare.SerializeToString())
    files["gzip"].write_bytes(gzip.compress(files["jsonl"].read_bytes()))
    found = {}
    for name, path in files.items():
        collected = Collect()
        summary = analyze_files([str(path)], config(), collected)
        assert summary.spans == 1000 and summary.problems.count == 0, (name, summary.problems.first)
        # Positions name the file they are in: the same span of each file is the same place.
        found[name] = [p.to_dict() | {"description": p.description.replace(path.name, "FILE")}
                       for p in collected.patterns]
    reference = found["framed"]
    assert {(d["kind"], d["group"]) for d in reference} >= EXPECTED
    for name, patterns in found.items():
        assert patterns == reference, name


def test_malformed_lines_are_skipped_counted_and_reported_with_line_numbers(tmp_path, capsys):
    requests, _ = workload()
    path = write_json_lines(tmp_path / "spans.jsonl", requests, insert_garbage_at=(2, 5))
    with open(path, "a") as out:
        out.write("[1, 2, 3]\n\n")  # JSON, but not a request; then a blank line (ignored)
    assert main(["analyze", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "[phase transition]" in out  # the good lines were analysed
    assert "3 malformed records skipped" in err
    assert "spans.jsonl:2:" in err and "spans.jsonl:5:" in err and "spans.jsonl:8:" in err


def test_truncated_and_corrupt_proto_files_are_reported_not_crashed_on(tmp_path, capsys):
    requests, _ = workload()
    framed = write_framed(tmp_path / "cut.binpb", requests).read_bytes()
    (tmp_path / "cut.binpb").write_bytes(framed[: len(framed) - 100])
    # record 1: a resource_spans field claiming 5 bytes but holding 1; record 2: an impossible length
    (tmp_path / "noise.bin").write_bytes(b"\x00\x00\x00\x03\x0a\x05a" + b"\xff" * 64)
    (tmp_path / "cut.gz").write_bytes(gzip.compress(framed)[:-40])
    code = main(["analyze", str(tmp_path / "cut.binpb"), str(tmp_path / "noise.bin"), str(tmp_path / "cut.gz"),
                 str(tmp_path / "missing.jsonl")])
    out, err = capsys.readouterr()
    assert code == 1  # a file could not be opened at all, another not read to its end
    assert "cut.binpb: record 5" in err and "truncated record" in err
    assert "noise.bin: record 1" in err and "noise.bin: record 2" in err
    assert "cut.gz" in err and "stopped reading this file" in err
    assert "cannot read" in err and "missing.jsonl" in err
    assert "[phase transition]" in out  # what could be read was analysed


def test_progress_line_goes_to_stderr_when_asked(tmp_path, capsys):
    requests, _ = workload()
    path = write_framed(tmp_path / "spans.binpb", requests)
    assert main(["analyze", "--progress", str(path)]) == 0
    err = capsys.readouterr().err
    assert "\rspans.binpb: 100.0%" in err and "1,000 spans" in err


# ------------------------------------------------------------------ memory
class Discard(Collect):
    def emit(self, patterns):
        pass


def _peak_bytes(path: Path) -> tuple[int, int, int]:
    tracemalloc.start()
    try:
        summary = analyze_files([str(path)], config(kiln_capacity=KILN, call_graph_spans=KILN), Discard())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, summary.spans, summary.findings_kept


KILN = 300  # spans kept per group (and in the call graph): a file of 10 cycles overflows them many times


FINDING_BYTES = 100_000  # a finding kept until the end: its pattern, up to 128 involved tasks, places


def test_memory_grows_with_the_findings_not_with_the_spans(tmp_path):
    small, _ = workload(n=600, seed=1, cycles=1)
    large, _ = workload(n=600, seed=1, cycles=10)
    small_path = write_framed(tmp_path / "small.binpb", small)
    large_path = write_framed(tmp_path / "large.binpb", large)
    assert large_path.stat().st_size > 9 * small_path.stat().st_size
    analyze_files([str(small_path)], config(kiln_capacity=KILN, call_graph_spans=KILN), Discard())  # imports first
    small_peak, small_spans, _ = _peak_bytes(small_path)
    large_peak, large_spans, large_findings = _peak_bytes(large_path)
    assert (small_spans, large_spans) == (600, 6000)
    # Each cycle brings its own shift and violation: those findings are kept, the spans are not.
    assert large_peak < 1.5 * small_peak + FINDING_BYTES * large_findings, (small_peak, large_peak, large_findings)


def test_a_file_that_cannot_be_read_to_its_end_fails_the_run(tmp_path, capsys):
    requests, _ = workload()
    framed = write_framed(tmp_path / "whole.binpb", requests).read_bytes()
    (tmp_path / "cut.gz").write_bytes(gzip.compress(framed)[:-40])
    assert main(["analyze", str(tmp_path / "whole.binpb")]) == 0
    assert main(["analyze", str(tmp_path / "cut.gz")]) == 1
    assert "stopped reading this file" in capsys.readouterr().err


# ------------------------------------------------------- the whole input, not a window
def _slow_host_requests(n: int, seed: int = 0, *, hosts: bool = False):
    """One group, ``n`` spans; every tenth span takes 3x as long and reads 3x the rows: a cluster across the file.

    The slow spans stand apart on two measures (one measure with two modes is a stream's
    usual shape); with ``hosts`` they all come from host slow-1: an attribution.
    """
    rng = np.random.default_rng(seed)
    slow = np.arange(n) % 10 == 3
    duration = rng.lognormal(np.log(20), 0.1, n) * np.where(slow, 3.0, 1.0)
    rows = rng.lognormal(np.log(100), 0.1, n) * np.where(slow, 3.0, 1.0)
    requests = []
    for first in range(0, n, SPANS_PER_REQUEST):
        request = trace_service_pb2.ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.add(key="service.name", value=_value(SERVICE))
        scope_spans = resource_spans.scope_spans.add()
        for index in range(first, min(first + SPANS_PER_REQUEST, n)):
            trace_id, span_id = rng.integers(1, 2**62, 2).tolist()
            begin = START_NS + index * STEP_NS
            span = scope_spans.spans.add(trace_id=trace_id.to_bytes(16, "big"), span_id=span_id.to_bytes(8, "big"),
                                         name="GET /cart", start_time_unix_nano=begin,
                                         end_time_unix_nano=begin + int(duration[index] * 1e6))
            span.attributes.add(key="db.rows", value=common_pb2.AnyValue(double_value=float(rows[index])))
            if hosts:
                span.attributes.add(key="host.name", value=_value("slow-1" if slow[index] else f"host-{index % 4}"))
        requests.append(request)
    return requests, int(slow.sum())


@pytest.mark.parametrize("hosts, kind", [(False, "clustering"), (True, "attribution")])
def test_a_cluster_is_counted_once_over_the_whole_file_not_per_window(tmp_path, hosts, kind):
    requests, slow = _slow_host_requests(6000, hosts=hosts)
    path = write_framed(tmp_path / "spans.binpb", requests)
    collected = Collect()
    summary = analyze_files([str(path)], config(kiln_capacity=1024), collected)  # windows of 1,024 spans
    found = [f for f in summary.findings if f.pattern.kind.slug == kind]
    assert len(found) == 1, [f.pattern.description for f in summary.findings]  # one finding, not one per window
    finding = found[0]
    assert finding.windows > 5 and finding.group_tasks == 6000
    if kind == "clustering":
        # Exact while the detector lists every member (up to 128 per window), else estimated and marked "~".
        assert abs(finding.count - slow) <= 0.1 * slow, (finding.count, slow)
        approx = "" if finding.count_exact else "~"
        assert finding.pattern.description.startswith(f"{approx}{finding.count} tasks ({finding.count / 6000:.1%})")
    else:
        assert finding.count == slow  # the tasks that carry host.name=slow-1, each counted once
        assert f"10% of tasks ({slow} of 6000)" in finding.pattern.description
    assert [p.kind.slug for p in collected.patterns].count(kind) == 1


def test_change_positions_are_spans_of_the_file_with_their_time(tmp_path, capsys):
    requests, _ = workload(n=20_000, seed=2)  # the latency of GET /cart shifts at span 10,001 of the file
    path = write_json_lines(tmp_path / "big.jsonl", requests)
    assert main(["analyze", "--json", "--profile", "fast", "--kiln-capacity", "2048", str(path)]) == 0
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    shifts = [d for d in documents if d["key"] == "phase_transition:duration_ms:mean"
              and d["group"] == f"{SERVICE} | GET /cart"]
    assert len(shifts) == 1, [d["description"] for d in shifts]
    place = shifts[0]["input"]["places"]["change_index"]
    assert place["file"] == "big.jsonl" and abs(place["span"] - 10_001) <= 4, place
    assert abs(place["timestamp"] - (START_NS + (place["span"] - 1) * STEP_NS) / 1e9) < 1e-3
    assert f"at span {place['span']:,} of big.jsonl (" in shifts[0]["description"]
    assert " task " not in shifts[0]["description"]


def test_no_span_read_fails_the_run(tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "garbage.jsonl").write_text("this is not OTLP\n{\"nor\": \"this\"}\n")
    for name in ("empty.jsonl", "garbage.jsonl"):
        assert main(["analyze", str(tmp_path / name)]) == 1, name
        assert "no span could be read" in capsys.readouterr().err


def test_version(capsys):
    from crackle_otel import __version__

    try:
        main(["--version"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert capsys.readouterr().out.strip() == f"crackle-otel {__version__}"

def test_a_failing_route_in_a_file_is_named_by_its_error_rate(tmp_path, capsys):
    # One span group, four routes; /pay fails 6 % of the time (status ERROR + an exception event),
    # the others 0.3 %. Resources are two hosts, which do not matter.
    rng = np.random.default_rng(3)
    routes = ("/cart", "/search", "/pay", "/home")
    requests = []
    for first in range(0, 3000, SPANS_PER_REQUEST):
        request = trace_service_pb2.ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.add(key="service.name", value=_value(SERVICE))
        resource_spans.resource.attributes.add(key="host.name", value=_value(f"web-{first // 600 % 2}"))
        scope_spans = resource_spans.scope_spans.add()
        for index in range(first, first + SPANS_PER_REQUEST):
            route = routes[int(rng.integers(0, 4))]
            begin = START_NS + index * STEP_NS
            span = scope_spans.spans.add(trace_id=int(index + 1).to_bytes(16, "big"), span_id=int(index + 1).to_bytes(8, "big"),
                                         name="POST /api", start_time_unix_nano=begin,
                                         end_time_unix_nano=begin + int(rng.lognormal(3, 0.3) * 1e6))
            span.attributes.add(key="http.route", value=_value(route))
            if rng.random() < (0.06 if route == "/pay" else 0.003):
                span.status.code = 2  # STATUS_CODE_ERROR
                span.events.add(name="exception", time_unix_nano=begin)
        requests.append(request)
    path = write_json_lines(tmp_path / "spans.jsonl", requests)
    assert main(["analyze", str(path)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[attribution]")]
    assert len(lines) == 1 and lines[0].startswith("[attribution] http.route=/pay: errors "), lines
    assert "exceptions, event_count alike" in lines[0] and f"group={SERVICE} | POST /api" in lines[0]


def test_export_endpoint_says_what_was_delivered(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CRACKLE_PROFILE", "fast")
    path = write_json_lines(tmp_path / "spans.jsonl", workload()[0])
    with OTLPSink() as sink:
        assert main(["analyze", str(path), "--export-endpoint", sink.grpc_endpoint]) == 0
        spans = sink.wait_for_spans(lambda s: s.name.startswith("crackle.pattern "), count=2)
    err = capsys.readouterr().err
    assert f"to {sink.grpc_endpoint}: {len(spans)} of {len(spans)} patterns exported as spans and {len(spans)} as events\n" in err


def test_export_endpoint_that_takes_nothing_fails_the_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CRACKLE_PROFILE", "fast")
    monkeypatch.setenv("CRACKLE_EXPORT_TIMEOUT_MILLIS", "1000")
    path = write_json_lines(tmp_path / "spans.jsonl", workload()[0])
    with socket.socket() as sock:  # bound then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    assert main(["analyze", str(path), "--export-endpoint", dead]) == 1
    err = capsys.readouterr().err
    assert re.search(rf"to {dead}: 0 of (\d+) patterns exported as spans and 0 as events \(\1 patterns dropped", err), err
    assert f"nothing reached {dead}" in err


def test_a_bad_crackle_variable_is_named_not_ignored(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CRACKLE_EXPORTER", "jaeger")
    path = write_json_lines(tmp_path / "spans.jsonl", workload()[0])
    assert main(["analyze", str(path)]) == 2
    assert "CRACKLE_EXPORTER='jaeger': expected one of otlp, console, none" in capsys.readouterr().err


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_analyze_keeps_freed_memory_for_reuse_under_glibc():
    assert keep_freed_memory() is True  # glibc accepted both options (mallopt returns 1 for each)


def test_the_analyze_command_collects_garbage_rarely_in_its_own_process(tmp_path):
    requests, _ = workload(n=200)
    path = write_json_lines(tmp_path / "spans.jsonl", requests)
    thresholds = gc.get_threshold()
    try:
        assert main(["analyze", str(path)]) == 0
        assert gc.get_threshold()[0] >= 50_000  # a kiln keeps its newest objects: the default 700 meant full collections
    finally:
        gc.set_threshold(*thresholds)
