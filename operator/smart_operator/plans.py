"""The plan catalog: what each plan allows, what it costs, and the Stripe price that
charges for it.

The catalog is configuration (the Helm values mount it as a YAML file; see
``OperatorSettings.plans_file``); ``DEFAULT_CATALOG`` is used when none is given. Stripe
prices belong to one Stripe account, so the built-in catalog names none: with billing
on, each plan needs its ``stripe_price_id`` from the configured catalog. The dollar
price stays beside it for the cost model (the subscription's own amount is shown from
Stripe). Pure: parsing and lookups only.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, Field, RootModel

from smart_operator.models.customer import CustomerSpec, Limits


class Plan(BaseModel):
    """One plan: its limits, its monthly price in US dollars and its Stripe price."""

    title: str
    price_monthly: float = Field(ge=0, description="US dollars per month")
    domains: int = Field(ge=0, description="Most Domains a customer on this plan may have")
    experiments: int = Field(ge=0, description="Most Experiments across all of its Domains")
    stripe_price_id: str | None = Field(
        default=None,
        pattern=r"^price_\w+$",
        description="The recurring Stripe price customers on this plan subscribe to "
        "(price_...); without it, billing cannot subscribe them",
    )


class Catalog(RootModel[dict[str, Plan]]):
    """Plans by name."""

    def get(self, name: str) -> Plan | None:
        return self.root.get(name)

    @property
    def names(self) -> list[str]:
        return sorted(self.root)


DEFAULT_CATALOG = Catalog(
    {
        "starter": Plan(title="Starter", price_monthly=29, domains=1, experiments=3),
        "pro": Plan(title="Pro", price_monthly=99, domains=5, experiments=20),
        "scale": Plan(title="Scale", price_monthly=299, domains=25, experiments=100),
    }
)


def load_catalog(path: Path | None) -> Catalog:
    """Read a catalog from YAML (``{name: {title, price_monthly, domains, experiments,
    stripe_price_id}}``)."""
    if path is None:
        return DEFAULT_CATALOG
    return Catalog.model_validate(yaml.safe_load(path.read_text()))


def effective_limits(plan: Plan, spec: CustomerSpec) -> Limits:
    """The plan's limits with the customer's overrides applied."""
    overrides = spec.limits
    return Limits(
        domains=plan.domains
        if overrides is None or overrides.domains is None
        else overrides.domains,
        experiments=plan.experiments
        if overrides is None or overrides.experiments is None
        else overrides.experiments,
    )
