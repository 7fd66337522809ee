"""``python -m smart_sim.bench tls``: the agent's nginx over HTTPS against plain nginx
over HTTPS with the same certificate (ECDSA P-256), the same TLS settings
(``smart_agent.nginx.TLS_DIRECTIVES``) and Debian's combined access log, with ``wrk``:
on kept-alive connections, and with a new connection (a full TLS handshake) for every
request. Every request is a new visitor the agent must count; the agent counts beside
nginx on the same two cores, as on a server. Rounds alternate between the targets."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from smart_agent.nginx import TLS_DIRECTIVES
from smart_sim.bench.agent import (
    WRK_SCRIPT,
    AgentHost,
    _caught_up,
    _quit_nginx,
    _start_plain,
    _wrk,
    free_port,
    landing_experiment,
    loopback_address,
)
from smart_sim.traffic import BROWSERS

CLOSE = 'return wrk.format("GET", "/", {["X-Forwarded-For"] = ip, ["User-Agent"] = agent})'


def _certificate(folder: Path, host: str = "bench.example") -> tuple[Path, Path]:
    """A self-signed CA certificate for ``host`` (it is its own trust anchor, so a
    verifying client may trust it alone)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "fullchain.pem", folder / "privkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _plain_tls_nginx(
    folder: Path, address: str, port: int, docroot: Path, cert: Path, key: Path
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / "tmp" / kind).mkdir(parents=True, exist_ok=True)
    temp = "\n".join(
        f"    {kind}_temp_path {folder / 'tmp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    tls = "\n".join(f"        {line}" for line in TLS_DIRECTIVES)
    conf = folder / "nginx.conf"
    conf.write_text(
        f"pid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} alert;\n{user}"
        "worker_processes auto;\nevents { worker_connections 4096; }\n"
        "http {\n    types { text/html html; text/css css; image/svg+xml svg; }\n"
        f"    sendfile on;\n    tcp_nopush on;\n{temp}\n"
        f"    server {{\n        listen {address}:{port} ssl;\n"
        f"        ssl_certificate {cert};\n        ssl_certificate_key {key};\n{tls}\n"
        f"        access_log {folder / 'access.log'};\n"
        f"        location / {{ root {docroot}; index index.html; }}\n    }}\n}}\n"
    )
    return conf


async def _measure(
    work: Path, scripts: dict[str, Path], seconds: int, connections: int, rounds: int
) -> dict[str, dict[str, list[float]]]:
    manifest, files = landing_experiment()
    docroot = work / "plain-root"
    docroot.mkdir()
    (docroot / "index.html").write_bytes(files["control"]["index.html"])
    cert, key = _certificate(work / "cert")
    async with contextlib.AsyncExitStack() as stack:
        address = loopback_address()
        port = free_port(address)
        folder = work / "plain-tls"
        conf = _plain_tls_nginx(folder, address, port, docroot, cert, key)
        await asyncio.to_thread(_start_plain, folder, conf)
        stack.callback(_quit_nginx, folder)
        host = AgentHost(work / "agent", env={"SMART_AGENT_POLL_SECONDS": "0.25"})
        tls_port = free_port(host.address)
        host.env["SMART_AGENT_TLS_LISTEN"] = f"{host.address}:{tls_port}"
        await stack.enter_async_context(host)
        host.deploy(manifest, files)
        delivered = host.root / "opt/smart/tls"
        delivered.mkdir(parents=True)
        shutil.copy(cert, delivered / "fullchain.pem")
        shutil.copy(key, delivered / "privkey.pem")
        await host.start()
        targets = {
            "plain": f"https://{address}:{port}/",
            "agent": f"https://{host.address}:{tls_port}/",
        }
        rps: dict[str, dict[str, list[float]]] = {
            mode: {name: [] for name in targets} for mode in scripts
        }
        sent = 0.0
        for _ in range(rounds):
            for mode, script in scripts.items():
                for name, url in targets.items():
                    figures = await asyncio.to_thread(_wrk, url, script, seconds, connections)
                    rps[mode][name].append(figures["rps"])
                    if name == "agent":
                        sent += figures["requests"]
        await _caught_up(host, sent)
        return rps


def run(cold: bool, seconds: int = 5, connections: int = 64, rounds: int = 3) -> None:
    del cold  # nothing to build
    if not shutil.which("wrk"):
        print("tls: needs wrk (Debian's wrk package)")
        return
    print(
        f"tls: the agent's nginx over HTTPS (the agent counting) vs plain nginx over HTTPS "
        f"with its log; wrk -t2 -c{connections}, {rounds} rounds of {seconds} s per target "
        f"and mode; {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} at start)"
    )
    with tempfile.TemporaryDirectory(prefix="smart-bench-tls-") as scratch:
        work = Path(scratch)
        agents = ", ".join(json.dumps(a) for a in BROWSERS)
        keep = work / "keepalive.lua"
        keep.write_text(WRK_SCRIPT % {"agents": agents})
        close = work / "close.lua"
        text = WRK_SCRIPT % {"agents": agents}
        assert CLOSE in text
        close.write_text(
            text.replace(
                CLOSE,
                CLOSE.replace(
                    '["User-Agent"] = agent', '["User-Agent"] = agent, ["Connection"] = "close"'
                ),
            )
        )
        result = asyncio.run(
            _measure(
                work, {"keep-alive": keep, "new connections": close}, seconds, connections, rounds
            )
        )
    for mode, figures in result.items():
        median = {name: statistics.median(values) for name, values in figures.items()}
        plain = ", ".join(f"{v:.0f}" for v in figures["plain"])
        agent = ", ".join(f"{v:.0f}" for v in figures["agent"])
        print(f"  {mode}: plain nginx median {median['plain']:.0f} requests/s ({plain})")
        print(f"  {mode}: agent's nginx median {median['agent']:.0f} requests/s ({agent})")
        print(f"  {mode}: ratio {median['agent'] / median['plain']:.2f}")
