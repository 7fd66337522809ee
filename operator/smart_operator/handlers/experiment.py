"""kopf registrations for Experiments: a daemon per Experiment runs the reconciler
(``reconcile.experiment``), a spec change wakes it, and deletion takes it off its
server."""

from __future__ import annotations

from typing import Any

import kopf

from smart_operator.errors import TemporaryFailure
from smart_operator.handlers import sharding
from smart_operator.handlers.context import context, run_daemon, wake
from smart_operator.handlers.metrics import reconciling
from smart_operator.models.common import GROUP, VERSION
from smart_operator.ports import ObjectRef
from smart_operator.settings import OperatorSettings

EXPERIMENTS = (GROUP, VERSION, "experiments")


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    ours = sharding.namespace_filter(settings)

    @kopf.on.event(*EXPERIMENTS, registry=registry, when=ours)
    async def experiment_seen(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        if type != "DELETED":
            meta = body.metadata
            ref = ObjectRef("experiments", str(meta["name"]), meta.get("namespace"))
            await sharding.release_foreign_finalizers(context(memo), ref, body)

    @kopf.daemon(*EXPERIMENTS, registry=registry, cancellation_timeout=10, when=ours)
    async def experiment_daemon(
        stopped: kopf.DaemonStopped, body: kopf.Body, uid: str, memo: kopf.Memo, **_: Any
    ) -> None:
        ctx = context(memo)
        await run_daemon(ctx, uid, stopped, "Experiment", lambda: ctx.experiment(dict(body)).run())

    @kopf.on.update(*EXPERIMENTS, field="spec", registry=registry, when=ours)
    async def experiment_changed(uid: str, memo: kopf.Memo, **_: Any) -> None:
        wake(context(memo), uid)

    @kopf.on.delete(*EXPERIMENTS, registry=registry, when=ours)
    async def experiment_deleted(body: kopf.Body, uid: str, memo: kopf.Memo, **_: Any) -> None:
        ctx = context(memo)
        with reconciling("Experiment"):
            try:
                async with ctx.quiet(uid):
                    await ctx.experiment(dict(body)).delete()
            except TemporaryFailure as error:
                raise kopf.TemporaryError(f"cannot reach the server: {error}", delay=10) from error
