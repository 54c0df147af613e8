"""The examples run as documented and crackle prints what they were built to show.

Each test runs real subprocesses (no mocks): examples/minimal.py, and the Flask
shop under a real ``opentelemetry-instrument`` driven by its load script and
stopped with SIGTERM, so crackle's shutdown cool prints the last patterns.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PYTHON = sys.executable
INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")
HOOK = "crackle_otel.otel.auto:post_instrument"
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without CRACKLE_* / OTEL_* settings that could change the outcome."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRACKLE_", "OTEL_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def pattern_lines(output: str, kind: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(f"[{kind}] ")]


def test_minimal_example_prints_the_latency_shift():
    result = subprocess.run(
        [PYTHON, str(EXAMPLES / "minimal.py")],
        cwd=ROOT, env=clean_environment(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    shifts = [
        line for line in pattern_lines(result.stdout, "phase transition")
        if line.startswith("[phase transition] duration_ms slowed down") and "group=minimal | resize" in line
    ]
    assert shifts, f"no duration_ms phase transition printed:\n{result.stdout}"
    assert re.search(r"at task 50[01] ", shifts[0]), shifts[0]  # the shift starts at span 500


class _LineCollector:
    """Reads a subprocess's stdout on a thread (so the pipe never fills) and signals the listening line."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self.url: str | None = None
        self.listening = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            match = LISTENING.search(line)
            if match and self.url is None:
                self.url = match.group(1)
                self.listening.set()
        self.listening.set()  # EOF: the app died before listening

    def text(self, timeout: float) -> str:
        self._thread.join(timeout)
        return "\n".join(self.lines)


def test_flask_app_under_opentelemetry_instrument_reports_the_degradation(tmp_path):
    hooks = [ep.value for ep in importlib.metadata.entry_points(group="opentelemetry_post_instrument")]
    assert HOOK in hooks, (
        "crackle's zero-code hook is not installed; pyproject.toml needs\n"
        '[project.entry-points.opentelemetry_post_instrument]\ncrackle = "crackle_otel.otel.auto:post_instrument"\n'
        "and a re-install (pip install -e .)"
    )
    assert INSTRUMENT.exists(), f"{INSTRUMENT} missing: install the dev extras (opentelemetry-distro)"
    env = clean_environment(
        CRACKLE_ENABLED="true",
        CRACKLE_EXPORTER="console",
        CRACKLE_COOL_INTERVAL_MILLIS="2000",
        OTEL_SERVICE_NAME="shop",
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    stderr_path = tmp_path / "app.stderr"
    with open(stderr_path, "w") as stderr:
        app = subprocess.Popen(
            [str(INSTRUMENT), PYTHON, str(EXAMPLES / "flask_app" / "app.py"), "--port", "0"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )
    stdout = _LineCollector(app.stdout)
    try:
        assert stdout.listening.wait(30) and stdout.url, f"app did not start:\n{stderr_path.read_text()}"
        load = subprocess.run(
            [PYTHON, str(EXAMPLES / "flask_app" / "load.py"), "--url", stdout.url, "--requests", "400"],
            cwd=ROOT, env=clean_environment(), capture_output=True, text=True, timeout=90,
        )
        assert load.returncode == 0, load.stdout + load.stderr
    finally:
        app.send_signal(signal.SIGTERM)
        try:
            app.wait(30)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()
    output = stdout.text(timeout=5)
    errors = stderr_path.read_text()
    assert app.returncode == 0, f"exit {app.returncode}\n{errors}"
    assert "shop stopped" in output and "Traceback" not in errors, errors

    in_checkout = "group=shop | GET /checkout"
    latency_shifts = [
        line for line in pattern_lines(output, "phase transition")
        if line.startswith("[phase transition] duration_ms") and in_checkout in line
    ]
    assert latency_shifts, f"no phase transition on the request span's duration_ms:\n{output}\n--- app stderr:\n{errors[-4000:]}"
    # Degraded from request 200 of 400; the first checkout after /healthz is task 0.
    # Every change point of the pattern (a warm-up before it may come first).
    positions = [int(p) for s in latency_shifts for p in re.findall(r"(?:at|from) task (\d+)", s)]
    assert any(180 <= p <= 220 for p in positions), latency_shifts
    lost_records = [
        line for line in pattern_lines(output, "conservation violation")
        if "records_in - records_out - records_failed" in line and in_checkout in line
    ]
    assert lost_records, f"no conservation violation on the records:\n{output}\n--- app stderr:\n{errors[-4000:]}"
    # The slow database host is named as such, with how much slower its checkouts are.
    slow_host = [
        line for line in pattern_lines(output, "attribution")
        if re.match(r"\[attribution\] db\.host=db-7: .*db\.time_ms \d+(\.\d)?x the rest", line) and in_checkout in line
    ]
    assert slow_host, f"no attribution of the slow host db-7:\n{output}"
