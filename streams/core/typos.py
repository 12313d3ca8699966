"""Misspelled mail domains: edit distance and the nearest well-known domain.

A domain is split into its *name* (the first label, ``gmail``) and its
*suffix* (the rest, ``com`` or ``co.uk``). A typed domain is a plausible
misspelling of a well-known one when it is within reach of it, where the
reach depends on which part differs:

=====================  ==================================================
what differs           reach (optimal string alignment distance)
=====================  ==================================================
only the suffix        1 (``gmail.con``, ``icloud.co``, ``gmx.ne``)
only the name          2 for names of 6+ characters when the first letter
                       is right (``hottmial.com``), else 1 for names of
                       4+ (``gnail.com``, ``otmail.com``), none below 4
                       (``aon.com`` is not ``aol.com``)
both (a moved dot)     1 for names of 4+ characters (``gmai.lcom``)
=====================  ==================================================

A suffix never gets a reach of 2: two edits there usually name another
real regional domain (``orange.es`` is not a typo of ``orange.fr``). Nor
does a name with another first letter: many real providers are two edits
from a big one (``foxmail.com``, ``popmail.com`` from ``hotmail.com``),
while people seldom mistype the first letter and another one too.
The nearest domain is suggested only when no other is as near.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["nearest_domain", "osa_distance"]

# Names shorter than this are too short for a changed character to be a
# typo rather than another real name (me.com / mi.com, aol.com / aon.com).
_MIN_NAME_FOR_NAME_EDITS = 4
# Names at least this long tolerate two edits (hotmail, outlook, icloud).
_MIN_NAME_FOR_TWO_EDITS = 6


def osa_distance(a: str, b: str, *, limit: int | None = None) -> int:
    """Optimal string alignment distance between ``a`` and ``b``.

    Counts insertions, deletions, substitutions and transpositions of two
    adjacent characters (the restricted Damerau-Levenshtein distance: no
    substring is edited twice).

    Args:
        a: One string.
        b: The other string.
        limit: Stop early once the distance is known to exceed this; the
            result is then ``limit + 1``.

    Returns:
        The distance, or ``limit + 1`` when it exceeds ``limit``.
    """
    if limit is not None and abs(len(a) - len(b)) > limit:
        return limit + 1
    before: list[int] = []  # row i-2
    previous = list(range(len(b) + 1))  # row i-1
    for i, char_a in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, char_b in enumerate(b, start=1):
            cost = 0 if char_a == char_b else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                current[j] = min(current[j], before[j - 2] + 1)
        if limit is not None and min(current) > limit:
            return limit + 1
        before, previous = previous, current
    distance = previous[-1]
    if limit is not None and distance > limit:
        return limit + 1
    return distance


def nearest_domain(domain: str, candidates: Iterable[str]) -> str | None:
    """The one candidate that ``domain`` is a plausible misspelling of.

    Args:
        domain: The domain as typed, lower case; the Unicode form is best,
            so that ``gmaíl.com`` is one edit from ``gmail.com``.
        candidates: Well-known domains, lower case.

    Returns:
        The candidate within reach (see the module docstring) at the
        smallest distance, or ``None`` when there is none, when two are
        equally near, or when ``domain`` is itself a candidate.
    """
    best: str | None = None
    best_distance = 0
    tied = False
    for candidate in candidates:
        if candidate == domain:
            return None
        distance = _misspelling_distance(domain, candidate)
        if distance is None:
            continue
        if best is None or distance < best_distance:
            best, best_distance, tied = candidate, distance, False
        elif distance == best_distance:
            tied = True
    return None if tied else best


def _misspelling_distance(typed: str, known: str) -> int | None:
    """The distance from ``typed`` to ``known`` if within reach, else ``None``."""
    typed_name, _, typed_suffix = typed.partition(".")
    known_name, _, known_suffix = known.partition(".")
    if typed_name == known_name:
        reach = 1
    elif typed_suffix == known_suffix:
        if len(known_name) >= _MIN_NAME_FOR_TWO_EDITS and typed_name[:1] == known_name[:1]:
            reach = 2
        elif len(known_name) >= _MIN_NAME_FOR_NAME_EDITS:
            reach = 1
        else:
            return None
    elif len(known_name) >= _MIN_NAME_FOR_NAME_EDITS:
        reach = 1
    else:
        return None
    distance = osa_distance(typed, known, limit=reach)
    return distance if 0 < distance <= reach else None
