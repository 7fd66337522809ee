"""Background loops that must never die: each round's failure is logged and the loop
carries on after a growing pause, so a broken dependency (an API server restarting, a
provider down) neither ends the loop for the life of the process nor spins it.

Pure asyncio (and a metric): no SDK, no kopf.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from smart_operator.errors import ExternalError

log = logging.getLogger(__name__)
RETRIES = Counter(
    "smartserver_background_retries_total",
    "Rounds of a background loop that failed and were tried again after a pause",
    ["loop"],
)


def backoff(failures: int, base: float, most: float) -> float:
    """The pause after ``failures`` failed rounds in a row: doubling from ``base`` up to
    ``most``, with a little jitter so replicas do not align."""
    if failures <= 0:
        return base
    pause = min(most, base * float(2 ** min(failures, 16)))
    return pause * random.uniform(0.9, 1.1)  # noqa: S311 (not for secrets)


async def run_forever(
    name: str,
    one_round: Callable[[], Awaitable[None]],
    interval: float,
    *,
    most: float = 300.0,
    first_delay: float | None = None,
) -> None:
    """Run ``one_round`` every ``interval`` seconds until cancelled. An exception is
    logged and the next round comes after ``backoff``; a success resets the pause."""
    failures = 0
    await asyncio.sleep(interval if first_delay is None else first_delay)
    while True:
        try:
            await one_round()
            failures = 0
        except asyncio.CancelledError:
            raise
        except Exception as error:
            failures += 1
            RETRIES.labels(name).inc()
            pause = backoff(failures, interval, max(most, interval))
            message = "%s failed (%d in a row); trying again in %.0f s: %s"
            if isinstance(error, ExternalError):  # an outside system: its words suffice
                log.warning(message, name, failures, pause, error)
            else:  # a bug: the traceback says where
                log.exception(message, name, failures, pause, error)
            await asyncio.sleep(pause)
            continue
        await asyncio.sleep(interval)
