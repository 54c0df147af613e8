"""Detection quality on labelled scenarios: precision, recall and F1 per detector.

Every scenario in crackle_otel.scenarios is generated with several fixed seeds
and cooled with the chosen profile. A reported pattern is a true positive when
the scenario expects it or accepts it as a real secondary effect, a false
positive otherwise; recall counts the expected findings that were made.

    python benchmarks/quality.py [--seeds 5] [--profile default|fast|slow]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from crackle_otel import PatternKind, ThermalProfile
from crackle_otel.detect import run_detectors
from crackle_otel.scenarios import HARD_SCENARIOS, SCENARIOS

DETECTOR_OF_KIND = {
    PatternKind.CLUSTERING: "clustering",
    PatternKind.OUTLIER: "clustering",
    PatternKind.PHASE_TRANSITION: "phase_transition",
    PatternKind.CONSERVATION: "conservation",
    PatternKind.CONSERVATION_VIOLATION: "conservation",
    PatternKind.CONSTANT: "conservation",
    PatternKind.CORRELATION: "correlation",
    PatternKind.LEAD_LAG: "correlation",
    PatternKind.ATTRIBUTION: "attribution",
}
PROFILES = {"fast": ThermalProfile.fast_cooling, "default": ThermalProfile.default, "slow": ThermalProfile.slow_cooling}


def evaluate(profile: ThermalProfile, seeds: int, scenarios: dict, verbose: bool = False, detect=None) -> dict:
    """Score ``detect(matrix)`` (default: crackle's detectors at ``profile``) on every scenario and seed."""
    tp = defaultdict(int)
    fp = defaultdict(int)
    found = defaultdict(int)
    expected = defaultdict(int)
    noise_patterns = []
    problems = []
    for name, make in scenarios.items():
        for seed in range(seeds):
            scenario = make(seed=seed)
            if detect is None:
                patterns, errors = run_detectors(scenario.matrix, profile)
            else:
                patterns, errors = detect(scenario.matrix), {}
            if errors:
                problems.append(f"{name}/{seed}: detector errors {errors}")
            if name == "pure_noise":
                noise_patterns.append(len(patterns))
            for pattern in patterns:
                detector = DETECTOR_OF_KIND[pattern.kind]
                if scenario.is_true_positive(pattern):
                    tp[detector] += 1
                else:
                    fp[detector] += 1
                    if verbose:
                        problems.append(f"{name}/{seed}: false positive {pattern}")
            for expectation in scenario.expected:
                detector = DETECTOR_OF_KIND[expectation.kind]
                expected[detector] += 1
                if any(expectation.matches(p) for p in patterns):
                    found[detector] += 1
                else:
                    problems.append(f"{name}/{seed}: missed {expectation}")
    return {"tp": tp, "fp": fp, "found": found, "expected": expected, "noise": noise_patterns, "problems": problems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--profile", choices=PROFILES, default="default")
    parser.add_argument("--verbose", action="store_true", help="list every false positive")
    parser.add_argument("--baseline", action="store_true",
                        help="also score the seed crate's detectors (benchmarks/crate_port.py) on the standard suite")
    parser.add_argument("--suite", choices=["standard", "hard", "all"], default="all",
                        help="standard: clear effects (tests hold every finding); hard: near-threshold, sparse, small")
    args = parser.parse_args()
    suites = {"standard": SCENARIOS, "hard": HARD_SCENARIOS}
    for suite, scenarios in suites.items():
        if args.suite in (suite, "all"):
            report(suite, scenarios, args)
    if args.baseline:
        from crate_port import crate_detect  # benchmarks/ is on sys.path when run as a script

        report("standard", SCENARIOS, args, detect=crate_detect, who="seed crate's detectors (baseline)")


def report(suite: str, scenarios: dict, args: argparse.Namespace, detect=None, who: str = "crackle") -> None:
    result = evaluate(PROFILES[args.profile](), args.seeds, scenarios, args.verbose, detect)
    print(f"\n[{suite} suite, {who}] profile={args.profile} seeds={args.seeds} scenarios={', '.join(scenarios)}")
    print(f"{'detector':<18}{'precision':>10}{'recall':>8}{'F1':>7}{'TP':>6}{'FP':>6}{'found/expected':>16}")
    for detector in ("clustering", "phase_transition", "conservation", "correlation"):
        tp, fp = result["tp"][detector], result["fp"][detector]
        found, expected = result["found"][detector], result["expected"][detector]
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = found / expected if expected else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        print(f"{detector:<18}{precision:>10.3f}{recall:>8.3f}{f1:>7.3f}{tp:>6}{fp:>6}{found:>9}/{expected:<6}")
    noise = result["noise"]
    if noise:
        print(f"spurious patterns per cool on pure noise (5000 tasks x 50 metrics): "
              f"mean {sum(noise) / len(noise):.2f}, max {max(noise)} over {len(noise)} cools")
    for line in result["problems"]:
        print("  -", line)


if __name__ == "__main__":
    main()
