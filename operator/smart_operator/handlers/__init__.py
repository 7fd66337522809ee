"""kopf registrations: thin handlers that call the pure layers and the clients.

``register(registry, settings)`` adds every handler to a registry, so the process
entry point (and tests) decide which registry and which settings are used.
"""

from __future__ import annotations

import kopf

from smart_operator.handlers import customer, domain, experiment, lifecycle, sweep
from smart_operator.settings import OperatorSettings


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    lifecycle.register(registry, settings)
    customer.register(registry, settings)
    domain.register(registry, settings)
    experiment.register(registry, settings)
    sweep.register(registry, settings)


__all__ = ["register"]
