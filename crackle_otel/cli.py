"""The `crackle-otel` command: demo, serve (OTLP gateway), analyze (span files)."""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def _serve(args: argparse.Namespace) -> int:
    from .gateway.service import run_serve

    return run_serve(args)


def _analyze(args: argparse.Namespace) -> int:
    from .gateway.analyze import run_analyze

    return run_analyze(args)


def positive_int(text: str) -> int:
    """argparse type of a count (at least 1): the CLI's and the benchmarks'."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_analysis_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by serve and analyze; unset ones fall back to CRACKLE_* variables, then defaults."""
    group = parser.add_argument_group("analysis (default: CRACKLE_* variables, then built-in defaults)")
    group.add_argument("--profile", choices=("fast", "default", "slow"), help="cooling profile (CRACKLE_PROFILE)")
    group.add_argument("--group-by", metavar="ATTRS",
                       help="comma-separated attributes grouping spans (default service.name,span.name)")
    group.add_argument("--kiln-capacity", type=int, metavar="N", help="spans kept per group (a sliding window)")
    group.add_argument("--max-groups", type=int, metavar="N", help="groups analysed; spans of further groups are counted")


def _add_export_options(parser: argparse.ArgumentParser, what: str, default: str) -> None:
    parser.add_argument("--export-endpoint", metavar="URL",
                        help=f"OTLP endpoint receiving {what}, e.g. http://jaeger:4317 ({default})")
    parser.add_argument("--export-protocol", choices=("grpc", "http/protobuf"),
                        help="OTLP protocol of --export-endpoint (default OTEL_EXPORTER_OTLP_PROTOCOL, then grpc)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crackle-otel", description="Emergent patterns in OpenTelemetry telemetry.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument("--version", action="version", version=f"crackle-otel {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    from .demo import add_arguments as add_demo_arguments

    demo = commands.add_parser("demo", help="run a built-in instrumented workload through crackle, print the patterns")
    add_demo_arguments(demo)
    demo.set_defaults(handler=_demo)

    serve = commands.add_parser(
        "serve", help="OTLP gateway: receive spans (and metrics) over OTLP, export the patterns found in them")
    serve.add_argument("--grpc-endpoint", metavar="HOST:PORT",
                       help="OTLP/gRPC listen address (default 127.0.0.1:4317; '' turns gRPC off)")
    serve.add_argument("--http-endpoint", metavar="HOST:PORT",
                       help="OTLP/HTTP listen address (default 127.0.0.1:4318; '' turns HTTP off)")
    serve.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate chain (PEM)")
    serve.add_argument("--tls-key", metavar="FILE", help="private key of --tls-cert (PEM)")
    serve.add_argument("--tls-client-ca", metavar="FILE",
                       help="mutual TLS: require client certificates signed by this CA (PEM; needs --tls-cert)")
    serve.add_argument("--auth-token-file", metavar="FILE",
                       help="require 'authorization: Bearer <token>' on every export; the token is this file's "
                            "content (or CRACKLE_GATEWAY_AUTH_TOKEN)")
    _add_export_options(serve, "the pattern spans and events (and forwarded spans)",
                        "default OTEL_EXPORTER_OTLP_ENDPOINT")
    serve.add_argument("--exporter", choices=("otlp", "console", "none"),
                       help="where patterns go: OTLP to --export-endpoint (default), stdout, or nowhere")
    serve.add_argument("--pass-through", action="store_true",
                       help="also forward every received span unchanged to --export-endpoint (sit inline)")
    serve.add_argument("--max-queue-size", type=int, metavar="N",
                       help="export requests queued before senders are told to retry (default 128)")
    serve.add_argument("--max-queue-bytes", type=int, metavar="BYTES",
                       help="bytes of requests accepted and not yet analysed before senders are told to retry "
                            "(default 64 MiB)")
    serve.add_argument("--max-connections", type=int, metavar="N",
                       help="open HTTP connections and gRPC calls in flight (default 512)")
    serve.add_argument("--cool-interval", type=float, metavar="SECONDS",
                       help="cool every group with new spans this often (default 60)")
    serve.add_argument("--self-metrics-interval", type=float, metavar="SECONDS",
                       help="export the gateway's own counters as OTel metrics this often (default 60; 0 = off)")
    serve.add_argument("--shutdown-timeout", type=float, metavar="SECONDS",
                       help="on SIGTERM, time to drain, cool, emit and flush (default 10)")
    _add_analysis_options(serve)
    serve.set_defaults(handler=_serve)

    analyze = commands.add_parser(
        "analyze", help="find patterns in span files (collector file exporter: OTLP JSON lines or proto)")
    analyze.add_argument("files", nargs="+", metavar="FILE",
                         help="OTLP JSON lines, length-prefixed OTLP protobuf or one protobuf request; may be .gz")
    analyze.add_argument("--json", action="store_true", help="print one JSON object per pattern")
    analyze.add_argument("--report", metavar="FILE.html",
                         help="also write a self-contained HTML report with a plot of every pattern "
                              "(needs the report extra: pip install 'crackle-otel[report]')")
    _add_export_options(analyze, "the patterns as spans and events", "optional")
    analyze.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                         help="progress line on stderr (default: on a terminal, for inputs of 16 MiB or more)")
    analyze.add_argument("--max-record-bytes", type=int, metavar="BYTES",
                         help="longest record (JSON line, protobuf frame) read; longer ones are skipped and "
                              "reported with their line number (default 16 MiB): memory stays bounded")
    analyze.add_argument("--jobs", type=positive_int, metavar="N",
                         help="processes that analyse: this one reads and records spans, N-1 others run the "
                              "detectors of each cooled window; same findings as 1 (default: the usable cores)")
    _add_analysis_options(analyze)
    analyze.set_defaults(handler=_analyze)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
