"""``smart-intake``: the results intake process. Reads ``SMART_INTAKE_*`` settings,
serves the agents' API and ``/healthz`` on ``port`` and ``/metrics`` on
``metrics_port``; SIGTERM drains pending writes before it exits. Run as many
replicas as needed: they share nothing but the API server."""

from __future__ import annotations

import logging

from aiohttp import web

from smart_operator.intake.app import create_app
from smart_operator.intake.settings import IntakeSettings


def main() -> None:
    settings = IntakeSettings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Quieter than INFO: aiohttp's and the client's own chatter.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=None,
        shutdown_timeout=5.0,
    )


if __name__ == "__main__":
    main()
