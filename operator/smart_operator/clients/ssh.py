"""Deploys to customer servers over SSH (asyncssh), trusting only the pinned host key.

A revision is uploaded over SFTP into ``revisions/<id>.partial-…``, renamed into place
(a revision folder is complete or absent), and made current by renaming a new symlink
over ``current`` (atomic: a visitor gets the old revision or the new one, never a
mix). Then the agent is asked to reload. An existing revision is never uploaded again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import posixpath
import secrets
from collections.abc import Sequence

import asyncssh

from smart_operator.errors import (
    ExternalError,
    HostKeyMismatch,
    OperatorKeyRefused,
    RevisionRefused,
    Unreachable,
)
from smart_operator.keys import authorized_keys_with, fingerprint
from smart_operator.ports import DeployResult, OperatorKeyCheck, Target

SYSTEM = "ssh"
EXPERIMENTS = "/opt/smart/experiments"
AUTHORIZED_KEYS = ".ssh/authorized_keys"  # in the login user's home, where SFTP starts


async def connect_pinned(
    target: Target, pinned: Sequence[str] | None = None
) -> asyncssh.SSHClientConnection:
    """A connection to ``target`` that trusts only its pinned host key (or, during a
    host-key rotation, the keys in ``pinned``); never on first use. Logs in with the
    operator's key, or, when the server refuses it, with the previous one."""
    conn, _ = await connect_logged_in(target, pinned)
    return conn


async def connect_logged_in(
    target: Target, pinned: Sequence[str] | None = None
) -> tuple[asyncssh.SSHClientConnection, bool]:
    """:func:`connect_pinned`, and whether the server accepted only the previous key.

    Each key gets a connection of its own, the current one first: the server's answer
    then says which key it accepts (one refused key is one failed attempt in its log,
    well under ``MaxAuthTries`` and fail2ban's ``maxretry``)."""
    trusted = [asyncssh.import_public_key(k) for k in (pinned or [target.host_public_key])]
    keys = [target.client_private_key]
    if target.previous_client_private_key not in (None, target.client_private_key):
        keys.append(target.previous_client_private_key)
    for index, key in enumerate(keys):
        try:
            conn = await asyncssh.connect(
                target.address,
                port=target.port,
                username=target.username,
                client_keys=[asyncssh.import_private_key(key)],
                known_hosts=(trusted, [], []),
                connect_timeout=15,
            )
        except asyncssh.PermissionDenied:
            continue
        except asyncssh.HostKeyNotVerifiable as error:
            raise HostKeyMismatch(SYSTEM, f"{target.address}: {error}") from error
        except (OSError, asyncssh.Error) as error:
            raise Unreachable(
                SYSTEM, f"{target.address}: {type(error).__name__}: {error}"
            ) from error
        return conn, index > 0
    raise OperatorKeyRefused(SYSTEM, refused_message(target), delay=60)


def refused_message(target: Target) -> str:
    """Which keys were tried, and what staff can do about it."""
    tried = f"the operator's SSH key {key_fingerprint(target.client_private_key)} (id_ed25519)"
    previous = target.previous_client_private_key
    if previous not in (None, target.client_private_key):
        tried += f" and its previous key {key_fingerprint(previous)} (id_ed25519.previous)"
    else:
        tried += " (no previous key is configured)"
    return (
        f"{target.address}: user {target.username} refused {tried}. If the key was "
        "rotated, put the key this server still authorizes into the Secret "
        "smart-operator-ssh as id_ed25519.previous and restart the operator; the server "
        "is then moved to the new key (docs/operations.md, \"Rotating the operator's "
        'SSH key")'
    )


def public_key_line(private_key: str) -> str:
    """The ``ssh-ed25519 AAAA...`` line of an OpenSSH private key."""
    return bytes(asyncssh.import_private_key(private_key).export_public_key()).decode().strip()


def key_fingerprint(private_key: str) -> str:
    """The ``SHA256:...`` fingerprint of an OpenSSH private key's public half."""
    return fingerprint(public_key_line(private_key))


async def ensure_operator_key(target: Target) -> OperatorKeyCheck:
    """Make the server accept the operator's current key (``target.client_private_key``)
    and, when a previous key is configured, no longer the previous one.

    When it accepts only the previous one, then over that connection (host key pinned):
    the current public key is added to the login user's ``~/.ssh/authorized_keys``, a
    fresh connection proves the server accepts it, and only then the previous key's
    lines are removed, and the proof repeated. When it accepts the current key and the
    file still holds the previous one (a rotation stopped between the two writes), the
    previous key's lines are removed. Each write goes to a file of mode 0600 beside it,
    renamed over it: the file is always whole, always authorizes a key the operator
    has proven, and keeps every line that is not the operator's."""
    current, previous = target.client_private_key, target.previous_client_private_key
    conn, with_previous = await connect_logged_in(target)
    if previous is None or previous == current:
        conn.close()
        await conn.wait_closed()
        return OperatorKeyCheck(key_fingerprint(current))
    new, old = public_key_line(current), public_key_line(previous)
    only_current = dataclasses.replace(target, previous_client_private_key=None)
    try:
        async with conn, conn.start_sftp_client() as sftp:
            text = ""
            if await sftp.exists(AUTHORIZED_KEYS):
                async with sftp.open(AUTHORIZED_KEYS, "r") as handle:
                    text = str(await handle.read())
            final = authorized_keys_with(text, new, old)
            if not with_previous and final == authorized_keys_with(text, new):
                return OperatorKeyCheck(fingerprint(new))  # nothing of the previous key
            if with_previous:
                await _replace_file(sftp, AUTHORIZED_KEYS, authorized_keys_with(text, new))
                await _prove(only_current, "after it was added")
            await _replace_file(sftp, AUTHORIZED_KEYS, final)
    except (OSError, asyncssh.Error) as error:
        raise Unreachable(SYSTEM, f"{target.address}: {type(error).__name__}: {error}") from error
    await _prove(only_current, "after the previous key was removed")
    return OperatorKeyCheck(fingerprint(new), replaced=fingerprint(old))


async def _replace_file(sftp: asyncssh.SFTPClient, path: str, text: str) -> None:
    """Write ``text`` to a new file of mode 0600 beside ``path``, then rename it over."""
    partial = f"{path}.smart-{secrets.token_hex(4)}"
    try:
        async with sftp.open(partial, "w", asyncssh.SFTPAttrs(permissions=0o600)) as handle:
            await handle.write(text)
        await sftp.chmod(partial, 0o600)  # whatever the server's umask made of it
        await sftp.posix_rename(partial, path)
    except BaseException:
        with contextlib.suppress(OSError, asyncssh.Error):
            await sftp.remove(partial)
        raise


async def _prove(target: Target, when: str) -> None:
    """A fresh connection with only the current key logs in."""
    try:
        conn, _ = await connect_logged_in(target)
    except OperatorKeyRefused as error:
        raise OperatorKeyRefused(
            SYSTEM,
            f"{target.address}: the server refused the operator's new key "
            f"{key_fingerprint(target.client_private_key)} {when} to "
            f"~{target.username}/{AUTHORIZED_KEYS}; the previous key is kept until it does",
            delay=error.delay,
        ) from error
    conn.close()
    await conn.wait_closed()


class SSHDeployer:
    """The ``Deployer`` port over SSH."""

    async def deploy(
        self, target: Target, experiment: str, revision: str, files: dict[str, bytes]
    ) -> DeployResult:
        return await deploy(target, experiment, revision, files)

    async def remove(self, target: Target, experiment: str) -> None:
        await remove(target, experiment)


async def deploy(
    target: Target, experiment: str, revision: str, files: dict[str, bytes]
) -> DeployResult:
    base = posixpath.join(EXPERIMENTS, experiment)
    final = posixpath.join(base, "revisions", revision)
    current = posixpath.join(base, "current")
    link = posixpath.join("revisions", revision)  # relative: valid wherever root is
    conn = await connect_pinned(target)
    try:
        async with conn, conn.start_sftp_client() as sftp:
            uploaded = False
            if not await sftp.exists(final):
                staging = f"{final}.partial-{secrets.token_hex(4)}"
                for path in sorted(files):
                    remote = posixpath.join(staging, path)
                    await sftp.makedirs(posixpath.dirname(remote), exist_ok=True)
                    async with sftp.open(remote, "wb") as handle:
                        await handle.write(files[path])
                await sftp.rename(staging, final)
                uploaded = True
            switched = False
            # Where ``current`` points, resolved by the server (readlink would hand back
            # the relative target, which some chrooted servers refuse to return).
            points_at = await sftp.realpath(current) if await sftp.islink(current) else None
            if points_at != final:
                fresh = f"{current}.new-{secrets.token_hex(4)}"
                await sftp.symlink(link, fresh)
                await sftp.posix_rename(fresh, current)
                switched = True
            reload = await conn.run("smart-agent reload --json --timeout 30", check=False)
            serving, refusal = agent_reply(reload.exit_status, str(reload.stdout or ""), revision)
            if refusal is not None and switched and points_at is not None:
                # The agent keeps serving the previous revision: so must the link, or the
                # next restart of the agent would pick up what it refused.
                back = f"{current}.back-{secrets.token_hex(4)}"
                await sftp.symlink(posixpath.relpath(points_at, base), back)
                await sftp.posix_rename(back, current)
    except (OSError, asyncssh.Error) as error:
        raise Unreachable(SYSTEM, f"{target.address}: {type(error).__name__}: {error}") from error
    if refusal is not None:
        raise refusal
    return DeployResult(uploaded, switched, serving)


def agent_reply(
    exit_status: int | None, stdout: str, revision: str
) -> tuple[str | None, ExternalError | None]:
    """What ``smart-agent reload --json`` answered: the revision it serves, or why the
    deploy did not take (its exit codes: 0 applied, 1 refused, 3 not running)."""
    if exit_status == 3:
        return None, Unreachable(SYSTEM, "the agent is not running on the server", 10)
    try:
        reply = json.loads(stdout)
    except ValueError:
        return None, RevisionRefused(
            SYSTEM, f"the agent answered the reload with exit status {exit_status}: {stdout!r}"
        )
    applied = reply.get("apply") or {}
    serving = ((reply.get("status") or {}).get("serving") or {}).get("revision")
    if exit_status != 0 or not applied.get("ok"):
        return serving, RevisionRefused(
            SYSTEM,
            f"the agent refused revision {revision}: {applied.get('error') or 'no reason'}",
        )
    if serving != revision:
        return serving, RevisionRefused(
            SYSTEM, f"the agent serves {serving or 'nothing'} instead of revision {revision}"
        )
    return serving, None


async def remove(target: Target, experiment: str) -> None:
    """Take an experiment off the server: its folder goes, the agent stops serving it."""
    conn = await connect_pinned(target)
    try:
        async with conn, conn.start_sftp_client() as sftp:
            base = posixpath.join(EXPERIMENTS, experiment)
            if await sftp.exists(base):
                await sftp.rmtree(base)
            await conn.run("smart-agent reload --timeout 30", check=False)
    except (OSError, asyncssh.Error) as error:
        raise Unreachable(SYSTEM, f"{target.address}: {type(error).__name__}: {error}") from error
