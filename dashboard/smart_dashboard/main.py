"""``smart-dashboard``: the customer dashboard process. Reads ``SMART_DASHBOARD_*``
settings and serves the pages, ``/events`` and ``/healthz`` on ``host:port``."""

from __future__ import annotations

import logging

from aiohttp import web

from smart_dashboard.app import create_app
from smart_dashboard.settings import DashboardSettings


def main() -> None:
    settings = DashboardSettings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
