"""Every test's budget state in a directory of its own: no test touches the user's state
directory (``~/.local/state/bulkopens``), and no test shares a ledger with another."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _budget_state_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    state = tmp_path_factory.mktemp("budget-state")
    monkeypatch.setenv("BULKOPENS_STATE_DIR", str(state))
    monkeypatch.setenv("XDG_STATE_HOME", str(state / "xdg"))
    monkeypatch.delenv("BULKOPENS_BUDGET", raising=False)
    return state
