"""A received export body -> the protobuf bytes the intake queues, and how many items they hold.

Run in the decode pool (``netloop``), never on the network loop. The request is
parsed once here, to refuse a malformed one with INVALID_ARGUMENT / 400 and to
count its items, then dropped: the intake queues its wire bytes, whose size is
what the byte budget counts (a parsed request takes several times its wire size).
"""

from __future__ import annotations

import zlib

from google.protobuf.message import DecodeError

from .otlp_json import OTLPJSONError, parse_otlp_json
from .signals import Signal

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class Malformed(ValueError):
    """The body is not a valid export request of its signal."""


class TooLarge(Exception):
    """A gzip body inflates past the message size limit (we stop inflating there)."""


def gunzip_limited(data: bytes, limit: int) -> bytes:
    """Decompress gzip without ever holding more than limit + 1 bytes (zip bombs)."""
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(data, limit + 1)
    except zlib.error as error:
        raise Malformed(f"bad gzip body: {error}") from None
    if len(out) > limit:
        raise TooLarge()
    if not decompressor.eof:
        raise Malformed("truncated gzip body")
    return out


def decode_export(signal: Signal, body: bytes, content_type: str = PROTOBUF) -> tuple[bytes, int]:
    """(protobuf payload, item count) of one export body; ``Malformed`` if it is not one."""
    try:
        if content_type == JSON:
            request = parse_otlp_json(body, signal.request_type)
            return request.SerializeToString(), signal.count_items(request)
        return bytes(body), signal.count_items(signal.request_type.FromString(body))
    except (DecodeError, OTLPJSONError, ValueError) as error:
        raise Malformed(f"malformed {signal.request_type.__name__}: {error}") from None
