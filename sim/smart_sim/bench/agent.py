"""The agent's benchmark, and the one-host harness it shares with the agent's tests.

Harness: ``AgentHost`` is one simulated server reduced to what the agent needs: a root
folder, a loopback address, the real ``smart-agent run`` process and the nginx it
starts; ``IntakeRecorder`` is a loopback intake that records what arrives (and can
fail on purpose); ``landing_experiment`` renders a real template into a deployable
revision. Everything is stopped on exit, also after a failure or a ``kill -9``.

Benchmark (``python -m smart_sim.bench agent``), on this machine:

- requests per second through the agent's nginx (assignment, visitor hash, JSON log)
  against a plain nginx serving the same file (with no access log, and with Debian's
  default combined log), with ``wrk`` and a different visitor on every request;
- the agent's CPU time per 1,000 requests counted (from ``/proc``);
- the lag from a request to its count (the agent's default buffered log, and unbuffered).

Figures only, never timed assertions (BENCHMARKS.md has the numbers and the command).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from smart_agent.control import AgentNotRunning, call
from smart_agent.deploy import ExperimentManifest, install_revision
from smart_sim.bench.domains import cpu_seconds
from smart_sim.traffic import BROWSERS

NGINX = Path("/usr/sbin/nginx")


def loopback_address() -> str:
    """A loopback address of its own for one host (all of 127.0.0.0/8 is loopback)."""
    rng = random.Random()  # noqa: S311 (an address, not a secret)
    return f"127.{rng.randint(64, 250)}.{rng.randint(0, 255)}.{rng.randint(2, 254)}"


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def landing_experiment(
    name: str = "homepage-headline",
    revision: str = "r1",
    weights: Mapping[str, int] | None = None,
    goal_url: str = "https://buy.stripe.com/test_acme",
    marker: str = "",
    **manifest: Any,
) -> tuple[ExperimentManifest, dict[str, dict[str, bytes]]]:
    """A ``saas_landing`` experiment rendered by the operator's templates."""
    from smart_operator.models.experiment import ExperimentSpec
    from smart_operator.templates.catalog import TemplateName, builtin
    from smart_operator.templates.render import render_experiment

    weights = dict(weights or {"control": 50, "outcome-headline": 50})
    variants = []
    for index, (variant, weight) in enumerate(weights.items()):
        values = {} if index == 0 else {"headline": f"Variant {variant} {marker}".strip()}
        variants.append({"name": variant, "weight": weight, "values": values})
    spec = ExperimentSpec.model_validate(
        {
            "domainRef": "acme-example",
            "type": "landing_page",
            "template": "saas_landing",
            "templateConfig": {"brand": f"Acme {marker}".strip(), "stripeLink": goal_url},
            "variants": variants,
        }
    )
    rendered = render_experiment(spec, builtin(TemplateName.SAAS_LANDING))
    files = {variant: dict(r.files) for variant, r in rendered.items()}
    parsed = ExperimentManifest.model_validate(
        {
            "name": name,
            "type": "landing_page",
            "revision": revision,
            "variants": [{"name": v, "weight": w} for v, w in weights.items()],
            "goalUrl": goal_url,
            **manifest,
        }
    )
    return parsed, files


def performance_experiment(
    name: str = "nginx-tuning",
    revision: str = "p1",
    values: Mapping[str, Mapping[str, str]] | None = None,
    **performance: Any,
) -> tuple[ExperimentManifest, dict[str, dict[str, bytes]], dict[str, str]]:
    """An ``nginx_optimization`` experiment rendered by the operator's templates: the
    manifest, each variant's files and each variant's nginx fragment. ``values`` are
    the variants' template values (control first; by default gzip off, then on)."""
    from smart_operator.models.experiment import ExperimentSpec
    from smart_operator.templates.catalog import TemplateName, builtin
    from smart_operator.templates.render import goal_for, render_experiment

    template = builtin(TemplateName.NGINX_OPTIMIZATION)
    values = values or {"control": {"gzip": "off"}, "compressed": {"gzip": "on"}}
    spec = ExperimentSpec.model_validate(
        {
            "domainRef": "acme-example",
            "type": "performance",
            "template": "nginx_optimization",
            "goal": {"metric": "p50_latency"},
            "variants": [{"name": v, "weight": 50, "values": dict(x)} for v, x in values.items()],
        }
    )
    rendered = render_experiment(spec, template)
    probe_paths = list(goal_for(spec, template).probe_paths)
    manifest = ExperimentManifest.model_validate(
        {
            "name": name,
            "type": "performance",
            "revision": revision,
            "variants": [{"name": v.name, "weight": v.weight} for v in spec.variants],
            "performance": {"probePaths": probe_paths, **performance},
        }
    )
    files = {variant: dict(r.files) for variant, r in rendered.items()}
    fragments = {variant: r.nginx_conf or "" for variant, r in rendered.items()}
    return manifest, files, fragments


class AgentHost:
    """A root folder, a loopback address, ``smart-agent run`` and its nginx."""

    def __init__(
        self,
        workdir: Path,
        *,
        intake_url: str | None = None,
        key: str = "ssk_test",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.root = workdir / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.address = loopback_address()
        self.port = free_port(self.address)
        self.log_path = workdir / "agent.log"
        self.env = {
            "SMART_AGENT_ROOT": str(self.root),
            "SMART_AGENT_LISTEN": f"{self.address}:{self.port}",
            "SMART_AGENT_REAL_IP_FROM": "127.0.0.0/8",
            "SMART_AGENT_STOP_NGINX_ON_EXIT": "true",
            "SMART_AGENT_POLL_SECONDS": "0.05",
            "SMART_AGENT_REPORT_SECONDS": "0.5",
            "SMART_AGENT_HEARTBEAT_SECONDS": "1",
            "SMART_AGENT_DEPLOY_POLL_SECONDS": "0.5",
            "SMART_AGENT_BACKOFF_BASE_SECONDS": "0.1",
            "SMART_AGENT_BACKOFF_MAX_SECONDS": "1",
            "SMART_AGENT_ROTATION_GRACE_SECONDS": "1",
            "SMART_AGENT_KEY": key,
            **({"SMART_AGENT_INTAKE_URL": intake_url} if intake_url else {}),
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def experiments_dir(self) -> Path:
        return self.root / "opt/smart/experiments"

    @property
    def access_log(self) -> Path:
        return self.root / "var/log/smart-agent/access.log"

    @property
    def control_socket(self) -> Path:
        return self.root / "run/smart-agent/control.sock"

    @property
    def nginx_pid_file(self) -> Path:
        return self.root / "var/lib/smart-agent/nginx/nginx.pid"

    def deploy(
        self,
        manifest: ExperimentManifest,
        files: Mapping[str, Mapping[str, bytes]],
        fragments: Mapping[str, str] | None = None,
    ) -> Path:
        return install_revision(self.experiments_dir, manifest, files, fragments)

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """``smart-agent ARGS`` against this host (as the operator runs it over SSH)."""
        return subprocess.run(
            [sys.executable, "-m", "smart_agent", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start ``smart-agent run`` and return at once (``start`` also waits for it)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "smart_agent", "run"],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.process

    async def start(self, wait: float = 30.0) -> AgentHost:
        self.process = self.spawn()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"smart-agent exited:\n{self.log_tail()}")
            with contextlib.suppress(AgentNotRunning, aiohttp.ClientError):
                status = await self.status()
                if status["nginx"]["pid"] and status["nginx"]["config"]:
                    return self
            await asyncio.sleep(0.05)
        raise RuntimeError(f"smart-agent did not start within {wait:.0f} s:\n{self.log_tail()}")

    async def status(self) -> dict[str, Any]:
        return await call(self.control_socket, "GET", "/status", seconds=10)

    async def counts(self, experiment: str) -> dict[str, tuple[int, int]]:
        """(visitors, conversions) per variant, as the running agent has counted them."""
        status = await self.status()
        for entry in status["experiments"]:
            if entry["name"] == experiment:
                return {
                    variant: (c["visitors"], c["conversions"])
                    for variant, c in entry["variants"].items()
                }
        return {}

    async def wait_counts(
        self, experiment: str, expected: Mapping[str, tuple[int, int]], within: float = 30.0
    ) -> dict[str, tuple[int, int]]:
        """Poll until the agent's counts equal ``expected`` (zero counts may be absent)."""
        wanted = {k: v for k, v in expected.items() if v != (0, 0)}
        deadline = time.monotonic() + within
        counts: dict[str, tuple[int, int]] = {}
        while time.monotonic() < deadline:
            counts = {k: v for k, v in (await self.counts(experiment)).items() if v != (0, 0)}
            if counts == wanted:
                return counts
            await asyncio.sleep(0.05)
        return counts

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"

    def kill(self) -> None:
        """``kill -9`` the agent (its nginx keeps serving, as on a real server)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def nginx_pid(self) -> int | None:
        try:
            pid = int(self.nginx_pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def rotate_log(self, suffix: str = "1") -> Path:
        """What logrotate does: rename the log, then ``nginx -s reopen``."""
        target = self.access_log.with_name(f"access.log.{suffix}")
        deadline = time.monotonic() + 10
        while True:
            try:
                self.access_log.rename(target)
                break
            except FileNotFoundError:  # the agent is rotating it itself right now
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        pid = self.nginx_pid()
        assert pid is not None, "nginx is not running"
        os.kill(pid, signal.SIGUSR1)  # = nginx -s reopen
        return target

    async def logrotate(self, within: float = 10.0) -> Path:
        """What logrotate does with numbered copies (no compression, none deleted): shift
        ``access.log.N`` to ``N+1``, rename the log to ``access.log.1``, then reopen.

        Waits (polling, up to ``within``) for nginx to have reopened the log of a rotation
        just before, as logrotate would find it there on its next run.
        """
        deadline = time.monotonic() + within
        while not self.access_log.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.access_log} did not come back within {within} s")
            await asyncio.sleep(0.01)
        numbered = []
        for path in self.access_log.parent.glob("access.log.*"):
            suffix = path.name.removeprefix("access.log.")
            if suffix.isdigit():
                numbered.append((int(suffix), path))
        for number, path in sorted(numbered, reverse=True):
            path.rename(self.access_log.with_name(f"access.log.{number + 1}"))
        return self.rotate_log("1")

    def close(self) -> None:
        """Stop the agent, then make sure its nginx is gone too."""
        self.stop()
        pid = self.nginx_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        # Workers of a killed master exit on their own once they notice; make sure.
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes()
                if b"nginx" in cmdline and str(self.root).encode() in cmdline:
                    os.kill(int(proc.name), signal.SIGKILL)

    async def __aenter__(self) -> AgentHost:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class IntakeRecorder:
    """A loopback intake that records reports and heartbeats; it can fail on purpose.

    Faults: ``fail_next`` answers 503 to that many result posts; ``outage(kind)`` until
    ``recover()``: ``"down"`` (the process is gone: connections are refused), ``"error"``
    (503 to every post) or ``"drop"`` (the report is stored, then the connection closes
    without an answer, as when the intake dies right after its commit). What it has
    recorded survives an outage, as the real intake's database does.
    """

    OUTAGES = ("down", "error", "drop")

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.authorizations: set[str] = set()
        self.fail_next = 0  # answer 503 to this many result posts first
        self.failed = 0
        self.dropped = 0  # result posts stored whose answer was never sent
        # Every result post that arrived, answered or not: (outcome, report).
        self.attempts: list[tuple[str, dict[str, Any]]] = []
        self.outage_kind: str | None = None
        self.port = free_port("127.0.0.1")
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _results(self, request: web.Request) -> web.Response:
        self.authorizations.add(request.headers.get("Authorization", ""))
        body = await request.json()
        if self.fail_next > 0 or self.outage_kind == "error":
            self.fail_next = max(0, self.fail_next - 1)
            self.failed += 1
            self.attempts.append(("503", body))
            return web.json_response({"error": "unavailable"}, status=503)
        last = self.last_sequence(body["experiment"])
        self.results.append(body)
        if self.outage_kind == "drop":
            self.dropped += 1
            self.attempts.append(("dropped", body))
            assert request.transport is not None
            request.transport.abort()  # stored, but the agent never hears so
            return web.Response(status=204)
        if body["sequence"] <= last:
            self.attempts.append(("stale", body))
            return web.json_response(
                {"accepted": False, "reason": "stale sequence", "lastSequence": last}
            )
        self.attempts.append(("accepted", body))
        return web.json_response(
            {"accepted": True, "experiment": body["experiment"], "sequence": body["sequence"]},
            status=202,
        )

    async def _heartbeat(self, request: web.Request) -> web.Response:
        self.authorizations.add(request.headers.get("Authorization", ""))
        if self.outage_kind == "error":
            return web.json_response({"error": "unavailable"}, status=503)
        self.heartbeats.append(await request.json())
        return web.json_response({"accepted": True, "domain": "acme-example"}, status=202)

    def last_sequence(self, experiment: str) -> int:
        return max(
            (r["sequence"] for r in self.results if r["experiment"] == experiment), default=0
        )

    def latest(self, experiment: str) -> dict[str, tuple[int, int]]:
        """The counts of the highest sequence received, as (visitors, conversions)."""
        reports = [r for r in self.results if r["experiment"] == experiment]
        if not reports:
            return {}
        best = max(reports, key=lambda r: r["sequence"])
        return {v["name"]: (v["visitors"], v["conversions"]) for v in best["variants"]}

    async def outage(self, kind: str) -> None:
        """Fail every result post in the way ``kind`` says until ``recover``."""
        if kind not in self.OUTAGES:
            raise ValueError(f"no such outage: {kind}")
        await self.recover()
        self.outage_kind = kind
        if kind == "down":
            await self.stop()

    async def recover(self) -> None:
        if self.outage_kind == "down":
            await self.start()
        self.outage_kind = None

    async def start(self) -> None:
        """Listen on ``port`` (again, after ``stop``)."""
        app = web.Application()
        app.router.add_post("/v1/results", self._results)
        app.router.add_post("/v1/heartbeat", self._heartbeat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Close the listener and every connection (what a killed intake leaves)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> IntakeRecorder:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# -- the benchmark ------------------------------------------------------------------

WRK_SCRIPT = """
local counter = 0
local agents = {%(agents)s}
function setup(thread)
  thread:set("offset", math.random(0, 60000))
end
function request()
  counter = counter + 1
  local n = counter + offset
  local ip = "198.18." .. (math.floor(n / 256) %% 256) .. "." .. (n %% 256)
  local agent = agents[(n %% #agents) + 1]
  return wrk.format("GET", "/", {["X-Forwarded-For"] = ip, ["User-Agent"] = agent})
end
"""


def _plain_nginx(folder: Path, address: str, port: int, docroot: Path, logged: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / "tmp" / kind).mkdir(parents=True, exist_ok=True)
    temp = "\n".join(
        f"    {kind}_temp_path {folder / 'tmp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    log = f"access_log {folder / 'access.log'};" if logged else "access_log off;"
    conf = folder / "nginx.conf"
    conf.write_text(
        f"pid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} alert;\n{user}"
        "worker_processes auto;\nevents { worker_connections 4096; }\n"
        "http {\n    types { text/html html; text/css css; image/svg+xml svg; }\n"
        f"    sendfile on;\n    tcp_nopush on;\n{temp}\n"
        f"    server {{\n        listen {address}:{port};\n        {log}\n"
        f"        location / {{ root {docroot}; index index.html; }}\n    }}\n}}\n"
    )
    return conf


def _wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    figures: dict[str, float] = {}
    for line in output.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            figures["rps"] = float(parts[1])
        elif "requests in" in line:
            figures["requests"] = float(parts[0])
        elif line.strip().startswith("Non-2xx"):
            figures["errors"] = float(parts[-1])
    return figures


async def _aiohttp_load(url: str, seconds: int, connections: int) -> dict[str, float]:
    """The fallback when wrk is missing: slower, so only its ratio means something."""
    done = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as s:

        async def worker(offset: int) -> None:
            nonlocal done
            n = offset
            while time.monotonic() < deadline:
                n += connections
                ip = f"198.18.{(n // 256) % 256}.{n % 256}"
                headers = {"X-Forwarded-For": ip, "User-Agent": BROWSERS[n % len(BROWSERS)]}
                async with s.get(url, headers=headers) as response:
                    await response.read()
                done += 1

        await asyncio.gather(*(worker(i) for i in range(connections)))
    return {"rps": done / seconds, "requests": float(done)}


def _load(url: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    if shutil.which("wrk"):
        return _wrk(url, script, seconds, connections)
    return asyncio.run(_aiohttp_load(url, seconds, connections))


def _nginx_cpu_seconds(marker: str) -> float:
    """CPU time of an nginx master (its command line holds ``marker``) and its workers."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            if b"nginx" not in (proc / "cmdline").read_bytes():
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            parent = Path(f"/proc/{fields[1]}/cmdline")
            own = (proc / "cmdline").read_bytes()
            if marker.encode() in own or marker.encode() in parent.read_bytes():
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def _lag(host: AgentHost, experiment: str, samples: int) -> list[float]:
    """Seconds from a new visitor's response to the agent counting it."""
    lags = []
    async with aiohttp.ClientSession() as session:
        for index in range(samples):
            before = sum(v for v, _ in (await host.counts(experiment)).values())
            headers = {
                "X-Forwarded-For": f"198.19.{index // 256}.{index % 256 + 1}",
                "User-Agent": BROWSERS[0],
            }
            async with session.get(host.base_url + "/", headers=headers) as response:
                await response.read()
            sent = time.monotonic()
            while time.monotonic() - sent < 30:
                counted = sum(v for v, _ in (await host.counts(experiment)).values())
                if counted > before:
                    lags.append(time.monotonic() - sent)
                    break
                await asyncio.sleep(0.005)
            # The next sample starts at a random point of the flush cycle.
            await asyncio.sleep(random.random() * 0.3)  # noqa: S311
    return lags


async def _caught_up(host: AgentHost, requests: float) -> float:
    """Wait until the agent has read every line nginx wrote; how many lines it read."""
    deadline = time.monotonic() + 120
    lines = 0.0
    while time.monotonic() < deadline:
        status = await host.status()
        lines = sum(status["log"]["lines"].values())
        behind = sum(f["behind_bytes"] for f in status["log"]["files"])
        if lines >= requests and behind == 0:
            break
        await asyncio.sleep(0.1)
    return lines


async def _measure(
    work: Path, script: Path, seconds: int, connections: int, rounds: int
) -> dict[str, Any]:
    """Alternate the targets round by round, so a busy machine hurts them all alike."""
    manifest, files = landing_experiment()
    docroot = work / "plain-root"
    docroot.mkdir()
    (docroot / "index.html").write_bytes(files["control"]["index.html"])
    targets: dict[str, str] = {}
    markers: dict[str, str] = {}
    agents = {
        "buffered": {},
        "unbuffered": {"SMART_AGENT_LOG_BUFFER_KIB": "0"},
    }
    async with contextlib.AsyncExitStack() as stack:
        for logged in (False, True):
            address = loopback_address()
            port = free_port(address)
            folder = work / f"plain-{'log' if logged else 'nolog'}"
            conf = _plain_nginx(folder, address, port, docroot, logged)
            await asyncio.to_thread(_start_plain, folder, conf)
            stack.callback(_quit_nginx, folder)
            targets[folder.name] = f"http://{address}:{port}/"
            markers[folder.name] = str(folder)
        hosts: dict[str, AgentHost] = {}
        for label, env in agents.items():
            host = AgentHost(work / label, env={"SMART_AGENT_POLL_SECONDS": "0.25", **env})
            await stack.enter_async_context(host)
            host.deploy(manifest, files)
            await host.start()
            hosts[label] = host
            targets[label] = host.base_url + "/"
            markers[label] = str(host.root)
        # The buffered host is loaded twice: once with its agent counting alongside (as
        # on a real server) and once with the agent paused, which shows nginx's own cost.
        targets["paused"] = targets["buffered"]
        markers["paused"] = markers["buffered"]
        cpu = {label: cpu_seconds(_pid(h)) for label, h in hosts.items()}
        rps: dict[str, list[float]] = {name: [] for name in targets}
        requests: dict[str, float] = dict.fromkeys(targets, 0.0)
        nginx_cpu: dict[str, float] = dict.fromkeys(targets, 0.0)
        for _ in range(rounds):
            for name, url in targets.items():
                if name == "paused":
                    os.kill(_pid(hosts["buffered"]), signal.SIGSTOP)
                before = _nginx_cpu_seconds(markers[name])
                try:
                    figures = await asyncio.to_thread(_load, url, script, seconds, connections)
                finally:
                    if name == "paused":
                        os.kill(_pid(hosts["buffered"]), signal.SIGCONT)
                nginx_cpu[name] += _nginx_cpu_seconds(markers[name]) - before
                rps[name].append(figures["rps"])
                requests[name] += figures["requests"]
        result: dict[str, Any] = {
            "rps": rps,
            "nginx_us": {k: nginx_cpu[k] / requests[k] * 1e6 for k in targets},
        }
        for label, host in hosts.items():
            sent = requests[label] + (requests["paused"] if label == "buffered" else 0)
            lines = await _caught_up(host, sent)
            used = cpu_seconds(_pid(host)) - cpu[label]
            result[label] = {
                "cpu_per_1000": used / lines * 1000,
                "lines": lines,
                "lag": await _lag(host, manifest.name, 20),
            }
        return result


def _pid(host: AgentHost) -> int:
    assert host.process is not None
    return host.process.pid


def _start_plain(folder: Path, conf: Path) -> None:
    subprocess.run([str(NGINX), "-p", str(folder), "-c", str(conf)], check=True)
    deadline = time.monotonic() + 10
    while not (folder / "nginx.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def _quit_nginx(folder: Path) -> None:
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int((folder / "nginx.pid").read_text()), signal.SIGQUIT)


def run(cold: bool, seconds: int = 5, connections: int = 64, rounds: int = 3) -> None:
    del cold  # nothing to build
    tool = f"wrk -t2 -c{connections}" if shutil.which("wrk") else "an aiohttp loop"
    load = os.getloadavg()[0]
    print(
        f"agent: nginx with assignment and logging vs plain nginx; {tool}, {rounds} rounds of "
        f"{seconds} s per target, alternating"
    )
    print(
        f"  {os.cpu_count()} cores (load average {load:.1f} at start); a new visitor "
        "(address, user agent) on every request"
    )
    with tempfile.TemporaryDirectory(prefix="smart-bench-agent-") as scratch:
        work = Path(scratch)
        script = work / "visitors.lua"
        agents = ", ".join(json.dumps(a) for a in BROWSERS)
        script.write_text(WRK_SCRIPT % {"agents": agents})
        result = asyncio.run(_measure(work, script, seconds, connections, rounds))
    median = {name: statistics.median(values) for name, values in result["rps"].items()}
    for name, label in (
        ("plain-nolog", "plain nginx, no access log"),
        ("plain-log", "plain nginx, combined access log"),
    ):
        rounds_text = ", ".join(f"{v:.0f}" for v in result["rps"][name])
        print(f"  {label}: median {median[name]:.0f} requests/s ({rounds_text})")
        print(f"    nginx CPU {result['nginx_us'][name]:.1f} us per request")
    for name, label in (
        ("paused", "agent's nginx alone (buffered log, the agent paused during the rounds)"),
        ("buffered", "agent's nginx with the agent counting, buffered log (the default)"),
        ("unbuffered", "agent's nginx with the agent counting, unbuffered log"),
    ):
        rounds_text = ", ".join(f"{v:.0f}" for v in result["rps"][name])
        print(f"  {label}: median {median[name]:.0f} requests/s ({rounds_text})")
        print(
            f"    ratio {median[name] / median['plain-nolog']:.2f} to plain without a log, "
            f"{median[name] / median['plain-log']:.2f} to plain with its log"
        )
        us = result["nginx_us"]
        print(
            f"    nginx CPU {us[name]:.1f} us per request: plain costs "
            f"{us['plain-nolog'] / us[name]:.2f} (no log) and {us['plain-log'] / us[name]:.2f} "
            "(its log) of that"
        )
        if name == "paused":
            continue
        figures = result[name]
        print(
            f"    agent CPU {figures['cpu_per_1000'] * 1000:.1f} ms per 1,000 requests counted "
            f"({figures['lines']:.0f} lines)"
        )
        lag = figures["lag"]
        if lag:
            print(
                f"    request to count: median {statistics.median(lag) * 1000:.0f} ms, "
                f"max {max(lag) * 1000:.0f} ms ({len(lag)} samples)"
            )
