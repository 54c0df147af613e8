"""`crackle-otel serve`: an OTLP endpoint that cools what it receives and exports the patterns.

    receiver (OTLP/gRPC + OTLP/HTTP, bounded queue, back-pressure)
      -> one consumer thread: RequestFeeder (from_proto_span, group by service + span name)
           -> Furnace (a kiln per group)          -> [PassThrough: the same request, downstream]
      -> cooler thread: every cool_interval (or when a group filled up) Furnace.cool()
           -> PatternEmitter (pattern spans with links + crackle.pattern events) -> downstream

Stop (SIGTERM/SIGINT under ``run_serve``): refuse new requests, consume what
was accepted, cool every group, emit, flush the emitter and the pass-through,
exit 0 — all bounded by ``shutdown_timeout_s``.

Configuration: ``GatewaySettings.load(**overrides)`` (transport, downstream,
pass-through; ``CRACKLE_GATEWAY_*`` variables) plus ``CrackleConfig.load``
(analysis: ``CRACKLE_PROFILE``, ``CRACKLE_KILN_CAPACITY``, ``CRACKLE_GROUP_BY``,
``CRACKLE_COOL_INTERVAL_MILLIS`` ... shared with the span processor).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

from opentelemetry.sdk.resources import Resource

from ..otel.config import CrackleConfig, CrackleConfigError, parse_boolean
from ..otel.delivery import SUMMARY_KEYS, Delivery, delivery_counters
from ..otel.extract import ExtractionRules
from ..otel.furnace import Emitter, Furnace
from ..otel.selfmetrics import register_self_metrics
from ..patterns import Pattern
from ..report.findings import FindingLedger
from ..report.live import LivePatterns
from .defaults import DEFAULT_GRPC_ENDPOINT, DEFAULT_HTTP_ENDPOINT
from .feed import RequestFeeder
from .forward import Downstream, PassThrough
from .own_metrics import COUNTERS, GAUGES
from .auth import read_token_file
from .receiver import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_QUEUE_BYTES,
    DEFAULT_MAX_QUEUE_SIZE,
    OTLPReceiver,
)

logger = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "crackle-otel-gateway"
PROTOCOLS = ("grpc", "http/protobuf")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "::", ""})
LIVE_FINDINGS = 500  # findings the live page can show (the least recently seen are forgotten first)


@dataclass(frozen=True)
class GatewaySettings:
    """Transport, downstream and pass-through settings of the gateway (analysis lives in CrackleConfig).

    | keyword                   | environment variable                        | default          |
    |---------------------------|---------------------------------------------|------------------|
    | grpc_endpoint             | CRACKLE_GATEWAY_GRPC_ENDPOINT ("" = off)     | 127.0.0.1:4317   |
    | http_endpoint             | CRACKLE_GATEWAY_HTTP_ENDPOINT ("" = off)     | 127.0.0.1:4318   |
    | tls_cert_file, tls_key_file | CRACKLE_GATEWAY_TLS_CERT_FILE / _KEY_FILE | (plain text)     |
    | tls_client_ca_file        | CRACKLE_GATEWAY_TLS_CLIENT_CA_FILE (mTLS)   | (no client certs)|
    | auth_token_file           | CRACKLE_GATEWAY_AUTH_TOKEN_FILE             | (no token)       |
    | auth_token                | CRACKLE_GATEWAY_AUTH_TOKEN                  | (no token)       |
    | export_endpoint           | CRACKLE_GATEWAY_EXPORT_ENDPOINT, then OTEL_EXPORTER_OTLP_ENDPOINT | —  |
    | export_protocol           | CRACKLE_GATEWAY_EXPORT_PROTOCOL, then OTEL_EXPORTER_OTLP_PROTOCOL | grpc |
    | pass_through              | CRACKLE_GATEWAY_PASS_THROUGH                 | false            |
    | pass_through_queue_size   | CRACKLE_GATEWAY_PASS_THROUGH_QUEUE_SIZE      | 64 (requests)    |
    | max_queue_size            | CRACKLE_GATEWAY_MAX_QUEUE_SIZE               | 128 (requests)   |
    | max_queue_bytes           | CRACKLE_GATEWAY_MAX_QUEUE_BYTES              | 64 MiB           |
    | max_message_bytes         | CRACKLE_GATEWAY_MAX_MESSAGE_BYTES            | 4 MiB            |
    | max_connections           | CRACKLE_GATEWAY_MAX_CONNECTIONS (HTTP conns, gRPC calls) | 512   |
    | request_timeout_s         | CRACKLE_GATEWAY_REQUEST_TIMEOUT_S (gRPC: until the message arrived) | 10 |
    | header_timeout_s          | CRACKLE_GATEWAY_HEADER_TIMEOUT_S (HTTP headers; idle keep-alive) | 10 |
    | body_timeout_s            | CRACKLE_GATEWAY_BODY_TIMEOUT_S (HTTP body)   | 30               |
    | self_metrics_interval_s   | CRACKLE_GATEWAY_SELF_METRICS_INTERVAL_S (0 = off) | 60          |
    | shutdown_timeout_s        | CRACKLE_GATEWAY_SHUTDOWN_TIMEOUT_S           | 10               |
    """

    grpc_endpoint: str | None = DEFAULT_GRPC_ENDPOINT
    http_endpoint: str | None = DEFAULT_HTTP_ENDPOINT
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None
    auth_token_file: str | None = None
    auth_token: str | None = None
    export_endpoint: str | None = None
    export_protocol: str = "grpc"
    pass_through: bool = False
    pass_through_queue_size: int = 64
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    request_timeout_s: float = 10.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    self_metrics_interval_s: float = 60.0
    shutdown_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.export_protocol not in PROTOCOLS:
            raise CrackleConfigError(f"export_protocol={self.export_protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        for name in ("pass_through_queue_size", "max_queue_size", "max_queue_bytes", "max_message_bytes",
                     "max_connections"):
            if getattr(self, name) < 1:
                raise CrackleConfigError(f"{name}={getattr(self, name)!r}: expected a positive integer")
        for name in ("request_timeout_s", "header_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise CrackleConfigError(f"{name}={getattr(self, name)!r}: expected a positive number of seconds")
        if self.auth_token_file and self.auth_token:
            raise CrackleConfigError("give the bearer token once: auth_token_file or auth_token")
        if self.self_metrics_interval_s < 0 or self.shutdown_timeout_s < 0:
            raise CrackleConfigError("self_metrics_interval_s and shutdown_timeout_s must be >= 0")
        if self.pass_through and not self.export_endpoint:
            raise CrackleConfigError("pass_through needs an export_endpoint to forward to")

    def token(self) -> str | None:
        """The bearer token senders must present, if any (read from ``auth_token_file``)."""
        if self.auth_token_file:
            try:
                return read_token_file(self.auth_token_file)
            except ValueError as error:
                raise CrackleConfigError(str(error)) from None
        return self.auth_token or None

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "GatewaySettings":
        """Keyword arguments (None = not given), else CRACKLE_GATEWAY_* variables, else defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in fields(cls):
            given = overrides.pop(spec.name, None)
            if given is not None:
                values[spec.name] = given
                continue
            raw = environ.get(f"CRACKLE_GATEWAY_{spec.name.upper()}")
            if raw is not None and (raw.strip() or spec.name.endswith("_endpoint")):
                values[spec.name] = _parse(spec.name, raw.strip())
        if overrides:
            raise CrackleConfigError(f"unknown gateway setting(s): {', '.join(sorted(overrides))}")
        for name in ("grpc_endpoint", "http_endpoint"):
            if values.get(name) == "":
                values[name] = None  # "" turns a transport off
        if not values.get("export_endpoint"):
            values["export_endpoint"] = (environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                                         or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None)
        if "export_protocol" not in values:
            protocol = environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
            if protocol:
                values["export_protocol"] = protocol
        return cls(**values)


def _parse(name: str, raw: str) -> Any:
    kind = {spec.name: spec.type for spec in fields(GatewaySettings)}[name]
    try:
        if kind == "bool":
            return parse_boolean(raw, f"CRACKLE_GATEWAY_{name.upper()}")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise CrackleConfigError(f"CRACKLE_GATEWAY_{name.upper()}={raw!r}: expected a {kind}") from None
    return raw


def _is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


def with_scheme(endpoint: str) -> str:
    """``host:port`` -> ``http://host:port`` (plain text), as the OTLP exporters expect a URL."""
    return endpoint if "://" in endpoint else f"http://{endpoint}"


class _GatewayReceiver(OTLPReceiver):
    """The receiver whose health endpoint reports the whole gateway's counters."""

    def __init__(self, gateway: "GatewayService", consumer: Any, **kwargs: Any) -> None:
        self._gateway = gateway
        super().__init__(consumer, **kwargs)

    def receiver_stats(self) -> dict[str, int]:
        return super().stats()

    def stats(self) -> dict[str, Any]:  # read by the health endpoint
        return self._gateway.stats()


class _Consumer:
    """The receiver's consumer: feed the furnace, wake the cooler when a group filled up, forward."""

    def __init__(self, gateway: "GatewayService") -> None:
        self._gateway = gateway

    def consume_traces(self, request: Any) -> Any:
        gateway = self._gateway
        spans = gateway.feeder.feed_traces(request)
        if gateway.furnace.has_filled_groups:
            gateway._wake.set()
        if gateway.pass_through is not None and not gateway.pass_through.submit(request, spans):
            return spans, "crackle gateway: downstream backlog full; spans analysed but not forwarded"
        return None

    def consume_metrics(self, request: Any) -> None:
        self._gateway.feeder.feed_metrics(request)


class GatewayService:
    """The running gateway. ``emitter`` overrides the one ``config.exporter`` would build."""

    def __init__(
        self,
        settings: GatewaySettings | None = None,
        config: CrackleConfig | None = None,
        *,
        emitter: Emitter | None = None,
        meter_provider: Any = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        #: Where the gateway's one-line reports go (start, every cool): the log by default.
        self.report = report if report is not None else logger.info
        self.settings = settings if settings is not None else GatewaySettings.load()
        self.config = config if config is not None else CrackleConfig.load()
        self.resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME})
        self.emitter = emitter if emitter is not None else self._build_emitter()
        # Every cool's findings, latest first, with their plot data: the live page on the HTTP port.
        self.findings = FindingLedger(keep="latest", max_findings=LIVE_FINDINGS,
                                      max_involved=self.config.profile.max_involved)
        self.furnace = Furnace(self.config, self.emitter, observer=self.findings)
        self.live = LivePatterns(self.findings, self.stats)
        self.feeder = RequestFeeder(
            self.furnace,
            ExtractionRules(allow=self.config.attributes_allow, deny=self.config.attributes_deny,
                            group_by=self.config.group_by),
            max_metric_streams=self.config.max_groups * self.config.max_metrics_per_group,
        )
        self.pass_through: PassThrough | None = None
        self.receiver = _GatewayReceiver(
            self,
            _Consumer(self),
            grpc_endpoint=self.settings.grpc_endpoint,
            http_endpoint=self.settings.http_endpoint,
            max_queue_size=self.settings.max_queue_size,
            max_queue_bytes=self.settings.max_queue_bytes,
            max_message_bytes=self.settings.max_message_bytes,
            max_connections=self.settings.max_connections,
            tls_cert_file=self.settings.tls_cert_file,
            tls_key_file=self.settings.tls_key_file,
            tls_client_ca_file=self.settings.tls_client_ca_file,
            auth_token=self.settings.token(),
            request_timeout_s=self.settings.request_timeout_s,
            header_timeout_s=self.settings.header_timeout_s,
            body_timeout_s=self.settings.body_timeout_s,
            pages=self.live.pages(),
        )
        self._meter_provider = meter_provider
        self._own_meter_provider: Any = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cooler = threading.Thread(target=self._run_cooler, name="crackle-gateway-cooler", daemon=True)
        self._stop_lock = threading.Lock()
        self._stopped = False

    # ------------------------------------------------------------ construction
    def _build_emitter(self) -> Emitter | None:
        from ..otel.setup import build_emitter

        endpoint = self.settings.export_endpoint
        if self.config.exporter == "otlp" and not endpoint:
            raise CrackleConfigError(
                "no downstream for the patterns: pass --export-endpoint URL (or set OTEL_EXPORTER_OTLP_ENDPOINT), "
                "or --exporter console"
            )
        return build_emitter(self.config, self.resource, endpoint=with_scheme(endpoint) if endpoint else None,
                             protocol=self.settings.export_protocol)

    def _start_own_metrics(self) -> None:
        provider = self._meter_provider
        if provider is None:
            if (self.config.exporter != "otlp" or not self.settings.export_endpoint
                    or self.settings.self_metrics_interval_s <= 0):
                return
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            reader = PeriodicExportingMetricReader(
                _otlp_metric_exporter(self.settings.export_endpoint, self.settings.export_protocol),
                export_interval_millis=self.settings.self_metrics_interval_s * 1000,
            )
            provider = self._own_meter_provider = MeterProvider(
                resource=self.resource, metric_readers=[reader], shutdown_on_exit=False
            )
        register_self_metrics(self.stats, provider, counters=COUNTERS, gauges=GAUGES)

    # --------------------------------------------------------------- lifecycle
    def start(self) -> "GatewayService":
        if self.settings.pass_through:
            downstream = Downstream.parse(self.settings.export_endpoint or "", self.settings.export_protocol)
            self.pass_through = PassThrough(downstream, max_queue_size=self.settings.pass_through_queue_size)
        self.receiver.start()
        sends_downstream = self.pass_through is not None or self.config.exporter == "otlp"
        if sends_downstream and self.settings.export_endpoint:
            downstream = Downstream.parse(self.settings.export_endpoint, self.settings.export_protocol)
            if self._forwards_to_itself(downstream):
                self.stop(timeout_s=1.0)
                what = "every span" if self.pass_through is not None else "its patterns (which it then skips)"
                raise CrackleConfigError(
                    f"--export-endpoint {self.settings.export_endpoint} is this gateway's own listen address: it would "
                    f"send {what} back to itself; listen elsewhere (--grpc-endpoint/--http-endpoint) or export elsewhere"
                )
        self._cooler.start()
        self._start_own_metrics()
        self.report(f"listening on {self.listen_addresses()}; {self.export_target()}; "
                    f"cooling every {self.config.cool_interval_millis / 1000:g} s")
        for endpoint in self.open_endpoints():
            logger.warning("crackle gateway: %s is reachable beyond this host and accepts spans from anyone; "
                           "require a bearer token (--auth-token-file) and/or client certificates "
                           "(--tls-client-ca)", endpoint)
        return self

    def open_endpoints(self) -> list[str]:
        """Listen addresses beyond loopback that require no authentication."""
        if self.receiver.authenticated:
            return []
        endpoints = (self.settings.grpc_endpoint, self.settings.http_endpoint)
        return [e for e in endpoints if e is not None and not _is_loopback(e.rpartition(":")[0].strip("[]"))]

    def listen_addresses(self) -> str:
        """E.g. 'grpc 127.0.0.1:4317, http 127.0.0.1:4318' (the ports really bound)."""
        return ", ".join(
            f"{name} {endpoint.rpartition(':')[0]}:{port}"
            for name, endpoint, port in (("grpc", self.settings.grpc_endpoint, self.grpc_port),
                                         ("http", self.settings.http_endpoint, self.http_port))
            if endpoint is not None
        )

    def export_target(self) -> str:
        """Where patterns (and forwarded spans) go, in words."""
        if self.config.exporter == "console":
            target = "patterns to the console"
        elif self.config.exporter == "none" or self.emitter is None:
            target = "patterns not exported (--exporter none)"
        else:
            target = f"patterns to {with_scheme(self.settings.export_endpoint or '')} ({self.settings.export_protocol})"
        if self.pass_through is not None:
            target += f", every received span forwarded to {self.pass_through.downstream.target}"
        return target

    def _forwards_to_itself(self, downstream: Downstream) -> bool:
        target = downstream.target if downstream.protocol == "grpc" else downstream.target.split("://", 1)[1]
        host, _, port = target.split("/", 1)[0].rpartition(":")
        own_ports = {self.grpc_port, self.http_port} - {None}
        return host.strip("[]") in _LOOPBACK_HOSTS and port.isdigit() and int(port) in own_ports

    @property
    def grpc_port(self) -> int | None:
        return self.receiver.grpc_port

    @property
    def http_port(self) -> int | None:
        return self.receiver.http_port

    def _run_cooler(self) -> None:
        interval = self.config.cool_interval_millis / 1000
        next_cool = time.monotonic() + interval
        while not self._stopping.is_set():
            self._wake.wait(max(0.0, next_cool - time.monotonic()))
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                if time.monotonic() >= next_cool:
                    self.cool()
                    next_cool = time.monotonic() + interval
                else:
                    self.cool(only_filled=True)
            except Exception:  # the cooler must survive anything
                logger.exception("crackle gateway cooler: unexpected error")

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every accepted request is consumed, cool every group now, flush the emitter."""
        deadline = time.monotonic() + timeout_s
        while True:
            counters = self.receiver.receiver_stats()
            if counters["requests_consumed"] >= counters["requests_accepted"]:
                break
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        self.cool(deadline=deadline, final=True)
        if self.emitter is None:
            return True
        return bool(self.emitter.force_flush(max(0, int((deadline - time.monotonic()) * 1000))))

    def stop(self, timeout_s: float | None = None) -> bool:
        """Stop accepting, consume what was accepted, cool, emit, flush; bounded by ``timeout_s``. Idempotent."""
        with self._stop_lock:
            if self._stopped:
                return True
            self._stopped = True
        timeout_s = self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s

        def remaining() -> float:
            return max(0.0, deadline - time.monotonic())

        # The receiver gets half the budget to drain its queue; cooling and exporting need the rest.
        drained = self.receiver.stop(grace_s=remaining() / 2)
        self._stopping.set()
        self._wake.set()
        if self._cooler.is_alive():
            self._cooler.join(remaining())
        try:
            self.cool(deadline=deadline, final=True)
        except Exception:
            logger.exception("crackle gateway: final cool failed")
        forwarded = True
        if self.pass_through is not None:
            forwarded = self.pass_through.shutdown(remaining() / 2)
        if self.emitter is not None:
            try:
                self.emitter.shutdown(int(remaining() * 1000))
            except Exception:
                logger.exception("crackle gateway: emitter shutdown failed")
        if self._own_meter_provider is not None:
            try:
                self._own_meter_provider.shutdown(timeout_millis=max(100.0, remaining() * 1000))
            except Exception:
                logger.debug("crackle gateway: meter provider shutdown failed", exc_info=True)
        return drained and forwarded

    def __enter__(self) -> "GatewayService":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- reading
    def stats(self) -> dict[str, Any]:
        """Receiver, analysis, emitter and pass-through counters in one flat dict (also the health body)."""
        stats: dict[str, Any] = dict(self.receiver.receiver_stats())
        stats.update(self.feeder.stats())
        analysis = self.furnace.stats()
        stats.update(analysis)
        stats.update(delivery_counters(self.emitter, analysis, SUMMARY_KEYS))  # SUMMARY_KEYS: for Delivery.of
        forwarded = self.pass_through.stats() if self.pass_through is not None else {}
        for key in ("requests_forwarded", "spans_forwarded", "requests_failed", "spans_failed",
                    "requests_dropped", "spans_dropped", "retries", "queue_depth", "failing"):
            stats[f"pass_through_{key}"] = int(forwarded.get(key, 0))
        # Serving, but the latest export or forward failed: /health says "degraded" while this is 1.
        stats["degraded"] = int(bool(stats["consecutive_export_failures"] or stats["pass_through_failing"]))
        return stats

    def cool(self, *, only_filled: bool = False, deadline: float = math.inf, final: bool = False) -> list[Pattern]:
        """Cool (see ``Furnace.cool``) and report one line on what it found and what was delivered so far."""
        before = self.furnace.stats()
        reported = self.furnace.cool(only_filled=only_filled, deadline=deadline, final=final)
        after = self.furnace.stats()
        groups = after["group_cools"] - before["group_cools"]
        if groups:
            found = after["patterns_detected"] - before["patterns_detected"]
            self.report(f"cooled {groups} group{_s(groups)} in {after['cool_seconds_last']:.2f} s: {found} "
                        f"pattern{_s(found)} found, {len(reported)} reported; {self.delivery_so_far()}")
        return reported

    def delivery_so_far(self) -> str:
        """What left the gateway until now, e.g. '3 pattern spans and 3 events exported, 0 failed'."""
        stats = self.stats()
        if self.config.exporter == "console":
            text = f"{stats['patterns_exported']} patterns printed"
        elif self.emitter is None:
            text = "patterns not exported"
        else:
            text = Delivery.of(stats).describe()
        if self.pass_through is not None:
            text += (f"; {stats['pass_through_spans_forwarded']} spans forwarded, "
                     f"{stats['pass_through_spans_failed']} failed, {stats['pass_through_spans_dropped']} dropped")
        return text

    def undelivered(self) -> list[str]:
        """What was to go downstream and never arrived at all (the exit status says so): e.g. ['no pattern']."""
        stats = self.stats()
        missing = []
        if self.emitter is not None and self.config.exporter == "otlp" and Delivery.of(stats).nothing_delivered:
            missing.append("no pattern")
        lost = stats["pass_through_spans_failed"] + stats["pass_through_spans_dropped"]
        if self.pass_through is not None and lost > 0 and stats["pass_through_spans_forwarded"] == 0:
            missing.append("no forwarded span")
        return missing


def _otlp_metric_exporter(endpoint: str, protocol: str) -> Any:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=with_scheme(endpoint))
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HTTPMetricExporter

    url = with_scheme(endpoint)
    if not url.split("://", 1)[1].partition("/")[2].strip("/"):
        url = url.rstrip("/") + "/v1/metrics"
    return HTTPMetricExporter(endpoint=url)


# --------------------------------------------------------------------- the command
def run_serve(args: argparse.Namespace) -> int:
    """`crackle-otel serve`: run until SIGTERM/SIGINT, then shut down cleanly.

    Exit status 0, or 1 when nothing that was to go downstream (patterns, forwarded spans) arrived there.
    """
    try:
        settings = GatewaySettings.load(
            grpc_endpoint=args.grpc_endpoint,
            http_endpoint=args.http_endpoint,
            tls_cert_file=args.tls_cert,
            tls_key_file=args.tls_key,
            tls_client_ca_file=args.tls_client_ca,
            auth_token_file=args.auth_token_file,
            export_endpoint=args.export_endpoint,
            export_protocol=args.export_protocol,
            pass_through=True if args.pass_through else None,
            max_queue_size=args.max_queue_size,
            max_queue_bytes=args.max_queue_bytes,
            max_connections=args.max_connections,
            self_metrics_interval_s=args.self_metrics_interval,
            shutdown_timeout_s=args.shutdown_timeout,
        )
        config = CrackleConfig.load(**analysis_overrides(args))
        service = GatewayService(settings, config, report=_print_line)
    except (CrackleConfigError, ValueError) as error:
        print(f"crackle-otel serve: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            service.start()
        except (CrackleConfigError, OSError, ValueError) as error:  # ValueError: TLSConfigError among others
            print(f"crackle-otel serve: {error}", file=sys.stderr)
            return 2
        while not stop.wait(0.5):
            pass
        print("crackle-otel serve: stopping (cooling what was received)", file=sys.stderr, flush=True)
        clean = service.stop()
        stats = service.stats()
        print(
            f"crackle-otel serve: stopped; {stats['spans_received']} spans received, {stats['tasks_recorded']} "
            f"tasks analysed in {stats['groups']} groups, {stats['patterns_reported']} patterns reported; "
            f"{service.delivery_so_far()}"
            + ("" if clean else " (shutdown timeout reached: some requests or spans were not handled)"),
            file=sys.stderr,
            flush=True,
        )
        missing = service.undelivered()
        if missing:
            print(f"crackle-otel serve: {' and '.join(missing)} reached {service.settings.export_endpoint}",
                  file=sys.stderr, flush=True)
            return 1
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _print_line(line: str) -> None:
    print(f"crackle-otel serve: {line}", file=sys.stderr, flush=True)


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def analysis_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The CrackleConfig keywords the CLI's analysis options set (None = leave to CRACKLE_* / defaults)."""
    return {
        "profile": getattr(args, "profile", None),
        "group_by": getattr(args, "group_by", None),
        "kiln_capacity": getattr(args, "kiln_capacity", None),
        "max_groups": getattr(args, "max_groups", None),
        "cool_interval_millis": (
            int(args.cool_interval * 1000) if getattr(args, "cool_interval", None) is not None else None
        ),
        "exporter": getattr(args, "exporter", None),
    }
