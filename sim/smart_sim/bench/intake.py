"""The results intake under the load of 5,000 servers: how many reports one intake
process sustains, and how many API-server writes the fleet causes when writes are
coalesced, against a naive path that writes once per report.

On a fresh local control plane (the real kube-apiserver and etcd), 5,000 Domains
with keys and 5,000 Experiments (one per server) are created, and one ``smart-intake``
runs as its own least-privilege account. Then:

1. Naive: reports written one GET + one conditional PATCH each, as fast as the API
   server takes them: what a write-per-report intake could sustain here.
2. Capacity: every server sends a report with new counts (the worst case for
   coalescing: each report needs a write), as fast as the intake answers, 64 in
   flight. Measured: reports/s answered, and reports/s until the last one is on the
   status (the sustained rate), over three rounds of 5,000.
3. Steady state: the fleet for several simulated minutes, with visitors drawn from a
   traffic model of small sites, a heartbeat every 30 s and 1% of reports retried;
   (a) every server sends a report every 60 s, (b) as ``smart_agent`` does, a report
   when its counts changed, and every 5 minutes regardless. Time runs
   ``scale`` times faster than real, and every interval of the intake is divided by
   the same factor, so what is written is what would be written in real time. Each
   Domain's ``status.agent`` starts as a steady state leaves it (``lastSeen`` renewed
   at moments spread over the renewal interval), and 1% of the servers fall silent
   after two minutes. Measured: API-server writes per (real-time) second, against one
   write per request; how soon a report is on the status; how soon after its last
   heartbeat each silent agent is marked.

4. One enormous report: one Experiment, reports with 10^3 to 10^11 conversions per
   arm one after the other; the time to answer and to write each, and the intake's
   resident memory (the statistics cost the same at any count).

``python -m smart_sim.bench intake`` (part of ``make bench``); part 4 alone:
``python -m smart_sim.bench.intake large``; part 3 alone, for any number of servers:
``python -m smart_sim.bench.intake steady --servers 20000 --scale 1``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import math
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from smart_operator.clients.kube import MERGE_PATCH
from smart_operator.intake.experiments import experiment_view
from smart_operator.intake.keys import DomainRef
from smart_operator.intake.schema import ResultsReport
from smart_operator.intake.settings import IntakeSettings
from smart_operator.intake.status import PendingReport, Write, plan_results, rfc3339
from smart_operator.models.domain import SILENCE_CONFIRM_SECONDS
from smart_sim import platform
from smart_sim.controlplane import ControlPlane
from smart_sim.processes import IntakeProcess

SERVERS = 5_000
NAMESPACES = 10
GROUP, VERSION = "smartserver.ai", "v1alpha1"
IN_FLIGHT = 64
WRITES_IN_FLIGHT = IntakeSettings().max_concurrent_writes
SIMULATED_MINUTES = 5
RETRY_SHARE = 0.01
REFRESH_MINUTES = 5  # smart_agent resends unchanged counts this often
SILENT_SHARE = 0.01  # servers that fall silent during the steady state
HEARTBEAT_WRITE_SECONDS = IntakeSettings().heartbeat_write_seconds

# The traffic model of the steady state: small sites. Daily visitors per site are
# log-normal around a median of 300 (a tenth of sites above ~1,400, a few above
# 10,000), split evenly between two variants that convert at 3.0% and 3.6%.
MEDIAN_DAILY_VISITORS = 300.0
SPREAD = 1.2
RATES = (0.030, 0.036)


@dataclass
class Server:
    namespace: str
    name: str
    key: str
    daily_visitors: float
    silent: bool = False
    """Falls silent (no report, no heartbeat) after its second minute: the steady state
    measures how soon the intake marks it."""
    sequence: int = 0
    visitors: list[int] = field(default_factory=lambda: [0, 0])
    conversions: list[int] = field(default_factory=lambda: [0, 0])

    def report(self, rng: np.random.Generator, mean_new_visitors: float) -> bytes:
        """The next cumulative report after ``mean_new_visitors`` (Poisson) arrived."""
        self.sequence += 1
        for arm in (0, 1):
            new = int(rng.poisson(mean_new_visitors / 2))
            self.visitors[arm] += new
            self.conversions[arm] += int(rng.binomial(new, RATES[arm]))
        body = {
            "experiment": self.name,
            "sequence": self.sequence,
            "revision": "r1",
            "variants": [
                {"name": arm, "visitors": self.visitors[i], "conversions": self.conversions[i]}
                for i, arm in enumerate(("control", "variant"))
            ],
        }
        return json.dumps(body).encode()

    def heartbeat(self) -> bytes:
        return json.dumps({"version": "0.1.0", "startedAt": "2026-03-02T08:00:00Z"}).encode()


# -- the fleet on the API server ------------------------------------------------------


async def _bounded(calls: Iterable[Callable[[], Awaitable[Any]]], limit: int = 32) -> None:
    slots = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[Any]]) -> None:
        async with slots:
            for attempt in range(5):
                try:
                    await call()
                    return
                except ApiException as error:
                    if error.status == 409 and attempt == 0:
                        return  # already there
                    if error.status < 500 and error.status != 429:
                        raise
                    await asyncio.sleep(0.5 * (attempt + 1))

    await asyncio.gather(*(one(call) for call in calls))


async def create_fleet(
    kubeconfig: Path, rng: np.random.Generator, count: int = SERVERS
) -> list[Server]:
    """``count`` Domains (keys set on their status) and one Experiment each; one server in
    ``1 / SILENT_SHARE`` falls silent in the steady state."""
    daily = rng.lognormal(math.log(MEDIAN_DAILY_VISITORS), SPREAD, count)
    every = round(1 / SILENT_SHARE)
    servers = [
        Server(
            f"bench-{i % NAMESPACES}",
            f"site-{i:05d}",
            f"ssk_bench-{i:05d}",
            float(d),
            silent=i % every == every - 1,
        )
        for i, d in enumerate(daily)
    ]
    await create_servers(kubeconfig, servers)
    return servers


async def create_servers(kubeconfig: Path, servers: list[Server]) -> None:
    """A Domain (its key set on its status) and an Experiment for each server."""
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = 64
    async with client.ApiClient(configuration) as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        await _bounded(
            functools.partial(
                core.create_namespace,
                client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)),
            )
            for namespace in sorted({s.namespace for s in servers})
        )

        def domain(s: Server) -> Callable[[], Awaitable[Any]]:
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Domain",
                "metadata": {"name": s.name, "namespace": s.namespace},
                "spec": {"domain": f"{s.name}.bench.example"},
            }
            return lambda: custom.create_namespaced_custom_object(
                GROUP, VERSION, s.namespace, "domains", body
            )

        def key(s: Server) -> Callable[[], Awaitable[Any]]:
            status = {"status": {"intakeKeyHash": hashlib.sha256(s.key.encode()).hexdigest()}}
            return lambda: custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                s.namespace,
                "domains",
                s.name,
                status,
                **MERGE_PATCH,
            )

        def experiment(s: Server) -> Callable[[], Awaitable[Any]]:
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Experiment",
                "metadata": {"name": s.name, "namespace": s.namespace},
                "spec": {
                    "domainRef": s.name,
                    "type": "landing_page",
                    "template": "saas_landing",
                    "variants": [{"name": "control"}, {"name": "variant"}],
                },
            }
            return lambda: custom.create_namespaced_custom_object(
                GROUP, VERSION, s.namespace, "experiments", body
            )

        await _bounded(domain(s) for s in servers)
        await _bounded(key(s) for s in servers)
        await _bounded(experiment(s) for s in servers)


async def seed_agents(
    kubeconfig: Path, servers: list[Server], renew_seconds: float, rng: np.random.Generator
) -> None:
    """Every Domain's ``status.agent`` as the steady state leaves it: the agent of the
    benchmark's heartbeats, its ``lastSeen`` renewed at a moment spread evenly over the
    last ``renew_seconds`` (after a first run every renewal would fall due at once)."""
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = 64
    now = datetime.now(UTC)
    async with client.ApiClient(configuration) as api:
        custom = client.CustomObjectsApi(api)

        def seed(s: Server, age: float) -> Callable[[], Awaitable[Any]]:
            agent = {
                "version": "0.1.0",
                "startedAt": "2026-03-02T08:00:00Z",
                "lastSeen": rfc3339(now - timedelta(seconds=age)),
                "serving": [],
                "renewSeconds": int(renew_seconds),
                "silentSince": None,
            }
            return lambda: custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                s.namespace,
                "domains",
                s.name,
                {"status": {"agent": agent}},
                **MERGE_PATCH,
            )

        ages = rng.uniform(0, renew_seconds, len(servers))
        await _bounded(seed(s, float(age)) for s, age in zip(servers, ages, strict=True))


async def silences(kubeconfig: Path, servers: list[Server]) -> list[float]:
    """For each server that fell silent: seconds from its last heartbeat (``lastSeen``)
    to the intake's mark (``silentSince``), on the status; ``inf`` when unmarked."""
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    delays = []
    async with client.ApiClient(configuration) as api:
        custom = client.CustomObjectsApi(api)
        for server in servers:
            if not server.silent:
                continue
            obj = await custom.get_namespaced_custom_object(
                GROUP, VERSION, server.namespace, "domains", server.name
            )
            agent = (obj.get("status") or {}).get("agent") or {}
            if agent.get("silentSince") and agent.get("lastSeen"):
                marked = datetime.fromisoformat(agent["silentSince"])
                delays.append((marked - datetime.fromisoformat(agent["lastSeen"])).total_seconds())
            else:
                delays.append(math.inf)
    return delays


# -- talking to the intake ------------------------------------------------------------


async def metrics(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """Every sample on /metrics, keyed by its line's name and labels."""
    async with session.get(url) as response:
        text = await response.text()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    return sum(
        value
        for key, value in samples.items()
        if (key == name or key.startswith(name + "{"))
        and all(f'{k}="{v}"' in key for k, v in labels.items())
    )


async def until_idle(session: aiohttp.ClientSession, intake: IntakeProcess) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if total(await metrics(session, intake.metrics_url), "smartserver_intake_pending") == 0:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the intake did not finish writing within 10 minutes")


async def send(
    session: aiohttp.ClientSession, url: str, body: bytes, key: str, answers: Counter[int]
) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with session.post(url, data=body, headers=headers) as response:
        await response.read()
        answers[response.status] += 1


async def blast(
    session: aiohttp.ClientSession, url: str, requests: list[tuple[bytes, str]]
) -> tuple[float, Counter[int]]:
    """Send every request, ``IN_FLIGHT`` at a time, as fast as they are answered."""
    answers: Counter[int] = Counter()
    queue = iter(requests)

    async def worker() -> None:
        for body, key in queue:
            await send(session, url, body, key, answers)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return time.perf_counter() - started, answers


def intake_env(scale: float = 1.0) -> dict[str, str]:
    """The intake's default intervals, divided by ``scale``."""
    defaults = IntakeSettings()
    return {
        "SMART_INTAKE_FLUSH_INTERVAL_SECONDS": str(defaults.flush_interval_seconds / scale),
        "SMART_INTAKE_IDLE_WRITE_SECONDS": str(defaults.idle_write_seconds / scale),
        "SMART_INTAKE_HEARTBEAT_WRITE_SECONDS": str(defaults.heartbeat_write_seconds / scale),
        "SMART_INTAKE_SILENT_SECONDS": str(defaults.silent_seconds / scale),
        "SMART_INTAKE_LOG_LEVEL": "WARNING",
    }


# -- 1. capacity ----------------------------------------------------------------------


async def capacity(
    intake: IntakeProcess, servers: list[Server], rng: np.random.Generator, rounds: int = 3
) -> tuple[float, float]:
    """Reports/s answered and reports/s written (medians over ``rounds``)."""
    answered, written = [], []
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as session:
        for round_ in range(1, rounds + 1):
            requests = [(s.report(rng, 50.0), s.key) for s in servers]
            before = await metrics(session, intake.metrics_url)
            started = time.perf_counter()
            elapsed, answers = await blast(session, f"{intake.url}/v1/results", requests)
            await until_idle(session, intake)
            done = time.perf_counter() - started
            after = await metrics(session, intake.metrics_url)
            writes = {
                outcome: total(after, "smartserver_intake_writes_total", outcome=outcome)
                - total(before, "smartserver_intake_writes_total", outcome=outcome)
                for outcome in ("ok", "conflict", "error")
            }
            print(
                f"    round {round_}: {len(requests)} reports answered in {elapsed:.1f} s "
                f"({len(requests) / elapsed:,.0f}/s; {dict(sorted(answers.items()))}), "
                f"all on the status after {done:.1f} s ({len(requests) / done:,.0f}/s); "
                f"writes {writes['ok']:.0f} ok, {writes['conflict']:.0f} conflicts, "
                f"{writes['error']:.0f} errors"
            )
            answered.append(len(requests) / elapsed)
            written.append(len(requests) / done)
    return statistics.median(answered), statistics.median(written)


# -- 2. steady state ------------------------------------------------------------------


@dataclass(order=True)
class Event:
    at: float
    """Real seconds from the start."""
    path: str = field(compare=False)
    body: bytes = field(compare=False)
    key: str = field(compare=False)


def schedule(
    servers: list[Server],
    rng: np.random.Generator,
    minutes: int,
    scale: float,
    *,
    on_change: bool,
) -> tuple[list[Event], Counter[str], float]:
    """Every request of ``minutes`` simulated minutes, on a clock ``scale`` times faster,
    and the share of minutes with new visitors. Each agent looks at its counts every
    minute and sends a report: always, or (``on_change``, as ``smart_agent`` does) only
    when they changed or its last report is 5 minutes old."""
    minute = 60.0 / scale
    events: list[Event] = []
    kinds: Counter[str] = Counter()
    changed = simulated = 0
    for server in servers:
        offset = float(rng.uniform(0, minute))  # each agent has its own phase
        last_sent = -REFRESH_MINUTES
        for m in range(2 if server.silent else minutes):
            before = sum(server.visitors)
            body = server.report(rng, server.daily_visitors / 1440.0)
            new = sum(server.visitors) != before
            changed += new
            simulated += 1
            at = offset + m * minute
            if not on_change or new or m - last_sent >= REFRESH_MINUTES:
                last_sent = m
                events.append(Event(at, "/v1/results", body, server.key))
                kinds["results"] += 1
                if rng.random() < RETRY_SHARE:  # the answer was lost; the agent resends
                    events.append(Event(at + 2.0 / scale, "/v1/results", body, server.key))
                    kinds["retries"] += 1
            for half in (0.0, 0.5):
                events.append(
                    Event(at + half * minute, "/v1/heartbeat", server.heartbeat(), server.key)
                )
                kinds["heartbeats"] += 1
    events.sort()
    return events, kinds, changed / simulated


async def paced(intake: IntakeProcess, events: list[Event]) -> tuple[float, Counter[int]]:
    """Send each event at its time (at most ``IN_FLIGHT`` open); return the worst lag."""
    answers: Counter[int] = Counter()
    slots = asyncio.Semaphore(IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()
    worst = 0.0
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def one(event: Event) -> None:
            try:
                await send(session, intake.url + event.path, event.body, event.key, answers)
            finally:
                slots.release()

        for event in events:
            delay = start + event.at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            worst = max(worst, loop.time() - start - event.at)
            task = asyncio.create_task(one(event))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return worst, answers


# -- 3. naive -------------------------------------------------------------------------


async def naive(kubeconfig: Path, servers: list[Server], rng: np.random.Generator) -> float:
    """Writes/s of a path that reads the Experiment and writes its status once per
    report (the same status computation, the same conditional patch)."""
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = WRITES_IN_FLIGHT
    written = 0
    async with client.ApiClient(configuration) as api:
        custom = client.CustomObjectsApi(api)

        async def write(server: Server) -> None:
            nonlocal written
            report = ResultsReport.model_validate_json(server.report(rng, 50.0))
            for _ in range(10):
                obj = await custom.get_namespaced_custom_object(
                    GROUP, VERSION, server.namespace, "experiments", server.name
                )
                view = experiment_view(obj)
                assert view is not None
                now = datetime.now(UTC)
                pending = PendingReport(
                    report, DomainRef(server.namespace, server.name), view.uid, now, 0.0
                )
                plan = plan_results(view, pending, now, 0.0)
                if not isinstance(plan, Write):
                    return
                meta = {"resourceVersion": view.resource_version}
                try:
                    await custom.patch_namespaced_custom_object_status(
                        GROUP,
                        VERSION,
                        server.namespace,
                        "experiments",
                        server.name,
                        {"metadata": meta, "status": plan.status},
                        **MERGE_PATCH,
                    )
                except ApiException as error:
                    if error.status == 409:
                        continue
                    raise
                written += 1
                return

        started = time.perf_counter()
        await _bounded((functools.partial(write, s) for s in servers), limit=WRITES_IN_FLIGHT)
        elapsed = time.perf_counter() - started
    return written / elapsed


# -- 4. one enormous report -----------------------------------------------------------

# Conversions per arm of the reports sent one after the other (visitors ten times as
# many, at most the schema's 10^12): from a small site to the schema's limit.
LARGE_REPORTS = (10**3, 10**7, 10**9, 10**11)


def analysis_seconds(body: bytes, repeat: int = 5) -> float:
    """The fastest of ``repeat`` runs of ``plan_results`` (statistics and status) for the
    report ``body`` on a fresh two-variant Experiment, in this process."""
    report = ResultsReport.model_validate_json(body)
    view = experiment_view(
        {
            "metadata": {
                "name": report.experiment,
                "namespace": "bench-large",
                "uid": "uid",
                "resourceVersion": "1",
                "creationTimestamp": "2026-03-02T09:00:00Z",
            },
            "spec": {
                "domainRef": report.experiment,
                "type": "landing_page",
                "template": "saas_landing",
                "variants": [{"name": "control"}, {"name": "variant"}],
            },
        }
    )
    assert view is not None
    now = datetime.now(UTC)
    pending = PendingReport(report, DomainRef("bench-large", report.experiment), "uid", now, 0.0)
    best = math.inf
    for _ in range(repeat):
        started = time.perf_counter()
        plan_results(view, pending, now, 0.0)
        best = min(best, time.perf_counter() - started)
    return best


def memory_kib(pid: int) -> tuple[int, int]:
    """The process's resident memory now and at its peak (VmRSS, VmHWM), in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


async def large_reports(kubeconfig: Path, admin_kubeconfig: Path, workdir: Path) -> None:
    """One intake process, one Experiment, and one report after the other with ever
    larger counts (``LARGE_REPORTS``): the time to answer each, the time until it is on
    the status (the intake's report-to-status delay metric, which one report at a time
    makes exact), and the process's resident memory and peak after each."""
    server = Server("bench-large", "site-large", "ssk_bench-large", 0.0)
    await create_servers(admin_kubeconfig, [server])
    # The Experiment is seconds old: at the default 10,000 visitors a second the intake
    # would rightly refuse 10^10 visitors (422 implausible_growth). Raised so the
    # statistics are what is measured.
    # Writes not held back by the coalescing interval either (reports follow each
    # other within a second here), so the delay is the analysis and the write.
    env = {
        **intake_env(),
        "SMART_INTAKE_MAX_VISITORS_PER_SECOND": "1e12",
        "SMART_INTAKE_FLUSH_INTERVAL_SECONDS": "0",
    }
    intake = IntakeProcess(kubeconfig, workdir, name="intake-large", env=env)
    try:
        intake.start()
        assert intake.process is not None
        pid = intake.process.pid
        async with aiohttp.ClientSession() as session:
            rss, peak = memory_kib(pid)
            print(f"     started: resident {rss / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB")
            for sequence, conversions in enumerate(LARGE_REPORTS, start=1):
                visitors = min(10**12, 10 * conversions)
                body = json.dumps(
                    {
                        "experiment": server.name,
                        "sequence": sequence,
                        "variants": [
                            {"name": "control", "visitors": visitors, "conversions": conversions},
                            {
                                "name": "variant",
                                "visitors": visitors,
                                "conversions": conversions + conversions // 1000,
                            },
                        ],
                    }
                ).encode()
                before = await metrics(session, intake.metrics_url)
                answers: Counter[int] = Counter()
                started = time.perf_counter()
                await send(session, f"{intake.url}/v1/results", body, server.key, answers)
                answered = time.perf_counter() - started
                await until_idle(session, intake)
                after = await metrics(session, intake.metrics_url)
                delay = total(after, "smartserver_intake_report_delay_seconds_sum") - total(
                    before, "smartserver_intake_report_delay_seconds_sum"
                )
                rss, peak = memory_kib(pid)
                print(
                    f"     {conversions:.0e} conversions per arm ({visitors:.0e} visitors): "
                    f"answered {answers.most_common(1)[0][0]} in {1000 * answered:.1f} ms, "
                    f"on the status {1000 * delay:.0f} ms after (the statistics alone: "
                    f"{1000 * analysis_seconds(body):.1f} ms); resident {rss / 1024:.0f} "
                    f"MiB, peak {peak / 1024:.0f} MiB"
                )
    finally:
        intake.stop()


# -- the benchmark --------------------------------------------------------------------


async def _bench(plane: ControlPlane, workdir: Path) -> None:
    rng = np.random.default_rng(2026)
    started = time.perf_counter()
    servers = await create_fleet(plane.kubeconfig, rng)
    print(
        f"  fleet: {SERVERS:,} Domains with keys and {SERVERS:,} Experiments in "
        f"{NAMESPACES} namespaces, created in {time.perf_counter() - started:.0f} s"
    )
    kubeconfig = platform.intake_kubeconfig(plane, workdir / "intake.kubeconfig")

    sample = servers[:2000]
    rate = await naive(plane.kubeconfig, sample, rng)
    print(
        f"  1. naive path, one GET + one conditional PATCH per report ({WRITES_IN_FLIGHT} in "
        "flight, as many as the intake's writes): "
        f"{rate:,.0f} reports/s = API-server writes/s ({len(sample):,} reports)"
    )

    print(f"  2. capacity: every server reports new counts, {IN_FLIGHT} requests in flight")
    intake = IntakeProcess(kubeconfig, workdir, name="intake-capacity", env=intake_env())
    try:
        answered, sustained = await capacity(intake.start(), servers, rng)
    finally:
        intake.stop()
    print(
        f"     one intake process: {answered:,.0f} reports/s answered, {sustained:,.0f} "
        f"reports/s sustained to the status (5,000 servers every 60 s need {SERVERS / 60:.0f}/s)"
    )

    for label, on_change in STEADY.values():
        scale = steady_scale(len(servers), answered, on_change)
        await steady(
            label, kubeconfig, plane.kubeconfig, workdir, servers, rng, scale, on_change=on_change
        )

    print("  4. one report after the other, each larger, to one intake process")
    await large_reports(kubeconfig, plane.kubeconfig, workdir)


async def steady(
    label: str,
    kubeconfig: Path,
    admin_kubeconfig: Path,
    workdir: Path,
    servers: list[Server],
    rng: np.random.Generator,
    scale: float,
    *,
    on_change: bool,
) -> None:
    """Run the fleet's requests for a few simulated minutes; print the writes, and how
    fresh the status stayed."""
    events, kinds, changed = schedule(servers, rng, SIMULATED_MINUTES, scale, on_change=on_change)
    silent = sum(s.silent for s in servers)
    print(
        f"  {label}: {len(servers):,} servers, {SIMULATED_MINUTES} simulated minutes at "
        f"{scale:.0f}x speed (the intake's intervals divided by {scale:.0f}); {changed:.0%} of "
        f"minutes bring new visitors; heartbeats every 30 s; 1% of reports retried; "
        f"{silent} servers fall silent after 2 minutes"
    )
    renew = HEARTBEAT_WRITE_SECONDS / scale
    await seed_agents(admin_kubeconfig, servers, renew, rng)
    name = "intake-on-change" if on_change else "intake-every-minute"
    intake = IntakeProcess(kubeconfig, workdir, name=name, env=intake_env(scale))
    try:
        intake.start()
        async with aiohttp.ClientSession() as session:
            before = await metrics(session, intake.metrics_url)
        lag, answers = await paced(intake, events)
        async with aiohttp.ClientSession() as session:
            # Liveness writes are counted up to the last request: once the fleet stops,
            # every agent falls silent, and marking them is not the steady state.
            sent = await metrics(session, intake.metrics_url)
            await until_idle(session, intake)
            after = await metrics(session, intake.metrics_url)
    finally:
        intake.stop()
    marks = [d * scale for d in await silences(admin_kubeconfig, servers)]

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    seconds = SIMULATED_MINUTES * 60.0
    requests = sum(kinds.values())
    results_writes = delta("smartserver_intake_writes_total", kind="experiment")
    domain_writes = total(sent, "smartserver_intake_writes_total", kind="domain") - total(
        before, "smartserver_intake_writes_total", kind="domain"
    )
    naive_results = kinds["results"] + kinds["retries"]
    print(
        f"     requests: {kinds['results']:,} reports, {kinds['retries']:,} retries, "
        f"{kinds['heartbeats']:,} heartbeats; answers {dict(sorted(answers.items()))}; "
        f"worst lag behind schedule {lag:.2f} s"
    )
    unchanged = delta("smartserver_intake_skipped_total", kind="experiment", reason="unchanged")
    replays = delta(
        "smartserver_intake_requests_total", endpoint="results", outcome="stale"
    ) + delta("smartserver_intake_skipped_total", kind="experiment", reason="stale")
    print(
        f"     results: {naive_results / seconds:.1f} writes/s naive (one per report) vs "
        f"{results_writes / seconds:.1f} writes/s coalesced "
        f"({naive_results / max(results_writes, 1):.1f}x fewer); not written: "
        f"{unchanged:,.0f} unchanged, {replays:,.0f} replays"
    )
    marked = total(sent, "smartserver_intake_silences_total", outcome="marked") - total(
        before, "smartserver_intake_silences_total", outcome="marked"
    )
    print(
        f"     heartbeats: {kinds['heartbeats'] / seconds:.1f} writes/s naive vs "
        f"{domain_writes / seconds:.1f} writes/s written "
        f"({kinds['heartbeats'] / max(domain_writes, 1):.1f}x fewer; {marked:.0f} of them "
        "silence marks)"
    )
    coalesced = results_writes + domain_writes
    print(
        f"     all: {requests / seconds:.1f} writes/s naive vs {coalesced / seconds:.1f} "
        f"writes/s written: {requests / max(coalesced, 1):.1f}x fewer API-server writes"
    )
    count = delta("smartserver_intake_report_delay_seconds_count")
    within = {
        bound: delta("smartserver_intake_report_delay_seconds_bucket", le=bound) / max(count, 1)
        for bound in ("1.0", "2.0", "5.0", "60.0")
    }
    mean = delta("smartserver_intake_report_delay_seconds_sum") / max(count, 1)
    print(
        f"     freshness: a report on the status {mean:.2f} s after it arrived on average "
        f"(real-time flush interval {IntakeSettings().flush_interval_seconds:.0f} s, here "
        f"divided by {scale:.0f}); within 1 / 2 / 5 / 60 s: "
        + " / ".join(f"{share:.1%}" for share in within.values())
    )
    found = sorted(d for d in marks if math.isfinite(d))
    if found:
        print(
            f"     silence: {len(found)} of {len(marks)} silent agents marked, "
            f"{found[0]:.0f}-{found[-1]:.0f} s (real time) after their last heartbeat "
            f"(median {statistics.median(found):.0f} s); readers count them silent "
            f"{SILENCE_CONFIRM_SECONDS:.0f} s after the mark"
        )
    else:
        print(f"     silence: none of {len(marks)} silent agents marked")


async def _steady_only(
    plane: ControlPlane, workdir: Path, count: int, scale: float, scenarios: str
) -> None:
    rng = np.random.default_rng(2026)
    started = time.perf_counter()
    servers = await create_fleet(plane.kubeconfig, rng, count)
    print(
        f"  fleet: {count:,} Domains with keys and {count:,} Experiments in "
        f"{NAMESPACES} namespaces, created in {time.perf_counter() - started:.0f} s"
    )
    kubeconfig = platform.intake_kubeconfig(plane, workdir / "intake.kubeconfig")
    # Every Experiment's first report is always written (it records the incarnation):
    # sent before counting, as part 2 does in the whole benchmark.
    warmup = IntakeProcess(kubeconfig, workdir, name="intake-warmup", env=intake_env())
    try:
        await capacity(warmup.start(), servers, rng, rounds=1)
    finally:
        warmup.stop()
    for scenario in scenarios:
        label, on_change = STEADY[scenario]
        await steady(
            label, kubeconfig, plane.kubeconfig, workdir, servers, rng, scale, on_change=on_change
        )


STEADY = {
    "a": ("3a. steady state, every server reporting every 60 s", False),
    "b": (
        "3b. steady state, reports as smart_agent sends them (on change, else every 5 min)",
        True,
    ),
}


def steady_scale(count: int, answered: float, on_change: bool) -> float:
    """How much faster than real time the fleet's requests can be sent: at most 40% of
    what one intake answered, at most 10x."""
    per_minute = count * ((0.5 if on_change else 1.0) * (1 + RETRY_SHARE) + 2)
    return max(1.0, min(10.0, math.floor(0.4 * answered / (per_minute / 60.0))))


def run(cold: bool) -> None:
    del cold  # nothing to build
    print(f"intake: {SERVERS:,} simulated servers on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="smartserver-bench-intake-") as scratch:
        workdir = Path(scratch)
        plane = ControlPlane(workdir / "plane")
        try:
            plane.start(setup=platform.install)
            asyncio.run(_bench(plane, workdir))
        finally:
            plane.stop()


def run_large(cold: bool = False) -> None:
    """Only part 4, on a fresh control plane (a minute, not the whole benchmark):
    ``python -m smart_sim.bench.intake large``."""
    del cold
    print(f"intake, large reports, on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="smartserver-bench-intake-") as scratch:
        workdir = Path(scratch)
        plane = ControlPlane(workdir / "plane")
        try:
            plane.start(setup=platform.install)
            kubeconfig = platform.intake_kubeconfig(plane, workdir / "intake.kubeconfig")
            asyncio.run(large_reports(kubeconfig, plane.kubeconfig, workdir))
        finally:
            plane.stop()


def run_steady(count: int, scale: float, scenarios: str) -> None:
    """Only part 3, for ``count`` servers: ``python -m smart_sim.bench.intake steady``."""
    print(f"intake, steady state, {count:,} simulated servers on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="smartserver-bench-intake-") as scratch:
        workdir = Path(scratch)
        plane = ControlPlane(workdir / "plane")
        try:
            plane.start(setup=platform.install)
            asyncio.run(_steady_only(plane, workdir, count, scale, scenarios))
        finally:
            plane.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m smart_sim.bench.intake",
        description="Parts of the intake benchmark alone (all of it: python -m smart_sim.bench "
        "intake).",
    )
    parts = parser.add_subparsers(dest="part", required=True)
    parts.add_parser("large", help="part 4: one report after the other, each larger")
    only = parts.add_parser("steady", help="part 3: API-server writes in the steady state")
    only.add_argument("--servers", type=int, default=SERVERS, help="simulated servers")
    only.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="how much faster than real time (the intake's intervals divided by it); the "
        "whole benchmark derives it from the measured capacity",
    )
    only.add_argument(
        "--scenarios",
        default="ab",
        help="a: every server reports every 60 s; b: as smart_agent sends them",
    )
    args = parser.parse_args()
    if args.part == "large":
        run_large()
    else:
        if set(args.scenarios) - set(STEADY):
            parser.error(f"--scenarios takes some of {''.join(STEADY)}")
        run_steady(args.servers, args.scale, args.scenarios)


if __name__ == "__main__":
    main()
