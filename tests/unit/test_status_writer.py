"""The one status writer: merge patches of what changed (nested keys too), only the
writer's own fields, and an Event for each condition whose reason changed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from smart_operator.conditions import set_condition
from smart_operator.intake.keys import DomainRef
from smart_operator.intake.schema import Heartbeat
from smart_operator.intake.status import PendingHeartbeat, Write, plan_agent
from smart_operator.models.common import Writer
from smart_operator.models.conditions import ConditionType, Reason
from smart_operator.models.domain import AgentStatus, DomainStatus, ServerStatus
from smart_operator.models.experiment import ExperimentStatus
from smart_operator.reconcile.status import StatusWriter, condition_events, merge_patch
from tests.unit.fakes import FakeEvents

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_merge_patch_names_changes_and_nulls_what_is_gone_at_any_depth() -> None:
    old = {"phase": "Ready", "server": {"id": 1, "createRequestedAt": "x", "name": "a"}}
    new = {"phase": "Ready", "server": {"id": 1, "name": "b"}, "dns": {"zoneId": "z"}}
    assert merge_patch(old, new) == {
        "server": {"createRequestedAt": None, "name": "b"},
        "dns": {"zoneId": "z"},
    }
    assert merge_patch(new, new) == {}
    assert merge_patch({"a": [1, 2]}, {"a": [1]}) == {"a": [1]}  # lists are replaced whole
    assert merge_patch({"a": {"b": 1}}, {}) == {"a": None}


def test_events_follow_reason_changes_warnings_for_problems_quiet_starts() -> None:
    start = set_condition([], ConditionType.PAUSED, "False", Reason.ACTIVE, "as usual", 1)
    assert list(condition_events([], start)) == []  # a quiet first appearance
    bad = set_condition(start, ConditionType.DNS_READY, "False", Reason.RECORD_CONFLICT, "x", 1)
    [event] = condition_events(start, bad)
    assert (event.type, event.reason) == ("Warning", "RecordConflict")
    assert event.message == "DNSReady: x"
    assert list(condition_events(bad, bad)) == []  # same reason: nothing new
    good = set_condition(
        bad, ConditionType.DNS_READY, "True", Reason.RECORDS_POINT_AT_SERVER, "y", 1
    )
    assert [(e.type, e.reason) for e in condition_events(bad, good)] == [
        ("Normal", "RecordsPointAtServer")
    ]
    ready = set_condition(good, ConditionType.READY, "True", Reason.READY, "up", 1)
    assert [e.reason for e in condition_events(good, ready)] == ["Ready"]
    down = set_condition(ready, ConditionType.READY, "False", Reason.AGENT_SILENT, "silent", 1)
    assert list(condition_events(ready, down)) == []  # AgentConnected tells that story


class Recorder:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def __call__(self, patch: dict[str, Any]) -> None:
        self.patches.append(patch)


async def test_the_writer_sends_only_changes_of_its_own_fields() -> None:
    read = DomainStatus(
        server=ServerStatus(id=1, create_requested_at=NOW),
        agent=AgentStatus(version="0.1.0", last_seen=NOW),
    )
    patch, events = Recorder(), FakeEvents()
    writer = StatusWriter(read, patch, events)
    status = read.model_copy(deep=True)
    status.server = ServerStatus(id=1)
    status.agent = None  # the operator's copy may be stale: never sent
    await writer.write(status)
    assert patch.patches == [{"server": {"createRequestedAt": None}}]
    await writer.write(status)
    assert len(patch.patches) == 1  # nothing changed since


async def test_the_writer_posts_events_only_for_what_it_wrote() -> None:
    patch, events = Recorder(), FakeEvents()
    writer = StatusWriter(ExperimentStatus(), patch, events)
    status = ExperimentStatus()
    status.conditions = set_condition(
        [], ConditionType.DEPLOYED, "False", Reason.HOST_KEY_MISMATCH, "pinned key differs", 1
    )
    await writer.write(status)
    await writer.write(status)
    assert events.reasons("Warning") == ["HostKeyMismatch"]


def test_the_intake_writes_only_the_agents_part_of_a_domain() -> None:
    beat = PendingHeartbeat(
        Heartbeat(version="0.2.0", started_at=NOW),
        DomainRef("customer-acme", "shop"),
        NOW,
        0.0,
    )
    planned = plan_agent(None, beat, 60)
    assert isinstance(planned, Write)
    assert set(planned.status) <= DomainStatus.fields_of(Writer.INTAKE)
    assert not DomainStatus.fields_of(Writer.INTAKE) & DomainStatus.fields_of(Writer.OPERATOR)
