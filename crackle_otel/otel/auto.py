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

from .config import CrackleConfigError, env_name, parse_boolean

logger = logging.getLogger(__name__)

ENABLED_VARIABLE = env_name("enabled")  # CRACKLE_ENABLED


def post_instrument(**_: object) -> None:
    try:
        if not parse_boolean(os.environ.get(ENABLED_VARIABLE, "false") or "false", ENABLED_VARIABLE):
            return
        from .setup import configure

        processor = configure()
        if processor is not None:
            logger.info("crackle: span processor attached (exporter=%s)", processor.config.exporter)
    except CrackleConfigError as exc:
        logger.error("crackle: not enabled, invalid configuration: %s", exc)
    except Exception:  # must not break the app's auto-instrumentation
        logger.exception("crackle: could not attach the span processor")
