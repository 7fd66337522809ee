"""The intake's HTTP API end to end in one process, against an in-memory API server
that keeps resourceVersions and answers stale writes with a conflict, as the real one
does (``tests/cluster/test_intake.py`` runs the same against the real one)."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from smart_operator.clients.kubeapi import WatchEvent
from smart_operator.errors import Conflict, NotFound
from smart_operator.intake import writer
from smart_operator.intake.app import create_app
from smart_operator.intake.settings import IntakeSettings
from smart_operator.intake.state import INTAKE
from smart_operator.intake.status import rfc3339
from smart_operator.keys import hash_intake_key

NS = "customer-acme"
KEY, OTHER_KEY = "ssk_acme-key", "ssk_other-key"


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


class FakeApiServer:
    """Domains and Experiments with resourceVersions, conditional status patches and
    watches; ``before_write`` runs before each patch is checked (to interleave)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.versions = itertools.count(1)
        self.uids = itertools.count(1)
        self.watchers: list[tuple[str, asyncio.Queue[WatchEvent]]] = []
        self.writes: list[tuple[str, str, dict[str, Any]]] = []
        self.conflicts = 0
        self.before_write: Callable[[], Awaitable[None]] | None = None
        self.synced = asyncio.Event()
        self.synced.set()

    def _notify(self, plural: str, kind: str, obj: dict[str, Any]) -> None:
        for watched, queue in self.watchers:
            if watched == plural:
                queue.put_nowait(WatchEvent(kind, [copy.deepcopy(obj)]))

    def put(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        key = (plural, meta["namespace"], meta["name"])
        kind = "MODIFIED" if key in self.objects else "ADDED"
        meta.setdefault("uid", f"uid-{next(self.uids)}")
        meta.setdefault("creationTimestamp", "2026-03-02T09:00:00Z")
        meta["resourceVersion"] = str(next(self.versions))
        self.objects[key] = obj
        self._notify(plural, kind, obj)
        return obj

    def delete(self, plural: str, namespace: str, name: str) -> None:
        obj = self.objects.pop((plural, namespace, name))
        self._notify(plural, "DELETED", obj)

    def status(self, plural: str, name: str) -> dict[str, Any]:
        return self.objects[(plural, NS, name)].get("status", {})

    async def _get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((plural, namespace, name))
        return copy.deepcopy(obj) if obj else None

    async def get_experiment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get("experiments", namespace, name)

    async def get_domain(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get("domains", namespace, name)

    async def _patch(
        self, plural: str, namespace: str, name: str, version: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        if self.before_write is not None:
            await self.before_write()
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            raise NotFound("kubernetes", name)
        if obj["metadata"]["resourceVersion"] != version:
            self.conflicts += 1
            raise Conflict("kubernetes", name)
        obj["status"] = merge(obj.get("status", {}), status)
        self.writes.append((plural, name, status))
        return copy.deepcopy(self.put(plural, obj))

    async def patch_experiment_status(
        self, namespace: str, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._patch("experiments", namespace, name, resource_version, status)

    async def patch_domain_status(
        self, namespace: str, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._patch("domains", namespace, name, resource_version, status)

    async def watch(self, plural: str) -> AsyncIterator[WatchEvent]:
        await self.synced.wait()
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self.watchers.append((plural, queue))
        items = [copy.deepcopy(o) for (p, _, _), o in self.objects.items() if p == plural]
        yield WatchEvent("SYNC", items)
        while True:
            yield await queue.get()

    async def close(self) -> None:
        pass

    # -- fixtures of the platform ----------------------------------------------------

    def domain(self, name: str, key: str | None, namespace: str = NS) -> dict[str, Any]:
        status = {"intakeKeyHash": hash_intake_key(key)} if key else {}
        return self.put(
            "domains",
            {
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"domain": f"{name}.example"},
                "status": status,
            },
        )

    def experiment(
        self, name: str, domain: str, namespace: str = NS, **spec: Any
    ) -> dict[str, Any]:
        return self.put(
            "experiments",
            {
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "domainRef": domain,
                    "type": "landing_page",
                    "template": "saas_landing",
                    "variants": [{"name": "control"}, {"name": "bold"}],
                    **spec,
                },
            },
        )


@pytest.fixture
def api() -> FakeApiServer:
    server = FakeApiServer()
    server.domain("acme-example", KEY)
    server.domain("acme-shop", OTHER_KEY)
    server.experiment("headline", "acme-example")
    server.experiment("checkout", "acme-shop")
    server.experiment(
        "speed",
        "acme-example",
        type="performance",
        template="nginx_optimization",
        goal={"metric": "p95_latency"},
    )
    return server


SETTINGS = IntakeSettings(
    metrics_port=None,
    flush_interval_seconds=0.2,
    heartbeat_write_seconds=30,
    max_body_bytes=4096,
    drain_seconds=2,
)


async def until(check: Callable[[], Any], within: float = 5.0) -> Any:
    """Poll ``check`` until it returns something truthy, failing after ``within`` s."""
    async with asyncio.timeout(within):
        while True:
            if value := check():
                return value
            await asyncio.sleep(0.01)


@pytest.fixture
async def client(api: FakeApiServer) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(SETTINGS, store=api)
    async with TestClient(TestServer(app)) as test_client:
        await until(lambda: app[INTAKE].synced)
        yield test_client


def report(sequence: int, control: tuple[int, int], bold: tuple[int, int], **extra: Any) -> Any:
    return {
        "experiment": extra.pop("experiment", "headline"),
        "sequence": sequence,
        "variants": [
            {"name": "control", "visitors": control[0], "conversions": control[1]},
            {"name": "bold", "visitors": bold[0], "conversions": bold[1]},
        ],
        **extra,
    }


async def post(
    client: TestClient[Any, Any], body: Any, key: str | None = KEY, path: str = "/v1/results"
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers["Content-Type"] = "application/json"
    response = await client.post(path, data=data, headers=headers)
    return response.status, await response.json()


def intake_idle(client: TestClient[Any, Any]) -> bool:
    return bool(client.app[INTAKE].idle) if client.app else False


# -- refusals -------------------------------------------------------------------------


async def test_no_key_or_a_wrong_key_is_401(client: TestClient[Any, Any]) -> None:
    status, body = await post(client, report(1, (1, 0), (1, 0)), key=None)
    assert (status, body["error"]) == (401, "missing_key")
    response = await client.post(
        "/v1/results", json=report(1, (1, 0), (1, 0)), headers={"Authorization": "Bearer nope"}
    )
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await response.json())["error"] == "unknown_key"


async def raw(client: TestClient[Any, Any], request: bytes) -> tuple[int, dict[str, Any]]:
    """Send ``request`` byte for byte (aiohttp's client would refuse to send a header
    that is not valid text) and read the status and the JSON answer."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    is_json = b"application/json" in head.lower()
    return int(head.split(b" ", 2)[1]), json.loads(body) if is_json else {}


def request_bytes(path: str, authorization: bytes, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: intake\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n".encode()
        + b"Authorization: "
        + authorization
        + b"\r\n\r\n"
        + body
    )


async def test_a_key_that_is_not_a_token_is_401_and_never_logged(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A byte that is not UTF-8 in the key was a 500 (the hash could not encode it) with
    a traceback in the log; any key outside RFC 6750's token characters is now a 401,
    and nothing of it reaches the log."""
    body = json.dumps(report(1, (1, 0), (1, 0))).encode()
    for key in (b"ssk_\xffsecret-material", "ssk_\u00e9secret-material".encode(), b"a b"):
        for path in ("/v1/results", "/v1/heartbeat"):
            status, answer = await raw(client, request_bytes(path, b"Bearer " + key, body))
            assert (status, answer["error"]) == (401, "malformed_key"), (key, path)
    # A control character is refused by aiohttp's parser itself, which logged the line.
    status, _ = await raw(client, request_bytes("/v1/results", b"Bearer secret-material\x7f", body))
    assert status == 400
    admin = request_bytes("/v1/admin/platform", b"Bearer \xffsecret-material", b"")
    status, answer = await raw(client, admin.replace(b"POST", b"GET", 1))
    assert status == 404  # the platform view is off in these settings, and says so
    logged = " ".join(r.getMessage() + str(r.exc_info) for r in caplog.records)
    assert "secret-material" not in logged and "\\udcff" not in logged
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_expect_header_that_is_not_utf8_is_417_not_500(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Found by the fuzzing: aiohttp's own Expect handler echoed the header into its 417
    and failed on a value that is not UTF-8 (a 500, before any middleware). Every route,
    and every 404 and 405, now goes through the intake's; 100-continue still works."""
    body = json.dumps(report(1, (10, 1), (10, 1))).encode()
    for path in ("/v1/results", "/v1/heartbeat", "/nowhere", "/healthz"):
        request = request_bytes(path, b"Bearer " + KEY.encode(), body)
        request = request.replace(b"Connection: close", b"Expect: \xff\xfe\r\nConnection: close")
        status, answer = await raw(client, request)
        assert (status, answer["error"]) == (417, "expectation_failed"), path
    go_on = request_bytes("/v1/results", b"Bearer " + KEY.encode(), body).replace(
        b"Connection: close", b"Expect: 100-continue\r\nConnection: close"
    )
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(go_on)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_the_platform_views_token_may_hold_any_byte(api: FakeApiServer) -> None:
    settings = SETTINGS.model_copy(update={"admin_token": SecretStr("staff-token")})
    app = create_app(settings, store=api)
    async with TestClient(TestServer(app)) as client:
        await until(lambda: app[INTAKE].synced)
        request = request_bytes("/v1/admin/platform", b"Bearer \xff\xfe", b"").replace(
            b"POST", b"GET", 1
        )
        status, answer = await raw(client, request)
        assert (status, answer["error"]) == (401, "unauthorized")
        response = await client.get(
            "/v1/admin/platform", headers={"Authorization": "Bearer staff-token"}
        )
        assert response.status == 200


@pytest.mark.parametrize(
    "started_at",
    [
        "0001-01-01T00:00:00+14:00",  # before year 1 in UTC: no datetime holds it
        "9999-12-31T23:59:59-14:00",  # after year 9999 in UTC
        "1970-01-01T00:00:00Z",  # a clock that was never set
        "2199-01-01T00:00:00Z",
    ],
)
async def test_an_implausible_heartbeat_time_is_400_and_breaks_nothing(
    client: TestClient[Any, Any],
    api: FakeApiServer,
    caplog: pytest.LogCaptureFixture,
    started_at: str,
) -> None:
    """A startedAt of year 1 at +14:00 was accepted (202), and then the writer failed on
    it forever (the time has no UTC form). It is refused with the field named, nothing
    is written, and the next good heartbeat is written as usual."""
    beat = {"version": "0.4.1", "startedAt": started_at, "sentAt": started_at}
    status, body = await post(client, beat, path="/v1/heartbeat")
    assert (status, body["error"]) == (400, "invalid_body")
    assert {d["loc"] for d in body["detail"]} == {"startedAt", "sentAt"}
    assert "not plausible" in body["detail"][0]["message"]
    status, _ = await post(client, report(1, (1, 0), (1, 0), sentAt=started_at))
    assert status == 400
    good = {"version": "0.4.1", "startedAt": "2026-03-02T08:00:00Z"}
    assert (await post(client, good, path="/v1/heartbeat"))[0] == 202
    await until(lambda: api.status("domains", "acme-example").get("agent"))
    await until(lambda: intake_idle(client))
    assert len(api.writes) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_another_domains_experiment_is_403(
    client: TestClient[Any, Any], api: FakeApiServer
) -> None:
    status, body = await post(client, report(1, (1, 0), (1, 0), experiment="checkout"))
    assert (status, body["error"]) == (403, "experiment_of_another_domain")
    assert "belongs to Domain 'acme-shop'" in body["message"]
    status, body = await post(client, report(1, (1, 0), (1, 0), experiment="nonexistent"))
    assert (status, body["error"]) == (403, "experiment_not_found")
    # The same name in another customer's namespace is not reachable either.
    api.domain("rival", "ssk_rival", namespace="customer-rival")
    api.experiment("headline", "rival", namespace="customer-rival")
    await until(lambda: client.app and client.app[INTAKE].keys.lookup("ssk_rival"))
    assert (await post(client, report(1, (1, 0), (1, 0)), key="ssk_rival"))[0] == 202
    await until(lambda: api.objects[("experiments", "customer-rival", "headline")].get("status"))
    assert api.status("experiments", "headline") == {}  # acme's own is untouched


async def test_made_up_experiment_names_cost_few_api_calls_and_then_429(
    api: FakeApiServer,
) -> None:
    """A key's holder sending reports for random names: the first few are looked up
    (403), the rest are answered 429 with Retry-After and cost no call; a real
    Experiment created meanwhile is taken as soon as the watch brings it."""
    gets: list[str] = []
    get_experiment = api.get_experiment

    async def counted(namespace: str, name: str) -> dict[str, Any] | None:
        gets.append(name)
        return await get_experiment(namespace, name)

    api.get_experiment = counted  # type: ignore[method-assign]
    settings = SETTINGS.model_copy(
        update={"miss_lookups_per_domain_burst": 3, "miss_lookups_per_domain_per_second": 0.01}
    )
    app = create_app(settings, store=api)
    async with TestClient(TestServer(app)) as client:
        await until(lambda: app[INTAKE].synced)
        answers = [
            await post(client, report(1, (1, 0), (1, 0), experiment=f"made-up-{i}"))
            for i in range(40)
        ]
        assert [s for s, _ in answers] == [403] * 3 + [429] * 37
        assert answers[-1][1]["error"] == "lookup_throttled"
        assert len(gets) == 3
        response = await client.post(
            "/v1/results",
            json=report(1, (1, 0), (1, 0), experiment="made-up-99"),
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert response.status == 429 and int(response.headers["Retry-After"]) >= 1
        # Another key has its own budget; an Experiment the watch brings costs nothing.
        api.experiment("launch", "acme-example")
        await until(lambda: app[INTAKE].experiments.get(NS, "launch"))
        assert (await post(client, report(1, (1, 0), (1, 0), experiment="launch")))[0] == 202
        status, _ = await post(client, report(1, (1, 0), (1, 0), experiment="x"), key=OTHER_KEY)
        assert status == 403
        assert len(gets) == 4


async def test_oversized_bodies_are_413(client: TestClient[Any, Any]) -> None:
    big = report(1, (1, 0), (1, 0), revision="r" * 100)
    big["padding"] = "x" * 5000
    status, body = await post(client, big)
    assert (status, body["error"]) == (413, "too_large")
    assert body["detail"] == {"limit": 4096}

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(10):
            yield b" " * 1000

    response = await client.post(
        "/v1/results",
        data=chunks(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert response.status == 413


async def test_malformed_bodies_are_400_with_the_reason(client: TestClient[Any, Any]) -> None:
    status, body = await post(client, b"{not json")
    assert (status, body["error"]) == (400, "invalid_json")
    bad = report(1, (10, 20), (1, 0))
    bad["sequence"] = "1"
    status, body = await post(client, bad)
    assert (status, body["error"]) == (400, "invalid_body")
    assert body["detail"] == [
        {"loc": "sequence", "message": "Input should be a valid integer"},
        {"loc": "variants[0]", "message": "conversions (20) cannot exceed visitors (10)"},
    ]
    response = await client.post(
        "/v1/results",
        data="experiment=headline",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "text/plain"},
    )
    assert response.status == 415


async def test_unknown_variants_and_missing_timings_are_422(client: TestClient[Any, Any]) -> None:
    body = report(1, (1, 0), (1, 0))
    body["variants"][1]["name"] = "italic"
    status, answer = await post(client, body)
    assert (status, answer["error"]) == (422, "unknown_variant")
    assert answer["message"] == (
        "Experiment 'headline' has no variant 'italic'; its variants are control, bold"
    )
    status, answer = await post(client, report(1, (10, 0), (10, 0), experiment="speed"))
    assert (status, answer["error"]) == (422, "missing_latencies")


async def test_unknown_paths_and_methods_answer_json(client: TestClient[Any, Any]) -> None:
    response = await client.get("/v1/results")
    assert response.status == 405 and (await response.json())["error"] == "method_not_allowed"
    response = await client.get("/v2/anything")
    assert response.status == 404 and (await response.json())["error"] == "not_found"


async def test_not_ready_until_the_caches_are_filled(api: FakeApiServer) -> None:
    api.synced.clear()
    app = create_app(SETTINGS, store=api)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/healthz")).status == 503
        status, body = await post(client, report(1, (1, 0), (1, 0)))
        assert (status, body["error"]) == (503, "starting")
        api.synced.set()
        await until(lambda: app[INTAKE].synced)
        assert (await client.get("/healthz")).status == 200
        status, _ = await post(client, report(1, (1, 0), (1, 0)))
        assert status == 202


async def test_rejections_are_counted_by_reason(client: TestClient[Any, Any]) -> None:
    def rejected(reason: str) -> float:
        for line in metrics_text.splitlines():
            if line.startswith("smartserver_intake_rejected_total{") and reason in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    metrics_text = await (await client.get("/metrics")).text()
    before = rejected('reason="unknown_key"')
    await post(client, report(1, (1, 0), (1, 0)), key="wrong")
    metrics_text = await (await client.get("/metrics")).text()
    assert rejected('reason="unknown_key"') == before + 1


# -- what is written ------------------------------------------------------------------


async def test_a_report_becomes_counts_statistics_and_decision_in_one_write(
    client: TestClient[Any, Any], api: FakeApiServer
) -> None:
    status, body = await post(client, report(1, (5000, 250), (5000, 350)))
    assert (status, body) == (202, {"accepted": True, "experiment": "headline", "sequence": 1})
    await until(lambda: api.status("experiments", "headline").get("lastSequence") == 1)
    result = api.status("experiments", "headline")
    assert [v["visitors"] for v in result["variants"]] == [5000, 5000]
    assert result["decision"]["winner"] == "bold"
    assert result["statistics"]["alwaysValidPValue"] < 0.05
    assert len(api.writes) == 1


async def test_a_replayed_report_changes_nothing(
    client: TestClient[Any, Any], api: FakeApiServer
) -> None:
    await post(client, report(3, (100, 5), (100, 7)))
    await until(lambda: api.status("experiments", "headline").get("lastSequence") == 3)
    await until(lambda: intake_idle(client))
    version = api.objects[("experiments", NS, "headline")]["metadata"]["resourceVersion"]
    for sequence in (3, 2, 1):
        status, body = await post(client, report(sequence, (100, 5), (100, 7)))
        assert (status, body) == (
            200,
            {"accepted": False, "reason": "stale sequence", "lastSequence": 3},
        )
    await until(lambda: intake_idle(client))
    assert api.objects[("experiments", NS, "headline")]["metadata"]["resourceVersion"] == version
    assert len(api.writes) == 1


async def test_counts_that_go_down_are_409(client: TestClient[Any, Any]) -> None:
    await post(client, report(3, (100, 5), (100, 7)))
    status, body = await post(client, report(4, (90, 5), (100, 7)))
    assert (status, body["error"]) == (409, "counts_decreased")
    assert body["detail"] == {"variants": {"control": {"visitors": 100, "conversions": 5}}}


async def test_a_replaced_servers_agent_adds_its_counts(
    client: TestClient[Any, Any], api: FakeApiServer
) -> None:
    """The issue: a new server's agent starts again at sequence 1; the intake answered
    "stale sequence" and dropped its counts (and later 409 forever). With its
    incarnation it is accepted and its counts add to the old server's."""
    old, new = "0c9a3e51d2b84f70", "7e44b1a09c5d4f13"
    for sequence in (1, 2, 3):
        body = report(sequence, (100 * sequence, 5 * sequence), (100 * sequence, 6 * sequence))
        assert (await post(client, {**body, "incarnation": old}))[0] == 202
    await until(lambda: api.status("experiments", "headline").get("lastSequence") == 3)
    status, body = await post(client, {**report(1, (40, 2), (40, 3)), "incarnation": new})
    assert (status, body["accepted"]) == (202, True)
    assert (await post(client, {**report(2, (90, 4), (90, 5)), "incarnation": new}))[0] == 202

    def added() -> Any:
        result = api.status("experiments", "headline")
        counts = [(v["visitors"], v["conversions"]) for v in result.get("variants", [])]
        return result if counts == [(390, 19), (390, 23)] else None

    result = await until(added)
    assert "countsRestartedAt" in result
    assert {i["id"]: i["lastSequence"] for i in result["incarnations"]} == {old: 3, new: 2}
    # Replays of either are answered as before, and change nothing.
    status, body = await post(client, {**report(2, (90, 4), (90, 5)), "incarnation": new})
    assert (status, body["reason"], body["lastSequence"]) == (200, "stale sequence", 2)
    status, body = await post(client, {**report(3, (300, 15), (300, 18)), "incarnation": old})
    assert (status, body["lastSequence"]) == (200, 3)


async def test_counts_no_server_could_have_seen_are_422_and_not_written(
    api: FakeApiServer,
) -> None:
    """One visitor a second at most (a tiny limit, to test it) and a minute of slack:
    after a report, the next may add about 60 visitors, not 1,000; nothing of a refused
    report is written, and the agent's next plausible report is."""
    settings = SETTINGS.model_copy(
        update={"max_visitors_per_second": 1.0, "growth_slack_seconds": 60.0}
    )
    app = create_app(settings, store=api)
    async with TestClient(TestServer(app)) as client:
        await until(lambda: app[INTAKE].synced)
        assert (await post(client, report(1, (10, 1), (10, 1))))[0] == 202
        await until(lambda: api.status("experiments", "headline").get("lastSequence") == 1)
        status, body = await post(client, report(2, (510, 1), (510, 1)))
        assert (status, body["error"]) == (422, "implausible_growth")
        assert body["detail"]["visitors"] == 1000 and body["detail"]["allowed"] < 100
        status, _ = await post(client, report(3, (30, 2), (30, 2)))
        assert status == 202
        await until(lambda: api.status("experiments", "headline").get("lastSequence") == 3)
        await until(lambda: intake_idle(client))
    assert [v["visitors"] for v in api.status("experiments", "headline")["variants"]] == [30, 30]
    assert len(api.writes) == 2


async def test_the_statistics_run_off_the_event_loop(
    client: TestClient[Any, Any], api: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every analysis runs on the intake's analysis threads, so the event loop keeps
    answering agents while one takes its milliseconds."""
    threads: list[str] = []
    plan = writer.plan_results

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return plan(*args, **kwargs)

    monkeypatch.setattr(writer, "plan_results", recording)
    await post(client, report(1, (5000, 250), (5000, 350)))
    await until(lambda: api.status("experiments", "headline").get("lastSequence") == 1)
    assert threads and all(name.startswith("analysis") for name in threads)
    assert threading.main_thread().name not in threads


async def test_counts_that_go_down_are_409_while_the_last_report_is_being_written(
    client: TestClient[Any, Any], api: FakeApiServer
) -> None:
    """While report 3 is being written (taken from the queue, not yet on the status),
    a report 4 with lower counts is still refused: the check sees the write in flight."""
    writing, settle = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        writing.set()
        await settle.wait()

    api.before_write = hold
    await post(client, report(3, (100, 5), (100, 7)))
    await asyncio.wait_for(writing.wait(), 5)
    status, body = await post(client, report(4, (90, 5), (100, 7)))
    settle.set()
    assert (status, body["error"]) == (409, "counts_decreased")
    await until(lambda: api.status("experiments", "headline").get("lastSequence") == 3)


async def test_a_burst_becomes_few_writes_ending_at_the_newest(
    client: TestClient[Any, Any], api: FakeApiServer
) -> None:
    """Reports that arrive while a write is in flight wait as one: the newest. The first
    write is held until the whole burst is answered, so this does not depend on how
    fast the machine posts (a busy one used to post slower than a write took)."""
    settle = asyncio.Event()

    async def hold() -> None:
        await settle.wait()

    api.before_write = hold
    for sequence in range(1, 51):
        status, _ = await post(
            client, report(sequence, (sequence * 10, sequence), (sequence * 10, 0))
        )
        assert status == 202
    settle.set()
    await until(lambda: api.status("experiments", "headline").get("lastSequence") == 50)
    await until(lambda: intake_idle(client))
    assert len(api.writes) <= 2
    assert api.status("experiments", "headline")["variants"][0]["visitors"] == 500


async def test_a_conflicting_write_is_read_again_and_nothing_is_lost(
    client: TestClient[Any, Any], api: FakeApiServer
) -> None:
    """Another replica writes sequence 7 between our read and our write of sequence 5,
    then the operator writes a condition: our write conflicts, is re-planned on the
    fresh object, and finds 5 stale; the next report, 8, lands on top of both."""
    interleaved = iter(
        [
            lambda: api.put(
                "experiments",
                merge(
                    api.objects[("experiments", NS, "headline")],
                    {
                        "status": {
                            "lastSequence": 7,
                            "variants": [
                                {"name": "control", "visitors": 70, "conversions": 7},
                                {"name": "bold", "visitors": 70, "conversions": 9},
                            ],
                        }
                    },
                ),
            ),
            lambda: api.put(
                "experiments",
                merge(
                    api.objects[("experiments", NS, "headline")],
                    {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
                ),
            ),
        ]
    )

    async def other_writers() -> None:
        step = next(interleaved, None)
        if step is not None:
            step()

    api.before_write = other_writers
    await post(client, report(5, (50, 5), (50, 6)))
    await until(lambda: intake_idle(client))
    assert api.status("experiments", "headline")["lastSequence"] == 7
    await post(client, report(8, (80, 8), (80, 10)))
    await until(lambda: api.status("experiments", "headline").get("lastSequence") == 8)
    final = api.status("experiments", "headline")
    assert [v["visitors"] for v in final["variants"]] == [80, 80]
    assert final["conditions"] == [{"type": "Ready", "status": "True"}]
    assert api.conflicts >= 1


async def test_each_written_report_adds_one_history_point_even_after_a_conflict(
    api: FakeApiServer,
) -> None:
    """With a point due at every write, another replica writes report 2 (and its point)
    between our read and our write of report 3: ours conflicts, is planned again on the
    fresh status, and adds its point once, after the other replica's."""
    settings = SETTINGS.model_copy(update={"history_seconds": 0})
    app = create_app(settings, store=api)
    key = ("experiments", NS, "headline")
    between: list[str] = []  # when the other replica received its report 2

    def counts(point: dict[str, Any]) -> list[int]:
        return [c["visitors"] for c in point["counts"]]

    async def other_replica() -> None:
        api.before_write = None
        status = api.objects[key]["status"]
        point = {
            "at": between[0],
            "counts": [
                {"variant": "control", "visitors": 20, "conversions": 2},
                {"variant": "bold", "visitors": 20, "conversions": 3},
            ],
        }
        api.put(
            "experiments",
            merge(
                api.objects[key],
                {"status": {"lastSequence": 2, "history": [*status["history"], point]}},
            ),
        )

    async with TestClient(TestServer(app)) as client:
        await until(lambda: app[INTAKE].synced)
        await post(client, report(1, (10, 1), (10, 1)))
        await until(lambda: api.status("experiments", "headline").get("lastSequence") == 1)
        await until(lambda: intake_idle(client))
        assert [counts(p) for p in api.status("experiments", "headline")["history"]] == [[10, 10]]
        api.before_write = other_replica
        between.append(rfc3339(datetime.now(UTC)))
        await post(client, report(3, (30, 3), (30, 4)))
        await until(lambda: api.status("experiments", "headline").get("lastSequence") == 3)
        await until(lambda: intake_idle(client))
    points = api.status("experiments", "headline")["history"]
    assert [counts(p) for p in points] == [[10, 10], [20, 20], [30, 30]]
    assert api.conflicts == 1 and len(api.writes) == 2  # the history adds no write


async def test_pending_reports_are_written_when_the_intake_stops(api: FakeApiServer) -> None:
    settings = SETTINGS.model_copy(update={"flush_interval_seconds": 300})
    app = create_app(settings, store=api)
    async with TestClient(TestServer(app)) as client:
        await until(lambda: app[INTAKE].synced)
        await post(client, report(1, (10, 1), (10, 1)))
        await until(lambda: api.status("experiments", "headline").get("lastSequence") == 1)
        await post(client, report(2, (20, 1), (20, 2)))  # waits for the 5-minute interval
    assert api.status("experiments", "headline")["lastSequence"] == 2


async def test_a_deleted_experiment_is_not_written(
    client: TestClient[Any, Any], api: FakeApiServer
) -> None:
    settle = asyncio.Event()

    async def hold() -> None:
        await settle.wait()

    api.before_write = hold
    await post(client, report(1, (10, 1), (10, 1)))
    api.delete("experiments", NS, "headline")
    settle.set()
    await until(lambda: intake_idle(client))
    assert api.writes == []
    status, body = await post(client, report(2, (10, 1), (10, 1)))
    assert (status, body["error"]) == (403, "experiment_not_found")


# -- keys and heartbeats --------------------------------------------------------------


async def test_a_new_key_replaces_the_old_one(
    client: TestClient[Any, Any], api: FakeApiServer
) -> None:
    domain = api.objects[("domains", NS, "acme-example")]
    api.put("domains", merge(domain, {"status": {"intakeKeyHash": hash_intake_key("ssk_new")}}))
    await until(lambda: client.app and client.app[INTAKE].keys.lookup("ssk_new"))
    assert (await post(client, report(1, (1, 0), (1, 0)), key=KEY))[0] == 401
    assert (await post(client, report(1, (1, 0), (1, 0)), key="ssk_new"))[0] == 202


async def test_heartbeats_set_the_agent_and_are_throttled(
    client: TestClient[Any, Any], api: FakeApiServer
) -> None:
    beat = {"version": "0.4.1", "startedAt": "2026-03-02T08:00:00Z"}
    status, body = await post(client, beat, path="/v1/heartbeat")
    assert (status, body) == (202, {"accepted": True, "domain": "acme-example"})
    await until(lambda: api.status("domains", "acme-example").get("agent"))
    agent = api.status("domains", "acme-example")["agent"]
    assert agent["version"] == "0.4.1" and agent["startedAt"] == "2026-03-02T08:00:00Z"
    for _ in range(5):
        await post(client, beat, path="/v1/heartbeat")
    await until(lambda: intake_idle(client))
    assert len(api.writes) == 1  # lastSeen is recent: nothing more to write
    await post(client, {**beat, "version": "0.5.0"}, path="/v1/heartbeat")
    await until(lambda: api.status("domains", "acme-example")["agent"]["version"] == "0.5.0")
    assert api.status("domains", "acme-example")["intakeKeyHash"] == hash_intake_key(KEY)
