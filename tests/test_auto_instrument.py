"""Zero-code setup: a real ``opentelemetry-instrument python app.py`` gets crackle from CRACKLE_ENABLED=true.

Until pyproject.toml declares the ``opentelemetry_post_instrument`` entry point
(and the package is reinstalled), the test puts an equivalent ``.dist-info``
with that entry point on the child's PYTHONPATH: the loader finds entry points
the same way in both cases.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ENTRY_POINT = "crackle_otel.otel.auto:post_instrument"
INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")

APP = textwrap.dedent(
    """
    import random, time
    from opentelemetry import trace
    from crackle_otel.otel.setup import attached_processor

    tracer = trace.get_tracer("demo.app")
    rng = random.Random(5)
    start = time.time_ns() - 800 * 10_000_000
    for i in range(800):  # 20 ms, then 60 ms from span 400 on: a latency shift
        latency_ms = rng.gauss(20, 2) if i < 400 else rng.gauss(60, 4)
        begin = start + i * 10_000_000
        span = tracer.start_span("GET /cart", start_time=begin)
        span.end(end_time=begin + int(latency_ms * 1e6))
    processor = attached_processor()
    print("attached:", processor is not None, flush=True)
    if processor is not None:
        processor.force_flush()
        stats = processor.stats()
        print("recorded:", stats["spans_recorded"], "ended:", stats["spans_ended"], flush=True)
    """
)


def entry_point_installed() -> bool:
    return any(ep.value == ENTRY_POINT for ep in entry_points(group="opentelemetry_post_instrument"))


@pytest.fixture
def app_env(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    python_path = [str(Path(__file__).resolve().parents[1])]
    if not entry_point_installed():
        shim = tmp_path / "entry_points" / "crackle_otel_hook-0.0.dist-info"
        shim.mkdir(parents=True)
        (shim / "METADATA").write_text("Metadata-Version: 2.1\nName: crackle-otel-hook\nVersion: 0.0\n")
        (shim / "entry_points.txt").write_text(f"[opentelemetry_post_instrument]\ncrackle = {ENTRY_POINT}\n")
        python_path.append(str(shim.parent))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRACKLE_", "OTEL_"))}
    env.update(
        PYTHONPATH=os.pathsep.join(python_path),
        OTEL_SERVICE_NAME="auto-demo",
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        CRACKLE_EXPORTER="console",
        CRACKLE_PROFILE="fast",
        CRACKLE_COOL_INTERVAL_MILLIS="3600000",
    )
    return tmp_path, env


def run_instrumented(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(INSTRUMENT), sys.executable, str(tmp_path / "app.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_instrumented_app_gets_the_processor_and_prints_patterns(app_env):
    tmp_path, env = app_env
    result = run_instrumented(tmp_path, {**env, "CRACKLE_ENABLED": "true"})
    assert result.returncode == 0, result.stderr
    assert "attached: True" in result.stdout, result.stderr
    assert "recorded: 800 ended: 800" in result.stdout
    # The console emitter's line for the latency shift, in the service's group.
    shift_lines = [
        line for line in result.stdout.splitlines() if line.startswith("[phase transition] duration_ms")
    ]
    assert shift_lines, result.stdout + result.stderr
    assert "group=auto-demo | GET /cart" in shift_lines[0]
    # One line says crackle attached, and where its patterns go.
    attached = [line for line in result.stderr.splitlines() if "crackle: span processor attached" in line]
    assert attached == ["crackle: span processor attached; patterns to the console; cooling every 3600 s"], \
        result.stderr


def test_not_enabled_without_crackle_enabled(app_env):
    tmp_path, env = app_env
    result = run_instrumented(tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert "attached: False" in result.stdout


def test_a_bad_setting_is_reported_and_the_app_runs_on(app_env):
    tmp_path, env = app_env
    result = run_instrumented(tmp_path, {**env, "CRACKLE_ENABLED": "true", "CRACKLE_MAX_GROUPS": "many"})
    assert result.returncode == 0, result.stderr
    assert "attached: False" in result.stdout
    assert "CRACKLE_MAX_GROUPS='many'" in result.stderr
    assert "span processor attached" not in result.stderr


def test_post_instrument_attaches_to_the_global_sdk_provider_in_process():
    """The hook itself, in-process, on a fresh global provider (subprocess-free check of the same path)."""
    code = textwrap.dedent(
        """
        import os
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from crackle_otel.otel.auto import post_instrument
        from crackle_otel.otel.setup import attached_processor
        trace.set_tracer_provider(TracerProvider())
        post_instrument()
        post_instrument()  # twice: still one processor
        processors = trace.get_tracer_provider()._active_span_processor._span_processors
        print(attached_processor() is not None, len(processors))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRACKLE_")}
    env.update(CRACKLE_ENABLED="true", CRACKLE_EXPORTER="none")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "1"], result.stdout + result.stderr
