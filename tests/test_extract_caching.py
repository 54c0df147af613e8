"""Extraction caches per attribute name and per resource; what it gives must not depend on the caches.

The reference is a fresh ExtractionRules for every span (empty caches)."""

from __future__ import annotations

import itertools

from crackle_otel.otel.extract import ExtractionRules, SpanView, extract


def view(name: str, attributes: dict, resource: dict) -> SpanView:
    return SpanView(name, 1_000, 3_000_000, False, attributes, resource, "scope", 1, 2, 0, 0)


RULE_SETS = (
    {},
    {"group_by": ["service.name", "http.route", "span.name"]},
    {"group_by": ["span.name"], "deny": ["host.*"]},
    {"group_by": lambda v: (v.resource_attributes.get("service.name"), len(v.attributes))},
)


def test_cached_extraction_equals_uncached_whatever_the_order_and_resources():
    shared_resource = {"service.name": "cart", "host.name": "h1"}
    spans = []
    for i in range(300):
        # A fresh resource mapping per span, dropped afterwards: CPython reuses ids, which must not
        # make a new mapping read as a cached one.
        resource = shared_resource if i % 3 == 0 else {"service.name": f"svc-{i % 7}", "host.name": f"h{i}"}
        attributes = {"items": i, "ok": i % 2 == 0, "http.route": f"/r{i % 4}"}
        if i % 5 == 0:
            attributes["service.name"] = "override"  # a group_by name in the span: its own group
        spans.append((f"op-{i % 6}", attributes, resource))
        del resource
    for settings in RULE_SETS:
        shared = ExtractionRules(**settings)
        for name, attributes, resource in itertools.chain(spans, reversed(spans)):
            cached = extract(view(name, attributes, dict(resource) if name == "op-0" else resource), shared)
            fresh = extract(view(name, attributes, resource), ExtractionRules(**settings))
            assert (cached.group, cached.metrics, cached.attributes) == (fresh.group, fresh.metrics, fresh.attributes)


def test_a_new_resource_mapping_is_not_mistaken_for_an_old_one():
    rules = ExtractionRules()
    groups = []
    for i in range(200):
        resource = {"service.name": f"svc-{i}", "host.name": f"host-{i}"}
        extracted = extract(view("op", {}, resource), rules)
        groups.append((extracted.group, extracted.attributes["host.name"]))
        del resource, extracted
    assert groups == [(f"svc-{i} | op", f"host-{i}") for i in range(200)]
