"""The real pipeline for tests: the OpenTelemetry Collector and Jaeger that tools/build_test_infra.sh builds,
and `crackle-otel serve`, each run as its own process on free loopback ports.

    with Jaeger(binaries, tmp_path) as jaeger, Gateway(export_endpoint=jaeger.otlp_grpc) as gateway:
        with Collector(binaries, "load_balancing.yaml", tmp_path, {"jaeger:4317": jaeger.otlp_grpc, ...}):
            ...
            jaeger.wait_for_spans("crackle-otel-gateway", lambda span: ...)

Tests that need the binaries use the ``pipeline_binaries`` fixture (conftest.py): without them it skips
with the reason, unless ``CRACKLE_PIPELINE_TESTS=required`` (set by .ci/run), where it fails, so CI
can never pass by skipping.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Mapping

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "tools" / "build_test_infra.sh"
COLLECTOR_CONFIGS = REPO / "collector_config"
REQUIRED_VARIABLE = "CRACKLE_PIPELINE_TESTS"
GATEWAY_SERVICE = "crackle-otel-gateway"


def pipeline_required() -> bool:
    return os.environ.get(REQUIRED_VARIABLE, "").lower() == "required"


def locate_binaries() -> tuple[dict[str, Path] | None, str]:
    """({name: path} for the collector and Jaeger, "") when built, else (None, why not)."""
    try:
        run = subprocess.run(["bash", str(BUILD_SCRIPT), "--locate"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"{BUILD_SCRIPT} --locate failed: {error}"
    if run.returncode != 0:
        return None, f"the collector and Jaeger are not built: run {BUILD_SCRIPT.relative_to(REPO)} (needs Go)"
    paths = dict(line.split("=", 1) for line in run.stdout.split())
    return {name: Path(path) for name, path in paths.items()}, ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """The first truthy value of ``condition()``; TimeoutError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


class Process:
    """A child process with its output in a log file; stopped with SIGTERM (then SIGKILL) on exit."""

    def __init__(self, name: str, command: list[str], log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.command = command
        self.log_path = log_dir / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self) -> "Process":
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_listening(self, *addresses: str, timeout: float = 60.0) -> None:
        for address in addresses:
            wait_until(lambda: self._alive_or_raise() and _listening(address), timeout=timeout,
                       what=f"{self.name} on {address}")

    def _alive_or_raise(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()[-4000:]}")
        return True

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, SIGKILL if needed; returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> "Process":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ------------------------------------------------------------------ Jaeger
JAEGER_CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    enable_tracing: false  # on by default in v2: it would send Jaeger's own spans to localhost:4317
    storage:
      traces: memstore
    http:
      endpoint: {query_http}
    grpc:
      endpoint: {query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: {otlp_grpc}
      http:
        endpoint: {otlp_http}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


class Jaeger(Process):
    """Jaeger v2 all-in-one with in-memory storage: OTLP in, query API (and UI) out, on free ports."""

    def __init__(self, binaries: Mapping[str, Path], log_dir: Path, name: str = "jaeger") -> None:
        self.otlp_grpc = f"127.0.0.1:{free_port()}"
        self.otlp_http = f"127.0.0.1:{free_port()}"
        self.query_http = f"127.0.0.1:{free_port()}"
        config = log_dir / f"{name}.yaml"
        config.write_text(JAEGER_CONFIG.format(otlp_grpc=self.otlp_grpc, otlp_http=self.otlp_http,
                                               query_http=self.query_http, query_grpc=f"127.0.0.1:{free_port()}"))
        super().__init__(name, [str(binaries["jaeger"]), "--config", str(config)], log_dir)

    @property
    def ui_url(self) -> str:
        return f"http://{self.query_http}"

    def start(self) -> "Jaeger":
        super().start()
        self.wait_listening(self.otlp_grpc, self.otlp_http, self.query_http)
        return self

    def api(self, path: str, **query: Any) -> Any:
        url = f"{self.ui_url}/api/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    def services(self) -> list[str]:
        return self.api("services")["data"] or []

    def traces(self, service: str, limit: int = 10_000, **query: Any) -> list[dict]:
        """Traces holding a span of ``service`` (Jaeger's JSON: traceID, spans, processes)."""
        return self.api("traces", service=service, limit=limit, lookback="2d", **query)["data"] or []

    def trace(self, trace_id: str) -> dict | None:
        found = self.api(f"traces/{trace_id}")
        return found["data"][0] if found and found.get("data") else None

    def spans(self, service: str, **query: Any) -> list[dict]:
        """Spans of ``service`` (each with its process' serviceName under 'service')."""
        spans = []
        for trace in self.traces(service, **query):
            for span in trace["spans"]:
                process = trace["processes"].get(span["processID"], {})
                if process.get("serviceName") == service:
                    spans.append({**span, "service": service, "process": process})
        return spans

    def wait_for_spans(self, service: str, condition: Callable[[dict], bool] = lambda span: True, *,
                       count: int = 1, timeout: float = 30.0) -> list[dict]:
        """At least ``count`` spans of ``service`` meeting ``condition``, once Jaeger holds them."""
        def enough() -> list[dict] | None:
            found = [span for span in self.spans(service) if condition(span)]
            return found if len(found) >= count else None
        return wait_until(enough, timeout=timeout, what=f"{count} matching spans of {service} in Jaeger", interval=0.5)

    def holds_span(self, trace_id: str, span_id: str) -> bool:
        trace = self.trace(trace_id)
        return trace is not None and any(span["spanID"] == span_id for span in trace["spans"])


def tags(span: dict) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}


def pattern_links(span: dict) -> list[tuple[str, str]]:
    """(trace id, span id) of every span a pattern span links to (Jaeger shows OTLP links as references)."""
    return [(ref["traceID"], ref["spanID"]) for ref in span.get("references", [])]


def is_pattern_span(span: dict) -> bool:
    return span["operationName"].startswith("crackle.pattern ")


# --------------------------------------------------------------- collector
class Collector(Process):
    """The collector built from tools/otelcol with one of collector_config/*.yaml, as shipped except addresses.

    ``addresses`` maps each host:port the config names to a loopback one (its receivers' 0.0.0.0:4317 too);
    ``extra_configs`` are merged after it by the collector itself (e.g. a file exporter for a test).
    """

    def __init__(self, binaries: Mapping[str, Path], config_name: str, log_dir: Path, addresses: Mapping[str, str],
                 *, extra_configs: tuple[str, ...] = (), name: str = "collector") -> None:
        text = (COLLECTOR_CONFIGS / config_name).read_text()
        for shipped, local in addresses.items():
            text = re.sub(rf"(?<![\w.-]){re.escape(shipped)}(?!\d)", local, text)
        self.config_path = log_dir / f"{name}-{config_name}"
        self.config_path.write_text(text)
        self.addresses = dict(addresses)
        command = [str(binaries["crackle-otelcol"]), "--config", str(self.config_path),
                   # Its own metrics would take :8888, shared by every collector on the machine.
                   "--config", "yaml:service::telemetry::metrics::level: none"]
        for extra in extra_configs:
            command += ["--config", extra]
        super().__init__(name, command, log_dir)

    def start(self) -> "Collector":
        super().start()
        receivers = [local for shipped, local in self.addresses.items() if shipped.startswith("0.0.0.0:")]
        self.wait_listening(*receivers)
        return self


def validate(binaries: Mapping[str, Path], config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(binaries["crackle-otelcol"]), "validate", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)


# ----------------------------------------------------------------- gateway
_LISTENING = re.compile(r"listening on (?P<addresses>[^;\n]+)")


class Gateway(Process):
    """`crackle-otel serve` as a user runs it, on free ports; its stderr is the log."""

    def __init__(self, log_dir: Path, *args: str, name: str = "gateway", env: Mapping[str, str] | None = None,
                 http: bool = True) -> None:
        self.grpc_endpoint = f"127.0.0.1:{free_port()}"
        self.http_endpoint = f"127.0.0.1:{free_port()}" if http else None
        command = [sys.executable, "-m", "crackle_otel.cli", "serve", "--grpc-endpoint", self.grpc_endpoint,
                   "--http-endpoint", self.http_endpoint or "", "--self-metrics-interval", "0", *args]
        super().__init__(name, command, log_dir, env=env)

    def start(self) -> "Gateway":
        super().start()
        wait_until(lambda: self._alive_or_raise() and _LISTENING.search(self.log()), timeout=60,
                   what=f"{self.name} to listen")
        return self

    def health(self) -> dict:
        with urllib.request.urlopen(f"http://{self.http_endpoint}/health", timeout=10) as response:
            return json.load(response)

    def stop(self, timeout: float = 30.0) -> int | None:
        return super().stop(timeout)
