"""The one status writer of every kind.

A reconciler builds the status it wants as a model and hands it to ``StatusWriter``,
which:

1. completes it with the kind's summary (phase and the aggregate ``Ready``, a pure
   function of the conditions);
2. keeps only the fields the writer owns (``StatusModel.WRITERS``: the operator never
   sends a field of the intake's, so it never overwrites a newer heartbeat);
3. diffs them against what was last written and sends the difference as one JSON
   merge patch (RFC 7386): changed fields only, ``null`` for what is gone, nested
   objects diffed key by key (a merge patch keeps nested keys it does not name);
   nothing at all when nothing changed;
4. posts an Event for every condition whose reason changed (``condition_events``).

``merge_patch`` and ``condition_events`` are pure and unit-tested.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from smart_operator.models.common import Condition, StatusModel, Writer
from smart_operator.models.conditions import QUIET, WARNINGS, ConditionType
from smart_operator.ports import Events, EventType

S = TypeVar("S", bound=StatusModel)


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that turns ``old`` into ``new`` (empty when equal)."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif value != before or key not in old:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch


@dataclass(frozen=True)
class EventSpec:
    type: EventType
    reason: str
    message: str


def condition_events(before: list[Condition], after: list[Condition]) -> Iterator[EventSpec]:
    """The Events that report ``before`` becoming ``after``: one per condition whose
    reason changed (Warning for ``WARNINGS``), none for a condition that first appears
    with a ``QUIET`` reason. ``Ready`` only reports becoming True: its failures are
    already reported by the condition it mirrors."""
    previous_by_type = {c.type: c for c in before}
    for condition in after:
        previous = previous_by_type.get(condition.type)
        if condition.type == ConditionType.READY:
            if condition.status == "True" and (previous is None or previous.status != "True"):
                yield EventSpec("Normal", condition.reason, condition.message)
            continue
        if previous is not None and previous.reason == condition.reason:
            continue
        if previous is None and condition.reason in QUIET:
            continue
        kind: EventType = "Warning" if condition.reason in WARNINGS else "Normal"
        yield EventSpec(kind, condition.reason, f"{condition.type}: {condition.message}")


PatchStatus = Callable[[dict[str, Any]], Awaitable[None]]


class StatusWriter(Generic[S]):
    """Writes one object's status on behalf of one writer (see the module docstring)."""

    def __init__(
        self,
        written: S,
        patch: PatchStatus,
        events: Events,
        summarize: Callable[[S], S] | None = None,
        writer: Writer = Writer.OPERATOR,
    ) -> None:
        """``written``: the status as read from the object."""
        self._patch = patch
        self._events = events
        self._summarize = summarize
        self._writer = writer
        self._written = written.dump_of(writer)
        self._conditions = list(getattr(written, "conditions", []))

    async def write(self, status: S) -> S:
        """Write what changed of ``status``; return it as summarized."""
        if self._summarize is not None:
            status = self._summarize(status)
        new = status.dump_of(self._writer)
        patch = merge_patch(self._written, new)
        if not patch:
            return status
        await self._patch(patch)
        self._written = new
        conditions = list(getattr(status, "conditions", []))
        for event in condition_events(self._conditions, conditions):
            self._events.post(event.type, event.reason, event.message)
        self._conditions = conditions
        return status
