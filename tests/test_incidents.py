"""Incidents on microservice traffic: quiet while healthy, one located incident when a service breaks.

The traffic is otel/simulate.py's small shop (frontend -> checkout -> cart, payment; frontend -> catalog):
real SDK spans across services with heavy-tailed latency, fed to a real CrackleSpanProcessor at default
settings and cooled every interval of span time, as a live service would be. The call-graph measurements
(self time, call gaps) and the incident ranking are also checked on their own, on hand-built traces.
"""

from __future__ import annotations

import math
import time

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from crackle_otel import Pattern
from crackle_otel.incidents import CALL_GAP, DURATION, SELF_TIME, Change, GroupFacts, IncidentTracker
from crackle_otel.otel.calls import CallGraph
from crackle_otel.otel.extract import ExtractedSpan
from crackle_otel.otel.processor import CrackleSpanProcessor
from crackle_otel.otel.simulate import Fault, Traffic, replay
from crackle_otel.patterns import InvolvedTask, PatternKind
from otlp_sink import OTLPSink

SECONDS = 240.0
ONSET_S = 150.0


def run(fault: Fault | None, seed: int = 0) -> tuple[list[tuple[float, Pattern]], list, CrackleSpanProcessor]:
    """Replay the shop's traffic through a default processor; (seconds after start, pattern) as reported."""
    processor = CrackleSpanProcessor(None, max_queue_size=1_000_000, drain_batch_size=1_000_000)
    spans = Traffic(SECONDS, rate=20, seed=seed, fault=fault).spans()
    start = spans[0].end_time / 1e9
    reported: list[tuple[float, Pattern]] = []
    for now in replay(spans, processor):
        known = processor.reported_patterns()
        reported.extend((now - start, p) for p in known[len(reported):])
    processor.shutdown()
    return reported, spans, processor


def incidents(reported: list[tuple[float, Pattern]]) -> list[tuple[float, Pattern]]:
    return [(at, p) for at, p in reported if p.kind is PatternKind.INCIDENT]


def service_of_span(spans, identity: tuple[int, int]) -> str:
    by_identity = {(s.context.trace_id, s.context.span_id): s for s in spans}
    return by_identity[identity].resource.attributes["service.name"]


# --------------------------------------------------------------- end to end
@pytest.mark.parametrize("seed", [0, 1])
def test_healthy_heavy_tailed_traffic_is_quiet(seed):
    reported, spans, processor = run(None, seed=seed)
    # Stalls of 5-30x in 1% of the work, a two-route mix, four minutes: nothing is an incident.
    assert reported == [], [p.description for _, p in reported]
    assert processor.stats()["groups"] >= 10  # every operation and edge was analysed, not dropped


@pytest.mark.parametrize("factor", [3.0, 5.0])
def test_a_slow_callee_is_one_incident_whose_origin_is_the_callee(factor):
    reported, spans, _ = run(Fault("cart", at_s=ONSET_S, factor=factor))
    found = incidents(reported)
    assert len(found) == 1, [p.description for _, p in reported]
    at, incident = found[0]
    assert ONSET_S < at <= ONSET_S + 60  # within a minute of onset
    assert incident.explanation["origin.service"] == "cart"
    assert incident.explanation["origin.operation"] in {"GetCart", "SELECT cart"}
    assert incident.explanation["origins"].startswith("cart (")
    # Its callers slowed down too; they are named as affected, and their own phase transitions (also
    # frontend's, too small at x3 to be one of the incident's changes) are folded into the incident
    # rather than reported beside it.
    groups = incident.explanation["groups"].split(", ")
    assert any(g.startswith("checkout | ") for g in groups)
    if factor >= 5:
        assert any(g.startswith("frontend | ") for g in groups)
    assert [p.kind for _, p in reported] == [PatternKind.INCIDENT]
    assert "cart is the likely origin" in incident.description
    assert incident.statistics["origin_ratio"] == pytest.approx(factor, rel=0.25)
    assert math.isclose(incident.statistics["start_timestamp"], spans[0].end_time / 1e9 + ONSET_S, abs_tol=15)
    # Links: the origin's evidence spans are cart's spans after the onset; the affected ones its callers'.
    origin_links = [t for t in incident.involved if t.role == "origin"]
    affected_links = [t for t in incident.involved if t.role == "affected"]
    assert origin_links and affected_links
    assert {service_of_span(spans, t.identity) for t in origin_links} == {"cart"}
    assert {service_of_span(spans, t.identity) for t in affected_links} <= {"checkout", "frontend"}


def test_a_network_delay_names_the_callee_though_its_own_spans_did_not_change():
    reported, spans, _ = run(Fault("payment", at_s=ONSET_S, kind="network_delay", delay_ms=50.0))
    found = incidents(reported)
    assert len(found) == 1, [p.description for _, p in reported]
    at, incident = found[0]
    assert ONSET_S < at <= ONSET_S + 60
    assert incident.explanation["origin.service"] == "payment"
    assert incident.explanation["origin.operation"] == "calls from checkout to Charge"
    assert "calls into it from checkout wait" in incident.description
    # payment's own Charge spans are as fast as ever: only the caller-side gap moved.
    assert "payment | Charge" not in incident.explanation["groups"].split(", ")
    assert "checkout -> payment | Charge" in incident.explanation["groups"]


def test_the_gateway_finds_the_incident_in_spans_sent_over_real_otlp():
    from crackle_otel.gateway.service import GatewayService, GatewaySettings
    from crackle_otel.otel.config import CrackleConfig

    spans = Traffic(SECONDS, rate=20, seed=3, fault=Fault("cart", at_s=ONSET_S)).spans()
    with OTLPSink() as sink:
        settings = GatewaySettings(grpc_endpoint="127.0.0.1:0", http_endpoint=None, export_endpoint=sink.grpc_endpoint,
                                   export_protocol="grpc", self_metrics_interval_s=0)
        config = CrackleConfig.load({}, cool_interval_millis=3_600_000)  # cools when flushed
        gateway = GatewayService(settings, config)
        gateway.start()
        try:
            exporter = GrpcSpanExporter(endpoint=f"127.0.0.1:{gateway.grpc_port}", insecure=True)
            for first in range(0, len(spans), 2000):  # batches as a collector would send them
                assert exporter.export(spans[first:first + 2000]) is SpanExportResult.SUCCESS
            exporter.shutdown()
            deadline = time.monotonic() + 30
            while gateway.stats()["spans_seen"] < len(spans):
                assert time.monotonic() < deadline, gateway.stats()
                time.sleep(0.05)
            assert gateway.force_flush(timeout_s=60)
            pattern_spans = sink.wait_for_spans(lambda s: s.name == "crackle.pattern incident", count=1, timeout=15)
            events = sink.wait_for_log_records(lambda r: r.event_name == "crackle.pattern"
                                               and r.attributes.get("crackle.pattern.kind") == "incident", timeout=15)
        finally:
            gateway.stop(timeout_s=10)
    assert len(pattern_spans) == 1
    span = pattern_spans[0]
    assert span.attributes["crackle.pattern.why.origin.service"] == "cart"
    sent = {(s.context.trace_id, s.context.span_id) for s in spans}
    assert span.links and all((link.trace_id, link.span_id) in sent for link in span.links)
    assert events[0].attributes["crackle.pattern.why.origin.service"] == "cart"


# ------------------------------------------------------------ call graph
def extracted(service: str, name: str, span_id: int, parent: int, start_ms: float, end_ms: float,
              kind: str = "server", trace: int = 7) -> ExtractedSpan:
    return ExtractedSpan(label=name, group=f"{service} | {name}", timestamp_s=start_ms / 1000,
                         identity=(trace, span_id), metrics={DURATION: end_ms - start_ms}, service=service,
                         parent_span_id=parent, start_ns=int(start_ms * 1e6), end_ns=int(end_ms * 1e6), kind=kind)


def test_self_time_and_call_gap_from_parent_and_child_ids():
    graph = CallGraph()
    # checkout PlaceOrder [0, 100] -> client span [10, 90] -> payment Charge [30, 70] -> query [40, 60]
    query = extracted("payment", "SELECT", 4, 3, 40, 60, kind="internal")
    charge = extracted("payment", "Charge", 3, 2, 30, 70)
    client = extracted("checkout", "payment/Charge", 2, 1, 10, 90, kind="client")
    place = extracted("checkout", "PlaceOrder", 1, 0, 0, 100)
    assert graph.observe(query) == []
    assert graph.observe(charge) == []  # its caller's span has not ended yet
    assert charge.metrics[SELF_TIME] == pytest.approx(20.0)  # 40 ms minus its 20 ms query
    calls = graph.observe(client)
    assert [(c.group, c.metrics[CALL_GAP], c.identity) for c in calls] == [
        ("checkout -> payment | Charge", pytest.approx(40.0), (7, 2))]
    assert CALL_GAP not in client.metrics and SELF_TIME not in client.metrics  # no same-service child
    graph.observe(place)
    assert place.metrics[SELF_TIME] == pytest.approx(20.0)  # 100 ms minus the 80 ms client span
    assert graph.stats()["calls_joined"] == 1


def test_a_call_is_joined_whichever_side_arrives_first_and_waiting_is_bounded():
    graph = CallGraph(max_spans=2, max_age_s=60)
    client = extracted("frontend", "cart/GetCart", 2, 1, 0, 50, kind="client")
    server = extracted("cart", "GetCart", 3, 2, 5, 45)
    assert graph.observe(client) == []  # the callee's span comes later (another process exported it)
    assert [c.metrics[CALL_GAP] for c in graph.observe(server)] == [pytest.approx(10.0)]
    for orphan in range(10, 20):  # children whose parents never come: at most max_spans wait
        graph.observe(extracted("cart", "GetCart", orphan, 1000 + orphan, 0, 1))
    stats = graph.stats()
    assert stats["children_waiting"] <= 2 and stats["children_unmatched"] >= 8
    assert stats["spans_remembered"] <= 2


# ------------------------------------------------------------ ranking
FACTS = {
    "frontend | POST /checkout": GroupFacts("frontend", kind="server", calls_out=True),
    "checkout | PlaceOrder": GroupFacts("checkout", kind="server", calls_out=True),
    "frontend -> checkout | PlaceOrder": GroupFacts("checkout", caller="frontend"),
    "checkout -> cart | GetCart": GroupFacts("cart", caller="checkout"),
    "checkout -> payment | Charge": GroupFacts("payment", caller="checkout"),
    "cart | GetCart": GroupFacts("cart", kind="server", has_self_time=True),
    "payment | Charge": GroupFacts("payment", kind="server"),
}
CALLS = {("frontend", "checkout"), ("checkout", "cart"), ("checkout", "payment")}


def change(group: str, metric: str, before: float, after: float, at: float = 1000.0, seen: float = 1010.0):
    pattern = Pattern(kind=PatternKind.PHASE_TRANSITION, description="", confidence=1.0, metrics=(metric,),
                      involved=(InvolvedTask(group, "after", 0, at + 1, (1, hash(group) & 0xFFFF)),))
    return Change(group, metric, at, before, after, 1.0, pattern, pattern.involved, seen, seen)


def ranked(changes, now: float = 1010.0) -> list[str]:
    tracker = IncidentTracker()
    reports = tracker.update(changes, FACTS, CALLS, now)
    assert len(reports) == 1
    return [item.rsplit(" (", 1)[0] for item in reports[0].explanation["origins"].split(", ")]


def test_the_callee_whose_own_time_rose_outranks_its_slower_callers():
    origins = ranked([
        change("cart | GetCart", SELF_TIME, 2, 10),
        change("checkout | PlaceOrder", DURATION, 20, 60),  # an effect: its time went to its children
        change("frontend | POST /checkout", DURATION, 30, 70),
    ])
    assert origins == ["cart"]


def test_a_wait_on_one_edge_blames_the_callee():
    assert ranked([
        change("checkout -> payment | Charge", CALL_GAP, 1, 50),
        change("checkout | PlaceOrder", DURATION, 20, 70),
    ])[0] == "payment"


def test_a_caller_waiting_on_every_callee_is_starved_itself():
    # checkout's calls to cart and to payment both wait longer, their own time did not change:
    # the wait is on checkout's side (its thread pool, its host).
    origins = ranked([
        change("checkout -> cart | GetCart", CALL_GAP, 1, 30),
        change("checkout -> payment | Charge", CALL_GAP, 1, 30),
        change("checkout | PlaceOrder", SELF_TIME, 2, 20),
    ])
    assert origins[0] == "checkout"


def test_changes_far_apart_in_time_are_not_one_incident():
    tracker = IncidentTracker(window_s=60)
    first = tracker.update([change("cart | GetCart", SELF_TIME, 2, 10, at=1000, seen=1010)], FACTS, CALLS, 1010)
    later = tracker.update([change("payment | Charge", DURATION, 5, 40, at=1500, seen=1510)], FACTS, CALLS, 1510)
    assert first == [] and later == [] and tracker.open_incidents() == 0


def test_an_incident_is_reported_once_while_it_stands():
    tracker = IncidentTracker()
    changes = lambda now: [change("cart | GetCart", SELF_TIME, 2, 10, seen=now),  # noqa: E731
                           change("checkout | PlaceOrder", DURATION, 20, 60, seen=now)]
    assert len(tracker.update(changes(1010), FACTS, CALLS, 1010)) == 1
    for now in (1025, 1040, 1055):
        assert tracker.update(changes(now), FACTS, CALLS, now) == []


def test_a_reported_origin_stays_until_another_is_clearly_stronger():
    # cart is reported first; a wait on payment then rises within a few per cent of it (no new
    # report, cart still named first), and only a clearly stronger rise moves the origin.
    tracker = IncidentTracker()
    cart = lambda now: change("cart | GetCart", SELF_TIME, 1, 64, seen=now)  # noqa: E731
    first = tracker.update([cart(1010), change("checkout | PlaceOrder", DURATION, 30, 60, seen=1010)],
                           FACTS, CALLS, 1010)
    assert first[0].explanation["origins"].startswith("cart")
    near_tie = [cart(1025), change("checkout -> payment | Charge", CALL_GAP, 1, 66, seen=1025)]
    assert tracker.update(near_tie, FACTS, CALLS, 1025) == []
    clearly = [cart(1040), change("checkout -> payment | Charge", CALL_GAP, 1, 1000, seen=1040)]
    moved = tracker.update(clearly, FACTS, CALLS, 1040)
    assert len(moved) == 1 and moved[0].explanation["origins"].startswith("payment")
