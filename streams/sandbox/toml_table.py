"""One TOML table of a sandbox world being read: typed getters whose errors name the entry.

A :class:`TomlTable` refuses unknown keys (suggesting the closest known one)
and values of the wrong type or range, so that every message names the file,
the entry and the fix (:class:`~streams.errors.WorldError`).
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Collection, Mapping
from typing import Any

from streams.errors import WorldError

__all__ = ["LOOPBACK", "TomlTable"]

#: The only network the sandbox binds to.
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


class TomlTable:
    """One TOML table being read: typed getters whose errors name the entry."""

    def __init__(
        self,
        data: object,
        *,
        source: str,
        where: str,
        keys: Collection[str],
        index: int = 0,
        label: str = "",
    ) -> None:
        self.source = source
        # Array entries are named by their label ("[[hosts]] 'mx.a.test'"), else their index.
        self.where = f"{where} entry {index}" if index else where
        if not isinstance(data, Mapping):
            raise self.error(f"expected a table, got {type(data).__name__}", "write it as a table")
        self.data: Mapping[str, Any] = data
        if label and isinstance(data.get(label), str):
            self.where = f"{where} {data[label]!r}"
        for key in data:
            if key not in keys:
                close = difflib.get_close_matches(str(key), list(keys), n=1)
                fix = f"rename it to {close[0]!r}" if close else "valid keys: " + ", ".join(keys)
                raise self.error(f"unknown key {key!r}", fix)

    def error(self, problem: str, fix: str) -> WorldError:
        """Build the error for ``problem`` in this table, with the ``fix``."""
        return WorldError(f"{self.source}: {self.where}: {problem}; {fix}.")

    def raw(self, key: str, expected: type | tuple[type, ...], what: str) -> Any:
        """Return the value of ``key`` (None when absent) after a type check."""
        value = self.data.get(key)
        if value is None:
            return None
        # bool is a subclass of int: "port = true" must not pass as 1.
        wrong_bool = isinstance(value, bool) and expected is not bool
        if wrong_bool or not isinstance(value, expected):
            raise self.error(f"{key} must be {what}, got {value!r}", f"set {key} to {what}")
        return value

    def text(self, key: str, default: str | None = None) -> str:
        """A string; required when ``default`` is None."""
        value = self.raw(key, str, "a string")
        if value is None:
            if default is None:
                raise self.error(f"{key} is missing", f'add {key} = "..."')
            return default
        return str(value)

    def integer(self, key: str, default: int, *, high: int = 2**31 - 1) -> int:
        """An int in ``[0, high]``, or ``default`` when absent."""
        value = self.optional_integer(key, high=high)
        return default if value is None else value

    def optional_integer(self, key: str, *, high: int = 2**31 - 1) -> int | None:
        """An int in ``[0, high]``, or None when absent."""
        value = self.raw(key, int, "an integer")
        if value is not None and not 0 <= value <= high:
            raise self.error(f"{key} = {value} is out of range", f"use 0..{high}")
        return None if value is None else int(value)

    def number(self, key: str, default: float, *, positive: bool = False) -> float:
        """A finite number of seconds, >= 0 (or > 0 when ``positive``)."""
        value = self.raw(key, (int, float), "a number of seconds")
        if value is None:
            return default
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            bound = "> 0" if positive else ">= 0"
            raise self.error(f"{key} = {value} is not a duration", f"use a number {bound}")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        """A boolean."""
        value = self.raw(key, bool, "true or false")
        return default if value is None else bool(value)

    def texts(self, key: str) -> tuple[str, ...]:
        """A list of strings (empty when absent)."""
        value = self.raw(key, list, "a list of strings")
        if value is None:
            return ()
        for item in value:
            if not isinstance(item, str):
                raise self.error(f"{key} holds {item!r}", f"make every item of {key} a string")
        return tuple(value)

    def name(self, key: str, value: str | None = None) -> str:
        """A DNS name, lower case without the trailing dot."""
        name = (self.text(key) if value is None else value).strip().lower().rstrip(".")
        if not name.isascii():
            raise self.error(f"{key} {name!r} is not ASCII", "write it in punycode (xn--...)")
        labels = name.split(".")
        if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
            raise self.error(
                f"{key} {name!r} is not a valid DNS name",
                "use dot-separated labels of letters, digits and hyphens",
            )
        return name

    def loopback(self, key: str, value: str | None = None) -> str:
        """An IPv4 address inside 127.0.0.0/8."""
        text = self.text(key) if value is None else value
        try:
            address = ipaddress.ip_address(text.strip())
        except ValueError:
            problem = f"{key} {text!r} is not an IP address"
            raise self.error(problem, "use e.g. 127.0.53.10") from None
        if not isinstance(address, ipaddress.IPv4Address) or address not in LOOPBACK:
            raise self.error(
                f"{key} {text!r} is outside 127.0.0.0/8",
                "the sandbox binds only to loopback, so use an address like 127.0.53.10",
            )
        return str(address)

    def entries(self, key: str) -> list[Any]:
        """An array of tables (empty when absent)."""
        value = self.raw(key, list, f"an array of tables ([[{key}]])")
        return [] if value is None else list(value)
