"""The SSH endpoint of a simulated host: an asyncssh server on the host's loopback address.

It presents exactly the host keys the host booted with (a client that pins one detects a
mismatch), accepts public-key logins only, for the host's login users, against the keys
in their ``authorized_keys`` files inside the host's root folder (read at each login, as
sshd does), serves SFTP confined to the root folder, and runs exec requests and shells
with ``/bin/sh`` in the root folder.

This is a simulation, not a sandbox. Commands run as this machine's user (often root),
with the host's root folder as working directory and ``$HOST_ROOT`` naming it; an
absolute path in a command reaches the real file system. SFTP is confined: paths are
mapped into the root folder and a path that resolves outside it (through a symlink) is
refused. The endpoint must never listen on anything but a loopback address, and offers
no passwords, no port forwarding and no agent forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import asyncssh

__all__ = ["SSHEndpoint"]

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024


class _ConfinedSFTP(asyncssh.SFTPServer):
    """asyncssh's chrooted SFTP, which also refuses paths that resolve out of the root."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], root: Path) -> None:
        super().__init__(chan, chroot=os.fsencode(root))
        self._root = os.fsencode(os.path.realpath(root))

    def map_path(self, path: bytes) -> bytes:
        mapped = super().map_path(path)
        real = os.path.realpath(mapped)
        if real != self._root and not real.startswith(self._root + b"/"):
            raise asyncssh.SFTPPermissionDenied("the path leads out of the host's root folder")
        return mapped


class _Connection(asyncssh.SSHServer):
    """One client connection: public-key authentication against the host's users."""

    def __init__(self, endpoint: SSHEndpoint) -> None:
        self._endpoint = endpoint
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._endpoint._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._endpoint._connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        peer = self._conn.get_extra_info("peername") if self._conn is not None else None
        client = str(peer[0]) if peer else ""
        entries = self._endpoint.authorized_keys(username)
        accepted = any(e.validate(key, client, client) is not None for e in entries)
        log.debug("%s: public key for %r %s", self._endpoint.label, username, accepted)
        return accepted


class SSHEndpoint:
    """An SSH server for one simulated host; ``start()`` binds, ``close()`` ends everything.

    ``users`` maps each login user to its home folder inside ``root`` (``/root``,
    ``/home/NAME``); a user's keys are read from ``<root><home>/.ssh/authorized_keys``.
    """

    def __init__(
        self,
        *,
        address: str,
        port: int,
        host_keys: Sequence[asyncssh.SSHKey],
        users: Mapping[str, str],
        root: Path,
        label: str = "host",
        allow_exec: bool = True,
    ) -> None:
        if not ipaddress.ip_address(address).is_loopback:
            raise ValueError(f"a simulated host listens on loopback only, not on {address}")
        if not host_keys:
            raise ValueError("an SSH endpoint needs at least one host key")
        self.address = address
        self.requested_port = port
        self.host_keys = tuple(host_keys)
        self.users = dict(users)
        self.root = root
        self.label = label
        self.allow_exec = allow_exec
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._port = 0
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._children: set[asyncio.subprocess.Process] = set()

    @property
    def port(self) -> int:
        """The port it listens on (the chosen one when started with port 0)."""
        if self._acceptor is None:
            raise RuntimeError(f"the SSH endpoint of {self.label} is not listening")
        return self._port

    @property
    def listening(self) -> bool:
        """Whether the endpoint accepts connections."""
        return self._acceptor is not None

    async def start(self) -> int:
        """Listen on the host's address; returns the port. Raises OSError if it cannot bind."""
        if self._acceptor is not None:
            raise RuntimeError(f"the SSH endpoint of {self.label} is already listening")
        self._acceptor = await asyncssh.listen(
            self.address,
            self.requested_port,
            server_factory=lambda: _Connection(self),
            server_host_keys=list(self.host_keys),
            process_factory=self._serve_process,
            sftp_factory=lambda chan: _ConfinedSFTP(chan, self.root),
            encoding=None,
            allow_pty=False,
            agent_forwarding=False,
            x11_forwarding=False,
            gss_kex=False,
            gss_auth=False,
            reuse_address=True,
            server_version="SmartServerSim",
        )
        self._port = self._acceptor.get_port()
        return self._port

    def authorized_keys(self, username: str) -> list[asyncssh.SSHAuthorizedKeys]:
        """The entries that may log in as ``username`` now (none for other users).

        Read from the user's ``authorized_keys`` at each login; like sshd, a line that
        does not parse is skipped (and logged), not fatal to the others.
        """
        home = self.users.get(username)
        if home is None:
            return []
        path = self.root / home.lstrip("/") / ".ssh" / "authorized_keys"
        try:
            text = path.read_text()
        except OSError:
            return []
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                entries.append(asyncssh.import_authorized_keys(line))
            except (asyncssh.KeyImportError, ValueError) as exc:
                log.warning("%s: %s line %d skipped: %s", self.label, path, number, exc)
        return entries

    async def close(self) -> None:
        """Stop listening, drop every connection and end every command (idempotent)."""
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.close()
        connections = list(self._connections)
        for conn in connections:
            conn.close()
        for child in list(self._children):
            _kill(child)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                for conn in connections:
                    await conn.wait_closed()
                for child in list(self._children):
                    await child.wait()
                if acceptor is not None:
                    await acceptor.wait_closed()

    # -- exec and shell ------------------------------------------------------------------

    async def _serve_process(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        if process.subsystem:
            process.stderr.write(f"subsystem {process.subsystem!r} is not offered\n".encode())
            process.exit(1)
            return
        if not self.allow_exec:
            process.stderr.write(b"this simulated host does not run commands\n")
            process.exit(1)
            return
        username = str(process.get_extra_info("username"))
        home = self.root / self.users.get(username, "/root").lstrip("/")
        argv = ["/bin/sh", "-c", process.command] if process.command is not None else ["/bin/sh"]
        env = {
            # The project's own commands (smart-agent) come first, as on a real server.
            "PATH": os.pathsep.join(
                [os.path.dirname(sys.executable), os.environ.get("PATH", "/usr/bin:/bin")]
            ),
            "HOST_ROOT": str(self.root),
            "SMART_AGENT_ROOT": str(self.root),
            "HOME": str(home),
            "USER": username,
            "LOGNAME": username,
            "LANG": "C.UTF-8",
        }
        child = await asyncio.create_subprocess_exec(
            *argv,
            cwd=self.root,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        self._children.add(child)
        assert child.stdin is not None and child.stdout is not None and child.stderr is not None
        feeder = asyncio.create_task(_feed(process.stdin, child.stdin))
        try:
            await asyncio.gather(
                _pump(child.stdout, process.stdout), _pump(child.stderr, process.stderr)
            )
            code = await child.wait()
        except (asyncssh.Error, OSError):
            _kill(child)
            await child.wait()
            return
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
            self._children.discard(child)
        with contextlib.suppress(asyncssh.Error, OSError):  # the client may be gone
            process.exit(code if code >= 0 else 128 - code)


async def _pump(source: asyncio.StreamReader, target: asyncssh.SSHWriter[bytes]) -> None:
    while chunk := await source.read(_CHUNK):
        target.write(chunk)
        await target.drain()


async def _feed(source: asyncssh.SSHReader[bytes], target: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncssh.Error):
        while chunk := await source.read(_CHUNK):
            target.write(chunk)
            await target.drain()
    target.close()


def _kill(child: asyncio.subprocess.Process) -> None:
    """End a command and everything it started (its own process group)."""
    if child.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
