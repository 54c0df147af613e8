"""Configuration of the OTel adapters, read in one place.

``CrackleConfig.load(**kwargs)`` merges keyword arguments (which win) with
``CRACKLE_*`` environment variables (named in the style of ``OTEL_BSP_*``) and
validates everything once, raising ``CrackleConfigError`` that names the
variable or argument and the bad value.

| keyword                 | environment variable            | default |
|-------------------------|---------------------------------|---------|
| enabled                 | CRACKLE_ENABLED                 | true    |
| cool_interval_millis    | CRACKLE_COOL_INTERVAL_MILLIS    | 15000   |
| max_queue_size          | CRACKLE_MAX_QUEUE_SIZE          | 2048    |
| drain_batch_size        | CRACKLE_DRAIN_BATCH_SIZE        | 512     |
| kiln_capacity           | CRACKLE_KILN_CAPACITY           | 4096    |
| max_groups              | CRACKLE_MAX_GROUPS              | 512     |
| max_metrics_per_group   | CRACKLE_MAX_METRICS_PER_GROUP   | 32      |
| group_by                | CRACKLE_GROUP_BY                | service.name,span.name |
| attributes_allow        | CRACKLE_ATTRIBUTES_ALLOW        | (all)   |
| attributes_deny         | CRACKLE_ATTRIBUTES_DENY         | *.port,*.pid,*.id,*.lineno,thread.id |
| profile                 | CRACKLE_PROFILE                 | default |
| exporter                | CRACKLE_EXPORTER                | otlp    |
| export_timeout_millis   | CRACKLE_EXPORT_TIMEOUT_MILLIS   | 10000   |
| max_links               | CRACKLE_MAX_LINKS               | 128     |
| pattern_memory_cools    | CRACKLE_PATTERN_MEMORY_COOLS    | 10      |
| max_cooler_share        | CRACKLE_MAX_COOLER_SHARE        | 0.1     |
| call_graph_spans        | CRACKLE_CALL_GRAPH_SPANS        | 16384   |

Lists are comma-separated; an attribute entry ending in ``*`` is a prefix
(``db.*``), one starting with ``*`` a suffix (``*.port``). A deny list given
replaces the default one, which keeps identifiers (ports, pids, ids) out of the metrics. ``group_by`` may also be a callable (keyword only). ``profile`` is
``fast``, ``default`` or ``slow`` (or a ThermalProfile, keyword only).
``max_cooler_share`` caps the fraction of wall time the cooler thread may be
busy (draining, extracting, cooling): after each piece of work it pauses
long enough to stay under it. Under the GIL a busy cooler slows every request
thread, so under overload the processor analyses a sample and counts the rest
as dropped, rather than taxing the host. ``pattern_memory_cools``: a reported
pattern not seen for that many cools of its group is forgotten (and reported
again if it comes back). ``call_graph_spans``: recent spans remembered to
join calls across services and measure self time (otel/calls.py).
Memory: a group's window is allocated as it fills; a full one (kiln_capacity
spans, a few metrics and attributes) holds ~0.85 MiB, most of it the spans'
(trace id, span id) for the links, plus 8 bytes per span and metric beyond
those. A window holds the group's latest spans however old, so a busy system's
groups fill up in time: at most ~430 MiB for 512 full groups, ~210 MiB for
TrainTicket's ~250 (a group that has seen only 100 spans holds ~25 KiB). Plus
max_queue_size buffered spans and call_graph_spans remembered ones (~200
bytes each).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

from ..errors import CrackleError
from ..profile import ThermalProfile
from .extract import DEFAULT_ATTRIBUTES_DENY, DEFAULT_GROUP_BY, GroupBy

PROFILES: dict[str, Callable[[], ThermalProfile]] = {
    "fast": ThermalProfile.fast_cooling,
    "default": ThermalProfile.default,
    "slow": ThermalProfile.slow_cooling,
}
EXPORTERS = ("otlp", "console", "none")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class CrackleConfigError(CrackleError, ValueError):
    """A configuration value (keyword argument or CRACKLE_* variable) is invalid."""


@dataclass(frozen=True)
class CrackleConfig:
    enabled: bool = True
    cool_interval_millis: int = 15_000
    max_queue_size: int = 2048
    drain_batch_size: int = 512
    kiln_capacity: int = 4096
    max_groups: int = 512
    max_metrics_per_group: int = 32
    group_by: GroupBy = DEFAULT_GROUP_BY
    attributes_allow: tuple[str, ...] = ()
    attributes_deny: tuple[str, ...] = DEFAULT_ATTRIBUTES_DENY
    profile: ThermalProfile = ThermalProfile()
    exporter: str = "otlp"
    export_timeout_millis: int = 10_000
    max_links: int = 128
    pattern_memory_cools: int = 10
    max_cooler_share: float = 0.1
    call_graph_spans: int = 16_384

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = _check(spec.name, getattr(self, spec.name), spec.name)
            object.__setattr__(self, spec.name, value)
        if self.drain_batch_size > self.max_queue_size:
            raise CrackleConfigError(
                f"drain_batch_size={self.drain_batch_size} must not exceed max_queue_size={self.max_queue_size}"
            )

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> "CrackleConfig":
        """Keyword arguments, else CRACKLE_* variables of ``environ`` (default os.environ), else defaults."""
        environ = os.environ if environ is None else environ
        known = {spec.name for spec in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise CrackleConfigError(f"unknown configuration argument(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name in known:
            if name in kwargs and kwargs[name] is not None:
                values[name] = _check(name, kwargs[name], name)
                continue
            variable = env_name(name)
            raw = environ.get(variable, "")
            if raw.strip():
                values[name] = _check(name, raw, variable)
        return cls(**values)


def env_name(field_name: str) -> str:
    return "CRACKLE_" + field_name.upper()


# ------------------------------------------------------------------ checking
_POSITIVE_INTS = {
    "cool_interval_millis",
    "max_queue_size",
    "drain_batch_size",
    "kiln_capacity",
    "max_groups",
    "max_metrics_per_group",
    "export_timeout_millis",
    "max_links",
    "pattern_memory_cools",
    "call_graph_spans",
}


def _check(name: str, value: Any, source: str) -> Any:
    """Parse (strings from the environment) and validate one value; ``source`` names it in errors."""
    if name in _POSITIVE_INTS:
        return _positive_int(value, source)
    if name == "enabled":
        return parse_boolean(value, source)
    if name == "group_by":
        if callable(value):
            return value
        names = _name_list(value, source)
        if not names:
            raise _error(source, value, "expected at least one attribute name (or a callable)")
        return names
    if name in ("attributes_allow", "attributes_deny"):
        return _name_list(value, source)
    if name == "max_cooler_share":
        return _fraction(value, source)
    if name == "profile":
        return _profile(value, source)
    if name == "exporter":
        text = str(value).strip().lower()
        if text not in EXPORTERS:
            raise _error(source, value, f"expected one of {', '.join(EXPORTERS)}")
        return text
    return value


def _error(source: str, value: Any, expected: str) -> CrackleConfigError:
    return CrackleConfigError(f"{source}={value!r}: {expected}")


def _positive_int(value: Any, source: str) -> int:
    if isinstance(value, bool):
        raise _error(source, value, "expected a positive integer")
    try:
        number = int(value.strip()) if isinstance(value, str) else value
    except ValueError:
        raise _error(source, value, "expected a positive integer") from None
    if not isinstance(number, int) or number < 1:
        raise _error(source, value, "expected a positive integer")
    return number


def _fraction(value: Any, source: str) -> float:
    if isinstance(value, bool):
        raise _error(source, value, "expected a number in (0, 1]")
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise _error(source, value, "expected a number in (0, 1]") from None
    if not 0.0 < number <= 1.0:  # also rejects NaN
        raise _error(source, value, "expected a number in (0, 1]")
    return number


def parse_boolean(value: Any, source: str) -> bool:
    """true/false (also 1/0, yes/no, on/off), case-insensitive; CrackleConfigError naming ``source`` otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _error(source, value, "expected true or false")


def _name_list(value: Any, source: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    try:
        names = tuple(str(item).strip() for item in items)
    except TypeError:
        raise _error(source, value, "expected a comma-separated list or a sequence of names") from None
    names = tuple(n for n in names if n)
    for n in names:
        if "*" in n[1:-1] or (len(n) > 1 and n.startswith("*") and n.endswith("*")):
            raise _error(source, value, f"{n!r}: '*' may only end a prefix ('db.*') or start a suffix ('*.port')")
    return names


def _profile(value: Any, source: str) -> ThermalProfile:
    if isinstance(value, ThermalProfile):
        return value
    factory = PROFILES.get(str(value).strip().lower())
    if factory is None:
        raise _error(source, value, f"expected one of {', '.join(PROFILES)}")
    return factory()
