"""The real pipeline: the OpenTelemetry Collector with every shipped config, `crackle-otel serve`, Jaeger.

Instrumented apps (the real SDK, OTLP/gRPC) send to a collector built from tools/otelcol with one of
collector_config/*.yaml, run as shipped but for its addresses (loopback ports); gateways are
`crackle-otel serve` processes; Jaeger v2 all-in-one stores what arrives and answers its query API.
Each test checks what a user would: what Jaeger holds, what the gateways said, what the exit statuses were.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

from otlp_sink import OTLPSink
from pipeline_infra import (
    COLLECTOR_CONFIGS,
    Collector,
    Gateway,
    Jaeger,
    free_port,
    is_pattern_span,
    pattern_links,
    tags,
    validate,
    wait_until,
)
from workload import latency_shift, records_lost, send_with_sdk

pytestmark = pytest.mark.pipeline

CONFIGS = sorted(p.name for p in COLLECTOR_CONFIGS.glob("*.yaml"))
# Ten services: the load-balancing exporter's hash ring leaves both gateways empty-handed only
# with probability 2/1024.
SERVICES = tuple(f"svc-{name}" for name in ("cart", "checkout", "payments", "search", "ads", "email", "shipping",
                                            "currency", "quote", "ledger"))


def local_addresses(config_name: str, **known: str) -> dict[str, str]:
    """Every host:port the config names -> a loopback address (``known`` ones as given, others free ports)."""
    text = (COLLECTOR_CONFIGS / config_name).read_text()
    shipped = sorted(set(re.findall(r"(?<![\w.-])([A-Za-z0-9][\w.-]*:\d{2,5})(?!\d)", text)))
    return {address: known.get(address) or f"127.0.0.1:{free_port()}" for address in shipped}


def send(collector_address: str, services, workload) -> dict[str, set[tuple[int, int]]]:
    """Each service's spans through the real SDK to the collector; returns their identities by service."""
    return {service: send_with_sdk(OTLPSpanExporter(endpoint=collector_address, insecure=True), service, workload)
            for service in services}


def shift(rng):
    return lambda tracer: _identities(lambda ids: latency_shift(tracer, ids, rng, name="GET /items", n=400))


def shift_and_loss(rng):
    def workload(tracer):
        return _identities(lambda ids: (latency_shift(tracer, ids, rng, name="GET /items", n=400),
                                        records_lost(tracer, ids, rng, name="process batch", n=600)))
    return workload


def _identities(fill) -> set[tuple[int, int]]:
    identities: set[tuple[int, int]] = set()
    fill(identities)
    return identities


def hex_ids(identities) -> set[tuple[str, str]]:
    return {(f"{trace:032x}", f"{span:016x}") for trace, span in identities}


def jaeger_ids(span: dict) -> tuple[str, str]:
    return span["traceID"].rjust(32, "0"), span["spanID"].rjust(16, "0")


def stop_gateway(gateway: Gateway) -> tuple[int | None, str]:
    status = gateway.stop(timeout=60)
    return status, gateway.log()


# ------------------------------------------------------------ every config
@pytest.mark.parametrize("config_name", CONFIGS)
def test_every_shipped_config_passes_the_real_validate_and_starts(pipeline_binaries, tmp_path, config_name):
    checked = validate(pipeline_binaries, COLLECTOR_CONFIGS / config_name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with Collector(pipeline_binaries, config_name, tmp_path, local_addresses(config_name)) as collector:
        time.sleep(1.0)  # a config that fails late (a bad exporter) exits by now
        assert collector.process.poll() is None, collector.log()
        assert "Everything is ready" in collector.log()
    assert collector.process.returncode == 0, collector.log()


def test_validate_refuses_a_component_the_distribution_does_not_have(pipeline_binaries, tmp_path):
    config = tmp_path / "kafka.yaml"
    config.write_text((COLLECTOR_CONFIGS / "inline.yaml").read_text().replace("otlp_grpc/crackle", "kafka/crackle"))
    checked = validate(pipeline_binaries, config)
    assert checked.returncode != 0 and "kafka" in checked.stdout + checked.stderr


# ----------------------------------------------------- scale-out for real
def test_load_balancing_scale_out_two_gateways_jaeger_and_the_file_exporter(pipeline_binaries, tmp_path):
    spans_file = tmp_path / "pipeline-spans.jsonl"
    with Jaeger(pipeline_binaries, tmp_path) as jaeger:
        # An hour between cools: each gateway cools once, at SIGTERM, over all it received (as analyze does).
        gateways = [Gateway(tmp_path, "--export-endpoint", jaeger.otlp_grpc, "--cool-interval", "3600",
                            name=f"gateway-{n}", env={"OTEL_SERVICE_NAME": f"crackle-gateway-{n}"})
                    for n in (1, 2)]
        for gateway in gateways:
            gateway.start()
        addresses = local_addresses("load_balancing.yaml", **{
            "crackle-gateway-1:4317": gateways[0].grpc_endpoint,
            "crackle-gateway-2:4317": gateways[1].grpc_endpoint,
            "jaeger:4317": jaeger.otlp_grpc,
        })
        # The file exporter beside them, merged in by the collector: what the pipeline carried, for analyze.
        file_export = (f"yaml:exporters::file/pipeline::path: {spans_file}",
                       "yaml:service::pipelines::traces::exporters: "
                       "[otlp_grpc/backend, load_balancing/crackle, file/pipeline]")
        with Collector(pipeline_binaries, "load_balancing.yaml", tmp_path, addresses, extra_configs=file_export):
            rng = np.random.default_rng(3)
            sent = send(addresses["0.0.0.0:4317"], SERVICES[:2], shift_and_loss(rng))
            sent |= send(addresses["0.0.0.0:4317"], SERVICES[2:], shift(rng))
            total = sum(len(ids) for ids in sent.values())
            wait_until(lambda: sum(g.health()["stats"]["spans_received"] for g in gateways) >= total, timeout=60,
                   what="the gateways to receive every span")
            received = [g.health()["stats"]["spans_received"] for g in gateways]
        outcomes = [stop_gateway(g) for g in gateways]

        # Each gateway saw whole services, and between them all of them.
        assert sum(received) == total and all(received), received
        for status, log in outcomes:
            assert status == 0, log
            assert re.search(r"listening on grpc 127\.0\.0\.1:\d+, http 127\.0\.0\.1:\d+; patterns to "
                             rf"http://{jaeger.otlp_grpc} \(grpc\)", log), log
            assert re.search(r"cooled \d+ groups? in [\d.]+ s: \d+ patterns? found, \d+ reported", log), log
        # Jaeger holds the workload (from the collector) and the pattern spans (from the gateways).
        for service, identities in sent.items():
            held = {jaeger_ids(span) for span in jaeger.wait_for_spans(service, count=len(identities))}
            assert hex_ids(identities) <= held, service
        found_by = {}
        for n, (_, log) in enumerate(outcomes, start=1):
            reported = int(re.search(r"(\d+) patterns? reported", log).group(1))
            patterns = jaeger.wait_for_spans(f"crackle-gateway-{n}", is_pattern_span, count=reported)
            assert len(patterns) == reported
            # Jaeger takes no logs: the crackle.pattern events are refused, and said to be.
            assert re.search(rf"{reported} of {reported} patterns? exported as spans and 0 as events "
                             rf"\({reported} events? dropped\)", log), log
            found_by[n] = {group.split(" | ")[0] for group in groups_named(patterns)}
            # Every link of a pattern span resolves to a span Jaeger holds.
            links = [link for span in patterns for link in pattern_links(span)]
            assert links and all(jaeger.holds_span(*link) for link in links)
        assert not found_by[1] & found_by[2], found_by  # no service split between gateways
        assert found_by[1] | found_by[2] == set(SERVICES)
        gateway_patterns = findings(
            (tags(span)["crackle.pattern.group"], tags(span)["crackle.pattern.kind"],
             tags(span).get("crackle.pattern.why.groups", ""))
            for n in (1, 2) for span in jaeger.spans(f"crackle-gateway-{n}") if is_pattern_span(span))

    # The file exporter wrote what the pipeline carried; analyze finds there what the gateways found.
    analyzed = subprocess.run([sys.executable, "-m", "crackle_otel.cli", "analyze", "--json", str(spans_file)],
                              capture_output=True, text=True, timeout=300)
    assert analyzed.returncode == 0, analyzed.stderr
    assert f"{total:,} spans" in analyzed.stderr
    offline = findings((p["group"], p["kind"], p["explanation"].get("groups", ""))
                       for p in map(json.loads, analyzed.stdout.splitlines()))
    assert offline == gateway_patterns


def groups_named(pattern_spans) -> set[str]:
    """The groups pattern spans name: each its own, an incident also every group it covers."""
    return {group for span in pattern_spans
            for group in [tags(span)["crackle.pattern.group"],
                          *filter(None, tags(span).get("crackle.pattern.why.groups", "").split(", "))]}


def findings(patterns) -> set[tuple[str, str]]:
    """(group, kind) of each pattern; a phase transition as (group, "changed"), an incident so for every
    group it covers.

    One analysis of every service can tie changes of services the gateways saw apart into
    one incident (with one origin), where a gateway that saw one of them alone reports its
    phase transition: the groups found changing are what must agree.
    """
    found = set()
    for group, kind, covered in patterns:
        if kind == "incident":
            found |= {(name, "changed") for name in covered.split(", ") if name}
        elif kind == "phase_transition":
            found.add((group, "changed"))
        else:
            found.add((group, kind))
    return found


# ------------------------------------------------------ inline, side branch
def test_inline_forwards_every_span_unchanged_and_adds_linked_patterns(pipeline_binaries, tmp_path):
    with Jaeger(pipeline_binaries, tmp_path) as jaeger, \
            Gateway(tmp_path, "--export-endpoint", jaeger.otlp_grpc, "--pass-through",
                    "--cool-interval", "3600") as gateway:
        addresses = local_addresses("inline.yaml", **{"crackle-gateway:4317": gateway.grpc_endpoint})
        with Collector(pipeline_binaries, "inline.yaml", tmp_path, addresses):
            sent = send(addresses["0.0.0.0:4317"], SERVICES[:3], shift(np.random.default_rng(4)))
            total = sum(len(ids) for ids in sent.values())
            wait_until(lambda: gateway.health()["stats"]["pass_through_spans_forwarded"] >= total, timeout=60,
                   what="the gateway to forward every span")
        status, log = stop_gateway(gateway)
        assert status == 0, log
        assert f"every received span forwarded to {jaeger.otlp_grpc}" in log
        assert f"{total} spans forwarded, 0 failed, 0 dropped" in log
        for service, identities in sent.items():
            held = jaeger.wait_for_spans(service, count=len(identities))
            assert {jaeger_ids(span) for span in held} == hex_ids(identities)
            # Unchanged: the SDK's attributes and the workload's own ones, on the right span names.
            assert {span["operationName"] for span in held} == {"GET /items"}
            assert all("items" in tags(span) for span in held)
            assert all(span["process"]["serviceName"] == service for span in held)
        reported = int(re.search(r"(\d+) patterns? reported", log).group(1))
        patterns = jaeger.wait_for_spans("crackle-otel-gateway", is_pattern_span, count=reported)
        assert groups_named(patterns) >= {f"{s} | GET /items" for s in sent}
        links = [link for span in patterns for link in pattern_links(span)]
        assert links and all(jaeger.holds_span(*link) for link in links)


def test_side_branch_routes_findings_back_and_never_delays_the_main_path(pipeline_binaries, tmp_path):
    with Jaeger(pipeline_binaries, tmp_path) as jaeger, OTLPSink() as logs_backend:
        patterns_receiver = f"127.0.0.1:{free_port()}"
        gateway = Gateway(tmp_path, "--export-endpoint", patterns_receiver, "--cool-interval", "3600").start()
        addresses = local_addresses("side_branch.yaml", **{
            "crackle-gateway:4317": gateway.grpc_endpoint,
            "jaeger:4317": jaeger.otlp_grpc,
            "0.0.0.0:4319": patterns_receiver,
            "logs-backend:4318": logs_backend.http_endpoint.split("://")[-1],
        })
        with Collector(pipeline_binaries, "side_branch.yaml", tmp_path, addresses):
            sent = send(addresses["0.0.0.0:4317"], SERVICES[:2], shift(np.random.default_rng(5)))
            total = sum(len(ids) for ids in sent.values())
            wait_until(lambda: gateway.health()["stats"]["spans_received"] >= total, timeout=60,
                   what="the gateway")
            status, log = stop_gateway(gateway)  # final cool: patterns go back through the collector
            assert status == 0, log
            reported = int(re.search(r"(\d+) patterns? reported", log).group(1))
            assert re.search(rf"{reported} of {reported} patterns? exported as spans and {reported} as events\n", log), log
            # Pattern spans reach Jaeger and crackle.pattern events the logs backend, via the collector.
            patterns = jaeger.wait_for_spans("crackle-otel-gateway", is_pattern_span, count=reported)
            events = logs_backend.wait_for_log_records(lambda r: r.event_name == "crackle.pattern", count=reported)
            assert {e.span_id for e in events} == {int(span["spanID"], 16) for span in patterns}
            links = [link for span in patterns for link in pattern_links(span)]
            assert links and all(jaeger.holds_span(*link) for link in links)

            # The gateway is gone now: the main path does not wait for it.
            started = time.monotonic()
            late = send(addresses["0.0.0.0:4317"], ("svc-late",), shift(np.random.default_rng(6)))
            held = jaeger.wait_for_spans("svc-late", count=len(late["svc-late"]), timeout=15)
            assert time.monotonic() - started < 10, "spans waited for the stopped gateway"
            assert {jaeger_ids(span) for span in held} == hex_ids(late["svc-late"])


# ----------------------------------------------------- a backend goes down
def test_a_backend_that_goes_down_mid_run_blocks_nothing_and_every_summary_says_so(pipeline_binaries, tmp_path):
    jaeger = Jaeger(pipeline_binaries, tmp_path).start()
    try:
        gateway = Gateway(tmp_path, "--export-endpoint", jaeger.otlp_grpc, "--pass-through", "--cool-interval",
                          "3600", "--shutdown-timeout", "15", env={"CRACKLE_EXPORT_TIMEOUT_MILLIS": "2000"}).start()
        addresses = local_addresses("inline.yaml", **{"crackle-gateway:4317": gateway.grpc_endpoint})
        with Collector(pipeline_binaries, "inline.yaml", tmp_path, addresses):
            rng = np.random.default_rng(7)
            before = send(addresses["0.0.0.0:4317"], SERVICES[:1], shift(rng))[SERVICES[0]]
            wait_until(lambda: gateway.health()["stats"]["pass_through_spans_forwarded"] >= len(before), timeout=60,
                   what="the first spans to be forwarded")
            assert len(jaeger.wait_for_spans(SERVICES[0], count=len(before))) == len(before)
            assert gateway.health()["status"] == "ok"
            jaeger.stop()

            started = time.monotonic()  # the app's exports do not wait for the dead backend
            after = send(addresses["0.0.0.0:4317"], SERVICES[1:2], shift(rng))[SERVICES[1]]
            assert time.monotonic() - started < 10
            health = wait_until(lambda: (h := gateway.health())["status"] == "degraded" and h, timeout=90,
                   what="/health to say degraded")
            assert health["stats"]["pass_through_spans_forwarded"] == len(before)
            wait_until(lambda: (s := gateway.health()["stats"])["pass_through_spans_failed"]
                       + s["pass_through_spans_dropped"] >= len(after), timeout=90,
                   what="the lost forwards to be counted")
        status, log = stop_gateway(gateway)
    finally:
        jaeger.stop()
    # The final cool's line and the stop line count what was forwarded and what was lost ...
    cool_line = next(line for line in log.splitlines() if "cooled" in line)
    stop_line = next(line for line in log.splitlines() if "stopped;" in line)
    for line in (cool_line, stop_line):
        forwarded, failed, dropped = map(int, re.search(r"(\d+) spans forwarded, (\d+) failed, (\d+) dropped",
                                                        line).groups())
        assert forwarded == len(before) and failed + dropped == len(after), line
    assert re.search(r"0 of (\d+) patterns? exported as spans and 0 as events \(\1 patterns? dropped", stop_line)
    # ... and as no pattern reached the backend, the exit status says so.
    assert status == 1 and f"no pattern reached {jaeger.otlp_grpc}" in log, log
