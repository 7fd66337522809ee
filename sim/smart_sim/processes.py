"""Product processes started by the development launcher and the tests: each one a
child process with its own log file, a readiness check with a deadline, and a stop
that always ends it (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NoReturn, Self

from smart_sim.controlplane.cluster import free_port


def _free_port_on(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ProcessError(RuntimeError):
    """A process exited or did not become ready; the message ends with its log."""


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class ManagedProcess:
    """One child process with a log file; a context manager that always stops it."""

    def __init__(
        self, name: str, argv: list[str], log_dir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        return self

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` until it holds; a process that exits first or is not ready by
        the deadline is stopped, so a failed start leaves nothing running, whether the
        caller used ``with`` or ``start()``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                self._fail(f"{self.name} exited before it {what}")
            if ready():
                return
            time.sleep(0.1)
        self._fail(f"{self.name} did not {what} within {timeout:.0f} s")

    def _fail(self, message: str) -> NoReturn:
        self.stop()
        raise ProcessError(f"{message}:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"

    def kill(self) -> None:
        """End the process at once, as a crash or an eviction would."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class OperatorProcess(ManagedProcess):
    """``smart-operator`` against a kubeconfig, ready once its liveness probe answers."""

    def __init__(
        self,
        kubeconfig: Path,
        log_dir: Path,
        *,
        name: str = "operator",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.health_port = free_port()
        self.metrics_port = free_port()
        super().__init__(
            name,
            [sys.executable, "-m", "smart_operator.main"],
            log_dir,
            {
                "SMART_KUBECONFIG": str(kubeconfig),
                "SMART_HEALTH_HOST": "127.0.0.1",
                "SMART_HEALTH_PORT": str(self.health_port),
                "SMART_METRICS_HOST": "127.0.0.1",
                "SMART_METRICS_PORT": str(self.metrics_port),
                # A stable peering identity: a restarted process takes its own place
                # instead of waiting for its previous life's entry to expire.
                "POD_ID": f"{name}@localhost",
                **(env or {}),
            },
        )

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> OperatorProcess:
        super().start()
        self.wait_until(
            lambda: http_ok(f"http://127.0.0.1:{self.health_port}/healthz"),
            timeout=60,
            what="answer /healthz",
        )
        return self


class IntakeProcess(ManagedProcess):
    """``smart-intake`` against a kubeconfig on free loopback ports, ready once its
    ``/healthz`` answers (that is, once its caches of keys and experiments are filled)."""

    def __init__(
        self,
        kubeconfig: Path,
        log_dir: Path,
        *,
        name: str = "intake",
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """``host``: where it listens; booted servers reach it at ``Clouds.gateway``."""
        self.port = _free_port_on(host)
        self.metrics_port = free_port()
        self.url = f"http://{host}:{self.port}"
        super().__init__(
            name,
            [sys.executable, "-m", "smart_operator.intake.main"],
            log_dir,
            {
                "SMART_INTAKE_KUBECONFIG": str(kubeconfig),
                "SMART_INTAKE_HOST": host,
                "SMART_INTAKE_PORT": str(self.port),
                "SMART_INTAKE_METRICS_HOST": "127.0.0.1",
                "SMART_INTAKE_METRICS_PORT": str(self.metrics_port),
                **(env or {}),
            },
        )

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> IntakeProcess:
        super().start()
        self.wait_until(lambda: http_ok(f"{self.url}/healthz"), timeout=60, what="answer /healthz")
        return self


class DashboardProcess(ManagedProcess):
    """``smart-dashboard`` against a kubeconfig (its own account's, so its RBAC is the
    real one) on a free loopback port, ready once ``/healthz`` answers (its caches are
    filled). Cookies are not marked Secure: the tests speak plain HTTP on loopback."""

    def __init__(
        self,
        kubeconfig: Path,
        log_dir: Path,
        *,
        admin_token: str,
        session_secret: str,
        name: str = "dashboard",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            name,
            [sys.executable, "-m", "smart_dashboard.main"],
            log_dir,
            {
                "SMART_DASHBOARD_KUBECONFIG": str(kubeconfig),
                "SMART_DASHBOARD_HOST": "127.0.0.1",
                "SMART_DASHBOARD_PORT": str(self.port),
                "SMART_DASHBOARD_ADMIN_TOKEN": admin_token,
                "SMART_DASHBOARD_SESSION_SECRET": session_secret,
                "SMART_DASHBOARD_SECURE_COOKIES": "false",
                **(env or {}),
            },
        )

    def start(self) -> DashboardProcess:
        super().start()
        self.wait_until(lambda: http_ok(f"{self.url}/healthz"), timeout=60, what="answer /healthz")
        return self


class SimulatorProcess(ManagedProcess):
    """A provider simulator (``python -m smart_sim.hetzner`` or ``.cloudflare``) on a
    free port of ``host`` (loopback, or a local node's link address so its pods reach
    it), ready once its control API answers."""

    def __init__(
        self,
        module: str,
        api_path: str,
        log_dir: Path,
        args: list[str] | None = None,
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.port = free_port()
        self.root_url = f"http://{host}:{self.port}"
        self.url = self.root_url + api_path
        super().__init__(
            module.rsplit(".", 1)[-1],
            [
                sys.executable,
                "-m",
                module,
                "--host",
                host,
                "--port",
                str(self.port),
                *(args or []),
            ],
            log_dir,
            env,
        )

    def start(self) -> SimulatorProcess:
        super().start()
        self.wait_until(
            lambda: http_ok(f"{self.root_url}/_sim/health"), timeout=30, what="answer /_sim/health"
        )
        return self


CLOUD_TOKEN = "smart-sim-token"  # noqa: S105 (the simulators' own test token)


class Clouds:
    """Both provider simulators, and the operator settings that point at them. With
    ``booted=True`` (the default) every server created in the Hetzner simulator boots as
    a Debian system (``smart_sim.boot``, needs root) on a provider network of this run,
    under ``log_dir/servers``; the operator delivers each server's agent over SSH, and
    host processes its servers call (the intake) listen on :attr:`gateway`. Without,
    servers are API objects only (the benchmarks of many Domains)."""

    def __init__(
        self,
        log_dir: Path,
        hetzner_args: list[str] | None = None,
        cloudflare_args: list[str] | None = None,
        booted: bool = True,
        host: str = "127.0.0.1",
        acme: bool = False,
        certificate_seconds: int | None = None,
    ) -> None:
        """``host``: the address both simulators listen on; a local node's link address
        lets its pods reach them. ``acme``: also a DNS server answering from the
        Cloudflare simulator's zones and Pebble validating DNS-01 through it, the
        operator's ACME CA (``certificate_seconds`` shortens what it issues); without,
        the operator serves the sites over plain HTTP (``SMART_TLS=false``)."""
        self.booted = booted
        self.host = host
        self.dns_port = free_port() if acme else None
        self.pebble: Any = None
        if acme:
            from smart_sim.acme import Pebble

            self.pebble = Pebble(
                log_dir / "pebble", f"{host}:{self.dns_port}", validity_seconds=certificate_seconds
            )
        self.servers_dir = log_dir / "servers"
        self._network: dict[str, Any] | None = None
        booting = ["--boot-dir", str(self.servers_dir)] if booted else []
        self.hetzner = SimulatorProcess(
            "smart_sim.hetzner",
            "/v1",
            log_dir,
            ["--token", CLOUD_TOKEN, *booting, *(hetzner_args or [])],
            host=host,
        )
        self.cloudflare = SimulatorProcess(
            "smart_sim.cloudflare",
            "/client/v4",
            log_dir,
            [
                "--token",
                CLOUD_TOKEN,
                *(["--dns-port", str(self.dns_port)] if self.dns_port else []),
                *(cloudflare_args or []),
            ],
            host=host,
        )

    def start(self) -> Clouds:
        if self.booted:
            from smart_sim.boot.image import ensure_image

            # Built here, not in the simulator: its first build outlasts the ready check.
            ensure_image("debian-12")
        self.hetzner.start()
        try:
            self.cloudflare.start()
            if self.pebble is not None:
                self.pebble.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.pebble is not None:
            self.pebble.stop()
        self.cloudflare.stop()
        self.hetzner.stop()

    def __enter__(self) -> Clouds:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def network(self) -> dict[str, Any]:
        """The booted servers' provider network (``cidr``, ``gateway``, ``server_pool``)."""
        if not self.booted:
            raise RuntimeError("servers are not booted: start Clouds(booted=True)")
        if self._network is None:
            self._network = json.loads((self.servers_dir / "network.json").read_text())
        return self._network

    @property
    def gateway(self) -> str:
        """Where booted servers reach host processes: bind the intake here."""
        return str(self.network["gateway"])

    def agent_bundle(self) -> Path:
        """The agent bundle the operator delivers to booted servers (built once, cached)."""
        from smart_sim.boot.bundle import ensure_bundle

        return ensure_bundle().path

    def server_root(self, name: str) -> Path:
        """The root file system of the booted server ``name`` (its overlay, as mounted)."""
        (folder,) = [p for p in self.servers_dir.iterdir() if p.name.startswith(f"{name}-")]
        return folder / "merged"

    def operator_env(self) -> dict[str, str]:
        from smart_sim.cloudflare.app import CloudflareConfig

        env = {
            "SMART_HETZNER_TOKEN": CLOUD_TOKEN,
            "SMART_HETZNER_ENDPOINT": self.hetzner.url,
            "SMART_CLOUDFLARE_TOKEN": CLOUD_TOKEN,
            "SMART_CLOUDFLARE_ENDPOINT": self.cloudflare.url,
            "SMART_CLOUDFLARE_ACCOUNT_ID": CloudflareConfig().account_id,
            "SMART_SSH_SOURCES": '["127.0.0.0/8"]',
            "SMART_TLS": "false",
        }
        if self.pebble is not None:
            env["SMART_TLS"] = "true"
            env["SMART_ACME_DIRECTORY_URL"] = self.pebble.directory_url
            env["SMART_ACME_CA_BUNDLE"] = str(self.pebble.api_ca)
            # The zone DNS server answers at once: nothing to wait for.
            env["SMART_ACME_PROPAGATION_SECONDS"] = "0"
            # The outside checks resolve the sites' names where the world's resolvers
            # would learn them (the zone DNS server: this world has no public resolver),
            # and trust Pebble's root as browsers trust Let's Encrypt's.
            env["SMART_UPTIME_RESOLVER"] = f"{self.host}:{self.dns_port}"
            env["SMART_UPTIME_CA_BUNDLE"] = str(self.pebble.root_file)
        elif self.booted:
            # No DNS server answers for the zones here: the checks connect to the server
            # address on the status, and say so.
            env["SMART_UPTIME_RESOLVER"] = "status"
        if not self.booted:
            # API objects only: their addresses serve nothing to check.
            env["SMART_UPTIME_CHECKS"] = "false"
        if self.booted:
            # The operator reaches servers from the gateway, over their port 22.
            env["SMART_SSH_SOURCES"] = json.dumps([f"{self.gateway}/32"])
            env["SMART_SSH_PORT"] = "22"
            env["SMART_AGENT_BUNDLE"] = str(self.agent_bundle())
        return env
