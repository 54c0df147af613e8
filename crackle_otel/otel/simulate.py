"""A small microservice system's traces, healthy or with a fault, as real SDK spans.

Tests, the quality benchmark and the demo need traffic that looks like what a
collector receives from a real system: traces across services, client spans
in the caller and server spans in the callee, heavy-tailed latency (log-normal
work with occasional stalls) and a workload mix. ``Traffic`` makes it; a
``Fault`` from some moment on slows one service's own work (CPU starvation) or
delays the network into one service (the callee's spans do not get longer;
only the caller waits). Spans come out in end order with explicit ids and
times, as a span processor sees them; ``replay`` feeds them to a processor and
cools it at every interval of *span* time.

The system::

    frontend  GET /product   -> catalog GetProduct -> SELECT products
              POST /checkout -> checkout PlaceOrder -> cart GetCart -> SELECT cart
                                                    -> payment Charge
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


@dataclass(frozen=True)
class Operation:
    """A server (or internal) operation: its own work, then calls to other operations in order."""

    service: str
    name: str
    work_ms: float  # median of its own work
    calls: tuple["Operation", ...] = ()
    internal: bool = False  # a span inside its service (a database query), not a served request


SELECT_PRODUCTS = Operation("catalog", "SELECT products", 2.0, internal=True)
SELECT_CART = Operation("cart", "SELECT cart", 1.5, internal=True)
GET_PRODUCT = Operation("catalog", "GetProduct", 1.0, (SELECT_PRODUCTS,))
GET_CART = Operation("cart", "GetCart", 0.8, (SELECT_CART,))
CHARGE = Operation("payment", "Charge", 6.0)
PLACE_ORDER = Operation("checkout", "PlaceOrder", 2.0, (GET_CART, CHARGE))
ENTRY_POINTS = (
    (Operation("frontend", "GET /product", 3.0, (GET_PRODUCT,)), 0.7),
    (Operation("frontend", "POST /checkout", 4.0, (PLACE_ORDER,)), 0.3),
)


@dataclass(frozen=True)
class Fault:
    """From ``at_s`` seconds into the traffic on: ``service``'s own work takes ``factor`` times as long
    (a CPU fault), or calls into it wait ``delay_ms`` longer on the network (``kind="network_delay"``)."""

    service: str
    at_s: float
    kind: str = "slow"  # "slow" or "network_delay"
    factor: float = 5.0
    delay_ms: float = 50.0


@dataclass
class Traffic:
    """``rate`` requests per second for ``seconds`` of span time from ``start_s``, with an optional fault."""

    seconds: float
    rate: float = 20.0
    seed: int = 0
    fault: Fault | None = None
    start_s: float = 1_790_000_000.0
    _rng: np.random.Generator = field(init=False, repr=False)
    _resources: dict[str, Resource] = field(default_factory=dict, init=False, repr=False)

    def spans(self) -> list[ReadableSpan]:
        """Every span of the traffic, in end order."""
        self._rng = np.random.default_rng(self.seed)
        spans: list[ReadableSpan] = []
        count = int(self.seconds * self.rate)
        arrivals = np.sort(self._rng.uniform(0, self.seconds, count))
        entries = [op for op, _ in ENTRY_POINTS]
        mix = np.array([share for _, share in ENTRY_POINTS])
        choices = self._rng.choice(len(entries), size=count, p=mix / mix.sum())
        for at, choice in zip(arrivals, choices):
            trace_id = int(self._rng.integers(1, 2**63)) << 64 | int(self._rng.integers(1, 2**63))
            self._serve(entries[choice], trace_id, 0, int((self.start_s + at) * 1e9), spans)
        spans.sort(key=lambda s: s.end_time)
        return spans

    # ------------------------------------------------------------- building
    def _serve(self, op: Operation, trace_id: int, parent_id: int, start_ns: int, out: list) -> int:
        """The span of ``op`` starting at ``start_ns`` and all below it; returns its end."""
        span_id = self._span_id()
        now = start_ns + self._work_ns(op, start_ns, share=0.5)
        for callee in op.calls:
            if callee.internal or callee.service == op.service:
                now = self._serve(callee, trace_id, span_id, now, out)
            else:
                now = self._call(op, callee, trace_id, span_id, now, out)
        end = now + self._work_ns(op, start_ns, share=0.5)
        kind = SpanKind.INTERNAL if op.internal else SpanKind.SERVER
        out.append(self._span(op.service, op.name, trace_id, span_id, parent_id, start_ns, end, kind))
        return end

    def _call(self, caller: Operation, callee: Operation, trace_id: int, parent_id: int, start_ns: int,
              out: list) -> int:
        """A client span in the caller around the network and the callee's server span."""
        client_id = self._span_id()
        server_start = start_ns + self._network_ns(callee, start_ns)
        server_end = self._serve(callee, trace_id, client_id, server_start, out)
        end = server_end + self._network_ns(callee, start_ns)
        name = f"{callee.service}/{callee.name}"
        out.append(self._span(caller.service, name, trace_id, client_id, parent_id, start_ns, end, SpanKind.CLIENT))
        return end

    def _work_ns(self, op: Operation, at_ns: int, share: float) -> int:
        ms = op.work_ms * share * self._rng.lognormal(0.0, 0.35)
        if self._rng.random() < 0.01:  # a stall now and then: GC, a cold cache
            ms *= self._rng.uniform(5, 30)
        fault = self.fault
        if fault is not None and fault.kind == "slow" and fault.service == op.service and self._faulty(at_ns):
            ms *= fault.factor
        return int(ms * 1e6)

    def _network_ns(self, callee: Operation, at_ns: int) -> int:
        ms = 0.4 * self._rng.lognormal(0.0, 0.3)
        fault = self.fault
        if fault is not None and fault.kind == "network_delay" and fault.service == callee.service and self._faulty(at_ns):
            ms += fault.delay_ms / 2 * self._rng.lognormal(0.0, 0.2)  # each way
        return int(ms * 1e6)

    def _faulty(self, at_ns: int) -> bool:
        return at_ns / 1e9 >= self.start_s + self.fault.at_s

    def _span_id(self) -> int:
        return int(self._rng.integers(1, 2**63))

    def _span(self, service: str, name: str, trace_id: int, span_id: int, parent_id: int, start_ns: int,
              end_ns: int, kind: SpanKind) -> ReadableSpan:
        resource = self._resources.get(service)
        if resource is None:
            resource = self._resources[service] = Resource({"service.name": service})
        return readable_span(name, trace_id, span_id, parent_id, start_ns, end_ns, resource, kind)


def readable_span(name: str, trace_id: int, span_id: int, parent_id: int, start_ns: int, end_ns: int,
                  resource: Resource, kind: SpanKind, attributes: dict | None = None) -> ReadableSpan:
    """An ended SDK span with the given ids and times (``parent_id`` 0: a root span)."""
    return ReadableSpan(
        name=name,
        context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=_SAMPLED),
        parent=SpanContext(trace_id, parent_id, is_remote=True, trace_flags=_SAMPLED) if parent_id else None,
        resource=resource,
        attributes=attributes,
        kind=kind,
        start_time=start_ns,
        end_time=end_ns,
    )


def replay(spans: Iterable[ReadableSpan], processor, interval_s: float | None = None) -> Iterator[float]:
    """Feed ``spans`` (end order) to ``processor``, cooling it every ``interval_s`` of span time.

    ``interval_s`` defaults to the processor's ``cool_interval_millis``. Yields the span
    time (Unix seconds) of each cool, after it ran; the last one follows the last span.
    """
    interval_ns = int((interval_s if interval_s is not None else processor.config.cool_interval_millis / 1000) * 1e9)
    next_cool = None
    for span in spans:
        if next_cool is None:
            next_cool = span.end_time + interval_ns
        while span.end_time >= next_cool:
            processor.cool_now()
            yield next_cool / 1e9
            next_cool += interval_ns
        processor.on_end(span)
    if next_cool is not None:
        processor.cool_now()
        yield next_cool / 1e9
