"""Signed session cookies, with the standard library only.

A cookie is ``<payload>.<signature>``: the payload is base64url JSON ``{"sub", "exp"}``
(``sub`` is ``customer:<name>`` or ``admin``, ``exp`` a Unix time) and the signature is
base64url HMAC-SHA256 of the payload under the session secret. A cookie that is
malformed, tampered with or past its expiry reads as no session at all.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

COOKIE = "smart_session"
ADMIN = "admin"
CUSTOMER_PREFIX = "customer:"


@dataclass(frozen=True)
class Session:
    """Who is signed in, and until when."""

    subject: str
    expires: float

    @property
    def is_admin(self) -> bool:
        return self.subject == ADMIN

    @property
    def customer(self) -> str | None:
        if self.subject.startswith(CUSTOMER_PREFIX):
            return self.subject[len(CUSTOMER_PREFIX) :]
        return None

    @staticmethod
    def for_customer(name: str, lifetime: float, now: float | None = None) -> Session:
        return Session(CUSTOMER_PREFIX + name, (now or time.time()) + lifetime)

    @staticmethod
    def for_admin(lifetime: float, now: float | None = None) -> Session:
        return Session(ADMIN, (now or time.time()) + lifetime)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Makes and checks session cookies under one secret key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the session secret needs at least 32 bytes")
        self._key = key

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def dump(self, session: Session) -> str:
        body = json.dumps(
            {"sub": session.subject, "exp": int(session.expires)}, separators=(",", ":")
        )
        payload = _b64(body.encode())
        return f"{payload}.{self._mac(payload)}"

    def load(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie carries, or ``None`` if it is missing, malformed,
        tampered with or expired."""
        if not cookie or len(cookie) > 1024 or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        try:
            if not hmac.compare_digest(mac.encode("ascii"), self._mac(payload).encode("ascii")):
                return None
            data = json.loads(_unb64(payload))
        except (UnicodeError, binascii.Error, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        subject, expires = data.get("sub"), data.get("exp")
        if not isinstance(subject, str) or not isinstance(expires, int):
            return None
        if expires <= (now if now is not None else time.time()):
            return None
        return Session(subject, float(expires))
