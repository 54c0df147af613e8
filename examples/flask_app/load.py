"""Drive the shop service: N checkouts, degrading it at a chosen point (halfway by default).

    python examples/flask_app/load.py --url http://127.0.0.1:5000 --requests 1000

Requests go one after another by default (``--concurrency`` for more), so the
degradation starts at a known request. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def call(url: str, data: bytes | None = None, timeout: float = 10.0) -> int:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def wait_until_up(base_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if call(f"{base_url}/healthz", timeout=1.0) == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{base_url} did not answer /healthz within {timeout_s:.0f} s")
        time.sleep(0.1)


def send_checkouts(base_url: str, count: int, concurrency: int) -> int:
    """Send ``count`` checkouts; return how many did not answer 200."""
    url = f"{base_url}/checkout"
    if concurrency <= 1:
        return sum(call(url) != 200 for _ in range(count))
    with ThreadPoolExecutor(concurrency) as pool:
        return sum(status != 200 for status in pool.map(lambda _: call(url), range(count)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="base URL of the shop service")
    parser.add_argument("--requests", type=int, default=1000, help="checkouts to send")
    parser.add_argument("--degrade-at", type=float, default=0.5, help="fraction of the requests after which to degrade")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--wait", type=float, default=15.0, help="seconds to wait for the service to come up")
    args = parser.parse_args(argv)
    base_url = args.url.rstrip("/")

    wait_until_up(base_url, args.wait)
    call(f"{base_url}/admin/degrade", data=b"off")
    healthy = int(args.requests * args.degrade_at)
    started = time.monotonic()
    failures = send_checkouts(base_url, healthy, args.concurrency)
    print(f"{healthy} healthy checkouts sent", flush=True)
    if call(f"{base_url}/admin/degrade", data=b"on") != 200:
        print("could not degrade the service", file=sys.stderr)
        return 1
    failures += send_checkouts(base_url, args.requests - healthy, args.concurrency)
    print(
        f"{args.requests - healthy} degraded checkouts sent; {failures} failed;"
        f" {args.requests / (time.monotonic() - started):.0f} requests/s",
        flush=True,
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
