"""Booted simulated servers: every server the Hetzner simulator creates is a real Debian
system (systemd, the real cloud-init from a NoCloud seed, sshd, nginx, ufw, fail2ban) in
its own network namespace on a simulated provider network, running the operator's
user-data unmodified.

Layout: :mod:`~smart_sim.boot.image` (the cached Debian image),
:mod:`~smart_sim.boot.network` (the provider network and the clean-up of dead runs),
:mod:`~smart_sim.boot.server` (one booted server), :mod:`~smart_sim.boot.manager` (the
simulator's hooks) and :mod:`~smart_sim.boot.bundle` (the agent's offline bundle).

Needs root, ``systemd-container`` and ``mmdebstrap``. Product code never imports it.
"""

from smart_sim.boot.image import IMAGES, ImageSpec, ensure_image
from smart_sim.boot.manager import BootManager, boot_available
from smart_sim.boot.network import ProviderNetwork
from smart_sim.boot.server import BootedServer, ExecResult, ServerState

__all__ = [
    "IMAGES",
    "BootManager",
    "BootedServer",
    "ExecResult",
    "ImageSpec",
    "ProviderNetwork",
    "ServerState",
    "boot_available",
    "ensure_image",
]
