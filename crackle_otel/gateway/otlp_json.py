"""OTLP/JSON <-> protobuf, and OTLP/JSON traces -> span views without protobuf.

OTLP/JSON is proto3 JSON with one twist that ``json_format`` does not know:
trace and span ids are hex strings, not base64. Everything else it handles
(lowerCamelCase or original field names, enums as ints or names, 64-bit
integers as strings or numbers). Unknown fields are ignored, as the OTLP spec
requires of receivers.

``json_format`` builds messages field by field in Python (~0.1 ms a span), so
``decode_json_traces`` skips protobuf: it walks the loaded JSON and makes the
SpanViews extraction reads (``otel.extract.view_of_json_span``), or given the
extraction rules the extracted spans themselves (``otel.extract.extract_json_span``),
for ``crackle-otel analyze`` on the collector file exporter's JSON lines.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from ..otel.extract import (
    RESOURCE_KEY_VALUE_DEPTH,
    ExtractedSpan,
    ExtractionRules,
    MalformedSpanError,
    SpanView,
    extract_json_span,
    json_attributes_of,
    json_field,
    json_list,
    json_object,
    json_string,
    view_of_json_span,
)

M = TypeVar("M", bound=Message)

# Every bytes field of the OTLP trace/metrics/logs protos that holds an id
# (span, span link, span parent, log record, exemplar), in both name styles.
_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


class OTLPJSONError(ValueError):
    """The payload is not valid OTLP/JSON for the expected message type."""


_TOO_DEEP = "nested too deeply"


@dataclass
class JSONTraces:
    """An OTLP/JSON traces document decoded into span views: (scope name, its spans) per ScopeSpans.

    ``extracted``: the spans are already ExtractedSpans (decoded with rules, see ``decode_json_traces``)."""

    scopes: list[tuple[str, list[SpanView]]] | list[tuple[str, list[ExtractedSpan | SpanView]]]
    extracted: bool = False


def _load(data: bytes | str | Mapping[str, Any], *, copied: bool) -> dict[str, Any]:
    try:
        if isinstance(data, (bytes, bytearray, str)):
            document = json.loads(data)
        else:
            document = copy.deepcopy(dict(data)) if copied else data
    except (ValueError, UnicodeDecodeError) as error:
        raise OTLPJSONError(f"not JSON: {error}") from None
    except RecursionError:
        raise OTLPJSONError(_TOO_DEEP) from None
    if not isinstance(document, dict):
        raise OTLPJSONError(f"expected a JSON object, got {type(document).__name__}")
    return document


def decode_json_traces(data: bytes | str | Mapping[str, Any], rules: ExtractionRules | None = None) -> JSONTraces:
    """OTLP/JSON traces (an ExportTraceServiceRequest / TracesData) -> JSONTraces, without protobuf.

    Reads what ``parse_otlp_json`` reads and raises OTLPJSONError where it would,
    in the parts extraction uses (see ``otel.extract``'s OTLP/JSON adapter).
    With ``rules`` that group by names, the spans come extracted (``extract_json_span``:
    no SpanView on the way); a span whose extraction fails (never seen: it would be a
    bug) comes as its view, for the caller's ``extract`` to fail on and count.
    """
    document = _load(data, copied=False)  # only read, never changed
    extracting = rules is not None and rules.groups_by_names
    scopes: list[tuple[str, list[Any]]] = []
    try:
        for resource_spans in json_list(json_field(document, "resourceSpans", "resource_spans"), "resourceSpans"):
            resource_spans = _element(resource_spans, "resourceSpans")
            resource = json_object(resource_spans.get("resource"), "resource")
            resource_attributes = json_attributes_of(
                resource.get("attributes"), "resource.attributes", RESOURCE_KEY_VALUE_DEPTH
            )
            for scope_spans in json_list(json_field(resource_spans, "scopeSpans", "scope_spans"), "scopeSpans"):
                scope_spans = _element(scope_spans, "scopeSpans")
                scope_name = json_string(json_object(scope_spans.get("scope"), "scope").get("name"), "scope.name")
                spans = json_list(scope_spans.get("spans"), "spans")
                if extracting:
                    scopes.append((scope_name, _extracted(spans, resource_attributes, scope_name, rules)))
                else:
                    scopes.append((scope_name, [view_of_json_span(span, resource_attributes, scope_name)
                                                for span in spans]))
    except MalformedSpanError as error:
        raise OTLPJSONError(str(error)) from None
    except RecursionError:  # arrays in arrays ... in an attribute
        raise OTLPJSONError(_TOO_DEEP) from None
    return JSONTraces(scopes, extracted=extracting)


def _extracted(spans: list[Any], resource_attributes: dict[str, Any], scope_name: str,
               rules: ExtractionRules) -> list[ExtractedSpan | SpanView]:
    result: list[ExtractedSpan | SpanView] = []
    append = result.append
    for span in spans:
        try:
            append(extract_json_span(span, resource_attributes, rules))
        except (MalformedSpanError, RecursionError):  # malformed input: the whole request is
            raise
        except Exception:  # extraction failed on a well-formed span: the feeder extracts it again and counts it
            append(view_of_json_span(span, resource_attributes, scope_name))
    return result


def _element(value: Any, what: str) -> dict[str, Any]:
    if type(value) is not dict:  # null included: json_format rejects null elements
        raise MalformedSpanError(f"an element of {what} must be a JSON object, not {type(value).__name__}")
    return value


def parse_otlp_json(data: bytes | str | Mapping[str, Any], message_type: type[M]) -> M:
    """Decode OTLP/JSON (bytes, text or an already-loaded dict) into ``message_type``."""
    document = _load(data, copied=True)  # the ids are rewritten in place
    _rewrite_ids(document, _hex_to_base64)
    try:
        return json_format.ParseDict(document, message_type(), ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, OverflowError) as error:  # Overflow: a double of 1e999
        raise OTLPJSONError(str(error)) from None
    except RecursionError:
        raise OTLPJSONError(_TOO_DEEP) from None


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
