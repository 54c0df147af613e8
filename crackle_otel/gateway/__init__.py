"""OTLP gateway: receive OTLP over gRPC and HTTP, hand requests to a consumer.

Kept import-light on purpose: ``import crackle_otel.gateway`` must not pull in
grpc or protobuf; ``OTLPReceiver`` is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from .receiver import OTLPReceiver

__all__ = ["OTLPReceiver"]


def __getattr__(name: str) -> Any:
    if name == "OTLPReceiver":
        from .receiver import OTLPReceiver

        return OTLPReceiver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
