"""Simulated servers: the real ``hcloud`` SDK creates servers on the Hetzner simulator,
each boots as a host from its cloud-init, and a real SSH client (asyncssh) talks to it.

The SDK is synchronous, so its calls run in a worker thread. Every simulator, host and
SSH connection is closed after each test, also when it fails; waits poll with deadlines.
Hosts listen on port 22 when the tests run as root, on free ports otherwise, and take
their addresses from a random /24 of 127.0.0.0/8 so that parallel runs do not collide.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import os
import random
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncssh
import pytest
import yaml
from hcloud import Client
from hcloud.images import Image
from hcloud.server_types import ServerType

from smart_sim.hetzner import HetznerConfig, HetznerSimulator
from smart_sim.hosts import HostManager, HostState, SimulatedHost
from smart_sim.hosts.cloudinit import UserDataError, parse
from tests.waiting import eventually_async

T = TypeVar("T")

SSH_PORT = 22 if os.geteuid() == 0 else 0


# -- helpers ---------------------------------------------------------------------------


@dataclass
class Keys:
    """What the operator would generate: a host key to hand to cloud-init and pin, and
    a client key that the cloud-init authorises."""

    host: asyncssh.SSHKey
    client: asyncssh.SSHKey

    @property
    def host_public(self) -> str:
        return self.host.export_public_key().decode().strip()

    @property
    def client_public(self) -> str:
        return self.client.export_public_key().decode().strip()


@pytest.fixture
def keys() -> Keys:
    return Keys(
        host=asyncssh.generate_private_key("ssh-ed25519"),
        client=asyncssh.generate_private_key("ssh-ed25519", comment="operator"),
    )


def user_data(keys: Keys, **extra: Any) -> str:
    """A cloud-config like the operator's: pinned host key, authorised operator key."""
    document: dict[str, Any] = {
        "ssh_keys": {
            "ed25519_private": keys.host.export_private_key().decode(),
            "ed25519_public": keys.host_public,
        },
        "ssh_authorized_keys": [keys.client_public],
        **extra,
    }
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False)


@dataclass
class World:
    sim: HetznerSimulator
    hosts: HostManager
    hcloud: Client

    async def create(self, name: str, **kwargs: Any) -> SimulatedHost:
        """Create a server through the SDK; returns its host (still booting, perhaps)."""
        kwargs.setdefault("server_type", ServerType(name="cx23"))
        kwargs.setdefault("image", Image(name="debian-12"))
        created = await asyncio.to_thread(self.hcloud.servers.create, name, **kwargs)
        server = created.server
        assert server.id is not None and server.public_net is not None
        assert server.public_net.ipv4 is not None
        host = self.hosts.host(server.id)
        assert host.address == server.public_net.ipv4.ip
        return host

    async def boot(self, name: str, **kwargs: Any) -> SimulatedHost:
        """Create a server and wait until its host runs."""
        host = await self.create(name, **kwargs)
        await host.wait_until(HostState.RUNNING, HostState.FAILED)
        assert host.state is HostState.RUNNING, host.boot_log.read_text()
        return host

    async def delete(self, host: SimulatedHost) -> None:
        # A server is locked while its create and start actions run: let them finish.
        self.sim.context.clock.advance(60)
        server = await asyncio.to_thread(self.hcloud.servers.get_by_id, host.id)
        await asyncio.to_thread(self.hcloud.servers.delete, server)

    async def sim_server(self, server_id: int) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.sim.root_url}/_sim/servers") as response,
        ):
            body = await response.json()
        return next(s for s in body["servers"] if s["id"] == server_id)


@contextlib.contextmanager
def hcloud_client(url: str) -> Iterator[Client]:
    client = Client("test-token", api_endpoint=url, poll_interval=0.01, poll_max_retries=500)
    client._client._retry_max_retries = 0
    try:
        yield client
    finally:
        client._client._session.close()
        client._client_hetzner._session.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    rng = random.SystemRandom()
    network = f"127.{rng.randint(64, 250)}.{rng.randint(0, 255)}.0/24"
    async with contextlib.AsyncExitStack() as stack:
        hosts = await stack.enter_async_context(HostManager(tmp_path / "hosts", SSH_PORT))
        simulator = HetznerSimulator(HetznerConfig(ipv4_network=network), hooks=hosts)
        sim = await stack.enter_async_context(simulator)
        hcloud = stack.enter_context(hcloud_client(sim.url))
        yield World(sim, hosts, hcloud)


@contextlib.asynccontextmanager
async def ssh(
    host: SimulatedHost,
    key: asyncssh.SSHKey,
    *,
    pinned: str,
    username: str = "root",
) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """Connect as the operator does: one client key, the host key pinned, no agent."""
    assert host.address is not None and host.ssh_port is not None
    pattern = host.address if host.ssh_port == 22 else f"[{host.address}]:{host.ssh_port}"
    async with asyncssh.connect(
        host.address,
        host.ssh_port,
        username=username,
        client_keys=[key],
        known_hosts=asyncssh.import_known_hosts(f"{pattern} {pinned}\n"),
        agent_path=None,
        config=None,
        connect_timeout=10,
    ) as connection:
        yield connection


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- booting ---------------------------------------------------------------------------


async def test_a_server_boots_as_a_host_from_its_cloud_init(world: World, keys: Keys) -> None:
    data = user_data(
        keys,
        hostname="web-1",
        users=["default", {"name": "deploy", "ssh_authorized_keys": [keys.client_public]}],
        write_files=[
            {"path": "/etc/smart/agent.env", "content": "KEY=s3cret\n", "permissions": "0640"},
            {
                "path": "/usr/local/bin/hello",
                "encoding": "b64",
                "content": base64.b64encode(b"#!/bin/sh\necho hello\n").decode(),
                "permissions": "0755",
            },
            {
                "path": "/etc/motd",
                "encoding": "gzip+b64",
                "content": base64.b64encode(gzip.compress(b"welcome\n")).decode(),
            },
            {"path": "/srv/after-packages.txt", "content": "late\n", "defer": True},
        ],
        packages=["nginx", ["jq", "1.6"]],
        runcmd=["systemctl restart nginx", ["sh", "-c", "echo 'a b'"]],
    )
    host = await world.boot("web-1", user_data=data)

    root = host.root
    assert (root / "etc/smart/agent.env").read_text() == "KEY=s3cret\n"
    assert mode(root / "etc/smart/agent.env") == 0o640
    assert (root / "usr/local/bin/hello").read_bytes() == b"#!/bin/sh\necho hello\n"
    assert mode(root / "usr/local/bin/hello") == 0o755
    assert (root / "etc/motd").read_text() == "welcome\n"
    assert mode(root / "etc/motd") == 0o644
    assert (root / "srv/after-packages.txt").read_text() == "late\n"
    assert (root / "etc/hostname").read_text() == "web-1\n"
    assert (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().strip() == keys.host_public
    assert keys.client_public in (root / "root/.ssh/authorized_keys").read_text()
    assert keys.client_public in (root / "home/deploy/.ssh/authorized_keys").read_text()

    # Recorded, not run: the agent issue decides what runs.
    assert host.runcmd == ("systemctl restart nginx", "sh -c 'echo '\"'\"'a b'\"'\"''")
    assert host.packages == ("nginx", "jq=1.6")
    assert "systemctl restart nginx" in (host.folder / "runcmd.sh").read_text()
    assert host.host_keys == (keys.host_public,)
    assert set(host.logins) == {"root", "deploy"}

    log = host.boot_log.read_text()
    steps = ["schema: cloud-init schema: valid", "write_files: /etc/smart/agent.env", "packages:"]
    steps += ["write_files (deferred): /srv/after-packages.txt", "ssh: listening", "running:"]
    positions = [log.index(step) for step in steps]
    assert positions == sorted(positions), log

    shown = await world.sim_server(host.id)
    assert shown["host"]["state"] == "running"
    assert shown["host"]["host_keys"] == [keys.host_public]

    async with ssh(host, keys.client, pinned=keys.host_public) as connection:
        result = await connection.run("cat etc/hostname; pwd; echo $HOST_ROOT $USER", check=True)
        assert result.stdout == f"web-1\n{root}\n{root} root\n"
        failed = await connection.run("echo oops >&2; exit 3")
        assert (failed.exit_status, failed.stderr) == (3, "oops\n")
        fed = await connection.run("tr a-z A-Z", input="from stdin\n", check=True)
        assert fed.stdout == "FROM STDIN\n"
    async with ssh(host, keys.client, pinned=keys.host_public, username="deploy") as connection:
        result = await connection.run("echo $USER $HOME", check=True)
        assert result.stdout == f"deploy {root}/home/deploy\n"


async def test_the_api_ssh_keys_authorise_root(world: World, keys: Keys) -> None:
    """Without user-data, the API's keys let root in, and the host key is a fresh one."""
    api_key = await asyncio.to_thread(world.hcloud.ssh_keys.create, "ops", keys.client_public)
    host = await world.boot("bare-1", ssh_keys=[api_key])
    assert "none given" in host.boot_log.read_text()
    generated = host.host_key("ssh-ed25519")
    assert generated != keys.host_public
    async with ssh(host, keys.client, pinned=generated) as connection:
        assert (await connection.run("true")).exit_status == 0


# -- SSH -------------------------------------------------------------------------------


async def test_sftp_reads_and_writes_only_inside_the_root_folder(
    world: World, keys: Keys, tmp_path: Path
) -> None:
    host = await world.boot("files-1", user_data=user_data(keys))
    local = tmp_path / "revision.tar"
    local.write_bytes(b"revision 1\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not for the host\n")

    async with (
        ssh(host, keys.client, pinned=keys.host_public) as connection,
        connection.start_sftp_client() as sftp,
    ):
        await sftp.makedirs("/srv/releases/r1")
        await sftp.put(str(local), "/srv/releases/r1/revision.tar")
        assert (host.root / "srv/releases/r1/revision.tar").read_bytes() == b"revision 1\n"
        await sftp.get("/etc/hostname", str(tmp_path / "hostname"))
        assert (tmp_path / "hostname").read_text() == "files-1\n"

        # ".." stops at the host's root, as in a chroot.
        await sftp.put(str(local), "../../../../escaped.tar")
        assert (host.root / "escaped.tar").exists()
        assert not await asyncio.to_thread(os.path.exists, "/escaped.tar")
        assert await sftp.realpath("/../..") == "/"

        # A symlink that leads out (made by a command) is refused, not followed.
        await connection.run(f"ln -s {outside} srv/out", check=True)
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.get("/srv/out/secret", str(tmp_path / "stolen"))
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.put(str(local), "/srv/out/planted")
        assert sorted(p.name for p in outside.iterdir()) == ["secret"]


async def test_a_client_pinning_another_host_key_is_refused(world: World, keys: Keys) -> None:
    host = await world.boot("pin-1", user_data=user_data(keys))
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        async with ssh(host, keys.client, pinned=impostor.strip()):
            pass


async def test_only_authorised_keys_and_users_get_in(world: World, keys: Keys) -> None:
    host = await world.boot("auth-1", user_data=user_data(keys))
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        async with ssh(host, stranger, pinned=keys.host_public):
            pass
    with pytest.raises(asyncssh.PermissionDenied):
        async with ssh(host, keys.client, pinned=keys.host_public, username="nobody"):
            pass


async def test_deleting_the_server_stops_its_ssh_endpoint(world: World, keys: Keys) -> None:
    host = await world.boot("gone-1", user_data=user_data(keys))
    address, port = host.address, host.ssh_port
    assert address is not None and port is not None
    async with ssh(host, keys.client, pinned=keys.host_public) as connection:
        await world.delete(host)
        assert host.state is HostState.STOPPED
        await eventually_async(lambda: _closed(connection), what="the open connection is dropped")
    with pytest.raises(ConnectionRefusedError):
        async with asyncssh.connect(address, port, known_hosts=None, config=None):
            pass
    assert not host.folder.exists()
    assert host.id not in world.hosts.hosts


async def _closed(connection: asyncssh.SSHClientConnection) -> bool:
    try:
        await connection.run("true")
    except (asyncssh.Error, OSError):
        return True
    return False


# -- invalid user-data -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param("hostname: web\n", 'needs to begin with "#cloud-config"', id="no-header"),
        pytest.param("#cloud-config\nwrite_files: [\n", "is not valid yaml", id="bad-yaml"),
        pytest.param(
            "#cloud-config\nwrite_files: 5\n", "write_files: 5 is not of type 'array'", id="type"
        ),
        pytest.param(
            "#cloud-config\nwrite_files:\n  - path: /a\n    encoding: rot13\n",
            "'rot13' is not one of",
            id="enum",
        ),
    ],
)
async def test_user_data_that_cloud_init_rejects_fails_the_boot(
    world: World, data: str, message: str
) -> None:
    host = await world.create("bad-1", user_data=data)
    assert await host.wait_until(HostState.RUNNING, HostState.FAILED) is HostState.FAILED
    assert host.reason is not None
    assert host.reason.startswith("cloud-init schema rejected the user-data")
    assert message in host.reason
    assert message in host.boot_log.read_text()
    assert host.ssh_port is None
    shown = await world.sim_server(host.id)
    assert shown["host"]["state"] == "failed" and message in shown["host"]["reason"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            {"write_file": []}, "unknown top-level key(s) 'write_file' (did you mean", id="unknown"
        ),
        pytest.param(
            {"write_files": [{"path": "/etc/../../x", "content": "x"}]},
            "must not contain '..'",
            id="escape",
        ),
        pytest.param(
            {"write_files": [{"path": "/etc/x", "content": "x", "permissions": "rw-r--r--"}]},
            "is not an octal mode",
            id="permissions",
        ),
        pytest.param({"users": [{"name": "../evil"}]}, "is not a valid user name", id="user-name"),
    ],
)
async def test_user_data_the_schema_lets_through_but_a_boot_would_mangle_fails(
    world: World, keys: Keys, extra: dict[str, Any], message: str
) -> None:
    host = await world.create("odd-1", user_data=user_data(keys, **extra))
    assert await host.wait_until(HostState.RUNNING, HostState.FAILED) is HostState.FAILED
    assert host.reason is not None and message in host.reason, host.reason
    assert "FAILED: " in host.boot_log.read_text()


def test_a_host_key_must_match_its_public_half(keys: Keys) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    data = user_data(keys).replace(keys.host_public, other.strip())
    with pytest.raises(UserDataError, match="does not belong to"):
        parse(data)


async def test_the_operators_user_data_boots_and_pins_the_operators_host_key(
    world: World,
) -> None:
    """The operator's own renderer: the host presents the key it generated, lets its key in
    as root and holds the agent's configuration."""
    from smart_operator.cloudinit import AGENT_ENV_PATH, UserDataInput, render_user_data
    from smart_operator.keys import generate_ssh_key

    host_key, operator_key = generate_ssh_key(), generate_ssh_key("smart-operator")
    data = render_user_data(
        UserDataInput(
            hostname="shop-example-com",
            domain="shop.example.com",
            host_private_key=host_key.private,
            host_public_key=host_key.public,
            operator_public_key=operator_key.public,
            intake_url="http://127.0.0.1:9/intake",
            intake_key="ssk_test",
            namespace="customer-acme",
            domain_resource="shop",
        )
    )
    host = await world.boot("shop-example-com", user_data=data)
    agent_env = host.root / AGENT_ENV_PATH.lstrip("/")
    assert "SMART_AGENT_KEY=ssk_test" in agent_env.read_text()
    assert mode(agent_env) == 0o600
    client_key = asyncssh.import_private_key(operator_key.private)
    async with ssh(host, client_key, pinned=host_key.public) as connection:
        result = await connection.run("cat etc/hostname", check=True)
        assert result.stdout == "shop-example-com\n"
