"""crackle-otel: emergent patterns in OpenTelemetry telemetry.

The core (this package's top level) is pure Python + numpy: fire tasks or
record metrics into a ``Kiln``, ``cool()`` it, read the ``Pattern``s.
"""

from .errors import CrackleError, InvalidMetricError, KilnCooledError
from .glaze import GlazeLayer
from .kiln import Kiln, KilnStats
from .matrix import MetricMatrix
from .patterns import InvolvedTask, Pattern, PatternKind
from .profile import CoolingRate, ThermalProfile
from .task import CrackleTask, FiredTask, TaskOutput

__version__ = "0.1.0"


def __getattr__(name: str):
    # The OTel adapters load on first use, so the core stays importable without them.
    if name == "configure":
        from .otel.setup import configure

        return configure
    if name == "CrackleSpanProcessor":
        from .otel.processor import CrackleSpanProcessor

        return CrackleSpanProcessor
    if name == "CrackleMetricReader":
        from .otel.reader import CrackleMetricReader

        return CrackleMetricReader
    raise AttributeError(f"module 'crackle_otel' has no attribute {name!r}")


__all__ = [
    "CoolingRate",
    "CrackleError",
    "CrackleMetricReader",
    "CrackleSpanProcessor",
    "CrackleTask",
    "FiredTask",
    "GlazeLayer",
    "InvalidMetricError",
    "InvolvedTask",
    "Kiln",
    "KilnCooledError",
    "KilnStats",
    "MetricMatrix",
    "Pattern",
    "PatternKind",
    "TaskOutput",
    "ThermalProfile",
    "configure",
]
