"""What the intake's request handlers share, and the typed keys it lives under in the
aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from smart_operator.intake.experiments import ExperimentCache
from smart_operator.intake.keys import KeyCache
from smart_operator.intake.payments import PaymentWriter
from smart_operator.intake.settings import IntakeSettings
from smart_operator.intake.status import GrowthLimit
from smart_operator.intake.writer import HeartbeatWriter, ResultsWriter, Store


@dataclass
class Intake:
    settings: IntakeSettings
    api: Store
    keys: KeyCache
    experiments: ExperimentCache
    results: ResultsWriter
    heartbeats: HeartbeatWriter
    payments: PaymentWriter | None = None
    """Stripe's webhook events onto Customers; None without a Customer store."""

    @property
    def growth_limit(self) -> GrowthLimit:
        return GrowthLimit(
            self.settings.max_visitors_per_second, self.settings.growth_slack_seconds
        )

    @property
    def synced(self) -> bool:
        """Both caches hold a full list: before that every key would look unknown."""
        return self.keys.synced and self.experiments.synced

    @property
    def idle(self) -> bool:
        """Nothing waits to be written and no write is in flight."""
        return self.results.idle and self.heartbeats.idle


SETTINGS = web.AppKey("settings", IntakeSettings)
INTAKE = web.AppKey("intake", Intake)
