"""Stress: `crackle-otel analyze` on hostile input — a huge line, zeros, random bytes.

Memory is bounded by the record size limit, not by a line; zero runs are skipped at
memory speed; a file with nothing to read fails the run.
"""

from __future__ import annotations

import gzip
import os
import time
import tracemalloc
from pathlib import Path

from crackle_otel.cli import main
from crackle_otel.gateway.analyze import analyze_files
from crackle_otel.gateway.otlp_json import message_to_otlp_json
from test_analyze import config, workload, write_framed


def test_a_huge_line_costs_the_record_limit_not_its_length(tmp_path):
    requests, _ = workload(200)
    good = [message_to_otlp_json(request) for request in requests]
    path = tmp_path / "long-line.jsonl.gz"
    with gzip.open(path, "wb") as out:  # 64 MiB line: gzip makes it ~64 KiB on disk
        out.write((good[0] + "\n").encode())
        out.write(b'{"resourceSpans":[{"x":"' + b"a" * (64 << 20) + b'"}]}\n')
        for line in good[1:]:
            out.write((line + "\n").encode())
    tracemalloc.start()
    summary = analyze_files([str(path)], config(), max_record_bytes=1 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 24 << 20, f"peak {peak / 2**20:.0f} MiB for a 64 MiB line"
    assert summary.spans == 200  # every good line around it is read
    assert summary.problems.count == 1 and ":2: record of" in summary.problems.first[0]


def test_zero_runs_are_skipped_fast_and_fail_the_run(tmp_path, capsys):
    zeros = tmp_path / "zeros.bin"
    with open(zeros, "wb") as out:
        out.truncate(256 << 20)  # 256 MiB of zeros (sparse: no disk used)
    started = time.monotonic()
    assert main(["analyze", str(zeros)]) == 1
    assert time.monotonic() - started < 15
    err = capsys.readouterr().err
    assert "zero bytes (empty records) skipped" in err and "no OTLP record found" in err


def test_good_records_after_a_zero_run_are_still_read(tmp_path):
    path = write_framed(tmp_path / "padded.pb", workload(200)[0])
    data = path.read_bytes()
    path.write_bytes(b"\0" * (1 << 20) + data)  # a zero-filled preallocation before the records
    summary = analyze_files([str(path)], config())
    assert summary.spans > 0 and not summary.unreadable


def test_random_bytes_are_recognised_quickly_and_fail_the_run(tmp_path, capsys):
    for name, head in (("random.bin", b""), ("random.json", b"{"), ("random.gz", None)):
        path = tmp_path / name
        noise = os.urandom(4 << 20)
        path.write_bytes(gzip.compress(noise) if head is None else head + noise)
        started = time.monotonic()
        assert main(["analyze", str(path)]) == 1, name
        assert time.monotonic() - started < 20, name
        assert "no span could be read" in capsys.readouterr().err


def test_one_garbage_file_among_good_ones_fails_the_run(tmp_path, capsys):
    good = write_framed(tmp_path / "good.pb", workload(200)[0])
    garbage = Path(tmp_path / "garbage.bin")
    garbage.write_bytes(os.urandom(1 << 16))
    assert main(["analyze", str(good), str(garbage)]) == 1
    assert "garbage.bin: no OTLP record found" in capsys.readouterr().err
