"""Simulated world for development and tests: the local Kubernetes control plane,
the Hetzner Cloud and Cloudflare API simulators, and simulated servers.

Product code never imports this package (an import-linter contract keeps it so).
"""
