"""In-process simulator set-up shared by the library tests: one place for the defaults."""

from __future__ import annotations

from typing import Any

import bulkopens
from bulkopens.simulator import SimConfig, Simulator


def unlimited_config(key: str, token: str, **kw: Any) -> SimConfig:
    """A simulator config for ``key``/``token`` with no rate limit and no quota; ``kw`` wins."""
    base: dict[str, Any] = {
        "api_keys": (key,),
        "tokens": (token,),
        "rate_per_second": 0,
        "daily_quota": 0,
    }
    base.update(kw)
    return SimConfig(**base)


def unpaced_client(sim: Simulator, key: str, token: str, **kw: Any) -> bulkopens.Client:
    """A client of ``sim`` with no pacing and 8 workers unless ``kw`` says otherwise."""
    kw.setdefault("rate", 0)
    kw.setdefault("concurrency", 8)
    return bulkopens.Client(key, token, base_url=sim.url, **kw)
