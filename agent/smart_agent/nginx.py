"""nginx for the agent: renders the whole configuration, tests it, and runs the server.

The agent owns one nginx instance per root (``-p <state>/nginx -c nginx.conf``, its own
pid file), so several simulated hosts can each run theirs on one machine. nginx runs
as a daemon of its own: it keeps serving (and logging) while the agent restarts.

What the configuration does (docs/agent.md explains why):

- ``split_clients`` on ``"<daily salt> $remote_addr $http_user_agent"`` picks the
  variant (weights in steps of 0.01%); each variant has its own document root.
- A visitor id is built *inside nginx* from eight more ``split_clients`` blocks with
  other salts, each giving two hex digits (a keyed hash of almost 64 bits), so the
  access log holds the id and never the address or the user agent.
- A JSON access log with the experiment, revision, salt day, variant, visitor id, the
  path without its query, the status, the content type, and bot/prefetch flags.
- ``/_smart/convert`` sends the visitor to the experiment's goal (from its manifest,
  never from the URL): 303 for a POST from this site (the one answer the agent counts),
  302 for a plain link or a form from another site; ``/_smart/health`` tells which
  configuration is live.
- A performance experiment's pages load ``/_smart/timing.js`` and post their real-user
  timings to ``/_smart/timing`` (``timing.py``): 204 for a POST from this site, logged
  in the same log and format as a page view (with the ``rum`` value), 403 for another
  site's, 405 for any other method.

Nothing here decides *what* to serve (the agent does) and nothing reads the log. A new
configuration replaces the old one only after ``nginx -t`` accepts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import signal
import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from smart_agent import __version__
from smart_agent.deploy import Deployment
from smart_agent.logreader import CONVERT_PATH, LOG_KEYS
from smart_agent.settings import AgentSettings
from smart_agent.timing import SCRIPT, SCRIPT_PATH, TIMING_PATH
from smart_agent.tls import TlsFiles

HEALTH_PATH = "/_smart/health"
RETIRE_GRACE_SECONDS = 5.0  # how long a reload waits for the old workers to finish
ID_BLOCKS = 8  # split_clients blocks of the visitor id, each giving two hex digits
PERCENT_UNITS = 10_000  # split_clients takes percentages with two decimals

# User-agent words of crawlers, previewers, monitors and HTTP libraries. A visitor with
# one of them (or none at all) is served like anyone else but never counted.
BOT_WORDS = (
    "bot",
    "crawl",
    "spider",
    "slurp",
    "curl",
    "wget",
    "python",
    "aiohttp",
    "httpx",
    "go-http-client",
    "okhttp",
    "java/",
    "libwww",
    "scrapy",
    "node-fetch",
    "axios",
    "headless",
    "phantomjs",
    "lighthouse",
    "pagespeed",
    "facebookexternalhit",
    "embedly",
    "preview",
    "monitor",
    "uptime",
    "pingdom",
    "archiver",
    "smart-agent",
)

MIME_TYPES = {
    "text/html": "html htm",
    "text/css": "css",
    "text/plain": "txt",
    "application/javascript": "js mjs",
    "application/json": "json",
    "application/xml": "xml",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpg jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/x-icon": "ico",
    "font/woff2": "woff2",
    "font/woff": "woff",
}


class NginxError(RuntimeError):
    """nginx refused a configuration or would not start; the message is nginx's own."""


@dataclass(frozen=True)
class ServePlan:
    """Everything one configuration depends on."""

    deployment: Deployment | None  # the experiment that serves `/`, if any
    day: str  # the salt's day (UTC date), logged with every line
    secret: str  # the day's salt (hex); never logged
    active_variant: str | None = None  # performance experiments: this window's variant
    tls: TlsFiles | None = None  # the certificate, once the operator delivered one


def _id_buckets() -> list[tuple[str, int]]:
    """256 buckets ``00``..``ff`` of 39 or 40 units: split_clients counts in 0.01%.

    Slightly unequal buckets cost a hundredth of a bit each; what matters is that two
    visitors rarely share an id (about 1 in 10^8 pairs of a day's visitors at 64 bits).
    """
    base, extra = divmod(PERCENT_UNITS, 256)
    return [(f"{b:02x}", base + (1 if b < extra else 0)) for b in range(256)]


ID_BUCKETS = _id_buckets()


def split_parts(weights: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Variants with a positive weight and their share in units of 0.01%.

    Every variant keeps at least one unit; the shares add up to exactly 100%.
    """
    positive = [(name, weight) for name, weight in weights if weight > 0]
    if not positive:
        raise ValueError("no variant has a positive weight")
    total = sum(weight for _, weight in positive)
    units = [max(1, round(weight * PERCENT_UNITS / total)) for _, weight in positive]
    largest = max(range(len(units)), key=lambda i: units[i])
    units[largest] += PERCENT_UNITS - sum(units)
    return [(name, share) for (name, _), share in zip(positive, units, strict=True)]


def derive_salt(secret: str, label: str) -> str:
    """One of the day's salts (for the variant or a digit of the visitor id)."""
    return hmac.new(bytes.fromhex(secret), label.encode(), hashlib.sha256).hexdigest()[:32]


def assignment_key(salt: str) -> str:
    # The salt comes first so that each block's hash differs from its first byte on:
    # with the salt last, all blocks would share murmur2's state over the address and
    # user agent, and the id would hold only 32 bits however many blocks it has.
    return f'"{salt} $remote_addr $http_user_agent"'


# Mozilla's "intermediate" server-side TLS configuration (guidelines 5.7,
# https://ssl-config.mozilla.org/): TLS 1.2 and 1.3, forward-secret AEAD suites only, the
# client's order (every listed suite is strong), no session tickets (their key would
# outlive the day's visitor salt). The certificate is ECDSA P-256, so no RSA or DHE.
TLS_DIRECTIVES = (
    "ssl_protocols TLSv1.2 TLSv1.3;",
    "ssl_ecdh_curve X25519:prime256v1:secp384r1;",
    "ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;",
    "ssl_prefer_server_ciphers off;",
    "ssl_session_timeout 1d;",
    "ssl_session_cache shared:SmartTLS:10m;",
    "ssl_session_tickets off;",
)


def _percent(units: int) -> str:
    return f"{units // 100}.{units % 100:02d}%"


def _quote(path: Path | str) -> str:
    text = str(path)
    if re.search(r"[\"\\$;{}\s]", text):
        raise ValueError(f"{text!r} cannot be written into nginx configuration")
    return f'"{text}"'


def _split_block(key_salt: str, variable: str, parts: list[tuple[str, int]]) -> list[str]:
    lines = [f"split_clients {assignment_key(key_salt)} ${variable} {{"]
    for index, (value, units) in enumerate(parts):
        share = "*" if index == len(parts) - 1 else _percent(units)
        lines.append(f'    {share} "{value}";')
    lines.append("}")
    return lines


def _maps(extra: list[str]) -> list[str]:
    """The maps the log line reads: bots, pages and prefetches."""
    words = [re.escape(word) for word in (*BOT_WORDS, *extra)]
    pattern = "|".join(words).replace('"', "")
    return [
        "map $http_user_agent $smart_bot {",
        "    default 0;",
        '    "" 1;',
        f'    "~*({pattern})" 1;',
        "}",
        # Only pages can count (conversions redirect with an HTML body too): assets are
        # not logged, which spares them the visitor id, the bot check and the line.
        "map $sent_http_content_type $smart_logged {",
        "    default 0;",
        '    "~^text/html" 1;',
        "}",
        # Browsers mark speculative loads; a prefetched page may never be seen.
        'map "$http_purpose$http_sec_purpose$http_x_moz$http_x_purpose" $smart_prefetch {',
        "    default 1;",
        '    "" 0;',
        "}",
    ]


def _log_format(plan: ServePlan) -> str:
    deployment = plan.deployment
    manifest = deployment.manifest if deployment else None
    # The fixed fields are checked names (no quotes or backslashes); json.dumps keeps
    # them valid JSON all the same.
    fields = {
        "e": json.dumps(manifest.name if manifest else ""),
        "r": json.dumps(manifest.revision if manifest else ""),
        "d": json.dumps(plan.day),
        "mode": json.dumps(manifest.serving.mode if manifest else ""),
        "t": '"$msec"',
        "id": '"' + "".join(f"$smart_h{i}" for i in range(ID_BLOCKS)) + '"',
        "v": '"$smart_variant"',
        "cv": '"$arg_v"',
        "m": '"$request_method"',
        "u": '"$uri"',
        "s": '"$status"',
        "ct": '"$sent_http_content_type"',
        "b": '"$smart_bot"',
        "p": '"$smart_prefetch"',
        "rum": '"$arg_rum"',
    }
    assert tuple(fields) == LOG_KEYS, "the log reader expects the keys in LOG_KEYS's order"
    body = ",".join(f'"{key}":{value}' for key, value in fields.items())
    return "log_format smart escape=json '{" + body + "}';"


def served_parts(plan: ServePlan) -> list[tuple[str, int]]:
    """What ``$smart_variant`` may be, with shares (one entry means everyone)."""
    deployment = plan.deployment
    if deployment is None:
        return [("", PERCENT_UNITS)]
    manifest = deployment.manifest
    if manifest.type == "performance" and manifest.serving.mode == "split":
        active = plan.active_variant or manifest.control
        return [(active, PERCENT_UNITS)]
    served = manifest.served_variants()
    if len(served) == 1:
        return [(served[0], PERCENT_UNITS)]
    return split_parts([(v.name, v.weight) for v in manifest.variants])


def render_config(settings: AgentSettings, plan: ServePlan) -> str:
    """The complete nginx.conf for ``plan``; the same plan gives the same text."""
    prefix = settings.nginx_prefix
    lines = [
        f"# Written by smart-agent {__version__}: the agent rewrites this file; do not edit.",
        f"pid {_quote(settings.nginx_pid)};",
        # At `alert` nginx writes no per-request messages, which would name the client.
        f"error_log {_quote(settings.log_dir / 'nginx-error.log')} alert;",
        f"worker_processes {settings.nginx_workers or 'auto'};",
        # The bot map's regex runs on every request: compiled, it costs a tenth as much.
        "pcre_jit on;",
    ]
    user = settings.worker_user()
    if user:
        lines.append(f"user {user};")
    lines += [
        "events {",
        "    worker_connections 4096;",
        "}",
        "http {",
        "    types {",
        *(f"        {mime} {exts};" for mime, exts in MIME_TYPES.items()),
        "    }",
        "    default_type application/octet-stream;",
        "    charset utf-8;",
        "    charset_types text/css text/plain application/javascript application/json;",
        "    server_tokens off;",
        "    log_not_found off;",
        "    sendfile on;",
        "    tcp_nopush on;",
        "    keepalive_timeout 65s;",
        *(
            f"    {kind}_temp_path {_quote(prefix / 'tmp' / kind)};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ),
    ]
    if settings.proxied:
        # Cloudflare's edge sends the visitor's address in CF-Connecting-IP; only its own
        # published ranges are believed, so nobody else can choose their visitor id.
        for cidr in settings.cloudflare_ips:
            lines.append(f"    set_real_ip_from {cidr};")
        lines.append("    real_ip_header CF-Connecting-IP;")
    elif settings.real_ip_from:
        lines += [f"    set_real_ip_from {cidr};" for cidr in settings.real_ip_from]
        lines += [f"    real_ip_header {settings.real_ip_header};", "    real_ip_recursive on;"]
    lines += ["    " + line for line in _maps(settings.bot_patterns)]
    lines += [
        "    " + line
        for line in _split_block(
            derive_salt(plan.secret, "variant"), "smart_variant", served_parts(plan)
        )
    ]
    for index in range(ID_BLOCKS):
        salt = derive_salt(plan.secret, f"id{index}")
        lines += ["    " + line for line in _split_block(salt, f"smart_h{index}", ID_BUCKETS)]
    lines.append("    " + _log_format(plan))
    buffer = ""
    if settings.log_buffer_kib:
        flush = max(1, round(settings.log_flush_seconds))
        buffer = f" buffer={settings.log_buffer_kib}k flush={flush}s"
    health = [
        f"        location = {HEALTH_PATH} {{",
        "            access_log off;",
        "            default_type application/json;",
        '            return 200 \'{"config":"@CONFIG_ID@"}\';',
        "        }",
    ]
    lines.append("    access_log off;")
    tls = plan.tls
    hsts = None
    server = ["    server {", f"        listen {settings.listen} default_server;"]
    if tls is not None:
        port = "" if settings.tls_port == 443 else f":{settings.tls_port}"
        lines += ["    " + line for line in _redirect_map(settings.domain)]
        if settings.hsts_max_age:
            # Only over HTTPS (browsers ignore it over HTTP, RFC 6797 8.1); an empty
            # value sends no header.
            lines += [
                "    map $scheme $smart_hsts {",
                '        default "";',
                f'        https "max-age={settings.hsts_max_age}";',
                "    }",
            ]
            hsts = "add_header Strict-Transport-Security $smart_hsts always;"
        server += [
            f"        listen {settings.tls_listen} ssl default_server;",
            f"        ssl_certificate {_quote(tls.cert)};",
            f"        ssl_certificate_key {_quote(tls.key)};",
            *("        " + line for line in TLS_DIRECTIVES),
            f"        # certificate {tls.digest}",
            # Before any location is chosen: the site's names over plain HTTP go to HTTPS.
            "        if ($smart_redirect) {",
            f"            return 301 https://$host{port}$request_uri;",
            "        }",
        ]
        if hsts:
            server.append("        " + hsts)
    lines += server
    access_log = f"access_log {_quote(settings.access_log)} smart{buffer}"
    lines += [
        "        server_name _;",
        f"        {access_log} if=$smart_logged;",
        "        location /_smart/ {",
        "            access_log off;",
        "            return 404;",
        "        }",
        *health,
    ]
    lines += ["        " + line for line in _locations(plan, hsts, access_log + ";")]
    lines += ["    }", "}", ""]
    text = "\n".join(lines)
    config_id = hashlib.sha256(text.encode()).hexdigest()[:16]
    return text.replace("@CONFIG_ID@", config_id)


def _redirect_map(domain: str | None) -> list[str]:
    """``$smart_redirect``: 1 for a plain-HTTP request that must go to HTTPS.

    The certificate covers the site's names (the apex and ``www``): requests for them
    are redirected. A request by bare address or another name could not be served a
    valid certificate anyway and is answered as before, over HTTP (the agent's own
    health check is one). Without a known domain, every plain request but the health
    check is redirected."""
    lines = ['map "$scheme|$host|$uri" $smart_redirect {', "    default 0;"]
    if domain and re.fullmatch(r"[A-Za-z0-9.-]{1,253}", domain):
        name = re.escape(domain.lower().rstrip("."))
        lines.append(f'    "~^http\\|(www\\.)?{name}\\|" 1;')
    else:
        lines.append(f'    "~^http\\|[^|]*\\|{re.escape(HEALTH_PATH)}$" 0;')
        lines.append('    "~^http\\|" 1;')
    lines.append("}")
    return lines


def _timing_locations(access_log: str) -> list[str]:
    """The real-user timing script and its beacon (``timing.py``)."""
    return [
        f"location = {SCRIPT_PATH} {{",
        "    access_log off;",
        "    default_type application/javascript;",
        '    add_header Cache-Control "public, max-age=3600" always;',
        f"    return 200 '{SCRIPT}';",
        "}",
        # Logged whatever the answer (the log reader counts only a 204), with the
        # visitor id, bot and prefetch flags of a page view and the timings in `rum`.
        f"location = {TIMING_PATH} {{",
        f"    {access_log}",
        "    if ($request_method != POST) {",
        "        return 405;",
        "    }",
        "    if ($http_sec_fetch_site = cross-site) {",
        "        return 403;",
        "    }",
        "    return 204;",
        "}",
    ]


def _locations(plan: ServePlan, hsts: str | None = None, access_log: str = "") -> list[str]:
    deployment = plan.deployment
    if deployment is None:
        return ["location / {", "    return 404;", "}"]
    manifest = deployment.manifest
    timing = _timing_locations(access_log) if manifest.type == "performance" else []
    goal = manifest.goal_url
    lines = [f"location = {CONVERT_PATH} {{"]
    # A missing goal still answers, so a stray link does not break the page. The agent
    # counts only what nginx answers with 303: a POST (the templates' buttons post
    # their form here), from this site. A plain link (GET) still takes the visitor to
    # the goal, with a 302 that is not counted, so a prefetch, a crawler or an image
    # tag cannot convert. A browser names the site a request comes from (Fetch
    # Metadata, ``Sec-Fetch-Site``; a page cannot forge it): a form posted from another
    # site also gets the uncounted 302, so no other page can make its visitors convert.
    if goal:
        lines += [
            "    if ($request_method != POST) {",
            f"        return 302 {_quote(goal)};",
            "    }",
            "    if ($http_sec_fetch_site = cross-site) {",
            f"        return 302 {_quote(goal)};",
            "    }",
            f"    return 303 {_quote(goal)};",
        ]
    else:
        lines.append("    return 404;")
    lines.append("}")
    lines += timing
    root = deployment.path / "variants"
    lines += [
        "location / {",
        f'    root {_quote(root)[:-1]}/$smart_variant";',
        "    index index.html;",
    ]
    if hsts:
        # A location with add_header of its own inherits none from the server.
        lines.append("    " + hsts)
    fragment = None
    if manifest.type == "performance" and manifest.serving.mode == "split":
        fragment = deployment.fragment(plan.active_variant or manifest.control)
    elif len(manifest.served_variants()) == 1:
        fragment = deployment.fragment(manifest.served_variants()[0])
    if fragment is not None:
        lines.append(f"    include {_quote(fragment)};")
    else:
        # One URL serves different variants to different visitors: no shared cache may
        # keep one copy for everyone.
        lines.append('    add_header Cache-Control "private, no-cache" always;')
    lines.append("}")
    return lines


def config_id(text: str) -> str | None:
    match = re.search(r'\{"config":"([0-9a-f]{16})"\}', text)
    return match.group(1) if match else None


class Nginx:
    """The agent's nginx instance: test, start, reload, reopen, stop."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.prefix = settings.nginx_prefix
        self.conf = settings.nginx_conf
        self.error_log = settings.log_dir / "nginx-error.log"

    def _argv(self, *extra: str, conf: Path | None = None) -> list[str]:
        return [
            str(self.settings.nginx_binary),
            "-p",
            str(self.prefix),
            "-c",
            str(conf or self.conf),
            "-e",
            str(self.error_log),
            *extra,
        ]

    def prepare(self) -> None:
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / "tmp" / kind).mkdir(parents=True, exist_ok=True)
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)

    async def _run(self, argv: list[str], seconds: float = 30.0) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), seconds)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            return 1, f"{argv[0]} did not finish within {seconds:.0f} s"
        assert process.returncode is not None
        return process.returncode, output.decode(errors="replace").strip()

    async def test(self, text: str) -> None:
        """Run ``nginx -t`` on ``text``; raise ``NginxError`` with nginx's words if it fails."""
        self.prepare()
        candidate = self.prefix / "nginx.conf.new"
        candidate.write_text(text)
        code, output = await self._run(self._argv("-t", "-q", conf=candidate))
        if code != 0:
            raise NginxError(output or f"nginx -t exited with {code}")

    def install(self) -> None:
        """Make the tested candidate the live file (call only after ``test``)."""
        (self.prefix / "nginx.conf.new").rename(self.conf)

    def master_pid(self) -> int | None:
        """The running master's pid, from the pid file, if that process is nginx."""
        try:
            pid = int(self.settings.nginx_pid.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        return pid if b"nginx" in cmdline else None

    async def start(self) -> None:
        argv = self._argv()
        if self.settings.nice and os.getpriority(os.PRIO_PROCESS, 0) > 0:
            # The agent runs niced; its nginx must not inherit that (only root may undo it,
            # and `nice` runs the command anyway when it may not).
            argv = ["nice", "-n", str(-os.getpriority(os.PRIO_PROCESS, 0)), *argv]
        code, output = await self._run(argv)
        if code != 0:
            raise NginxError(output or f"nginx exited with {code}")

    def worker_pids(self) -> set[int]:
        """The master's worker processes (children), from ``/proc``."""
        master = self.master_pid()
        if master is None:
            return set()
        workers = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat.read_text().split(")")[-1].split()[1]) == master:
                    workers.add(int(stat.parent.name))
        return workers

    async def reload(self) -> set[int]:
        """Ask the master to load the installed configuration; return the workers it retires.

        The old workers keep running until they have finished their requests, and one of
        them may still accept a connection just after the new workers answer: whoever must
        know that every answer comes from the new configuration (the latency probe, a
        window switch) waits for them with ``wait_live(..., retired=...)``.
        """
        retired = self.worker_pids()
        code, output = await self._run(self._argv("-s", "reload"))
        if code != 0:
            raise NginxError(output or f"nginx -s reload exited with {code}")
        return retired

    async def reopen(self) -> None:
        code, output = await self._run(self._argv("-s", "reopen"))
        if code != 0:
            raise NginxError(output or f"nginx -s reopen exited with {code}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the master (graceful, then forced) and wait until it is gone."""
        pid = self.master_pid()
        if pid is None:
            return
        deadline = time.monotonic() + timeout
        for sig, until in ((signal.SIGQUIT, deadline - timeout / 2), (signal.SIGKILL, deadline)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            while time.monotonic() < until:
                if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
                    return
                time.sleep(0.05)

    async def live_config(self) -> str | None:
        """The id of the configuration nginx answers with, or None if it does not answer."""
        url = f"http://{self.settings.listen_host}:{self.settings.listen_port}{HEALTH_PATH}"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
                session.get(url, headers={"User-Agent": "smart-agent"}) as response,
            ):
                if response.status != 200:
                    return None
                return config_id(await response.text())
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    async def wait_live(
        self, wanted: str, seconds: float = 15.0, retired: AbstractSet[int] = frozenset()
    ) -> None:
        """Wait until nginx answers with configuration ``wanted`` and, for a grace period,
        until the ``retired`` workers of the previous one have exited."""
        deadline = time.monotonic() + seconds
        while await self.live_config() != wanted:
            if time.monotonic() >= deadline:
                raise NginxError(
                    f"nginx did not serve configuration {wanted} within {seconds:.0f} s; "
                    f"see {self.error_log}"
                )
            await asyncio.sleep(0.05)
        grace = time.monotonic() + RETIRE_GRACE_SECONDS
        while time.monotonic() < grace:
            if not retired & self.worker_pids():
                return
            await asyncio.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True
