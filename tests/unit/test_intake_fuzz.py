"""Fuzzing the intake: arbitrary request lines, headers and bodies against the real
aiohttp application (``create_app`` with the in-memory API server of
``test_intake_app``), sent byte for byte over a socket. The intake must answer every
one below 500, log no error, and leave its writers healthy (every accepted report
written, no write failing and retried forever).

The bodies are mostly near the contract (reports and heartbeats with the right key,
experiment and variants, and one field at a time out of shape), so the fuzzing reaches
the checks behind the parser: sequences, counts, incarnations, plausibility, the
statistics. A few seconds by default (deterministic); ``SMART_FUZZ_EXAMPLES=5000``
runs more, with fresh randomness.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from smart_operator.intake.app import create_app
from smart_operator.intake.state import INTAKE
from tests.unit.test_intake_app import KEY, NS, OTHER_KEY, SETTINGS, FakeApiServer, until

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("SMART_FUZZ_EXAMPLES", "0"))


def fuzz(default: int) -> settings:
    return settings(
        max_examples=EXAMPLES or default,
        derandomize=not EXAMPLES,
        database=None,  # no .hypothesis folder in the tree
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class Errors(logging.Handler):
    """Every record at ERROR or above, from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Running:
    port: int
    loop: asyncio.AbstractEventLoop
    app: web.Application
    api: FakeApiServer
    errors: Errors
    answers: dict[int, int] = field(default_factory=dict)

    def call(self, coroutine: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


@pytest.fixture(scope="module")
def intake() -> Iterator[Running]:
    """The intake on a loopback port, its event loop in a thread of its own (hypothesis
    drives the test synchronously)."""
    api = FakeApiServer()
    api.domain("acme-example", KEY)
    api.domain("acme-shop", OTHER_KEY)
    api.experiment("headline", "acme-example")
    api.experiment("checkout", "acme-shop")
    api.experiment(
        "speed",
        "acme-example",
        type="performance",
        template="nginx_optimization",
        goal={"metric": "p95_latency"},
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzzed-intake", daemon=True)
    thread.start()
    errors = Errors()
    logging.getLogger().addHandler(errors)
    app = create_app(SETTINGS.model_copy(update={"admin_token": SecretStr("staff")}), store=api)
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        await until(lambda: app[INTAKE].synced)
        return int(runner.addresses[0][1])

    try:
        port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        running = Running(port, loop, app, api, errors)
        yield running
        # Every accepted report and heartbeat reaches its writer and is written.
        running.call(until_idle(app), timeout=30)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        logging.getLogger().removeHandler(errors)
    print(f"\nintake fuzz: answers by status {dict(sorted(running.answers.items()))}")
    assert not errors.records, [r.getMessage() for r in errors.records]


async def until_idle(app: web.Application) -> None:
    await until(lambda: app[INTAKE].idle, within=30)


def send(port: int, request: bytes) -> int:
    """Send ``request`` and return the answer's status (0: the connection closed with
    no answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    if not answer:
        return 0
    return int(answer.split(b" ", 2)[1])


# -- strategies -----------------------------------------------------------------------

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
counts = st.one_of(
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=10**12),
    st.sampled_from([0, 1, 10**12, 10**12 + 1, -1, 2**63]),
)
times = st.one_of(
    st.sampled_from(
        [
            "2026-03-09T09:00:00Z",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "2026-03-09T09:00:00",
            "1970-01-01T00:00:00Z",
        ]
    ),
    st.datetimes(timezones=st.timezones()).map(lambda t: t.isoformat()),
    st.text(max_size=25),
)


@st.composite
def variant(draw: st.DrawFn) -> dict[str, Any]:
    visitors = draw(counts)
    item: dict[str, Any] = {
        "name": draw(st.sampled_from(["control", "bold", "italic", "CONTROL", ""])),
        "visitors": visitors,
        "conversions": draw(st.one_of(counts, st.just(visitors))),
    }
    if draw(st.booleans()):
        item["latenciesMs"] = draw(
            st.lists(st.one_of(st.floats(min_value=0, max_value=600_000), junk), max_size=40)
        )
    return item


@st.composite
def results_body(draw: st.DrawFn) -> Any:
    body: dict[str, Any] = {
        "experiment": draw(st.sampled_from(["headline", "speed", "checkout", "nope", "Bad"])),
        "sequence": draw(st.one_of(st.integers(min_value=1, max_value=60), counts)),
        "variants": draw(st.lists(variant(), min_size=0, max_size=4)),
    }
    if draw(st.booleans()):
        body["incarnation"] = draw(
            st.one_of(st.sampled_from(["0c9a3e51d2b84f70", "7e44b1a09c5d4f13"]), st.text())
        )
    if draw(st.booleans()):
        body["sentAt"] = draw(times)
    if draw(st.booleans()):
        body["revision"] = draw(st.one_of(st.just("r-7f3a"), st.text(max_size=10)))
    # One field out of shape, sometimes.
    if draw(st.integers(0, 3)) == 0:
        body[draw(st.sampled_from([*body, "extra"]))] = draw(junk)
    return body


@st.composite
def heartbeat_body(draw: st.DrawFn) -> Any:
    body: dict[str, Any] = {
        "version": draw(st.one_of(st.just("0.4.1"), st.text(max_size=10))),
        "startedAt": draw(times),
    }
    if draw(st.booleans()):
        body["experiments"] = draw(
            st.lists(st.fixed_dictionaries({"name": st.text(max_size=8)}), max_size=3)
        )
    if draw(st.integers(0, 3)) == 0:
        body[draw(st.sampled_from([*body, "extra"]))] = draw(junk)
    return body


def encoded(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True, default=str).encode()


bodies = st.one_of(
    results_body().map(encoded),
    heartbeat_body().map(encoded),
    st.recursive(
        junk,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=10,
    ).map(encoded),
    st.binary(max_size=200),
    st.just(b"{" * 5000),  # deep nesting
    st.just(b'{"experiment": "headline", "sequence": 1e400, "variants": []}'),
)

header_bytes = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
authorizations = st.one_of(
    st.just(b"Bearer " + KEY.encode()),
    st.just(b"Bearer " + KEY.encode()),
    st.just(b"Bearer " + OTHER_KEY.encode()),
    st.just(b"Bearer staff"),
    header_bytes.map(lambda b: b"Bearer " + b),
    st.text(max_size=30).map(lambda t: t.replace("\r", "").replace("\n", "").encode()),
    st.just(b""),
)
paths = st.one_of(
    st.sampled_from(["/v1/results", "/v1/heartbeat", "/v1/admin/platform", "/healthz", "/metrics"]),
    st.text(max_size=20).map(lambda t: "/" + "".join(c for c in t if c.isprintable() and c != " ")),
)
content_types = st.one_of(
    st.sampled_from([b"application/json", b"application/merge-patch+json", b"text/plain"]),
    header_bytes,
)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    authorization: bytes | None
    content_type: bytes | None
    body: bytes
    length: int | None  # Content-Length sent, None to send none (then the body is empty)
    extra: tuple[tuple[bytes, bytes], ...]

    def raw(self) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1".encode(), b"Host: intake"]
        if self.authorization is not None:
            lines.append(b"Authorization: " + self.authorization)
        if self.content_type is not None:
            lines.append(b"Content-Type: " + self.content_type)
        body = self.body if self.length is not None else b""
        if self.length is not None:
            lines.append(b"Content-Length: %d" % self.length)
        lines += [name + b": " + value for name, value in self.extra]
        lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


@st.composite
def requests(draw: st.DrawFn) -> Request:
    body = draw(bodies)
    length = draw(st.one_of(st.just(len(body)), st.just(len(body)), st.none(), st.just(0)))
    if length is not None and length > len(body):
        length = len(body)
    return Request(
        method=draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE"])),
        path=draw(paths),
        authorization=draw(st.one_of(authorizations, st.none())),
        content_type=draw(st.one_of(content_types, st.none())),
        body=body,
        length=length,
        extra=tuple(
            draw(
                st.lists(
                    st.tuples(
                        st.sampled_from(
                            [b"X-Forwarded-For", b"Accept", b"Transfer-Encoding", b"Expect"]
                        ),
                        header_bytes,
                    ),
                    max_size=2,
                )
            )
        ),
    )


@fuzz(150)
@given(request=requests())
def test_no_request_makes_the_intake_answer_5xx(intake: Running, request: Request) -> None:
    status = send(intake.port, request.raw())
    intake.answers[status] = intake.answers.get(status, 0) + 1
    assert status < 500, request
    assert not intake.errors.records, [r.getMessage() for r in intake.errors.records]


@fuzz(80)
@given(
    sequence=st.integers(min_value=1, max_value=10**6),
    visitors=st.lists(st.integers(min_value=0, max_value=10**12), min_size=2, max_size=2),
    rates=st.lists(st.floats(min_value=0, max_value=1), min_size=2, max_size=2),
    incarnation=st.sampled_from([None, "0c9a3e51d2b84f70", "7e44b1a09c5d4f13"]),
)
def test_well_formed_reports_of_any_size_are_accepted_or_refused_with_a_reason(
    intake: Running,
    sequence: int,
    visitors: list[int],
    rates: list[float],
    incarnation: str | None,
) -> None:
    """Reports that fit the contract, with counts anywhere up to the schema's 10^12:
    each is 202, 200 (a replay) or a 4xx that says why (409 lower counts, 422
    implausible growth), and whatever is accepted is analysed and written."""
    body: dict[str, Any] = {
        "experiment": "headline",
        "sequence": sequence,
        "variants": [
            {"name": name, "visitors": n, "conversions": math.floor(n * rate)}
            for name, n, rate in zip(("control", "bold"), visitors, rates, strict=True)
        ],
    }
    if incarnation:
        body["incarnation"] = incarnation
    data = json.dumps(body).encode()
    request = Request("POST", "/v1/results", b"Bearer " + KEY.encode(), None, data, len(data), ())
    status = send(intake.port, request.raw())
    intake.answers[status] = intake.answers.get(status, 0) + 1
    assert status in (200, 202, 409, 422), (status, body)
    assert not intake.errors.records, [r.getMessage() for r in intake.errors.records]


def test_the_fuzzed_intake_wrote_what_it_accepted(intake: Running) -> None:
    """After the fuzzing (the tests above share the process), the writers drain: every
    status they wrote is one the API server took, and the results carry counts."""
    intake.call(until_idle(intake.app), timeout=30)
    written = [w for w in intake.api.writes if w[0] == "experiments"]
    assert written, "the fuzzing never reached a status write"
    status = intake.api.objects[("experiments", NS, "headline")].get("status", {})
    assert status.get("variants")
    staff = Request("GET", "/v1/admin/platform", b"Bearer staff", None, b"", None, ())
    assert send(intake.port, staff.raw()) == 200
    assert intake.answers.get(202, 0) > 0 and intake.answers.get(422, 0) > 0
