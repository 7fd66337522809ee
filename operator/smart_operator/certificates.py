"""When a Domain's certificate is renewed, and what its condition says. Pure.

A certificate is renewed at two thirds of its lifetime (Let's Encrypt's advice for
90-day certificates: 30 days before expiry), moved earlier by a jitter of up to a tenth
of the lifetime that is fixed per Domain and certificate (so a fleet issued on one day
does not renew in one burst, and every pass of every replica agrees on the moment). A
failed attempt is retried after a backoff that doubles from a minute up to an hour, and
never later than the certificate's expiry allows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from prometheus_client import Counter, Gauge

RENEW_AT = 2 / 3
"""The share of the lifetime after which a certificate is renewed."""
JITTER = 0.1
"""At most this share of the lifetime earlier, fixed per Domain and certificate."""
BACKOFF_FIRST_SECONDS = 60.0
BACKOFF_MAX_SECONDS = 3600.0
ACME_CHALLENGE = "_acme-challenge"

ISSUED = Counter(
    "smartserver_certificates_issued_total", "Certificates issued and installed on a server"
)
FAILURES = Counter(
    "smartserver_certificate_failures_total",
    "Certificate issuances or renewals that failed (each is retried with backoff)",
)
EXPIRY = Gauge(
    "smartserver_certificate_expiry_timestamp_seconds",
    "When each Domain's installed certificate expires (Unix time)",
    # Not `namespace`: Prometheus gives every scraped series its target's namespace.
    ["domain_namespace", "domain"],
)


def certificate_names(domain: str) -> list[str]:
    """The names a Domain's certificate covers: the apex (its subject) and ``www``."""
    return [domain, f"www.{domain}"]


def is_challenge_record(record_type: str, name: str) -> bool:
    """A DNS-01 challenge record: the certificate step owns it, not the DNS step."""
    return record_type == "TXT" and name.split(".", 1)[0] == ACME_CHALLENGE


def _fraction(key: str) -> float:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def renewal_time(not_before: datetime, not_after: datetime, key: str) -> datetime:
    """When to renew a certificate valid from ``not_before`` to ``not_after``; ``key``
    (the Domain's uid and the certificate's serial, say) fixes the jitter."""
    lifetime = not_after - not_before
    share = RENEW_AT - JITTER * _fraction(key)
    return not_before + lifetime * share


def retry_delay(failures: int, not_after: datetime | None, now: datetime) -> float:
    """Seconds until the next attempt after ``failures`` failed ones in a row."""
    delay = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2.0 ** max(0, failures - 1))
    if not_after is not None:
        # Keep several attempts before expiry, however short the lifetime.
        left = (not_after - now).total_seconds()
        delay = min(delay, max(BACKOFF_FIRST_SECONDS / 4, left / 8))
    return delay


@dataclass(frozen=True)
class CertificateState:
    """What the operator knows of a Domain's certificate (kept on its status)."""

    not_before: datetime | None
    not_after: datetime | None
    serial: str | None
    failures: int = 0
    last_attempt: datetime | None = None


def due(state: CertificateState, uid: str, now: datetime) -> bool:
    """Whether a certificate should be (re)issued now."""
    if state.not_after is None or state.not_before is None or now >= state.not_after:
        wanted_at = now
    else:
        wanted_at = renewal_time(state.not_before, state.not_after, f"{uid}:{state.serial}")
    if now < wanted_at:
        return False
    if state.failures and state.last_attempt is not None:
        wait = timedelta(seconds=retry_delay(state.failures, state.not_after, now))
        return now >= state.last_attempt + wait
    return True


def seconds_until_due(state: CertificateState, uid: str, now: datetime) -> float:
    """How long a steady Domain may sleep before its certificate needs a look."""
    if state.not_after is None or state.not_before is None:
        return 0.0
    if state.failures and state.last_attempt is not None:
        retry = state.last_attempt + timedelta(
            seconds=retry_delay(state.failures, state.not_after, now)
        )
        return max(0.0, (retry - now).total_seconds())
    at = renewal_time(state.not_before, state.not_after, f"{uid}:{state.serial}")
    return max(0.0, (at - now).total_seconds())


def expiry_message(not_after: datetime) -> str:
    return f"expires {not_after.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def leaf(fullchain_pem: str) -> x509.Certificate:
    """The first certificate of a chain (the site's own)."""
    return x509.load_pem_x509_certificate(fullchain_pem.encode())
