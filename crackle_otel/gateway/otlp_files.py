"""Streaming readers for OTLP files: what the collector's file exporter writes, and protobuf dumps.

Formats, told apart by their first bytes (after an optional gzip layer):

- OTLP JSON lines (``{...}``): one ExportTraceServiceRequest (= TracesData) per
  line, as the collector's file exporter writes with ``format: json``. Lines
  holding metrics (``resourceMetrics``) are read as metrics; logs are skipped.
  ``records()`` gives trace lines as ``JSONTraces`` (span views, or with
  extraction rules extracted spans, decoded straight from the JSON, several
  times faster than through protobuf);
  ``requests()`` as ExportTraceServiceRequests.
- Length-prefixed protobuf (first byte ``0x00``..): each message preceded by its
  size as a 4-byte big-endian integer, as the file exporter writes with
  ``format: proto``. A frame holding JSON is read as JSON.
- One bare ExportTraceServiceRequest (first byte ``0x0a``, the tag of
  ``resource_spans``), e.g. a captured request body. It is read one
  ResourceSpans at a time, so even a large one is never held whole.

Memory does not grow with the file, nor with a line: one line / frame /
ResourceSpans at a time, none longer than ``max_record_bytes`` (16 MiB by
default; a longer line is skipped in 1 MiB pieces, reported with its line
number). Malformed records are skipped and reported to a ``ProblemLog`` (with
the line or record number); framing that cannot be trusted any more ends that
file, reported, and so do ``GIVE_UP_AFTER`` malformed records in a row before
any good one (not an OTLP file). A run of zero bytes where a length prefix
belongs (a preallocated or zero-filled file) is skipped at memory speed and
reported once, not read as millions of empty records.
zstd (the file exporter's ``compression: zstd``) needs the ``zstandard`` package.
"""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator, Union

from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from ..otel.extract import ExtractionRules
from .otlp_json import JSONTraces, OTLPJSONError, decode_json_traces, parse_otlp_json

TraceRequest = trace_service_pb2.ExportTraceServiceRequest
MetricsRequest = metrics_service_pb2.ExportMetricsServiceRequest
Request = Union[TraceRequest, MetricsRequest]
Record = Union[TraceRequest, MetricsRequest, JSONTraces]

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_RESOURCE_SPANS_TAG = 0x0A  # field 1, length-delimited
DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024  # the file exporter writes one batch per record: far smaller
GIVE_UP_AFTER = 1000  # malformed records in a row, none good before them: not an OTLP file
_HEAD_BYTES = 64  # where a JSON line names its signal
_CHUNK = 1 << 20  # how an over-long line or a zero run is skipped
_ZEROS = bytes(_CHUNK)


class FileFormatError(Exception):
    """The file cannot be read at all (unknown format, missing optional decompressor)."""


@dataclass
class ProblemLog:
    """Malformed records: counted, and the first few kept with where they were."""

    keep: int = 10
    count: int = 0
    first: list[str] = field(default_factory=list)

    def add(self, where: str, message: str) -> None:
        self.count += 1
        if len(self.first) < self.keep:
            self.first.append(f"{where}: {message}")


@dataclass
class ReadCounters:
    requests: int = 0
    skipped_records: int = 0  # well-formed but not traces or metrics (e.g. logs)
    malformed_in_a_row: int = 0


class NotOTLP(FileFormatError):
    """Only malformed records so far, too many of them: this file is not what we read."""


class _CountingReader(io.RawIOBase):
    """Counts the bytes read from the underlying (possibly compressed) file, for progress."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 (io signature)
        n = self._raw.readinto(buffer)
        self.bytes_read += n or 0
        return n


def _zstd_stream(raw: BinaryIO) -> BinaryIO:
    try:
        import zstandard  # optional
    except ImportError:
        raise FileFormatError("zstd-compressed input needs the 'zstandard' package (pip install zstandard)") from None
    return zstandard.ZstdDecompressor().stream_reader(raw)


class OTLPFile:
    """One OTLP file, read as a stream of requests. ``progress()`` is (bytes read, file size)."""

    def __init__(self, path: str, problems: ProblemLog, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        self.path = path
        self.problems = problems
        self.counters = ReadCounters()
        self.max_record_bytes = max_record_bytes
        self.size = os.path.getsize(path)
        self._counting: _CountingReader | None = None
        self._json_views = False
        self._rules: ExtractionRules | None = None

    def progress(self) -> tuple[int, int]:
        return (self._counting.bytes_read if self._counting else 0), self.size

    def requests(self) -> Iterator[Request]:
        """Every record as a protobuf request (JSON through ``json_format``)."""
        return self._read(json_views=False)

    def records(self, rules: ExtractionRules | None = None) -> Iterator[Record]:
        """Every record; JSON traces as ``JSONTraces`` (no protobuf on the way), the rest as requests.

        With ``rules``, JSON traces come with their spans extracted (see ``decode_json_traces``).
        """
        self._rules = rules
        return self._read(json_views=True)

    def _read(self, *, json_views: bool) -> Iterator[Record]:
        self._json_views = json_views
        with open(self.path, "rb", buffering=0) as raw_file:
            self._counting = _CountingReader(raw_file)
            raw = io.BufferedReader(self._counting, buffer_size=_CHUNK)
            magic = raw.peek(4)[:4]
            if magic.startswith(GZIP_MAGIC):
                stream: BinaryIO = io.BufferedReader(gzip.GzipFile(fileobj=raw), buffer_size=_CHUNK)
            elif magic == ZSTD_MAGIC:
                stream = io.BufferedReader(_zstd_stream(raw), buffer_size=_CHUNK)
            else:
                stream = raw
            kind, blank_lines = _detect_format(stream)
            if kind == "json":
                yield from self._json_lines(stream, first_line=1 + blank_lines)
            elif kind == "bare":
                yield from self._bare_request(stream)
            elif kind == "framed":
                yield from self._length_prefixed(stream)

    # ------------------------------------------------------------ JSON lines
    def _json_lines(self, stream: BinaryIO, first_line: int) -> Iterator[Record]:
        limit = self.max_record_bytes
        number = first_line - 1
        while True:
            line = stream.readline(limit + 1)
            if not line:
                return
            number += 1
            if len(line) > limit and not line.endswith(b"\n"):
                skipped = len(line) + _skip_rest_of_line(stream)
                self._oversized(f"{self.path}:{number}", skipped)
                continue
            if not line.strip():
                continue
            request = self._decode_json(line, f"{self.path}:{number}")
            if request is not None:
                yield request

    def _oversized(self, where: str, size: int) -> None:
        self.problems.add(where, f"record of {size:,} bytes or more is longer than the limit of "
                                 f"{self.max_record_bytes:,} (--max-record-bytes); skipped")

    def _decode_json(self, document: bytes, where: str) -> Record | None:
        head = document.lstrip()[:_HEAD_BYTES]
        if b"resourceLogs" in head or b"resource_logs" in head:
            self.counters.skipped_records += 1
            return None
        metrics = b"resourceMetrics" in head or b"resource_metrics" in head
        try:
            if metrics or not self._json_views:
                request: Record = parse_otlp_json(document, MetricsRequest if metrics else TraceRequest)
            else:
                request = decode_json_traces(document, self._rules)
        except OTLPJSONError as error:
            self._malformed(where, _short(str(error)))
            return None
        self._good()
        return request

    def _good(self) -> None:
        self.counters.requests += 1
        self.counters.malformed_in_a_row = 0

    def _malformed(self, where: str, message: str) -> None:
        counters = self.counters
        counters.malformed_in_a_row += 1
        self.problems.add(where, message)
        if counters.requests == 0 and counters.malformed_in_a_row >= GIVE_UP_AFTER:
            raise NotOTLP(f"{GIVE_UP_AFTER:,} malformed records and no good one: not an OTLP file")

    # ------------------------------------------------------ length-prefixed
    def _length_prefixed(self, stream: BinaryIO) -> Iterator[Record]:
        number = 0
        offset = 0
        while True:
            prefix = stream.read(4)
            if not prefix:
                return
            number += 1
            where = f"{self.path}: record {number} (byte {offset})"
            if len(prefix) < 4:
                self.problems.add(where, "truncated length prefix at end of file")
                return
            size = int.from_bytes(prefix, "big")
            if size == 0:  # an empty record, or (much likelier) a run of zeros: skip the run at once
                zeros = 4 + _skip_zero_words(stream)
                offset += zeros
                self.problems.add(where, f"{zeros:,} zero bytes (empty records) skipped")
                continue
            if size > self.max_record_bytes:
                self.problems.add(where, f"record length {size:,} is over the limit of {self.max_record_bytes:,} "
                                         "(--max-record-bytes) or not a length at all; stopped reading this file")
                return
            payload = stream.read(size)
            offset += 4 + len(payload)
            if len(payload) < size:
                self.problems.add(where, f"truncated record: {len(payload)} of {size} bytes")
                return
            if payload[:1] == b"{":
                request = self._decode_json(payload, where)
            elif payload[:4] == ZSTD_MAGIC:
                request = self._decode_proto(_zstd_decompress(payload), where)
            else:
                request = self._decode_proto(payload, where)
            if request is not None:
                yield request

    def _decode_proto(self, payload: bytes, where: str) -> TraceRequest | None:
        try:
            request = TraceRequest.FromString(payload)
        except (DecodeError, ValueError) as error:
            self._malformed(where, f"not an ExportTraceServiceRequest: {_short(str(error))}")
            return None
        if payload and not request.ListFields():  # every field unknown: bytes that merely parse
            self._malformed(where, "not an ExportTraceServiceRequest: no known field")
            return None
        self._good()
        return request

    # ------------------------------------------------------ one bare request
    def _bare_request(self, stream: BinaryIO) -> Iterator[Request]:
        """A serialized ExportTraceServiceRequest is a run of (tag, length, ResourceSpans) fields."""
        number = 0
        while True:
            tag = _read_varint(stream)
            if tag is None:
                return
            number += 1
            where = f"{self.path}: field {number}"
            wire_type = tag & 7
            try:
                if wire_type == 2:
                    size = _read_varint(stream)
                    if size is None or size > self.max_record_bytes:
                        raise ValueError(f"implausible field length {size}")
                    payload = stream.read(size)
                    if len(payload) < size:
                        raise ValueError(f"truncated field: {len(payload)} of {size} bytes")
                elif wire_type == 0:
                    _read_varint(stream)
                    continue
                elif wire_type in (1, 5):
                    stream.read(8 if wire_type == 1 else 4)
                    continue
                else:
                    raise ValueError(f"wire type {wire_type} is not valid protobuf")
            except ValueError as error:
                self.problems.add(where, f"{error}; stopped reading this file")
                return
            if tag >> 3 != 1:
                continue  # not resource_spans: unknown to us, skipped as protobuf does
            try:
                resource_spans = trace_pb2.ResourceSpans.FromString(payload)
            except (DecodeError, ValueError) as error:
                self._malformed(where, f"not a ResourceSpans: {_short(str(error))}")
                continue
            self._good()
            yield TraceRequest(resource_spans=[resource_spans])


def _detect_format(stream: BinaryIO) -> tuple[str | None, int]:
    """("json" | "bare" | "framed" | None for an empty file, blank lines consumed before JSON).

    A bare request starts with 0x0a, which is also a newline: it is JSON only if
    whitespace leads to a ``{``. Only JSON's leading whitespace (and BOM) is consumed.
    """
    head = stream.peek(1 << 16)  # type: ignore[attr-defined]
    if not head:
        return None, 0
    text = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
    stripped = text.lstrip(b" \t\r\n")
    if stripped.startswith(b"{"):
        skipped = len(head) - len(stripped)
        newlines = head[:skipped].count(b"\n")
        stream.read(skipped)
        return "json", newlines
    if not stripped and len(head) < (1 << 16):
        return None, 0  # only whitespace
    if head[0] == _RESOURCE_SPANS_TAG:
        return "bare", 0
    return "framed", 0


def _skip_rest_of_line(stream: BinaryIO) -> int:
    """Read and drop up to and including the next newline, 1 MiB at a time; returns how many bytes."""
    skipped = 0
    while True:
        piece = stream.readline(_CHUNK)
        skipped += len(piece)
        if not piece or piece.endswith(b"\n"):
            return skipped


def _skip_zero_words(stream: BinaryIO) -> int:
    """Drop the zero bytes ahead, 4 at a time (a zero length prefix each), at memory speed; returns how many."""
    skipped = 0
    while True:
        ahead = stream.peek(_CHUNK)[:_CHUNK]  # type: ignore[attr-defined]
        # All zeros: one memcmp. Only the chunk where the run ends is scanned byte by byte.
        zeros = len(ahead) if ahead == _ZEROS[: len(ahead)] else len(ahead) - len(ahead.lstrip(b"\0"))
        words = zeros - zeros % 4  # a partial word of zeros begins the next length prefix
        if not words:
            return skipped
        stream.read(words)
        skipped += words
        if words < len(ahead) - 3:
            return skipped


def _read_varint(stream: BinaryIO) -> int | None:
    result = 0
    for shift in range(0, 70, 7):
        byte = stream.read(1)
        if not byte:
            if shift:
                raise ValueError("truncated varint")
            return None
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
    raise ValueError("varint too long")


def _zstd_decompress(payload: bytes) -> bytes:
    try:
        import zstandard
    except ImportError:
        raise FileFormatError("zstd-compressed records need the 'zstandard' package (pip install zstandard)") from None
    return zstandard.ZstdDecompressor().decompressobj().decompress(payload)  # frames may omit their size


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def write_length_prefixed(out: BinaryIO, messages: "list[Message] | Iterator[Message]") -> None:
    """Write messages as the collector's file exporter does with ``format: proto`` (for tests and tools)."""
    for message in messages:
        payload = message.SerializeToString()
        out.write(len(payload).to_bytes(4, "big"))
        out.write(payload)

