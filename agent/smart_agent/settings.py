"""The agent's settings: ``SMART_AGENT_*`` environment variables, then the file the
operator writes over SSH (``<root>/etc/smartserver/agent.env``, the agent user's alone),
then the defaults.

Every path the agent touches hangs off ``root`` (``/`` on a real server, a folder of its
own on a simulated host), so several agents can share one machine. This module only
reads configuration; it must not create files or start anything.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "SMART_AGENT_"
ENV_FILE = Path("etc/smartserver/agent.env")
# Characters an nginx string may not hold as written by the agent: quotes would end it,
# ``$`` would start a variable, ``;{}`` and whitespace would end a directive.
_NGINX_UNSAFE = re.compile(r"[\"'\\$;{}\s\x00-\x1f\x7f]")
_LISTEN = re.compile(r"^(?:(?P<host>\d{1,3}(?:\.\d{1,3}){3}):)?(?P<port>\d{1,5})$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")

# Cloudflare's edge addresses, as published at https://www.cloudflare.com/ips-v4 and
# https://www.cloudflare.com/ips-v6 (docs/https.md): the only sources whose
# CF-Connecting-IP header is trusted in proxied mode. Configuration, not code: set
# SMART_AGENT_CLOUDFLARE_IPS when Cloudflare publishes a change.
CLOUDFLARE_IPS = (
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
)


class AgentSettings(BaseSettings):
    """What one agent serves, where it keeps its files and where it reports."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    root: Path = Field(
        default=Path("/"),
        description="Folder every other path hangs off: `/` on a server, a folder per "
        "simulated host",
    )
    intake_url: str | None = Field(
        default=None,
        description="Base URL of the intake API (reports go to {url}/v1/results); unset "
        "means the agent counts but does not report",
    )
    key: SecretStr | None = Field(default=None, description="Bearer key for the intake API")
    domain: str | None = Field(default=None, description="The customer domain this server serves")
    resource: str | None = Field(
        default=None, description="`namespace/name` of the Domain resource (for logs only)"
    )
    listen: str = Field(
        default="80",
        description="nginx listen address: `PORT` or `IPv4:PORT` (a simulated host uses its "
        "own loopback address, such as 127.10.0.5:8080)",
    )
    tls_listen: str = Field(
        default="443",
        description="nginx's HTTPS listen address (`PORT` or `IPv4:PORT`), used once the "
        "operator has delivered a certificate; plain HTTP then redirects to it",
    )
    hsts_max_age: int = Field(
        default=31536000,
        ge=0,
        description="Strict-Transport-Security max-age sent over HTTPS (seconds); 0 sends "
        "no header",
    )
    proxied: bool = Field(
        default=False,
        description="The site is proxied by Cloudflare: the client address is taken from "
        "CF-Connecting-IP, from Cloudflare's addresses (`cloudflare_ips`) only",
    )
    cloudflare_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(CLOUDFLARE_IPS),
        description="Comma-separated CIDRs of Cloudflare's edge (published at "
        "https://www.cloudflare.com/ips-v4 and /ips-v6)",
    )
    nginx_binary: Path = Field(default=Path("/usr/sbin/nginx"), description="nginx executable")
    nginx_user: str | None = Field(
        default=None,
        description="User of nginx's workers when the agent runs as root; unset means "
        "www-data when root is `/`, else the agent's own user (a simulated host's files are "
        "in the tester's private temp folder)",
    )
    nginx_workers: int = Field(
        default=0, ge=0, le=64, description="nginx worker processes; 0 means one per core"
    )
    real_ip_from: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated CIDRs whose `real_ip_header` is trusted as the client "
        "address (127.0.0.0/8 for the traffic simulator); ignored in proxied mode, which "
        "trusts `cloudflare_ips` only",
    )
    real_ip_header: str = Field(
        default="X-Forwarded-For", pattern=r"^[A-Za-z0-9-]{1,64}$", description="see above"
    )
    log_buffer_kib: int = Field(
        default=32,
        ge=0,
        le=1024,
        description="nginx access-log buffer; 0 writes every line at once",
    )
    log_flush_seconds: float = Field(
        default=1.0, gt=0, le=60, description="Longest time a buffered log line waits"
    )
    log_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=4096,
        description="The agent rotates the access log (rename, nginx -s reopen) past this size",
    )
    rotation_grace_seconds: float = Field(
        default=5.0,
        gt=0,
        description="A rotated log is finished once it has not grown for this long after "
        "the new one appeared (nginx's workers flush their buffers on reopen)",
    )
    poll_seconds: float = Field(
        default=0.25, gt=0, le=10, description="How often the access log is read"
    )
    deploy_poll_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often the `current` symlinks are checked (`smart-agent reload` "
        "applies a change at once)",
    )
    report_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often changed counts are reported (the intake expects a minute)",
    )
    heartbeat_seconds: float = Field(default=30.0, gt=0, description="Heartbeat interval")
    backoff_base_seconds: float = Field(
        default=1.0, gt=0, description="First retry delay of a failed report"
    )
    backoff_max_seconds: float = Field(default=300.0, gt=0, description="Longest retry delay")
    request_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of one call to the intake API"
    )
    bot_patterns: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra comma-separated user-agent words that mark a bot",
    )
    nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="The agent's scheduling niceness: under overload nginx serves first and "
        "the agent counts later (nothing is lost, the count lags); nginx runs at normal "
        "priority",
    )
    control_group: str | None = Field(
        default=None,
        description="A group that may use the control socket (`status`, `reload`) besides "
        "the agent's user: on a server, the group the operator's deploy user shares with "
        "the agent; unset means the agent's user only",
    )
    stop_nginx_on_exit: bool = Field(
        default=False,
        description="Stop nginx when the agent stops (a simulated host); on a server nginx "
        "keeps serving while the agent restarts",
    )

    @field_validator("real_ip_from", "bot_patterns", "cloudflare_ips", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("real_ip_from", "cloudflare_ips")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(cidr, strict=False)) for cidr in value]

    @field_validator("bot_patterns")
    @classmethod
    def _words(cls, value: list[str]) -> list[str]:
        for word in value:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{2,40}", word):
                raise ValueError(f"bot pattern {word!r}: letters, digits, `_.-` only")
        return value

    @field_validator("listen", "tls_listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        match = _LISTEN.match(value)
        if not match or not 0 < int(match["port"]) < 65536:
            raise ValueError("listen must be PORT or IPv4:PORT")
        if match["host"]:
            ipaddress.IPv4Address(match["host"])
        return value

    @field_validator("nginx_user", "control_group")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not _USER.match(value):
            raise ValueError("must be a plain user or group name")
        return value

    @field_validator("root")
    @classmethod
    def _root(cls, value: Path) -> Path:
        value = value.absolute()
        if _NGINX_UNSAFE.search(str(value)):
            raise ValueError("root may not contain quotes, `$`, `;`, braces or whitespace")
        return value

    # Derived locations (docs/agent.md lists them).
    @property
    def experiments_dir(self) -> Path:
        return self.root / "opt/smart/experiments"

    @property
    def state_dir(self) -> Path:
        return self.root / "var/lib/smart-agent"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "agent.db"

    @property
    def nginx_prefix(self) -> Path:
        return self.state_dir / "nginx"

    @property
    def nginx_conf(self) -> Path:
        return self.nginx_prefix / "nginx.conf"

    @property
    def nginx_pid(self) -> Path:
        return self.nginx_prefix / "nginx.pid"

    @property
    def log_dir(self) -> Path:
        return self.root / "var/log/smart-agent"

    @property
    def access_log(self) -> Path:
        return self.log_dir / "access.log"

    @property
    def tls_source_dir(self) -> Path:
        """Where the operator delivers the certificate (``fullchain.pem``, ``privkey.pem``)."""
        return self.root / "opt/smart/tls"

    @property
    def tls_dir(self) -> Path:
        """The agent's own copies, named by content, that nginx's configuration names."""
        return self.state_dir / "tls"

    @property
    def run_dir(self) -> Path:
        return self.root / "run/smart-agent"

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "control.sock"

    @property
    def listen_host(self) -> str:
        """Where the agent itself reaches nginx (health checks, the latency probe)."""
        match = _LISTEN.match(self.listen)
        return (match["host"] if match and match["host"] else None) or "127.0.0.1"

    @property
    def listen_port(self) -> int:
        match = _LISTEN.match(self.listen)
        assert match is not None  # checked by the validator
        return int(match["port"])

    @property
    def tls_port(self) -> int:
        match = _LISTEN.match(self.tls_listen)
        assert match is not None  # checked by the validator
        return int(match["port"])

    def worker_user(self) -> str | None:
        """The `user` directive, which nginx honours only when its master runs as root."""
        if os.geteuid() != 0:
            return None
        if self.nginx_user:
            return self.nginx_user
        return "www-data" if self.root == Path("/") else _current_user()


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def load_settings() -> AgentSettings:
    """Settings from the environment and ``<root>/etc/smartserver/agent.env``.

    The root comes from the environment alone, since it says where the file is; a
    variable set in the environment wins over the file.
    """
    root = Path(os.environ.get(ENV_PREFIX + "ROOT", "/"))
    env_file = root / ENV_FILE
    # On a server the file is the agent user's alone (it holds the intake key): the
    # deploy user's `smart-agent reload` needs only the socket, which hangs off the root.
    readable = env_file.is_file() and os.access(env_file, os.R_OK)
    return AgentSettings(_env_file=env_file if readable else None)
