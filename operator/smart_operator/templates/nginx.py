"""Builds the nginx settings fragment of a performance variant from its checked values.

The fragment is the contract with the agent: plain nginx directives valid in a
``location`` context, one per line, which the agent includes inside the
``location / { ... }`` that serves the variant's document root (never at ``server``
level, so caching headers cannot reach the agent's own ``/_smart/`` endpoints). It may
open one nested ``location /assets/ { ... }`` for the static files; the agent's own
configuration must leave that prefix to it. Because that block uses ``add_header``,
nginx drops headers inherited from outer levels there: the agent must not rely on
server-level ``add_header`` for ``/assets/``.

Nothing from user input reaches the text as written: each value is parsed into a
number, a duration or one of a fixed set of words by the template's value spec, and
written back from the parsed form; anything else raises ``ValueError``. The builder is
pure and deterministic (same values, same bytes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from smart_operator.models.template import TemplateSpec, canonical_duration

# Compressible types besides text/html, which nginx always compresses when gzip is on.
GZIP_TYPES = (
    "text/css",
    "text/plain",
    "text/xml",
    "application/javascript",
    "application/json",
    "image/svg+xml",
)
_TOKEN = re.compile(r"^[A-Za-z0-9_.=/+-]+$")
_VARIANT = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def nginx_fragment(meta: TemplateSpec, variant: str, values: Mapping[str, str]) -> str:
    """The nginx directives of one variant of a performance template."""
    if not meta.nginx:
        raise ValueError(f"{meta.name} has no nginx settings")
    if not _VARIANT.match(variant):
        raise ValueError(f"variant name {variant!r} is not a DNS label")
    v = _Checked(meta, values)
    lines = [
        f"# Smart Server {meta.name}, variant {variant}: nginx settings.",
        "# Include inside the location that serves this variant's document root.",
        f"sendfile {v.word('sendfile')};",
        f"tcp_nopush {v.word('tcp_nopush')};",
        f"gzip {v.word('gzip')};",
    ]
    if v.word("gzip") == "on":
        lines += [
            f"gzip_comp_level {v.integer('gzip_comp_level')};",
            f"gzip_min_length {v.integer('gzip_min_length')};",
            "gzip_vary on;",
            "gzip_proxied any;",
            "gzip_types " + " ".join(GZIP_TYPES) + ";",
        ]
    lines += [
        f"keepalive_timeout {v.duration('keepalive_timeout')};",
        f"keepalive_requests {v.integer('keepalive_requests')};",
    ]
    if v.word("open_file_cache") == "on":
        lines += [
            f"open_file_cache max={v.integer('open_file_cache_max')} "
            f"inactive={v.duration('open_file_cache_inactive')};",
            f"open_file_cache_valid {v.duration('open_file_cache_valid')};",
            "open_file_cache_min_uses 1;",
            "open_file_cache_errors on;",
        ]
    else:
        lines.append("open_file_cache off;")
    lines += [
        f"etag {v.word('etag')};",
        f"expires {v.duration('html_expires')};",
        "location /assets/ {",
        f"    expires {v.duration('asset_expires')};",
    ]
    if v.word("asset_immutable") == "on":
        lines.append('    add_header Cache-Control "immutable";')
    lines.append("}")
    return "\n".join(lines) + "\n"


class _Checked:
    """Typed access to values that have passed their spec, written back canonically."""

    def __init__(self, meta: TemplateSpec, values: Mapping[str, str]) -> None:
        for key, raw in values.items():
            spec = meta.values.get(key)
            if spec is None:
                raise ValueError(f"{key} is not a value of {meta.name}")
            problem = spec.problem(raw)
            if problem is not None:
                raise ValueError(f"{key} {problem}")
        self._meta = meta
        self._values = values

    def _raw(self, key: str, expected: str) -> str:
        spec = self._meta.values[key]
        if spec.type != expected:
            raise ValueError(f"{key} is a {spec.type} value, not {expected}")
        raw = self._values.get(key, spec.default)
        problem = spec.problem(raw)
        if problem is not None:
            raise ValueError(f"{key} {problem}")
        return raw

    def word(self, key: str) -> str:
        spec = self._meta.values[key]
        raw = self._raw(key, "enum")
        # Written from the spec's own list, never from the input string.
        return _token(spec.allowed[spec.allowed.index(raw)])

    def integer(self, key: str) -> str:
        return str(int(self._raw(key, "integer")))

    def duration(self, key: str) -> str:
        spec = self._meta.values[key]
        raw = self._raw(key, "duration")
        if raw in spec.keywords:
            return _token(spec.keywords[spec.keywords.index(raw)])
        canonical = canonical_duration(raw)
        if canonical is None:  # unreachable: the spec accepted it
            raise ValueError(f"{key} is not a duration")
        return _token(canonical)


def _token(word: str) -> str:
    if not _TOKEN.match(word):
        raise ValueError(f"{word!r} is not a plain nginx token")
    return word
