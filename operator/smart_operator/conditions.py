"""Status conditions, kept the way ``metav1.Condition`` expects: one entry per type,
``lastTransitionTime`` changing only when the status flips. Types and reasons are the
enums of ``models.conditions``. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from smart_operator.models.common import Condition, ConditionStatus
from smart_operator.models.conditions import ConditionType, Reason

Verdict = tuple[ConditionStatus, Reason, str]
"""A condition's status, reason and message, as a decision returns it."""


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def set_condition(
    conditions: Iterable[Condition],
    type: ConditionType,
    status: ConditionStatus,
    reason: Reason,
    message: str,
    generation: int | None,
    at: datetime | None = None,
) -> list[Condition]:
    """Return ``conditions`` with ``type`` set; other types are kept as they are, and
    a condition keeps its place in the list (an unchanged status is written identically)."""
    current = list(conditions)
    previous = get_condition(current, type)
    transition = (
        previous.last_transition_time
        if previous is not None and previous.status == status
        else (at or now())
    )
    updated = Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=transition,
    )
    if previous is None:
        return [*current, updated]
    return [updated if c.type == type else c for c in current]


def get_condition(conditions: Iterable[Condition], type: ConditionType) -> Condition | None:
    return next((c for c in conditions if c.type == type), None)


def is_true(conditions: Iterable[Condition], type: ConditionType) -> bool:
    found = get_condition(conditions, type)
    return found is not None and found.status == "True"
