"""Which Experiment a Domain's server serves when several name the same Domain."""

from __future__ import annotations

from typing import Any

from smart_operator.models.experiment import Experiment
from smart_operator.revisions import domain_holder


def exp(name: str, created: str, domain: str = "site", **status: Any) -> Experiment:
    meta: dict[str, Any] = {"name": name, "namespace": "customer-a", "creationTimestamp": created}
    if status.pop("deleting", False):
        meta["deletionTimestamp"] = "2026-11-26T12:00:00Z"
    return Experiment.model_validate(
        {
            "apiVersion": "smartserver.ai/v1alpha1",
            "kind": "Experiment",
            "metadata": meta,
            "spec": {
                "domainRef": domain,
                "type": "landing_page",
                "template": "saas_landing",
                "variants": [{"name": "control"}, {"name": "b"}],
            },
            "status": status,
        }
    )


def holder(*experiments: Experiment) -> str | None:
    found = domain_holder(experiments, "site")
    return found.metadata.name if found else None


def test_the_oldest_gets_the_server_then_the_first_by_name() -> None:
    assert holder(exp("b", "2026-11-26T10:00:01Z"), exp("a", "2026-11-26T10:00:02Z")) == "b"
    assert holder(exp("b", "2026-11-26T10:00:00Z"), exp("a", "2026-11-26T10:00:00Z")) == "a"
    assert holder() is None
    assert holder(exp("other", "2026-11-26T09:00:00Z", domain="elsewhere")) is None


def test_one_already_deployed_keeps_the_server_over_an_older_one() -> None:
    older = exp("older", "2026-11-26T09:00:00Z")
    deployed = exp("deployed", "2026-11-26T10:00:00Z", deployedRevision="r1", phase="Running")
    assert holder(older, deployed) == "deployed"


def test_deleted_and_never_deployed_failed_experiments_do_not_compete() -> None:
    newer = exp("newer", "2026-11-26T10:00:00Z")
    assert holder(exp("gone", "2026-11-26T09:00:00Z", deleting=True), newer) == "newer"
    assert holder(exp("broken", "2026-11-26T09:00:00Z", phase="Failed"), newer) == "newer"
    # A config error after a deploy leaves the previous revision serving: it still holds.
    still = exp("still", "2026-11-26T09:00:00Z", phase="Failed", deployedRevision="r1")
    assert holder(still, newer) == "still"
