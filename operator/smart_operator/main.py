"""``smart-operator``: the operator process. Reads settings from the environment,
serves ``/metrics`` and ``/healthz``, and runs the kopf handlers cluster-wide."""

from __future__ import annotations

import logging
import os
import sys

import kopf
from prometheus_client import start_http_server
from pydantic import ValidationError

from smart_operator import handlers, shards
from smart_operator.settings import OperatorSettings


def load_settings() -> OperatorSettings:
    """The settings, or an exit with each bad ``SMART_*`` variable named and why."""
    try:
        return OperatorSettings()
    except ValidationError as error:
        lines = [
            # A check of several variables together (the shard) names them in its message.
            "  "
            + (f"SMART_{str(problem['loc'][0]).upper()}: " if problem["loc"] else "")
            + problem["msg"].removeprefix("Value error, ")
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
    # kopf names this process in the peering object by POD_ID: the Domain scheduler
    # reads the same name there to tell whether kopf lets it act.
    os.environ["POD_ID"] = shards.identity()
    registry = kopf.OperatorRegistry()
    handlers.register(registry, settings)
    kopf.run(
        registry=registry,
        clusterwide=True,
        standalone=settings.standalone,
        priority=settings.priority,
        # kopf makes peering mandatory whenever a name is given, even when standalone.
        # Each shard's replicas peer through their own object.
        peering_name=None
        if settings.standalone
        else shards.peering_name(settings.peering_name, settings.shard, settings.shards),
        liveness_endpoint=f"http://{settings.health_host}:{settings.health_port}/healthz",
        memo=kopf.Memo(),
    )


if __name__ == "__main__":
    main()
