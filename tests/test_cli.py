"""The command-line contract of README.md, tested by running the real command in a subprocess.

Every test runs ``python -m bulkopens ...`` (``bulkopens()`` in simproc) against a simulator in
its own process (``simulator()`` in simproc) and checks what a user or a cron job sees: exit
codes, stderr, the files in ``--out``, and, through the simulator's admin endpoints, what
actually reached the server. Record files are compared with the simulator's ground truth as
multisets: no record missing, none twice.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from simproc import KEY, TOKEN, SimProcess, bulkopens, read_ndjson, simulator

from bulkopens import __version__
from bulkopens.cli._demo import JUNK_LINES, UNKNOWN_IDS, demo_config
from bulkopens.cli._parser import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")

SIM_CONTACTS = 60  # the shared simulator's account: ids 1..60
WRONG_KEY = "wrong-key-3e9a71"
WRONG_TOKEN = "wrong-token-d04c6b"
SECRETS = (KEY, TOKEN, WRONG_KEY, WRONG_TOKEN)
JUNK = ("abc", "12e4", "-5", "../../x", "0", "1.0", "+7")
CLOSED_PORT_URL = "http://127.0.0.1:9"  # discard port: nothing listens there


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[SimProcess]:
    with simulator(
        "--contacts", str(SIM_CONTACTS), "--seed", "11", "--rate", "0", "--daily-quota", "0",
        "--heavy-fraction", "0", "--empty-fraction", "0.1",
    ) as sim:  # fmt: skip
        yield sim


@pytest.fixture
def sim(shared_sim: SimProcess) -> SimProcess:
    """The shared simulator with its request log emptied."""
    shared_sim.reset_stats()
    return shared_sim


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any CTCT_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTCT_")}
    env.update(extra)
    return env


def write_lines(path: Path, lines: Iterable[str], *, ending: str = "\n") -> Path:
    path.write_bytes(ending.join(lines).encode("utf-8") + ending.encode())
    return path


def ids(first: int, last: int) -> list[str]:
    return [str(i) for i in range(first, last + 1)]


def multiset(records: Iterable[dict[str, Any]]) -> collections.Counter[str]:
    return collections.Counter(json.dumps(r, sort_keys=True) for r in records)


def truth_for(
    sim: SimProcess, contact_ids: Iterable[str], report: str = "opens", since: str | None = None
) -> list[dict[str, Any]]:
    wanted = set(contact_ids)
    return [r for r in sim.truth(report=report, since=since) if r["contact_id"] in wanted]


def records(out: Path, report: str = "opens") -> list[dict[str, Any]]:
    return read_ndjson(out.glob(f"{report}-*.ndjson"))


def assert_exactly(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """``got`` holds every expected record exactly once and nothing else."""
    have, want = multiset(got), multiset(expected)
    missing = want - have
    extra = have - want
    twice = sum(n - 1 for n in have.values() if n > 1)
    message = (
        f"{sum(missing.values())} records missing, {sum(extra.values())} unexpected "
        f"({twice} written more than once); got {len(got)}, expected {len(expected)}"
    )
    assert not missing, message
    assert not extra, message


def expected_requests(sim: SimProcess, contact_ids: Iterable[str], page_size: int = 500) -> int:
    """Pages needed for ``contact_ids`` (known ones): a contact without records costs one."""
    counts = collections.Counter(r["contact_id"] for r in sim.truth())
    return sum(max(1, math.ceil(counts[cid] / page_size)) for cid in set(contact_ids))


def error_rows(out: Path) -> list[dict[str, Any]]:
    return read_ndjson([out / "errors.ndjson"])


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The documented exit code, one line on stderr, no traceback. Returns the line."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert_no_traceback(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {lines!r}"
    assert "error" in lines[0], lines[0]
    return lines[0]


def assert_no_secrets(out: Path | None, *texts: str, secrets: Iterable[str] = SECRETS) -> None:
    """No secret in any of ``texts`` nor in any file under ``out`` (state files included)."""
    blobs: list[tuple[str, bytes]] = [(f"output {i}", t.encode()) for i, t in enumerate(texts)]
    if out is not None and out.exists():
        blobs += [(str(p), p.read_bytes()) for p in sorted(out.rglob("*")) if p.is_file()]
    for secret in secrets:
        for name, blob in blobs:
            assert secret.encode() not in blob, f"secret {secret!r} found in {name}"


def fetch(
    sim: SimProcess, contacts: Path | str, out: Path, *args: str, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """``bulkopens fetch`` against ``sim`` with credentials from the environment, no rate limit."""
    kwargs.setdefault("env", sim.env())
    return bulkopens(
        "fetch", "--contacts", str(contacts), "--out", str(out), "--rate", "0", *args, **kwargs
    )


# -- 1. credentials, flags and input formats ------------------------------------------------


def test_credentials_and_base_url_from_the_environment(sim: SimProcess, tmp_path: Path) -> None:
    contacts = write_lines(tmp_path / "ids.txt", ids(1, 20))
    result = fetch(sim, contacts, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    assert result.stderr.strip(), "without --quiet a short summary is printed at the end"
    assert_exactly(records(tmp_path / "out"), truth_for(sim, ids(1, 20)))
    assert sim.stats()["status_counts"] == {"200": 20}
    assert_no_secrets(tmp_path / "out", result.stdout, result.stderr)


def test_credentials_and_base_url_from_flags(sim: SimProcess, tmp_path: Path) -> None:
    contacts = write_lines(tmp_path / "ids.txt", ids(1, 20))
    out = tmp_path / "out"
    result = fetch(
        sim, contacts, out, "--api-key", KEY, "--token", TOKEN, "--base-url", sim.url,
        env=clean_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_exactly(records(out), truth_for(sim, ids(1, 20)))
    assert_no_secrets(out, result.stdout, result.stderr)


def test_flags_win_over_the_environment(sim: SimProcess, tmp_path: Path) -> None:
    # Each wrong value in the environment would show: a 401 for the key or the token, a
    # connection error for the base URL.
    env = sim.env(
        CTCT_API_KEY=WRONG_KEY, CTCT_ACCESS_TOKEN=WRONG_TOKEN, CTCT_BASE_URL=CLOSED_PORT_URL
    )
    flags = ["--api-key", KEY, "--token", TOKEN, "--base-url", sim.url]
    contacts = write_lines(tmp_path / "ids.txt", ids(1, 10))
    out = tmp_path / "out"
    result = fetch(sim, contacts, out, "--max-retries", "0", *flags, env=env)
    assert result.returncode == 0, result.stderr
    assert sim.stats()["status_counts"] == {"200": 10}, "an environment value was used"
    assert_exactly(records(out), truth_for(sim, ids(1, 10)))
    assert_no_secrets(out, result.stdout, result.stderr)


@pytest.mark.parametrize(
    ("since", "utc"),
    [
        ("2025-06-01T08:00:00-05:00", "2025-06-01T13:00:00.000Z"),
        ("2025-03-15", "2025-03-15T00:00:00.000Z"),
    ],
)
def test_since_writes_only_records_on_or_after_it(
    sim: SimProcess, tmp_path: Path, since: str, utc: str
) -> None:
    contact_ids = ids(1, SIM_CONTACTS)
    contacts = write_lines(tmp_path / "ids.txt", contact_ids)
    out = tmp_path / "out"
    result = fetch(sim, contacts, out, "--since", since, "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", "--quiet: nothing on stderr after a successful run"
    assert result.stdout == ""
    expected = truth_for(sim, contact_ids, since=utc)
    everything = truth_for(sim, contact_ids)
    assert 0 < len(expected) < len(everything), "pick a --since inside the data's time span"
    got = records(out)
    assert_exactly(got, expected)
    assert all(r["open_date"] >= utc for r in got)
    (run,) = load(out / "manifest.json")["runs"]
    assert run["since"] == utc, "--since is normalised to UTC"


def test_page_size_changes_the_paging_not_the_output(sim: SimProcess, tmp_path: Path) -> None:
    contact_ids = ids(1, 30)
    contacts = write_lines(tmp_path / "ids.txt", contact_ids)
    out = tmp_path / "out"
    result = fetch(sim, contacts, out, "--page-size", "7", "--quiet")
    assert result.returncode == 0, result.stderr
    assert_exactly(records(out), truth_for(sim, contact_ids))
    pages = expected_requests(sim, contact_ids, page_size=7)
    assert pages > len(contact_ids), "some contacts must need more than one page"
    assert sim.stats()["requests"] == pages
    summary = load(out / "summary.json")
    assert summary["pages"] == pages
    assert summary["requests"] == pages


def test_concurrency_changes_nothing_in_the_output(sim: SimProcess, tmp_path: Path) -> None:
    contact_ids = ids(1, 25)
    contacts = write_lines(tmp_path / "ids.txt", contact_ids)
    out = tmp_path / "out"
    result = fetch(sim, contacts, out, "--concurrency", "3", "--page-size", "9", "--quiet")
    assert result.returncode == 0, result.stderr
    assert_exactly(records(out), truth_for(sim, contact_ids))


def test_report_names_the_files_and_picks_the_records(sim: SimProcess, tmp_path: Path) -> None:
    report = "clicks"
    contact_ids = ids(1, 30)
    contacts = write_lines(tmp_path / "ids.txt", contact_ids)
    out = tmp_path / "out"
    result = fetch(sim, contacts, out, "--report", report, "--quiet")
    assert result.returncode == 0, result.stderr
    assert (out / f"{report}-00001.ndjson").is_file()
    assert not list(out.glob("opens-*.ndjson"))
    expected = truth_for(sim, contact_ids, report=report)
    assert expected
    assert_exactly(records(out, report), expected)
    manifest = load(out / "manifest.json")
    assert manifest["report"] == report
    assert load(out / "summary.json")["report"] == report


def test_contacts_from_stdin(sim: SimProcess, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = fetch(sim, "-", out, "--quiet", stdin="\n".join(ids(5, 25)) + "\n")
    assert result.returncode == 0, result.stderr
    assert_exactly(records(out), truth_for(sim, ids(5, 25)))


def test_csv_with_a_contact_id_column(sim: SimProcess, tmp_path: Path) -> None:
    rows = ["email,contact_id,name"]
    rows += [f'c{i}@example.com,{i},"Last, First {i}"' for i in range(1, 16)]
    contacts = tmp_path / "export.csv"  # as Excel writes it: a BOM and CRLF line endings
    contacts.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join(rows) + "\r\n").encode())
    out = tmp_path / "out"
    result = fetch(sim, contacts, out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert_exactly(records(out), truth_for(sim, ids(1, 15)))
    assert error_rows(out) == []


def test_csv_with_an_id_column(sim: SimProcess, tmp_path: Path) -> None:
    rows = ["name,id,status"] + [f"n{i},{i},ACTIVE" for i in range(20, 36)]
    contacts = write_lines(tmp_path / "export.csv", rows)
    out = tmp_path / "out"
    result = fetch(sim, contacts, out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert_exactly(records(out), truth_for(sim, ids(20, 35)))
    assert error_rows(out) == []


def test_blank_comment_and_whitespace_lines_are_ignored(sim: SimProcess, tmp_path: Path) -> None:
    lines = [
        "# contacts exported on Monday", "", "   ", "  3  ", "\t4\t", "# 99999 commented out",
        "   # indented comment", "5", "", "6   ",
    ]  # fmt: skip
    contacts = write_lines(tmp_path / "ids.txt", lines, ending="\r\n")
    out = tmp_path / "out"
    result = fetch(sim, contacts, out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert error_rows(out) == []
    assert_exactly(records(out), truth_for(sim, ["3", "4", "5", "6"]))
    assert sim.stats()["requests"] == expected_requests(sim, ["3", "4", "5", "6"])
    summary = load(out / "summary.json")
    assert summary["contacts_invalid"] == 0
    assert summary["contacts_done"] == 4


def test_duplicates_are_fetched_once(sim: SimProcess, tmp_path: Path) -> None:
    lines = ["1", "2", "3", "1", "1", "2", " 3 ", "003", "2"]
    contacts = write_lines(tmp_path / "ids.txt", lines)
    out = tmp_path / "out"
    result = fetch(sim, contacts, out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert sim.stats()["requests"] == expected_requests(sim, ["1", "2", "3"])
    assert_exactly(records(out), truth_for(sim, ["1", "2", "3"]))
    summary = load(out / "summary.json")
    assert summary["duplicates"] == len(lines) - 3
    assert summary["contacts_done"] == 3


# -- 2. the files in --out ------------------------------------------------------------------


def test_records_errors_summary_and_manifest(sim: SimProcess, tmp_path: Path) -> None:
    known = ids(1, 20)
    unknown = [str(SIM_CONTACTS + 1), str(SIM_CONTACTS + 7), "999999999"]
    lines = ["# mixed bag", *known, *unknown, *JUNK, "1", "2", "20"]
    contacts = write_lines(tmp_path / "ids.txt", lines)
    out = tmp_path / "out"
    result = fetch(sim, contacts, out, "--page-size", "8")
    assert result.returncode == 1, result.stderr
    assert_no_traceback(result)

    expected = truth_for(sim, known)
    got = records(out)
    assert_exactly(got, expected)

    # errors.ndjson: exactly one line per failed contact, and nothing else
    rows = error_rows(out)
    assert sorted(r["contact_id"] for r in rows) == sorted([*unknown, *JUNK])
    for row in rows:
        assert set(row) >= {"contact_id", "status", "error_key", "error", "retryable"}, row
        assert isinstance(row["error"], str)
        assert row["error"]
        assert row["retryable"] is False, row
        assert row["status"] == (404 if row["contact_id"] in unknown else None), row

    # what reached the server: every known contact's pages and one 404 per unknown id; the
    # junk lines never did (a path like /v2/contacts/abc/... would be one more 404 or a 400)
    pages = expected_requests(sim, known, page_size=8)
    stats = sim.stats()
    assert stats["status_counts"] == {"200": pages, "404": len(unknown)}
    assert stats["requests"] == pages + len(unknown)

    summary = load(out / "summary.json")
    assert summary["status"] == "complete"
    assert summary["report"] == "opens"
    assert summary["contacts_done"] == len(known)
    assert summary["contacts_failed"] == len(unknown)
    assert summary["contacts_invalid"] == len(JUNK)
    assert summary["duplicates"] == 3
    assert summary["contacts_skipped"] == 0
    assert summary["records"] == len(expected)
    assert summary["pages"] == pages
    assert summary["requests"] == pages + len(unknown)
    assert summary["retries"] == 0
    assert summary["throttles"] == 0
    assert summary["responses"] == {"200": pages, "404": len(unknown)}
    assert isinstance(summary["elapsed_seconds"], int | float)
    totals = summary["totals"]
    assert totals["done"] == len(known)
    assert totals["failed_for_good"] == len(unknown)
    assert totals["invalid"] == len(JUNK)
    assert totals["pending"] == 0
    assert totals["failed"] == 0

    manifest = load(out / "manifest.json")
    assert manifest["report"] == "opens"
    (run,) = manifest["runs"]
    assert run["complete"] is True
    assert run["incremental"] is False
    assert run["records"] == len(expected)
    on_disk = sorted(p.name for p in out.glob("opens-*.ndjson"))
    assert [f["name"] for f in run["files"]] == on_disk
    for entry in run["files"]:
        path = out / entry["name"]
        assert entry["bytes"] == path.stat().st_size
        assert entry["records"] == len(path.read_bytes().splitlines())
    dates = [r["open_date"] for r in expected]
    assert run["oldest_activity"] == min(dates)
    assert run["newest_activity"] == max(dates)

    assert_no_secrets(out, result.stdout, result.stderr)


def test_rerun_after_a_complete_run_makes_no_requests(sim: SimProcess, tmp_path: Path) -> None:
    contacts = write_lines(tmp_path / "ids.txt", ids(1, 15))
    out = tmp_path / "out"
    assert fetch(sim, contacts, out, "--quiet").returncode == 0
    sim.reset_stats()
    again = fetch(sim, contacts, out, "--quiet")
    assert again.returncode == 0, again.stderr
    assert sim.stats()["requests"] == 0
    assert_exactly(records(out), truth_for(sim, ids(1, 15)))


# -- 3. exit codes --------------------------------------------------------------------------

# A usage case: (arguments after ``fetch``, environment, stdin) for a scratch directory.
UsageCase = Callable[[Path, SimProcess], tuple[list[str], dict[str, str], str | None]]


def _ids_file(tmp: Path) -> str:
    return str(write_lines(tmp / "ids.txt", ids(1, 5)))


def _file(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _case(
    *args: str, contacts: Callable[[Path], str] = _ids_file, stdin: str | None = None
) -> UsageCase:
    def build(tmp: Path, sim: SimProcess) -> tuple[list[str], dict[str, str], str | None]:
        return ["--contacts", contacts(tmp), "--out", str(tmp / "out"), *args], sim.env(), stdin

    return build


def _env_without(name: str) -> UsageCase:
    def build(tmp: Path, sim: SimProcess) -> tuple[list[str], dict[str, str], str | None]:
        env = sim.env()
        del env[name]
        return ["--contacts", _ids_file(tmp), "--out", str(tmp / "out")], env, None

    return build


def _plain_file(tmp: Path) -> Path:
    return Path(_file(tmp, "plain-file", "x"))


def _contacts_dir(tmp: Path) -> str:
    (tmp / "a-dir").mkdir()
    return str(tmp / "a-dir")


USAGE_ERRORS: dict[str, UsageCase] = {
    "unknown-flag": _case("--bogus"),
    "missing-key": _env_without("CTCT_API_KEY"),
    "missing-token": _env_without("CTCT_ACCESS_TOKEN"),
    "since-malformed": _case("--since", "yesterday"),
    "page-size-0": _case("--page-size", "0"),
    "page-size-501": _case("--page-size", "501"),
    "rate-negative": _case("--rate", "-1"),
    "contacts-missing-file": _case(contacts=lambda tmp: str(tmp / "no-such-file.txt")),
    "contacts-directory": _case(contacts=_contacts_dir),
    "contacts-empty": _case(contacts=lambda tmp: _file(tmp, "empty.txt", "")),
    "contacts-only-comments": _case(
        contacts=lambda tmp: _file(tmp, "comments.txt", "# nothing here\n\n   \n# still nothing\n")
    ),
    "contacts-csv-without-id-column": _case(
        contacts=lambda tmp: _file(tmp, "people.csv", "name,email\nAda,ada@example.com\n")
    ),
    "stdin-without-ids": _case(contacts=lambda tmp: "-", stdin="# nothing\n\n"),
    "out-under-a-regular-file": lambda tmp, sim: (
        ["--contacts", _ids_file(tmp), "--out", str(_plain_file(tmp) / "out")],
        sim.env(),
        None,
    ),
    "out-is-a-regular-file": lambda tmp, sim: (
        ["--contacts", _ids_file(tmp), "--out", str(_plain_file(tmp))],
        sim.env(),
        None,
    ),
    "base-url-ftp": _case("--base-url", "ftp://x"),
    "base-url-not-a-url": _case("--base-url", "not a url"),
    "base-url-with-credentials": _case("--base-url", f"http://user:{KEY}@127.0.0.1:9"),
    "no-contacts-flag": lambda tmp, sim: (["--out", str(tmp / "out")], sim.env(), None),
}


@pytest.fixture(scope="module")
def usage_results(
    shared_sim: SimProcess, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, subprocess.CompletedProcess[str]], int, Path]:
    """Every usage case run once, a few at a time (each is one short process), how many
    requests reached the simulator meanwhile (none may), and the cases' scratch directory."""
    base = tmp_path_factory.mktemp("usage")
    shared_sim.reset_stats()
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {}
        for name, build in USAGE_ERRORS.items():
            (base / name).mkdir()
            args, env, stdin = build(base / name, shared_sim)
            futures[name] = pool.submit(
                bulkopens, "fetch", *args, "--rate", "0", env=env, stdin=stdin
            )
        results = {name: future.result() for name, future in futures.items()}
    return results, shared_sim.stats()["requests"], base


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_usage_and_configuration_errors_exit_2(
    usage_results: tuple[dict[str, subprocess.CompletedProcess[str]], int, Path], case: str
) -> None:
    results, requests, base = usage_results
    result = results[case]
    assert_one_line_error(result, 2)
    assert_no_secrets(base / case, result.stdout, result.stderr)
    assert requests == 0, "nothing may be fetched after a usage error"


def test_an_unknown_flag_points_at_the_commands_own_help(
    usage_results: tuple[dict[str, subprocess.CompletedProcess[str]], int, Path],
) -> None:
    message = assert_one_line_error(usage_results[0]["unknown-flag"], 2)
    assert message.startswith("bulkopens fetch: error: unrecognized arguments: --bogus")
    assert "see bulkopens fetch --help" in message


def test_other_settings_on_the_same_out_are_refused(sim: SimProcess, tmp_path: Path) -> None:
    contact_ids = ids(1, 12)
    contacts = write_lines(tmp_path / "ids.txt", contact_ids)
    out = tmp_path / "out"
    first = fetch(sim, contacts, out, "--quiet")
    assert first.returncode == 0, first.stderr
    sim.reset_stats()
    for other in (
        ["--since", "2025-01-01"],
        ["--report", "clicks"],
        ["--base-url", CLOSED_PORT_URL],
    ):
        refused = fetch(sim, contacts, out, *other)
        assert_one_line_error(refused, 2)
        assert sim.stats()["requests"] == 0, other
        assert_no_secrets(out, refused.stdout, refused.stderr)
    assert_exactly(records(out), truth_for(sim, contact_ids))

    fresh = fetch(sim, contacts, out, "--since", "2025-01-01", "--fresh", "--quiet")
    assert fresh.returncode == 0, fresh.stderr
    assert_exactly(records(out), truth_for(sim, contact_ids, since="2025-01-01T00:00:00Z"))


@pytest.mark.parametrize(
    ("key", "token"), [(WRONG_KEY, TOKEN), (KEY, WRONG_TOKEN)], ids=["bad-key", "bad-token"]
)
def test_authentication_failure_exits_3_and_resumes(
    sim: SimProcess, tmp_path: Path, key: str, token: str
) -> None:
    contact_ids = ids(1, 40)
    contacts = write_lines(tmp_path / "ids.txt", contact_ids)
    out = tmp_path / "out"
    env = sim.env(CTCT_API_KEY=key, CTCT_ACCESS_TOKEN=token)
    result = fetch(sim, contacts, out, "--quiet", "--concurrency", "4", env=env)
    assert_one_line_error(result, 3)
    counts = sim.stats()["status_counts"]
    assert set(counts) == {"401"}
    assert counts["401"] <= 4, "a bad key must stop all workers at once"
    assert load(out / "summary.json")["status"] == "auth_failed"
    assert_no_secrets(out, result.stdout, result.stderr)

    if key == WRONG_KEY:  # without --quiet: the short summary, then the one error line
        loud = fetch(sim, contacts, out, env=env)
        assert loud.returncode == 3
        assert_no_traceback(loud)
        lines = loud.stderr.splitlines()
        errors = [line for line in lines if line.startswith("bulkopens: error")]
        assert len(errors) == 1, loud.stderr
        assert lines[-1] == errors[0]
        assert_no_secrets(out, loud.stdout, loud.stderr)

    fixed = fetch(sim, contacts, out, "--quiet")  # the run can be resumed
    assert fixed.returncode == 0, fixed.stderr
    assert_exactly(records(out), truth_for(sim, contact_ids))


@pytest.mark.parametrize("style", ["429", "403"])
def test_quota_exhausted_exits_4_and_resumes(tmp_path: Path, style: str) -> None:
    contact_ids = ids(1, 8)
    contacts = write_lines(tmp_path / "ids.txt", contact_ids)
    out = tmp_path / "out"
    # The quota is per api_key: each fresh key stands in for the next UTC day.
    next_days = [f"next-day-key-{n}" for n in range(8)]
    with simulator(
        "--contacts", "50", "--rate", "0", "--daily-quota", "5", "--limit-style", style,
        "--heavy-fraction", "0", *(arg for key in next_days for arg in ("--api-key", key)),
    ) as sim:  # fmt: skip
        result = fetch(sim, contacts, out, "--quiet", "--concurrency", "2")
        line = assert_one_line_error(result, 4)
        assert "00:00 UTC" in line, line
        assert "quota" in line, line
        assert style in sim.stats()["status_counts"]
        summary = load(out / "summary.json")
        assert summary["status"] == "quota_exhausted"
        assert str(summary["quota_resets_at"]).endswith("T00:00:00Z")
        assert_no_secrets(out, result.stdout, result.stderr)

        outputs = [result.stdout, result.stderr]
        for key in next_days:  # resume, one "day" at a time, until the run completes
            resumed = fetch(sim, contacts, out, "--quiet", "--concurrency", "2",
                            env=sim.env(CTCT_API_KEY=key))  # fmt: skip
            outputs += [resumed.stdout, resumed.stderr]
            assert resumed.returncode in (0, 4), resumed.stderr
            if resumed.returncode == 0:
                break
        assert resumed.returncode == 0, "the run did not complete after 8 more days"
        assert_exactly(records(out), truth_for(sim, contact_ids))
        assert_no_secrets(out, *outputs, secrets=(*SECRETS, *next_days))


def test_sigint_exits_130_and_a_rerun_completes_exactly_once(tmp_path: Path) -> None:
    contact_ids = ids(1, 100)
    contacts = write_lines(tmp_path / "ids.txt", contact_ids)
    out = tmp_path / "out"
    with simulator(
        "--contacts", "100", "--rate", "0", "--daily-quota", "0", "--latency-ms", "200",
        "--heavy-fraction", "0",
    ) as sim:  # fmt: skip
        cmd = [
            sys.executable, "-m", "bulkopens", "fetch", "--contacts", str(contacts),
            "--out", str(out), "--rate", "5", "--quiet",
        ]  # fmt: skip
        proc = subprocess.Popen(
            cmd, env=sim.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 60
            while sim.stats()["requests"] < 3:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the fetch never got going"
                time.sleep(0.05)
            # a second process on the same --out is refused while the first one runs
            second = fetch(sim, contacts, out, "--quiet")
            assert_one_line_error(second, 2)
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        interrupted = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
        assert interrupted.returncode == 130, stderr
        assert_no_traceback(interrupted)
        assert load(out / "summary.json")["status"] == "interrupted"
        partial = multiset(records(out))
        assert not partial - multiset(truth_for(sim, contact_ids))
        assert all(n == 1 for n in partial.values()), "a record was written twice"

        rerun = fetch(sim, contacts, out, "--quiet", "--concurrency", "100")
        assert rerun.returncode == 0, rerun.stderr
        assert_exactly(records(out), truth_for(sim, contact_ids))
        (run,) = load(out / "manifest.json")["runs"]
        assert run["complete"] is True
        assert_no_secrets(out, stdout, stderr, rerun.stdout, rerun.stderr)

        # last, so that the checks above run even if this one fails
        lines = stderr.splitlines()
        assert len(lines) == 1, f"--quiet and interrupted: expected one line, got {lines!r}"


# -- 4. secrets -----------------------------------------------------------------------------


def test_secrets_given_as_flags_stay_out_of_every_output(sim: SimProcess, tmp_path: Path) -> None:
    lines = [*ids(1, 10), str(SIM_CONTACTS + 3), "abc"]
    contacts = write_lines(tmp_path / "ids.txt", lines)
    out = tmp_path / "out"
    flags = ["--api-key", KEY, "--token", TOKEN, "--base-url", sim.url, "--page-size", "3"]
    result = fetch(sim, contacts, out, *flags, env=clean_env())
    assert result.returncode == 1, result.stderr
    assert_no_secrets(out, result.stdout, result.stderr)
    # a run that cannot reach the server at all: it stops (exit 69), naming host and port
    unreachable = tmp_path / "unreachable"
    flags = ["--api-key", KEY, "--token", TOKEN, "--base-url", CLOSED_PORT_URL]
    failed = fetch(sim, contacts, unreachable, *flags, "--max-retries", "0", env=clean_env())
    assert failed.returncode == 69, failed.stderr
    assert_no_traceback(failed)
    assert "cannot connect to 127.0.0.1:9" in failed.stderr
    assert all(row["retryable"] or row["status"] is None for row in error_rows(unreachable))
    assert_no_secrets(unreachable, failed.stdout, failed.stderr)


# -- 5. the README documents the command line -----------------------------------------------


def _options() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}")
            found.extend(
                (name, option)
                for option in action.option_strings
                if option.startswith("--") and option != "--help"
            )

    walk(build_parser(), "bulkopens")
    return found


def _commands() -> list[str]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


@pytest.mark.parametrize(("command", "option"), _options(), ids=[f"{c} {o}" for c, o in _options()])
def test_readme_documents_every_option(command: str, option: str) -> None:
    assert f"`{option}" in README, f"{command} {option} is not documented in README.md"


@pytest.mark.parametrize("command", _commands())
def test_readme_documents_every_command(command: str) -> None:
    assert f"bulkopens {command}" in README, f"`bulkopens {command}` is not in README.md"


def test_readme_documents_no_option_that_does_not_exist() -> None:
    # --help, and pip's --config-settings (the editable install a type checker can see)
    real = {option for _, option in _options()} | {"--help", "--config-settings"}
    words = README.replace("`", " ").split()
    documented = {
        word.rstrip(".,:;)`'\"")
        for before, word in zip(["", *words], words, strict=False)
        if word.startswith("--") and len(word) > 2 and before != "(mypy"  # mypy --strict
    }
    assert documented - real == set()


def test_readme_lists_the_reports_the_cli_accepts() -> None:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    (report,) = (a for a in sub.choices["fetch"]._actions if "--report" in a.option_strings)
    (row,) = (line for line in README.splitlines() if line.startswith("| `--report"))
    for choice in report.choices or ():
        assert f"`{choice}`" in row, choice


@pytest.mark.parametrize("command", ["fetch", "simulate", "demo"])
def test_every_command_has_help_without_the_environment_values(command: str) -> None:
    env = clean_env(CTCT_API_KEY=KEY, CTCT_ACCESS_TOKEN=TOKEN)
    result = bulkopens(command, "--help", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: bulkopens")
    assert result.stderr == ""
    if command == "fetch":
        assert "--api-key" in result.stdout
        assert "CTCT_API_KEY" in result.stdout
    assert_no_secrets(None, result.stdout, result.stderr)


# -- 6. --version ---------------------------------------------------------------------------


def test_version() -> None:
    result = bulkopens("--version", env=clean_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"bulkopens {__version__}"


# -- 7. the demo, end to end ----------------------------------------------------------------


def test_demo_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = bulkopens("demo", "--out", str(out), "--quiet", "--contacts", "300", env=clean_env())
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    for name in ("opens-00001.ndjson", "errors.ndjson", "summary.json", "manifest.json"):
        assert (out / name).is_file(), name

    # the planted failures: the ids just past the account (404) and the junk lines (null)
    assert UNKNOWN_IDS > 0
    assert JUNK_LINES
    rows = error_rows(out)
    not_found = sorted((r["contact_id"] for r in rows if r["status"] == 404), key=int)
    junk = sorted(r["contact_id"] for r in rows if r["status"] is None)
    assert not_found == ids(301, 300 + UNKNOWN_IDS)
    assert junk == sorted(JUNK_LINES)
    assert len(rows) == len(not_found) + len(junk), rows

    # The demo's account served again by a simulator with the same dataset settings: the
    # demo's output, fetched through injected faults and throttles, is exactly its truth.
    config = demo_config(300, 7)  # the demo's defaults: --seed 7
    with simulator(
        "--seed", str(config.seed), "--contacts", str(config.contacts),
        "--campaigns", str(config.campaigns), "--heavy-fraction", str(config.heavy_fraction),
        "--empty-fraction", str(config.empty_fraction), "--rate", "0", "--daily-quota", "0",
    ) as sim:  # fmt: skip
        assert_exactly(records(out), sim.truth())
    totals = load(out / "summary.json")["totals"]
    assert totals["done"] == 300
    assert totals["failed_for_good"] == UNKNOWN_IDS
    assert totals["invalid"] == len(JUNK_LINES)
    assert totals["pending"] == totals["failed"] == 0


# -- the event loop ---------------------------------------------------------------------------


def _fake_uvloop(tmp: Path, body: str) -> dict[str, str]:
    """An environment whose ``import uvloop`` finds a stand-in module with ``body``."""
    package = tmp / "fake" / "uvloop"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(body, encoding="utf-8")
    return {"PYTHONPATH": str(tmp / "fake")}


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_either_event_loop_gives_the_same_records(
    sim: SimProcess, tmp_path: Path, loop: str
) -> None:
    contacts = write_lines(tmp_path / "ids.txt", ids(1, 20))
    result = fetch(sim, contacts, tmp_path / "out", "--event-loop", loop, "--page-size", "7")
    assert result.returncode == 0, result.stderr
    assert_exactly(records(tmp_path / "out"), truth_for(sim, ids(1, 20)))


@pytest.mark.parametrize(("choice", "used"), [("auto", True), ("uvloop", True), ("asyncio", False)])
def test_auto_runs_on_uvloop_when_it_is_installed(
    sim: SimProcess, tmp_path: Path, choice: str, used: bool
) -> None:
    marker = tmp_path / "used"
    env = sim.env() | _fake_uvloop(
        tmp_path,
        "import asyncio, pathlib\n"
        "def new_event_loop():\n"
        f"    pathlib.Path({str(marker)!r}).touch()\n"
        "    return asyncio.new_event_loop()\n",
    )
    contacts = write_lines(tmp_path / "ids.txt", ids(1, 3))
    result = fetch(sim, contacts, tmp_path / "out", "--event-loop", choice, env=env)
    assert result.returncode == 0, result.stderr
    assert marker.exists() == used


def test_uvloop_asked_for_but_not_installed_is_a_usage_error(
    sim: SimProcess, tmp_path: Path
) -> None:
    env = sim.env() | _fake_uvloop(tmp_path, "raise ImportError('no uvloop here')\n")
    contacts = write_lines(tmp_path / "ids.txt", ids(1, 3))
    result = fetch(sim, contacts, tmp_path / "out", "--event-loop", "uvloop", env=env)
    message = assert_one_line_error(result, 2)
    assert "uvloop is not installed" in message
    auto = fetch(sim, contacts, tmp_path / "out2", env=env)  # auto: asyncio's loop instead
    assert auto.returncode == 0, auto.stderr
    assert_exactly(records(tmp_path / "out2"), truth_for(sim, ids(1, 3)))
