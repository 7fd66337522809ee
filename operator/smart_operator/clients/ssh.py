"""Deploys to customer servers over SSH (asyncssh), trusting only the pinned host key.

A revision is uploaded over SFTP into ``revisions/<id>.partial-…``, renamed into place
(a revision folder is complete or absent), and made current by renaming a new symlink
over ``current`` (atomic: a visitor gets the old revision or the new one, never a
mix). Then the agent is asked to reload. An existing revision is never uploaded again.
"""

from __future__ import annotations

import json
import posixpath
import secrets
from collections.abc import Sequence

import asyncssh

from smart_operator.errors import ExternalError, HostKeyMismatch, RevisionRefused, Unreachable
from smart_operator.ports import DeployResult, Target

SYSTEM = "ssh"
EXPERIMENTS = "/opt/smart/experiments"


async def connect_pinned(
    target: Target, pinned: Sequence[str] | None = None
) -> asyncssh.SSHClientConnection:
    """A connection to ``target`` that trusts only its pinned host key (or, during a
    host-key rotation, the keys in ``pinned``); never on first use."""
    trusted = [asyncssh.import_public_key(k) for k in (pinned or [target.host_public_key])]
    try:
        return await asyncssh.connect(
            target.address,
            port=target.port,
            username=target.username,
            client_keys=[asyncssh.import_private_key(target.client_private_key)],
            known_hosts=(trusted, [], []),
            connect_timeout=15,
        )
    except asyncssh.HostKeyNotVerifiable as error:
        raise HostKeyMismatch(SYSTEM, f"{target.address}: {error}") from error
    except (OSError, asyncssh.Error) as error:
        raise Unreachable(SYSTEM, f"{target.address}: {type(error).__name__}: {error}") from error


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
