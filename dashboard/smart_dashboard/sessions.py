"""Signed session cookies, with the standard library only.

A cookie is ``<payload>.<signature>``: the payload is base64url JSON
``{"sub", "exp", "cred"}`` (``sub`` is ``customer:<name>`` or ``admin``, ``exp`` a Unix
time, ``cred`` the credential it was opened with: the uid of the customer's dashboard
ServiceAccount, or a fingerprint of the staff token) and the signature is base64url
HMAC-SHA256 of the payload under the session secret. A cookie that is malformed,
tampered with or past its expiry reads as no session at all; the views end a session
whose credential is no longer the current one.
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
    credential: str
    """The uid of the customer's dashboard account, or the staff token's fingerprint."""

    @property
    def is_admin(self) -> bool:
        return self.subject == ADMIN

    @property
    def customer(self) -> str | None:
        if self.subject.startswith(CUSTOMER_PREFIX):
            return self.subject[len(CUSTOMER_PREFIX) :]
        return None

    @staticmethod
    def for_customer(
        name: str, account_uid: str, lifetime: float, now: float | None = None
    ) -> Session:
        return Session(CUSTOMER_PREFIX + name, (now or time.time()) + lifetime, account_uid)

    @staticmethod
    def for_admin(fingerprint: str, lifetime: float, now: float | None = None) -> Session:
        return Session(ADMIN, (now or time.time()) + lifetime, fingerprint)


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

    def fingerprint(self, secret: str) -> str:
        """A short keyed digest of a secret (the staff token): a staff session records
        it, so a new staff token ends the sessions the old one opened, and a cookie
        reveals nothing of the token."""
        return self._mac("staff-token:" + _b64(secret.encode()))[:22]

    def dump(self, session: Session) -> str:
        body = json.dumps(
            {"sub": session.subject, "exp": int(session.expires), "cred": session.credential},
            separators=(",", ":"),
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
        subject, expires, credential = data.get("sub"), data.get("exp"), data.get("cred")
        if not isinstance(subject, str) or not isinstance(expires, int):
            return None
        if not isinstance(credential, str) or not credential:
            return None  # a cookie from before sessions named their credential
        if expires <= (now if now is not None else time.time()):
            return None
        return Session(subject, float(expires), credential)
