"""Cloudflare API simulator: a real HTTP server that answers the official ``cloudflare`` SDK.

Layout: :mod:`~smart_sim.cloudflare.state` (the pure in-memory model of zones and DNS
records), :mod:`~smart_sim.cloudflare.app` (the aiohttp application and the API's JSON
shapes) and :mod:`~smart_sim.cloudflare.runner` (serving it on loopback).
"""

from smart_sim.cloudflare.app import CONTEXT, CloudflareConfig, CloudflareContext, create_app
from smart_sim.cloudflare.runner import CloudflareSimulator

__all__ = [
    "CONTEXT",
    "CloudflareConfig",
    "CloudflareContext",
    "CloudflareSimulator",
    "create_app",
]
