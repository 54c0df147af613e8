"""OpenTelemetry adapters: spans and metrics in, patterns out (spans with links and events).

Nothing here is imported by the core; each module imports what it needs directly.
"""
