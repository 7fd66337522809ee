"""The agent that runs on each customer server: serves experiments through nginx,
counts visitors and conversions privately, and reports to the intake API.

It imports nothing of the project and stays light (stdlib, aiohttp, pydantic,
pydantic-settings, sqlite3); ``docs/agent.md`` describes its on-disk layout, its
privacy design and its contract with the operator.
"""

__version__ = "0.1.0"
