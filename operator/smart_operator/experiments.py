"""The decisions of the Experiment reconciler that are not about rendering (for those,
see ``revisions``): where an experiment is deployed, and what its status says. Pure.
"""

from __future__ import annotations

from datetime import datetime

from smart_operator.agentbundle import DEPLOY_USER
from smart_operator.conditions import Verdict, get_condition, is_true, set_condition
from smart_operator.models.conditions import ConditionType, Reason, as_reason
from smart_operator.models.domain import Domain
from smart_operator.models.experiment import ExperimentPhase, ExperimentStatus
from smart_operator.ports import Target


def deploy_target(
    domain: Domain | None,
    domain_ref: str,
    namespace: str,
    ssh_port: int,
    client_private_key: str | None,
    previous_client_private_key: str | None = None,
) -> Target | Verdict:
    """The server the experiment is deployed to, or why there is none yet. During an
    operator key rotation, ``previous_client_private_key`` is tried when the server
    refuses ``client_private_key`` (its Domain's pass moves the server to the new key)."""
    if domain is None:
        return (
            "False",
            Reason.DOMAIN_NOT_FOUND,
            f"spec.domainRef: no Domain {domain_ref!r} in namespace {namespace}",
        )
    status = domain.status
    server = status.server if status else None
    if (
        status is None
        or server is None
        or not server.ipv4
        or not server.host_public_key
        or not is_true(status.conditions, ConditionType.SERVER_READY)
        or not is_true(status.conditions, ConditionType.AGENT_INSTALLED)
        or client_private_key is None
    ):
        return (
            "False",
            Reason.WAITING_FOR_SERVER,
            f"Domain {domain_ref} has no running server with its agent yet",
        )
    return Target(
        address=server.ipv4,
        port=ssh_port,
        host_public_key=server.host_public_key,
        client_private_key=client_private_key,
        username=DEPLOY_USER,
        server_id=server.id,
        previous_client_private_key=previous_client_private_key,
    )


SERVED_GRACE_SECONDS = 30.0
"""A heartbeat received this long after a deploy must name the deployed revision
(``served_instead``); the intake writes the first such heartbeat at once."""


def served_instead(
    domain: Domain | None,
    name: str,
    revision: str,
    deployed_at: datetime | None,
    grace_seconds: float,
) -> str | None:
    """What the Domain's agent said it serves of Experiment ``name`` instead of
    ``revision``, in a heartbeat received more than ``grace_seconds`` after the deploy
    (earlier ones may predate it): the revision it named, or "nothing". None while it
    serves ``revision``, or has said nothing since (an agent that does not say is
    never contradicted)."""
    agent = domain.status.agent if domain is not None and domain.status is not None else None
    if agent is None or agent.serving is None or agent.last_seen is None or deployed_at is None:
        return None
    if (agent.last_seen - deployed_at).total_seconds() <= grace_seconds:
        return None
    served = {e.name: e.revision for e in agent.serving}
    if served.get(name) == revision:
        return None
    return served.get(name) or "nothing"


def summarize(status: ExperimentStatus) -> ExperimentStatus:
    """``status`` with the aggregate Ready (serving or why not) and the phase
    ``Concluded`` once a running experiment has a decision."""
    deployed = get_condition(status.conditions, ConditionType.DEPLOYED)
    ready: Verdict = (
        ("True", Reason.SERVING, deployed.message)
        if deployed is not None and deployed.status == "True"
        else (
            "False",
            as_reason(deployed.reason) if deployed else Reason.PENDING,
            deployed.message if deployed else "",
        )
    )
    conditions = set_condition(
        status.conditions, ConditionType.READY, *ready, status.observed_generation
    )
    phase = status.phase
    decision = status.decision
    if phase is ExperimentPhase.RUNNING and decision and decision.outcome != "pending":
        phase = ExperimentPhase.CONCLUDED
    return status.model_copy(update={"conditions": conditions, "phase": phase})
