"""One asyncio loop thread for both OTLP transports, and the bounded pool that decodes for them.

Network I/O never holds a thread: the HTTP server (tornado) and the gRPC server
(grpc.aio) both run as coroutines on this loop, so a client that sends its
headers and then stalls costs a coroutine and a socket, not a worker. Only a
request whose message has fully arrived is handed to the decode pool
(``decode_workers`` threads: gunzip, parse, count, validate), and each such job
is bounded by the message size limit. A slow client therefore cannot occupy the
pool, however many stalled calls it holds open.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any, Awaitable, Callable, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class NetworkLoop:
    def __init__(self, *, decode_workers: int = 2, name: str = "crackle-otlp") -> None:
        if decode_workers < 1:
            raise ValueError(f"decode_workers must be >= 1, got {decode_workers}")
        self.loop = asyncio.new_event_loop()
        self.decoders = concurrent.futures.ThreadPoolExecutor(decode_workers, thread_name_prefix=f"{name}-decode")
        self._thread = threading.Thread(target=self._run, name=f"{name}-net", daemon=True)
        self._started = False

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def run(self, coroutine: Awaitable[T], timeout_s: float | None = None) -> T:
        """Run ``coroutine`` on the loop from another thread and return its result (or raise its error)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)  # type: ignore[arg-type]

    async def decode(self, job: Callable[..., T], *args: Any) -> T:
        """Run a CPU-bound job in the decode pool (from a coroutine on the loop)."""
        return await self.loop.run_in_executor(self.decoders, job, *args)

    def stop(self, timeout_s: float) -> None:
        if self._started and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(max(0.0, timeout_s))
        self.decoders.shutdown(wait=False, cancel_futures=True)
        if not self._thread.is_alive():
            try:
                self.loop.close()
            except RuntimeError:  # still running (join timed out): left to the daemon thread
                logger.debug("OTLP network loop still running at close", exc_info=True)
