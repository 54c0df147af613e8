"""What the span processor keeps of an ended span while it waits for the cooler.

The pending queue holds up to ``max_queue_size`` spans, so its memory is bounded
in bytes only if each kept span is: an application that puts a 1 MB string in
an attribute (a request body, a stack trace) must not make crackle hold 2,048 of
them. ``kept_form`` measures the variable-size parts of a span (name, string and
array attribute values, event attributes) and, past
``MAX_KEPT_SPAN_BYTES``, keeps a ``SpanView`` instead of the span: numbers as
they are, strings cut to what extraction would keep anyway
(``MAX_DESCRIPTIVE_LENGTH``), arrays left out (extraction never reads
them), the name cut at ``MAX_KEPT_NAME_LENGTH``. The analysis of such a span is
the same as of the original except for a name longer than that.

Cost on the hot path (``on_end``): a loop over the span's attribute values
(six attributes: about as much as the rest of ``on_end``); the view is built
only for the rare large span.
"""

from __future__ import annotations

from typing import Any

from .extract import MAX_DESCRIPTIVE_LENGTH, _plain_dict, view_of_readable_span

MAX_KEPT_SPAN_BYTES = 16 * 1024
MAX_KEPT_NAME_LENGTH = 1024


def _values_size(attributes: Any) -> int:
    size = 0
    for value in _plain_dict(attributes).values():
        if value.__class__ is str:
            size += len(value)
        elif value.__class__ is tuple or value.__class__ is list:  # arrays: their strings count too
            size += _array_size(value)
    return size


def _array_size(values: Any) -> int:
    return 8 * len(values) + sum(len(item) for item in values if item.__class__ is str)


def span_size(span: Any) -> int:
    """The variable-size bytes of an SDK span: name, attribute values, event names and attribute values."""
    size = len(span._name) + _values_size(span._attributes)
    events = span._events
    if len(getattr(events, "_dq", events)):
        for event in events:
            size += len(event.name) + _values_size(event.attributes)
    return size


def _is_small(span: Any) -> bool:
    """``span_size(span) <= MAX_KEPT_SPAN_BYTES``, inlined for the usual SDK span: this runs in ``on_end``
    (attribute lookups and ``.__class__`` tests rather than calls: about half the cost)."""
    size = len(span._name)
    for value in span._attributes._dict.values():
        if value.__class__ is str:
            size += len(value)
        elif value.__class__ is tuple or value.__class__ is list:
            size += _array_size(value)
    events = span._events._dq  # a BoundedList's own len() and iteration run Python code; its deque's do not
    if events:
        for event in events:
            size += len(event.name) + _values_size(event.attributes)
    return size <= MAX_KEPT_SPAN_BYTES


def kept_form(span: Any) -> Any:
    """``span`` itself, or a compact ``SpanView`` of it when it is larger than ``MAX_KEPT_SPAN_BYTES``.

    A span this cannot measure (not an SDK span) is kept as it is.
    """
    try:
        small = _is_small(span)
    except AttributeError:  # not the SDK's span internals: measure through the public mapping
        try:
            small = span_size(span) <= MAX_KEPT_SPAN_BYTES
        except Exception:
            return span
    if small:
        return span
    view = view_of_readable_span(span)
    attributes = {}
    for name, value in view.attributes.items():
        if type(value) is str:
            attributes[name] = value[:MAX_DESCRIPTIVE_LENGTH]
        elif type(value) is not tuple and type(value) is not list:
            attributes[name] = value
    view.attributes = attributes
    view.name = view.name[:MAX_KEPT_NAME_LENGTH]
    return view
