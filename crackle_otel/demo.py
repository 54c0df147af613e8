"""`crackle-otel demo`: the review's event stream through a kiln, patterns printed."""

from __future__ import annotations

import argparse

from .kiln import Kiln
from .profile import ThermalProfile
from .scenarios import event_stream


def run_demo(args: argparse.Namespace) -> int:
    scenario = event_stream(seed=args.seed)
    matrix = scenario.matrix
    kiln = Kiln(ThermalProfile.default())
    for i in range(matrix.n_tasks):
        kiln.record(matrix.labels[i], dict(zip(matrix.metric_names, matrix.values[i].tolist())),
                    timestamp=float(matrix.timestamps[i]), identity=matrix.identities[i])
    patterns = kiln.cool()
    print(f"{scenario.description}: {len(patterns)} patterns")
    for pattern in patterns:
        print(pattern)
    return 0
