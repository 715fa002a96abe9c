"""The commands beside ``fetch`` that a cron job leans on: ``status`` (a job watched while it
runs, after it is killed, and when done), run as a user runs them, in a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from simproc import SimProcess, bulkopens, lines_in, simulator


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[SimProcess]:
    with simulator("--contacts", "400", "--seed", "5", "--rate", "0", "--daily-quota", "0") as sim:
        yield sim


def test_status_watches_a_running_job_then_a_killed_one_then_a_finished_one(
    slow_sim: SimProcess, tmp_path: Path
) -> None:
    contacts = tmp_path / "contacts.txt"
    contacts.write_text("".join(f"{i}\n" for i in range(1, 401)))
    out = tmp_path / "out"
    args = ["fetch", "--contacts", str(contacts), "--out", str(out), "--rate", "20", "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkopens", *args],
        env=slow_sim.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while lines_in(out) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # past a commit
        running = bulkopens("status", str(out), "--json")
        text = bulkopens("status", str(out))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert running.returncode == 0, running.stderr
    live = json.loads(running.stdout)
    assert live["running"] is True
    assert live["pid"] == proc.pid
    assert live["report"] == "opens"
    assert live["run"] == 1
    assert live["attempt"] == 1
    assert live["items"]["done"] > 0
    assert live["records_total"] > 0
    assert live["last_commit"]
    assert f"running (pid {proc.pid})" in text.stdout
    assert "contacts:" in text.stdout

    killed = json.loads(bulkopens("status", str(out), "--json").stdout)
    assert killed["running"] is False
    assert "stopped" in bulkopens("status", str(out)).stdout

    again = [a if a != "20" else "0" for a in args if a != "--quiet"]
    done = bulkopens(*again, env=slow_sim.env())
    assert done.returncode == 0, done.stderr
    assert "bulkopens: resuming run 1 (attempt 2): " in done.stderr
    final = json.loads(bulkopens("status", str(out), "--json").stdout)
    assert final["complete"] is True
    assert final["attempt"] == 2
    assert final["items"]["done"] == 400
    assert final["items"]["pending"] == 0
    assert final["records_total"] == sum(f["records"] for f in final["files"])
    assert "complete" in bulkopens("status", str(out)).stdout


def test_status_of_a_directory_without_state_is_a_usage_error(tmp_path: Path) -> None:
    done = bulkopens("status", str(tmp_path))
    assert done.returncode == 2
    assert "holds no bulkopens state" in done.stderr
    assert done.stderr.count("\n") == 1


# -- input read once ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    with simulator("--contacts", "60", "--seed", "3", "--rate", "0", "--daily-quota", "0") as sim:
        yield sim


def test_a_process_substitution_is_read_once(sim: SimProcess, tmp_path: Path) -> None:
    """The README's own simulator example: ``--contacts <(seq 1 N)``."""
    out = tmp_path / "out"
    script = f'"{sys.executable}" -m bulkopens fetch --contacts <(seq 1 60) --out "{out}" --quiet'
    done = subprocess.run(
        ["bash", "-c", script], env=sim.env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode in (0, 1), done.stderr
    assert json.loads((out / "summary.json").read_text())["totals"]["done"] == 60


def test_a_fifo_is_read_once(sim: SimProcess, tmp_path: Path) -> None:
    fifo = tmp_path / "ids.fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkopens", "fetch", "--contacts", str(fifo), "--out", str(out)],
        env=sim.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with open(fifo, "w") as writer:
        writer.write("".join(f"{i}\n" for i in range(1, 31)))
    assert proc.wait(timeout=60) in (0, 1)
    assert json.loads((out / "summary.json").read_text())["totals"]["done"] == 30


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"contact_id;email\n1;a@example.com\n2;b@example.com\n", "'contact_id', 'email'"),
        (b"email\na@example.com\nb@example.com\n", "'email'"),
        (b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00binary\n\x00\x01", "first line"),
    ],
    ids=["semicolon-csv", "email-column", "xlsx"],
)
def test_input_without_a_single_id_is_a_usage_error_that_names_what_it_saw(
    sim: SimProcess, tmp_path: Path, content: bytes, said: str
) -> None:
    sim.reset_stats()
    source = tmp_path / "input"
    source.write_bytes(content)
    out = tmp_path / "out"
    done = bulkopens("fetch", "--contacts", str(source), "--out", str(out), env=sim.env())
    assert done.returncode == 2, done.stderr
    assert said in done.stderr
    assert done.stderr.count("\n") == 1
    assert sim.stats()["requests"] == 0
    assert not out.exists()


# -- no trap in the nightly job ---------------------------------------------------------------


def test_quiet_still_says_that_contacts_failed_in_one_line(sim: SimProcess, tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.txt"
    contacts.write_text("1\n2\n61\n62\n63\nnot-an-id\n")
    out = tmp_path / "out"
    done = bulkopens(
        "fetch", "--contacts", str(contacts), "--out", str(out), "--rate", "0", "--quiet",
        env=sim.env(),
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == (
        f"bulkopens: 3 contacts failed, 1 input line not an id: see {out}/errors.ndjson\n"
    )


@pytest.mark.parametrize("url", ["https://api.constantcontact.com", "https://API.cc.email/"])
def test_rate_zero_is_refused_against_the_real_api(url: str, tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.txt"
    contacts.write_text("1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTCT_")}
    env.update(CTCT_API_KEY="k" * 12, CTCT_ACCESS_TOKEN="t" * 12)
    done = bulkopens(
        "fetch", "--contacts", str(contacts), "--out", str(tmp_path / "out"), "--rate", "0",
        "--base-url", url, env=env,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--rate 0" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_since_in_the_future_is_warned_about(sim: SimProcess, tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.txt"
    contacts.write_text("1\n")
    done = bulkopens(
        "fetch", "--contacts", str(contacts), "--out", str(tmp_path / "out"), "--rate", "0",
        "--since", "2999-01-01", env=sim.env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "warning: --since 2999-01-01T00:00:00.000Z is in the future" in done.stderr


def test_plan_prints_the_estimate_and_fetches_no_record(sim: SimProcess, tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.txt"
    contacts.write_text("".join(f"{i}\n" for i in range(1, 61)))
    out = tmp_path / "out"
    sim.reset_stats()
    done = bulkopens(
        "fetch", "--contacts", str(contacts), "--out", str(out), "--rate", "0", "--plan",
        env=sim.env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "plan for the opens of 60 contacts" in done.stdout
    assert "chosen:" in done.stdout
    assert not out.exists()
    spent = re.search(r"([\d,]+) requests? spent planning", done.stdout)
    assert spent is not None, done.stdout
    # Every request was the planner's (the campaign list, the summaries): no report page.
    assert sim.stats()["requests"] == int(spent.group(1).replace(",", ""))
    refused = bulkopens("fetch", "--campaigns", "sent", "--out", str(out), "--plan", env=sim.env())
    assert refused.returncode == 2
    assert "--plan is for contact reports" in refused.stderr


# -- fit the ecosystem: environment, JSON logs, a log file --------------------------------------


def test_options_come_from_the_environment_and_help_says_which(
    sim: SimProcess, tmp_path: Path
) -> None:
    contacts = tmp_path / "contacts.txt"
    contacts.write_text("1\n2\n")
    help_text = bulkopens("fetch", "--help").stdout
    for name in ("RATE", "CONCURRENCY", "PAGE_SIZE", "MAX_RETRIES", "LOG_FORMAT", "QUIET"):
        assert f"BULKOPENS_{name}" in help_text
    bad = bulkopens(
        "fetch", "--contacts", str(contacts), "--out", str(tmp_path / "o1"),
        env={**sim.env(), "BULKOPENS_RATE": "fast"},
    )  # fmt: skip
    assert bad.returncode == 2
    assert "'fast'" in bad.stderr
    bad = bulkopens(
        "fetch", "--contacts", str(contacts), "--out", str(tmp_path / "o2"),
        env={**sim.env(), "BULKOPENS_LOG_FORMAT": "xml"},
    )  # fmt: skip
    assert bad.returncode == 2
    assert "BULKOPENS_LOG_FORMAT" in bad.stderr
    quiet = bulkopens(
        "fetch", "--contacts", str(contacts), "--out", str(tmp_path / "o3"),
        env={**sim.env(), "BULKOPENS_QUIET": "1", "BULKOPENS_RATE": "0"},
    )  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""


def test_json_logs_are_one_object_per_line(sim: SimProcess, tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.txt"
    contacts.write_text("".join(f"{i}\n" for i in range(1, 41)) + "61\n")
    done = bulkopens(
        "fetch", "--contacts", str(contacts), "--out", str(tmp_path / "out"), "--rate", "20",
        "--log-format", "json", "--log-interval", "0.2", env=sim.env(),
    )  # fmt: skip
    assert done.returncode == 1
    events = [json.loads(line) for line in done.stderr.splitlines()]
    kinds = [e["event"] for e in events]
    assert "progress" in kinds
    assert kinds[-2:] == ["summary", "failures"] or kinds[-1] == "summary"
    progress = next(e for e in events if e["event"] == "progress")
    assert {"time", "level", "message", "requests", "records", "contacts_total"} <= set(progress)
    summary = next(e for e in events if e["event"] == "summary")
    assert summary["summary"]["totals"]["done"] == 40


def test_a_log_file_takes_the_words_and_errors_still_reach_stderr(
    sim: SimProcess, tmp_path: Path
) -> None:
    contacts = tmp_path / "contacts.txt"
    contacts.write_text("1\n2\n")
    log = tmp_path / "job.log"
    done = bulkopens(
        "fetch", "--contacts", str(contacts), "--out", str(tmp_path / "out"), "--rate", "0",
        "--log-file", str(log), env=sim.env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "complete" in log.read_text()
    failed = bulkopens(
        "fetch", "--contacts", str(contacts), "--out", str(tmp_path / "out"), "--rate", "0",
        "--report", "clicks", "--log-file", str(log), env=sim.env(),
    )  # fmt: skip
    assert failed.returncode == 2
    assert "other settings" in failed.stderr
    assert "other settings" in log.read_text()


def test_other_settings_on_an_out_are_named_as_a_person_reads_them(
    sim: SimProcess, tmp_path: Path
) -> None:
    contacts = tmp_path / "contacts.txt"
    contacts.write_text("1\n2\n")
    out = str(tmp_path / "out")
    first = bulkopens("fetch", "--contacts", str(contacts), "--out", out, env=sim.env())
    assert first.returncode == 0, first.stderr
    again = bulkopens(
        "fetch", "--contacts", str(contacts), "--out", out, "--strategy", "auto",
        "--report", "clicks", env=sim.env(),
    )  # fmt: skip
    assert again.returncode == 2
    assert "--report opens -> clicks" in again.stderr
    assert "--strategy contact -> auto" in again.stderr
    assert "None" not in again.stderr
    assert "'" not in again.stderr.split("(", 1)[1]


# -- check -------------------------------------------------------------------------------------


def test_check_proves_the_key_the_token_and_the_host_with_one_request(sim: SimProcess) -> None:
    sim.reset_stats()
    done = bulkopens("check", env=sim.env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"bulkopens: ok: {sim.url} answered as the Constant Contact")
    assert sim.stats()["requests"] == 1
    refused = bulkopens("check", "--api-key", "not-the-key", env=sim.env())
    assert refused.returncode == 3
    assert "not-the-key" not in refused.stderr + refused.stdout
    assert refused.stderr.startswith("bulkopens: error: authentication failed")


def test_check_says_when_the_host_is_dead_or_not_the_api(tmp_path: Path) -> None:
    from hostile import Hostile, mode

    env = {k: v for k, v in os.environ.items() if not k.startswith("CTCT_")}
    env.update(CTCT_API_KEY="k" * 12, CTCT_ACCESS_TOKEN="t" * 12)
    dead = bulkopens("check", "--base-url", "http://127.0.0.1:9", env=env)
    assert dead.returncode == 69
    assert "127.0.0.1:9" in dead.stderr
    assert "refused" in dead.stderr

    @mode("html-404")
    async def html_404(request: Any, server: Hostile) -> Any:
        from aiohttp import web

        return web.Response(status=404, text="<html>nothing here</html>", content_type="text/html")

    with Hostile("html-404") as server:
        wrong = bulkopens("check", "--base-url", server.url, env=env)
    assert wrong.returncode == 69
    assert "the Constant Contact API" in wrong.stderr


def test_windows_gets_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bulkopens.cli import main

    monkeypatch.setattr(sys, "platform", "win32")
    assert main(["fetch", "--contacts", "x", "--out", "y"]) == 2
    assert capsys.readouterr().err == (
        "bulkopens: error: bulkopens runs on POSIX systems (Linux, macOS): it needs fcntl and "
        "POSIX signals\n"
    )


def test_the_plan_says_when_the_chosen_path_does_not_fit_in_todays_quota(
    sim: SimProcess, tmp_path: Path
) -> None:
    contacts = tmp_path / "contacts.txt"
    contacts.write_text("".join(f"{i}\n" for i in range(1, 61)))
    args = ["fetch", "--contacts", str(contacts), "--out", str(tmp_path / "out"), "--plan"]
    fits = bulkopens(*args, env=sim.env())
    assert "requests fit in the 10,000 left today" in fits.stdout
    days = bulkopens(*args, "--daily-quota", "30", "--reserve", "5", env=sim.env())
    assert days.returncode == 0, days.stderr
    assert "left today (25 a day after --reserve): about 3 days" in days.stdout
    assert "do not fit" in days.stdout


def test_a_state_directory_that_cannot_be_written_is_said_at_once(
    sim: SimProcess, tmp_path: Path
) -> None:
    """A read-only home (a container): exit 2 with the way out, never a silent wait."""
    blocked = tmp_path / "file"
    blocked.write_text("")
    contacts = tmp_path / "contacts.txt"
    contacts.write_text("1\n")
    env = {**sim.env(), "BULKOPENS_STATE_DIR": str(blocked / "state")}
    done = bulkopens(
        "fetch", "--contacts", str(contacts), "--out", str(tmp_path / "out"), env=env, timeout=30
    )
    assert done.returncode == 2
    assert "BULKOPENS_STATE_DIR" in done.stderr
    assert "--budget process" in done.stderr
    alone = bulkopens(
        "fetch", "--contacts", str(contacts), "--out", str(tmp_path / "out"),
        "--budget", "process", env=env, timeout=30,
    )  # fmt: skip
    assert alone.returncode == 0, alone.stderr
