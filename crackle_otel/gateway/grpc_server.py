"""OTLP/gRPC transport: TraceService, MetricsService and LogsService Export, on grpc.aio.

Why asyncio: with grpc's thread-pool server, a call holds a worker thread from
the moment its headers arrive until its message does, so 8 callers that send
headers and hold back the message froze every other export. Here a call that
waits for its message is a coroutine on the network loop; it gets
``request_timeout_s`` to deliver it (then DEADLINE_EXCEEDED, counted), and only
a complete message goes to the bounded decode pool. ``max_concurrent_calls``
caps calls in flight (grpc answers RESOURCE_EXHAUSTED past it).

The servicers are registered by hand instead of with ``add_*Servicer_to_server``:
- the generated handler deserialises inside grpc, where a malformed payload
  becomes INTERNAL; the OTLP spec asks for INVALID_ARGUMENT, so we take raw
  bytes and parse them ourselves;
- a message over ``grpc.max_receive_message_length`` is refused by grpc core
  (RESOURCE_EXHAUSTED) before a unary handler runs, so we could not count it.
  Registered as stream-unary (identical on the wire for a one-message call),
  the handler does run and sees the request stream end empty in that case.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
import grpc.aio

from .auth import BearerToken, TLSFiles
from .decode import Malformed, decode_export
from .intake import Intake
from .netloop import NetworkLoop
from .rpc_status import GrpcStatus, grpc_status
from .signals import SIGNALS, Signal


@dataclass(frozen=True)
class GrpcSettings:
    endpoint: str
    max_message_bytes: int
    retry_after_s: float
    tls: TLSFiles | None = None
    token: BearerToken = field(default_factory=lambda: BearerToken(None))
    request_timeout_s: float = 10.0  # from the call's start until its message has arrived
    max_concurrent_calls: int = 512


class _ExportHandler:
    """The Export method of one signal's service."""

    def __init__(self, signal: Signal, intake: Intake, settings: GrpcSettings, network: NetworkLoop) -> None:
        self._signal = signal
        self._intake = intake
        self._settings = settings
        self._network = network

    async def Export(self, request_iterator, context: grpc.aio.ServicerContext) -> bytes:  # noqa: N802 (gRPC name)
        if not self._settings.token.allows(_metadata(context, "authorization")):
            self._intake.note_unauthenticated("grpc")
            await _abort(context, grpc_status(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token"))
        try:
            payload = await asyncio.wait_for(context.read(), self._settings.request_timeout_s)
        except asyncio.TimeoutError:
            self._intake.note_timeout("grpc")
            await _abort(context, grpc_status(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"request message not received within {self._settings.request_timeout_s:g} s"))
        except (grpc.RpcError, grpc.aio.AioRpcError, asyncio.InvalidStateError):
            payload = grpc.aio.EOF  # the call was terminated before its message arrived
        if payload is grpc.aio.EOF or payload is None:
            # grpc core has already answered RESOURCE_EXHAUSTED for a message over
            # max_receive_message_length; the stream then ends empty. A client cancelling
            # before its one message is sent looks the same here and is (rarely) counted too.
            self._intake.note_oversized("grpc", self._signal, None, self._settings.max_message_bytes)
            await _abort(context, grpc_status(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                              "request larger than the receiver's limit"))
        reservation = self._intake.reserve(len(payload))
        if isinstance(reservation, str):
            await self._refuse(context, reservation)
        try:
            decoded, items = await self._network.decode(decode_export, self._signal, payload)
        except Malformed as error:
            self._intake.release(reservation)
            self._intake.note_malformed("grpc", self._signal, error)
            await _abort(context, grpc_status(grpc.StatusCode.INVALID_ARGUMENT, str(error)))
        except BaseException:
            self._intake.release(reservation)
            raise
        del payload
        verdict, done = self._intake.submit(self._signal, decoded, items, reservation)
        if not verdict.accepted:
            await self._refuse(context, verdict.refusal)
        rejected, message = await self._intake.consumer_answer(done)
        return self._signal.response(rejected, message).SerializeToString()

    async def _refuse(self, context: grpc.aio.ServicerContext, refusal: str) -> None:
        if refusal == "full":
            await _abort(context, grpc_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "receiver queue is full, retry later",
                                              retry_delay_s=self._settings.retry_after_s))
        await _abort(context, grpc_status(grpc.StatusCode.UNAVAILABLE, "receiver is shutting down",
                                          retry_delay_s=self._settings.retry_after_s))


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else None
    return None


async def _abort(context: grpc.aio.ServicerContext, status: GrpcStatus) -> None:
    await context.abort(status.code, status.details, status.trailing_metadata)


class OTLPGrpcServer:
    """Binds in ``start()`` (on the network loop); ``port`` is the bound port."""

    def __init__(self, intake: Intake, settings: GrpcSettings, network: NetworkLoop) -> None:
        self._intake = intake
        self._settings = settings
        self._network = network
        self._credentials = settings.tls.grpc_credentials() if settings.tls else None  # clear TLS errors first
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None

    def start(self) -> int:
        self.port = self._network.run(self._start())
        return self.port

    async def _start(self) -> int:
        settings = self._settings
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                # grpc enables SO_REUSEPORT by default: a second receiver on a busy
                # port would then bind "successfully" and share its traffic.
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=settings.max_concurrent_calls,
        )
        for signal in SIGNALS:
            handler = grpc.stream_unary_rpc_method_handler(
                _ExportHandler(signal, self._intake, settings, self._network).Export)
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(signal.grpc_service,
                                                                                  {"Export": handler}),))
        try:
            if self._credentials is not None:
                port = server.add_secure_port(settings.endpoint, self._credentials)
            else:
                port = server.add_insecure_port(settings.endpoint)
        except RuntimeError as error:  # grpc raises RuntimeError when it cannot bind
            raise OSError(f"cannot bind OTLP/gRPC endpoint {settings.endpoint}: {error}") from None
        if not port:
            raise OSError(f"cannot bind OTLP/gRPC endpoint {settings.endpoint}")
        await server.start()
        self._server = server
        return port

    def stop(self, grace_s: float) -> None:
        """New calls are refused at once; calls in flight get ``grace_s``."""
        if self._server is not None:
            self._network.run(self._server.stop(grace_s), timeout_s=grace_s + 1.0)
