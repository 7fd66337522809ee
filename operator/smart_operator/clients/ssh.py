"""Deploys to customer servers over SSH (asyncssh), trusting only the pinned host key.

A revision is uploaded over SFTP into ``revisions/<id>.partial-…``, renamed into place
(a revision folder is complete or absent), and made current by renaming a new symlink
over ``current`` (atomic: a visitor gets the old revision or the new one, never a
mix). Then the agent is asked to reload. An existing revision is never uploaded again.
"""

from __future__ import annotations

import posixpath
import secrets
from dataclasses import dataclass

import asyncssh

EXPERIMENTS = "/opt/smart/experiments"


class HostKeyMismatch(Exception):
    """The server presented a host key other than the pinned one: nothing was sent."""


class Unreachable(Exception):
    """The server could not be reached or refused the operator's key; retry later."""


@dataclass(frozen=True)
class Target:
    address: str
    port: int
    host_public_key: str
    client_private_key: str
    username: str = "root"


@dataclass(frozen=True)
class DeployResult:
    uploaded: bool
    switched: bool
    reload_output: str


async def _connect(target: Target) -> asyncssh.SSHClientConnection:
    trusted = asyncssh.import_public_key(target.host_public_key)
    try:
        return await asyncssh.connect(
            target.address,
            port=target.port,
            username=target.username,
            client_keys=[asyncssh.import_private_key(target.client_private_key)],
            known_hosts=([trusted], [], []),
            connect_timeout=15,
        )
    except asyncssh.HostKeyNotVerifiable as error:
        raise HostKeyMismatch(str(error)) from error
    except (OSError, asyncssh.Error) as error:
        raise Unreachable(f"{type(error).__name__}: {error}") from error


async def deploy(
    target: Target, experiment: str, revision: str, files: dict[str, bytes]
) -> DeployResult:
    base = posixpath.join(EXPERIMENTS, experiment)
    final = posixpath.join(base, "revisions", revision)
    current = posixpath.join(base, "current")
    link = posixpath.join("revisions", revision)  # relative: valid wherever root is
    conn = await _connect(target)
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
            reload = await conn.run("smart-agent reload --timeout 30", check=False)
    except (OSError, asyncssh.Error) as error:
        raise Unreachable(f"{type(error).__name__}: {error}") from error
    return DeployResult(uploaded, switched, str(reload.stdout or "") + str(reload.stderr or ""))


async def remove(target: Target, experiment: str) -> None:
    """Take an experiment off the server: its folder goes, the agent stops serving it."""
    conn = await _connect(target)
    try:
        async with conn, conn.start_sftp_client() as sftp:
            base = posixpath.join(EXPERIMENTS, experiment)
            if await sftp.exists(base):
                await sftp.rmtree(base)
            await conn.run("smart-agent reload --timeout 30", check=False)
    except (OSError, asyncssh.Error) as error:
        raise Unreachable(f"{type(error).__name__}: {error}") from error
