"""The state store: claims (dedupe, resume, skip), commits, runs, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulkopens._exceptions import ConfigurationError
from bulkopens._files import RecordFiles
from bulkopens._state import DONE, FAILED, GONE, FileMark, ItemMark, Store

FP = {"report": "opens", "since": None, "base_url": "https://api.constantcontact.com/"}


def open_store(tmp_path: Path, **kw: object) -> Store:
    return Store.open(tmp_path, fingerprint=kw.pop("fingerprint", FP), **kw)  # type: ignore[arg-type]


def test_new_ids_are_claimed_once_per_attempt(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    claims = store.claim(["1", "2", "1", "3"], since=None, retry_failed=False)
    assert [(c.item_id, c.work is not None, c.why) for c in claims] == [
        ("1", True, ""),
        ("2", True, ""),
        ("1", False, "duplicate"),
        ("3", True, ""),
    ]
    again = store.claim(["2"], since=None, retry_failed=False)
    assert again[0].why == "duplicate"
    store.close()


def test_resume_skips_done_and_continues_from_the_cursor(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.claim(["1", "2", "3", "4"], since=None, retry_failed=False)
    store.commit(
        [FileMark("opens-00001.ndjson", 1, 100, 3)],
        {
            "1": ItemMark(status=DONE),
            "2": ItemMark(cursor="/v2/contacts/2/tracking/opens?next=P3"),
            "3": ItemMark(status=GONE, http_status=404, error_key="nf", error="not found"),
            "4": ItemMark(status=FAILED, cursor="/v2/x?next=P9", http_status=503),
        },
        [],
        3,
        "2024-01-01T00:00:00.000Z",
        "2024-02-01T00:00:00.000Z",
    )
    store.close()

    store = open_store(tmp_path)
    assert store.attempt == 2
    assert store.run == 1
    claims = {
        c.item_id: c for c in store.claim(["1", "2", "3", "4", "5"], since=None, retry_failed=False)
    }
    assert claims["1"].why == "done"
    assert claims["2"].work is not None
    assert claims["2"].work.cursor == "/v2/contacts/2/tracking/opens?next=P3"
    assert claims["3"].why == "failed"
    assert claims["4"].work is not None
    assert claims["4"].work.cursor == "/v2/x?next=P9"  # a transient failure resumes too
    assert claims["5"].work is not None
    assert claims["5"].work.cursor is None
    assert store.committed_files() == {"opens-00001.ndjson": 100}
    store.close()

    store = open_store(tmp_path)
    claims = {c.item_id: c for c in store.claim(["3"], since=None, retry_failed=True)}
    assert claims["3"].work is not None  # --retry-failed
    store.close()


def test_uncommitted_claims_and_progress_are_rolled_back(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.claim(["1"], since=None, retry_failed=False)
    store.close()  # a crash before the writer's first commit
    store = open_store(tmp_path)
    (claim,) = store.claim(["1"], since=None, retry_failed=False)
    assert claim.work is not None
    assert claim.work.cursor is None
    store.close()


def test_failures_and_counts(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.claim(["1", "2", "3"], since=None, retry_failed=False)
    store.commit(
        [],
        {
            "1": ItemMark(status=DONE),
            "2": ItemMark(status=GONE, http_status=404, error_key="k", error="gone"),
            "3": ItemMark(status=FAILED, http_status=503, error_key="t", error="flaky"),
        },
        ["abc", "../x"],
        0,
        None,
        None,
    )
    rows = list(store.failures())
    assert [r["contact_id"] for r in rows] == ["2", "3", "../x", "abc"]
    assert rows[0] == {
        "contact_id": "2",
        "status": 404,
        "error_key": "k",
        "error": "gone",
        "retryable": False,
    }
    assert rows[1]["retryable"] is True
    assert rows[2]["status"] is None
    counts = store.counts()
    assert counts == {"pending": 0, "done": 1, "failed": 1, "failed_for_good": 1, "invalid": 2}
    store.close()


def test_incremental_run_asks_for_what_is_new(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.claim(["1", "2"], since=None, retry_failed=False)
    newest = "2024-05-05T05:05:05.005Z"
    store.commit(
        [],
        {
            "1": ItemMark(status=DONE, newest=newest, newest_seen=frozenset({b"12345678"})),
            "2": ItemMark(status=DONE),
        },
        [],
        1,
        newest,
        newest,
    )
    store.finish(complete=True)
    store.close()

    store = open_store(tmp_path, incremental=True)
    assert store.run == 2
    claims = {c.item_id: c for c in store.claim(["1", "2", "3"], since=None, retry_failed=False)}
    w1 = claims["1"].work
    assert w1 is not None
    assert w1.since == newest
    assert w1.seen_at_since == frozenset({b"12345678"})
    assert w1.cursor is None
    assert claims["2"].work is not None
    assert claims["2"].work.since is None
    assert claims["3"].work is not None
    runs = store.runs()
    assert [r["run"] for r in runs] == [1, 2]
    assert runs[0]["complete"] is True
    assert runs[1]["incremental"] is True
    store.close()


def test_incremental_after_an_incomplete_run_continues_it(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.finish(complete=False)
    store.close()
    store = open_store(tmp_path, incremental=True)
    assert store.run == 1
    store.close()


def test_other_settings_are_refused(tmp_path: Path) -> None:
    open_store(tmp_path).close()
    other = dict(FP, since="2024-01-01T00:00:00.000Z")
    with pytest.raises(ConfigurationError, match=r"since.*--fresh"):
        open_store(tmp_path, fingerprint=other)


def test_second_process_is_refused(tmp_path: Path) -> None:
    first = open_store(tmp_path)
    with pytest.raises(ConfigurationError, match="another bulkopens run"):
        open_store(tmp_path)
    first.close()
    open_store(tmp_path).close()


def test_files_are_cut_back_and_orphans_removed(tmp_path: Path) -> None:
    (tmp_path / "opens-00001.ndjson").write_bytes(b'{"a":1}\n{"a":2}\n{"a":')
    (tmp_path / "clicks-00001.ndjson").write_bytes(b"other report\n")
    crashed = RecordFiles(tmp_path, "opens", max_bytes=10)
    crashed.recover({"opens-00001.ndjson": 8})
    crashed.write(b'{"b":1}\n', 1)  # opens-00002: made by the tool, never committed
    crashed.sync()
    crashed.close()
    files = RecordFiles(tmp_path, "opens", max_bytes=10)
    files.recover({"opens-00001.ndjson": 8})
    assert (tmp_path / "opens-00001.ndjson").read_bytes() == b'{"a":1}\n'
    assert not (tmp_path / "opens-00002.ndjson").exists()
    assert (tmp_path / "clicks-00001.ndjson").exists()
    files.write(b'{"c":1}\n{"c":2}\n', 2)
    files.write(b'{"c":3}\n', 1)  # over max_bytes: rotates
    marks = files.sync()
    assert [m[:3] for m in marks] == [("opens-00002.ndjson", 16, 2), ("opens-00003.ndjson", 8, 1)]
    files.close()


def test_an_orphan_the_tool_did_not_make_is_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / "opens-00001.ndjson").write_bytes(b'{"a":1}\n{"a":2}\n')
    (tmp_path / "opens-00002.ndjson").write_bytes(b'{"b":1}\n')  # not the tool's
    files = RecordFiles(tmp_path, "opens", max_bytes=10)
    with pytest.raises(ConfigurationError, match=r"opens-00002\.ndjson"):
        files.recover({"opens-00001.ndjson": 8})
    assert (tmp_path / "opens-00001.ndjson").read_bytes() == b'{"a":1}\n{"a":2}\n'
    assert (tmp_path / "opens-00002.ndjson").read_bytes() == b'{"b":1}\n'


def test_a_committed_file_that_shrank_is_refused(tmp_path: Path) -> None:
    (tmp_path / "opens-00001.ndjson").write_bytes(b"x\n")
    files = RecordFiles(tmp_path, "opens", max_bytes=1000)
    with pytest.raises(ConfigurationError, match="--fresh"):
        files.recover({"opens-00001.ndjson": 50})
