"""Product processes started by the development launcher and the tests: each one a
child process with its own log file, a readiness check with a deadline, and a stop
that always ends it (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from smart_sim.controlplane.cluster import free_port


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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise ProcessError(f"{self.name} exited before it {what}:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.1)
        raise ProcessError(f"{self.name} did not {what} within {timeout:.0f} s:\n{self.log_tail()}")

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
    ) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            name,
            [sys.executable, "-m", "smart_operator.intake.main"],
            log_dir,
            {
                "SMART_INTAKE_KUBECONFIG": str(kubeconfig),
                "SMART_INTAKE_HOST": "127.0.0.1",
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


SIMULATED_SSH_PORT = 2222  # not 22: a machine's own sshd may hold it on every address
SIMULATED_HTTP_PORT = 8780  # not 80: the machine's own nginx may hold it on every address


class Clouds:
    """Both provider simulators, and the operator settings that point at them. Servers
    created in the Hetzner simulator boot as simulated hosts under ``log_dir/hosts``."""

    def __init__(
        self,
        log_dir: Path,
        hetzner_args: list[str] | None = None,
        cloudflare_args: list[str] | None = None,
        hosts: bool = True,
        agent_env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """``agent_env``: ``SMART_AGENT_*`` settings every simulated host's agent gets
        (for example shorter report intervals in tests). ``host``: the address both
        simulators listen on; a local node's link address lets its pods reach them."""
        self.hosts_dir = log_dir / "hosts"
        # A network of its own, so that two runs at once (two test sessions, a test
        # session beside `make dev`) never hand out the same host address.
        network = f"127.{secrets.randbelow(200) + 20}.0.0/16"
        booting = [
            "--hosts-dir",
            str(self.hosts_dir),
            "--ssh-port",
            str(SIMULATED_SSH_PORT),
            "--ipv4-network",
            network,
            "--http-port",
            str(SIMULATED_HTTP_PORT),
        ]
        self.hetzner = SimulatorProcess(
            "smart_sim.hetzner",
            "/v1",
            log_dir,
            ["--token", CLOUD_TOKEN, *(booting if hosts else []), *(hetzner_args or [])],
            env=agent_env,
            host=host,
        )
        self.cloudflare = SimulatorProcess(
            "smart_sim.cloudflare",
            "/client/v4",
            log_dir,
            ["--token", CLOUD_TOKEN, *(cloudflare_args or [])],
            host=host,
        )

    def start(self) -> Clouds:
        self.hetzner.start()
        try:
            self.cloudflare.start()
        except BaseException:
            self.hetzner.stop()
            raise
        return self

    def stop(self) -> None:
        self.cloudflare.stop()
        self.hetzner.stop()

    def __enter__(self) -> Clouds:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def delegate_zone(self, name: str) -> None:
        """Stand in for a customer who points their domain's nameservers at Cloudflare:
        the zone is active in the account from the start."""
        request = urllib.request.Request(  # noqa: S310 (loopback)
            f"{self.cloudflare.root_url}/_sim/zones",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass

    def operator_env(self) -> dict[str, str]:
        from smart_sim.cloudflare.app import CloudflareConfig

        return {
            "SMART_HETZNER_TOKEN": CLOUD_TOKEN,
            "SMART_HETZNER_ENDPOINT": self.hetzner.url,
            "SMART_CLOUDFLARE_TOKEN": CLOUD_TOKEN,
            "SMART_CLOUDFLARE_ENDPOINT": self.cloudflare.url,
            "SMART_CLOUDFLARE_ACCOUNT_ID": CloudflareConfig().account_id,
            "SMART_SSH_SOURCES": '["127.0.0.0/8"]',
            "SMART_SSH_PORT": str(SIMULATED_SSH_PORT),
        }
