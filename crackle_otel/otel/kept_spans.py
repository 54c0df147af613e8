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

Cost on the hot path (``on_end``): a loop over the span's attribute values,
~0.3 us for six attributes; the view is built only for the rare large span.
"""

from __future__ import annotations

from typing import Any

from .extract import MAX_DESCRIPTIVE_LENGTH, SpanView, _plain_dict, view_of_readable_span

MAX_KEPT_SPAN_BYTES = 16 * 1024
MAX_KEPT_NAME_LENGTH = 1024


def _values_size(attributes: Any) -> int:
    size = 0
    for value in _plain_dict(attributes).values():
        if type(value) is str:  # the usual large value: checked first and cheaply (this runs per span)
            size += len(value)
        elif type(value) is tuple or type(value) is list:  # arrays: their strings count too
            size += 8 * len(value) + sum(len(item) for item in value if type(item) is str)
    return size


def span_size(span: Any) -> int:
    """The variable-size bytes of an SDK span: name, attribute values, event names and attribute values."""
    size = len(span._name) + _values_size(span._attributes)
    events = span._events
    if len(getattr(events, "_dq", events)):  # a BoundedList's own len() runs Python code
        for event in events:
            size += len(event.name) + _values_size(event.attributes)
    return size


def kept_form(span: Any) -> Any:
    """``span`` itself, or a compact ``SpanView`` of it when it is larger than ``MAX_KEPT_SPAN_BYTES``.

    A span this cannot measure (not an SDK span) is kept as it is.
    """
    try:
        if span_size(span) <= MAX_KEPT_SPAN_BYTES:
            return span
    except Exception:
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


def is_view(kept: Any) -> bool:
    return kept.__class__ is SpanView
