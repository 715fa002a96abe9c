"""The public surface: small, sorted, typed, and free of global state."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import bulkopens
import bulkopens.simulator
from bulkopens import _exceptions
from bulkopens._config import Settings

PACKAGE = Path(bulkopens.__file__).parent


def isort_style(name: str) -> tuple[int, str]:
    """CONSTANTS, then Classes, then functions: the order ruff's RUF022 keeps."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_complete() -> None:
    for module in (bulkopens, bulkopens.simulator):
        names = module.__all__
        assert list(names) == sorted(names, key=isort_style), module.__name__
        for name in names:
            assert hasattr(module, name), name
    public = {n for n in dir(bulkopens) if not n.startswith("_")} - {"simulator", "annotations"}
    assert public == set(bulkopens.__all__) - {"__version__"}


def test_version() -> None:
    assert bulkopens.__version__.count(".") == 2


def test_package_is_typed() -> None:
    assert (PACKAGE / "py.typed").exists()


def test_error_tree_is_named_after_what_happens_next() -> None:
    # The retried errors stay inside the engine: never raised to a caller, so not public.
    assert issubclass(_exceptions.ThrottledError, _exceptions.RetryableError)
    assert issubclass(_exceptions.TransientError, _exceptions.RetryableError)
    for internal in ("RetryableError", "TransientError", "ThrottledError", "Settings", "REPORTS"):
        assert not hasattr(bulkopens, internal), internal
    assert issubclass(bulkopens.ContactNotFound, bulkopens.ContactError)
    assert issubclass(bulkopens.RetriesExhausted, bulkopens.ContactError)
    for fatal in (
        bulkopens.AuthenticationError,
        bulkopens.QuotaExhausted,
        bulkopens.ConfigurationError,
    ):
        assert issubclass(fatal, bulkopens.RunStopped)
    assert issubclass(bulkopens.RunStopped, bulkopens.BulkOpensError)


def test_no_module_level_mutable_state_or_loop_bound_objects() -> None:
    """Module-level assignments are constants: no sessions, limiters, locks or registries."""
    suspicious = ("Session", "Lock", "Event", "Pacer", "Limiter", "Queue", "get_event_loop")
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign | ast.AnnAssign):
                source = ast.unparse(node)
                assert not any(s in source for s in suspicious), f"{path.name}: {source}"


def test_settings_hide_secrets_from_repr() -> None:
    settings = Settings(api_key="key-very-secret-1", token="token-very-secret-2")
    assert "very-secret" not in repr(settings)


def test_one_counts_type_for_the_live_counters_progress_and_summary() -> None:
    """Stats, Progress and Summary count the same things under the same names: Progress and
    Summary are Counts, and Stats holds every Counts field (in the same order)."""
    from bulkopens._stats import COUNTS, Counts, Stats

    assert issubclass(bulkopens.Progress, Counts)
    assert issubclass(bulkopens.Summary, Counts)
    live = [f.name for f in dataclasses.fields(Stats) if f.name in COUNTS]
    assert live == list(COUNTS)
    stats = Stats(records=7, requests=3)
    assert stats.snapshot().records == 7
    assert {name: getattr(stats.snapshot(), name) for name in COUNTS} == stats.counts()
