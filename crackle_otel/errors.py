"""Errors raised by the kiln core."""


class CrackleError(Exception):
    """Base class of every error crackle-otel raises on purpose."""


class KilnCooledError(CrackleError):
    """The kiln was cooled; call ``reset()`` before firing into it again."""


class InvalidMetricError(CrackleError, ValueError):
    """A metric value is not a finite number (or a bool)."""


class CoolInterrupted(CrackleError):
    """A cool was stopped at a safe point (its caller's deadline passed, or shutdown began)."""
