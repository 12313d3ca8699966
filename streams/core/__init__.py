"""Pure decision logic: no asyncio, no sockets, no clock, no randomness.

Everything here takes ``now`` and ``rng`` as arguments so it can be tested
with tables and property-based tests.
"""
