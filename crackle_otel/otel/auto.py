"""Zero-code setup under ``opentelemetry-instrument``.

Registered as an ``opentelemetry_post_instrument`` entry point. The
auto-instrumentation loader calls ``post_instrument()`` with no arguments
after the distro and the configurator have installed the SDK TracerProvider
(and after the instrumentors), so the processor can be added to it.
(Only one configurator runs, so a configurator entry point would be fragile.)

Opt-in: nothing happens unless ``CRACKLE_ENABLED`` is true, so installing the
package never changes an instrumented app by itself. Never raises: a
configuration error is logged (naming the variable) and the app runs on
without crackle.
"""

from __future__ import annotations

import logging
import os
import sys

from .config import CrackleConfig, CrackleConfigError, env_name, parse_boolean

logger = logging.getLogger(__name__)

ENABLED_VARIABLE = env_name("enabled")  # CRACKLE_ENABLED


def post_instrument(**_: object) -> None:
    try:
        if not parse_boolean(os.environ.get(ENABLED_VARIABLE, "false") or "false", ENABLED_VARIABLE):
            return
        from .setup import configure

        processor = configure()
        if processor is not None:
            announce(attached_line(processor.config))
    except CrackleConfigError as exc:
        logger.error("crackle: not enabled, invalid configuration: %s", exc)
    except Exception:  # must not break the app's auto-instrumentation
        logger.exception("crackle: could not attach the span processor")


def attached_line(config: CrackleConfig) -> str:
    """The one line that says crackle is on, and where its patterns go."""
    if config.exporter == "otlp":
        endpoint = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                    or "the default OTLP endpoint")
        target = f"patterns over OTLP to {endpoint}"
    elif config.exporter == "console":
        target = "patterns to the console"
    else:
        target = "patterns not exported (CRACKLE_EXPORTER=none)"
    return f"crackle: span processor attached; {target}; cooling every {config.cool_interval_millis / 1000:g} s"


def announce(line: str) -> None:
    """Log ``line`` at INFO when the app's logging shows it; else write it to stderr (logging's last resort
    shows warnings only, and an app under opentelemetry-instrument rarely configures logging)."""
    if logger.isEnabledFor(logging.INFO) and logger.hasHandlers():
        logger.info(line)
    else:
        print(line, file=sys.stderr, flush=True)
