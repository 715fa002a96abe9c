"""Checks shared by the v3 tests (test_v3.py, test_v3_cli.py): exact record sets, the two
paths' common ground, the rate in any one-second window."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

Activity = tuple[str, str, str, str]


def assert_exact(got: Sequence[bytes], want: Sequence[bytes]) -> None:
    """``got`` holds every line of ``want`` exactly once, byte for byte, and nothing else."""
    g, w = Counter(got), Counter(want)
    missing, extra = w - g, g - w
    shown = f"e.g. missing {list(missing)[:1]}, extra {list(extra)[:1]}"
    assert not missing, f"{sum(missing.values())} missing; {shown}"
    assert not extra, f"{sum(extra.values())} extra or duplicated; {shown}"
    assert len(got) == len(want)


def record_lines(
    out: Path, report: str = "opens", names: Iterable[str] | None = None
) -> list[bytes]:
    """Every line of the record files, each checked whole."""
    paths = [out / n for n in names] if names is not None else sorted(out.glob(f"{report}-*"))
    lines: list[bytes] = []
    for path in paths:
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), f"{path.name} ends with half a line"
        lines += data.splitlines()
    return lines


def activity(record: Mapping[str, Any]) -> Activity:
    """What a record of either path (activity_details, email reports) says: who, which
    campaign activity, what, when."""
    return (
        record["contact_id"],
        record["campaign_activity_id"],
        record["tracking_activity_type"],
        record["created_time"],
    )


def activities(records: Iterable[Mapping[str, Any] | bytes]) -> Counter[Activity]:
    return Counter(activity(json.loads(r) if isinstance(r, bytes) else r) for r in records)


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most of ``times`` in any window of ``window`` seconds."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best
