"""The intake's wire contract: what a body must look like, and how a bad one is told."""

from __future__ import annotations

import json
from typing import Any

import pytest

from smart_operator.intake.schema import (
    MAX_LATENCIES,
    BodyError,
    Heartbeat,
    ResultsReport,
    parse,
)


def report(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "experiment": "homepage-headline",
        "sequence": 3,
        "revision": "r-7f3a",
        "sentAt": "2026-03-02T09:00:00Z",
        "variants": [
            {"name": "control", "visitors": 120, "conversions": 6},
            {"name": "outcome-headline", "visitors": 118, "conversions": 9},
        ],
    }
    body.update(changes)
    return body


def problems(model: type[ResultsReport] | type[Heartbeat], body: Any) -> dict[str, str]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(BodyError) as caught:
        parse(model, raw)
    return {d["loc"]: d["message"] for d in caught.value.detail}


def test_a_report_in_camel_case_or_snake_case() -> None:
    parsed = parse(ResultsReport, json.dumps(report()).encode())
    assert parsed.sequence == 3 and parsed.variants[1].conversions == 9
    snake = report(sent_at="2026-03-02T09:00:00+01:00")
    del snake["sentAt"]
    snake["variants"][0]["latencies_ms"] = [12.5, 80]
    parsed = parse(ResultsReport, json.dumps(snake).encode())
    assert parsed.variants[0].latencies_ms == [12.5, 80.0]


def test_not_json_is_told_as_such() -> None:
    with pytest.raises(BodyError) as caught:
        parse(ResultsReport, b'{"experiment": ')
    assert caught.value.code == "invalid_json"
    assert caught.value.message.startswith("the body is not JSON")


def test_each_problem_is_named_with_its_location() -> None:
    body = report(sequence="4", unknown=1)
    body["variants"][1]["conversions"] = -1
    found = problems(ResultsReport, body)
    assert found == {
        "sequence": "Input should be a valid integer",
        "unknown": "Extra inputs are not permitted",
        "variants[1].conversions": "Input should be greater than or equal to 0",
    }


def test_conversions_cannot_exceed_visitors() -> None:
    body = report()
    body["variants"][0]["conversions"] = 500
    assert problems(ResultsReport, body) == {
        "variants[0]": "conversions (500) cannot exceed visitors (120)"
    }


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"sequence": 0}, "sequence"),
        ({"experiment": "Not_A_Name"}, "experiment"),
        ({"variants": []}, "variants"),
        ({"sentAt": "2026-03-02T09:00:00"}, "sentAt"),  # a time without its zone
        ({"revision": "has space"}, "revision"),
    ],
)
def test_bounds(changes: dict[str, Any], where: str) -> None:
    assert where in problems(ResultsReport, report(**changes))


def test_variant_names_are_unique() -> None:
    body = report()
    body["variants"][1]["name"] = "control"
    assert "variant names must be unique" in problems(ResultsReport, body)["(body)"]


def test_latencies_are_bounded() -> None:
    body = report()
    body["variants"][0]["latenciesMs"] = [1.0] * (MAX_LATENCIES + 1)
    assert "variants[0].latenciesMs" in problems(ResultsReport, body)
    body["variants"][0]["latenciesMs"] = [-1]
    assert "variants[0].latenciesMs[0]" in problems(ResultsReport, body)


def test_a_body_that_is_not_an_object() -> None:
    assert problems(ResultsReport, [1, 2]) == {"(body)": "Input should be an object"}


def test_a_heartbeat() -> None:
    beat = parse(
        Heartbeat,
        b'{"version": "0.4.1", "startedAt": "2026-03-02T08:00:00Z",'
        b' "experiments": [{"name": "homepage-headline", "revision": "r-7f3a"}]}',
    )
    assert beat.version == "0.4.1" and beat.experiments[0].name == "homepage-headline"
    assert set(problems(Heartbeat, {"version": "0.4 beta"})) == {"version", "startedAt"}
