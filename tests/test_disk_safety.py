"""Nothing the tool did not write is deleted, cut or written through; a full disk, a closed
stderr or a hang-up end the run cleanly (issue 11, "disk"; issue 13, "no trap").

Every test runs the real ``bulkopens fetch`` (or ``demo``) in a subprocess against the
simulator in another (``simproc``), and byte-compares every file that was there before (and
the target of every planted link) before and after. Tests that mount a small tmpfs (the full
disk, a read-only ``.bulkopens``) need root and are skipped without it.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from simproc import SimProcess, bulkopens, read_ndjson, simulator

from bulkopens._files import RecordFiles
from bulkopens.cli._demo import write_contacts

IDS = [str(i) for i in range(1, 31)]  # all known to the simulators below: exit 0 when done
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="mounts a tmpfs (needs root)")


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    """Fault-free and unlimited: a 30-contact fetch takes well under a second."""
    with simulator("--contacts", "40", "--seed", "13", "--rate", "0", "--daily-quota", "0",
                   "--heavy-fraction", "0", "--empty-fraction", "0.1") as s:  # fmt: skip
        yield s


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[SimProcess]:
    """Answers take 100 ms: a run is under way long enough to signal it or close its stderr."""
    with simulator("--contacts", "40", "--seed", "13", "--rate", "0", "--daily-quota", "0",
                   "--heavy-fraction", "0", "--empty-fraction", "0.1",
                   "--latency-ms", "100") as s:  # fmt: skip
        yield s


def contacts_file(tmp_path: Path, ids: list[str] = IDS) -> Path:
    path = tmp_path / "contacts.txt"
    path.write_text("\n".join(ids) + "\n")
    return path


Run = subprocess.CompletedProcess[str]


def fetch(sim: SimProcess, contacts: Path, out: Path, *extra: str) -> Run:
    args = ["fetch", "--contacts", str(contacts), "--out", str(out), "--quiet", "--rate", "0"]
    return bulkopens(*args, *extra, env=sim.env(), timeout=60)


def snapshot(*roots: Path) -> dict[str, Any]:
    """Every file under ``roots`` (not under ``.bulkopens``): its bytes, or where its link
    points; a planted link's target is listed by its own path."""
    out: dict[str, Any] = {}
    for root in roots:
        paths = [root] if not root.is_dir() or root.is_symlink() else sorted(root.rglob("*"))
        for path in paths:
            if ".bulkopens" in path.parts:
                continue
            if path.is_symlink():
                out[str(path)] = ("link", os.readlink(path))
            elif path.is_file():
                out[str(path)] = path.read_bytes()
    return out


def multiset(records: list[dict[str, Any]]) -> collections.Counter[str]:
    return collections.Counter(json.dumps(r, sort_keys=True) for r in records)


def assert_exact(out: Path, sim: SimProcess, ids: list[str] = IDS) -> None:
    wanted = set(ids)
    truth = [r for r in sim.truth() if r["contact_id"] in wanted]
    got = read_ndjson(out.glob("opens-*.ndjson"))
    assert multiset(got) == multiset(truth), f"{len(got)} records, {len(truth)} expected"


def one_line(result: Run) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def refused(result: Run, *words: str) -> str:
    """The run was refused with exit 2 and one line holding ``words``."""
    assert result.returncode == 2, result.stderr
    line = one_line(result)
    for word in words:
        assert word in line, line
    return line


def completed(sim: SimProcess, contacts: Path, out: Path) -> dict[str, Any]:
    """A complete first run in ``out``; returns the snapshot of what it wrote."""
    first = fetch(sim, contacts, out)
    assert first.returncode == 0, first.stderr
    assert_exact(out, sim)
    return snapshot(out)


# -- 1. record files no state accounts for are refused, never deleted -------------------------


def _delete_state(out: Path) -> None:
    for path in sorted((out / ".bulkopens").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (out / ".bulkopens").rmdir()


def _empty_state(out: Path) -> None:
    for name in ("state.sqlite3-wal", "state.sqlite3-shm"):
        (out / ".bulkopens" / name).unlink(missing_ok=True)
    (out / ".bulkopens" / "state.sqlite3").write_bytes(b"")


@pytest.mark.parametrize("lose", [_delete_state, _empty_state], ids=["deleted", "emptied"])
@pytest.mark.parametrize("incremental", [False, True], ids=["rerun", "incremental"])
def test_record_files_without_their_state_are_refused_and_kept(
    tmp_path: Path, sim: SimProcess, lose: Any, incremental: bool
) -> None:
    contacts, out = contacts_file(tmp_path), tmp_path / "out"
    before = completed(sim, contacts, out)
    lose(out)
    sim.reset_stats()
    again = fetch(sim, contacts, out, *(["--incremental"] if incremental else []))
    refused(again, "opens-00001.ndjson", "no bulkopens state", "never deletes")
    assert snapshot(out) == before
    assert sim.stats()["requests"] == 0


def test_a_state_rolled_back_past_a_file_refuses_that_file(tmp_path: Path, sim: SimProcess) -> None:
    """A lost WAL or a restored backup: the state no longer knows the newest file."""
    contacts, out = contacts_file(tmp_path), tmp_path / "out"
    completed(sim, contacts, out)
    state = out / ".bulkopens" / "state.sqlite3"
    old_state = state.read_bytes()  # checkpointed at close: the whole state of run 1
    sim.add_activity("3", count=5)
    second = fetch(sim, contacts, out, "--incremental")
    assert second.returncode == 0, second.stderr
    assert (out / "opens-00002.ndjson").exists()
    before = snapshot(out)
    for name in ("state.sqlite3-wal", "state.sqlite3-shm"):
        (out / ".bulkopens" / name).unlink(missing_ok=True)
    state.write_bytes(old_state)
    refused(fetch(sim, contacts, out, "--incremental"), "opens-00002.ndjson")
    assert snapshot(out) == before


def test_a_users_own_record_file_is_refused_and_kept(tmp_path: Path, sim: SimProcess) -> None:
    contacts, out = contacts_file(tmp_path), tmp_path / "out"
    completed(sim, contacts, out)
    (out / "opens-00042.ndjson").write_bytes(b'{"mine": true}\n')
    before = snapshot(out)
    refused(fetch(sim, contacts, out), "opens-00042.ndjson")
    assert snapshot(out) == before


def test_a_new_out_holding_record_files_or_artifacts_is_refused(
    tmp_path: Path, sim: SimProcess
) -> None:
    contacts = contacts_file(tmp_path)
    for name in ("opens-00001.ndjson", "manifest.json"):
        out = tmp_path / name.replace(".", "-")
        out.mkdir()
        (out / name).write_bytes(b'{"somebody": "else"}\n' * 1000)
        before = snapshot(out)
        sim.reset_stats()
        refused(fetch(sim, contacts, out), name, "another --out")
        assert snapshot(out) == before
        assert sim.stats()["requests"] == 0
        (out / name).unlink()  # moved away: the same command now runs
        assert fetch(sim, contacts, out).returncode == 0
        assert_exact(out, sim)


# -- 2. --fresh removes only what this tool wrote -------------------------------------------


def test_fresh_removes_only_what_the_tool_wrote(tmp_path: Path, sim: SimProcess) -> None:
    contacts, out = contacts_file(tmp_path), tmp_path / "out"
    completed(sim, contacts, out)
    own = {
        "clicks-00001.ndjson": b'{"clicks": "of another export"}\n',
        "notes.ndjson": b'{"note": 1}\n',
        "contacts.csv": b"contact_id\n1\n",
    }
    for name, data in own.items():
        (out / name).write_bytes(data)
    fresh = fetch(sim, contacts, out, "--fresh")
    assert fresh.returncode == 0, fresh.stderr
    for name, data in own.items():
        assert (out / name).read_bytes() == data, name
    assert_exact(out, sim)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["name"] for r in manifest["runs"] for f in r["files"]] == ["opens-00001.ndjson"]


# -- 3. planted links are refused, their targets untouched ------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        ".bulkopens-write-test",
        "summary.json.tmp",
        "manifest.json.tmp",
        "errors.ndjson.tmp",
        "summary.json",
        "opens-00001.ndjson",  # a committed record file replaced by a link
        ".bulkopens/lock",
        ".bulkopens/state.sqlite3-wal",
        ".bulkopens",
    ],
)
def test_a_planted_link_is_refused_and_its_target_untouched(
    tmp_path: Path, sim: SimProcess, name: str
) -> None:
    contacts, out = contacts_file(tmp_path), tmp_path / "out"
    completed(sim, contacts, out)
    target = tmp_path / "precious"
    if name == ".bulkopens":
        (out / ".bulkopens").rename(target)
    else:
        target.write_bytes(b'{"precious": "data"}\n' * 50_000)  # ~1 MB
        (out / name).unlink(missing_ok=True)
    (out / name).symlink_to(target)
    before = snapshot(out, target)
    result = fetch(sim, contacts, out)
    refused(result, "symbolic link", name.split("/")[-1])
    assert snapshot(out, target) == before


def test_a_link_at_the_next_record_file_is_refused(tmp_path: Path, sim: SimProcess) -> None:
    contacts, out = contacts_file(tmp_path), tmp_path / "out"
    completed(sim, contacts, out)
    target = tmp_path / "precious"
    target.write_bytes(b"x" * 1000)
    (out / "opens-00002.ndjson").symlink_to(target)
    sim.add_activity("2", count=3)
    before = snapshot(out, target)
    refused(fetch(sim, contacts, out, "--incremental"), "opens-00002.ndjson")
    assert snapshot(out, target) == before


# -- 4. a committed file changed behind the tool's back is refused -----------------------------


def _pretty_print(path: Path) -> None:
    lines = path.read_text().splitlines()
    path.write_text("".join(json.dumps(json.loads(line), indent=2) + "\n" for line in lines))


def _same_size_edit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    at = data.rindex(b'"contact_id":"') + len(b'"contact_id":"')
    data[at] = ord("9") if data[at] != ord("9") else ord("8")
    path.write_bytes(bytes(data))


def _cut_and_extended(path: Path) -> None:
    """The committed span's last line replaced by another, then more lines after it."""
    data = path.read_bytes()
    head = data[: data.rindex(b"\n", 0, len(data) - 1) + 1]
    path.write_bytes(head + b'{"replaced": 1}\n' + b'{"more": 2}\n' * 40)


@pytest.mark.parametrize(
    "change", [_pretty_print, _same_size_edit, _cut_and_extended],
    ids=["pretty-printed", "same-size-edit", "replaced-tail"],
)  # fmt: skip
def test_a_committed_file_changed_behind_the_tools_back_is_refused(
    tmp_path: Path, sim: SimProcess, change: Any
) -> None:
    contacts, out = contacts_file(tmp_path), tmp_path / "out"
    completed(sim, contacts, out)
    change(out / "opens-00001.ndjson")
    before = snapshot(out)
    refused(fetch(sim, contacts, out), "opens-00001.ndjson", "changed")
    assert snapshot(out) == before


# -- 5. a full disk: its own exit code, honest advice, exact after freeing space --------------


@contextlib.contextmanager
def tmpfs(path: Path, *options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)],
                   check=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(path: Path) -> None:
    """Take every byte left on ``path``'s filesystem."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 65536)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def big_sim() -> Iterator[SimProcess]:
    """About 3.7 MB of opens for 30 contacts: more than the small tmpfs holds."""
    with simulator("--contacts", "40", "--seed", "5", "--rate", "0", "--daily-quota", "0",
                   "--heavy-fraction", "0.6") as s:  # fmt: skip
        yield s


def _assert_full_disk_stop(result: Run) -> None:
    assert result.returncode == 74, result.stderr
    line = one_line(result)
    assert "no space left" in line.lower() or "disk is full" in line.lower(), line
    assert "free space and run the same command again" in line, line
    assert "--fresh" not in result.stderr
    assert "unreadable" not in result.stderr


@needs_root
@pytest.mark.timeout(90)
@pytest.mark.parametrize("size", ["1m", "3m"])
def test_a_full_disk_stops_with_exit_74_and_resumes_exactly(
    tmp_path: Path, big_sim: SimProcess, size: str
) -> None:
    truth_bytes = sum(len(json.dumps(r)) for r in big_sim.truth() if r["contact_id"] in IDS)
    assert truth_bytes > 3_500_000, truth_bytes  # the data cannot fit
    contacts = contacts_file(tmp_path)
    with tmpfs(tmp_path / "disk", f"size={size}") as disk:
        out = disk / "out"
        out.mkdir()
        (out / "notes.txt").write_bytes(b"a user's own file\n" * 100)
        (disk / "beside.bin").write_bytes(os.urandom(100_000))
        kept = snapshot(out / "notes.txt", disk / "beside.bin")

        first = fetch(big_sim, contacts, out)
        _assert_full_disk_stop(first)
        summary = json.loads((out / "summary.json").read_text())  # the artifacts still fit
        assert summary["status"] == "output_error"
        assert "no space left" in summary["error"].lower()

        _assert_full_disk_stop(fetch(big_sim, contacts, out))  # still full: the same stop
        _fill(disk / "filler")  # not a byte left, not even for the state
        _assert_full_disk_stop(fetch(big_sim, contacts, out))

        (disk / "filler").unlink()
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        done = fetch(big_sim, contacts, out)
        assert done.returncode == 0, done.stderr
        assert_exact(out, big_sim)
        assert snapshot(out / "notes.txt", disk / "beside.bin") == kept
        assert json.loads((out / "summary.json").read_text())["status"] == "complete"


# -- 6. .bulkopens that cannot hold the state is a configuration error ------------------------


def test_a_bulkopens_that_is_a_file_is_a_configuration_error(
    tmp_path: Path, sim: SimProcess
) -> None:
    contacts, out = contacts_file(tmp_path), tmp_path / "out"
    out.mkdir()
    (out / ".bulkopens").write_bytes(b"not a directory\n")
    before = snapshot(out)
    refused(fetch(sim, contacts, out), ".bulkopens", "not a directory")
    assert snapshot(out) == before


@needs_root
def test_a_read_only_bulkopens_is_a_configuration_error(tmp_path: Path, sim: SimProcess) -> None:
    contacts, out = contacts_file(tmp_path), tmp_path / "out"
    out.mkdir()
    with tmpfs(out / ".bulkopens", "size=1m", "ro"):
        refused(fetch(sim, contacts, out), ".bulkopens")


# -- 7. SIGHUP stops like SIGTERM; a closed stderr never stops the work ----------------------


def _start(
    sim: SimProcess, contacts: Path, out: Path, *extra: str, stderr: Any
) -> subprocess.Popen[bytes]:
    args = ["fetch", "--contacts", str(contacts), "--out", str(out), *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "bulkopens", *args],
        env=sim.env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def test_sighup_commits_exits_130_and_resumes_exactly(tmp_path: Path, slow_sim: SimProcess) -> None:
    contacts, out = contacts_file(tmp_path), tmp_path / "out"
    with open(tmp_path / "stderr.txt", "wb") as err:
        proc = _start(slow_sim, contacts, out, "--rate", "10", stderr=err)
        try:
            deadline = time.monotonic() + 20
            while not list(out.glob("opens-*.ndjson")) and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)
            assert proc.poll() is None, "the run ended before the hang-up"
            proc.send_signal(signal.SIGHUP)
            code = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert code == 130, stderr
    assert "stopping; committing" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    again = fetch(slow_sim, contacts, out, "--concurrency", "30")
    assert again.returncode == 0, again.stderr
    assert_exact(out, slow_sim)


def test_a_closed_stderr_never_stops_the_work(tmp_path: Path, slow_sim: SimProcess) -> None:
    """``bulkopens fetch ... 2>&1 | head -1``: the reader goes away after one line."""
    contacts, out = contacts_file(tmp_path), tmp_path / "out"
    proc = _start(slow_sim, contacts, out, "--rate", "20", "--log-interval", "0.05",
                  stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        proc.stderr.close()  # head -1 exits: every later write to stderr fails (EPIPE)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert b"bulkopens" in first
    assert code == 0
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"
    assert_exact(out, slow_sim)


# -- 8. a CSV that cannot be read exactly is one line and exit 2 -----------------------------


def _multiline_field(path: Path) -> None:
    notes = "\n".join("n" * 4000 for _ in range(40))  # 160,000 characters in one quoted field
    path.write_text(f'contact_id,notes\n1,"{notes}"\n2,x\n')


def _long_line(path: Path) -> None:
    path.write_text(f'contact_id,notes\n1,"{"n" * 5000}"\n2,x\n3,y\n')


@pytest.mark.parametrize("write", [_multiline_field, _long_line], ids=["field-limit", "long-line"])
@pytest.mark.parametrize("stdin", [False, True], ids=["file", "stdin"])
def test_an_unreadable_csv_is_one_line_and_exit_2(
    tmp_path: Path, sim: SimProcess, write: Any, stdin: bool
) -> None:
    csv_path, out = tmp_path / "export.csv", tmp_path / "out"
    write(csv_path)
    args = ["fetch", "--contacts", "-" if stdin else str(csv_path), "--out", str(out), "--quiet"]
    result = bulkopens(*args, env=sim.env(), timeout=60,
                       stdin=csv_path.read_text() if stdin else None)  # fmt: skip
    refused(result, "line 2", "cannot read it as CSV")


# -- 9. the demo never overwrites a contacts.txt that is not its own --------------------------


@pytest.mark.parametrize("planted", ["file", "link"])
def test_the_demo_keeps_a_contacts_file_that_is_not_its_own(tmp_path: Path, planted: str) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    mine = tmp_path / "my-contacts.txt"
    mine.write_text("contact_id\n101\n102\n")
    if planted == "file":
        (out / "contacts.txt").write_bytes(mine.read_bytes())
    else:
        (out / "contacts.txt").symlink_to(mine)
    before = snapshot(out, mine)
    result = bulkopens("demo", "--out", str(out), "--quiet", "--contacts", "20", timeout=60)
    refused(result, "contacts.txt")
    assert snapshot(out, mine) == before


def test_the_demo_rewrites_its_own_contacts_file(tmp_path: Path) -> None:
    path = tmp_path / "contacts.txt"
    write_contacts(path, 50)
    write_contacts(path, 20)  # a second demo run: its own file, replaced
    lines = path.read_text().splitlines()
    assert lines[2:4] == ["1", "2"]
    assert "20" in lines
    assert "50" not in lines


# -- 10. the file-ownership proof itself ------------------------------------------------------


def test_a_file_made_before_a_kill_is_recovered_but_an_impostor_is_not(tmp_path: Path) -> None:
    """The staging link proves a file uncommitted at a kill was the tool's own; a file put in
    its place (another inode) is not, and is refused."""
    (tmp_path / ".bulkopens").mkdir()
    killed = RecordFiles(tmp_path, "opens", max_bytes=1 << 20)
    killed.recover({})
    killed.write(b'{"a":1}\n', 1)
    killed.sync()  # written, never committed: the process dies here
    killed.close()
    RecordFiles(tmp_path, "opens", max_bytes=1 << 20).recover({})
    assert not (tmp_path / "opens-00001.ndjson").exists()
    assert list((tmp_path / ".bulkopens" / "new").iterdir()) == []

    again = RecordFiles(tmp_path, "opens", max_bytes=1 << 20)
    again.recover({})
    again.write(b'{"a":1}\n', 1)
    again.sync()
    again.close()
    impostor = tmp_path / "opens-00001.ndjson"
    impostor.unlink()
    impostor.write_bytes(b'{"someone": "else"}\n')  # same name, another file
    with pytest.raises(Exception, match="no bulkopens state"):
        RecordFiles(tmp_path, "opens", max_bytes=1 << 20).recover({})
    assert impostor.read_bytes() == b'{"someone": "else"}\n'
