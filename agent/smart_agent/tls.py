"""The site's certificate, as nginx serves it.

The operator delivers ``fullchain.pem`` and ``privkey.pem`` into
``<root>/opt/smart/tls/`` over the pinned SSH connection (``docs/https.md``); the
private key is made by the operator for that one certificate and exists nowhere else.
The agent copies the pair into its own state folder under a name taken from their
content (``<digest>.crt``/``.key``, mode 0600) and names the copies in nginx's
configuration. So the files a live configuration names never change: a new pair is a
new configuration, tested by ``nginx -t`` (which loads the certificate and checks that
the key matches it) before it replaces the old one, and a broken or half-written
delivery leaves the previous certificate serving. Old copies are removed once a newer
configuration is live.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from smart_agent.settings import AgentSettings

CERT = "fullchain.pem"
KEY = "privkey.pem"


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    digest: str


def delivered(settings: AgentSettings) -> tuple[bytes, bytes] | None:
    """The delivered certificate and key, if both are there and look like PEM."""
    try:
        cert = (settings.tls_source_dir / CERT).read_bytes()
        key = (settings.tls_source_dir / KEY).read_bytes()
    except OSError:
        return None
    if b"-----BEGIN CERTIFICATE-----" not in cert or b"PRIVATE KEY-----" not in key:
        return None
    return cert, key


def fingerprint(settings: AgentSettings) -> str | None:
    """A digest of the delivered pair (None without one): a change is a new configuration."""
    pair = delivered(settings)
    if pair is None:
        return None
    return hashlib.sha256(pair[0] + b"\0" + pair[1]).hexdigest()[:16]


def stage(settings: AgentSettings) -> TlsFiles | None:
    """Copy the delivered pair into the agent's folder under its digest; None without one."""
    pair = delivered(settings)
    if pair is None:
        return None
    cert, key = pair
    digest = hashlib.sha256(cert + b"\0" + key).hexdigest()[:16]
    folder = settings.tls_dir
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    files = TlsFiles(folder / f"{digest}.crt", folder / f"{digest}.key", digest)
    for path, data in ((files.cert, cert), (files.key, key)):
        if path.exists():
            continue
        partial = path.with_suffix(path.suffix + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        partial.rename(path)
    return files


def prune(settings: AgentSettings, keep: TlsFiles | None) -> None:
    """Remove the copies the live configuration does not name."""
    folder = settings.tls_dir
    if not folder.is_dir():
        return
    wanted = {keep.cert.name, keep.key.name} if keep else set()
    for path in folder.iterdir():
        if path.name not in wanted:
            with contextlib.suppress(OSError):
                path.unlink()
