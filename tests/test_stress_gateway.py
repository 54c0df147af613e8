"""Stress: the OTLP receiver under stalled, slow, flooding and unauthenticated clients.

- gRPC calls that send headers and hold back their message neither block other exports
  nor live forever (per-call deadline);
- the queue is bounded in bytes, with back-pressure (429 / RESOURCE_EXHAUSTED) when full;
- the HTTP server takes a burst of connections (normal backlog), caps open connections,
  and closes connections whose headers trickle in (no thread per connection);
- bearer token and mutual TLS keep strangers out; certificate problems say so.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from crackle_otel.gateway.auth import TLSConfigError
from otlp_sink import OTLPSink
from test_receiver import TRACE_EXPORT, post, trace_request, wait_until


def held_back_call(channel: grpc.Channel, release: threading.Event, results: list) -> None:
    """A call that sends its headers, then holds back its one message until ``release``."""
    def messages():
        release.wait(30)
        yield trace_request("late").SerializeToString()

    try:
        channel.stream_unary(TRACE_EXPORT)(messages(), timeout=30)
        results.append(grpc.StatusCode.OK)
    except grpc.RpcError as error:
        results.append(error.code())


def test_stalled_grpc_calls_neither_block_others_nor_live_forever():
    with OTLPSink(http_endpoint=None, request_timeout_s=1.5) as sink:
        release, results = threading.Event(), []
        with grpc.insecure_channel(sink.grpc_endpoint) as stalled_channel:
            stalled = [threading.Thread(target=held_back_call, args=(stalled_channel, release, results))
                       for _ in range(64)]
            for thread in stalled:
                thread.start()
            time.sleep(0.3)  # all 64 calls are open and waiting for their message
            with grpc.insecure_channel(sink.grpc_endpoint) as channel:
                started = time.monotonic()
                for i in range(5):
                    TraceServiceStub(channel).Export(trace_request(f"ok-{i}"), timeout=5)
                took = time.monotonic() - started
            for thread in stalled:
                thread.join(10)
        release.set()
    assert took < 1.0, f"5 exports beside 64 stalled calls took {took:.2f} s"
    assert results == [grpc.StatusCode.DEADLINE_EXCEEDED] * 64  # each gave up after request_timeout_s
    assert sink.receiver.stats()["rejected_timeout"] == 64
    assert len(sink.spans()) == 5


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_the_queue_is_bounded_in_bytes_with_back_pressure(transport):
    request = trace_request("big", attribute_bytes=300 * 1024).SerializeToString()
    with OTLPSink(max_queue_bytes=1024 * 1024, max_queue_size=100, partial_success_wait_s=0) as sink:
        sink.pause()  # the consumer holds the first request: the rest wait in the queue
        outcomes = []
        with grpc.insecure_channel(sink.grpc_endpoint) as channel:
            for _ in range(6):
                if transport == "http":
                    outcomes.append(post(sink.receiver.http_port, "/v1/traces", request)[0])
                else:
                    try:
                        channel.unary_unary(TRACE_EXPORT)(request, timeout=5)
                        outcomes.append(200)
                    except grpc.RpcError as error:
                        outcomes.append(error.code())
                stats = sink.receiver.stats()
                assert stats["queue_bytes"] <= 1024 * 1024
        refused = 429 if transport == "http" else grpc.StatusCode.RESOURCE_EXHAUSTED
        assert outcomes[:3] == [200] * 3 and outcomes[3:] == [refused] * 3  # 3 x 300 KiB fit in 1 MiB
        assert sink.receiver.stats()["rejected_full"] == 3
        sink.resume()
        assert len(sink.wait_for_spans(count=3)) == 3
        wait_until(lambda: sink.receiver.stats()["queue_bytes"] == 0)


def test_a_burst_of_connections_is_not_reset():
    with OTLPSink(grpc_endpoint=None) as sink:
        port = sink.receiver.http_port
        body = trace_request("burst").SerializeToString()
        with ThreadPoolExecutor(200) as pool:
            statuses = list(pool.map(lambda _: post(port, "/v1/traces", body)[0], range(200)))
    assert statuses == [200] * 200


def trickle(port: int, stop: threading.Event, closed: list) -> None:
    """A client that sends its headers one byte at a time, forever (slowloris)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            for byte in b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n" * 100:
                if stop.is_set():
                    return
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
    except OSError:
        closed.append(1)


def test_trickling_clients_hold_no_threads_and_are_cut_off():
    with OTLPSink(grpc_endpoint=None, max_connections=40, header_timeout_s=1.0) as sink:
        port = sink.receiver.http_port
        threads_before = threading.active_count()
        stop, closed = threading.Event(), []
        tricklers = [threading.Thread(target=trickle, args=(port, stop, closed), daemon=True) for _ in range(60)]
        for thread in tricklers:
            thread.start()
        time.sleep(0.5)
        stats = sink.receiver.stats()
        # The receiver's own threads did not grow with the connections (the tricklers are ours: 60).
        assert threading.active_count() - threads_before <= 60 + 2
        assert stats["connections_open"] <= 40 and stats["connections_refused"] >= 20
        for thread in tricklers:
            thread.join(5)  # the header deadline closes every trickler within ~1 s
        assert len(closed) == 60
        stop.set()
        assert post(port, "/v1/traces", trace_request("after").SerializeToString())[0] == 200


def test_bearer_token_is_required_on_both_transports():
    with OTLPSink(auth_token="s3cret") as sink:
        provider = TracerProvider()
        for exporter in (GrpcSpanExporter(endpoint=sink.grpc_endpoint, insecure=True, timeout=5,
                                          headers={"authorization": "Bearer s3cret"}),
                         HttpSpanExporter(endpoint=sink.traces_url, timeout=5,
                                          headers={"Authorization": "Bearer s3cret"})):
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        provider.get_tracer("t").start_span("allowed").end()
        assert len(sink.wait_for_spans(count=2)) == 2

        with grpc.insecure_channel(sink.grpc_endpoint) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                TraceServiceStub(channel).Export(trace_request("stranger"), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        status, headers, _ = post(sink.receiver.http_port, "/v1/traces", trace_request("stranger").SerializeToString())
        assert status == 401 and {k.lower(): v for k, v in headers.items()}["www-authenticate"] == "Bearer"
        assert sink.receiver.stats()["rejected_unauthenticated"] == 2
        assert len(sink.spans()) == 2
        provider.shutdown()


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", "1",
            "-subj", "/CN=test-ca")
    for name, extra in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", *ec, "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"), "-subj", f"/CN={name}")
        (d / f"{name}.ext").write_text(extra + "\n")
        openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                "-CAcreateserial", "-out", str(d / f"{name}.pem"), "-days", "1", "-extfile", str(d / f"{name}.ext"))
    return d


def test_mutual_tls_admits_only_clients_with_a_certificate(pki):
    tls = dict(tls_cert_file=str(pki / "server.pem"), tls_key_file=str(pki / "server.key"),
               tls_client_ca_file=str(pki / "ca.pem"))
    with OTLPSink(**tls) as sink:
        ca, cert, key = ((pki / name).read_bytes() for name in ("ca.pem", "client.pem", "client.key"))
        with grpc.secure_channel(sink.grpc_endpoint, grpc.ssl_channel_credentials(ca, key, cert)) as channel:
            TraceServiceStub(channel).Export(trace_request("with-cert"), timeout=5)
        with grpc.secure_channel(sink.grpc_endpoint, grpc.ssl_channel_credentials(ca)) as channel:
            with pytest.raises(grpc.RpcError):
                TraceServiceStub(channel).Export(trace_request("without-cert"), timeout=5)
        context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
        connection = http.client.HTTPSConnection("127.0.0.1", sink.receiver.http_port, context=context, timeout=5)
        connection.request("POST", "/v1/traces", body=trace_request("with-cert-http").SerializeToString(),
                           headers={"Content-Type": "application/x-protobuf"})
        assert connection.getresponse().status == 200
        connection.close()
        anonymous = http.client.HTTPSConnection("127.0.0.1", sink.receiver.http_port, timeout=5,
                                                context=ssl.create_default_context(cafile=str(pki / "ca.pem")))
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            anonymous.request("POST", "/v1/traces", body=b"", headers={"Content-Type": "application/x-protobuf"})
            anonymous.getresponse()
        assert {s.name for s in sink.wait_for_spans(count=2)} == {"with-cert", "with-cert-http"}


def test_certificate_problems_are_reported_as_such(pki, tmp_path):
    mismatched = dict(tls_cert_file=str(pki / "server.pem"), tls_key_file=str(pki / "client.key"))
    with pytest.raises(TLSConfigError, match="does not belong to certificate"):
        OTLPSink(**mismatched).start()
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TLSConfigError, match="cannot be loaded"):
        OTLPSink(tls_cert_file=str(garbage), tls_key_file=str(pki / "server.key"), http_endpoint=None).start()
    with pytest.raises(TLSConfigError, match="missing.pem"):
        OTLPSink(tls_cert_file=str(tmp_path / "missing.pem"), tls_key_file=str(pki / "server.key")).start()
    serve = subprocess.run(
        [sys.executable, "-m", "crackle_otel.cli", "serve", "--grpc-endpoint", "127.0.0.1:0", "--http-endpoint",
         "127.0.0.1:0", "--exporter", "none", "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "client.key")],
        capture_output=True, text=True, timeout=60)
    assert serve.returncode == 2
    assert "does not belong to certificate" in serve.stderr and "bind" not in serve.stderr


def test_the_pass_through_backlog_is_bounded_in_bytes_too():
    from crackle_otel.gateway.forward import Downstream, PassThrough

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    forwarder = PassThrough(Downstream.parse(dead, "grpc"), max_queue_size=64, max_queue_bytes=1 << 20, block_s=0.2)
    request = trace_request("big", attribute_bytes=400 * 1024)
    try:
        outcomes = [forwarder.submit(request, 1) for _ in range(6)]
        stats = forwarder.stats()
        assert stats["queue_bytes"] <= 1 << 20  # 2 x 400 KiB wait; the sender holds one more
        assert outcomes.count(False) == stats["requests_dropped"] >= 2
    finally:
        forwarder.shutdown(0.5)
