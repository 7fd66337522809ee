"""Keys the operator makes: SSH host keys (pinned, never trusted on first use), its own
SSH key pair, and each server's intake API key (only the hash is kept). Pure."""

from __future__ import annotations

import base64
import hashlib
import hmac
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
    return _pair(Ed25519PrivateKey.generate(), comment)


def _pair(key: Ed25519PrivateKey, comment: str) -> SSHKeyPair:
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
    """The form in which a key is stored on its Domain: SHA-256, lower-case hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_attempt() -> str:
    """The id of one attempt to make a server: its keys are derived from it."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class ServerKeys:
    """A new server's SSH host key and intake key."""

    host: SSHKeyPair
    intake: str


def derive_server_keys(
    secret: bytes, uid: str, attempt: str, comment: str = "", generation: str = ""
) -> ServerKeys:
    """The keys of the server that attempt ``attempt`` makes for the Domain ``uid``:
    derived (HMAC-SHA256) from the operator's key secret, so every pass that retries the
    same attempt sends exactly the same keys, and a server whose create answer was lost
    carries the keys the status pins. Nothing secret needs storing but ``secret``.
    ``generation`` names the intake key's generation: a new one rotates it."""

    def derive(purpose: str) -> bytes:
        return hmac.new(secret, f"{purpose}\0{uid}\0{attempt}".encode(), hashlib.sha256).digest()

    host = _pair(Ed25519PrivateKey.from_private_bytes(derive("ssh-host-ed25519")), comment)
    intake_seed = derive(f"intake\0{generation}" if generation else "intake")
    intake = INTAKE_KEY_PREFIX + base64.urlsafe_b64encode(intake_seed).decode().rstrip("=")
    return ServerKeys(host, intake)
