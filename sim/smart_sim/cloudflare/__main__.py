"""``python -m smart_sim.cloudflare``: serve a Cloudflare simulator until interrupted.

Prints the API base URL (for ``AsyncCloudflare(base_url=...)`` or
``CLOUDFLARE_BASE_URL``), the simulated account id and the control URL, then serves on
loopback until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from smart_sim.acme import ZoneDns
from smart_sim.cloudflare.app import AccountConfig, CloudflareConfig
from smart_sim.cloudflare.runner import CloudflareSimulator


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m smart_sim.cloudflare", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--time-scale", type=float, default=1.0, help="simulated s per real s")
    parser.add_argument("--rate-limit", type=int, default=1200, help="requests per window")
    parser.add_argument("--token", default=None, help="the only accepted API token")
    parser.add_argument(
        "--account",
        action="append",
        default=[],
        type=AccountConfig.parse,
        metavar="TOKEN:ACCOUNT_ID[:RATE_LIMIT]",
        help="another account, reached with its own token, with its own zones and request "
        "budget (1200 per 5 minutes unless given); repeatable",
    )
    parser.add_argument(
        "--delegate-new-zones",
        action="store_true",
        help="new zones count as delegated: Cloudflare's first check activates them",
    )
    parser.add_argument(
        "--zone-plan",
        default="free",
        choices=("free", "pro", "business", "enterprise"),
        help="the plan of new zones (API-created zones are on Free for real)",
    )
    parser.add_argument(
        "--dns-port",
        type=int,
        default=None,
        help="also answer DNS (UDP) on this port of --host from the zones (smart_sim.acme)",
    )
    return parser.parse_args()


async def _serve(args: argparse.Namespace) -> None:
    config = CloudflareConfig(
        time_scale=args.time_scale,
        rate_limit=args.rate_limit,
        token=args.token,
        accounts=tuple(args.account),
        delegate_new_zones=args.delegate_new_zones,
        default_plan=args.zone_plan,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with CloudflareSimulator(config, host=args.host, port=args.port) as sim:
        print(f"Cloudflare simulator: {sim.url}", flush=True)
        print(f"  account id:  {config.account_id}", flush=True)
        print(f"  control API: {sim.root_url}/_sim/", flush=True)
        if args.dns_port is None:
            await stop.wait()
            return
        async with ZoneDns(sim.context.state, args.host, args.dns_port) as dns:
            print(f"  DNS server:  {dns.address} (udp)", flush=True)
            await stop.wait()


def main() -> None:
    """Run the simulator from the command line."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(_arguments()))


if __name__ == "__main__":
    main()
