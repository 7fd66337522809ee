"""``python -m smart_sim.hetzner``: serve a Hetzner Cloud simulator until interrupted.

Prints the API endpoint (for ``hcloud.Client(api_endpoint=...)``) and the control URL,
then serves on loopback until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

from smart_sim.hetzner.app import HetznerConfig, ProjectConfig
from smart_sim.hetzner.hooks import ServerHooks
from smart_sim.hetzner.runner import HetznerSimulator


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m smart_sim.hetzner", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--time-scale", type=float, default=1.0, help="simulated s per real s")
    parser.add_argument("--rate-limit", type=int, default=3600, help="request budget")
    parser.add_argument("--refill", type=float, default=1.0, help="requests back per second")
    parser.add_argument("--token", default=None, help="the only accepted API token")
    parser.add_argument(
        "--server-quota", type=int, default=None, help="the project's server limit (none)"
    )
    parser.add_argument(
        "--project",
        action="append",
        default=[],
        type=ProjectConfig.parse,
        metavar="TOKEN[:QUOTA[:RATE_LIMIT]]",
        help="another project, reached with its own token, with its own objects, server "
        "limit and request budget (3600 an hour unless given); repeatable",
    )
    parser.add_argument(
        "--ipv4-network",
        default="127.10.0.0/16",
        help="where servers' addresses come from (inside 127.0.0.0/8)",
    )
    parser.add_argument(
        "--boot-dir",
        type=Path,
        default=None,
        help="boot every created server as a Debian system (smart_sim.boot, needs root) with "
        "its overlay here; servers get addresses on a provider network of this run, "
        "described in BOOT_DIR/network.json (its gateway is where host processes listen)",
    )
    return parser.parse_args()


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        hosts: ServerHooks | None = None
        network = args.ipv4_network
        if args.boot_dir is not None:
            from smart_sim.boot import BootManager

            boot = await stack.enter_async_context(BootManager(args.boot_dir))
            hosts, network = boot, boot.server_pool
        config = HetznerConfig(
            time_scale=args.time_scale,
            rate_limit=args.rate_limit,
            refill_per_second=args.refill,
            token=args.token,
            server_quota=args.server_quota,
            projects=tuple(args.project),
            ipv4_network=network,
        )
        sim = await stack.enter_async_context(
            HetznerSimulator(config, hooks=hosts, host=args.host, port=args.port)
        )
        print(f"Hetzner Cloud simulator: {sim.url}", flush=True)
        print(f"  control API: {sim.root_url}/_sim/", flush=True)
        if args.boot_dir is not None:
            print(f"  booted servers: {args.boot_dir} (network.json)", flush=True)
        await stop.wait()


def main() -> None:
    """Run the simulator from the command line."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(_arguments()))


if __name__ == "__main__":
    main()
