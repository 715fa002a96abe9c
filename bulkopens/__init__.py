"""bulkopens: bulk, rate-limited, exactly-once export of Constant Contact tracking reports."""

from __future__ import annotations

from importlib.metadata import version as _version

__version__ = _version("bulkopens")

__all__ = ["__version__"]
