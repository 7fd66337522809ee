"""Keys the operator makes: SSH host keys (pinned, never trusted on first use), its own
SSH key pair, and each server's intake API key (only the hash is kept). Pure."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

INTAKE_KEY_PREFIX = "ssk_"


@dataclass(frozen=True)
class SSHKeyPair:
    private: str
    """OpenSSH private key (PEM-like text)."""
    public: str
    """One ``ssh-ed25519 AAAA...`` line."""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)


def generate_ssh_key(comment: str = "") -> SSHKeyPair:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return SSHKeyPair(private, f"{public} {comment}".strip())


def fingerprint(public_key: str) -> str:
    """``SHA256:...``, as ``ssh-keygen -l`` prints it."""
    blob = base64.b64decode(public_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def generate_intake_key() -> str:
    """256 random bits: a hash without salt or stretching is enough to store it."""
    return INTAKE_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_intake_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
