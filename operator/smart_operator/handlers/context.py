"""What every handler shares: settings, the plan catalog and the API client.
Created once at operator start-up and kept in kopf's memo."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from smart_operator.clients.kube import Kube
from smart_operator.plans import Catalog
from smart_operator.settings import OperatorSettings


@dataclass
class Context:
    settings: OperatorSettings
    catalog: Catalog
    kube: Kube


def context(memo: Any) -> Context:
    return cast(Context, memo.context)
