"""kopf registration of the sweep (``reconcile.sweep``): a background task, started
with the operator and stopped with it, that survives any error (``background``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import kopf

from smart_operator.background import run_forever
from smart_operator.handlers.context import Context, context
from smart_operator.reconcile.sweep import sweep_once
from smart_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


class Sweeper:
    """One sweep round; zone records are scanned every ``dns_sweep_seconds`` only."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.records_swept = time.monotonic()

    async def round(self) -> None:
        cloud = self.ctx.cloud
        if cloud is None:
            return
        settings = self.ctx.settings
        records = time.monotonic() - self.records_swept >= settings.dns_sweep_seconds
        removed = await sweep_once(
            cloud,
            self.ctx.kube,
            datetime.now(UTC),
            settings.sweep_grace_seconds,
            records=records,
        )
        if records:
            self.records_swept = time.monotonic()
        if any(removed.values()):
            log.info("sweep removed %s", removed)


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    tasks: list[asyncio.Task[None]] = []

    @kopf.on.startup(registry=registry)
    async def start_sweep(memo: kopf.Memo, **_: Any) -> None:
        # Runs after the start-up handler that builds the context (registration order).
        if settings.shard != 0:  # one sweep is enough: shard 0's (it sees every Domain)
            return
        sweeper = Sweeper(context(memo))
        tasks.append(
            asyncio.create_task(
                run_forever("the sweep", sweeper.round, settings.sweep_seconds),
                name="cloud sweep",
            )
        )

    @kopf.on.cleanup(registry=registry)
    async def stop_sweep(**_: Any) -> None:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
