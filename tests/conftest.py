"""Shared fixtures.

Every test's budget state is in a directory of its own: no test touches the user's state
directory (``~/.local/state/bulkopens``), and no test shares a ledger with another.

``sim`` is the in-process simulator over loopback, one per test: a test module that uses it
sets ``SIM_CONFIG`` (its :class:`SimConfig`), and a test may change fields of it with
``@pytest.mark.sim(field=value, ...)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bulkopens.simulator import SimConfig, Simulator


@pytest.fixture(autouse=True)
def _budget_state_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    state = tmp_path_factory.mktemp("budget-state")
    monkeypatch.setenv("BULKOPENS_STATE_DIR", str(state))
    monkeypatch.setenv("XDG_STATE_HOME", str(state / "xdg"))
    monkeypatch.delenv("BULKOPENS_BUDGET", raising=False)
    return state


@pytest.fixture
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    """The module's ``SIM_CONFIG`` served in process, with the test's ``mark.sim`` fields."""
    config = getattr(request.module, "SIM_CONFIG", None)
    if not isinstance(config, SimConfig):
        raise TypeError(f"{request.module.__name__} uses the sim fixture: set SIM_CONFIG")
    marker = request.node.get_closest_marker("sim")
    if marker is not None:
        config = dataclasses.replace(config, **marker.kwargs)
    async with Simulator(config) as running:
        yield running
