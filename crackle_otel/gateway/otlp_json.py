"""OTLP/JSON <-> protobuf.

OTLP/JSON is proto3 JSON with one twist that ``json_format`` does not know:
trace and span ids are hex strings, not base64. Everything else it handles
(lowerCamelCase or original field names, enums as ints or names, 64-bit
integers as strings or numbers). Unknown fields are ignored, as the OTLP spec
requires of receivers.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

# Every bytes field of the OTLP trace/metrics/logs protos that holds an id
# (span, span link, span parent, log record, exemplar), in both name styles.
_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


class OTLPJSONError(ValueError):
    """The payload is not valid OTLP/JSON for the expected message type."""


def parse_otlp_json(data: bytes | str | Mapping[str, Any], message_type: type[M]) -> M:
    """Decode OTLP/JSON (bytes, text or an already-loaded dict) into ``message_type``."""
    try:
        document = json.loads(data) if isinstance(data, (bytes, bytearray, str)) else copy.deepcopy(dict(data))
    except (ValueError, UnicodeDecodeError) as error:
        raise OTLPJSONError(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise OTLPJSONError(f"expected a JSON object, got {type(document).__name__}")
    _rewrite_ids(document, _hex_to_base64)
    try:
        return json_format.ParseDict(document, message_type(), ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError) as error:
        raise OTLPJSONError(str(error)) from None


def message_to_otlp_dict(message: Message) -> dict[str, Any]:
    """Encode a message as an OTLP/JSON document (hex ids, integer enums)."""
    document = json_format.MessageToDict(message, use_integers_for_enums=True)
    _rewrite_ids(document, _base64_to_hex)
    return document


def message_to_otlp_json(message: Message) -> str:
    return json.dumps(message_to_otlp_dict(message), separators=(",", ":"))


def _rewrite_ids(document: dict[str, Any], convert) -> None:
    # Iterative walk: attribute values can nest (kvlist/array) deeper than is
    # comfortable for recursion.
    pending: list[Any] = [document]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _ID_FIELDS and isinstance(value, str):
                    node[key] = convert(value)
                elif isinstance(value, (dict, list)):
                    pending.append(value)
        elif isinstance(node, list):
            pending.extend(item for item in node if isinstance(item, (dict, list)))


def _hex_to_base64(value: str) -> str:
    # A correctly sized base64 id always ends in '=' padding, so it can never
    # pass as hex; such non-conforming input is left for json_format to decode.
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return value
    return base64.b64encode(raw).decode("ascii")


def _base64_to_hex(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return value
