"""A small shop service that degrades on demand, for watching crackle find what changed.

Zero-code (the intended way): run it under ``opentelemetry-instrument`` with
``CRACKLE_ENABLED=true``; opentelemetry-instrumentation-flask creates a server
span per request and crackle's post-instrument hook attaches its processor::

    CRACKLE_ENABLED=true CRACKLE_EXPORTER=console CRACKLE_COOL_INTERVAL_MILLIS=5000 \\
    OTEL_SERVICE_NAME=shop OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \\
    opentelemetry-instrument python examples/flask_app/app.py --port 5000

One-call alternative (no ``opentelemetry-instrument``): ``--configure`` makes the
app set up the SDK, instrument itself and call ``configure()``::

    python examples/flask_app/app.py --port 5000 --configure

which amounts to::

    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    trace.set_tracer_provider(provider)
    FlaskInstrumentor().instrument_app(app)
    crackle_otel.otel.setup.configure(provider, exporter="console")

What the endpoints do (all numbers go on the request's server span):

- ``GET /checkout``: reads a cart from a simulated database on one of 8 hosts
  (``db.time_ms``, ``cart.items``) and processes its records
  (``records_in`` = ``records_out`` + ``records_failed``). Host ``db-7`` is always
  3x slower: crackle names it (``[attribution] db.host=db-7: ...``).
- ``POST /admin/degrade`` (body ``on`` or ``off``): when on, database time grows
  ~2.5x (a latency shift) and checkouts start losing records
  (``records_in`` > ``records_out`` + ``records_failed``: the law breaks).
- ``GET /healthz``.

The server listens on loopback only and prints ``listening on http://127.0.0.1:PORT``
(``--port 0`` picks a free port). SIGTERM or Ctrl-C stops it cleanly, so the
SDK shuts down and crackle cools what is left and prints it.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import threading
import time

from flask import Flask, request
from opentelemetry import trace
from werkzeug.serving import make_server

HOSTS = tuple(f"db-{i}" for i in range(8))
SLOW_HOST = "db-7"
SEED = 7

app = Flask(__name__)


class ShopState:
    """The switch the load script flips, and a seeded random source shared by request threads."""

    def __init__(self) -> None:
        self.degraded = False
        self.lock = threading.Lock()
        self.rng = random.Random(SEED)

    def draw(self) -> tuple[str, float, int, int, int]:
        """(host, database ms, cart items, records failed, records lost) for one checkout."""
        with self.lock:  # random.Random is not safe to share between threads without it
            host = self.rng.choice(HOSTS)
            db_ms = self.rng.lognormvariate(1.6, 0.25)  # ~5 ms
            items = self.rng.randint(1, 8)
            failed = int(self.rng.random() < 0.1)
            lost = self.rng.randint(1, 5) if self.degraded else 0
            degraded = self.degraded
        if host == SLOW_HOST:
            db_ms *= 3.0
        if degraded:
            db_ms *= 2.5
        return host, db_ms, items, failed, lost


state = ShopState()


@app.get("/checkout")
def checkout():
    started = time.perf_counter()
    host, db_ms, items, failed, lost = state.draw()
    time.sleep(db_ms / 1000)  # the "database"
    records_in = items * 10
    records_failed = failed * items
    records_out = records_in - records_failed - lost
    # The server span of this request, created by opentelemetry-instrumentation-flask.
    trace.get_current_span().set_attributes(
        {
            "db.host": host,  # a string: grouping/explanation context, not a metric
            "db.time_ms": round((time.perf_counter() - started) * 1000, 3),
            "cart.items": items,
            "records_in": records_in,
            "records_out": records_out,
            "records_failed": records_failed,
        }
    )
    return {"host": host, "items": items, "records_out": records_out}


@app.post("/admin/degrade")
def degrade():
    wanted = request.get_data(as_text=True).strip().lower()
    if wanted not in ("on", "off"):
        return {"error": "body must be 'on' or 'off'"}, 400
    with state.lock:
        state.degraded = wanted == "on"
    return {"degraded": state.degraded}


@app.get("/healthz")
def healthz():
    return {"ok": True, "degraded": state.degraded}


def configure_in_code() -> None:
    """The one-call alternative to opentelemetry-instrument + CRACKLE_ENABLED."""
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from crackle_otel.otel.setup import configure

    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    trace.set_tracer_provider(provider)
    FlaskInstrumentor().instrument_app(app)
    configure(provider, exporter="console")  # other settings: keyword arguments or CRACKLE_* variables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A shop service that degrades on demand.")
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port")
    parser.add_argument("--configure", action="store_true", help="set up OTel + crackle in code (no opentelemetry-instrument)")
    args = parser.parse_args(argv)
    if args.configure:
        configure_in_code()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log per request

    server = make_server("127.0.0.1", args.port, app, threaded=True)

    def stop(signum, frame):
        # Leave serve_forever through a normal exception so the interpreter exits cleanly and
        # the SDK's atexit shutdown runs: crackle cools what it holds and prints it.
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        print("shop stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
