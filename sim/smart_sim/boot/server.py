"""One simulated server booted as a real Debian system with systemd-nspawn.

A :class:`BootedServer` owns a folder ``<base>/<name>-<id>/`` holding:

- ``upper/``, ``work/``, ``merged/``: an overlay of the cached image (read-only lower
  layer) with the server's own writes; ``merged`` is its root file system;
- optionally a read-only folder of ``.deb`` files at ``/srv/smart-sim-debs``, listed as
  an apt source (the image's own sources are empty: no mirror is reachable);
- ``seed/``: the NoCloud seed, copied into the server at ``/var/lib/cloud/seed/nocloud``
  (root only): the user-data exactly as the API received it, meta-data (instance-id,
  hostname, the API's SSH keys as ``public-keys``, as Hetzner's metadata gives them) and
  a network-config with the server's static address and the provider gateway;
- ``console.log``: the container's console (systemd's boot messages, cloud-init's);
- ``server.json``: the state shown by the simulator's ``GET /_sim/servers``.

The boot: overlay, seed, a network namespace on the provider network, then
``systemd-nspawn --boot`` in its own cgroups (``/sys/fs/cgroup/{systemd,unified,memory}/
smartserver-boot/<run>-<n>``: PID 1 here is not systemd, so nspawn needs a cgroup of its
own in both the v1 ``systemd`` and the ``unified`` hierarchy; the ``memory`` one measures
the server). The flags are those NOTES.md records as checked on this machine. The server
is ``running`` once cloud-init reports ``done`` (or ``error``, with its detail: a real
server with a broken user-data boots too, and the operator must cope).

Stopping sends SIGTERM to nspawn (a clean power-off, 2 to 3 s), SIGKILL if it hangs, then
unmounts the overlay and removes the namespace, interfaces and cgroups, by PID, name and
mount point. The simulation never reads or interprets the user-data: cloud-init does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from smart_sim.boot.network import (
    CGROUP_PARENT,
    CGROUP_ROOTS,
    ProviderNetwork,
    ServerLink,
    kill_nspawn,
    run,
)
from smart_sim.hetzner.hooks import ServerInfo

__all__ = ["BootedServer", "ExecResult", "ServerState", "index_debs"]

log = logging.getLogger(__name__)

SEED_PATH = "var/lib/cloud/seed/nocloud"
DEBS_MOUNT = "/srv/smart-sim-debs"


class ServerState(StrEnum):
    BOOTING = "booting"
    RUNNING = "running"
    """cloud-init has finished (``cloud_init`` says whether with errors)."""
    FAILED = "failed"
    """The container did not come up; ``reason`` says why."""
    STOPPED = "stopped"


@dataclass(frozen=True)
class ExecResult:
    returncode: int
    stdout: str
    stderr: str

    def check(self, what: str = "command") -> ExecResult:
        if self.returncode != 0:
            raise RuntimeError(f"{what} exited {self.returncode}: {self.stderr or self.stdout}")
        return self


def meta_data(server: ServerInfo) -> str:
    document = {
        "instance-id": f"i-{server.id}",
        "local-hostname": server.name,
        "public-keys": list(server.ssh_public_keys),
    }
    return yaml.safe_dump(document, sort_keys=False)


def network_config(link: ServerLink) -> str:
    # Network config version 2, rendered by cloud-init for ifupdown (as on Hetzner's
    # Debian images): https://cloudinit.readthedocs.io/en/latest/reference/network-config-format-v2.html
    document = {
        "version": 2,
        "ethernets": {
            "eth0": {
                "addresses": [f"{link.address}/{link.prefix}"],
                "gateway4": link.gateway,
            }
        },
    }
    return yaml.safe_dump(document, sort_keys=False)


class BootedServer:
    """A simulated server as a booted Debian container: its folder, boot and state."""

    def __init__(
        self,
        server: ServerInfo,
        folder: Path,
        *,
        image_root: Path,
        network: ProviderNetwork,
        boot_slots: asyncio.Semaphore | None = None,
        boot_timeout: float = 180.0,
        debs: Path | None = None,
    ) -> None:
        self.server = server
        self.folder = folder
        self.image_root = image_root
        self.network = network
        self.key = f"{server.id}"
        self.state = ServerState.BOOTING
        self.reason: str | None = None
        self.cloud_init: str | None = None
        """``done`` or ``error`` (with ``cloud_init_detail``) once cloud-init has finished."""
        self.cloud_init_detail: str = ""
        self.link: ServerLink | None = None
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None
        """PID (on this machine) of the container's systemd, for ``nsenter``."""
        self.cgroup = f"{network.run_id}-{server.id}"
        self.created_at = time.monotonic()
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.debs = debs
        """A folder of .deb files (with its ``Packages`` index) that apt inside may install
        from, mounted read-only: the packages a user-data asks for that the image lacks."""
        self._boot_slots = boot_slots
        self._boot_timeout = boot_timeout
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def id(self) -> int:
        return self.server.id

    @property
    def name(self) -> str:
        return self.server.name

    @property
    def address(self) -> str | None:
        return self.link.address if self.link else self.server.ipv4

    @property
    def merged(self) -> Path:
        return self.folder / "merged"

    @property
    def console_log(self) -> Path:
        return self.folder / "console.log"

    def status(self) -> dict[str, object]:
        boot_seconds = (
            round(self.ready_at - self.started_at, 2)
            if self.ready_at is not None and self.started_at is not None
            else None
        )
        return {
            "state": str(self.state),
            "reason": self.reason,
            "address": self.address,
            "folder": str(self.folder),
            "cloud_init": self.cloud_init,
            "cloud_init_detail": self.cloud_init_detail or None,
            "nspawn_pid": self.nspawn.pid if self.nspawn else None,
            "leader_pid": self.leader,
            "boot_seconds": boot_seconds,
            "console_log": str(self.console_log),
        }

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"server {self.name} was already started")
        self._task = asyncio.create_task(self._boot(), name=f"boot {self.name}")

    async def wait_until(self, *states: ServerState, within: float = 120.0) -> ServerState:
        try:
            async with asyncio.timeout(within):
                while self.state not in states:
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"server {self.name} is {self.state}, not {', '.join(states)}, after "
                f"{within:g} s" + (f": {self.reason}" if self.reason else "")
            ) from None
        return self.state

    async def wait_running(self, within: float = 120.0) -> BootedServer:
        """Wait for cloud-init to finish; RuntimeError if the boot failed."""
        state = await self.wait_until(ServerState.RUNNING, ServerState.FAILED, within=within)
        if state is ServerState.FAILED:
            raise RuntimeError(f"server {self.name} failed to boot: {self.reason}")
        return self

    def _set_state(self, state: ServerState, reason: str | None = None) -> None:
        self.state = state
        if reason is not None:
            self.reason = reason
        with contextlib.suppress(OSError):
            (self.folder / "server.json").write_text(json.dumps(self.status(), indent=2) + "\n")
        self._changed.set()
        self._changed = asyncio.Event()

    async def _boot(self) -> None:
        try:
            if self._boot_slots is None:
                await self._run_boot()
            else:
                # Boots are CPU-bound: a few at a time finish sooner than all at once.
                async with self._boot_slots:
                    await self._run_boot()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("booted server %s (%s) failed: %s", self.id, self.name, exc)
            tail = _tail(self.console_log)
            self._set_state(
                ServerState.FAILED, f"{type(exc).__name__}: {exc}" + (f"\n{tail}" if tail else "")
            )

    async def _run_boot(self) -> None:
        if self.server.ipv4 is None:
            raise RuntimeError("the server has no IPv4 address; booted servers need one")
        self.started_at = time.monotonic()
        await asyncio.to_thread(self._prepare)
        await self._start_container()
        await self._wait_cloud_init()
        self.ready_at = time.monotonic()
        self._set_state(ServerState.RUNNING)

    def _prepare(self) -> None:
        if self.folder.exists():
            shutil.rmtree(self.folder)
        for part in ("upper", "work", "merged", "seed"):
            (self.folder / part).mkdir(parents=True)
        assert self.server.ipv4 is not None
        self.link = self.network.attach(self.key, self.server.ipv4)
        merged = str(self.merged)
        self.network.note(self.key, merged=merged, cgroup=self.cgroup)
        options = (
            f"lowerdir={self.image_root},upperdir={self.folder / 'upper'},"
            f"workdir={self.folder / 'work'}"
        )
        run("mount", "-t", "overlay", "overlay", "-o", options, merged)
        seed = self.folder / "seed"
        (seed / "meta-data").write_text(meta_data(self.server))
        (seed / "network-config").write_text(network_config(self.link))
        # The user-data exactly as the API received it: cloud-init reads it, we do not.
        (seed / "user-data").write_bytes((self.server.user_data or "").encode())
        inside = self.merged / SEED_PATH
        inside.mkdir(parents=True, mode=0o700)
        for name in ("meta-data", "network-config", "user-data"):
            target = inside / name
            shutil.copyfile(seed / name, target)
            target.chmod(0o600)
        if self.debs is not None:
            sources = self.merged / "etc/apt/sources.list.d/smart-sim-debs.list"
            # trusted=yes: a local folder has no signed Release file; it is ours.
            sources.write_text(f"deb [trusted=yes] file:{DEBS_MOUNT} ./\n")
        for root in CGROUP_ROOTS:
            (root / CGROUP_PARENT / self.cgroup).mkdir(parents=True, exist_ok=True)

    async def _start_container(self) -> None:
        assert self.link is not None
        procs = " ".join(
            f'&& echo $$ > "{root / CGROUP_PARENT / self.cgroup / "cgroup.procs"}"'
            for root in CGROUP_ROOTS
        )
        script = f'true {procs} && exec "$@"'
        argv = [
            "sh",
            "-c",
            script,
            "sh",
            "systemd-nspawn",
            "--boot",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--capability=CAP_NET_ADMIN",
            f"--network-namespace-path={self.link.netns_path}",
            f"--directory={self.merged}",
            f"--machine={self.link.host_veth}",
            "--console=read-only",
            "--link-journal=no",
            "--resolv-conf=off",
            "--timezone=off",
            *([f"--bind-ro={self.debs}:{DEBS_MOUNT}"] if self.debs is not None else []),
        ]
        env = {**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}
        with self.console_log.open("ab") as console:
            self.nspawn = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.network.note(self.key, nspawn_pid=self.nspawn.pid)
        deadline = time.monotonic() + 30
        while self.leader is None:
            if self.nspawn.poll() is not None:
                reason = f"systemd-nspawn exited with {self.nspawn.returncode}"
                if "Too many open files" in _tail(self.console_log):
                    # systemd inside needs inotify instances (about 8 per booted server):
                    # the machine's fs.inotify.max_user_instances is spent.
                    reason += (
                        "; the machine ran out of inotify instances (each booted server "
                        "holds about 8): stop some servers, or raise "
                        "fs.inotify.max_user_instances"
                    )
                raise RuntimeError(reason)
            if time.monotonic() > deadline:
                raise RuntimeError("the container's init did not start within 30 s")
            self.leader = _child_of(self.nspawn.pid)
            if self.leader is None:
                await asyncio.sleep(0.05)

    async def _wait_cloud_init(self) -> None:
        deadline = time.monotonic() + self._boot_timeout
        while True:
            assert self.nspawn is not None
            if self.nspawn.poll() is not None:
                raise RuntimeError(f"the container stopped (nspawn exit {self.nspawn.returncode})")
            result = await self.exec("cat", "/run/cloud-init/result.json", seconds=10)
            if result.returncode == 0:
                with contextlib.suppress(ValueError):
                    errors = json.loads(result.stdout).get("v1", {}).get("errors", [])
                    self.cloud_init = "error" if errors else "done"
                    self.cloud_init_detail = "\n".join(str(e) for e in errors)
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cloud-init did not finish within {self._boot_timeout:g} s")
            await asyncio.sleep(0.2)

    async def stop(self, *, remove: bool = True) -> None:
        """Power off (SIGTERM to nspawn), then remove everything the server had."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        nspawn = self.nspawn
        if nspawn is not None:
            await asyncio.to_thread(kill_nspawn, nspawn.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                nspawn.wait(timeout=5)
        await asyncio.to_thread(self.network.detach, self.key)
        if self.state is not ServerState.STOPPED:
            self._set_state(ServerState.STOPPED)
        if remove:
            await asyncio.to_thread(shutil.rmtree, self.folder, True)

    # -- inside the server -------------------------------------------------------------

    async def exec(
        self,
        *argv: str,
        input: bytes | None = None,
        seconds: float = 60.0,
    ) -> ExecResult:
        """Run a command inside the server as root (``nsenter`` into every namespace)."""
        if self.leader is None:
            raise RuntimeError(f"server {self.name} has no running container")
        process = await asyncio.create_subprocess_exec(
            "nsenter",
            "-t",
            str(self.leader),
            "-a",
            "--",
            # A clean environment, as a login would have: this process's own (a
            # virtualenv, pip settings) must not leak into the server.
            "env",
            "-i",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=C.UTF-8",
            *argv,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(seconds):
                out, err = await process.communicate(input)
        finally:
            if process.returncode is None:
                process.kill()
                await asyncio.shield(process.wait())
        assert process.returncode is not None
        return ExecResult(
            process.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        )

    async def shell(self, script: str, seconds: float = 60.0) -> ExecResult:
        """Run a shell script inside the server as root."""
        return await self.exec("sh", "-c", script, seconds=seconds)

    def memory(self) -> dict[str, int]:
        """The container's memory from its cgroup: ``usage`` (with page cache) and ``rss``."""
        folder = CGROUP_ROOTS[2] / CGROUP_PARENT / self.cgroup
        found: dict[str, int] = {}
        with contextlib.suppress(OSError, ValueError):
            found["usage"] = int((folder / "memory.usage_in_bytes").read_text())
            stats = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines())
            found["rss"] = int(stats.get("total_rss", 0))
            found["cache"] = int(stats.get("total_cache", 0))
        return found

    def as_dict(self) -> dict[str, Any]:
        return self.status()


def _child_of(pid: int) -> int | None:
    """The container's init: nspawn's child that runs systemd. (nspawn first forks a
    helper that sets the container up and exits: a PID taken before that is stale.)"""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        try:
            if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                return int(child)
        except OSError:
            continue
    return None


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def index_debs(folder: Path) -> None:
    """Write the ``Packages`` index apt needs for a folder of ``.deb`` files."""
    result = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", "."],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"dpkg-scanpackages failed: {result.stderr}")
    (folder / "Packages").write_text(result.stdout)
