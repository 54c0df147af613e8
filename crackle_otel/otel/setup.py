"""One-call setup: ``configure()`` builds the config, the emitter and the processor, and attaches it.

Metrics: a MeterProvider's readers are fixed when it is built, so ``configure``
cannot add one. To find patterns in your OTel metrics too, pass
``crackle_otel.otel.reader.CrackleMetricReader(...)`` in ``metric_readers=``
when you build your MeterProvider.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from .config import CrackleConfig, CrackleConfigError
from .processor import CrackleSpanProcessor, Emitter
from .selfmetrics import register_self_metrics

logger = logging.getLogger(__name__)

# One processor per provider, even if both the auto-instrumentation hook and the app call configure().
_attached: "weakref.WeakKeyDictionary[Any, CrackleSpanProcessor]" = weakref.WeakKeyDictionary()
_attach_lock = threading.Lock()


def build_emitter(
    config: CrackleConfig,
    resource: Resource | None = None,
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
) -> Emitter | None:
    """The emitter ``config.exporter`` names: OTLP, console or none.

    OTLP goes to ``endpoint`` over ``protocol``; what they leave unset comes from the standard
    OTEL_EXPORTER_OTLP_* variables.
    """
    from .emit import ConsoleEmitter, PatternEmitter  # the OTLP exporters load only when needed

    if config.exporter == "none":
        return None
    if config.exporter == "console":
        return ConsoleEmitter()
    return PatternEmitter.otlp(
        endpoint=endpoint, protocol=protocol, resource=resource,  # type: ignore[arg-type]
        max_links=config.max_links, export_timeout_millis=config.export_timeout_millis,
    )


def _sdk_tracer_provider(tracer_provider: Any) -> Any:
    if tracer_provider is not None:
        provider = tracer_provider
    else:
        provider = trace.get_tracer_provider()
        if not hasattr(provider, "add_span_processor") and type(provider).__name__ == "ProxyTracerProvider":
            # No SDK configured yet: set one up (its resource reads OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES).
            trace.set_tracer_provider(TracerProvider())
            provider = trace.get_tracer_provider()
    if not hasattr(provider, "add_span_processor"):
        raise CrackleConfigError(
            f"crackle needs an SDK TracerProvider (with add_span_processor), got {type(provider).__name__}"
        )
    return provider


def attached_processor(tracer_provider: Any = None) -> CrackleSpanProcessor | None:
    """The processor ``configure()`` attached to ``tracer_provider`` (default: the global one), if any."""
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    with _attach_lock:
        try:
            return _attached.get(provider)
        except TypeError:  # not weak-referenceable: never attached
            return None


def configure(
    tracer_provider: Any = None,
    meter_provider: MeterProvider | None = None,
    *,
    emitter: Emitter | None = None,
    **config_kwargs: Any,
) -> CrackleSpanProcessor | None:
    """Attach a CrackleSpanProcessor to ``tracer_provider`` (default: the global SDK one).

    Configuration: keyword arguments of ``CrackleConfig``, else ``CRACKLE_*``
    variables. ``emitter`` replaces the one ``exporter`` would build (e.g.
    ``PatternEmitter.otlp(endpoint=...)``). Own counters are registered as OTel
    metrics on ``meter_provider`` (default: the global one). Returns the
    processor, or None when ``enabled`` is false. Calling it again for the same
    provider returns the processor already attached.
    """
    config = CrackleConfig.load(**config_kwargs)
    if not config.enabled:
        logger.info("crackle: disabled by configuration (CRACKLE_ENABLED / enabled=False)")
        return None
    provider = _sdk_tracer_provider(tracer_provider)
    with _attach_lock:
        existing = _attached.get(provider)
        if existing is not None:
            logger.info("crackle: a processor is already attached to this TracerProvider; reusing it")
            return existing
        if emitter is None:
            emitter = build_emitter(config, getattr(provider, "resource", None))
        processor = CrackleSpanProcessor(emitter, config=config)
        provider.add_span_processor(processor)
        _attached[provider] = processor
    register_self_metrics(processor.stats, meter_provider)
    return processor
