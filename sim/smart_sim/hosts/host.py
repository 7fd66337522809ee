"""One simulated server booting as a host on this machine, from its cloud-init user-data.

A :class:`SimulatedHost` owns a folder ``<base>/<server-name>-<id>/`` holding:

- ``root/``: the host's file system; ``write_files`` land here, users' homes are
  ``root/root`` and ``root/home/NAME`` with their ``.ssh/authorized_keys``, host keys
  are in ``root/etc/ssh/``, the hostname in ``root/etc/hostname``;
- ``user-data``: the user-data as the API received it;
- ``boot.log``: what the boot did, step by step, and why it failed if it did;
- ``runcmd.sh``: the ``runcmd`` commands as the script cloud-init would run (recorded,
  not executed);
- ``host.json``: the host's state, the same as :meth:`SimulatedHost.status`.

The boot follows cloud-init's order: validate (``cloud-init schema``, then
:func:`~smart_sim.hosts.cloudinit.parse`), hostname, ``write_files``, users and their
keys, host keys, ``runcmd`` (recorded), ``packages`` (recorded, not installed),
deferred ``write_files``, then the SSH endpoint. Any failure leaves the host ``failed``
with the reason in its state, its ``boot.log`` and the simulator's log, and no SSH.

It must not run ``runcmd`` or install packages (the agent issue decides what runs), and
must not write outside its folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath

import asyncssh

from smart_sim.hetzner.hooks import ServerInfo
from smart_sim.hosts.cloudinit import (
    CloudConfig,
    UserDataError,
    UserDataValidator,
    WriteFile,
    parse,
)
from smart_sim.hosts.sshd import SSHEndpoint

__all__ = ["HostState", "SimulatedHost"]

log = logging.getLogger(__name__)


class HostState(StrEnum):
    """Where a simulated host is in its life."""

    BOOTING = "booting"
    RUNNING = "running"
    """Booted; its SSH endpoint accepts connections."""
    FAILED = "failed"
    """The boot stopped; :attr:`SimulatedHost.reason` says why. No SSH endpoint."""
    STOPPED = "stopped"
    """The server was deleted (or the manager closed); nothing listens any more."""


AGENT_SERVICE = re.compile(r"systemctl\s+enable\s+--now\s+smart-agent\b")


def _home(user: str) -> str:
    return "/root" if user == "root" else f"/home/{user}"


class SimulatedHost:
    """A simulated server as a host on this machine: its folder, its boot, its SSH."""

    def __init__(
        self,
        server: ServerInfo,
        folder: Path,
        *,
        validator: UserDataValidator,
        ssh_port: int = 22,
        allow_exec: bool = True,
        http_port: int | None = None,
    ) -> None:
        self.server = server
        self.http_port = http_port
        """Where the host's agent serves HTTP on its address; None runs no agent."""
        self._agent: asyncio.subprocess.Process | None = None
        self.folder = folder
        self.root = folder / "root"
        self.boot_log = folder / "boot.log"
        self.ssh_port_requested = ssh_port
        self.allow_exec = allow_exec
        self.state = HostState.BOOTING
        self.reason: str | None = None
        """Why the boot failed (for ``failed``), with the tool's own output."""
        self.config: CloudConfig | None = None
        self.host_keys: tuple[str, ...] = ()
        """The OpenSSH public host keys the SSH endpoint presents."""
        self.logins: tuple[str, ...] = ()
        """The users who may log in (each with keys in their ``authorized_keys``)."""
        self._validator = validator
        self._homes: dict[str, str] = {}
        self._endpoint: SSHEndpoint | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    # -- identity ----------------------------------------------------------------------

    @property
    def id(self) -> int:
        """The Hetzner server id."""
        return self.server.id

    @property
    def name(self) -> str:
        """The server's name when it was created."""
        return self.server.name

    @property
    def address(self) -> str | None:
        """The host's own loopback address (the server's public IPv4)."""
        return self.server.ipv4

    @property
    def ssh_port(self) -> int | None:
        """The SSH port while the endpoint listens; None otherwise."""
        endpoint = self._endpoint
        return endpoint.port if endpoint is not None and endpoint.listening else None

    @property
    def runcmd(self) -> tuple[str, ...]:
        """The ``runcmd`` commands, recorded (not run)."""
        return self.config.runcmd if self.config else ()

    @property
    def packages(self) -> tuple[str, ...]:
        """The ``packages`` the user-data asks for, recorded (not installed)."""
        return self.config.packages if self.config else ()

    def host_key(self, key_type: str = "ssh-ed25519") -> str:
        """The public host key of one algorithm (OpenSSH line), to pin it in a client."""
        for key in self.host_keys:
            if key.split()[0] == key_type:
                return key
        raise KeyError(f"{self.name} has no {key_type} host key")

    @property
    def known_hosts(self) -> str:
        """``known_hosts`` lines for this host's address and port (empty until it runs)."""
        port = self.ssh_port
        if self.address is None or port is None:
            return ""
        pattern = self.address if port == 22 else f"[{self.address}]:{port}"
        return "".join(f"{pattern} {key}\n" for key in self.host_keys)

    def status(self) -> dict[str, object]:
        """The host's state as JSON-ready data (also in ``host.json`` and ``/_sim/servers``)."""
        return {
            "state": str(self.state),
            "reason": self.reason,
            "address": self.address,
            "ssh_port": self.ssh_port,
            "folder": str(self.folder),
            "host_keys": list(self.host_keys),
            "logins": list(self.logins),
            "runcmd": list(self.runcmd),
            "packages": list(self.packages),
        }

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Begin booting in a task of its own (returns at once)."""
        if self._task is not None:
            raise RuntimeError(f"host {self.name} was already started")
        self._task = asyncio.create_task(self._boot(), name=f"boot {self.name}")

    async def wait_until(self, *states: HostState, within: float = 30.0) -> HostState:
        """Wait until the host is in one of ``states``; TimeoutError names where it is."""
        try:
            async with asyncio.timeout(within):
                while self.state not in states:
                    await self._changed.wait()
        except TimeoutError:
            wanted = ", ".join(states)
            raise TimeoutError(
                f"host {self.name} is {self.state}, not {wanted}, after {within:g} s"
                + (f": {self.reason}" if self.reason else "")
            ) from None
        return self.state

    async def stop(self, *, remove: bool) -> None:
        """Stop the boot or the SSH endpoint, mark the host stopped, remove its folder."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is not None:
            await endpoint.close()
        await self._stop_agent()
        if self.state is not HostState.STOPPED:
            self._log("stop", "the server was deleted: the SSH endpoint is closed")
            self._set_state(HostState.STOPPED)
        if remove:
            await asyncio.to_thread(shutil.rmtree, self.folder, True)

    def _set_state(self, state: HostState, reason: str | None = None) -> None:
        self.state = state
        if reason is not None:
            self.reason = reason
        with contextlib.suppress(OSError):
            (self.folder / "host.json").write_text(json.dumps(self.status(), indent=2) + "\n")
        self._changed.set()
        self._changed = asyncio.Event()

    def _log(self, step: str, message: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        first, *rest = message.splitlines() or [""]
        text = f"{stamp} {step}: {first}\n" + "".join(f"    {line}\n" for line in rest)
        with contextlib.suppress(OSError), self.boot_log.open("a") as handle:
            handle.write(text)

    def _fail(self, reason: str) -> None:
        self._log("FAILED", reason)
        log.warning("simulated server %s (%s) failed to boot: %s", self.id, self.name, reason)
        self._set_state(HostState.FAILED, reason)

    # -- the boot ----------------------------------------------------------------------

    async def _boot(self) -> None:
        try:
            await self._run_boot()
        except asyncio.CancelledError:
            raise
        except UserDataError as exc:
            self._fail(str(exc))
        except Exception as exc:
            log.exception("simulated server %s (%s): the boot broke", self.id, self.name)
            self._fail(f"the simulation broke while booting: {type(exc).__name__}: {exc}")

    async def _run_boot(self) -> None:
        if self.folder.exists():
            await asyncio.to_thread(shutil.rmtree, self.folder)
        self.root.mkdir(parents=True)
        self._set_state(HostState.BOOTING)
        server = self.server
        self._log(
            "boot",
            f"server {server.id} {server.name!r} ({server.server_type}, {server.image}, "
            f"{server.location}) at {server.ipv4 or 'no IPv4'}",
        )
        config = await self._read_user_data()
        if config is None:
            return
        self.config = config
        hostname = config.hostname or server.name
        self._write_system_file("/etc/hostname", f"{hostname}\n", 0o644)
        self._log("hostname", hostname)
        for entry in (f for f in config.write_files if not f.defer):
            self._write_entry(entry)
        self._set_up_users(config)
        keys = self._set_up_host_keys(config)
        if config.runcmd:
            script = "".join(f"{line}\n" for line in config.runcmd)
            header = (
                "#!/bin/sh\n# runcmd from the user-data: recorded, not run, by the simulation\n"
            )
            (self.folder / "runcmd.sh").write_text(header + script)
        self._log("runcmd", f"{len(config.runcmd)} command(s) recorded in runcmd.sh, not run")
        requested = [
            f"package {step} requested"
            for step, wanted in (
                ("update", config.package_update),
                ("upgrade", config.package_upgrade),
            )
            if wanted
        ]
        packages = ", ".join(config.packages) or "none"
        self._log("packages", "; ".join([f"recorded, not installed: {packages}", *requested]))
        for entry in (f for f in config.write_files if f.defer):
            self._write_entry(entry, deferred=True)
        if config.skipped_keys:
            self._log("skipped", f"not simulated: {', '.join(config.skipped_keys)}")
        await self._start_ssh(keys)

    async def _read_user_data(self) -> CloudConfig | None:
        user_data = self.server.user_data
        if user_data is None:
            self._log("user-data", "none given: booting with the API's SSH keys only")
            return CloudConfig()
        path = self.folder / "user-data"
        path.write_text(user_data)
        path.chmod(0o600)
        self._log("user-data", f"{len(user_data.encode())} bytes, saved as {path.name}")
        report = await self._validator.check_schema(path)
        if report.warnings:
            self._log("schema", f"warnings:\n{report.warnings}")
        if not report.valid:
            self._fail(f"cloud-init schema rejected the user-data:\n{report.errors}")
            return None
        self._log("schema", "cloud-init schema: valid")
        known = await self._validator.known_keys()
        if known is None:
            self._log("schema", "could not read cloud-init's key list: unknown keys not checked")
        return parse(user_data, known)

    def _write_entry(self, entry: WriteFile, *, deferred: bool = False) -> None:
        try:
            self._write_file(entry)
        except OSError as exc:
            raise UserDataError(f"write_files ({entry.path}): {exc.strerror or exc}") from None
        stage = "write_files (deferred)" if deferred else "write_files"
        extra = " (appended)" if entry.append else ""
        self._log(
            stage,
            f"{entry.path}: {len(entry.content)} bytes, mode {entry.permissions:04o}, "
            f"owner {entry.owner} (recorded, not applied){extra}",
        )

    def _write_system_file(self, path: str, content: str, permissions: int) -> None:
        self._write_file(WriteFile(path, content.encode(), permissions, "root:root", False, False))

    def _write_file(self, entry: WriteFile) -> None:
        target = self._inside(entry.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW
        flags |= os.O_APPEND if entry.append else os.O_TRUNC
        descriptor = os.open(target, flags, entry.permissions)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(entry.content)
        os.chmod(target, entry.permissions)

    def _inside(self, path: str) -> Path:
        """The place of an absolute host path inside the root folder; never outside it."""
        parts = PurePosixPath(path).parts[1:]
        if ".." in parts or not parts:
            raise UserDataError(f"{path}: not a file path inside the host")
        target = self.root.joinpath(*parts)
        root = self.root.resolve()
        parent = target.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.resolve().is_relative_to(root):
            raise UserDataError(f"{path}: leads out of the host's root folder")
        return target

    def _set_up_users(self, config: CloudConfig) -> None:
        """Homes and ``authorized_keys``; the API's keys go to the default user."""
        users = {u.name: list(u.authorized_keys) for u in config.users}
        default = users.setdefault(config.default_user, [])
        users[config.default_user] = list(dict.fromkeys([*self.server.ssh_public_keys, *default]))
        homes = {}
        for name, keys in users.items():
            home = _home(name)
            ssh_dir = self._inside(f"{home}/.ssh/authorized_keys").parent
            ssh_dir.mkdir(parents=True, exist_ok=True)
            ssh_dir.parent.chmod(0o700 if name == "root" else 0o755)
            ssh_dir.chmod(0o700)
            if keys:
                text = "".join(f"{k}\n" for k in keys)
                self._write_system_file(f"{home}/.ssh/authorized_keys", text, 0o600)
            refused = name == "root" and config.disable_root
            if keys and not refused:
                homes[name] = home
            note = " (disable_root: root may not log in)" if refused else ""
            self._log("users", f"{name}: home {home}, {len(keys)} authorized key(s){note}")
        self._homes = homes
        self.logins = tuple(homes)

    def _set_up_host_keys(self, config: CloudConfig) -> list[asyncssh.SSHKey]:
        keys: list[asyncssh.SSHKey] = []
        for host_key in config.host_keys:
            keys.append(asyncssh.import_private_key(host_key.private_key))
            self._save_host_key(host_key.type, host_key.private_key, host_key.public_key)
        if not keys:
            generated = asyncssh.generate_private_key("ssh-ed25519")
            keys.append(generated)
            private = generated.export_private_key().decode()
            public = generated.export_public_key().decode().strip()
            self._save_host_key("ed25519", private, public)
            self._log(
                "ssh_keys",
                "none in the user-data: generated an ed25519 host key "
                "(a client cannot pin it in advance)",
            )
        self.host_keys = tuple(k.export_public_key().decode().strip() for k in keys)
        for key in keys:
            self._log("ssh_keys", f"host key {key.get_algorithm()} {key.get_fingerprint()}")
        return keys

    def _save_host_key(self, key_type: str, private: str, public: str) -> None:
        base = f"/etc/ssh/ssh_host_{key_type}_key"
        self._write_system_file(base, private, 0o600)
        self._write_system_file(f"{base}.pub", f"{public}\n", 0o644)

    async def _start_ssh(self, keys: list[asyncssh.SSHKey]) -> None:
        if self.address is None:
            self._fail("the server has no IPv4 address; simulated hosts are reached over IPv4")
            return
        endpoint = SSHEndpoint(
            address=self.address,
            port=self.ssh_port_requested,
            host_keys=keys,
            users=self._homes,
            root=self.root,
            label=f"{self.name} ({self.address})",
            allow_exec=self.allow_exec,
        )
        self._endpoint = endpoint  # set first: a stop() during start() must close it
        try:
            port = await endpoint.start()
        except OSError as exc:
            self._endpoint = None
            await endpoint.close()
            hint = (
                " (ports below 1024 need root; pass ssh_port=0 or 2222)"
                if (self.ssh_port_requested < 1024 and os.geteuid() != 0)
                else ""
            )
            self._fail(f"cannot listen on {self.address}:{self.ssh_port_requested}: {exc}{hint}")
            return
        who = ", ".join(self.logins) or "nobody (no authorized keys)"
        self._log("ssh", f"listening on {self.address}:{port}; public-key logins for {who}")
        await self._start_services()
        self._log("running", "boot finished")
        self._set_state(HostState.RUNNING)

    async def _start_services(self) -> None:
        """Start what ``runcmd`` enables as a service. Only the agent is simulated: its
        ``systemctl enable --now smart-agent`` starts ``smart-agent run`` with the host's
        root folder and address (and the agent starts its own nginx there)."""
        wanted = any(AGENT_SERVICE.search(line) for line in self.runcmd)
        if not wanted or self.http_port is None or self.address is None:
            return
        log_file = (self.folder / "agent.log").open("ab")
        try:
            self._agent = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "smart_agent",
                "run",
                env={
                    **os.environ,
                    "SMART_AGENT_ROOT": str(self.root),
                    "SMART_AGENT_LISTEN": f"{self.address}:{self.http_port}",
                    # The traffic generator names its visitors' addresses.
                    "SMART_AGENT_REAL_IP_FROM": "127.0.0.0/8",
                    "SMART_AGENT_STOP_NGINX_ON_EXIT": "true",
                },
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log_file.close()
        self._log(
            "service",
            f"smart-agent started (pid {self._agent.pid}), serving on "
            f"{self.address}:{self.http_port}; its log is agent.log",
        )

    async def _stop_agent(self) -> None:
        agent, self._agent = self._agent, None
        if agent is None or agent.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(agent.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(agent.wait(), timeout=10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(agent.pid, signal.SIGKILL)
            await agent.wait()
