"""Where `crackle-otel serve` listens by default: the standard OTLP ports, on loopback.

Loopback keeps a fresh gateway private; in a collector pipeline, bind 0.0.0.0
(see collector_config/). The ports are OTLP's own, so a collector exporter or a
load-balancing resolver needs no port of its own for the gateway.
"""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_GRPC_PORT = 4317
DEFAULT_HTTP_PORT = 4318
DEFAULT_GRPC_ENDPOINT = f"{DEFAULT_HOST}:{DEFAULT_GRPC_PORT}"
DEFAULT_HTTP_ENDPOINT = f"{DEFAULT_HOST}:{DEFAULT_HTTP_PORT}"
