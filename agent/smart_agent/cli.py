"""``smart-agent run|status|reload|stop-nginx``: the agent's command line.

``run`` is the systemd service (or a simulated host's process); ``status`` and
``reload`` talk to the running agent over its control socket, and ``status`` falls back
to reading the database when no agent runs. ``stop-nginx`` ends the agent's nginx (a
simulated host's teardown). The commands print for people by default and JSON with
``--json``; exit codes: 0 done, 1 refused (for example ``nginx -t`` failed), 2 usage or
settings, 3 no agent running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any

from pydantic import ValidationError

from smart_agent import __version__
from smart_agent.agent import Agent, AgentLocked, offline_status
from smart_agent.control import AgentNotRunning, call
from smart_agent.nginx import Nginx
from smart_agent.settings import AgentSettings, load_settings

EXIT_REFUSED = 1
EXIT_SETTINGS = 2
EXIT_NOT_RUNNING = 3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="smart-agent", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"smart-agent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="serve, count and report until stopped")
    status = commands.add_parser("status", help="what the agent is doing")
    status.add_argument("--json", action="store_true", help="print JSON")
    reload = commands.add_parser("reload", help="apply the deployments now (after a switch)")
    reload.add_argument("--json", action="store_true", help="print JSON")
    reload.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    commands.add_parser("stop-nginx", help="stop the agent's nginx")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ValidationError as exc:
        print(f"smart-agent: bad settings:\n{exc}", file=sys.stderr)
        sys.exit(EXIT_SETTINGS)
    if args.command == "run":
        sys.exit(run(settings))
    if args.command == "status":
        sys.exit(show_status(settings, as_json=args.json))
    if args.command == "reload":
        sys.exit(reload_now(settings, as_json=args.json, timeout=args.timeout))
    Nginx(settings).stop()


def run(settings: AgentSettings) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    if settings.nice:
        os.nice(settings.nice)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with Agent.open(settings) as agent:
            await agent.run(stop)

    try:
        asyncio.run(serve())
    except AgentLocked as exc:
        print(f"smart-agent: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    return 0


def show_status(settings: AgentSettings, *, as_json: bool) -> int:
    try:
        status = asyncio.run(call(settings.control_socket, "GET", "/status", seconds=10))
        code = 0
    except AgentNotRunning:
        status = offline_status(settings)
        code = EXIT_NOT_RUNNING
    print(json.dumps(status, indent=2) if as_json else format_status(status))
    return code


def reload_now(settings: AgentSettings, *, as_json: bool, timeout: float) -> int:
    try:
        reply = asyncio.run(call(settings.control_socket, "POST", "/reload", seconds=timeout))
    except AgentNotRunning as exc:
        print(f"smart-agent: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    applied = reply["apply"]
    if as_json:
        print(json.dumps(reply, indent=2))
    elif applied["ok"]:
        print(f"applied: {_serving_line(reply['status'].get('serving'))}")
    else:
        print(f"refused, the previous configuration keeps serving: {applied['error']}")
    return 0 if applied["ok"] else EXIT_REFUSED


def _serving_line(serving: dict[str, Any] | None) -> str:
    if not serving:
        return "no experiment"
    shares = ", ".join(f"{name} {share:g}%" for name, share in serving["shares"].items())
    counted = "counted" if serving["counted"] else "not counted"
    return (
        f"{serving['experiment']} revision {serving['revision']} "
        f"({serving['mode']}, {counted}): {shares}"
    )


def format_status(status: dict[str, Any]) -> str:
    """``status`` for people: one line per concern."""
    agent = status["agent"]
    lines = []
    if agent.get("running"):
        lines.append(
            f"smart-agent {agent['version']} running, pid {agent['pid']}, since "
            f"{agent['startedAt']}, root {agent['root']}"
        )
    else:
        lines.append(f"smart-agent {agent['version']} is not running (root {agent['root']})")
    nginx = status["nginx"]
    pid = nginx.get("pid")
    text = f"nginx: pid {pid} on {nginx['listen']}" if pid else "nginx: not running"
    last = nginx.get("lastApply")
    if nginx.get("config"):
        text += f", configuration {nginx['config']}"
    if last:
        verdict = "ok" if last["ok"] else f"REFUSED: {last['error']}"
        text += f"; last apply ({last['reason']}) {verdict}"
    lines.append(text)
    if status.get("saltDay"):
        lines.append(f"salt day: {status['saltDay']} (UTC)")
    if "serving" in status:
        lines.append(f"serving: {_serving_line(status['serving'])}")
    for name, problem in (status.get("problems") or {}).items():
        lines.append(f"problem: {name}: {problem}")
    for exp in status.get("experiments", []):
        counts = "; ".join(
            f"{variant} {c['visitors']} visitors {c['conversions']} conversions"
            for variant, c in exp["variants"].items()
        )
        report = f"sequence {exp['sequence']}, acknowledged {exp['ackedSequence'] or '-'}"
        if exp.get("pendingSequence"):
            report += f", pending {exp['pendingSequence']}"
        if exp.get("lastError"):
            report += f", last error: {exp['lastError']}"
        lines.append(
            f"experiment {exp['name']} (revision {exp['revision']}): {counts or 'no visitors'}"
        )
        lines.append(f"  reports: {report}")
    logs = status.get("log")
    if logs:
        for entry in logs.get("files", []):
            lines.append(
                f"log: {entry['path']} {entry['state']}, at byte {entry['offset']}, "
                f"{entry['behind_bytes']} behind"
            )
        counted = ", ".join(f"{k} {v}" for k, v in sorted(logs.get("lines", {}).items()))
        lines.append(f"log lines: {counted or 'none yet'}")
        if logs.get("lagSeconds") is not None:
            lines.append(f"count lag: {logs['lagSeconds']} s (request to count, last batch)")
    intake = status.get("intake")
    if intake:
        if not intake["url"]:
            lines.append("intake: not configured (counting only)")
        else:
            lines.append(
                f"intake: {intake['url']}: sent {intake['sent']}, delivered "
                f"{intake['delivered']}, refused {intake['refused']}, failed "
                f"{intake['failures']}; heartbeat {intake['heartbeatAt'] or 'never'}"
                + (f"; last error: {intake['lastError']}" if intake["lastError"] else "")
            )
    return "\n".join(lines)
