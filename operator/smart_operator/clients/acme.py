"""Certificates from an ACME CA (RFC 8555) with certbot's own protocol library, ``acme``.

The challenge is DNS-01 (docs/https.md says why): the CA asks for a TXT record
``_acme-challenge.<name>`` holding a digest of the key authorization, and the caller's
``ChallengeRecords`` writes it through the Cloudflare API the operator already holds.
``acme`` is synchronous (``requests``), so every call to the CA runs in a thread; the
records are written on the event loop between the order and the answers.

Keys:

- The *account* key is derived from the operator's key secret (HMAC-SHA256 to a P-256
  scalar), so every replica and every restart uses the same ACME account: nothing more
  to store, and no new account per start (Let's Encrypt limits new accounts per address).
- A *certificate's* key is made in memory for each issuance and handed to the caller
  together with the chain, to be delivered to the server over the pinned SSH connection
  only. It is never logged, never written to a file, a Secret, a status or an Event.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from pathlib import Path

from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from smart_operator.errors import PermanentFailure, TemporaryFailure
from smart_operator.ports import ChallengeRecords, IssuedCertificate

log = logging.getLogger(__name__)

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
USER_AGENT = "smart-operator (acme-python)"
# P-256's group order: a derived scalar must lie in [1, n-1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def account_key(secret: bytes) -> ec.EllipticCurvePrivateKey:
    """The installation's ACME account key, derived from the operator's key secret."""
    seed = hmac.new(secret, b"acme-account-p256", hashlib.sha512).digest()
    scalar = int.from_bytes(seed, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def new_certificate_key() -> bytes:
    """A fresh P-256 key (PKCS#8 PEM) for one certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def validity(fullchain_pem: str) -> tuple[datetime.datetime, datetime.datetime]:
    """notBefore and notAfter of the leaf (the first certificate of the chain)."""
    leaf = x509.load_pem_x509_certificate(fullchain_pem.encode())
    return leaf.not_valid_before_utc, leaf.not_valid_after_utc


@dataclass
class AcmeIssuer:
    """Issues certificates from one ACME directory with one account."""

    directory_url: str
    secret: bytes
    email: str | None = None
    ca_bundle: Path | None = None
    """A CA file that trusts the ACME server's own HTTPS (a private CA such as Pebble);
    unset means the system's trust store."""
    propagation_seconds: float = 0.0
    """How long to wait after writing the records before asking the CA to validate:
    Cloudflare's nameservers serve a new record within seconds (certbot-dns-cloudflare
    waits 10 s by default)."""
    timeout_seconds: float = 180.0
    _client: client.ClientV2 | None = field(default=None, init=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    def _jwk(self) -> JWKEC:
        return JWKEC(key=account_key(self.secret))

    def _connect(self) -> client.ClientV2:
        """Directory and account (registered once; an existing account is looked up)."""
        if self._client is not None:
            return self._client
        net = client.ClientNetwork(
            self._jwk(),
            alg=ES256,
            user_agent=USER_AGENT,
            # requests takes a CA file where acme passes ``verify``.
            verify_ssl=str(self.ca_bundle) if self.ca_bundle else True,  # type: ignore[arg-type]
        )
        directory = client.ClientV2.get_directory(self.directory_url, net)
        acme = client.ClientV2(directory, net)
        registration = messages.NewRegistration.from_data(
            email=self.email, terms_of_service_agreed=True
        )
        try:
            acme.new_account(registration)
        except errors.ConflictError as existing:  # the account exists: use it
            net.account = messages.RegistrationResource(
                uri=existing.location, body=messages.Registration()
            )
        self._client = acme
        return acme

    async def issue(self, names: list[str], records: ChallengeRecords) -> IssuedCertificate:
        """One certificate for ``names`` (the first is the subject), validated by DNS-01."""
        async with self._lock:  # one order at a time per account keeps the nonces simple
            try:
                return await self._issue(names, records)
            except messages.Error as error:
                raise _failure(error) from error
            except (errors.Error, OSError) as error:
                raise TemporaryFailure("acme", f"{type(error).__name__}: {error}", 60) from error

    async def _issue(self, names: list[str], records: ChallengeRecords) -> IssuedCertificate:
        acme = await asyncio.to_thread(self._connect)
        key_pem = new_certificate_key()
        csr = crypto_util.make_csr(key_pem, names)
        order = await asyncio.to_thread(acme.new_order, csr)
        jwk = acme.net.key
        pending: list[tuple[str, str]] = []
        answers: list[messages.ChallengeBody] = []
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue  # validated recently for this account (CAs reuse authorizations)
            dns01 = next(
                (c for c in authz.body.challenges if isinstance(c.chall, challenges.DNS01)), None
            )
            if dns01 is None:
                raise PermanentFailure(
                    "acme", f"the CA offers no dns-01 challenge for {authz.body.identifier.value}"
                )
            assert isinstance(dns01.chall, challenges.DNS01)
            pending.append(
                (
                    dns01.chall.validation_domain_name(authz.body.identifier.value),
                    dns01.chall.validation(jwk),
                )
            )
            answers.append(dns01)
        handle = await records.present(pending) if pending else None
        try:
            if pending and self.propagation_seconds:
                await asyncio.sleep(self.propagation_seconds)
            for challenge in answers:
                await asyncio.to_thread(
                    acme.answer_challenge, challenge, challenge.chall.response(jwk)
                )
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=self.timeout_seconds)
            final = await asyncio.to_thread(acme.poll_and_finalize, order, deadline)
        finally:
            if handle is not None:
                await records.clean(handle)
        chain = final.fullchain_pem
        not_before, not_after = validity(chain)
        log.info("certificate for %s issued, valid until %s", ", ".join(names), not_after)
        return IssuedCertificate(
            names=tuple(names),
            key_pem=key_pem.decode(),
            fullchain_pem=chain,
            not_before=not_before,
            not_after=not_after,
        )


def _failure(error: messages.Error) -> TemporaryFailure | PermanentFailure:
    """The CA's problem document as the operator's error: rate limits and server trouble
    heal by waiting; a rejected identifier does not."""
    text = f"{error.typ}: {error.detail}" if error.detail else str(error.typ)
    code = (error.code or "").lower()
    if code in ("ratelimited",):
        return TemporaryFailure("acme", text, 3600, code)
    if code in ("rejectedidentifier", "unsupportedidentifier", "caa", "unauthorized"):
        if code == "unauthorized":  # a validation that failed: the record may be late
            return TemporaryFailure("acme", text, 300, code)
        return PermanentFailure("acme", text, code)
    return TemporaryFailure("acme", text, 120, code or None)
