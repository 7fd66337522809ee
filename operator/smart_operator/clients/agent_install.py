"""Delivers the agent to a customer server over SSH (asyncssh), trusting only pinned host keys.

The server's user-data (``cloudinit.py``) created the ``deploy`` user, the agent's unit
and ``/usr/local/sbin/smart-agent-install``, the only command ``deploy`` may run with
sudo. Everything here goes through that connection:

- :func:`install_agent`: waits for cloud-init, uploads the bundle over SFTP (unless the
  same SHA-256 is installed already: then nothing is uploaded), has the server check its
  SHA-256 before anything in it is used, installs it offline into a virtualenv of its
  own, switches ``/opt/smart/agent/current`` atomically, writes the agent's environment
  (intake URL and key, domain: mode 0600, the agent's user), restarts the agent when
  anything changed, and returns the version the running agent reports. The agent keeps
  its counts in sqlite across the restart; nginx keeps serving.
- :func:`rotate_intake_key`: a new environment, then a restart.
- :func:`prepare_host_key_rotation` / :func:`commit_host_key_rotation`: the server makes a
  new SSH host key (its private half never leaves the server); the operator pins the new
  public key before committing, and after the commit accepts both keys until it has
  seen the new one. This is how the host key in the user-data (which Hetzner's metadata
  service keeps serving to local processes for the server's life) stops mattering:
  rotate once after first boot.

Errors (``smart_operator.errors``): ``HostKeyMismatch`` (nothing was sent),
``Unreachable`` (retry later) and ``InstallFailed`` (the server refused: a hash mismatch,
a broken bundle; the message is the server's).

:class:`BundleInstaller` is the ``AgentInstaller`` port over these, for one bundle.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import posixpath
import secrets
import shlex
from collections.abc import AsyncIterator, Sequence

import asyncssh

from smart_operator.agentbundle import INSTALLER_PATH, AgentBundle
from smart_operator.clients.ssh import SYSTEM, connect_pinned, ensure_operator_key
from smart_operator.cloudinit import TLS_DIR
from smart_operator.errors import InstallFailed, Unreachable
from smart_operator.ports import (
    AgentEnvironment,
    InstallResult,
    IssuedCertificate,
    OperatorKeyCheck,
    Target,
)

__all__ = [
    "AgentEnvironment",
    "InstallFailed",
    "InstallResult",
    "commit_host_key_rotation",
    "install_agent",
    "installed_bundle",
    "prepare_host_key_rotation",
    "render_environment",
    "rotate_intake_key",
]

UPLOADS = ".smart-agent"  # in the deploy user's home
SUDO = f"sudo -n {INSTALLER_PATH}"


def render_environment(env: AgentEnvironment) -> str:
    """The environment file's text; refuses values that would break the file."""
    values = {
        "INTAKE_URL": env.intake_url,
        "KEY": env.intake_key,
        "DOMAIN": env.domain,
        **({"RESOURCE": env.resource} if env.resource else {}),
        **{name.upper(): value for name, value in sorted(env.extra.items())},
    }
    lines = []
    for name, value in values.items():
        if not name.replace("_", "").isalnum() or not name.isupper():
            raise ValueError(f"{name!r} is not a setting name")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError(f"SMART_AGENT_{name} holds a control character")
        lines.append(f"SMART_AGENT_{name}={value}\n")
    return "".join(lines)


@contextlib.asynccontextmanager
async def _session(
    target: Target, pinned: Sequence[str] | None = None
) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """A pinned connection that is always closed; transport errors become Unreachable."""
    conn = await connect_pinned(target, pinned)
    try:
        yield conn
    except (OSError, asyncssh.Error) as error:
        raise Unreachable(SYSTEM, f"{target.address}: {type(error).__name__}: {error}") from error
    finally:
        conn.close()


async def _run(
    conn: asyncssh.SSHClientConnection, command: str, *, input: str | None = None
) -> dict[str, str]:
    """Run ``command``; its ``key=value`` output lines, or InstallFailed with its words."""
    result = await conn.run(command, input=input, check=False)
    out, err = str(result.stdout or ""), str(result.stderr or "")
    if result.exit_status != 0:
        step = command.removeprefix(f"{SUDO} ").split()[0]
        raise InstallFailed(SYSTEM, f"{step}: {(err or out).strip()}")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


async def _wait_cloud_init(conn: asyncssh.SSHClientConnection) -> None:
    result = await conn.run("cloud-init status --wait", check=False)
    if "status: done" not in str(result.stdout or ""):
        # An error in an unrelated module still leaves a usable server; the installer
        # checks what it needs itself.
        detail = str(result.stdout or result.stderr or "").strip()
        if "status: error" not in detail:
            raise InstallFailed(SYSTEM, f"cloud-init did not finish: {detail}")


async def installed_bundle(target: Target) -> dict[str, str]:
    """What the server has installed (``sha256``, ``version``; empty if nothing)."""
    async with _session(target) as conn:
        return await _run(conn, f"{SUDO} status")


async def install_agent(
    target: Target, bundle: AgentBundle, env: AgentEnvironment
) -> InstallResult:
    """Install ``bundle`` (if it is not already) with ``env``; the running agent's version."""
    text = render_environment(env)
    async with _session(target) as conn:
        await _wait_cloud_init(conn)
        current = await _run(conn, f"{SUDO} status")
        uploaded = False
        if current.get("sha256") != bundle.sha256:
            remote = posixpath.join(UPLOADS, f"{bundle.sha256}.tar.gz")
            partial = f"{remote}.partial-{secrets.token_hex(4)}"
            async with conn.start_sftp_client() as sftp:
                await sftp.makedirs(UPLOADS, exist_ok=True)
                await sftp.put(str(bundle.path), partial)
                await sftp.posix_rename(partial, remote)
            uploaded = True
            try:
                # The server checks the SHA-256 before it uses a byte of the file.
                await _run(conn, f"{SUDO} bundle {shlex.quote(remote)} {bundle.sha256}")
            finally:
                await conn.run(f"rm -f {shlex.quote(remote)}", check=False)
        changed_env = (await _run(conn, f"{SUDO} env", input=text)).get("changed") == "true"
        active = await conn.run("systemctl is-active --quiet smart-agent", check=False)
        restarted = uploaded or changed_env or active.exit_status != 0
        if restarted:
            await _run(conn, f"{SUDO} restart")
        version = await _agent_version(conn)
    return InstallResult(version, bundle.sha256, uploaded, restarted)


async def _agent_version(conn: asyncssh.SSHClientConnection, attempts: int = 100) -> str:
    """The version the running agent reports on its control socket (it takes a moment
    after a restart to open it)."""
    last = ""
    for _ in range(attempts):
        result = await conn.run("smart-agent status --json", check=False)
        if result.exit_status == 0:
            status = json.loads(str(result.stdout))
            return str(status["agent"]["version"])
        last = str(result.stderr or result.stdout or "").strip()
        await asyncio.sleep(0.2)
    raise InstallFailed(SYSTEM, f"the agent did not answer after its restart: {last}")


async def rotate_intake_key(target: Target, env: AgentEnvironment) -> bool:
    """Write the new environment (a new intake key) and restart the agent; whether it
    changed. Revoke the old key at the intake only after this returned."""
    async with _session(target) as conn:
        changed = await _run(conn, f"{SUDO} env", input=render_environment(env))
        if changed.get("changed") != "true":
            return False
        await _run(conn, f"{SUDO} restart")
        await _agent_version(conn)
        return True


async def prepare_host_key_rotation(target: Target) -> str:
    """The server's next host key (made on the server, made once: asking again gives the
    same key). Pin it (beside the current one) before :func:`commit_host_key_rotation`."""
    async with _session(target) as conn:
        result = await conn.run(f"{SUDO} host-key prepare", check=False)
    if result.exit_status != 0:
        raise InstallFailed(SYSTEM, f"host-key prepare: {str(result.stderr).strip()}")
    return _public_key_line(str(result.stdout))


async def commit_host_key_rotation(target: Target, next_public_key: str) -> str:
    """Make the prepared key the server's host key; returns it. Connects trusting the
    current pin or the next key (a retry after a commit whose answer was lost finds the
    new key). Afterwards only the new key is accepted."""
    async with _session(target, [target.host_public_key, next_public_key]) as conn:
        result = await conn.run(f"{SUDO} host-key commit", check=False)
    if result.exit_status != 0:
        raise InstallFailed(SYSTEM, f"host-key commit: {str(result.stderr).strip()}")
    committed = _public_key_line(str(result.stdout))
    if committed.split()[:2] != next_public_key.split()[:2]:
        raise InstallFailed(SYSTEM, "the server committed a host key other than the prepared one")
    # Prove it: a fresh connection that trusts only the new key. sshd re-executes itself
    # to reload, so for a moment nothing listens: retry a refusal, never a mismatch.
    pinned_next = dataclasses.replace(target, host_public_key=next_public_key)
    for attempt in range(50):
        try:
            async with _session(pinned_next):
                break
        except Unreachable:
            if attempt == 49:
                raise
            await asyncio.sleep(0.2)
    return committed


def _public_key_line(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("ssh-ed25519 "):
            asyncssh.import_public_key(line)  # refuses anything that is not a key
            return line.strip()
    raise InstallFailed(SYSTEM, f"the server printed no ed25519 public key: {text.strip()[:200]}")


async def install_certificate(target: Target, issued: IssuedCertificate) -> None:
    """Deliver a certificate and its key to the server's agent, then have it serve them.

    Over the pinned connection only: each file is written aside with mode 0640 (the
    folder's group is the agent's) and renamed into place, the key first; then
    ``smart-agent reload`` makes the agent test the pair with ``nginx -t`` and serve it.
    A refused pair leaves the previous certificate serving (``InstallFailed`` with
    nginx's words); an agent that is down picks the pair up when it is back.
    """
    async with _session(target) as conn:
        async with conn.start_sftp_client() as sftp:
            for name, text in (
                ("privkey.pem", issued.key_pem),
                ("fullchain.pem", issued.fullchain_pem),
            ):
                final = posixpath.join(TLS_DIR, name)
                partial = posixpath.join(TLS_DIR, f".{name}.partial-{secrets.token_hex(4)}")
                attrs = asyncssh.SFTPAttrs(permissions=0o640)
                async with sftp.open(partial, "w", attrs) as remote:
                    await remote.write(text)
                await sftp.posix_rename(partial, final)
        result = await conn.run("smart-agent reload --json", check=False)
    if result.exit_status == 3:
        raise Unreachable(SYSTEM, f"{target.address}: the agent is not running")
    if result.exit_status != 0:
        detail = str(result.stdout or result.stderr or "").strip()
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = str(json.loads(detail)["apply"]["error"]) or detail
        raise InstallFailed(SYSTEM, f"the server's nginx refused the certificate: {detail[:300]}")


class BundleInstaller:
    """The ``AgentInstaller`` port: installs one bundle."""

    def __init__(self, bundle: AgentBundle) -> None:
        self.bundle = bundle

    @property
    def bundle_sha256(self) -> str:
        return self.bundle.sha256

    async def install(self, target: Target, env: AgentEnvironment) -> InstallResult:
        return await install_agent(target, self.bundle, env)

    async def prepare_host_key_rotation(self, target: Target) -> str:
        return await prepare_host_key_rotation(target)

    async def commit_host_key_rotation(self, target: Target, next_public_key: str) -> str:
        return await commit_host_key_rotation(target, next_public_key)

    async def install_certificate(self, target: Target, issued: IssuedCertificate) -> None:
        await install_certificate(target, issued)

    async def ensure_operator_key(self, target: Target) -> OperatorKeyCheck:
        return await ensure_operator_key(target)
