"""Labelled request-span scenarios for the attribution detector, at any number of requests.

Each builds one span group of ``n`` requests (one server span each) as the
processor records it: ``duration_ms`` (database + application time),
``db.time_ms``, ``http.response.body.size``, ``is_error``,
``http.response.status_code`` and ``event_count`` (a failure records its
exception) as metrics, the failure bits, and descriptive attributes: the host
(8), route (4), region (3), method, a per-user id (high-cardinality: must be
skipped) and whatever the scenario adds. ``expected`` names the attribution a
good cool must make (``attribution:<attribute>=<value>``, on any metric
for a slow or heavy value, on its error rate for a failing one); every other
attribution is false. The quality benchmark finds how many requests each needs
(``requests_needed``) and counts false attributions per cool on pure noise.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .failures import Failure
from .matrix import MetricMatrix
from .patterns import Pattern, PatternKind
from .scenarios import START_TIME, Expectation, Scenario

HOSTS = tuple(f"db-{k}" for k in range(8))
SLOW_HOST = "db-7"  # 1/8 of the traffic
ROUTES = ("/cart", "/search", "/pay", "/home")
FAILING_ROUTE = "/pay"  # 1/4 of the traffic
REGIONS = ("eu-west", "us-east", "ap-south")
TENANTS = tuple(["acme", *(f"tenant-{k:02d}" for k in range(1, 12))])
HEAVY_TENANT = "acme"
SPAN_NAME = "POST /api"
_FAILED = int(Failure.ERROR_STATUS | Failure.EXCEPTION | Failure.HTTP_5XX)


def expect_attribution(attribute: str, value: str, *metrics: str) -> Expectation:
    """An ATTRIBUTION of ``attribute=value`` whose metrics include ``metrics``."""
    return Expectation(PatternKind.ATTRIBUTION, frozenset(metrics), key=f"attribution:{attribute}={value}")


def _is_not_attribution(pattern: Pattern) -> bool:
    # Other detectors' findings are scored by the standard suite, not here.
    return pattern.kind is not PatternKind.ATTRIBUTION


class _Requests:
    """Baseline traffic: ``n`` requests on 8 hosts, 4 routes, 3 regions, 0.5 % failing."""

    def __init__(self, rng: np.random.Generator, n: int) -> None:
        self.rng, self.n = rng, n
        self.host = rng.integers(0, len(HOSTS), n)
        self.route = rng.integers(0, len(ROUTES), n)
        self.region = rng.integers(0, len(REGIONS), n)
        self.db_ms = rng.lognormal(np.log(12), 0.35, n)
        self.app_ms = rng.lognormal(np.log(20), 0.35, n)
        self.body = rng.lognormal(np.log(2_000), 0.3, n)
        self.error_rate = np.full(n, 0.005)
        self.extra: dict[str, list[str]] = {}

    def scenario(self, name: str, description: str, expected: tuple[Expectation, ...] = ()) -> Scenario:
        n, rng = self.n, self.rng
        failed = rng.random(n) < self.error_rate
        columns = {
            "duration_ms": self.db_ms + self.app_ms,
            "db.time_ms": self.db_ms,
            "http.response.body.size": np.round(self.body),
            "is_error": failed.astype(float),
            "http.response.status_code": np.where(failed, 500.0, 200.0),
            "event_count": failed.astype(float),  # the exception event
        }
        users = rng.integers(0, 50 * n, n)  # nearly one user per request: an id, never a population
        attributes = [
            {
                "host.name": HOSTS[self.host[i]],
                "http.route": ROUTES[self.route[i]],
                "http.request.method": "POST" if self.route[i] == 2 else "GET",
                "cloud.region": REGIONS[self.region[i]],
                "enduser.pseudo_id": f"u{users[i]:08d}",
                **{key: values[i] for key, values in self.extra.items()},
            }
            for i in range(n)
        ]
        matrix = MetricMatrix.from_columns(
            columns, labels=[SPAN_NAME] * n, start=START_TIME, interval_s=0.05,
            identities=[(0xA77B0000 + i, 0x5BA40000 + i) for i in range(n)], attributes=attributes,
            failures=np.where(failed, _FAILED, 0),
        )
        return Scenario(name=name, description=description, matrix=matrix, expected=expected,
                        acceptable=(_is_not_attribution,))


def slow_host(seed: int = 0, n: int = 1000, factor: float = 3.0) -> Scenario:
    rng = np.random.default_rng(seed)
    requests = _Requests(rng, n)
    slow = requests.host == HOSTS.index(SLOW_HOST)
    requests.db_ms[slow] *= factor
    requests.app_ms[slow] *= factor
    return requests.scenario(f"slow_host_{factor:g}x", f"{SLOW_HOST} (1/8 of requests) {factor:g}x slower",
                             (expect_attribution("host.name", SLOW_HOST),))


def failing_route(seed: int = 0, n: int = 2000) -> Scenario:
    rng = np.random.default_rng(seed)
    requests = _Requests(rng, n)
    requests.error_rate = np.where(requests.route == ROUTES.index(FAILING_ROUTE), 0.05, 0.005)
    return requests.scenario("failing_route", f"{FAILING_ROUTE} (1/4 of requests) fails 5% vs 0.5% elsewhere",
                             (expect_attribution("http.route", FAILING_ROUTE, "error_rate"),))


def slow_version(seed: int = 0, n: int = 1000, deployed_at: float = 0.6) -> Scenario:
    rng = np.random.default_rng(seed)
    requests = _Requests(rng, n)
    new = np.arange(n) >= int(deployed_at * n)
    requests.app_ms[new] *= 1.8  # ~1.5x the whole request
    requests.extra["service.version"] = ["1.5.0" if late else "1.4.2" for late in new]
    return requests.scenario("slow_version", f"service.version 1.5.0 deployed at {deployed_at:.0%}: ~1.5x slower",
                             (expect_attribution("service.version", "1.5.0"),))


def heavy_tenant(seed: int = 0, n: int = 1000) -> Scenario:
    rng = np.random.default_rng(seed)
    requests = _Requests(rng, n)
    shares = np.array([0.12, *np.full(len(TENANTS) - 1, 0.88 / (len(TENANTS) - 1))])
    tenant = rng.choice(len(TENANTS), n, p=shares)
    heavy = tenant == TENANTS.index(HEAVY_TENANT)
    requests.body[heavy] *= 4  # bigger carts ...
    requests.db_ms[heavy] *= 2  # ... that take the database longer
    requests.extra["app.tenant"] = [TENANTS[t] for t in tenant]
    return requests.scenario("heavy_tenant", f"{HEAVY_TENANT} (12% of requests) sends 4x larger bodies, 2x db time",
                             (expect_attribution("app.tenant", HEAVY_TENANT),))


def attribute_noise(seed: int = 0, n: int = 4096, n_attributes: int = 50) -> Scenario:
    """No effect at all, and 50 extra string attributes of 2-200 values (half uniform, half skewed)."""
    rng = np.random.default_rng(seed)
    requests = _Requests(rng, n)
    for k in range(n_attributes):
        levels = int(rng.integers(2, 201))
        if k % 2:
            weights = 1.0 / np.arange(1, levels + 1)  # Zipf-like: a few common values, a long tail
            picks = rng.choice(levels, n, p=weights / weights.sum())
        else:
            picks = rng.integers(0, levels, n)
        requests.extra[f"noise.attr_{k:02d}"] = [f"v{p}" for p in picks]
    return requests.scenario("attribute_noise", f"{n_attributes} noise string attributes of 2-200 values, no effect")


#: Scenarios with an attribution to find, by name (``seed``, ``n`` = requests).
ATTRIBUTION_SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "slow_host_3x": lambda seed=0, n=1000: slow_host(seed, n, 3.0),
    "slow_host_1.5x": lambda seed=0, n=1000: slow_host(seed, n, 1.5),
    "failing_route": failing_route,
    "slow_version": slow_version,
    "heavy_tenant": heavy_tenant,
}
