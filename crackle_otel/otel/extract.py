"""Span -> fired task: the one extraction function, and its two thin adapters.

``extract(view, rules)`` turns a normalised ``SpanView`` into an
``ExtractedSpan`` (label, group, timestamp, identity, metrics). The SDK
processor feeds it through ``view_of_readable_span`` and the OTLP gateway
through ``view_of_proto_span``; both see exactly the same rules.

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

Descriptive attributes (``ExtractedSpan.attributes``): the span's string
attributes, then the resource's instance-identifying ones (host.name,
service.instance.id, k8s.pod.name ...), so a pattern can say *why*
("host.name=host-7 is 95% of the cluster"). The same allow/deny lists apply;
group_by attributes are left out (constant within a group); at most
``MAX_DESCRIPTIVE_ATTRIBUTES`` per span, values cut at ``MAX_DESCRIPTIVE_LENGTH``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, Union

from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.trace import StatusCode

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


@dataclass(slots=True)
class ExtractedSpan:
    """One span as a fired task: what the kiln records, and the group it belongs to."""

    label: str
    group: str
    timestamp_s: float  # start time: when the task was fired
    identity: tuple[int, int]  # (trace_id, span_id)
    metrics: dict[str, Any]
    attributes: dict[str, str] | None = None  # descriptive (string) attributes, None when there are none


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

    def group_of(self, view: SpanView) -> str:
        if callable(self.group_by):
            result = self.group_by(view)
            parts = (result,) if isinstance(result, str) else tuple(result)
        else:
            parts = tuple(_group_value(view, name) for name in self.group_by)
        return GROUP_SEPARATOR.join(str(part) for part in parts)


def _group_value(view: SpanView, name: str) -> Any:
    if name == SPAN_NAME:
        return view.name
    value = view.attributes.get(name)
    if value is None:
        value = view.resource_attributes.get(name)
    return MISSING_GROUP_VALUE if value is None else value


def extract(view: SpanView, rules: ExtractionRules) -> ExtractedSpan:
    """The extraction: a span view -> label, group, end time, identity, metrics."""
    metrics: dict[str, Any] = {
        "duration_ms": (view.end_ns - view.start_ns) / 1e6,
        "is_error": 1.0 if view.is_error else 0.0,
        "event_count": view.event_count,
        "link_count": view.link_count,
    }
    descriptive: dict[str, str] = {}
    allows = rules.allows
    grouping = rules._grouping_names
    for name, value in view.attributes.items():
        # bool is an int subclass: both pass; str, bytes, tuples (arrays) do not.
        if isinstance(value, (int, float)):
            if allows(name):
                metrics[name] = value
        elif isinstance(value, str) and len(descriptive) < MAX_DESCRIPTIVE_ATTRIBUTES:
            if name not in grouping and allows(name):
                descriptive[name] = value[:MAX_DESCRIPTIVE_LENGTH]
    resource = view.resource_attributes
    for name in INSTANCE_RESOURCE_ATTRIBUTES:
        value = resource.get(name)
        if (
            isinstance(value, str)
            and len(descriptive) < MAX_DESCRIPTIVE_ATTRIBUTES
            and name not in grouping
            and name not in descriptive
            and allows(name)
        ):
            descriptive[name] = value[:MAX_DESCRIPTIVE_LENGTH]
    return ExtractedSpan(
        label=view.name,
        group=rules.group_of(view),
        # Start time orders spans as their requests arrived; ordering by end time would sort
        # overlapping spans by duration and invent a trend in duration_ms.
        timestamp_s=view.start_ns / 1e9,
        identity=(view.trace_id, view.span_id),
        metrics=metrics,
        attributes=descriptive or None,
    )


# ---------------------------------------------------------------- SDK adapter
def _plain_dict(attributes: Any) -> Mapping[str, Any]:
    # The SDK's BoundedAttributes iterates through Python-level __getitem__ (~1 us for a few
    # attributes); its inner dict iterates in C. Fall back to the public mapping if that changes.
    inner = getattr(attributes, "_dict", None)
    if isinstance(inner, dict):
        return inner
    return attributes if attributes is not None else {}


def view_of_readable_span(span: Any) -> SpanView:
    """A SpanView of an ended SDK ``ReadableSpan``."""
    context = span.context
    scope = span.instrumentation_scope
    start = span.start_time or 0
    # ``span.events``/``span.links`` copy into a tuple; the private lists are read when present.
    events = getattr(span, "_events", None)
    links = getattr(span, "_links", None)
    return SpanView(
        name=span.name,
        start_ns=start,
        end_ns=span.end_time or start,
        is_error=span.status.status_code is StatusCode.ERROR,
        attributes=_plain_dict(getattr(span, "_attributes", None) or span.attributes),
        resource_attributes=_plain_dict(span.resource.attributes),
        scope_name=scope.name if scope is not None else "",
        trace_id=context.trace_id,
        span_id=context.span_id,
        event_count=len(events if events is not None else span.events) + span.dropped_events,
        link_count=len(links if links is not None else span.links) + span.dropped_links,
    )


def from_readable_span(span: Any, rules: ExtractionRules) -> ExtractedSpan:
    return extract(view_of_readable_span(span), rules)


# -------------------------------------------------------------- proto adapter
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
    return {kv.key: any_value(kv.value) for kv in key_values}


def view_of_proto_span(
    span: trace_pb2.Span, resource_attributes: Mapping[str, Any], scope_name: str
) -> SpanView:
    """A SpanView of an OTLP span; ``resource_attributes`` already decoded (once per resource)."""
    return SpanView(
        name=span.name,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano or span.start_time_unix_nano,
        is_error=span.status.code == trace_pb2.Status.STATUS_CODE_ERROR,
        attributes=attributes_of(span.attributes),
        resource_attributes=resource_attributes,
        scope_name=scope_name,
        trace_id=int.from_bytes(span.trace_id, "big"),
        span_id=int.from_bytes(span.span_id, "big"),
        event_count=len(span.events) + span.dropped_events_count,
        link_count=len(span.links) + span.dropped_links_count,
    )


def from_proto_span(
    span: trace_pb2.Span, resource_attributes: Mapping[str, Any], scope_name: str, rules: ExtractionRules
) -> ExtractedSpan:
    return extract(view_of_proto_span(span, resource_attributes, scope_name), rules)

