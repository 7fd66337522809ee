"""Simulated servers: each server the Hetzner simulator creates boots as a host here.

A host gets its own loopback address (the server's IPv4, 127.10.x.y), a root folder where
its cloud-init ``write_files`` land, and an SSH endpoint with the host keys and
authorised keys its cloud-init carries (SFTP confined to the root folder, exec in it).
Invalid user-data (per Debian's ``cloud-init schema`` and a few stricter checks) makes
the boot fail visibly.

Layout: :mod:`~smart_sim.hosts.cloudinit` (validate and read user-data),
:mod:`~smart_sim.hosts.sshd` (the SSH endpoint), :mod:`~smart_sim.hosts.host` (one host's
folder, boot and state) and :mod:`~smart_sim.hosts.manager` (the simulator's hooks).

A simulation, not a sandbox: commands run over SSH are real processes of this machine's
user. Product code never imports this package.
"""

from smart_sim.hosts.cloudinit import CloudConfig, SchemaReport, UserDataError, UserDataValidator
from smart_sim.hosts.host import HostState, SimulatedHost
from smart_sim.hosts.manager import HostManager
from smart_sim.hosts.sshd import SSHEndpoint

__all__ = [
    "CloudConfig",
    "HostManager",
    "HostState",
    "SSHEndpoint",
    "SchemaReport",
    "SimulatedHost",
    "UserDataError",
    "UserDataValidator",
]
