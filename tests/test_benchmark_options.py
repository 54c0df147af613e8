"""The benchmarks refuse counts that are not at least 1 with a usage error (hot_path's --threads 0 divided by zero)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("script, option", [("hot_path.py", "--threads"), ("hot_path.py", "--spans"),
                                            ("report.py", "--rounds"), ("gateway.py", "--batch")])
def test_a_zero_count_is_a_usage_error(script, option):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), option, "0"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert f"argument {option}: must be at least 1, got 0" in done.stderr
    assert "Traceback" not in done.stderr
