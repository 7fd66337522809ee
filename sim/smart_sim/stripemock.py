"""Stripe for the tests: stripe-mock, Stripe's own mock API server, and what the tests
need around it.

- ``ensure_stripe_mock``: the binary, built once from the Go module pinned in
  ``sim/tools/stripe-mock/go.mod`` and cached by the hash of that module's files, as
  the control-plane binaries are (``controlplane.binaries``).
- ``StripeMock``: the server as a child process on loopback (its HTTP and HTTPS
  listeners both on 127.0.0.1), ready once it answers, always stopped.
- ``Recorder``: a recording reverse proxy in front of it. stripe-mock is stateless (it
  validates each request against Stripe's OpenAPI specification and answers from
  fixtures), so what a test can prove is in the requests: which were sent, that
  stripe-mock accepted them, and the idempotency keys they carried.
- ``signature`` and ``webhook_event``: webhook payloads signed the way Stripe signs
  them (``Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<payload>">``,
  https://docs.stripe.com/webhooks#verify-manually), so the tests do not use the SDK
  to check the SDK.

stripe-mock is stateless: a created object is not there to read back, a retrieved
subscription always carries the fixture's price, and metadata is not echoed.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from smart_sim.controlplane.binaries import GoBuild, _ensure, _required_version
from smart_sim.controlplane.cluster import free_port
from smart_sim.processes import ManagedProcess

MODULE = Path(__file__).resolve().parents[1] / "tools" / "stripe-mock"
PACKAGE = "github.com/stripe/stripe-mock"
API_KEY = "sk_test_smartserver"  # stripe-mock accepts any key of the right shape
"""The secret key the tests give the operator."""


def ensure_stripe_mock() -> Path:
    """The stripe-mock binary pinned in ``sim/tools/stripe-mock``, built once."""
    version = _required_version(MODULE, PACKAGE)
    build = GoBuild(f"stripe-mock {version}", "stripe-mock", MODULE)
    return _ensure(build, {"stripe-mock": PACKAGE})["stripe-mock"]


def _answers(url: str) -> bool:
    request = urllib.request.Request(f"{url}/v1/customers?limit=1")  # noqa: S310 (loopback)
    request.add_header("Authorization", f"Bearer {API_KEY}")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class StripeMock(ManagedProcess):
    """stripe-mock on free loopback ports; ``url`` is its HTTP API base."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            "stripe-mock",
            [
                str(ensure_stripe_mock()),
                "-http-addr",
                f"127.0.0.1:{self.port}",
                # It always serves HTTPS too, on every address unless told otherwise.
                "-https-addr",
                f"127.0.0.1:{free_port()}",
            ],
            log_dir,
        )

    def start(self) -> StripeMock:
        super().start()
        self.wait_until(lambda: _answers(self.url), timeout=30, what="answer /v1/customers")
        return self


@dataclass(frozen=True)
class Request:
    """One request that went through the recorder, and stripe-mock's answer."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    """The form-encoded body as Stripe's flattened keys (``items[0][price]``)."""
    idempotency_key: str | None
    status: int
    answer: dict[str, Any] = field(default_factory=dict)

    @property
    def creates(self) -> bool:
        """A POST to a collection (``/v1/subscriptions``), not to one object."""
        return self.method == "POST" and re.fullmatch(r"/v1/[a-z_]+", self.path) is not None


class Recorder:
    """A reverse proxy on a free loopback port that forwards to ``upstream`` and
    records every request (``requests``); ``url`` is what the client is pointed at."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                upstream = http.client.HTTPConnection(
                    recorder.upstream.hostname or "127.0.0.1", recorder.upstream.port, timeout=30
                )
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host",)}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    status, answer_headers = answer.status, answer.getheaders()
                finally:
                    upstream.close()
                parts = urlsplit(self.path)
                parsed: Any = {}
                with contextlib.suppress(ValueError):
                    parsed = json.loads(data) if data else {}
                recorder._add(
                    Request(
                        method=self.command,
                        path=parts.path,
                        query=dict(parse_qsl(parts.query)),
                        form=dict(parse_qsl(body.decode(errors="replace"))),
                        idempotency_key=self.headers.get("Idempotency-Key"),
                        status=status,
                        answer=parsed if isinstance(parsed, dict) else {},
                    )
                )
                self.send_response(status)
                for name, value in answer_headers:
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _forward

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _add(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def sent(self, method: str | None = None, path: str | None = None) -> list[Request]:
        """The requests so far, optionally of one method and path prefix."""
        with self._lock:
            found = list(self.requests)
        return [
            r
            for r in found
            if (method is None or r.method == method) and (path is None or r.path.startswith(path))
        ]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def fixture_price(url: str) -> str:
    """The price stripe-mock answers every subscription with (its fixture's): plans
    that use it are in step with what stripe-mock reports, as they would be with
    Stripe."""
    request = urllib.request.Request(f"{url}/v1/subscriptions/sub_probe")  # noqa: S310
    request.add_header("Authorization", f"Bearer {API_KEY}")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        answer = json.loads(response.read())
    return str(answer["items"]["data"][0]["price"]["id"])


# -- webhooks ---------------------------------------------------------------------------


def signature(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header for ``payload``, signed at ``timestamp``."""
    moment = int(time.time()) if timestamp is None else timestamp
    signed = f"{moment}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={moment},v1={digest}"


def webhook_event(
    type: str,
    *,
    customer: str,
    uid: str,
    subscription: str = "sub_test",
    stripe_customer: str = "cus_test",
    created: int | None = None,
    event_id: str | None = None,
    amount: int = 2900,
    currency: str = "usd",
) -> dict[str, Any]:
    """An event of ``type`` as Stripe sends it for a subscription the operator made
    (its metadata names the Customer): invoices in the shape of API versions since
    2025-03-31 (``parent.subscription_details``)."""
    moment = int(time.time()) if created is None else created
    metadata = {"smartserver_customer": customer, "smartserver_uid": uid}
    obj: dict[str, Any]
    if type.startswith("invoice."):
        paid = type == "invoice.paid"
        obj = {
            "id": f"in_{hashlib.sha256(f'{subscription}{moment}'.encode()).hexdigest()[:14]}",
            "object": "invoice",
            "customer": stripe_customer,
            "currency": currency,
            "amount_due": amount,
            "amount_paid": amount if paid else 0,
            "status": "paid" if paid else "open",
            "parent": {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {"subscription": subscription, "metadata": metadata},
            },
        }
    else:
        obj = {
            "id": subscription,
            "object": "subscription",
            "customer": stripe_customer,
            "status": "canceled",
            "metadata": metadata,
        }
    return {
        "id": event_id or f"evt_{hashlib.sha256(f'{type}{moment}{uid}'.encode()).hexdigest()[:20]}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": moment,
        "livemode": False,
        "pending_webhooks": 1,
        "type": type,
        "data": {"object": obj},
    }
