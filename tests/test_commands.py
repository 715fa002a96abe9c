"""The commands beside ``fetch`` that a cron job leans on: ``status`` (a job watched while it
runs, after it is killed, and when done), run as a user runs them, in a subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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

    done = bulkopens(*[a if a != "20" else "0" for a in args], env=slow_sim.env())
    assert done.returncode == 0, done.stderr
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
