"""``python -m smart_sim.bench [NAME ...] [--cold]``: run benchmarks, print figures."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from smart_sim.bench import (
    accounts,
    agent,
    boot,
    calls,
    controlplane,
    dashboard,
    domains,
    intake,
    memory,
    node,
    rum,
    tls,
    uptime,
)

BENCHMARKS: dict[str, Callable[..., None]] = {
    "controlplane": controlplane.run,
    "domains": domains.run,
    "accounts": accounts.run,
    "calls": calls.run,
    "memory": memory.run,
    "intake": intake.run,
    "agent": agent.run,
    "tls": tls.run,
    "dashboard": dashboard.run,
    "boot": boot.run,
    "node": node.run,
    "uptime": uptime.run,
    "rum": rum.run,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"some of {', '.join(BENCHMARKS)}; default: all")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="also time the one-time builds (the control plane with an empty Go cache, the "
        "platform's image and the booted servers' image from nothing): minutes",
    )
    args = parser.parse_args()
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(
            f"unknown benchmark {', '.join(sorted(unknown))}; known: {', '.join(BENCHMARKS)}"
        )
    for name in args.names or BENCHMARKS:
        BENCHMARKS[name](cold=args.cold)


if __name__ == "__main__":
    main()
