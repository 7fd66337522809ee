"""Status conditions, kept the way ``metav1.Condition`` expects: one entry per type,
``lastTransitionTime`` changing only when the status flips. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from smart_operator.models.common import Condition, ConditionStatus


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def set_condition(
    conditions: Iterable[Condition],
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    at: datetime | None = None,
) -> list[Condition]:
    """Return ``conditions`` with ``type`` set; other types are kept as they are."""
    result: list[Condition] = []
    found = False
    for condition in conditions:
        if condition.type != type:
            result.append(condition)
            continue
        found = True
        changed = condition.status != status
        result.append(
            Condition(
                type=type,
                status=status,
                reason=reason,
                message=message,
                observed_generation=generation,
                last_transition_time=(at or now()) if changed else condition.last_transition_time,
            )
        )
    if not found:
        result.append(
            Condition(
                type=type,
                status=status,
                reason=reason,
                message=message,
                observed_generation=generation,
                last_transition_time=at or now(),
            )
        )
    return result


def get_condition(conditions: Iterable[Condition], type: str) -> Condition | None:
    return next((c for c in conditions if c.type == type), None)
