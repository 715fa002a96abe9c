"""``python -m bulkopens``: the same as the ``bulkopens`` command."""

from __future__ import annotations

from bulkopens.cli import console

if __name__ == "__main__":
    console()
