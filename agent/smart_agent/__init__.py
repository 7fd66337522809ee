"""The agent that runs on each customer server: serves experiments through nginx,
counts visitors and conversions privately, and reports to the intake API.

It imports nothing of the project and stays light (aiohttp, pydantic, sqlite3).
"""
