"""OTLP/HTTP transport on the standard library's ThreadingHTTPServer.

POST /v1/traces, /v1/metrics, /v1/logs with application/x-protobuf or
application/json bodies (optionally gzip), answered in the request's content
type; errors carry a google.rpc.Status body as the OTLP/HTTP spec asks.
GET <health_path> reports status and counters as JSON. Other read-only GET pages
(the live pattern view) are plugged in as ``HttpSettings.pages``: path -> a
callable returning a ``Page``.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import socketserver
import ssl
import time
import zlib
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Mapping, NamedTuple
from urllib.parse import urlsplit

from google.protobuf.message import DecodeError, Message

from .intake import Intake
from .otlp_json import OTLPJSONError, message_to_otlp_json, parse_otlp_json
from .rpc_status import (
    CODE_INVALID_ARGUMENT,
    CODE_RESOURCE_EXHAUSTED,
    CODE_UNAVAILABLE,
    CODE_UNIMPLEMENTED,
    status_proto,
)
from .signals import SIGNALS_BY_PATH, Signal

logger = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
_MAX_DISCARD_BYTES = 64 * 1024 * 1024  # the SDK exporters' own request limit
_DISCARD_TIMEOUT_S = 2.0
JSON = "application/json"


class Page(NamedTuple):
    """A read-only GET answer: body, content type, extra headers."""

    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class HttpSettings:
    endpoint: str
    max_message_bytes: int
    retry_after_s: float
    health_path: str = "/health"
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    pages: Mapping[str, Callable[[], Page]] = field(default_factory=dict)  # path -> read-only GET page


class _TooLarge(Exception):
    pass


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port)."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"endpoint must look like host:port, got {endpoint!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def gunzip_limited(data: bytes, limit: int) -> bytes:
    """Decompress gzip without ever holding more than limit + 1 bytes (zip bombs)."""
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(data, limit + 1)
    except zlib.error as error:
        raise ValueError(f"bad gzip body: {error}") from None
    if len(out) > limit:
        raise _TooLarge()
    if not decompressor.eof:
        raise ValueError("truncated gzip body")
    return out


class OTLPHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, settings: HttpSettings, intake: Intake, stats: Callable[[], dict[str, int]]) -> None:
        host, port = split_endpoint(settings.endpoint)
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.settings = settings
        self.intake = intake
        self.stats = stats
        try:
            super().__init__((host, port), _OTLPRequestHandler)
        except OSError as error:  # say which address: "[Errno 98] Address already in use" alone names none
            named = OSError(f"cannot bind OTLP/HTTP endpoint {settings.endpoint}: {error.strerror or error}")
            named.errno = error.errno
            raise named from None
        if settings.tls_cert_file:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
            # Handshake later, in the connection's own thread (see setup()),
            # so one slow client cannot stall accept().
            self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); not needed.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request, client_address) -> None:
        logger.debug("OTLP/HTTP connection from %s failed", client_address, exc_info=True)


class _OTLPRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as OTLP exporters expect
    server_version = "crackle-otel"
    timeout = 60  # idle keep-alive connections end eventually
    server: OTLPHTTPServer

    def setup(self) -> None:
        super().setup()
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
        logger.debug("%s " + format, self.address_string(), *args)

    # -- routes --------------------------------------------------------------
    def handle_expect_100(self) -> bool:
        # Refuse an oversized body before the client sends it.
        declared = self.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.server.settings.max_message_bytes:
            signal = SIGNALS_BY_PATH.get(urlsplit(self.path).path)
            self._refuse_oversized(signal, self._response_type(), int(declared), close=True)
            return False
        return super().handle_expect_100()

    def do_GET(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if path in SIGNALS_BY_PATH:
            self._send_status(HTTPStatus.METHOD_NOT_ALLOWED, CODE_UNIMPLEMENTED, "use POST", JSON,
                              headers=[("Allow", "POST")])
            return
        page = self.server.settings.pages.get(path)
        if page is not None:
            self._send_page(page)
            return
        if path != self.server.settings.health_path:
            self._send_status(HTTPStatus.NOT_FOUND, CODE_UNIMPLEMENTED, "no such path", JSON)
            return
        serving = self.server.intake.accepting
        stats = self.server.stats()
        # Degraded: still serving (so still 200), but the latest export downstream failed.
        status = ("degraded" if stats.get("degraded") else "ok") if serving else "stopping"
        body = json.dumps({"status": status, "stats": stats}).encode()
        self._send(HTTPStatus.OK if serving else HTTPStatus.SERVICE_UNAVAILABLE, body, JSON)

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        signal = SIGNALS_BY_PATH.get(path)
        if signal is None:
            allowed = path == self.server.settings.health_path or path in self.server.settings.pages
            self._refuse_unread(HTTPStatus.METHOD_NOT_ALLOWED if allowed else HTTPStatus.NOT_FOUND,
                                "use GET" if allowed else "no such path", JSON)
            return
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type not in (PROTOBUF, JSON):
            self._refuse_unread(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"Content-Type must be {PROTOBUF} or {JSON}", JSON)
            return
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
        if encoding not in ("identity", "gzip"):
            self._refuse_unread(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "Content-Encoding must be gzip or absent", content_type)
            return
        body = self._read_body(signal, content_type)
        if body is None:
            return
        if encoding == "gzip":
            try:
                body = gunzip_limited(body, self.server.settings.max_message_bytes)
            except _TooLarge:
                self._refuse_oversized(signal, content_type, None, close=False)
                return
            except ValueError as error:
                self._refuse_malformed(signal, content_type, error)
                return
        try:
            request = self._decode(signal, content_type, body)
        except (DecodeError, OTLPJSONError, ValueError) as error:
            self._refuse_malformed(signal, content_type, error)
            return
        self._answer(signal, content_type, self.server.intake.submit(signal, request))

    def _send_page(self, page: Callable[[], Page]) -> None:
        try:
            answer = page()
        except Exception:
            logger.exception("OTLP/HTTP: page %s failed", self.path)
            self._send_status(HTTPStatus.INTERNAL_SERVER_ERROR, CODE_UNAVAILABLE, "page failed", JSON)
            return
        # Read-only pages of our own: nothing may frame them or load from elsewhere.
        headers = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"), *answer.headers)
        self._send(HTTPStatus.OK, answer.body, answer.content_type, headers=headers)

    # -- pieces --------------------------------------------------------------
    def _read_body(self, signal: Signal, content_type: str) -> bytes | None:
        limit = self.server.settings.max_message_bytes
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            # Chunked bodies are not supported; OTLP exporters send a length.
            self._send_status(HTTPStatus.LENGTH_REQUIRED, CODE_INVALID_ARGUMENT, "Content-Length required",
                              content_type, close=True)
            return None
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError(length_header)
        except ValueError:
            self._refuse_malformed(signal, content_type, f"bad Content-Length {length_header!r}", close=True)
            return None
        if length > limit:
            self._refuse_oversized(signal, content_type, length, close=True)
            self._discard_body(length)
            return None
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            self.server.intake.note_malformed("http", signal, "body shorter than Content-Length")
            return None
        return body

    def _response_type(self) -> str:
        requested = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        return requested if requested in (PROTOBUF, JSON) else JSON

    def _refuse_unread(self, http_status: HTTPStatus, message: str, content_type: str) -> None:
        """Answer a request whose body we will not decode, then close the connection."""
        code = CODE_UNIMPLEMENTED if http_status in (HTTPStatus.NOT_FOUND, HTTPStatus.METHOD_NOT_ALLOWED) \
            else CODE_INVALID_ARGUMENT
        self._send_status(http_status, code, message, content_type, close=True)
        declared = self.headers.get("Content-Length", "")
        if declared.isdigit():
            self._discard_body(int(declared))

    def _discard_body(self, length: int) -> None:
        # Closing with unread bytes makes the kernel send RST, which can destroy
        # the 413 before the client reads it; swallow a bounded amount first.
        remaining = min(length, _MAX_DISCARD_BYTES)
        deadline = time.monotonic() + _DISCARD_TIMEOUT_S
        try:
            self.connection.settimeout(_DISCARD_TIMEOUT_S)
            while remaining > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read(min(65536, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass

    @staticmethod
    def _decode(signal: Signal, content_type: str, body: bytes) -> Message:
        if content_type == JSON:
            return parse_otlp_json(body, signal.request_type)
        return signal.request_type.FromString(body)

    def _answer(self, signal: Signal, content_type: str, verdict) -> None:
        if verdict.accepted:
            response = signal.response(verdict.rejected_items, verdict.message)
            self._send(HTTPStatus.OK, _encode(response, content_type), content_type)
            return
        retry_after = [("Retry-After", str(max(1, math.ceil(self.server.settings.retry_after_s))))]
        if verdict.refusal == "full":
            self._send_status(HTTPStatus.TOO_MANY_REQUESTS, CODE_RESOURCE_EXHAUSTED, "receiver queue is full, retry later",
                              content_type, headers=retry_after, retry_delay_s=self.server.settings.retry_after_s)
        else:
            self._send_status(HTTPStatus.SERVICE_UNAVAILABLE, CODE_UNAVAILABLE, "receiver is shutting down",
                              content_type, headers=retry_after, retry_delay_s=self.server.settings.retry_after_s,
                              close=True)

    def _refuse_malformed(self, signal: Signal, content_type: str, error: object, close: bool = False) -> None:
        self.server.intake.note_malformed("http", signal, error)
        message = f"malformed {signal.request_type.__name__}: {error}"
        self._send_status(HTTPStatus.BAD_REQUEST, CODE_INVALID_ARGUMENT, message, content_type, close=close)

    def _refuse_oversized(self, signal: Signal | None, content_type: str, size: int | None, close: bool) -> None:
        """size None: a gzip body that inflates past the limit (we stop inflating there)."""
        limit = self.server.settings.max_message_bytes
        self.server.intake.note_oversized("http", signal, size, limit)
        subject = "decompressed request" if size is None else f"request of {size} bytes"
        message = f"{subject} exceeds the limit of {limit} bytes"
        self._send_status(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, CODE_RESOURCE_EXHAUSTED, message, content_type, close=close)

    def _send_status(self, http_status: HTTPStatus, code: int, message: str, content_type: str, *,
                     headers=(), retry_delay_s: float | None = None, close: bool = False) -> None:
        status = status_proto(code, message, retry_delay_s=retry_delay_s)
        self._send(http_status, _encode(status, content_type), content_type, headers=headers, close=close)

    def _send(self, http_status: HTTPStatus, body: bytes, content_type: str, *, headers=(), close: bool = False) -> None:
        self.send_response(http_status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)


def _encode(message: Message, content_type: str) -> bytes:
    if content_type == JSON:
        return message_to_otlp_json(message).encode()
    return message.SerializeToString()
