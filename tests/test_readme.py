"""README snippets run as written: a reader copies them, so they must work (and their commented variants too)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
# Use the provider a snippet built, then shut it down (which cools and emits at once).
USE_AND_SHUT_DOWN = (
    "\ncounter = meter_provider.get_meter('readme').create_counter('requests')\n"
    "counter.add(1)\n"
    "meter_provider.shutdown(timeout_millis=2000)\n"
)


def python_block_after(heading: str) -> str:
    section = README[README.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRACKLE_", "OTEL_"))}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)


def test_the_metric_reader_snippet_and_its_console_variant_run_as_written():
    snippet = python_block_after("### OTel metrics: `CrackleMetricReader`")
    as_written = run(snippet + USE_AND_SHUT_DOWN)
    assert as_written.returncode == 0, as_written.stderr
    lines = snippet.splitlines()
    console = next(i for i, line in enumerate(lines) if line.startswith("# reader = "))
    otlp = next(i for i, line in enumerate(lines) if line.startswith("reader = "))
    lines[otlp], lines[console] = "# " + lines[otlp], lines[console][2:].split("  # ")[0]
    variant = run("\n".join(lines) + "\n" + USE_AND_SHUT_DOWN)
    assert variant.returncode == 0, variant.stderr
    assert "Traceback" not in variant.stderr
