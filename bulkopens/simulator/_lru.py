"""A weighted LRU cache: bounded by the sum of item weights, not by item count."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class WeightedLRU(Generic[K, V]):
    """Keeps the most recently used items while their total weight stays <= ``budget``.

    Invariant: ``self.weight == sum of the weights of the stored items``. The item just put
    is always kept, even when it alone exceeds the budget.
    """

    __slots__ = ("_items", "budget", "weight")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.weight = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The cached value (marked as most recently used), or None."""
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def peek(self, key: K) -> V | None:
        """The cached value without touching its recency, or None."""
        item = self._items.get(key)
        return None if item is None else item[0]

    def put(self, key: K, value: V, weight: int) -> None:
        """Store ``value``, then evict least recently used items until within budget."""
        old = self._items.pop(key, None)
        if old is not None:
            self.weight -= old[1]
        self._items[key] = (value, weight)
        self.weight += weight
        while self.weight > self.budget and len(self._items) > 1:
            _, (_, evicted) = self._items.popitem(last=False)
            self.weight -= evicted

    def reweigh(self, key: K, weight: int) -> None:
        """Record a new weight for a stored item whose value grew in place."""
        item = self._items.get(key)
        if item is not None:
            self.weight += weight - item[1]
            self._items[key] = (item[0], weight)

    def clear(self) -> None:
        """Drop every item."""
        self._items.clear()
        self.weight = 0

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"<WeightedLRU items={len(self._items)} weight={self.weight}/{self.budget}>"
