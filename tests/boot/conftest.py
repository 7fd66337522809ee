"""The boot tier: simulated servers that are booted Debian systems (systemd-nspawn), with
the Hetzner simulator creating them and the operator's own user-data, bundle and
delivery client. Needs root, ``systemd-container`` and ``mmdebstrap`` (``make test``
installs them); the image is built once (about 40 s) and cached in
``~/.cache/smartserver/images``.

One server per module, shared by its tests in order (a boot and an agent install cost
about 20 s): tests that change the server (an upgrade, a rotation, a ban) come after
those that only look, and each says what it leaves behind.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import hcloud
import pytest
import pytest_asyncio
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType

from smart_operator.agentbundle import AgentBundle
from smart_operator.clients.agent_install import install_agent
from smart_operator.cloudinit import DEPLOY_USER, UserDataInput, render_user_data
from smart_operator.keys import SSHKeyPair, generate_intake_key, generate_ssh_key
from smart_operator.ports import AgentEnvironment, Target
from smart_sim.boot import BootedServer, BootManager, boot_available
from smart_sim.boot.bundle import ensure_bundle
from smart_sim.boot.intake import GatewayIntake
from smart_sim.hetzner.app import HetznerConfig
from smart_sim.hetzner.runner import HetznerSimulator

TOKEN = "boot-tier-token"
FAST_AGENT = {
    "REPORT_SECONDS": "1",
    "HEARTBEAT_SECONDS": "1",
    "DEPLOY_POLL_SECONDS": "1",
    "POLL_SECONDS": "0.2",
    "LOG_BUFFER_KIB": "0",
    "BACKOFF_BASE_SECONDS": "0.2",
    "BACKOFF_MAX_SECONDS": "1",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.boot)
            # The first test pays for a cold image build (about 40 s idle, minutes on a
            # busy machine) and the bundle's wheel download, within its setup.
            item.add_marker(pytest.mark.timeout(900))


@pytest.fixture(scope="session")
def boot_ready() -> None:
    reason = boot_available()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the boot tier cannot run: {reason}")
    pytest.skip(f"the boot tier needs what this machine lacks: {reason}")


@pytest.fixture(scope="session")
def bundle(boot_ready: None) -> AgentBundle:
    return ensure_bundle().describe()


@dataclass
class BootedWorld:
    """One booted server made through the Hetzner simulator, the operator's side of it,
    and the intake double its agent reports to."""

    boot: BootManager
    hetzner: HetznerSimulator
    client: hcloud.Client
    server: BootedServer
    server_id: int
    user_data: str
    host_key: SSHKeyPair
    operator_key: SSHKeyPair
    intake: GatewayIntake
    intake_key: str
    attacker: str
    """A second address on the provider network that ufw lets reach SSH (fail2ban's test)."""

    @property
    def address(self) -> str:
        assert self.server.address is not None
        return self.server.address

    def target(self, pinned: str | None = None, user: str = DEPLOY_USER) -> Target:
        return Target(
            self.address,
            22,
            pinned or self.host_key.public,
            self.operator_key.private,
            username=user,
        )

    def environment(self, key: str | None = None) -> AgentEnvironment:
        return AgentEnvironment(
            intake_url=self.intake.url,
            intake_key=key or self.intake_key,
            domain="shop.example.com",
            resource="customer-acme/shop",
            extra=FAST_AGENT,
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(
    tmp_path_factory: pytest.TempPathFactory, bundle: AgentBundle
) -> AsyncIterator[BootedWorld]:
    base = tmp_path_factory.mktemp("booted")
    async with BootManager(base / "servers") as boot:
        attacker = boot.network.spare_addresses(1)[0]
        intake_key = generate_intake_key()
        async with (
            GatewayIntake(boot.gateway, {intake_key}) as intake,
            HetznerSimulator(
                HetznerConfig(token=TOKEN, ipv4_network=boot.server_pool), hooks=boot
            ) as hetzner,
        ):
            client = hcloud.Client(TOKEN, api_endpoint=hetzner.url)
            host_key, operator_key = (
                generate_ssh_key("root@shop"),
                generate_ssh_key("smart-operator"),
            )
            user_data = render_user_data(
                UserDataInput(
                    hostname="ss-customer-acme-shop",
                    domain="shop.example.com",
                    host_private_key=host_key.private,
                    host_public_key=host_key.public,
                    operator_public_key=operator_key.public,
                    ssh_sources=[f"{boot.gateway}/32", f"{attacker}/32"],
                )
            )
            response = await asyncio.to_thread(
                client.servers.create,
                name="ss-customer-acme-shop",
                server_type=ServerType(name="cx23"),
                image=Image(name="debian-12"),
                location=Location(name="fsn1"),
                user_data=user_data,
            )
            server = boot.server(response.server.id)
            await server.wait_running(within=180)
            world = BootedWorld(
                boot, hetzner, client, server, response.server.id, user_data, host_key,
                operator_key, intake, intake_key, attacker,
            )  # fmt: skip
            await install_agent(world.target(), bundle, world.environment())
            yield world
