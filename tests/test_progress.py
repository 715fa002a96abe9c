"""The progress line a person reads: it fits the terminal, and it counts in English."""

from __future__ import annotations

import io

from bulkopens._stats import Progress, Stats
from bulkopens.cli._output import ProgressReporter, plural


def snapshot(**counts: int) -> Progress:
    stats = Stats(contacts_total=123_456)
    for name, value in counts.items():
        setattr(stats, name, value)
    return stats.snapshot(4.0)


def test_the_line_fits_the_width_it_is_given_keeping_the_most_telling_parts() -> None:
    reporter = ProgressReporter(io.StringIO(), live=False)
    p = snapshot(contacts_done=65_432, records=9_876_543, retries=12, throttles=3)
    full = reporter.line(p)
    assert len(full) > 79
    fitted = reporter.line(p, width=79)
    assert len(fitted) <= 79
    assert fitted.startswith("65,432/123,456 contacts (53.0%) | ETA ")
    assert full.startswith(fitted)
    assert len(reporter.line(p, width=10)) <= 10


def test_counts_are_in_the_singular_for_one() -> None:
    assert plural(1, "retry", "retries") == "1 retry"
    assert plural(2, "retry", "retries") == "2 retries"
    assert plural(1_000, "request") == "1,000 requests"
    line = ProgressReporter(io.StringIO(), live=False).line(
        snapshot(records=1, retries=1, throttles=1)
    )
    assert "1 record |" in line
    assert "1 retry" in line
    assert "1 throttle" in line
    assert "retries" not in line


def test_while_paused_by_a_throttle_the_line_says_so_instead_of_an_eta() -> None:
    stats = Stats(contacts_total=100)
    stats.contacts_done = 10
    line = ProgressReporter(io.StringIO(), live=False).line(stats.snapshot(4.0, paused=2.4))
    assert "paused 2s (throttled)" in line
    assert "ETA" not in line
