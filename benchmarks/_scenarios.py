"""The six scenarios. Each starts its simulator(s), runs the contenders round-robin and returns
the raw runs; the numbers are derived in _report.py.

Alternation: in round ``r`` the contenders run in the order rotated by ``r``, back to back
against the same simulator, so slow drift of the shared machine hits every contender alike;
the report takes medians over rounds and, for ratios, the median of the per-round ratios.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._harness import (
    CONTENDERS,
    HAS_UVLOOP,
    Run,
    RunOptions,
    Simulator,
    run_contender,
    write_contacts,
)


@dataclass(frozen=True, slots=True)
class Plan:
    """How big each scenario is: ``full`` and ``quick`` below."""

    name: str
    rate_rounds: int
    rate_cases: tuple[tuple[float, int], ...]  # (limit per second, requests per run)
    latencies_ms: tuple[int, ...]
    sdk_deadline: float  # the sequential SDK loop is stopped after this; measured over a prefix
    speed_rounds: int
    one_record_contacts: int  # --page-size 1, ~19 pages per contact
    full_page_contacts: int  # --page-size 500, heavy contacts, ~4 pages of 500 per contact
    memory_sizes: tuple[int, ...]
    memory_deadline: float  # a memory run is stopped after this; RSS is measured until then
    fault_rounds: int
    fault_contacts: int
    concurrency: int = 16  # unthrottled runs: bulkopens' default for --rate 0, for everyone
    whole_rounds: int = 8
    whole_contacts: int = 3000  # 0-20 opens each: one page per contact
    paced_rounds: int = 3
    paced_requests: int = 600  # one page per contact, 30 s at 20/s
    paced_limit: float = 20.0
    paced_latency_ms: int = 300


FULL = Plan(
    name="full",
    rate_rounds=3,
    rate_cases=((4.0, 40), (10.0, 60)),
    latencies_ms=(0, 150, 300, 1000),
    sdk_deadline=6.0,
    speed_rounds=8,
    one_record_contacts=400,
    full_page_contacts=150,
    memory_sizes=(10_000, 100_000, 1_000_000),
    memory_deadline=100.0,
    fault_rounds=3,
    fault_contacts=300,
)

QUICK = Plan(
    name="quick",
    rate_rounds=1,
    rate_cases=((10.0, 30),),
    latencies_ms=(0, 300),
    sdk_deadline=3.0,
    speed_rounds=1,
    one_record_contacts=100,
    full_page_contacts=40,
    memory_sizes=(10_000, 100_000, 1_000_000),
    memory_deadline=6.0,
    fault_rounds=1,
    fault_contacts=100,
    whole_rounds=2,
    paced_rounds=1,
    paced_requests=200,
)


def rotations(keys: Sequence[str], rounds: int) -> Iterator[tuple[int, str]]:
    """(round, contender) in round-robin order, each round starting one further along."""
    for r in range(rounds):
        for i in range(len(keys)):
            yield r, keys[(r + i) % len(keys)]


def log(message: str) -> None:
    print(message, flush=True)


def _brief(run: Run) -> str:
    p = run.proc
    extra = " (stopped at deadline)" if p.stopped else ""
    retries = run.counts.get("retries")
    return (
        f"{run.contender:6} {p.wall:6.2f}s wall, {p.cpu:6.2f}s cpu, {p.maxrss_mb:6.1f} MB, "
        f"{run.sim.requests} req, {run.sim.throttles} throttled, {retries} retries{extra}"
    )


# -- 1. rate-limited --------------------------------------------------------------------------


@dataclass(slots=True)
class RateCase:
    limit: float
    latency_ms: int
    requests: int  # contacts of one page each: one request per contact
    sdk_deadline: float
    runs: dict[str, list[Run]] = field(default_factory=dict)


RATE_CONTENDERS = ("a-cli", "c", "b")


def rate_limited(plan: Plan, work: Path, logs: Path) -> list[RateCase]:
    """Simulator at --rate L, latency 0..1000 ms (jitter 10%); every client at --rate L."""
    cases = []
    for limit, requests in plan.rate_cases:
        contacts = write_contacts(work / f"contacts-{requests}.txt", range(1, requests + 1))
        concurrency = max(4, min(64, int(limit * 2) + 2))  # bulkopens' default, for everyone
        for latency in plan.latencies_ms:
            case = RateCase(limit, latency, requests, plan.sdk_deadline)
            cases.append(case)
            log(f"[1] limit {limit:g}/s, latency {latency} ms: {requests} requests per run")
            sim_args = [
                "--contacts", "1000", "--heavy-fraction", "0",  # one page per contact
                "--rate", f"{limit:g}", "--daily-quota", "0",
                "--latency-ms", str(latency), "--jitter-ms", f"{latency * 0.1:g}",
            ]  # fmt: skip
            with Simulator(sim_args, logs) as sim:
                ready = 0.0
                for _, key in rotations(RATE_CONTENDERS, plan.rate_rounds):
                    wait = ready - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    deadline = plan.sdk_deadline if key == "b" else None
                    opts = RunOptions(rate=limit, concurrency=concurrency, deadline=deadline)
                    run = run_contender(sim, CONTENDERS[key], contacts, opts, work)
                    case.runs.setdefault(key, []).append(run)
                    log(f"    {_brief(run)}")
                    # Before the next run: the simulator's 1-second window must be clear of this
                    # run's requests, and a request still in flight when a run was stopped must
                    # have been answered (the simulator logs it then), or it would count against
                    # the next run.
                    ready = time.monotonic() + latency * 1.1 / 1000 + 0.1
                    if run.sim.request_times:
                        ready = max(ready, run.sim.request_times[-1] + 1.05)
    return cases


# -- 2. unthrottled ---------------------------------------------------------------------------


@dataclass(slots=True)
class SpeedCase:
    name: str
    page_size: int
    contacts: int
    truth_records: int = 0
    runs: dict[str, list[Run]] = field(default_factory=dict)
    # The same contender on one contact, just before each measured run: its fixed cost
    # (interpreter start-up, imports, opening the state, the final commit).
    baselines: dict[str, list[Run]] = field(default_factory=dict)


SPEED_CONTENDERS = ("a-lib", *(("a-uv",) if HAS_UVLOOP else ()), "a-cli", "c", "d", "b")


def unthrottled(plan: Plan, work: Path, logs: Path) -> list[SpeedCase]:
    """Simulator without limits; 1-record pages and 500-record pages."""
    setups = [
        (SpeedCase("1-record pages", 1, plan.one_record_contacts), "0"),
        (SpeedCase("500-record pages", 500, plan.full_page_contacts), "1"),
    ]
    for case, heavy in setups:
        contacts = write_contacts(
            work / f"contacts-{case.contacts}.txt", range(1, case.contacts + 1)
        )
        one_contact = write_contacts(work / "contacts-1.txt", range(1, 2))
        sim_args = [
            "--contacts", "100000", "--heavy-fraction", heavy, "--rate", "0",
            "--daily-quota", "0",
        ]  # fmt: skip
        with Simulator(sim_args, logs) as sim:
            ids = [str(i) for i in range(1, case.contacts + 1)]
            case.truth_records = sim.truth_count(ids)
            opts = RunOptions(rate=0, concurrency=plan.concurrency, page_size=case.page_size)
            warm = run_contender(sim, CONTENDERS["d"], contacts, opts, work)  # fills the caches
            log(
                f"[2] {case.name}: {case.contacts} contacts, {warm.sim.ok} pages, "
                f"{case.truth_records} records"
            )
            for _, key in rotations(SPEED_CONTENDERS, plan.speed_rounds):
                base = run_contender(sim, CONTENDERS[key], one_contact, opts, work)
                case.baselines.setdefault(key, []).append(base)
                run = run_contender(sim, CONTENDERS[key], contacts, opts, work)
                case.runs.setdefault(key, []).append(run)
                log(f"    {_brief(run)}; start-up run {base.proc.cpu:.2f}s cpu")
    return [case for case, _ in setups]


# -- 3. memory --------------------------------------------------------------------------------


@dataclass(slots=True)
class MemoryCase:
    contacts: int
    deadline: float
    run: Run | None = None


def memory(plan: Plan, work: Path, logs: Path) -> list[MemoryCase]:
    """Peak RSS of the CLI for 10k, 100k and 1M ids, 99% of them with an empty report."""
    cases = [MemoryCase(n, plan.memory_deadline) for n in plan.memory_sizes]
    sim_args = [
        "--contacts", str(max(plan.memory_sizes)), "--empty-fraction", "0.99",
        "--heavy-fraction", "0", "--rate", "0", "--daily-quota", "0",
    ]  # fmt: skip
    with Simulator(sim_args, logs) as sim:
        for case in cases:
            contacts = write_contacts(
                work / f"contacts-{case.contacts}.txt", range(1, case.contacts + 1)
            )
            opts = RunOptions(
                rate=0, concurrency=plan.concurrency, deadline=case.deadline, sample_rss=True
            )
            log(f"[3] {case.contacts:,} contact ids (stopped after {case.deadline:g} s at most)")
            case.run = run_contender(sim, CONTENDERS["a-cli"], contacts, opts, work)
            log(f"    {_brief(case.run)}, {case.run.counts.get('contacts_done', '?')} done")
    return cases


# -- 4. faults --------------------------------------------------------------------------------


@dataclass(slots=True)
class FaultCase:
    contacts: int
    page_size: int
    truth_records: int = 0
    clean: dict[str, list[Run]] = field(default_factory=dict)
    faulty: dict[str, list[Run]] = field(default_factory=dict)


FAULT_CONTENDERS = ("a-cli", "c")
FAULTS = ("--error-rate", "0.10", "--reset-rate", "0.02")


def faults(plan: Plan, work: Path, logs: Path) -> FaultCase:
    """10% 5xx answers and 2% connection resets, against the same run without faults."""
    case = FaultCase(plan.fault_contacts, page_size=100)
    contacts = write_contacts(work / f"contacts-{case.contacts}.txt", range(1, case.contacts + 1))
    base = [
        "--contacts", "100000", "--heavy-fraction", "0.02", "--rate", "0", "--daily-quota", "0",
    ]  # fmt: skip
    opts = RunOptions(rate=0, concurrency=plan.concurrency, page_size=case.page_size)
    with Simulator(base, logs) as clean_sim, Simulator([*base, *FAULTS], logs) as faulty_sim:
        case.truth_records = clean_sim.truth_count([str(i) for i in range(1, case.contacts + 1)])
        log(f"[4] faults: {case.contacts} contacts, {case.truth_records} records")
        for r, key in rotations(FAULT_CONTENDERS, plan.fault_rounds):
            sims = [("clean", clean_sim), ("faulty", faulty_sim)]
            for kind, sim in sims if r % 2 == 0 else sims[::-1]:
                run = run_contender(sim, CONTENDERS[key], contacts, opts, work)
                target = case.clean if kind == "clean" else case.faulty
                target.setdefault(key, []).append(run)
                log(f"    {kind:6} {_brief(run)}, {run.lines} lines")
    return case


# -- 5. whole process -------------------------------------------------------------------------


@dataclass(slots=True)
class WholeCase:
    contacts: int
    truth_records: int = 0
    runs: dict[str, list[Run]] = field(default_factory=dict)


WHOLE_CONTENDERS = ("a-cmd", "a-cmd-asyncio", "c", "d")
WHOLE_CONCURRENCY = 32
#: An account whose contacts have 0-20 opens each (no heavy one): a page per contact.
WHOLE_SIM_ARGS = (
    "--contacts", "100000", "--heavy-fraction", "0", "--rate", "0", "--daily-quota", "0",
)  # fmt: skip


def whole(plan: Plan, work: Path, logs: Path) -> WholeCase:
    """The installed command from exec to exit (start-up, dispatch, every contact's
    bookkeeping, the last commit, teardown) on many one-page contacts, unthrottled, against
    the hand-written client and the raw loop, alternating."""
    case = WholeCase(plan.whole_contacts)
    contacts = write_contacts(work / f"contacts-{case.contacts}.txt", range(1, case.contacts + 1))
    opts = RunOptions(rate=0, concurrency=WHOLE_CONCURRENCY)
    with Simulator(WHOLE_SIM_ARGS, logs) as sim:
        case.truth_records = sim.truth_count([str(i) for i in range(1, case.contacts + 1)])
        warm = run_contender(sim, CONTENDERS["d"], contacts, opts, work)  # fills the caches
        log(f"[5] whole process: {case.contacts} contacts, {warm.sim.ok} pages")
        for _, key in rotations(WHOLE_CONTENDERS, plan.whole_rounds):
            run = run_contender(sim, CONTENDERS[key], contacts, opts, work)
            case.runs.setdefault(key, []).append(run)
            log(f"    {_brief(run)}, {run.proc.switches} switches")
    return case


# -- 6. paced, with latency -------------------------------------------------------------------


@dataclass(slots=True)
class PacedCase:
    limit: float
    latency_ms: int
    requests: int  # contacts of one page each: one request per contact
    concurrency: int
    runs: dict[str, list[Run]] = field(default_factory=dict)


PACED_CONTENDERS = ("a-cmd", "c")


def paced(plan: Plan, work: Path, logs: Path) -> PacedCase:
    """The installed command from exec to exit under a rate limit with latency (20/s, 300 ms):
    utilisation of the limit over the whole process, start-up and the last answer counted."""
    limit, latency = plan.paced_limit, plan.paced_latency_ms
    concurrency = max(4, min(64, int(limit * 2) + 2))  # bulkopens' default, for everyone
    case = PacedCase(limit, latency, plan.paced_requests, concurrency)
    contacts = write_contacts(work / f"paced-{case.requests}.txt", range(1, case.requests + 1))
    sim_args = [
        "--contacts", str(max(1000, case.requests)), "--heavy-fraction", "0",
        "--rate", f"{limit:g}", "--daily-quota", "0",
        "--latency-ms", str(latency), "--jitter-ms", f"{latency * 0.1:g}",
    ]  # fmt: skip
    log(f"[6] paced: limit {limit:g}/s, latency {latency} ms, {case.requests} requests per run")
    with Simulator(sim_args, logs) as sim:
        ready = 0.0
        for _, key in rotations(PACED_CONTENDERS, plan.paced_rounds):
            wait = ready - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # the simulator's window clear of the last run's requests
            opts = RunOptions(rate=limit, concurrency=concurrency)
            run = run_contender(sim, CONTENDERS[key], contacts, opts, work)
            case.runs.setdefault(key, []).append(run)
            log(f"    {_brief(run)}")
            ready = time.monotonic() + latency * 1.1 / 1000 + 0.1
            if run.sim.request_times:
                ready = max(ready, run.sim.request_times[-1] + 1.05)
    return case
