"""OTLP/HTTP transport on tornado's HTTP/1.1 server, running on the shared network loop.

POST /v1/traces, /v1/metrics, /v1/logs with application/x-protobuf or
application/json bodies (optionally gzip), answered in the request's content
type; errors carry a google.rpc.Status body as the OTLP/HTTP spec asks.
GET <health_path> reports status and counters as JSON. Other read-only GET pages
(the live pattern view) are plugged in as ``HttpSettings.pages``: path -> a
callable returning a ``Page``.

Why tornado rather than the standard library's ThreadingHTTPServer (which this
replaced): the standard server listens with a backlog of 5 (200 clients
connecting at once saw ~30 % resets), gives every connection a thread with no
cap (1,000 trickling clients held 1,013 threads) and has no header or body
deadline. tornado is asynchronous (a slow client costs a socket, not a thread),
listens with a normal backlog, and enforces a deadline on the whole header block
and on the whole body; this module adds the connection cap (``max_connections``:
past it a client gets 503 + Retry-After and the connection is closed) and the
byte budget: a request's ``Content-Length`` is reserved in the intake *before*
its body is read, and refused with 429 when the budget is full.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable, Mapping, NamedTuple
from urllib.parse import urlsplit

from google.protobuf.message import Message
from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets

from .auth import BearerToken, TLSFiles
from .decode import JSON, PROTOBUF, Malformed, TooLarge, decode_export, gunzip_limited
from .intake import Intake, Reservation
from .netloop import NetworkLoop
from .otlp_json import message_to_otlp_json
from .rpc_status import (
    CODE_INVALID_ARGUMENT,
    CODE_RESOURCE_EXHAUSTED,
    CODE_UNAUTHENTICATED,
    CODE_UNAVAILABLE,
    CODE_UNIMPLEMENTED,
    status_proto,
)
from .signals import SIGNALS_BY_PATH, Signal

logger = logging.getLogger(__name__)

_MAX_DISCARD_BYTES = 64 * 1024 * 1024  # a refused body is read and dropped up to this (larger: closed at once)
_BACKLOG = 1024


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
    tls: TLSFiles | None = None
    token: BearerToken = field(default_factory=lambda: BearerToken(None))
    max_connections: int = 512
    header_timeout_s: float = 10.0  # the whole header block (and an idle keep-alive connection)
    body_timeout_s: float = 30.0  # the whole body
    pages: Mapping[str, Callable[[], Page]] = field(default_factory=dict)  # path -> read-only GET page


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port)."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"endpoint must look like host:port, got {endpoint!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


class OTLPHTTPServer:
    """Binds at construction (so a busy port fails at once); serves once ``start()`` is called."""

    def __init__(self, settings: HttpSettings, intake: Intake, stats: Callable[[], dict[str, Any]],
                 network: NetworkLoop) -> None:
        self.settings = settings
        self.intake = intake
        self.stats = stats
        self.network = network
        self.ssl_context = settings.tls.server_context() if settings.tls else None  # clear TLS errors first
        host, port = split_endpoint(settings.endpoint)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._sockets = bind_sockets(port, host, family=family, backlog=_BACKLOG)
        except OSError as error:  # say which address: "[Errno 98] Address already in use" alone names none
            named = OSError(f"cannot bind OTLP/HTTP endpoint {settings.endpoint}: {error.strerror or error}")
            named.errno = error.errno
            raise named from None
        self.port: int = self._sockets[0].getsockname()[1]
        self._server: _CappedHTTPServer | None = None
        self.connections_refused = 0

    def start(self) -> None:
        self.network.run(self._start())

    async def _start(self) -> None:
        self._server = _CappedHTTPServer(
            _Routes(self),
            max_connections=self.settings.max_connections,
            retry_after_s=self.settings.retry_after_s,
            on_refused=self._count_refused,
            ssl_options=self.ssl_context,
            idle_connection_timeout=self.settings.header_timeout_s,
            body_timeout=self.settings.body_timeout_s,
            max_body_size=max(_MAX_DISCARD_BYTES, self.settings.max_message_bytes),
            max_header_size=64 * 1024,
            decompress_request=False,  # gzip is inflated by us, with a limit (zip bombs)
        )
        self._server.add_sockets(self._sockets)

    def _count_refused(self) -> None:
        self.connections_refused += 1

    @property
    def open_connections(self) -> int:
        return self._server.open_connections if self._server is not None else 0

    def stop(self, grace_s: float) -> None:
        """Stop accepting; let requests in flight finish within ``grace_s``; close every connection."""
        if self._server is None:
            for sock in self._sockets:
                sock.close()
            return
        try:
            self.network.run(self._stop(grace_s), timeout_s=grace_s + 1.0)
        except Exception:
            logger.debug("OTLP/HTTP: stop did not finish cleanly", exc_info=True)

    async def _stop(self, grace_s: float) -> None:
        assert self._server is not None
        self._server.stop()
        deadline = asyncio.get_running_loop().time() + grace_s
        while self._server.busy and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        await self._server.close_all_connections()


class _CappedHTTPServer(HTTPServer):
    """tornado's HTTPServer with a cap on open connections."""

    def initialize(self, request_callback: Any, *, max_connections: int, retry_after_s: float,  # type: ignore[override]
                   on_refused: Callable[[], None], **kwargs: Any) -> None:
        super().initialize(request_callback, **kwargs)
        self.max_connections = max_connections
        self.retry_after = str(max(1, math.ceil(retry_after_s)))
        self.on_refused = on_refused
        self.open_connections = 0
        self.busy = 0  # requests being answered

    def handle_stream(self, stream: Any, address: Any) -> None:
        if self.open_connections >= self.max_connections:
            self.on_refused()
            asyncio.ensure_future(_refuse_connection(stream, self.retry_after))
            return
        self.open_connections += 1
        super().handle_stream(stream, address)

    def on_close(self, server_conn: Any) -> None:
        self.open_connections -= 1
        super().on_close(server_conn)


async def _refuse_connection(stream: Any, retry_after: str) -> None:
    body = b'{"code":14,"message":"too many connections, retry later"}'
    try:
        await stream.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                           b"Retry-After: " + retry_after.encode() + b"\r\nConnection: close\r\n"
                           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    except StreamClosedError:
        pass
    finally:
        stream.close()


class _Routes(httputil.HTTPServerConnectionDelegate):
    def __init__(self, server: OTLPHTTPServer) -> None:
        self.server = server

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        return _Exchange(self.server, request_conn)


class _Exchange(httputil.HTTPMessageDelegate):
    """One request and its answer. Decisions that need no body are made on the headers."""

    def __init__(self, server: OTLPHTTPServer, connection: httputil.HTTPConnection) -> None:
        self.server = server
        self.settings = server.settings
        self.connection = connection
        self.answered = False
        self.method = ""
        self.path = ""
        self.signal: Signal | None = None
        self.content_type = JSON
        self.gzip = False
        self.body: bytearray | None = None  # None: the body is not wanted (refused, or a GET)
        self.reservation: Reservation | None = None
        self.deferred: Callable[[], None] | None = None  # an answer decided on the headers
        self.expects_continue = False

    # -- tornado callbacks ---------------------------------------------------
    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> None:
        self.method, self.path = start_line.method, urlsplit(start_line.path).path
        self.expects_continue = headers.get("Expect", "").lower() == "100-continue"
        requested = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        self.content_type = requested if requested in (PROTOBUF, JSON) else JSON
        if self.method == "POST":
            self._post_headers(headers)
        elif self.method not in ("GET", "HEAD"):
            self._later(self._status, HTTPStatus.METHOD_NOT_ALLOWED, CODE_UNIMPLEMENTED,
                        f"{self.method} not supported", headers=[("Allow", "GET, POST")])

    def _later(self, answer: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        """Answer once the body has been read (and dropped): closing on an unread body would make the
        kernel reset the connection, which can destroy the answer before the client reads it. A client
        that sent ``Expect: 100-continue`` has sent no body yet: it is answered at once (and never sends it)."""
        if self.expects_continue:
            answer(*args, **kwargs)
        else:
            self.deferred = lambda: answer(*args, **kwargs)

    def data_received(self, chunk: bytes) -> None:
        if self.body is not None:
            self.body += chunk

    def finish(self) -> None:
        if self.answered:
            return
        if self.deferred is not None:
            self.deferred()
        elif self.method in ("GET", "HEAD"):
            self._get()
        elif self.body is not None:
            asyncio.ensure_future(self._export(bytes(self.body)))
            self.body = None

    def on_connection_close(self) -> None:
        self._release()

    # -- routes --------------------------------------------------------------
    def _post_headers(self, headers: httputil.HTTPHeaders) -> None:
        signal = SIGNALS_BY_PATH.get(self.path)
        if signal is None:
            allowed = self.path == self.settings.health_path or self.path in self.settings.pages
            if allowed:
                self._later(self._status, HTTPStatus.METHOD_NOT_ALLOWED, CODE_UNIMPLEMENTED, "use GET", headers=[("Allow", "GET")])
            else:
                self._later(self._status, HTTPStatus.NOT_FOUND, CODE_UNIMPLEMENTED, "no such path")
            return
        self.signal = signal
        if not self.settings.token.allows(headers.get("Authorization")):
            self.server.intake.note_unauthenticated("http")
            self._later(self._status, HTTPStatus.UNAUTHORIZED, CODE_UNAUTHENTICATED, "missing or wrong bearer token",
                         headers=[("WWW-Authenticate", "Bearer")])
            return
        if self.content_type != headers.get("Content-Type", "").split(";", 1)[0].strip().lower():
            self._later(self._status, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, CODE_INVALID_ARGUMENT,
                         f"Content-Type must be {PROTOBUF} or {JSON}")
            return
        encoding = headers.get("Content-Encoding", "identity").strip().lower() or "identity"
        if encoding not in ("identity", "gzip"):
            self._later(self._status, HTTPStatus.UNSUPPORTED_MEDIA_TYPE, CODE_INVALID_ARGUMENT, "Content-Encoding must be gzip or absent")
            return
        self.gzip = encoding == "gzip"
        declared = headers.get("Content-Length")
        if declared is None:  # chunked bodies are not supported; OTLP exporters send a length
            self._later(self._status, HTTPStatus.LENGTH_REQUIRED, CODE_INVALID_ARGUMENT, "Content-Length required", close=True)
            return
        length = int(declared)  # tornado has checked it is a non-negative integer
        limit = self.settings.max_message_bytes
        if length > limit:
            self._later(self._refuse_oversized, length)
            return
        reservation = self.server.intake.reserve(length)
        if isinstance(reservation, str):
            self._later(self._refused, reservation)
            return
        self.reservation = reservation
        self.body = bytearray()

    def _get(self) -> None:
        if self.path in SIGNALS_BY_PATH:
            self._status(HTTPStatus.METHOD_NOT_ALLOWED, CODE_UNIMPLEMENTED, "use POST", headers=[("Allow", "POST")])
            return
        page = self.settings.pages.get(self.path)
        if page is not None:
            self._page(page)
            return
        if self.path != self.settings.health_path:
            self._status(HTTPStatus.NOT_FOUND, CODE_UNIMPLEMENTED, "no such path")
            return
        serving = self.server.intake.accepting
        stats = self.server.stats()
        # Degraded: still serving (so still 200), but the latest export downstream failed.
        status = ("degraded" if stats.get("degraded") else "ok") if serving else "stopping"
        body = json.dumps({"status": status, "stats": stats}).encode()
        self._send(HTTPStatus.OK if serving else HTTPStatus.SERVICE_UNAVAILABLE, body, JSON)

    def _page(self, page: Callable[[], Page]) -> None:
        try:
            answer = page()
        except Exception:
            logger.exception("OTLP/HTTP: page %s failed", self.path)
            self._status(HTTPStatus.INTERNAL_SERVER_ERROR, CODE_UNAVAILABLE, "page failed")
            return
        # Read-only pages of our own: nothing may frame them or load from elsewhere.
        headers = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"), *answer.headers)
        self._send(HTTPStatus.OK, answer.body, answer.content_type, headers=headers)

    async def _export(self, body: bytes) -> None:
        signal, reservation = self.signal, self.reservation
        assert signal is not None and reservation is not None
        self.server_busy(+1)
        try:
            try:
                payload, items = await self.server.network.decode(self._decode, signal, body)
            except TooLarge:
                self._release()
                self._refuse_oversized(None)
                return
            except Malformed as error:
                self._release()
                self.server.intake.note_malformed("http", signal, error)
                self._status(HTTPStatus.BAD_REQUEST, CODE_INVALID_ARGUMENT, str(error))
                return
            del body
            self.reservation = None  # the intake owns it now
            verdict, done = self.server.intake.submit(signal, payload, items, reservation)
            if not verdict.accepted:
                self._refused(verdict.refusal)
                return
            rejected, message = await self.server.intake.consumer_answer(done)
            self._send(HTTPStatus.OK, _encode(signal.response(rejected, message), self.content_type), self.content_type)
        except Exception:  # never leave a request unanswered
            logger.exception("OTLP/HTTP: export failed")
            self._release()
            if not self.answered:
                self._status(HTTPStatus.INTERNAL_SERVER_ERROR, CODE_UNAVAILABLE, "internal error")
        finally:
            self.server_busy(-1)

    def _decode(self, signal: Signal, body: bytes) -> tuple[bytes, int]:
        if self.gzip:
            body = gunzip_limited(body, self.settings.max_message_bytes)
        return decode_export(signal, body, self.content_type)

    def server_busy(self, delta: int) -> None:
        if self.server._server is not None:
            self.server._server.busy += delta

    # -- answers -------------------------------------------------------------
    def _release(self) -> None:
        if self.reservation is not None:
            self.server.intake.release(self.reservation)
            self.reservation = None

    def _refused(self, refusal: str) -> None:
        retry_after_s = self.settings.retry_after_s
        retry_after = [("Retry-After", str(max(1, math.ceil(retry_after_s))))]
        if refusal == "full":
            self._status(HTTPStatus.TOO_MANY_REQUESTS, CODE_RESOURCE_EXHAUSTED, "receiver queue is full, retry later",
                         headers=retry_after, retry_delay_s=retry_after_s)
        else:
            self._status(HTTPStatus.SERVICE_UNAVAILABLE, CODE_UNAVAILABLE, "receiver is shutting down",
                         headers=retry_after, retry_delay_s=retry_after_s, close=True)

    def _refuse_oversized(self, size: int | None) -> None:
        """size None: a gzip body that inflates past the limit (we stop inflating there)."""
        limit = self.settings.max_message_bytes
        self.server.intake.note_oversized("http", self.signal, size, limit)
        subject = "decompressed request" if size is None else f"request of {size} bytes"
        self._status(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, CODE_RESOURCE_EXHAUSTED,
                     f"{subject} exceeds the limit of {limit} bytes", close=size is not None)

    def _status(self, http_status: HTTPStatus, code: int, message: str, *, headers=(),
                retry_delay_s: float | None = None, close: bool = False) -> None:
        status = status_proto(code, message, retry_delay_s=retry_delay_s)
        self._send(http_status, _encode(status, self.content_type), self.content_type, headers=headers, close=close)

    def _send(self, http_status: HTTPStatus, body: bytes, content_type: str, *, headers=(), close: bool = False) -> None:
        if self.answered:
            return
        self.answered = True
        response = httputil.HTTPHeaders()
        response["Content-Type"] = content_type
        response["Content-Length"] = str(len(body))
        response["Server"] = "crackle-otel"
        for name, value in headers:
            response[name] = value
        if close:
            response["Connection"] = "close"
        start = httputil.ResponseStartLine("HTTP/1.1", int(http_status), http_status.phrase)
        try:
            self.connection.write_headers(start, response, body if self.method != "HEAD" else b"")
            self.connection.finish()
        except StreamClosedError:
            pass


def _encode(message: Message, content_type: str) -> bytes:
    if content_type == JSON:
        return message_to_otlp_json(message).encode()
    return message.SerializeToString()
