"""Static signals over packaged lists (skeleton: the helper replaces the bodies)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Signals", "StaticLists"]


@dataclass(frozen=True, slots=True)
class Signals:
    """What the address says about itself, before any network step."""

    disposable: bool
    role: bool
    free_provider: bool
    did_you_mean: str | None  # a full suggested address, e.g. "ann@gmail.com"


@dataclass(frozen=True, slots=True)
class StaticLists:
    disposable: frozenset[str]
    free: frozenset[str]
    role: frozenset[str]

    @classmethod
    def packaged(
        cls,
        *,
        extra_disposable: Iterable[str] = (),
        extra_free: Iterable[str] = (),
        extra_role: Iterable[str] = (),
    ) -> StaticLists:
        raise NotImplementedError

    def signals(self, local_part: str, domain: str) -> Signals:
        raise NotImplementedError
