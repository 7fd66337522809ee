"""``smart-operator``: the operator process. Reads settings from the environment,
serves ``/metrics`` and ``/healthz``, and runs the kopf handlers cluster-wide."""

from __future__ import annotations

import logging
import os
import sys

import kopf
from prometheus_client import start_http_server
from pydantic import ValidationError

from smart_operator import handlers
from smart_operator.settings import OperatorSettings


def load_settings() -> OperatorSettings:
    """The settings, or an exit with each bad ``SMART_*`` variable named and why."""
    try:
        return OperatorSettings()
    except ValidationError as error:
        lines = [
            f"  SMART_{'_'.join(str(part) for part in problem['loc'][:1]).upper()}: "
            f"{problem['msg'].removeprefix('Value error, ')}"
            for problem in error.errors()
        ]
        print("smart-operator: invalid settings\n" + "\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    settings = load_settings()
    if settings.kubeconfig is not None:
        # kopf's own log-in and the API client both read it from here.
        os.environ["KUBECONFIG"] = str(settings.kubeconfig)
    kopf.configure(
        debug=settings.debug,
        verbose=settings.debug,
        log_format=kopf.LogFormat[settings.log_format.upper()],
    )
    if not settings.debug:
        # One line per HTTP request or SSH packet drowns what the operator says.
        for chatty in ("httpx", "asyncssh"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    start_http_server(settings.metrics_port, settings.metrics_host)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, settings)
    kopf.run(
        registry=registry,
        clusterwide=True,
        standalone=settings.standalone,
        priority=settings.priority,
        # kopf makes peering mandatory whenever a name is given, even when standalone.
        peering_name=None if settings.standalone else settings.peering_name,
        liveness_endpoint=f"http://{settings.health_host}:{settings.health_port}/healthz",
        memo=kopf.Memo(),
    )


if __name__ == "__main__":
    main()
