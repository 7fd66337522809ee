"""Operator start-up and shutdown: kopf settings, log-in, the shared context."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from smart_operator.clients.kube import Kube, connect
from smart_operator.handlers.context import Context
from smart_operator.models.common import GROUP
from smart_operator.plans import load_catalog
from smart_operator.settings import OperatorSettings


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    @kopf.on.startup(registry=registry)
    async def configure(
        settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any
    ) -> None:
        # Progress and the last-handled spec live in annotations under our own group,
        # so the structural status schema stays exactly what the CRD declares.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.persistence.finalizer = f"{GROUP}/finalizer"
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 270
        memo.context = Context(
            settings=operator_settings,
            catalog=load_catalog(operator_settings.plans_file),
            kube=Kube(await connect(operator_settings.kubeconfig)),
        )
        if not operator_settings.standalone:
            await memo.context.kube.ensure_peering(operator_settings.peering_name)
        logger.info("plan catalog: %s", ", ".join(memo.context.catalog.names))

    operator_settings = settings

    @kopf.on.cleanup(registry=registry)
    async def close(memo: kopf.Memo, **_: Any) -> None:
        if getattr(memo, "context", None) is not None:
            await memo.context.kube.api.close()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.probe(registry=registry, id="catalog")
    def catalog_probe(memo: kopf.Memo, **_: Any) -> list[str]:
        return list(memo.context.catalog.names) if getattr(memo, "context", None) else []
