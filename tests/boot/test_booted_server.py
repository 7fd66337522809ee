"""A server the Hetzner simulator creates boots as Debian from the operator's real
user-data; the operator delivers the agent over the pinned SSH connection; from outside,
the server is what the seed promised: only the pinned host key, only the allowed ports,
bans after repeated bad logins, counts that survive an upgrade, keys that rotate.

The tests share one server and run in file order (see ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import socket
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import asyncssh
import pytest
import yaml

from smart_operator.agentbundle import AgentBundle
from smart_operator.clients import ssh
from smart_operator.clients.agent_install import (
    commit_host_key_rotation,
    install_agent,
    installed_bundle,
    prepare_host_key_rotation,
    rotate_intake_key,
)
from smart_operator.cloudinit import PACKAGES
from smart_operator.errors import HostKeyMismatch, InstallFailed, OperatorKeyRefused
from smart_operator.keys import generate_intake_key, generate_ssh_key
from smart_operator.models.experiment import Experiment
from smart_operator.revisions import Serving, build_revision
from smart_operator.templates.catalog import TemplateName, builtin
from smart_sim.boot.bundle import ensure_bundle
from smart_sim.boot.network import run
from smart_sim.boot.server import ExecResult
from tests.boot.conftest import BootedWorld
from tests.waiting import eventually_async as eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

EXPERIMENT = "homepage-headline"
CONVERT_LINK = re.compile(r"/_smart/convert\?v=([a-z0-9-]+)")
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


async def remote(
    world: BootedWorld, command: str, check: bool = True
) -> asyncssh.SSHCompletedProcess:
    """A command as the deploy user, over SSH with the pinned host key (as the operator)."""
    async with await asyncssh.connect(
        world.address,
        username="deploy",
        client_keys=[asyncssh.import_private_key(world.operator_key.private)],
        known_hosts=([asyncssh.import_public_key(world.host_key.public)], [], []),
        connect_timeout=10,
    ) as conn:
        return await conn.run(command, check=check)


async def visit(
    address: str, visitors: range, convert_every: int = 3, pause: float = 0.0
) -> Counter[tuple[str, str]]:
    """Distinct visitors (one user agent each, all from the gateway) load the page; every
    ``convert_every``-th converts. The truth: (variant, "visitors"|"conversions") counts."""
    truth: Counter[tuple[str, str]] = Counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for n in visitors:
            headers = {"User-Agent": f"{BROWSER} visitor/{n}"}
            async with session.get(f"http://{address}/", headers=headers) as page:
                assert page.status == 200
                found = CONVERT_LINK.search(await page.text())
            assert found, "the page links the conversion"
            variant = found.group(1)
            truth[variant, "visitors"] += 1
            if n % convert_every == 0:
                async with session.post(  # the page's button posts its form
                    f"http://{address}/_smart/convert?v={variant}",
                    headers={**headers, "Sec-Fetch-Site": "same-origin"},
                    allow_redirects=False,
                ) as converted:
                    assert converted.status == 303
                truth[variant, "conversions"] += 1
            if pause:
                await asyncio.sleep(pause)
    return truth


def expected(truth: Counter[tuple[str, str]]) -> dict[str, tuple[int, int]]:
    variants = {variant for variant, _ in truth}
    return {v: (truth[v, "visitors"], truth[v, "conversions"]) for v in variants}


async def agent_status(world: BootedWorld) -> dict[str, Any]:
    result = await remote(world, "smart-agent status --json")
    status: dict[str, Any] = json.loads(str(result.stdout))
    return status


def counts_in(status: dict[str, Any]) -> dict[str, tuple[int, int]]:
    for exp in status.get("experiments", []):
        if exp["name"] == EXPERIMENT:
            return {
                v: (c["visitors"], c["conversions"])
                for v, c in exp["variants"].items()
                if c["visitors"]
            }
    return {}


def tcp_outcome(address: str, port: int, source: str | None = None, seconds: float = 2.0) -> str:
    """``open``, ``refused`` or ``timeout``: what a client sees."""
    with socket.socket() as sock:
        sock.settimeout(seconds)
        if source:
            sock.bind((source, 0))
        try:
            sock.connect((address, port))
        except TimeoutError:
            return "timeout"
        except ConnectionRefusedError:
            return "refused"
        return "open"


# -- the user-data -----------------------------------------------------------------------


async def test_the_user_data_holds_no_intake_key_and_installs_nothing_by_name(
    world: BootedWorld,
) -> None:
    document = yaml.safe_load(world.user_data)
    assert world.intake_key not in world.user_data
    assert "SMART_AGENT_KEY" not in world.user_data and "ssk_" not in world.user_data
    # Nothing at boot fetches or installs by name: no pip, curl or wget in runcmd, and
    # the packages are Debian's (from the image's own archive).
    assert not any(
        tool in str(command) for command in document["runcmd"] for tool in ("pip", "curl", "wget")
    )
    assert set(document["packages"]) <= set(PACKAGES)
    # What the API received is what cloud-init got: the server's copy is byte-identical.
    seed = await world.server.exec("cat", "/var/lib/cloud/seed/nocloud/user-data")
    assert seed.stdout == world.user_data
    mode = await world.server.exec("stat", "-c", "%a %U", "/var/lib/cloud/instance/user-data.txt")
    assert mode.stdout.split() == ["600", "root"]


# -- boot and delivery -------------------------------------------------------------------


async def test_cloud_init_ran_the_user_data_and_the_agent_runs_as_its_own_user(
    world: BootedWorld, bundle: AgentBundle
) -> None:
    assert world.server.cloud_init == "done", world.server.cloud_init_detail
    result = await remote(world, "cloud-init status --wait")
    assert "status: done" in str(result.stdout)
    processes = await world.server.exec("ps", "-eo", "user:20,args")
    owners = {
        line.split()[0]
        for line in processes.stdout.splitlines()
        if "smart-agent run" in line or "nginx: " in line
    }
    assert owners == {"smart-agent"}, processes.stdout  # nginx's master and workers too
    unit = await world.server.exec(
        "systemctl",
        "show",
        "smart-agent",
        "-p",
        "ActiveState,User,NoNewPrivileges,ProtectSystem,ProtectHome,PrivateTmp,"
        "AmbientCapabilities,CapabilityBoundingSet",
    )
    props = dict(line.split("=", 1) for line in unit.stdout.splitlines())
    assert props["ActiveState"] == "active"
    assert props["User"] == "smart-agent"
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert props["ProtectHome"] == "yes" and props["PrivateTmp"] == "yes"
    assert props["AmbientCapabilities"] == props["CapabilityBoundingSet"] == "cap_net_bind_service"
    env = await world.server.exec("stat", "-c", "%a %U", "/etc/smartserver/agent.env")
    assert env.stdout.split() == ["600", "smart-agent"]
    status = await agent_status(world)
    assert status["agent"]["version"] == bundle.version
    installed = await world.server.exec("cat", "/opt/smart/agent/current/BUNDLE")
    assert f"sha256={bundle.sha256}" in installed.stdout.splitlines()


async def test_installing_the_same_bundle_again_uploads_nothing(
    world: BootedWorld, bundle: AgentBundle
) -> None:
    before = await agent_status(world)
    result = await install_agent(world.target(), bundle, world.environment())
    assert (result.uploaded, result.restarted) == (False, False)
    assert result.version == bundle.version
    after = await agent_status(world)
    assert after["agent"]["pid"] == before["agent"]["pid"]


# -- serving and counting ----------------------------------------------------------------


async def test_a_deployed_experiment_is_served_counted_and_reported(world: BootedWorld) -> None:
    experiment = Experiment.model_validate(
        {
            "apiVersion": "smartserver.ai/v1alpha1",
            "kind": "Experiment",
            "metadata": {"name": EXPERIMENT, "namespace": "customer-acme", "uid": "u-1"},
            "spec": {
                "domainRef": "shop",
                "type": "landing_page",
                "template": "saas_landing",
                "templateConfig": {"brand": "Acme", "stripeLink": "https://buy.stripe.com/test_1"},
                "variants": [
                    {"name": "control", "weight": 50},
                    {"name": "bold", "weight": 50, "values": {"headline": "Ship pages that sell"}},
                ],
            },
        }
    )
    revision = build_revision(experiment, Serving(), builtin(TemplateName.SAAS_LANDING))
    # The operator's own deploy client, as the deploy user: SFTP, switch, reload (no root).
    result = await ssh.deploy(world.target(), EXPERIMENT, revision.id, revision.files)
    assert result.uploaded and result.switched
    assert result.serving == revision.id  # the agent confirmed it serves it
    truth = await visit(world.address, range(30))
    want = expected(truth)
    assert sum(v for v, _ in want.values()) == 30
    await eventually(
        lambda: _async(world.intake.latest(EXPERIMENT) == want), what="reported counts"
    )
    assert counts_in(await agent_status(world)) == want


async def _async(value: Any) -> Any:
    return value


async def _succeeds(result: Awaitable[ExecResult]) -> bool:
    return (await result).returncode == 0


# -- from outside ------------------------------------------------------------------------


async def test_only_the_pinned_host_key_is_accepted(world: BootedWorld) -> None:
    stranger = generate_ssh_key("root@elsewhere").public
    with pytest.raises(HostKeyMismatch):
        await ssh.deploy(world.target(pinned=stranger), EXPERIMENT, "r-x", {})
    # Root may not log in, even with the operator's key; passwords are not offered.
    with pytest.raises(OperatorKeyRefused, match="user root refused the operator's SSH key"):
        await ssh.remove(world.target(user="root"), "nothing")
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            world.address,
            username="deploy",
            password="guess",
            client_keys=None,
            known_hosts=([asyncssh.import_public_key(world.host_key.public)], [], []),
            preferred_auth="password,keyboard-interactive",
        )


async def test_a_port_that_is_not_allowed_gets_nothing(world: BootedWorld) -> None:
    started = await world.server.exec(
        "systemd-run", "--unit", "probe-listener", "python3", "-m", "http.server", "8081"
    )
    assert started.returncode == 0, started.stderr
    probe = "import urllib.request as u; u.urlopen('http://127.0.0.1:8081/')"
    await eventually(
        lambda: _succeeds(world.server.exec("python3", "-c", probe)),
        what="the listener answers inside",
    )
    # ufw drops what it does not allow: no refusal, nothing at all.
    assert await asyncio.to_thread(tcp_outcome, world.address, 8081) == "timeout"
    assert await asyncio.to_thread(tcp_outcome, world.address, 80) == "open"
    ufw = await world.server.exec("ufw", "status")
    assert "Status: active" in ufw.stdout


async def test_unattended_security_upgrades_are_configured(world: BootedWorld) -> None:
    config = await world.server.exec("apt-config", "dump")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in config.stdout
    assert "label=Debian-Security" in config.stdout
    timers = await world.server.exec("systemctl", "is-enabled", "apt-daily-upgrade.timer")
    assert timers.stdout.strip() == "enabled"


# -- changes on the running server -------------------------------------------------------


async def test_a_bundle_that_is_not_the_one_sent_is_refused(
    world: BootedWorld, bundle: AgentBundle, tmp_path: Path
) -> None:
    upgrade = ensure_bundle(version="0.1.1+boot.test").describe()
    tampered = tmp_path / upgrade.path.name
    data = bytearray(upgrade.path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte on the way
    tampered.write_bytes(bytes(data))
    forged = AgentBundle(tampered, upgrade.sha256, upgrade.version)
    with pytest.raises(InstallFailed, match="SHA-256 mismatch"):
        await install_agent(world.target(), forged, world.environment())
    installed = await world.server.exec("cat", "/opt/smart/agent/current/BUNDLE")
    assert f"sha256={bundle.sha256}" in installed.stdout.splitlines()
    leftovers = await world.server.exec(
        "ls", "/var/lib/smart-agent-install", "/opt/smart/agent/releases"
    )
    assert upgrade.sha256 not in leftovers.stdout and upgrade.version not in leftovers.stdout


async def test_an_agent_upgrade_loses_no_count(world: BootedWorld, tmp_path: Path) -> None:
    before = counts_in(await agent_status(world))
    assert before, "the earlier test left counts"
    upgrade = ensure_bundle(version="0.1.1+boot.test").describe()
    # Visitors keep coming while the agent is replaced: nginx serves and logs them, and
    # the new agent counts them from where the old one stopped.
    installed = asyncio.Event()

    async def visitors_until_installed() -> Counter[tuple[str, str]]:
        truth: Counter[tuple[str, str]] = Counter()
        batch = 1000
        while not installed.is_set():  # spans the upload, the install and the restart
            truth += await visit(world.address, range(batch, batch + 5), pause=0.05)
            batch += 5
        return truth

    during = asyncio.create_task(visitors_until_installed())
    try:
        result = await install_agent(world.target(), upgrade, world.environment())
    finally:
        installed.set()
    truth = await during
    assert result.uploaded and result.restarted and result.version == "0.1.1+boot.test"
    status = await agent_status(world)
    assert status["agent"]["version"] == "0.1.1+boot.test"
    truth += await visit(world.address, range(5000, 5010))
    variants = set(before) | {v for v, _ in truth}
    want = {
        v: (
            before.get(v, (0, 0))[0] + truth[v, "visitors"],
            before.get(v, (0, 0))[1] + truth[v, "conversions"],
        )
        for v in variants
    }
    await eventually(
        lambda: _async(world.intake.latest(EXPERIMENT) == want), what="counts after the upgrade"
    )
    assert counts_in(await agent_status(world)) == want


async def test_two_installs_at_once_both_end_with_the_bundle_installed(
    world: BootedWorld,
) -> None:
    """An operator killed mid-install leaves its command running on the server; the next
    operator's install of the same bundle waits for it instead of unpacking beside it
    (which failed with "rm: cannot remove ...: Directory not empty")."""
    second = ensure_bundle(version="0.1.2+boot.test").describe()
    results = await asyncio.gather(
        *(install_agent(world.target(), second, world.environment()) for _ in range(2))
    )
    assert [r.version for r in results] == ["0.1.2+boot.test"] * 2
    installed = await world.server.exec("cat", "/opt/smart/agent/current/BUNDLE")
    assert f"sha256={second.sha256}" in installed.stdout.splitlines()


async def test_a_new_intake_key_replaces_the_old_one(world: BootedWorld) -> None:
    new_key = generate_intake_key()
    world.intake.keys.add(new_key)
    assert await rotate_intake_key(world.target(), world.environment(new_key))
    world.intake.keys.discard(world.intake_key)  # revoked once the server has the new one
    seen = len(world.intake.heartbeats(new_key))
    await eventually(
        lambda: _async(len(world.intake.heartbeats(new_key)) > seen),
        what="a heartbeat with the new key",
    )
    refused_before = len(world.intake.refused)
    await asyncio.sleep(2.5)  # two heartbeat intervals: nothing more with the revoked key
    assert all(r.key != world.intake_key for r in world.intake.refused[refused_before:])
    world.intake_key = new_key


async def test_the_host_key_from_the_user_data_is_rotated_away(world: BootedWorld) -> None:
    old = world.host_key.public
    upcoming = await prepare_host_key_rotation(world.target())
    assert upcoming == await prepare_host_key_rotation(world.target())  # asking again: same key
    committed = await commit_host_key_rotation(world.target(), upcoming)
    assert committed.split()[:2] == upcoming.split()[:2]
    with pytest.raises(HostKeyMismatch):
        await ssh.deploy(world.target(pinned=old), EXPERIMENT, "r-x", {})
    # A retried commit (its answer lost) finds the new key and changes nothing.
    again = await commit_host_key_rotation(world.target(pinned=upcoming), upcoming)
    assert again.split()[:2] == upcoming.split()[:2]
    world.host_key = type(world.host_key)(private="", public=upcoming)
    assert (await remote(world, "true")).exit_status == 0


async def test_a_rotated_operator_key_replaces_the_old_one_on_the_server(
    world: BootedWorld,
) -> None:
    """Staff replaced the operator's key and kept the old one as the previous key: the
    server, which authorizes only the old key, still lets the operator in, is moved to
    the new key over that connection, and afterwards refuses the old key."""
    old, new = world.operator_key, generate_ssh_key("smart-operator")
    path = "/home/deploy/.ssh/authorized_keys"
    staff = generate_ssh_key("admin@laptop").public
    added = await world.server.exec("sh", "-c", f"echo '{staff}' >> {path}")
    assert added.returncode == 0, added.stderr
    before = (await world.server.exec("cat", path)).stdout
    assert old.public.split()[1] in before and new.public.split()[1] not in before
    rotating = dataclasses.replace(
        world.target(), client_private_key=new.private, previous_client_private_key=old.private
    )
    # Meanwhile every SSH call works with the previous key (a deploy before the pass).
    assert (await installed_bundle(rotating)).get("sha256")

    check = await ssh.ensure_operator_key(rotating)
    assert (check.accepted, check.replaced) == (new.fingerprint, old.fingerprint)

    only_old = dataclasses.replace(world.target(), previous_client_private_key=None)
    with pytest.raises(OperatorKeyRefused) as refused:
        await ssh.connect_pinned(only_old)
    assert old.fingerprint in str(refused.value)
    only_new = dataclasses.replace(rotating, previous_client_private_key=None)
    conn = await ssh.connect_pinned(only_new)
    async with conn:
        assert (await conn.run("id -un", check=True)).stdout == "deploy\n"
    after = await world.server.exec(
        "sh", "-c", f"stat -c '%a %U' {path}; cat {path}; ls -a ~deploy/.ssh"
    )
    mode, *rest = after.stdout.splitlines()
    assert mode == "600 deploy"
    assert staff in rest and new.public.split()[1] in after.stdout
    assert old.public.split()[1] not in after.stdout
    assert not [name for name in rest if ".smart-" in name]  # no temporary file left
    # Asked again (a pass whose record was lost): nothing to do.
    again = await ssh.ensure_operator_key(rotating)
    assert (again.accepted, again.replaced) == (new.fingerprint, None)
    # A rotation stopped between its two writes left both keys: the old one goes.
    readded = await world.server.exec("sh", "-c", f"echo '{old.public}' >> {path}")
    assert readded.returncode == 0, readded.stderr
    healed = await ssh.ensure_operator_key(rotating)
    assert (healed.accepted, healed.replaced) == (new.fingerprint, old.fingerprint)
    with pytest.raises(OperatorKeyRefused):
        await ssh.connect_pinned(only_old)
    world.operator_key = new
    assert (await remote(world, "true")).exit_status == 0


async def test_repeated_bad_logins_are_banned(world: BootedWorld) -> None:
    await asyncio.to_thread(
        run, "ip", "addr", "add", f"{world.attacker}/32", "dev", world.boot.network.bridge
    )
    assert await asyncio.to_thread(tcp_outcome, world.address, 22, world.attacker) == "open"
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    for attempt in range(8):
        try:
            async with await asyncssh.connect(
                world.address,
                username=f"admin{attempt}",
                client_keys=[stranger],
                known_hosts=None,
                local_addr=(world.attacker, 0),
                connect_timeout=3,
            ):
                pass
        except (asyncssh.Error, OSError):
            pass
    await eventually(lambda: _banned(world), within=20, what=f"{world.attacker} banned")
    # fail2ban lists the ban before its action has run nft, so the closed port is polled.
    await eventually(
        lambda: _shut_out(world), within=20, what=f"port 22 closed to {world.attacker}"
    )
    # The operator, from the gateway, is not affected.
    assert (await remote(world, "true")).exit_status == 0


async def _shut_out(world: BootedWorld) -> bool:
    outcome = await asyncio.to_thread(tcp_outcome, world.address, 22, world.attacker, 1.0)
    return outcome != "open"


async def _banned(world: BootedWorld) -> bool:
    status = await world.server.exec("fail2ban-client", "status", "sshd")
    return world.attacker in status.stdout


# -- the end -----------------------------------------------------------------------------


async def test_deleting_the_server_removes_everything_it_had(world: BootedWorld) -> None:
    server = world.server
    assert server.nspawn is not None and server.link is not None
    pid, netns, merged = server.nspawn.pid, server.link.netns, server.merged

    def delete() -> None:  # the SDK blocks: off the loop that serves the simulator
        world.client.servers.delete(world.client.servers.get_by_id(world.server_id))

    await asyncio.to_thread(delete)
    await eventually(lambda: _async(server.state == "stopped"), what="the server stopped")
    assert server.nspawn.poll() is not None, f"nspawn {pid} still runs"
    namespaces = (await asyncio.to_thread(run, "ip", "netns", "list")).stdout
    assert netns not in namespaces
    assert not await asyncio.to_thread(Path(merged).exists)  # unmounted and removed
