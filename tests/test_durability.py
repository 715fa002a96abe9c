"""Durability of the batch job: kill -9 loops, cursor resume, Ctrl-C, re-runs, daily sync.

Every test runs the real ``bulkopens fetch`` command in a subprocess against the simulator in
another subprocess (``simproc``) and checks the README's contract ("Resume, exactly once,
interruption" and "Daily sync: --incremental") with counts and equality only: the union of
the record files equals the simulator's ground truth as a multiset, every line is whole JSON,
and the artifacts (``summary.json``, ``errors.ndjson``, ``manifest.json``) agree with it.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from simproc import SimProcess, bulkopens, simulator

SIM_LIMITS = ("--rate", "0", "--daily-quota", "0")
FAULTS = ("--error-rate", "0.05", "--reset-rate", "0.02", "--truncate-rate", "0.02")
UNKNOWN_IDS = ("401", "999999")  # the kill loop's simulator has contacts 1..400
JUNK = ("abc", "12x", "-5")


# -- helpers --------------------------------------------------------------------------------


def _key(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


def _multiset(records: Iterable[dict[str, Any]]) -> Counter[str]:
    return Counter(_key(r) for r in records)


def _diff(got: Counter[str], want: Counter[str]) -> str:
    missing, extra = want - got, got - want
    return (
        f"{sum(missing.values())} missing, {sum(extra.values())} extra/duplicated; "
        f"e.g. missing {list(missing)[:2]}, extra {list(extra)[:2]}"
    )


def _assert_same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    g, w = _multiset(got), _multiset(want)
    assert g == w, _diff(g, w)
    assert len(got) == len(want)


def _record_files(out: Path, report: str = "opens") -> list[Path]:
    return sorted(out.glob(f"{report}-*.ndjson"))


def _read_strict(path: Path) -> list[dict[str, Any]]:
    """Every line of an NDJSON file: each one whole (newline-terminated) and a JSON object."""
    data = path.read_bytes()
    if not data:
        return []
    assert data.endswith(b"\n"), f"{path.name} ends with half a line"
    out = []
    for number, line in enumerate(data.split(b"\n")[:-1], 1):
        try:
            value = json.loads(line)
        except ValueError:
            pytest.fail(f"{path.name} line {number} is not JSON: {line[:120]!r}")
        assert isinstance(value, dict), f"{path.name} line {number} is not an object"
        out.append(value)
    return out


def _output(out: Path, report: str = "opens") -> list[dict[str, Any]]:
    """The union of every record file in ``out``, each line checked to be whole JSON."""
    return [r for path in _record_files(out, report) for r in _read_strict(path)]


def _truth(
    sim: SimProcess, ids: Iterable[str], report: str = "opens", since: str | None = None
) -> list[dict[str, Any]]:
    wanted = set(ids)
    return [r for r in sim.truth(report, since) if r["contact_id"] in wanted]


def _json(out: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / name).read_text())
    return data


def _errors(out: Path) -> list[dict[str, Any]]:
    return _read_strict(out / "errors.ndjson")


def _fetch_args(contacts: Path, out: Path, *extra: str) -> list[str]:
    return ["fetch", "--contacts", str(contacts), "--out", str(out), "--quiet", *extra]


def _run(args: list[str], sim: SimProcess, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return bulkopens(*args, env=sim.env(), timeout=timeout)


class _Fetch:
    """``bulkopens fetch`` started in the background, its stderr kept in a file."""

    def __init__(self, args: list[str], sim: SimProcess, stderr: Path) -> None:
        self.stderr_path = stderr
        self._err = open(stderr, "w")  # noqa: SIM115 (closed in wait)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bulkopens", *args],
            env=sim.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._err,
        )

    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._err.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()


def _lines_in(out: Path) -> int:
    total = 0
    for path in _record_files(out):
        try:
            total += path.read_bytes().count(b"\n")
        except FileNotFoundError:
            continue
    return total


def _wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _write_contacts(path: Path, ids: Iterable[int], *, rng: random.Random | None = None,
                    unknown: Iterable[str] = (), junk: Iterable[str] = ()) -> Path:  # fmt: skip
    """A contacts file: a comment, the ids (shuffled if ``rng``), a few duplicates in other
    spellings (leading zeros, whitespace), unknown ids, junk lines and a blank line."""
    lines = [str(i) for i in ids]
    if rng is not None:
        rng.shuffle(lines)
    dupes = [f"  {lines[0]}  ", "000" + lines[1]] if len(lines) > 1 else []
    body = ["# contacts export", *lines, *dupes, "", *unknown, *junk]
    path.write_text("\n".join(body) + "\n")
    return path


def _check_manifest_files(out: Path, manifest: dict[str, Any]) -> None:
    """Every record file on disk is in the manifest, with its real size and line count."""
    listed = {f["name"]: f for run in manifest["runs"] for f in run["files"]}
    on_disk = {p.name for p in _record_files(out, manifest["report"])}
    assert set(listed) == on_disk
    for name, entry in listed.items():
        path = out / name
        assert entry["bytes"] == path.stat().st_size, name
        assert entry["records"] == len(_read_strict(path)), name
    for run in manifest["runs"]:
        assert run["records"] == sum(f["records"] for f in run["files"])


def _window(records: list[dict[str, Any]], field: str = "open_date") -> tuple[str, str]:
    stamps = sorted(r[field] for r in records)
    return stamps[0], stamps[-1]


@pytest.fixture(scope="module")
def clean_sim() -> Iterator[SimProcess]:
    """A fault-free, unlimited simulator shared by the tests that do not change its data."""
    with simulator("--contacts", "200", "--heavy-fraction", "0.05", "--seed", "5",
                   *SIM_LIMITS) as sim:  # fmt: skip
        yield sim


# -- 1. kill -9 at random moments, then finish: every record exactly once -------------------


@pytest.mark.slow
@pytest.mark.timeout(100)
@pytest.mark.parametrize("seed", [8, 23])
def test_sigkill_loop_writes_every_record_exactly_once(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    sim_args = ("--contacts", "400", "--heavy-fraction", "0.02", "--latency-ms", "5",
                "--jitter-ms", "5", "--seed", str(seed), *SIM_LIMITS, *FAULTS)  # fmt: skip
    with simulator(*sim_args) as sim:
        ids = [str(i) for i in range(1, 401)]
        contacts = _write_contacts(
            tmp_path / "contacts.txt", range(1, 401), rng=rng, unknown=UNKNOWN_IDS, junk=JUNK
        )
        out = tmp_path / "out"
        args = _fetch_args(contacts, out, "--rate", "300", "--page-size", "50")
        kills = 0
        for attempt in range(6):
            fetch = _Fetch(args, sim, tmp_path / f"stderr-{attempt}.txt")
            time.sleep(rng.uniform(0.2, 1.5))
            if fetch.running():
                fetch.signal(signal.SIGKILL)
                kills += 1
            code = fetch.wait(timeout=30)
            assert code in (-signal.SIGKILL, 0, 1), fetch.stderr()

        final = _run(args, sim, timeout=60)
        assert final.returncode == 1, final.stderr  # done, with 404s and junk in errors.ndjson
        assert "Traceback" not in final.stderr

        # Every record exactly once: nothing missing, nothing twice, no half line anywhere.
        _assert_same(_output(out), _truth(sim, ids))

        # errors.ndjson: exactly the unknown ids (404, for good) and the junk lines.
        errors = _errors(out)
        assert sorted((e["contact_id"], e["status"], e["retryable"]) for e in errors) == sorted(
            [(i, 404, False) for i in UNKNOWN_IDS] + [(j, None, False) for j in JUNK]
        )

        summary = _json(out, "summary.json")
        assert summary["status"] == "complete"
        assert summary["totals"] == {
            "pending": 0,
            "done": 400,
            "failed": 0,
            "failed_for_good": len(UNKNOWN_IDS),
            "invalid": len(JUNK),
        }
        manifest = _json(out, "manifest.json")
        assert len(manifest["runs"]) == 1
        run = manifest["runs"][0]
        assert run["complete"]
        assert run["records"] == len(_truth(sim, ids))
        _check_manifest_files(out, manifest)

        # The kills landed mid-run: attempts before the last one opened the state and
        # committed work that the last attempt kept instead of fetching it again.
        assert kills >= 3
        assert run["attempts"] >= 2, "no kill landed after the run had started"
        assert summary["attempt"] == run["attempts"]
        assert summary["contacts_skipped"] > 0
        assert summary["records"] < run["records"]


# -- 2. a contact with thousands of pages resumes from its cursor ---------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_kill_mid_contact_resumes_from_the_committed_cursor(
    tmp_path: Path, clean_sim: SimProcess
) -> None:
    sim = clean_sim
    per_contact = Counter(r["contact_id"] for r in sim.truth())
    heavy, total = max(per_contact.items(), key=lambda item: (item[1], item[0]))
    assert total > 1000, "the simulator should have a heavy contact"
    page_size = 20
    total_pages = -(-total // page_size)
    contacts = _write_contacts(tmp_path / "contacts.txt", [int(heavy)])
    out = tmp_path / "out"
    args = _fetch_args(contacts, out, "--rate", "40", "--page-size", str(page_size))

    fetch = _Fetch(args, sim, tmp_path / "stderr.txt")
    try:
        # Kill -9 once at least 40% of the contact's records are on disk (flushed at a commit).
        _wait_until(
            lambda: _lines_in(out) >= total * 0.4 or not fetch.running(), 30, "40% of the pages"
        )
        assert fetch.running(), "the contact finished before the kill; slow the fetch down"
        fetch.signal(signal.SIGKILL)
    finally:
        fetch.kill()
    seen_at_kill = _lines_in(out)
    assert seen_at_kill < total

    sim.reset_stats()
    again = _run(args, sim)
    assert again.returncode == 0, again.stderr
    summary = _json(out, "summary.json")
    assert summary["status"] == "complete"
    assert summary["attempt"] == 2
    # It went on from the cursor: only the pages after the committed ones were requested.
    assert summary["requests"] == sim.stats()["requests"]
    assert summary["pages"] == summary["requests"]
    # (lines on disk at the kill may run one commit batch, ~0.2-1 s of pages, past the commit)
    assert summary["pages"] <= total_pages - seen_at_kill // page_size + 25
    assert summary["pages"] < total_pages * 0.7
    assert summary["records"] < total
    _assert_same(_output(out), _truth(sim, [heavy]))
    _check_manifest_files(out, _json(out, "manifest.json"))


# -- 3. Ctrl-C: commit what is written, exit 130, resume exactly --------------------------


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[SimProcess]:
    """Answers take 100 ms: a run at --rate 5 is far from done after a couple of seconds."""
    with simulator("--contacts", "200", "--heavy-fraction", "0.02", "--seed", "4",
                   "--latency-ms", "100", *SIM_LIMITS) as sim:  # fmt: skip
        yield sim


def _start_slow_and_wait(args: list[str], sim: SimProcess, stderr: Path, out: Path) -> _Fetch:
    """Start a slow fetch; return once ~1.5 s have passed and records are on their way."""
    fetch = _Fetch(args, sim, stderr)
    _wait_until(lambda: _record_files(out) or not fetch.running(), 20, "the first record file")
    time.sleep(max(0.0, fetch.started + 1.5 - time.monotonic()))
    assert fetch.running(), fetch.stderr()
    return fetch


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sigint_commits_exits_130_and_resumes_exactly(tmp_path: Path, slow_sim: SimProcess) -> None:
    sim = slow_sim
    ids = [str(i) for i in range(1, 201)]
    truth = _truth(sim, ids)
    contacts = _write_contacts(tmp_path / "contacts.txt", range(1, 201))
    out = tmp_path / "out"
    fetch = _start_slow_and_wait(
        _fetch_args(contacts, out, "--rate", "5"), sim, tmp_path / "stderr.txt", out
    )
    try:
        fetch.signal(signal.SIGINT)
        code = fetch.wait(timeout=30)
    finally:
        fetch.kill()
    stderr = fetch.stderr()
    assert code == 130, stderr
    assert "Traceback" not in stderr
    summary = _json(out, "summary.json")
    assert summary["status"] == "interrupted"
    assert summary["totals"]["pending"] > 0

    # The committed state is consistent: whole lines, a subset of the truth, nothing twice.
    partial = _output(out)
    got, want = _multiset(partial), _multiset(truth)
    assert not got - want, _diff(got, want)
    assert len(partial) < len(truth)
    manifest = _json(out, "manifest.json")
    _check_manifest_files(out, manifest)
    assert manifest["runs"][0]["records"] == len(partial)
    assert not manifest["runs"][0]["complete"]

    # The same command again (any --rate) finishes it, exactly once.
    again = _run(_fetch_args(contacts, out, "--rate", "0", "--concurrency", "32"), sim)
    assert again.returncode == 0, again.stderr
    _assert_same(_output(out), truth)
    assert _json(out, "summary.json")["status"] == "complete"


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_double_sigint_exits_130_at_once_and_resumes_exactly(
    tmp_path: Path, slow_sim: SimProcess
) -> None:
    sim = slow_sim
    ids = [str(i) for i in range(1, 201)]
    contacts = _write_contacts(tmp_path / "contacts.txt", range(1, 201))
    out = tmp_path / "out"
    fetch = _start_slow_and_wait(
        _fetch_args(contacts, out, "--rate", "5"), sim, tmp_path / "stderr.txt", out
    )
    try:
        fetch.signal(signal.SIGINT)
        time.sleep(0.05)
        if fetch.running():
            fetch.signal(signal.SIGINT)
        code = fetch.wait(timeout=10)
    finally:
        fetch.kill()
    # 130 from the second signal's immediate exit or from the first one's clean stop; or, when
    # the second arrives while the interpreter is shutting down after that clean stop, death
    # by SIGINT, which a shell reports as 130 too.
    assert code in (130, -signal.SIGINT), fetch.stderr()
    assert "Traceback" not in fetch.stderr()

    again = _run(_fetch_args(contacts, out, "--rate", "0", "--concurrency", "32"), sim)
    assert again.returncode == 0, again.stderr
    _assert_same(_output(out), _truth(sim, ids))
    _check_manifest_files(out, _json(out, "manifest.json"))


# -- 4. a re-run after a complete run makes no requests -------------------------------------


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in _record_files(out)}


@pytest.mark.timeout(60)
def test_rerun_after_complete_run_makes_no_requests(tmp_path: Path, clean_sim: SimProcess) -> None:
    sim = clean_sim
    ids = [str(i) for i in range(1, 61)]
    unknown = ("201", "5000")
    contacts = _write_contacts(
        tmp_path / "contacts.txt", range(1, 61), unknown=unknown, junk=("x1",)
    )
    out = tmp_path / "out"
    args = _fetch_args(contacts, out, "--rate", "0")
    first = _run(args, sim)
    assert first.returncode == 1, first.stderr  # the 404s and the junk line
    truth = _truth(sim, ids)
    _assert_same(_output(out), truth)
    files = _snapshot(out)

    sim.reset_stats()
    again = _run(args, sim)
    assert again.returncode == first.returncode, again.stderr
    assert sim.stats()["requests"] == 0
    assert _snapshot(out) == files
    summary = _json(out, "summary.json")
    assert summary["requests"] == 0
    assert summary["records"] == 0
    assert summary["status"] == "complete"
    assert sorted(e["contact_id"] for e in _errors(out)) == sorted([*unknown, "x1"])

    # --retry-failed asks again for the contacts that failed for good (the 404s) and no other.
    sim.reset_stats()
    retried = _run([*args, "--retry-failed"], sim)
    assert retried.returncode == 1, retried.stderr
    stats = sim.stats()
    assert stats["requests"] == len(unknown)
    assert stats["status_counts"] == {"404": len(unknown)}
    assert _snapshot(out) == files
    assert sorted((e["contact_id"], e["status"]) for e in _errors(out)) == sorted(
        [(u, 404) for u in unknown] + [("x1", None)]
    )


# -- 5. daily sync: --incremental writes only what is new, into new files -------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_incremental_writes_exactly_the_new_records(tmp_path: Path) -> None:
    with simulator("--contacts", "60", "--heavy-fraction", "0.05", "--empty-fraction", "0.1",
                   "--seed", "9", *SIM_LIMITS) as sim:  # fmt: skip
        ids = [str(i) for i in range(1, 61)]
        contacts = _write_contacts(tmp_path / "contacts.txt", range(1, 61))
        out = tmp_path / "out"
        args = _fetch_args(contacts, out, "--rate", "0", "--page-size", "100")

        first = _run(args, sim)
        assert first.returncode == 0, first.stderr
        truth1 = _truth(sim, ids)
        _assert_same(_output(out), truth1)

        per_contact = Counter(r["contact_id"] for r in truth1)
        heavy = max(ids, key=lambda i: per_contact[i])
        normal = next(i for i in ids if 0 < per_contact[i] < 10)
        no_opens = next((i for i in ids if per_contact[i] == 0), None)
        assert no_opens is not None, "the simulator should have a contact without opens"
        # For each contact the next run asks created_since = its newest written open, which
        # the API answers again (inclusive); one record past that boundary for ``normal``.
        added: list[dict[str, Any]] = []
        for cid, count in ((heavy, 3), (normal, 1), (no_opens, 2), (ids[-1], 5)):
            added += sim.add_activity(cid, "opens", count)
        assert len(added) == 11

        second = _run([*args, "--incremental"], sim)
        assert second.returncode == 0, second.stderr
        truth2 = _truth(sim, ids)
        _assert_same(truth2, truth1 + added)  # sanity: the simulator added exactly these
        _assert_same(_output(out), truth2)

        manifest = _json(out, "manifest.json")
        _check_manifest_files(out, manifest)
        assert [r["run"] for r in manifest["runs"]] == [1, 2]
        run1, run2 = manifest["runs"]
        assert (run1["incremental"], run2["incremental"]) == (False, True)
        assert run1["complete"]
        assert run2["complete"]
        assert run1["files"]
        assert run2["files"]
        assert not {f["name"] for f in run1["files"]} & {f["name"] for f in run2["files"]}
        assert run1["records"] == len(truth1)
        assert run2["records"] == len(added)
        new = [r for f in run2["files"] for r in _read_strict(out / f["name"])]
        _assert_same(new, added)
        assert (run1["oldest_activity"], run1["newest_activity"]) == _window(truth1)
        assert (run2["oldest_activity"], run2["newest_activity"]) == _window(added)
        summary = _json(out, "summary.json")
        assert (summary["run"], summary["records"]) == (2, len(added))

        # Nothing new since: a third incremental run writes no records and no file.
        files = _snapshot(out)
        third = _run([*args, "--incremental"], sim)
        assert third.returncode == 0, third.stderr
        assert _snapshot(out) == files
        _assert_same(_output(out), truth2)
        manifest = _json(out, "manifest.json")
        _check_manifest_files(out, manifest)
        assert [r["run"] for r in manifest["runs"]] == [1, 2, 3]
        run3 = manifest["runs"][2]
        assert run3["complete"]
        assert (run3["records"], run3["files"]) == (0, [])
        assert _json(out, "summary.json")["records"] == 0


# -- 6. other settings on the same --out are refused unless --fresh -------------------------


def _offset_form(stamp: str) -> str:
    """The same instant as ``stamp`` (API form, UTC), written with a +02:00 offset."""
    moment = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    local = moment.astimezone(timezone(timedelta(hours=2)))
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}+02:00"


@pytest.mark.timeout(60)
def test_other_settings_on_the_same_out_are_refused_unless_fresh(
    tmp_path: Path, clean_sim: SimProcess
) -> None:
    sim = clean_sim
    ids = [str(i) for i in range(1, 41)]
    contacts = _write_contacts(tmp_path / "contacts.txt", range(1, 41))
    out = tmp_path / "out"
    args = _fetch_args(contacts, out, "--rate", "0")
    first = _run(args, sim)
    assert first.returncode == 0, first.stderr
    truth = _truth(sim, ids)
    files = _snapshot(out)

    stamps = sorted(r["open_date"] for r in truth)
    since = stamps[len(stamps) // 2]  # an instant that one record sits on exactly
    for extra, setting in (
        (["--since", _offset_form(since)], "since"),
        (["--report", "clicks"], "report"),
    ):
        sim.reset_stats()
        refused = _run([*args, *extra], sim)
        assert refused.returncode == 2, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, refused.stderr
        assert setting in lines[0]
        assert "--fresh" in lines[0]
        assert sim.stats()["requests"] == 0
        assert _snapshot(out) == files

    fresh = _run([*args, "--since", _offset_form(since), "--fresh"], sim)
    assert fresh.returncode == 0, fresh.stderr
    expected = _truth(sim, ids, since=since)
    assert 0 < len(expected) < len(truth)
    assert any(r["open_date"] == since for r in expected)  # created_since is inclusive
    _assert_same(_output(out), expected)

    clicks = _run([*args, "--report", "clicks", "--fresh"], sim)
    assert clicks.returncode == 0, clicks.stderr
    assert _record_files(out, "opens") == []
    _assert_same(_output(out, "clicks"), _truth(sim, ids, "clicks"))


# -- 7. two processes on one --out -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("fresh", [False, True], ids=["same-command", "with-fresh"])
def test_second_process_on_the_same_out_is_refused(
    tmp_path: Path, slow_sim: SimProcess, fresh: bool
) -> None:
    sim = slow_sim
    ids = [str(i) for i in range(1, 201)]
    contacts = _write_contacts(tmp_path / "contacts.txt", range(1, 201))
    out = tmp_path / "out"
    args = _fetch_args(contacts, out, "--rate", "5")  # ~40 s: runs all through this test
    first = _start_slow_and_wait(args, sim, tmp_path / "stderr-1.txt", out)
    try:
        second = _Fetch([*args, "--fresh"] if fresh else args, sim, tmp_path / "stderr-2.txt")
        try:
            second_code = second.wait(timeout=15)  # a refusal takes well under a second
        except subprocess.TimeoutExpired:
            second_code = None  # not refused: it is fetching alongside the first
        finally:
            second.kill()
        first_still_running = first.running()
        state_kept = (out / ".bulkopens" / "state.sqlite3").exists() and bool(_record_files(out))
        first.signal(signal.SIGINT)
        first_code = first.wait(timeout=30)
    finally:
        first.kill()
    assert second_code == 2, f"the second run was not refused: {second.stderr()!r}"
    lines = second.stderr().strip().splitlines()
    assert len(lines) == 1, lines
    assert "another bulkopens run" in lines[0]
    assert state_kept, "the refused run deleted the running one's state or files"
    assert first_still_running, "the first run stopped while the second one was refused"
    assert first_code == 130, first.stderr()

    again = _run(_fetch_args(contacts, out, "--rate", "0", "--concurrency", "32"), sim)
    assert again.returncode == 0, again.stderr
    _assert_same(_output(out), _truth(sim, ids))
