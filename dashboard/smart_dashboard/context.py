"""The typed keys under which the application keeps its shared parts."""

from __future__ import annotations

import asyncio

import jinja2
from aiohttp import web

from smart_dashboard.cluster import Cache, KubeApi
from smart_dashboard.sessions import Session, Signer
from smart_dashboard.settings import DashboardSettings
from smart_dashboard.throttle import SignInThrottle

SETTINGS = web.AppKey("settings", DashboardSettings)
CACHE = web.AppKey("cache", Cache)
API = web.AppKey("api", KubeApi)
SIGNER = web.AppKey("signer", Signer)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
REVIEWS = web.AppKey("reviews", asyncio.Semaphore)
THROTTLE = web.AppKey("throttle", SignInThrottle)
SESSION = web.RequestKey("session", Session)
