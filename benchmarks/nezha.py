"""The Nezha real-trace corpus (``../shared/data/nezha``) as OpenTelemetry SDK spans.

Reads the corpus's gzipped CSV files (one row per span: TraceID, SpanID,
ParentID, PodName, OperationName, start/end in Unix ns), de-duplicates on
(trace id, span id) as its README asks, and builds real SDK ``ReadableSpan``
objects with the original ids and timestamps, so a replay goes through the
same processor code as a live service.

What the CSV does not carry is reconstructed the way instrumentation would
have set it: ``service.name`` is the pod name without its ReplicaSet hash and
pod suffix (``k8s.pod.name`` keeps the pod); a span whose children all run in
other services made the call, so its kind is CLIENT; a span whose parent runs
in another service (or that has no parent) served it: SERVER; the rest are
INTERNAL. Benchmarks only: tests never read the corpus.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

DEFAULT_DATA = Path("../shared/data/nezha")  # as seen from the repository root
_POD = re.compile(r"^(.*)-[0-9a-f]{8,10}-[0-9a-z]{5}$")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


@dataclass(slots=True)
class Row:
    trace_id: int
    span_id: int
    parent_id: int  # 0 for a root span
    pod: str
    service: str
    operation: str
    start_ns: int
    end_ns: int


def service_of(pod: str) -> str:
    match = _POD.match(pod)
    return match.group(1) if match else pod


def read_rows(paths: Iterable[Path]) -> list[Row]:
    """Every span of ``paths`` once (first occurrence of each (trace id, span id)), in start order."""
    seen: set[tuple[int, int]] = set()
    rows: list[Row] = []
    services: dict[str, str] = {}
    for path in paths:
        with gzip.open(path, "rt", newline="") as handle:
            reader = csv.reader(handle)
            next(reader)  # header
            for trace, span, parent, pod, operation, start, end, _duration in reader:
                key = (int(trace, 16), int(span, 16))
                if key in seen:
                    continue
                seen.add(key)
                service = services.get(pod)
                if service is None:
                    service = services[pod] = service_of(pod)
                rows.append(Row(key[0], key[1], 0 if parent == "root" else int(parent, 16), pod, service,
                                operation, int(start), int(end)))
    rows.sort(key=lambda r: r.start_ns)
    return rows


def span_kinds(rows: list[Row]) -> dict[tuple[int, int], SpanKind]:
    """CLIENT / SERVER / INTERNAL per span, from where its parent and children run (see module doc)."""
    service = {(r.trace_id, r.span_id): r.service for r in rows}
    child_services: dict[tuple[int, int], set[str]] = {}
    for r in rows:
        if r.parent_id:
            child_services.setdefault((r.trace_id, r.parent_id), set()).add(r.service)
    kinds = {}
    for r in rows:
        key = (r.trace_id, r.span_id)
        children = child_services.get(key)
        parent_service = service.get((r.trace_id, r.parent_id)) if r.parent_id else None
        if children and r.service not in children:
            kinds[key] = SpanKind.CLIENT
        elif r.parent_id == 0 or parent_service != r.service:
            kinds[key] = SpanKind.SERVER
        else:
            kinds[key] = SpanKind.INTERNAL
    return kinds


def readable_spans(rows: list[Row], *, shift_ns: int = 0) -> Iterator[ReadableSpan]:
    """SDK spans of ``rows`` in *end* order (the order a span processor sees them), times shifted by ``shift_ns``."""
    kinds = span_kinds(rows)
    resources: dict[str, Resource] = {}
    for r in sorted(rows, key=lambda r: r.end_ns):
        resource = resources.get(r.pod)
        if resource is None:
            resource = resources[r.pod] = Resource({"service.name": r.service, "k8s.pod.name": r.pod})
        context = SpanContext(r.trace_id, r.span_id, is_remote=False, trace_flags=_SAMPLED)
        parent = SpanContext(r.trace_id, r.parent_id, is_remote=True, trace_flags=_SAMPLED) if r.parent_id else None
        yield ReadableSpan(
            name=r.operation,
            context=context,
            parent=parent,
            resource=resource,
            kind=kinds[(r.trace_id, r.span_id)],
            start_time=r.start_ns + shift_ns,
            end_time=r.end_ns + shift_ns,
        )


@dataclass(frozen=True)
class Fault:
    id: str
    system: str
    service: str
    fault_type: str
    expected_effect: str  # "latency" or "code"
    inject_s: float
    files: tuple[Path, ...]
    files_pre: tuple[Path, ...]
    baseline: Path
    onset_lag_s: float | None

    @property
    def is_latency(self) -> bool:
        return self.expected_effect == "latency"


def faults(data: Path = DEFAULT_DATA) -> list[Fault]:
    manifest = json.loads((data / "manifest.json").read_text())
    baselines = {name: data / system["baseline"] for name, system in manifest["systems"].items()}
    return [
        Fault(
            id=f["id"],
            system=f["system"],
            service=f["root_cause_service"],
            fault_type=f["fault_type"],
            expected_effect=f["expected_effect"],
            inject_s=float(f["inject_unix"]),
            files=tuple(data / p for p in f["files"]),
            files_pre=tuple(data / p for p in f["files_pre"]),
            baseline=baselines[f["system"]],
            onset_lag_s=(f.get("onset_check") or {}).get("lag_s"),
        )
        for f in manifest["faults"]
    ]
