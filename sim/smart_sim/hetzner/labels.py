"""Hetzner Cloud labels: validation of keys and values, and label selectors.

Label keys are an optional DNS-subdomain prefix and a slash, then a name of at most 63
characters that starts and ends alphanumeric (``-``, ``_`` and ``.`` in between); the
``hetzner.cloud/`` prefix is reserved. Values follow the name rule and may be empty.

A selector is a comma-separated conjunction of ``k=v``, ``k==v``, ``k!=v``, ``k``
(present), ``!k`` (absent), ``k in (a,b)`` and ``k notin (a,b)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

__all__ = ["LabelError", "parse_selector", "validate_labels"]

_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SET_REQUIREMENT = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s+\((?P<values>[^()]*)\)$")

Matcher = Callable[[Mapping[str, str]], bool]


class LabelError(ValueError):
    """A label or selector is malformed; the message says why."""


def _check_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if prefix:
        if len(prefix) > 253 or not _PREFIX.match(prefix):
            raise LabelError(f"label key {key!r} has an invalid prefix")
        if prefix == "hetzner.cloud" or prefix.endswith(".hetzner.cloud"):
            raise LabelError(f"label key {key!r} uses the reserved prefix hetzner.cloud/")
    if not _NAME.match(name):
        raise LabelError(
            f"label key {key!r} is invalid: at most 63 characters, starting and ending "
            "with a letter or digit, with '-', '_' or '.' in between"
        )


def _check_value(key: str, value: str) -> None:
    if value and not _NAME.match(value):
        raise LabelError(
            f"label value {value!r} of {key!r} is invalid: empty, or at most 63 characters "
            "starting and ending with a letter or digit, with '-', '_' or '.' in between"
        )


def validate_labels(labels: object) -> dict[str, str]:
    """The labels as a str-to-str dict, or LabelError naming the first bad key or value."""
    if not isinstance(labels, dict):
        raise LabelError("labels must be an object of string keys to string values")
    checked: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise LabelError(f"label {key!r} must map a string to a string")
        _check_key(key)
        _check_value(key, value)
        checked[key] = value
    return checked


def _split(selector: str) -> list[str]:
    """Split on the commas that are not inside a value set's parentheses."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts]


def _requirement(text: str) -> Matcher:
    if not text:
        raise LabelError("empty requirement in label selector")
    set_match = _SET_REQUIREMENT.match(text)
    if set_match:
        key = set_match["key"]
        _check_key(key)
        values = frozenset(v.strip() for v in set_match["values"].split(","))
        if set_match["op"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    for op in ("!=", "==", "="):
        if op in text:
            key, _, value = (part.strip() for part in text.partition(op))
            _check_key(key)
            _check_value(key, value)
            if op == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    if text.startswith("!"):
        key = text[1:].strip()
        _check_key(key)
        return lambda labels: key not in labels
    _check_key(text)
    return lambda labels: text in labels


def parse_selector(selector: str) -> Matcher:
    """A predicate over a label mapping, or LabelError for a malformed selector."""
    matchers = [_requirement(part) for part in _split(selector)]
    return lambda labels: all(m(labels) for m in matchers)
