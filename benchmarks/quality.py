"""Detection quality on labelled scenarios: precision, recall and F1 per detector.

Every scenario in crackle_otel.scenarios is generated with several fixed seeds
and cooled with the chosen profile. A reported pattern is a true positive when
the scenario expects it or accepts it as a real secondary effect, a false
positive otherwise; recall counts the expected findings that were made.

The *attribution* suite (``crackle_otel.attribution_scenarios``) grows each
scenario from 50 to 4,000 requests, 20 seeds at each size, and prints the
recall at each size and the fewest requests from which it stays at 90 % or
more; then the false attributions per cool on pure noise (50 extra string
attributes of 2-200 values, 4,096 requests).

The *incidents* suite replays ``crackle_otel.otel.simulate``'s shop (frontend,
checkout, cart, payment, catalog: real SDK spans across services, heavy-tailed
latency with stalls) through a default span processor cooled every interval of
span time: healthy, a slow callee (cart's own work 3x / 5x from minute 3), a
network delay into payment (+20 / +50 ms); per scenario the share of seeds whose
first incident names the root cause first (AS@1), the delay from onset to that
report, and every other pattern reported (healthy: every pattern is false).

    python benchmarks/quality.py [--seeds 5] [--profile default|fast|slow] [--suite standard|hard|attribution|incidents|all]
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

from crackle_otel import PatternKind, ThermalProfile
from crackle_otel.attribution_scenarios import ATTRIBUTION_SCENARIOS, attribute_noise
from crackle_otel.cli import positive_int
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
    parser.add_argument("--seeds", type=positive_int, default=5)
    parser.add_argument("--profile", choices=PROFILES, default="default")
    parser.add_argument("--verbose", action="store_true", help="list every false positive")
    parser.add_argument("--baseline", action="store_true",
                        help="also score the seed crate's detectors (benchmarks/crate_port.py) on the standard suite")
    parser.add_argument("--suite", choices=["standard", "hard", "attribution", "incidents", "all"], default="all",
                        help="standard: clear effects (tests hold every finding); hard: near-threshold, sparse, small; "
                        "attribution: requests needed per attribution scenario, false attributions on noise; "
                        "incidents: simulated microservice faults, origin and quiet")
    parser.add_argument("--attribution-seeds", type=int, default=20, help="seeds per size in the attribution suite")
    parser.add_argument("--noise-cools", type=int, default=100, help="cools of pure attribute noise in the attribution suite")
    args = parser.parse_args()
    suites = {"standard": SCENARIOS, "hard": HARD_SCENARIOS}
    for suite, scenarios in suites.items():
        if args.suite in (suite, "all"):
            report(suite, scenarios, args)
    if args.suite in ("attribution", "all"):
        report_attribution(PROFILES[args.profile](), args.attribution_seeds, args.noise_cools, args.profile)
    if args.suite in ("incidents", "all"):
        report_incidents(args.seeds)
    if args.baseline:
        from crate_port import crate_detect  # benchmarks/ is on sys.path when run as a script

        report("standard", SCENARIOS, args, detect=crate_detect, who="seed crate's detectors (baseline)")


def report(suite: str, scenarios: dict, args: argparse.Namespace, detect=None, who: str = "crackle") -> None:
    result = evaluate(PROFILES[args.profile](), args.seeds, scenarios, args.verbose, detect)
    print(f"\n[{suite} suite, {who}] profile={args.profile} seeds={args.seeds} scenarios={', '.join(scenarios)}")
    print(f"{'detector':<18}{'precision':>10}{'recall':>8}{'F1':>7}{'TP':>6}{'FP':>6}{'found/expected':>16}")
    for detector in ("clustering", "phase_transition", "conservation", "correlation", "attribution"):
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


REQUESTS = (50, 100, 150, 200, 300, 400, 600, 800, 1000, 1500, 2000, 3000, 4000)
NOISE_REQUESTS = 4096  # the default kiln capacity: one full window per cool
RECALL_GOAL = 0.9


def attribution_only(profile: ThermalProfile) -> ThermalProfile:
    """The attribution detector alone: consolidation only ever folds other patterns into an attribution."""
    return profile.without_clustering().without_phase_transitions().without_conservation().without_correlations()


def report_attribution(profile: ThermalProfile, seeds: int, noise_cools: int, name: str) -> None:
    profile = attribution_only(profile)
    print(f"\n[attribution suite] profile={name} seeds={seeds} per size; recall of the planted attribution by requests")
    print(f"{'scenario':<16}" + "".join(f"{n:>6}" for n in REQUESTS) + f"{'needed':>9}{'false/cool':>12}")
    for scenario_name, make in ATTRIBUTION_SCENARIOS.items():
        recalls, false = [], 0
        for n in REQUESTS:
            found = 0
            for seed in range(seeds):
                scenario = make(seed=seed, n=n)
                patterns, _ = run_detectors(scenario.matrix, profile)
                found += not scenario.missing(patterns)
                false += sum(not any(e.matches(p) for e in scenario.expected) for p in patterns)
            recalls.append(found / seeds)
        needed = next((n for i, n in enumerate(REQUESTS) if min(recalls[i:]) >= RECALL_GOAL), None)
        print(f"{scenario_name:<16}" + "".join(f"{r:>6.2f}" for r in recalls)
              + f"{needed if needed else '>' + str(REQUESTS[-1]):>9}{false / (seeds * len(REQUESTS)):>12.3f}")
    false_noise = []
    for seed in range(noise_cools):
        patterns, _ = run_detectors(attribute_noise(seed=seed, n=NOISE_REQUESTS).matrix, profile)
        false_noise.append(len(patterns))
    print(f"false attributions per cool on pure noise ({NOISE_REQUESTS} requests; 50 string attributes of 2-200 values "
          f"beside host, route, region, method and a user id, those with over 128 values skipped as high-cardinality): "
          f"mean {sum(false_noise) / noise_cools:.3f}, max {max(false_noise)} over {noise_cools} cools")



# ------------------------------------------------------------------ incidents
INCIDENT_SECONDS = 300.0
INCIDENT_ONSET_S = 180.0


def incident_scenarios():
    from crackle_otel.otel.simulate import Fault

    return {
        "healthy": None,
        "slow cart x3": Fault("cart", INCIDENT_ONSET_S, factor=3.0),
        "slow cart x5": Fault("cart", INCIDENT_ONSET_S, factor=5.0),
        "payment +20 ms": Fault("payment", INCIDENT_ONSET_S, kind="network_delay", delay_ms=20.0),
        "payment +50 ms": Fault("payment", INCIDENT_ONSET_S, kind="network_delay", delay_ms=50.0),
    }


def replay_shop(fault, seed: int) -> list[tuple[float, object]]:
    """(seconds after the traffic's start, pattern) for every pattern a default processor reported."""
    from crackle_otel.otel.processor import CrackleSpanProcessor
    from crackle_otel.otel.simulate import Traffic, replay

    processor = CrackleSpanProcessor(None, max_queue_size=1_000_000, drain_batch_size=1_000_000)
    spans = Traffic(INCIDENT_SECONDS, rate=20, seed=seed, fault=fault).spans()
    start = spans[0].end_time / 1e9
    reported: list[tuple[float, object]] = []
    for now in replay(spans, processor):
        reported.extend((now - start, p) for p in processor.reported_patterns()[len(reported):])
    processor.shutdown()
    return reported


def report_incidents(seeds: int) -> None:
    print(f"\n[incidents suite] simulated shop, {INCIDENT_SECONDS:.0f} s at 20 requests/s, onset at "
          f"{INCIDENT_ONSET_S:.0f} s, default processor cooled every 15 s of span time, seeds={seeds}")
    print(f"{'scenario':<16}{'AS@1':>8}{'delay (s)':>14}{'other patterns':>16}  first incidents' origins")
    for name, fault in incident_scenarios().items():
        right, delays, others, named = 0, [], [], []
        for seed in range(seeds):
            reported = replay_shop(fault, seed)
            incidents = [(at, p) for at, p in reported if p.kind is PatternKind.INCIDENT]
            if fault is None:
                others += [p.kind.slug for _, p in reported]
                continue
            if incidents:
                at, first = incidents[0]
                origin = first.explanation.get("origin.service", "")
                named.append(origin)
                if origin == fault.service:
                    right += 1
                    delays.append(at - fault.at_s)
            others += [p.kind.slug if p.kind is not PatternKind.INCIDENT
                       else f"incident re-reported ({p.explanation.get('origin.service', '')})"
                       for at, p in reported if not incidents or p is not incidents[0][1]]
        as1 = "—" if fault is None else f"{right}/{seeds}"
        delay = f"{min(delays):.0f}-{max(delays):.0f}" if delays else "—"
        print(f"{name:<16}{as1:>8}{delay:>14}{len(others):>16}  {', '.join(named) or '—'}")
        for kind, count in Counter(others).most_common():
            print(f"{'':<16}  other: {count} x {kind}")


if __name__ == "__main__":
    main()
