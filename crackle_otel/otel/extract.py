"""Span -> fired task: the one extraction function, and its two thin adapters.

``extract(view, rules)`` turns a normalised ``SpanView`` into an
``ExtractedSpan`` (label, group, timestamp, identity, metrics). The SDK
processor feeds it through ``view_of_readable_span``, the OTLP gateway
through ``view_of_proto_span`` and ``crackle-otel analyze`` reads OTLP/JSON
lines through ``view_of_json_span`` (no protobuf on the way); all of them see
exactly the same rules.

Metrics of a span:
- ``duration_ms``: end - start, in milliseconds;
- ``is_error``: 1 when the status is ERROR, else 0;
- ``event_count`` / ``link_count``: recorded plus dropped (what the span really had);
- every numeric or boolean span attribute the allow/deny lists let through,
  under its own name (booleans become 0/1). Strings are skipped (not numbers),
  and so are arrays: a summary (mean, length) would invent columns nobody
  asked for. Resource attributes are never metrics (constant per process).
  Values are passed on raw: NaN, inf and ints too big for a float are left to
  ``Kiln.record``, which skips and counts them.

Descriptive attributes (``ExtractedSpan.attributes``): the resource's
instance-identifying ones (host.name, service.instance.id, k8s.pod.name ...),
then the span's string attributes, so a pattern can say *why*
("host.name=host-7 is 95% of the cluster"). The same allow/deny lists apply;
group_by attributes are left out (constant within a group); at most
``MAX_DESCRIPTIVE_ATTRIBUTES`` per span (the instance's first: a span with many
strings must not push out which host it ran on), values cut at
``MAX_DESCRIPTIVE_LENGTH``.

Failures (``ExtractedSpan.failures``, ``crackle_otel.failures.Failure`` bits):
status ERROR, an ``exception`` event, an HTTP response status 5xx or 4xx, a
gRPC status other than OK; the attribution detector compares their rates.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, Union

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.trace import SpanKind, StatusCode

from ..failures import GRPC_STATUS_ATTRIBUTE, HTTP_STATUS_ATTRIBUTES, Failure, status_code_failures

SPAN_NAME = "span.name"  # pseudo-attribute usable in group_by: the span's name
DEFAULT_GROUP_BY = ("service.name", SPAN_NAME)
# Numbers that name things rather than measure them: ports, process and thread ids, line
# numbers. As metrics they only make false clusters and "shifts" (a client's ephemeral port).
DEFAULT_ATTRIBUTES_DENY = ("*.port", "*.pid", "*.id", "*.lineno", "thread.id")
MISSING_GROUP_VALUE = "unknown"
GROUP_SEPARATOR = " | "
BUILTIN_METRICS = frozenset({"duration_ms", "is_error", "event_count", "link_count"})
MAX_DESCRIPTIVE_ATTRIBUTES = 16  # the explainer looks at 16 keys at most
MAX_DESCRIPTIVE_LENGTH = 128
# Resource attributes that tell instances apart (the rest is constant per process or per service).
INSTANCE_RESOURCE_ATTRIBUTES = (
    "host.name",
    "host.id",
    "service.instance.id",
    "service.version",
    "k8s.pod.name",
    "k8s.node.name",
    "container.id",
    "cloud.region",
    "cloud.availability_zone",
    "deployment.environment.name",
    "deployment.environment",
)

# Attributes of a client span that name what it calls (semantic conventions, newest first).
PEER_ATTRIBUTES = ("peer.service", "server.address", "net.peer.name", "rpc.service", "db.system", "messaging.system")
SDK_SPAN_KINDS = {kind: kind.name.lower() for kind in SpanKind}
# OTLP's enum (SPAN_KIND_INTERNAL = 1 ...) numbers kinds differently from the SDK's SpanKind.
PROTO_SPAN_KINDS = {number: name.removeprefix("SPAN_KIND_").lower()
                    for name, number in trace_pb2.Span.SpanKind.items() if number}

_MAX_CACHED_DECISIONS = 4096  # bounded memory for "is this attribute name allowed?"


@dataclass(slots=True)
class SpanView:
    """The parts of a span extraction reads, whatever the span's origin (treat as read-only).

    Not frozen: a frozen dataclass's __init__ costs ~2 us, paid per span on the cooler.
    """

    name: str
    start_ns: int
    end_ns: int
    is_error: bool
    attributes: Mapping[str, Any]
    resource_attributes: Mapping[str, Any]
    scope_name: str
    trace_id: int
    span_id: int
    event_count: int
    link_count: int
    has_exception: bool = False  # an event named "exception" (the semantic conventions' name)
    parent_span_id: int = 0  # 0: a root span (or a parent nobody told us about)
    kind: str = ""  # "client", "server", "internal", "producer", "consumer"; "" when unspecified


EXCEPTION_EVENT = "exception"


@dataclass(slots=True)
class ExtractedSpan:
    """One span as a fired task: what the kiln records, and the group it belongs to."""

    label: str
    group: str
    timestamp_s: float  # start time: when the task was fired
    identity: tuple[int, int]  # (trace_id, span_id)
    metrics: dict[str, Any]
    attributes: dict[str, str] | None = None  # descriptive (string) attributes, None when there are none
    failures: int = 0  # crackle_otel.failures.Failure bits
    # Where the span sits in its trace (for call-graph measurements, see otel/calls.py).
    service: str = MISSING_GROUP_VALUE
    parent_span_id: int = 0
    start_ns: int = 0
    end_ns: int = 0
    kind: str = ""
    peer: str = ""  # client spans: who they call, when an attribute names it (PEER_ATTRIBUTES)


GroupBy = Union[Sequence[str], Callable[[SpanView], Union[str, Sequence[Any]]]]


@dataclass(frozen=True)
class _NameMatcher:
    """Attribute names matched exactly ("a.b"), by prefix ("a.*") or by suffix ("*.port")."""

    exact: frozenset[str]
    prefixes: tuple[str, ...]
    suffixes: tuple[str, ...]

    @classmethod
    def of(cls, patterns: Sequence[str]) -> "_NameMatcher":
        return cls(
            exact=frozenset(p for p in patterns if "*" not in p),
            # "*" alone is the empty prefix: every name.
            prefixes=tuple(p[:-1] for p in patterns if p.endswith("*") and (p == "*" or not p.startswith("*"))),
            suffixes=tuple(p[1:] for p in patterns if p.startswith("*") and len(p) > 1),
        )

    def __call__(self, name: str) -> bool:
        return (
            name in self.exact
            or bool(self.prefixes and name.startswith(self.prefixes))
            or bool(self.suffixes and name.endswith(self.suffixes))
        )


@dataclass
class ExtractionRules:
    """Which attributes become metrics and how spans are grouped.

    ``allow`` / ``deny``: attribute names, exact, as a prefix ending in ``*``
    (``"db.*"``) or a suffix starting with ``*`` (``"*.port"``). An empty allow
    list allows every attribute; deny wins over allow. The default deny list
    keeps identifiers (ports, pids, ids, line numbers) out of the metrics.
    ``group_by``: attribute names (span attributes first, then resource
    attributes; ``"span.name"`` is the span's name), or a callable taking a
    ``SpanView`` and returning the group name (or its parts).
    """

    allow: Sequence[str] = ()
    deny: Sequence[str] = DEFAULT_ATTRIBUTES_DENY
    group_by: GroupBy = DEFAULT_GROUP_BY
    _decisions: dict[str, bool] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.allow = tuple(self.allow)
        self.deny = tuple(self.deny)
        if not callable(self.group_by):
            self.group_by = tuple(self.group_by)
        self._allowed = _NameMatcher.of(self.allow)
        self._denied = _NameMatcher.of(self.deny)
        self._grouping_names = frozenset(() if callable(self.group_by) else self.group_by)
        # Group parts looked up in span attributes; when a span has none of them, its group
        # depends only on its name and resource, and is cached per (resource, name).
        self._groups_by_resource = not callable(self.group_by)
        self._span_grouping_names = self._grouping_names - {SPAN_NAME}
        self._uses: dict[str, int] = {}  # attribute name -> _UNUSED / _METRIC_ONLY / _METRIC_OR_DESCRIPTIVE
        self._resources: dict[int, _ResourceFacts] = {}  # id(resource mapping) -> what extraction needs of it

    def allows(self, name: str) -> bool:
        decision = self._decisions.get(name)
        if decision is None:
            decision = self._decide(name)
            if len(self._decisions) < _MAX_CACHED_DECISIONS:
                self._decisions[name] = decision
        return decision

    def _decide(self, name: str) -> bool:
        if name in BUILTIN_METRICS:  # an attribute must not overwrite a built-in metric
            return False
        if self._denied(name):
            return False
        return not self.allow or self._allowed(name)

    def _use_of(self, name: str) -> int:
        """What a span attribute of this name may become (a metric if numeric; descriptive if a string)."""
        use = _UNUSED
        if self.allows(name):
            use = _METRIC_ONLY if name in self._grouping_names else _METRIC_OR_DESCRIPTIVE
        if len(self._uses) < _MAX_CACHED_DECISIONS:
            self._uses[name] = use
        return use

    def group_of(self, view: SpanView) -> str:
        if callable(self.group_by):
            result = self.group_by(view)
            parts = (result,) if isinstance(result, str) else tuple(result)
            return GROUP_SEPARATOR.join(str(part) for part in parts)
        return self._group_by_names(view.name, view.attributes, view.resource_attributes)

    @property
    def groups_by_names(self) -> bool:
        """Whether ``group_by`` names attributes (not a callable, which takes a SpanView)."""
        return self._groups_by_resource

    def _group_by_names(self, span_name: str, attributes: Mapping[str, Any], resource: Mapping[str, Any]) -> str:
        parts = tuple(_group_value(span_name, attributes, resource, name) for name in self.group_by)
        return GROUP_SEPARATOR.join(str(part) for part in parts)

    def _facts_of(self, resource: Mapping[str, Any]) -> "_ResourceFacts":
        """The per-resource part of extraction, worked out once per resource mapping (``_resources`` caches it)."""
        described = {}
        for name in INSTANCE_RESOURCE_ATTRIBUTES:
            value = resource.get(name)
            if isinstance(value, str) and name not in self._grouping_names and self.allows(name):
                described[name] = value[:MAX_DESCRIPTIVE_LENGTH]
        if len(self._resources) >= _MAX_CACHED_RESOURCES:
            self._resources.clear()  # e.g. the gateway decodes a new mapping per request: keep the recent ones
        # The entry holds the mapping itself, so no other mapping can get its id while the entry exists.
        service = resource.get("service.name")
        service = service[:MAX_DESCRIPTIVE_LENGTH] if isinstance(service, str) and service else MISSING_GROUP_VALUE
        facts = self._resources[id(resource)] = _ResourceFacts(resource, described, {}, service)
        return facts

    def _remember_group(self, span_name: str, attributes: Mapping[str, Any], facts: "_ResourceFacts") -> str:
        """The group of a span whose attributes hold no group_by name, cached per (resource, span name)."""
        group = self._group_by_names(span_name, attributes, facts.resource)
        if len(facts.groups) < _MAX_CACHED_GROUPS_PER_RESOURCE:
            facts.groups[span_name] = group
        return group


_UNUSED, _METRIC_ONLY, _METRIC_OR_DESCRIPTIVE = 0, 1, 2
_MAX_CACHED_RESOURCES = 64
_MAX_CACHED_GROUPS_PER_RESOURCE = 1024


@dataclass(slots=True)
class _ResourceFacts:
    resource: Mapping[str, Any]  # held, so that no other mapping gets its id (the cache key)
    described: dict[str, str]  # instance-identifying attributes, as descriptive attributes (copied per span)
    groups: dict[str, str]  # span name -> group, for spans whose attributes hold no group_by name
    service: str  # service.name (calls between services are told apart by it)


def _group_value(span_name: str, attributes: Mapping[str, Any], resource: Mapping[str, Any], name: str) -> Any:
    if name == SPAN_NAME:
        return span_name
    value = attributes.get(name)
    if value is None:
        value = resource.get(name)
    return MISSING_GROUP_VALUE if value is None else value


def extract(view: SpanView, rules: ExtractionRules) -> ExtractedSpan:
    """The extraction: a span view -> label, group, start time, identity, metrics."""
    return _extract(view.resource_attributes, rules, view, view.name, view.start_ns, view.end_ns, view.is_error,
                    view.attributes, view.trace_id, view.span_id, view.event_count, view.link_count,
                    view.has_exception, view.parent_span_id, view.kind)


def _extract(resource: Mapping[str, Any], rules: ExtractionRules, view: SpanView | None, name: str, start: int,
             end: int, is_error: bool, attributes: Mapping[str, Any], trace_id: int, span_id: int, event_count: int,
             link_count: int, has_exception: bool, parent_span_id: int, kind: str) -> ExtractedSpan:
    """``extract`` of a span's fields (a SpanView's, in its order). ``view``: the span as a SpanView, which
    only a callable ``group_by`` needs (None: the rules group by names)."""
    metrics: dict[str, Any] = {
        "duration_ms": (end - start) / 1e6,
        "is_error": 1.0 if is_error else 0.0,
        "event_count": event_count,
        "link_count": link_count,
    }
    facts = rules._resources.get(id(resource))  # the entry keeps the mapping alive: its id is not reused
    if facts is None:
        facts = rules._facts_of(resource)
    descriptive = facts.described.copy()
    uses = rules._uses
    for attribute, value in attributes.items():
        use = uses.get(attribute)
        if use is None:
            use = rules._use_of(attribute)
        if not use:
            continue
        value_kind = type(value)
        # bool is an int subclass: both are metrics; str, bytes, tuples (arrays) are not.
        if value_kind is float or value_kind is int or value_kind is bool:
            metrics[attribute] = value
        elif value_kind is str or isinstance(value, str):
            if use == _METRIC_OR_DESCRIPTIVE and len(descriptive) < MAX_DESCRIPTIVE_ATTRIBUTES:
                descriptive[attribute] = value[:MAX_DESCRIPTIVE_LENGTH]
        elif isinstance(value, (int, float)):
            metrics[attribute] = value
    failures = _ERROR_STATUS if is_error else 0
    if has_exception:
        failures |= _EXCEPTION
    http_status = attributes.get(_HTTP_STATUS)
    if http_status is None:
        http_status = attributes.get(_OLD_HTTP_STATUS)
    grpc_status = attributes.get(GRPC_STATUS_ATTRIBUTE)
    if http_status is not None or grpc_status is not None:
        failures |= status_code_failures(http_status, grpc_status)
    if not rules._groups_by_resource:
        group = rules.group_of(view)  # a callable group_by
    elif attributes.keys().isdisjoint(rules._span_grouping_names):
        # The span's own attributes cannot change its group: it is its (resource, name)'s.
        group = facts.groups.get(name) or rules._remember_group(name, attributes, facts)
    else:
        group = rules._group_by_names(name, attributes, resource)
    return ExtractedSpan(
        name,
        group,
        # Start time orders spans as their requests arrived; ordering by end time would sort
        # overlapping spans by duration and invent a trend in duration_ms.
        start / 1e9,
        (trace_id, span_id),
        metrics,
        descriptive or None,
        failures,
        facts.service,
        parent_span_id,
        start,
        end,
        kind,
        _peer_of(attributes) if kind == "client" else "",
    )


def _peer_of(attributes: Mapping[str, Any]) -> str:
    for name in PEER_ATTRIBUTES:
        value = attributes.get(name)
        if isinstance(value, str) and value:
            return value[:MAX_DESCRIPTIVE_LENGTH]
    return ""


_ERROR_STATUS, _EXCEPTION = int(Failure.ERROR_STATUS), int(Failure.EXCEPTION)
_HTTP_STATUS, _OLD_HTTP_STATUS = HTTP_STATUS_ATTRIBUTES


# ---------------------------------------------------------------- SDK adapter
_ERROR = StatusCode.ERROR


def _plain_dict(attributes: Any) -> Mapping[str, Any]:
    # The SDK's BoundedAttributes iterates through Python-level __getitem__ (~1 us for a few
    # attributes); its inner dict iterates in C. Fall back to the public mapping if that changes.
    inner = getattr(attributes, "_dict", None)
    if type(inner) is dict:
        return inner
    return attributes if attributes is not None else {}


def view_of_readable_span(span: Any) -> SpanView:
    """A SpanView of an ended SDK ``ReadableSpan``."""
    context = span.context
    scope = span.instrumentation_scope
    start = span.start_time or 0
    try:
        # The private fields: ``span.attributes``/``events``/``links`` copy (a mapping proxy, tuples).
        attributes, events, links = span._attributes, span._events, span._links
    except AttributeError:
        attributes, events, links = span.attributes, span.events, span.links
    # A BoundedList's len() runs Python code; the deque inside it counts in C.
    events, links = getattr(events, "_dq", events), getattr(links, "_dq", links)
    # Positional: keyword arguments cost ~0.3 us more per span on the cooler.
    return SpanView(
        span.name,
        start,
        span.end_time or start,
        span.status.status_code is _ERROR,
        _plain_dict(attributes),
        _plain_dict(span.resource.attributes),
        scope.name if scope is not None else "",
        context.trace_id,
        context.span_id,
        len(events) + span.dropped_events,
        len(links) + span.dropped_links,
        bool(events) and any(event.name == EXCEPTION_EVENT for event in events),
        parent.span_id if (parent := span.parent) is not None else 0,
        SDK_SPAN_KINDS.get(span.kind, ""),
    )


def from_readable_span(span: Any, rules: ExtractionRules) -> ExtractedSpan:
    return extract(view_of_readable_span(span), rules)


# -------------------------------------------------------------- proto adapter
_SCALAR_KINDS = frozenset({"string_value", "bool_value", "int_value", "double_value", "bytes_value"})
_PROTO_ERROR = trace_pb2.Status.STATUS_CODE_ERROR


def any_value(value: common_pb2.AnyValue) -> Any:
    """A Python value of an OTLP AnyValue (arrays as tuples, kvlists as dicts)."""
    kind = value.WhichOneof("value")
    if kind is None or kind == "string_value_strindex":  # no string table outside profiles
        return None
    if kind == "array_value":
        return tuple(any_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_of(key_values: Sequence[common_pb2.KeyValue]) -> dict[str, Any]:
    """OTLP KeyValue list -> dict (the gateway uses it for resource attributes too)."""
    result = {}
    for key_value in key_values:
        # Scalars inline: every field access on a protobuf message costs ~0.1 us, per attribute per span.
        value = key_value.value
        kind = value.WhichOneof("value")
        result[key_value.key] = getattr(value, kind) if kind in _SCALAR_KINDS else any_value(value)
    return result


def view_of_proto_span(
    span: trace_pb2.Span, resource_attributes: Mapping[str, Any], scope_name: str
) -> SpanView:
    """A SpanView of an OTLP span; ``resource_attributes`` already decoded (once per resource)."""
    start = span.start_time_unix_nano
    events = span.events
    return SpanView(
        span.name,
        start,
        span.end_time_unix_nano or start,
        span.status.code == _PROTO_ERROR,
        attributes_of(span.attributes),
        resource_attributes,
        scope_name,
        int.from_bytes(span.trace_id, "big"),
        int.from_bytes(span.span_id, "big"),
        len(events) + span.dropped_events_count,
        len(span.links) + span.dropped_links_count,
        bool(events) and any(event.name == EXCEPTION_EVENT for event in events),
        int.from_bytes(span.parent_span_id, "big"),
        PROTO_SPAN_KINDS.get(span.kind, ""),
    )


def from_proto_span(
    span: trace_pb2.Span, resource_attributes: Mapping[str, Any], scope_name: str, rules: ExtractionRules
) -> ExtractedSpan:
    return extract(view_of_proto_span(span, resource_attributes, scope_name), rules)


# ---------------------------------------------------------- OTLP/JSON adapter
# OTLP/JSON is the proto3 JSON mapping of the same messages, with hex trace and span ids.
# These read what ``json.loads`` made of it directly (no protobuf on the way, several times
# cheaper) and read what ``google.protobuf.json_format`` reads in the fields extraction
# uses: lowerCamelCase or original field names, 64-bit integers as strings or numbers,
# enums by name or number, null as "not set", unknown fields ignored. What the mapping
# rejects there (wrong types, integers out of range, two values in one AnyValue ...)
# raises MalformedSpanError, as do a few absurd spellings it lets through (a status code
# of true). Fields extraction does not use (event contents, links ...) are not checked.

_MAX_MESSAGE_DEPTH = 100  # json_format's limit on nested messages
SPAN_KEY_VALUE_DEPTH = 5  # request > resource spans > scope spans > span > key value
RESOURCE_KEY_VALUE_DEPTH = 4  # request > resource spans > resource > key value
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT32 = (0, 2**32 - 1)
_FIXED64 = (0, 2**64 - 1)
_STATUS_CODES = dict(trace_pb2.Status.StatusCode.items())  # "STATUS_CODE_ERROR" -> 2 ...
_JSON_KIND_NAMES = {name: name.removeprefix("SPAN_KIND_").lower()  # "SPAN_KIND_CLIENT" and "CLIENT" -> "client"
                    for number_name, number in trace_pb2.Span.SpanKind.items() if number
                    for name in (number_name, number_name.removeprefix("SPAN_KIND_"))}


class MalformedSpanError(ValueError):
    """An OTLP/JSON span (or a part of its request) that the proto3 JSON mapping would not accept."""


def json_field(message: Mapping[str, Any], json_name: str, proto_name: str) -> Any:
    """A field by its JSON (lowerCamelCase) or proto name; None when absent or null."""
    value = message.get(json_name)
    return message.get(proto_name) if value is None else value


def json_object(value: Any, what: str) -> dict[str, Any]:
    """``value`` if it is a JSON object; {} for null; MalformedSpanError otherwise."""
    if type(value) is dict:
        return value
    if value is None:
        return {}
    raise MalformedSpanError(f"{what} must be a JSON object, not {type(value).__name__}")


def json_list(value: Any, what: str) -> list[Any]:
    """``value`` if it is a JSON array; [] for null; MalformedSpanError otherwise."""
    if type(value) is list:
        return value
    if value is None:
        return []
    raise MalformedSpanError(f"{what} must be a JSON array, not {type(value).__name__}")


def json_string(value: Any, what: str) -> str:
    if type(value) is str and value.isascii():
        return value
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedSpanError(f"{what} must be a string, not {type(value).__name__}")
    try:
        value.encode("utf-8")  # a lone surrogate (from a \\ud800 escape) is not a protobuf string
    except UnicodeEncodeError:
        raise MalformedSpanError(f"{what} holds an unpaired surrogate") from None
    return value


def json_integer(value: Any, bounds: tuple[int, int], what: str) -> int:
    """An integer field: a JSON number or a string (64-bit ones usually are), within ``bounds``."""
    kind = type(value)
    if kind is int:
        number = value
    elif kind is str and " " not in value:
        try:
            number = int(value)
        except ValueError:
            number = _integral_float(value, what)
    elif kind is float:
        number = _integral_float(value, what)
    elif value is None:
        return 0
    else:
        raise MalformedSpanError(f"{what} must be an integer, not {kind.__name__}")
    if not bounds[0] <= number <= bounds[1]:
        raise MalformedSpanError(f"{what} {number} is out of range")
    return number


def _integral_float(value: Any, what: str) -> int:
    try:
        number = float(value)
    except ValueError:
        raise MalformedSpanError(f"{what} must be an integer, not {value!r}") from None
    if not number.is_integer():
        raise MalformedSpanError(f"{what} must be an integer, not {value!r}")
    return int(number)


def json_double(value: Any, what: str) -> float:
    """A double: a JSON number, or a string (also "NaN", "Infinity", "-Infinity")."""
    kind = type(value)
    if kind is float:
        if value - value == 0.0:
            return value
        raise MalformedSpanError(f"{what}: NaN and infinities must be quoted")  # json.loads' NaN/Infinity literals
    if value == "nan":
        raise MalformedSpanError(f'{what}: "nan" must be spelt "NaN"')
    if kind is list or kind is dict:
        raise MalformedSpanError(f"{what} must be a number, not {kind.__name__}")
    try:
        return float(value)  # an int, a bool (as json_format), or a string: "1.5", "NaN", "Infinity" ...
    except (ValueError, OverflowError):
        raise MalformedSpanError(f"{what} must be a number, not {value!r}") from None


def _json_bool(value: Any, what: str) -> bool:
    if type(value) is bool:
        return value
    raise MalformedSpanError(f"{what} must be true or false, not {value!r}")


def _json_bytes(value: Any, what: str) -> bytes:
    """Base64, standard or URL-safe, padding optional (as json_format decodes bytes)."""
    if not isinstance(value, str):
        raise MalformedSpanError(f"{what} must be a base64 string, not {type(value).__name__}")
    encoded = value.encode("utf-8")
    try:
        return base64.urlsafe_b64decode(encoded + b"=" * (4 - len(encoded) % 4))
    except ValueError:
        raise MalformedSpanError(f"{what} is not base64") from None


def json_id(value: Any, what: str) -> int:
    """A trace or span id: hex per OTLP/JSON (base64, the plain proto3 mapping, is accepted too)."""
    if value is None:
        return 0
    if type(value) is str:
        try:
            return int.from_bytes(bytes.fromhex(value), "big")
        except ValueError:
            pass
    return int.from_bytes(_json_bytes(value, what), "big")


def _json_string_index(value: Any, what: str) -> None:
    json_integer(value, _INT32, what)
    return None  # no string table outside profiles (as any_value)


def _json_array(value: Any, what: str, depth: int) -> tuple:
    _check_depth(depth + 1, what)  # the ArrayValue; its values one deeper
    values = json_list(json_object(value, what).get("values"), what)
    return tuple(json_any_value(item, what, depth + 2) for item in values)


def _json_kvlist(value: Any, what: str, depth: int) -> dict[str, Any]:
    _check_depth(depth + 1, what)  # the KeyValueList; its KeyValues one deeper
    return json_attributes_of(json_object(value, what).get("values"), what, depth + 2)


def _check_depth(depth: int, what: str) -> None:
    if depth > _MAX_MESSAGE_DEPTH:
        raise MalformedSpanError(f"{what} is nested too deeply")


_ANY_VALUE_FIELDS: dict[str, tuple[str, Callable[[Any, str, int], Any]]] = {}
for _proto_name, _json_name, _decode in (
    ("string_value", "stringValue", lambda value, what, depth: json_string(value, what)),
    ("bool_value", "boolValue", lambda value, what, depth: _json_bool(value, what)),
    ("int_value", "intValue", lambda value, what, depth: json_integer(value, _INT64, what)),
    ("double_value", "doubleValue", lambda value, what, depth: json_double(value, what)),
    ("array_value", "arrayValue", _json_array),
    ("kvlist_value", "kvlistValue", _json_kvlist),
    ("bytes_value", "bytesValue", lambda value, what, depth: _json_bytes(value, what)),
    ("string_value_strindex", "stringValueStrindex", lambda value, what, depth: _json_string_index(value, what)),
):
    _ANY_VALUE_FIELDS[_json_name] = _ANY_VALUE_FIELDS[_proto_name] = (_proto_name, _decode)


def json_any_value(value: Any, what: str = "value", depth: int = SPAN_KEY_VALUE_DEPTH + 1) -> Any:
    """A Python value of an OTLP/JSON AnyValue, exactly as ``any_value`` gives for the proto.

    ``depth``: how deep this AnyValue is in its request, in messages (json_format rejects
    documents nested deeper than 100).
    """
    decoded = None
    seen = None
    for name, raw in json_object(value, what).items():
        field = _ANY_VALUE_FIELDS.get(name)
        if field is None or raw is None:  # unknown fields are ignored; null means "not set"
            continue
        if seen is not None:
            raise MalformedSpanError(f"{what} holds two values ({seen}, {field[0]})")
        _check_depth(depth, what)
        seen = field[0]
        decoded = field[1](raw, what, depth)
    return decoded


def json_attributes_of(key_values: Any, what: str = "attributes", depth: int = SPAN_KEY_VALUE_DEPTH) -> dict[str, Any]:
    """OTLP/JSON KeyValue list -> dict, as ``attributes_of`` for the proto. ``depth``: of the KeyValues."""
    result = {}
    elements = json_list(key_values, what)
    if elements:
        _check_depth(depth, what)
    shallow = depth < _MAX_MESSAGE_DEPTH  # the values' AnyValues are within the limit
    for key_value in elements:
        if type(key_value) is not dict:
            raise MalformedSpanError(f"an element of {what} must be a JSON object, not {type(key_value).__name__}")
        key = key_value.get("key")
        if type(key) is not str or not key.isascii():
            key = json_string(key, f"a key of {what}")
        value = key_value.get("value")
        # The usual attributes, inline: one value of a common kind (~0.3 us less than the general way).
        if type(value) is dict and len(value) == 1 and shallow:
            ((kind, raw),) = value.items()
            kind_of_raw = type(raw)
            if kind == "stringValue" and kind_of_raw is str and raw.isascii():
                result[key] = raw
                continue
            if kind == "intValue" and kind_of_raw is str and raw.isascii() and raw.isdigit() and len(raw) < 19:
                result[key] = int(raw)  # fewer than 19 digits: within int64
                continue
            if kind == "doubleValue" and kind_of_raw is float and raw - raw == 0.0:
                result[key] = raw
                continue
            if kind == "boolValue" and kind_of_raw is bool:
                result[key] = raw
                continue
        result[key] = json_any_value(value, f"{what}[{key!r}]", depth + 1)
    return result


def _json_status_code(value: Any) -> int:
    if type(value) is str:
        number = _STATUS_CODES.get(value)
        if number is None:
            try:
                number = int(value)  # as json_format: a number in a string ...
            except ValueError:
                return 0  # ... else an unknown name, ignored (the code stays unset)
        if not _INT32[0] <= number <= _INT32[1]:
            raise MalformedSpanError(f"status.code {number} is out of range")
        return number
    return json_integer(value, _INT32, "status.code")


def view_of_json_span(span: Any, resource_attributes: Mapping[str, Any], scope_name: str) -> SpanView:
    """A SpanView of an OTLP/JSON span (a dict from ``json.loads``); resource attributes already decoded."""
    (name, start, end, is_error, attributes, trace_id, span_id, event_count, link_count, has_exception,
     parent_span_id, kind) = _json_span_fields(span)
    return SpanView(name, start, end, is_error, attributes, resource_attributes, scope_name, trace_id, span_id,
                    event_count, link_count, has_exception, parent_span_id, kind)


def extract_json_span(span: Any, resource_attributes: Mapping[str, Any], rules: ExtractionRules) -> ExtractedSpan:
    """``extract(view_of_json_span(span, resource_attributes, scope), rules)`` without the SpanView (~5 us less a
    span; ``crackle-otel analyze`` reads every span this way). For rules that group by names
    (``rules.groups_by_names``): a callable ``group_by`` takes a SpanView."""
    return _extract(resource_attributes, rules, None, *_json_span_fields(span))


def _json_span_fields(span: Any) -> tuple[str, int, int, bool, Mapping[str, Any], int, int, int, int, bool, int, str]:
    """A SpanView's fields of an OTLP/JSON span but its resource and scope, checked as json_format checks them
    (a malformed span raises MalformedSpanError); the usual spellings read inline."""
    if type(span) is not dict:
        raise MalformedSpanError(f"a span must be a JSON object, not {type(span).__name__}")
    get = span.get
    name = get("name")
    if type(name) is not str or not name.isascii():
        name = json_string(name, "name")
    status = get("status")
    events = get("events")
    links = get("links")
    dropped_events = get("droppedEventsCount")
    if dropped_events is None:
        dropped_events = get("dropped_events_count")
    dropped_links = get("droppedLinksCount")
    if dropped_links is None:
        dropped_links = get("dropped_links_count")
    raw = get("startTimeUnixNano")
    if type(raw) is str and raw.isascii() and raw.isdigit() and len(raw) < 20:  # the usual: decimal digits
        start = int(raw)
    else:
        start = _json_fixed64(span, "startTimeUnixNano", "start_time_unix_nano")
    raw = get("endTimeUnixNano")
    if type(raw) is str and raw.isascii() and raw.isdigit() and len(raw) < 20:
        end = int(raw) or start
    else:
        end = _json_fixed64(span, "endTimeUnixNano", "end_time_unix_nano") or start
    if status is None or (type(status) is dict and status.get("code") is None):  # the usual: {} (unset)
        is_error = False
    else:
        is_error = _json_status_code(json_object(status, "status").get("code")) == _PROTO_ERROR
    raw = get("attributes")
    attributes = {} if raw is None else json_attributes_of(raw)
    raw = get("traceId")
    try:
        trace_id = int.from_bytes(bytes.fromhex(raw), "big")
    except (TypeError, ValueError):  # not a hex string: the general way
        trace_id = _json_span_id(span, "traceId", "trace_id")
    raw = get("spanId")
    try:
        span_id = int.from_bytes(bytes.fromhex(raw), "big")
    except (TypeError, ValueError):
        span_id = _json_span_id(span, "spanId", "span_id")
    event_count = ((len(events) if type(events) is list else len(json_list(events, "events")))
                   + (0 if dropped_events is None else json_integer(dropped_events, _UINT32, "droppedEventsCount")))
    link_count = ((len(links) if type(links) is list else len(json_list(links, "links")))
                  + (0 if dropped_links is None else json_integer(dropped_links, _UINT32, "droppedLinksCount")))
    has_exception = (type(events) is list and bool(events)
                     and any(type(event) is dict and event.get("name") == EXCEPTION_EVENT for event in events))
    raw = get("parentSpanId")
    if type(raw) is str:
        try:
            parent_span_id = int.from_bytes(bytes.fromhex(raw), "big")
        except ValueError:
            parent_span_id = _json_span_id(span, "parentSpanId", "parent_span_id")
    elif raw is None and get("parent_span_id") is None:  # a root span
        parent_span_id = 0
    else:
        parent_span_id = _json_span_id(span, "parentSpanId", "parent_span_id")
    raw = get("kind")
    kind = _JSON_KIND_NAMES.get(raw, "") if type(raw) is str else PROTO_SPAN_KINDS.get(raw, "") if type(raw) is int else ""
    return (name, start, end, is_error, attributes, trace_id, span_id, event_count, link_count, has_exception,
            parent_span_id, kind)


def _json_fixed64(span: dict[str, Any], json_name: str, proto_name: str) -> int:
    raw = span.get(json_name)
    if type(raw) is str and raw.isascii() and raw.isdigit() and len(raw) < 20:  # the usual: decimal digits
        return int(raw)  # fewer than 20 digits: within uint64
    return json_integer(json_field(span, json_name, proto_name), _FIXED64, json_name)


def _json_span_id(span: dict[str, Any], json_name: str, proto_name: str) -> int:
    raw = span.get(json_name)
    if type(raw) is str:
        try:
            return int.from_bytes(bytes.fromhex(raw), "big")
        except ValueError:
            pass
    return json_id(json_field(span, json_name, proto_name), json_name)


def from_json_span(
    span: Any, resource_attributes: Mapping[str, Any], scope_name: str, rules: ExtractionRules
) -> ExtractedSpan:
    return extract(view_of_json_span(span, resource_attributes, scope_name), rules)
