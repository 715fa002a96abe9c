"""What one call fetches (a job), the one place a run is set up, and what the engine is fed.

A job is the contact reports of some contacts, by a strategy, or the campaign reports of some
campaigns. Every caller (``export`` and ``export_campaigns`` into files, the ``records``
iterators, ``plan``) sets up its run with :func:`open_run` (counters, the request path, the
contacts read whole when the planner needs them) and drives it into its sink with
:meth:`Run.drive`; :meth:`Run.summary` says what it did. :func:`feed` turns the job into the
engine's input: the ids of the work items, whose reports they name (contacts or campaigns),
and whose records to keep. For a planned job it runs the planner, or takes the path an
earlier attempt on the same ``--out`` chose.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio

from bulkopens._api import api_for
from bulkopens._campaigns import (
    ContactSet,
    Plan,
    campaign_items,
    make_plan,
    read_contacts,
    sent_campaigns,
)
from bulkopens._config import Settings
from bulkopens._exceptions import (
    AuthenticationError,
    BulkOpensError,
    ConfigurationError,
    OutputError,
    QuotaExhausted,
    RunStopped,
    ServiceUnavailable,
)
from bulkopens._pipeline import (
    IdSource,
    ProgressHook,
    RequestHook,
    RunOptions,
    build_fetcher,
    run_pipeline,
)
from bulkopens._ratelimit import Gate
from bulkopens._reports import REPORTS, Scope
from bulkopens._retry import PageFetcher
from bulkopens._state import AsyncStore
from bulkopens._stats import Stats, Summary
from bulkopens._types import SENT, STRATEGIES, RunStatus, Strategy
from bulkopens._writer import Sink
from bulkopens._xref import IdMapper

if TYPE_CHECKING:
    from bulkopens._wire import Wire

PlanHook = Callable[[Plan], None]

#: The status a run ends with for each run-stopping error.
_STATUS_BY_ERROR: list[tuple[type[RunStopped], RunStatus]] = [
    (QuotaExhausted, "quota_exhausted"),
    (AuthenticationError, "auth_failed"),
    (ConfigurationError, "config_error"),
    (ServiceUnavailable, "service_unavailable"),
    (OutputError, "output_error"),
]


def status_of(error: RunStopped) -> RunStatus:
    """The status a run stopped by ``error`` ends with."""
    return next(s for t, s in _STATUS_BY_ERROR if isinstance(error, t))


@dataclass(frozen=True, slots=True)
class Job:
    """What a call fetches: contact reports of ``ids`` (by ``strategy``), or campaign reports
    of ``ids`` (campaign ids, or SENT for the account's sent campaigns)."""

    mode: Literal["contact", "campaign"]
    ids: IdSource
    strategy: Strategy = "contact"

    def check(self, report: str, api: str = "v2") -> None:
        """ConfigurationError for a combination that cannot run: before any request, and
        before any state is opened (a refused command leaves ``--out`` as it was)."""
        if self.strategy not in STRATEGIES:
            raise ConfigurationError(
                f"unknown strategy {self.strategy!r}; one of {', '.join(STRATEGIES)}"
            )
        spec = REPORTS.get(report)
        if spec is None:
            return  # Settings says so
        api_for(api).check_report(spec, "campaign" if self.mode == "campaign" else "contact")
        if self.mode == "campaign" and not spec.for_campaigns:
            raise ConfigurationError(
                f"the {report} report exists for contacts only; campaigns have "
                f"{', '.join(n for n, r in REPORTS.items() if r.for_campaigns)}"
            )
        if self.strategy == "campaign" and not spec.plannable:
            if spec.paged:
                raise ConfigurationError(
                    f"the {report} report has no campaign endpoint; use --strategy contact or auto"
                )
            raise ConfigurationError(
                f"--strategy campaign does not apply to the {report} report (a contact's "
                "summary is not in the campaign reports); use --strategy contact"
            )

    @property
    def plans(self) -> bool:
        """Whether the planner runs (and so the contact ids are read whole first)."""
        return self.mode == "contact" and self.strategy != "contact"

    def fingerprint(self) -> dict[str, Any]:
        """What must not change between attempts on one --out, beyond report/since/base_url.
        Empty for the original contact mode, so its existing state stays valid. The set of
        contacts may change (a list that grows every night): see :func:`feed`."""
        extra: dict[str, Any] = {}
        if self.mode == "campaign":
            extra["mode"] = "campaign"
        if self.strategy != "contact":
            extra["strategy"] = self.strategy
        return extra


@dataclass(slots=True)
class Feed:
    """What the engine is fed once the job is planned."""

    ids: IdSource
    scope: Scope = "contact"  # whose reports the ids name
    keep: frozenset[str] | None = None  # write only these contacts' records
    plan: Plan | None = None


async def feed(
    job: Job,
    settings: Settings,
    fetcher: PageFetcher,
    stats: Stats,
    contacts: ContactSet | None,
    store: AsyncStore | None,
    on_plan: PlanHook | None,
) -> Feed:
    """Plan ``job`` (if it plans) and say what the engine is fed. ``contacts`` is the job's
    ids read whole (planned jobs only); ``store`` keeps the chosen path for later attempts
    (None for the iterators); ``on_plan`` is told the plan before anything is fetched.
    Requests go through ``fetcher`` and are counted in ``stats``."""
    api = api_for(settings.api)
    if job.mode == "campaign":
        stats.unit = "campaigns"
        if job.ids == SENT:
            listed = await sent_campaigns(fetcher, settings.base, api, settings.workers)
            stats.contacts_total = len(listed.items)
            return Feed(listed.items, "campaign")
        if api.items_are_campaigns:
            return Feed(job.ids, "campaign")
        return await _campaign_activities(job, settings, fetcher, stats, store)
    mapper = None
    if api.maps_older_ids:  # v2 ids on v3: mapped (xref), kept in the store
        mapper = IdMapper(api, fetcher, settings.base, store, "contact")
        if contacts is not None:
            contacts = await read_contacts(await mapper.map_list(contacts.raw), api)
    if contacts is None:
        return Feed(job.ids if mapper is None else mapper.ids(job.ids))
    kept: str | None = None
    if store is not None:
        kept = await store.call(store.sync.plan)
    if store is not None and kept == "campaign":
        await _check_added(store, contacts)
    plan = await plan_job(job, settings, fetcher, stats, contacts, kept)
    if store is not None and kept is None:
        await store.call(store.sync.save_plan, plan.path)
    if store is not None and plan.path == "campaign":
        await store.call(store.sync.save_planned_contacts, contacts.ids)
    if on_plan is not None:
        on_plan(plan)
    if plan.path == "contact":
        return Feed(contacts.raw, plan=plan)
    stats.unit = "campaigns"
    stats.contacts_total = len(plan.campaign_ids)
    if store is not None and contacts.invalid:
        await store.call(store.sync.add_invalid, contacts.invalid)
    return Feed(list(plan.campaign_ids), "campaign", contacts.ids, plan)


@dataclass(slots=True)
class Run:
    """One call's run, as :func:`open_run` set it up: drive it into a sink, then summarise."""

    settings: Settings
    job: Job
    gate: Gate
    fetcher: PageFetcher
    stats: Stats
    contacts: ContactSet | None  # the job's ids read whole (planned jobs only)
    on_plan: PlanHook | None = None
    on_progress: ProgressHook | None = None
    plan: Plan | None = None

    async def drive(
        self,
        sink: Sink,
        store: AsyncStore | None,
        *,
        retry_failed: bool = False,
        workers: int | None = None,
        credits: anyio.Semaphore | None = None,
    ) -> None:
        """Plan the job (if it plans), then fetch every work item into ``sink``. ``store``
        decides what each item needs (None: in memory, for an iterator); ``workers`` defaults
        to the gate's slots; ``credits`` bounds an iterator's read-ahead. Raises the first
        RunStopped error, or the caller's own error from the id source or a hook."""
        fed = await feed(
            self.job, self.settings, self.fetcher, self.stats, self.contacts, store, self.on_plan
        )
        self.plan = fed.plan
        options = RunOptions(
            since=self.settings.since,
            retry_failed=retry_failed,
            on_progress=self.on_progress,
            scope=fed.scope,
            keep=fed.keep,
            workers=workers or self.gate.slots,
            credits=credits,
        )
        await run_pipeline(
            self.settings, fed.ids, sink, store, self.stats, options, gate=self.gate,
            fetcher=self.fetcher,
        )  # fmt: skip

    def summary(self, status: RunStatus, error: BulkOpensError | None = None) -> Summary:
        """What the run did so far, ending with ``status`` (and ``error``)."""
        return summarise(self.settings, self.job, self.stats, self.plan, status, error)


def summarise(
    settings: Settings,
    job: Job,
    stats: Stats,
    plan: Plan | None,
    status: RunStatus,
    error: BulkOpensError | None = None,
) -> Summary:
    """The summary of a run of ``job`` whose counters are ``stats`` (also for a run that
    stopped before it was set up)."""
    snap = stats.snapshot()
    return Summary(
        **stats.counts(),
        status=status,
        report=settings.report,
        responses=dict(stats.responses),
        elapsed_seconds=round(snap.elapsed, 3),
        error=str(error) if error else None,
        quota_resets_at=(
            error.resets_at.strftime("%Y-%m-%dT%H:%M:%SZ")
            if isinstance(error, QuotaExhausted)
            else None
        ),
        mode=job.mode,
        strategy=job.strategy if job.mode == "contact" else None,
        plan=plan.to_json() if plan is not None else None,
    )


async def open_run(
    settings: Settings,
    job: Job,
    wire: Wire,
    gate: Gate,
    *,
    stats: Stats | None = None,
    on_request: RequestHook | None = None,
    on_plan: PlanHook | None = None,
    on_progress: ProgressHook | None = None,
) -> Run:
    """Set up one call's run: its counters (``stats``, or new ones), its request path through
    the client's ``gate``, and the job's ids read whole when the planner needs them (before
    any state is opened: an id source that fails leaves nothing behind)."""
    stats = stats if stats is not None else Stats()
    if job.mode == "campaign":
        stats.unit = "campaigns"
    fetcher = build_fetcher(settings, wire, gate, stats, on_request)
    contacts = await read_contacts(job.ids, api_for(settings.api)) if job.plans else None
    return Run(settings, job, gate, fetcher, stats, contacts, on_plan, on_progress)


async def _campaign_activities(
    job: Job, settings: Settings, fetcher: PageFetcher, stats: Stats, store: AsyncStore | None
) -> Feed:
    """v3 ``--campaigns FILE``: a campaign's reports are its activities' (the primary send and
    the resends); a v2 campaign id maps (xref) to the one activity that was that campaign."""
    api = api_for(settings.api)
    asked = await read_contacts(job.ids, api)  # a campaign list: small, read whole
    raw = [r for r in asked.raw if isinstance(r, str)]
    old = {r: v2 for r in raw if api.parse_id(r) is None and (v2 := api.foreign_id(r))}
    bad = [r for r in raw if api.parse_id(r) is None and r not in old]
    if bad:
        raise ConfigurationError(
            f"{len(bad):,} line(s) are not campaign ids ({api.id_example('campaign')}, or a v2 "
            f"campaign id), e.g. {bad[0][:40]!r}"
        )
    mapped: dict[str, str | None] = {}
    if old:
        mapper = IdMapper(api, fetcher, settings.base, store, "campaign")
        mapped = await mapper.resolve(list(old.values()))
        missing = [v2 for v2, v3 in mapped.items() if v3 is None]
        if missing:
            raise ConfigurationError(
                f"{len(missing):,} v2 campaign id(s) have no v3 counterpart, e.g. {missing[0]}"
            )
    campaigns = [i for i in dict.fromkeys(api.parse_id(r, "campaign") for r in raw) if i]
    listed = await campaign_items(fetcher, settings.base, campaigns, api, settings.workers)
    items = list(dict.fromkeys([*(v for v in mapped.values() if v), *listed.items]))
    stats.contacts_total = len(items)
    return Feed(items, "campaign")


async def _check_added(store: AsyncStore, contacts: ContactSet) -> None:
    """On the campaign path, contacts may leave the list (they are simply not kept) but not
    join it: each campaign is asked only for what is new since the last run, so a joining
    contact's earlier activity would be missed without a word. The contact path has no such
    limit (a new contact is fetched whole), so it never comes here."""
    before = await store.call(store.sync.planned_contacts)
    if before is None:  # an --out of an earlier version: its settings held the set's digest
        digest = await store.call(store.sync.contacts_digest)
        if digest is None or digest == contacts.digest():
            return
        before = frozenset()  # which ones joined is unknown: all of them, for the message
    added = len(contacts.ids - before)
    if added:
        raise ConfigurationError(
            f"{added:,} contact{'s were' if added != 1 else ' was'} added to the list since this "
            "--out's first run, which took the campaign path (each campaign is asked only for "
            "what is new, so their earlier activity would be missed): fetch them into their "
            "own --out, or start this one over with --fresh"
        )


async def plan_job(
    job: Job,
    settings: Settings,
    fetcher: PageFetcher,
    stats: Stats,
    contacts: ContactSet,
    kept: str | None = None,
) -> Plan:
    """The planner's choice for ``job``, with the requests it spent (``fetcher`` counts its
    requests in ``stats``). ``kept``: the path an earlier attempt chose, if any."""
    before = stats.requests
    plan = await make_plan(
        fetcher,
        settings.base,
        settings.report_spec,
        len(contacts.ids),
        job.strategy,
        page_size=settings.page_size,
        concurrency=settings.workers,
        kept_path="campaign" if kept == "campaign" else "contact" if kept else None,
        api=api_for(settings.api),
    )
    return dataclasses.replace(plan, spent=stats.requests - before)
