"""Hetzner Cloud API simulator: a real HTTP server that answers the official ``hcloud`` SDK.

Layout: :mod:`~smart_sim.hetzner.catalog` (locations, server types, images, prices),
:mod:`~smart_sim.hetzner.labels` (labels and selectors), :mod:`~smart_sim.hetzner.state`
(the pure in-memory model), :mod:`~smart_sim.hetzner.schema` (the API's JSON shapes),
:mod:`~smart_sim.hetzner.app` (the aiohttp application), :mod:`~smart_sim.hetzner.hooks`
(the hook through which servers become simulated hosts) and
:mod:`~smart_sim.hetzner.runner` (serving it on loopback).
"""

from smart_sim.hetzner.app import CONTEXT, HetznerConfig, HetznerContext, create_app
from smart_sim.hetzner.hooks import HostStatusSource, ServerHooks, ServerInfo
from smart_sim.hetzner.runner import HetznerSimulator

__all__ = [
    "CONTEXT",
    "HetznerConfig",
    "HetznerContext",
    "HetznerSimulator",
    "HostStatusSource",
    "ServerHooks",
    "ServerInfo",
    "create_app",
]
