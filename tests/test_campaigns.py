"""Campaign mode and the planner, against the simulator over real loopback.

The simulator's contact and campaign views are built independently from the same seeded data,
so its ground truth (``truth()``, per contact) is also the union of its campaign reports. Records
are compared as multisets: nothing missing, nothing twice.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from simkit import unlimited_config, unpaced_client
from simproc import SimProcess, bulkopens, kill_once_it_writes, simulator

import bulkopens as bo
from bulkopens._campaigns import estimate_campaign_pages
from bulkopens.simulator import SimConfig, Simulator

KEY, TOKEN = "campaign-key-71d2", "campaign-token-0b9e"
SINCE = "2025-03-01T00:00:00Z"


def sim_config(**kw: Any) -> SimConfig:
    defaults: dict[str, Any] = {
        "seed": 9,
        "contacts": 240,
        "campaigns": 6,
        "heavy_fraction": 0.03,
    }
    return unlimited_config(KEY, TOKEN, **(defaults | kw))


SIM_CONFIG = sim_config()  # the sim fixture's (conftest.py)


def client(sim: Simulator, **kw: Any) -> bo.Client:
    return unpaced_client(sim, KEY, TOKEN, **kw)


def ids(first: int, last: int, step: int = 1) -> list[str]:
    return [str(i) for i in range(first, last + 1, step)]


def output(out: Path, report: str = "opens") -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(out.glob(f"{report}-*.ndjson"))
        for line in path.read_bytes().splitlines()
    ]


def multiset(records: Sequence[Mapping[str, Any]]) -> Counter[str]:
    return Counter(json.dumps(r, sort_keys=True) for r in records)


def assert_same(got: Sequence[Mapping[str, Any]], want: Sequence[Mapping[str, Any]]) -> None:
    g, w = multiset(got), multiset(want)
    assert g == w, f"{sum((w - g).values())} missing, {sum((g - w).values())} extra"
    assert want, "an empty comparison proves nothing"


def errors(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "errors.ndjson").read_text().splitlines()]


# -- campaign mode ----------------------------------------------------------------------------


@pytest.mark.parametrize("report", ["opens", "clicks", "sends"])
async def test_campaign_mode_writes_the_union_of_the_campaign_reports(
    sim: Simulator, tmp_path: Path, report: bo.CampaignReportName
) -> None:
    async with client(sim, page_size=97) as c:
        summary = await c.export_campaigns(bo.SENT, tmp_path, report=report)
    # every record of the account belongs to one sent campaign
    assert_same(output(tmp_path, report), sim.truth(report))
    assert summary.status == "complete"
    assert (summary.mode, summary.unit, summary.contacts_done) == ("campaign", "campaigns", 6)
    paths = [r.path for r in sim.request_log]
    assert all(p.startswith("/v2/emailmarketing/campaigns") for p in paths)
    assert paths.count("/v2/emailmarketing/campaigns") == 1  # the list, one page
    assert summary.requests == len(paths)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert (manifest["report"], manifest["mode"]) == (report, "campaign")


async def test_campaign_ids_from_a_list_with_404s_and_junk(sim: Simulator, tmp_path: Path) -> None:
    async with client(sim) as c:
        sent = await c.sent_campaigns()
        chosen = [sent[1], sent[4]]
        summary = await c.export_campaigns([*chosen, "0" + sent[1], "999", "x1"], tmp_path)
    want = [r for r in sim.truth("opens") if r["campaign_id"] in chosen]
    assert_same(output(tmp_path), want)
    assert len(sent) == 6
    assert summary.duplicates == 1
    assert sorted((e["campaign_id"], e["status"], e["error_key"]) for e in errors(tmp_path)) == [
        ("999", 404, "http.status.not_found"),
        ("x1", None, "bulkopens.invalid_campaign_id"),
    ]
    assert all("contact_id" not in e for e in errors(tmp_path))


async def test_campaign_mode_incremental_fetches_only_what_is_new(
    sim: Simulator, tmp_path: Path
) -> None:
    async with client(sim) as c:
        first = await c.export_campaigns(bo.SENT, tmp_path)
        added = sim.add_activity("17", "opens", 3) + sim.add_activity("18", "opens", 2)
        second = await c.export_campaigns(bo.SENT, tmp_path, incremental=True)
    assert first.run is not None
    assert second.run == first.run + 1
    new_files = [tmp_path / name for name in second.files]
    assert_same([json.loads(x) for p in new_files for x in p.read_bytes().splitlines()], added)
    assert_same(output(tmp_path), sim.truth("opens"))


async def test_campaign_iterator_and_refused_combinations(sim: Simulator) -> None:
    async with client(sim) as c:
        records = [r async for r in c.campaign_records(bo.SENT, report="forwards")]
        assert_same(records, sim.truth("forwards"))
        with pytest.raises(bo.ConfigurationError, match="contacts only"):
            c.campaign_records(bo.SENT, report="all")  # type: ignore[call-overload]
        with pytest.raises(bo.ConfigurationError, match="no campaign endpoint"):
            c.records(["1"], report="all", strategy="campaign")


# -- the planner: both paths give the same records ------------------------------------------


@pytest.mark.parametrize(("report", "since"), [("opens", SINCE), ("clicks", None)])
async def test_contact_and_campaign_strategies_write_the_same_records(
    sim: Simulator, tmp_path: Path, report: bo.ReportName, since: str | None
) -> None:
    wanted = ids(1, 240, 3)
    requested = [*wanted, "7", "0010", "99999", "x1"]  # duplicates, an unknown id, junk
    outs = {}
    async with client(sim, page_size=41) as c:
        for strategy in ("contact", "campaign"):
            outs[strategy] = tmp_path / strategy
            await c.export(requested, outs[strategy], report=report, since=since, strategy=strategy)
    by_contact, by_campaign = output(outs["contact"], report), output(outs["campaign"], report)
    assert multiset(by_contact) == multiset(by_campaign)
    assert_same(by_campaign, sim.truth(report, wanted, since=since))
    # the campaign path reports the junk line, keyed by contact, and its failures by campaign
    assert [e["contact_id"] for e in errors(outs["campaign"])] == ["x1"]
    assert sorted(e["contact_id"] for e in errors(outs["contact"])) == ["99999", "x1"]


async def test_auto_takes_the_campaign_path_for_many_contacts(
    sim: Simulator, tmp_path: Path
) -> None:
    plans: list[bo.Plan] = []
    wanted = ids(1, 240)
    async with client(sim, page_size=200, on_plan=plans.append) as c:
        summary = await c.export(wanted, tmp_path, strategy="auto")
        sent = await c.sent_campaigns()
    (plan,) = plans
    assert (plan.path, plan.contacts, plan.contact_cost, plan.campaigns) == (
        "campaign",
        240,
        240,
        6,
    )
    # the estimate is the documented formula over the summaries (opens: distinct openers)
    openers: dict[str, set[str]] = {cid: set() for cid in sent}
    for record in sim.truth("opens"):
        openers[record["campaign_id"]].add(record["contact_id"])
    pages = sum(max(1, math.ceil(len(people) / 200)) for people in openers.values())
    assert plan.campaign_cost == 1 + 6 + pages
    assert plan.spent == 1 + 6  # the list and the summaries
    assert plan.counted
    assert summary.plan is not None
    assert summary.plan["path"] == "campaign"
    assert summary.requests == plan.spent + summary.pages
    assert_same(output(tmp_path), sim.truth("opens", wanted))


async def test_auto_keeps_the_contact_path_for_few_contacts_without_summaries(
    sim: Simulator, tmp_path: Path
) -> None:
    async with client(sim) as c:
        plan = await c.plan(ids(1, 12))
        summary = await c.export(ids(1, 12), tmp_path, strategy="auto")
    assert plan.path == "contact"
    assert plan.campaign_cost is not None
    assert plan.campaign_cost > plan.contact_cost
    assert not plan.counted  # the list sufficed: 1 + 2 * 6 >= 12
    paths = [r.path for r in sim.request_log]
    assert not any(p.endswith("/reports/summary") for p in paths)
    assert paths.count("/v2/emailmarketing/campaigns") == 2  # once for plan(), once for export
    assert summary.requests == 1 + 12
    assert_same(output(tmp_path), sim.truth("opens", ids(1, 12)))


async def test_the_chosen_path_is_kept_and_other_settings_are_refused(
    sim: Simulator, tmp_path: Path
) -> None:
    wanted = ids(1, 240, 2)
    async with client(sim) as c:
        await c.export(wanted, tmp_path, strategy="auto")
        again = await c.export(list(reversed(wanted)), tmp_path, strategy="auto")
        assert again.plan is not None
        assert again.plan["resumed"]
        assert again.plan["path"] == "campaign"
        assert again.requests == 1  # the campaign list; every campaign is done
        assert again.contacts_skipped == 6
        for refused in (
            {"contact_ids": wanted, "strategy": "contact"},
            {"contact_ids": wanted, "strategy": "campaign"},
        ):
            with pytest.raises(bo.ConfigurationError, match="other settings"):
                await c.export(out_dir=tmp_path, **refused)  # type: ignore[arg-type]
        with pytest.raises(bo.ConfigurationError, match="other settings"):
            await c.export_campaigns(bo.SENT, tmp_path)
        # A contact may leave the list; one may not join it on the campaign path (its earlier
        # activity would be missed), and that is said in one clear message.
        smaller = await c.export(wanted[1:], tmp_path, strategy="auto")
        assert smaller.requests == 1
        with pytest.raises(bo.ConfigurationError, match="2 contacts were added to the list"):
            await c.export([*wanted, "999"], tmp_path, strategy="auto", incremental=True)
    assert_same(output(tmp_path), sim.truth("opens", wanted))


async def test_a_list_that_grows_joins_an_incremental_run_on_the_contact_path(
    sim: Simulator, tmp_path: Path
) -> None:
    async with client(sim) as c:
        first = await c.export(["1", "2"], tmp_path, strategy="auto")
        assert first.plan is not None
        assert first.plan["path"] == "contact"
        grown = await c.export(["1", "2", "3"], tmp_path, strategy="auto", incremental=True)
        assert grown.status == "complete"
        shrunk = await c.export(["2", "3"], tmp_path, strategy="auto", incremental=True)
        assert shrunk.status == "complete"
    assert_same(output(tmp_path), sim.truth("opens", ["1", "2", "3"]))


async def test_auto_iterator_uses_the_plan(sim: Simulator) -> None:
    async with client(sim) as c:
        stream = c.records(ids(1, 240), since=SINCE, strategy="auto")
        records = [r async for r in stream]
    assert stream.plan is not None
    assert stream.plan.path == "campaign"
    assert_same(records, sim.truth("opens", ids(1, 240), since=SINCE))


def test_estimate_of_report_pages() -> None:
    assert estimate_campaign_pages([0, 1, 500, 501, 1499], 500) == 1 + 1 + 1 + 2 + 3


# -- the command line: the plan is printed; usage errors -----------------------------------


@pytest.fixture(scope="module")
def proc_sim() -> Iterator[SimProcess]:
    with simulator("--contacts", "240", "--campaigns", "6", "--heavy-fraction", "0.03",
                   "--seed", "9", "--rate", "0", "--daily-quota", "0") as sim:  # fmt: skip
        yield sim


def test_cli_prints_the_plan_before_the_run(proc_sim: SimProcess, tmp_path: Path) -> None:
    contacts = tmp_path / "ids.txt"
    contacts.write_text("\n".join(ids(1, 240)) + "\n")
    out = tmp_path / "out"
    args = ["fetch", "--contacts", str(contacts), "--out", str(out), "--rate", "0"]
    result = bulkopens(*args, "--strategy", "auto", env=proc_sim.env(), timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "bulkopens: plan for the opens of 240 contacts (--strategy auto):"
    assert lines[1].startswith("  contact path:  >= 240 requests")
    assert lines[2].startswith("  campaign path: >= ")
    assert lines[3].startswith("  chosen: the campaign path (the cheaper); 7 requests spent")
    assert lines.index(lines[3]) < next(i for i, x in enumerate(lines) if "complete" in x)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["mode"], summary["strategy"], summary["plan"]["path"]) == (
        "contact",
        "auto",
        "campaign",
    )
    quiet = bulkopens(*args, "--strategy", "auto", "--quiet", env=proc_sim.env())
    assert (quiet.returncode, quiet.stderr) == (0, "")


@pytest.mark.parametrize(
    "extra",
    [
        ["--campaigns", "sent", "--strategy", "auto"],
        ["--campaigns", "sent", "--report", "all"],
        ["--contacts", "-", "--strategy", "campaign", "--report", "all"],
        ["--contacts", "-", "--campaigns", "sent"],
        ["--campaigns", "no-such-file.txt"],
    ],
    ids=["strategy-with-campaigns", "all-for-campaigns", "all-by-campaign", "both", "missing"],
)
def test_cli_usage_errors(proc_sim: SimProcess, tmp_path: Path, extra: list[str]) -> None:
    proc_sim.reset_stats()
    result = bulkopens(
        "fetch", "--out", str(tmp_path / "out"), *extra, env=proc_sim.env(), stdin="1\n"
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "error" in result.stderr
    assert proc_sim.stats()["requests"] == 0


# -- kill -9 in campaign mode, then finish: every record exactly once -------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "mode", [["--campaigns", "sent"], ["--strategy", "campaign"]], ids=["campaigns", "by-campaign"]
)
def test_sigkill_loop_in_campaign_mode(tmp_path: Path, mode: list[str]) -> None:
    rng = random.Random(7)
    faults = ("--error-rate", "0.02", "--reset-rate", "0.01", "--truncate-rate", "0.01")
    sim_args = ("--contacts", "300", "--campaigns", "8", "--heavy-fraction", "0.02",
                "--seed", "12", "--rate", "0", "--daily-quota", "0", "--latency-ms", "3",
                *faults)  # fmt: skip
    with simulator(*sim_args) as sim:
        wanted = ids(1, 300, 2)
        if mode[0] == "--strategy":
            contacts = tmp_path / "ids.txt"
            contacts.write_text("\n".join([*wanted, "junk"]) + "\n")
            mode = ["--contacts", str(contacts), *mode]
        out = tmp_path / "out"
        args = ["fetch", *mode, "--out", str(out), "--quiet", "--rate", "400", "--page-size", "50"]
        kills = sum(
            kill_once_it_writes(args, sim, rng, tmp_path / f"stderr-{attempt}.txt")
            for attempt in range(3)
        )
        final = bulkopens(*args, env=sim.env(), timeout=60)
        assert final.returncode == (0 if mode[0] == "--campaigns" else 1), final.stderr
        truth = sim.truth("opens")
        if mode[0] == "--contacts":
            keep = set(wanted)
            truth = [r for r in truth if r["contact_id"] in keep]
            assert [e["contact_id"] for e in errors(out)] == ["junk"]
        assert_same(output(out), truth)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "complete"
        assert summary["totals"]["done"] == 8
        manifest = json.loads((out / "manifest.json").read_text())
        (run,) = manifest["runs"]
        assert run["records"] == len(truth)
        # the kills landed mid-run, and the last attempt kept what the killed ones committed
        assert kills >= 2
        assert run["attempts"] == 4  # every attempt opened the state and wrote records
        assert summary["records"] < run["records"]
