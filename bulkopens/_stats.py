"""Live counters of one run, and the immutable snapshots handed to progress hooks."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from bulkopens._types import RunStatus

# The HTTP status of the answer this task read last (set as it is counted): how the request
# metrics hook learns the status of an answer that the transport turned into an exception.
last_status: ContextVar[int | None] = ContextVar("bulkopens_last_status", default=None)


class StatusCounts(dict[int, int]):
    """Answers by HTTP status; counting one also notes it as this task's :data:`last_status`."""

    def __setitem__(self, status: int, count: int) -> None:
        last_status.set(status)
        super().__setitem__(status, count)


@dataclass(frozen=True, slots=True)
class RequestMetrics:
    """One request as the ``on_request`` hook sees it: safe to export to any metrics system.

    ``path`` is the URL path only (the query, which carries the API key, is never included);
    ``status`` the HTTP status of the answer, or None when there was none (a timeout, a reset);
    ``seconds`` from the moment the request went on the wire to its answer read; ``waited``
    the time it waited before that, for a slot and the pacer; ``error`` the name of the
    exception class the answer was turned into (``ThrottledError``, ``TransientError``,
    ``ContactNotFound``, ...), or None for a good answer.
    """

    path: str
    status: int | None
    seconds: float
    waited: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Counts:
    """What a run has done, counted once for every view of it: the live :class:`Stats`
    (:meth:`Stats.counts`), the :class:`Progress` a hook sees and the run's ``Summary`` are
    these counts and more. ``contacts_*`` count the work items: contacts, or campaigns when
    the run went by campaign (the name is public and stays)."""

    contacts_done: int = 0
    contacts_failed: int = 0
    contacts_skipped: int = 0  # already complete (or failed for good) in an earlier attempt
    contacts_invalid: int = 0
    duplicates: int = 0
    records: int = 0
    pages: int = 0
    requests: int = 0
    retries: int = 0
    throttles: int = 0

    @property
    def contacts_finished(self) -> int:
        return self.contacts_done + self.contacts_failed + self.contacts_skipped


#: The names of the counts, in order.
COUNTS = tuple(f.name for f in fields(Counts))


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress(Counts):
    """A snapshot of a run's counters, as given to ``on_progress``."""

    contacts_total: int | None  # known only when the input's size is known
    contacts_seen: int  # distinct valid ids taken from the input so far
    elapsed: float
    rate: float  # the pacer's current effective rate (inf when unlimited)
    finished: bool
    unit: str = "contacts"  # what the contacts_* counters count: contacts, or campaigns
    paused: float = 0.0  # seconds left in a pool-wide pause after a throttle (0: not paused)


@dataclass(slots=True)
class Stats:
    """Mutable counters, written only by the pipeline's own tasks: every :class:`Counts`
    field (a test holds the two to the same names), and what only a live run knows."""

    contacts_total: int | None = None
    contacts_seen: int = 0
    contacts_done: int = 0
    contacts_failed: int = 0
    contacts_skipped: int = 0
    contacts_invalid: int = 0
    duplicates: int = 0
    records: int = 0
    pages: int = 0
    requests: int = 0
    retries: int = 0
    throttles: int = 0
    responses: dict[int, int] = field(default_factory=StatusCounts)  # answers by HTTP status
    started: float = field(default_factory=time.monotonic)
    finished: bool = False
    unit: str = "contacts"

    def counts(self) -> dict[str, Any]:
        """The :class:`Counts` fields as they stand, by name (for a Progress or a Summary)."""
        return {name: getattr(self, name) for name in COUNTS}

    def snapshot(self, rate: float = float("inf"), paused: float = 0.0) -> Progress:
        return Progress(
            **self.counts(),
            contacts_total=self.contacts_total,
            contacts_seen=self.contacts_seen,
            elapsed=time.monotonic() - self.started,
            rate=rate,
            finished=self.finished,
            unit=self.unit,
            paused=paused,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary(Counts):
    """What one run (one call of export, or one iteration) did: its :class:`Counts`, and how
    it ended."""

    # complete | incomplete | interrupted | quota_exhausted | auth_failed | config_error |
    # output_error
    status: RunStatus
    report: str
    responses: dict[int, int]
    elapsed_seconds: float
    out_dir: str | None = None
    run: int | None = None
    attempt: int | None = None
    files: list[str] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)  # the whole run, across attempts
    error: str | None = None
    quota_resets_at: str | None = None
    mode: str = "contact"  # contact: reports of --contacts; campaign: reports of --campaigns
    strategy: str | None = None  # contact mode: auto | contact | campaign
    plan: dict[str, Any] | None = None  # the planner's estimate and choice (Plan.to_json)

    @property
    def unit(self) -> str:
        """What the ``contacts_*`` counts count: ``contacts``, or ``campaigns`` when the work
        items were campaigns (campaign mode, or the planner's campaign path)."""
        via = (self.plan or {}).get("path", self.mode)
        return "campaigns" if "campaign" in (self.mode, via) else "contacts"

    def to_json(self) -> dict[str, Any]:
        # How it ended first, then the counts (the order summary.json has always had).
        data = {"status": self.status, "report": self.report} | asdict(self)
        data["responses"] = {str(k): v for k, v in sorted(self.responses.items())}
        return data
