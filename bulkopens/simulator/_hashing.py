"""Stateless, seeded hashing: the source of every "random" choice in the simulator.

Nothing here keeps state, so a value derived from (seed, contact id, ...) is the same no
matter in which order contacts, campaigns or requests are visited.
"""

from __future__ import annotations

import hashlib

_MASK = (1 << 64) - 1
_UNIT = 2.0**-53


def splitmix64(value: int) -> int:
    """One round of SplitMix64: a fast bijective mix of a 64-bit integer."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB
_C1_INVERSE = pow(_C1, -1, 1 << 64)
_C2_INVERSE = pow(_C2, -1, 1 << 64)


def unsplitmix64(value: int) -> int:
    """The inverse of :func:`splitmix64`: ``unsplitmix64(splitmix64(x)) == x``."""
    value = _unshift(value & _MASK, 31)
    value = _unshift((value * _C2_INVERSE) & _MASK, 27)
    value = _unshift((value * _C1_INVERSE) & _MASK, 30)
    return (value - 0x9E3779B97F4A7C15) & _MASK


def _unshift(value: int, shift: int) -> int:
    """The inverse of ``x ^ (x >> shift)`` on 64 bits."""
    result = value
    for _ in range(64 // shift):
        result = value ^ (result >> shift)
    return result


def mix(*parts: int) -> int:
    """Hash a tuple of integers into 64 bits (order-sensitive)."""
    value = 0x5EED
    for part in parts:
        value = splitmix64(value ^ (part & _MASK))
    return value


def unit(value: int) -> float:
    """Map a 64-bit hash onto [0, 1)."""
    return (value >> 11) * _UNIT


def digest(*parts: bytes) -> bytes:
    """A 32-byte BLAKE2b digest of the length-prefixed parts."""
    h = hashlib.blake2b(digest_size=32)
    for part in parts:
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


def digest_units(data: bytes) -> list[float]:
    """Split a 32-byte digest into eight independent uniforms in [0, 1)."""
    return [int.from_bytes(data[i : i + 4], "big") / 4294967296.0 for i in range(0, 32, 4)]


class Stream:
    """A SplitMix64 stream of draws; re-seeding is free, unlike ``random.Random``.

    Used to generate one (contact, campaign) pair's records from that pair's seed.
    """

    __slots__ = ("_state",)

    def __init__(self, seed: int = 0) -> None:
        self._state = seed & _MASK

    def reseed(self, seed: int) -> None:
        """Restart the stream from ``seed``."""
        self._state = seed & _MASK

    def next64(self) -> int:
        """The next 64-bit draw."""
        self._state = state = (self._state + 0x9E3779B97F4A7C15) & _MASK
        value = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
        return value ^ (value >> 31)

    def below(self, n: int) -> int:
        """A draw in range(n), n >= 1 (the modulo bias is below 2**-40 for n < 2**24)."""
        return self.next64() % n

    def chance(self, p: float) -> bool:
        """True with probability ``p``."""
        return self.next64() < p * 18446744073709551616.0

    def distinct_sorted(self, low: int, high: int, n: int) -> list[int]:
        """``n`` distinct draws from range(low, high), ascending; needs n <= high - low."""
        span = high - low
        picked: set[int] = set()
        while len(picked) < n:
            picked.add(low + self.next64() % span)
        return sorted(picked)

    def shuffle(self, items: list[int]) -> None:
        """Fisher-Yates shuffle in place."""
        for i in range(len(items) - 1, 0, -1):
            j = self.next64() % (i + 1)
            items[i], items[j] = items[j], items[i]
