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


def public_key_of(private: str, comment: str = "") -> str:
    """The ``ssh-ed25519 AAAA...`` line of an OpenSSH private key (``ValueError`` for
    text that is not an unencrypted ed25519 key)."""
    key = serialization.load_ssh_private_key(private.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an ed25519 private key")
    return _pair(key, comment).public


def stored_key_pair(private: str, public: str | None = None) -> SSHKeyPair:
    """A key pair as kept in a Secret: the public line may be left out (it is derived
    from the private key); one that is not the private key's half is refused
    (``ValueError``), since servers would be handed a key the operator cannot use."""
    derived = public_key_of(private)
    if public is None or not public.strip():
        return SSHKeyPair(private, derived)
    if not same_key(public, derived):
        raise ValueError(
            f"the public key ({fingerprint(public)}) is not the private key's "
            f"({fingerprint(derived)})"
        )
    return SSHKeyPair(private, public.strip())


def same_key(public_a: str, public_b: str) -> bool:
    """Whether two public key lines hold the same key (comments aside)."""
    return public_a.split()[:2] == public_b.split()[:2]


def authorized_keys_with(text: str, add: str, remove: str | None = None) -> str:
    """An ``authorized_keys`` file's text with the public key ``add`` in it (appended
    unless it is there) and every line that authorizes ``remove`` taken out; every other
    line (other people's keys, comments, options) is kept as it was."""

    def holds(line: str, public_key: str) -> bool:
        return public_key.split()[1] in line.split()

    lines = text.splitlines()
    if remove is not None and not same_key(add, remove):
        lines = [line for line in lines if not holds(line, remove)]
    if not any(holds(line, add) for line in lines):
        lines.append(add.strip())
    return "".join(f"{line}\n" for line in lines)


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
