"""What the deployer makes of the agent's answer to ``smart-agent reload --json``: a
deploy counts only when the agent says it serves the revision."""

from __future__ import annotations

import json

from smart_operator.clients.ssh import agent_reply
from smart_operator.errors import RevisionRefused, Unreachable


def reply(ok: bool, serving: str | None, error: str | None = None) -> str:
    return json.dumps(
        {"apply": {"ok": ok, "error": error}, "status": {"serving": {"revision": serving}}}
    )


def test_applied_and_serving_the_revision_is_a_deploy() -> None:
    assert agent_reply(0, reply(True, "r-1"), "r-1") == ("r-1", None)


def test_a_refusal_names_the_agents_reason_and_what_it_still_serves() -> None:
    serving, refusal = agent_reply(1, reply(False, "r-0", "goal URL is not https"), "r-1")
    assert serving == "r-0"
    assert isinstance(refusal, RevisionRefused) and "goal URL is not https" in str(refusal)


def test_serving_another_revision_is_not_a_deploy() -> None:
    _, refusal = agent_reply(0, reply(True, "r-0"), "r-1")
    assert isinstance(refusal, RevisionRefused) and "instead of revision r-1" in str(refusal)


def test_an_agent_that_is_not_running_is_retried_and_garbage_is_refused() -> None:
    assert isinstance(agent_reply(3, "", "r-1")[1], Unreachable)
    assert isinstance(agent_reply(0, "<html>", "r-1")[1], RevisionRefused)
