"""A server that lies in its pages: loops, floods, links out of the API, echoed secrets, records
no parser round-trips. Each fails the contact it concerns, with a clear row in errors.ndjson,
never the run, never a record twice, never a request outside the API; the real command runs
against tests/hostile.py's modes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hostile import BAD_LINKS, EXACT_BODY, Hostile, contact_of, json_response, page_body, record
from simproc import bulkopens

KEY, TOKEN = "hostile-key-5f2e9a", "hostile-token-a81c3d"


def env(server: Hostile) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("CTCT_")}
    out.update(CTCT_API_KEY=KEY, CTCT_ACCESS_TOKEN=TOKEN, CTCT_BASE_URL=server.url)
    return out


def fetch(server: Hostile, tmp: Path, ids: range, *extra: str) -> tuple[Any, Path]:
    contacts = tmp / "contacts.txt"
    contacts.write_text("".join(f"{i}\n" for i in ids))
    out = tmp / "out"
    args = ["fetch", "--contacts", str(contacts), "--out", str(out), "--rate", "0", "--quiet"]
    return bulkopens(*args, *extra, env=env(server), timeout=60), out


def errors(out: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in (out / "errors.ndjson").read_text().splitlines()]
    return {row["contact_id"]: row for row in rows}


def lines(out: Path) -> list[bytes]:
    return [
        line for p in sorted(out.glob("opens-*.ndjson")) for line in p.read_bytes().splitlines()
    ]


@pytest.mark.parametrize("mode", ["loop-back", "cycle"])
def test_a_page_loop_fails_the_contact_and_writes_each_record_once(
    mode: str, tmp_path: Path
) -> None:
    with Hostile(mode) as server:
        done, out = fetch(server, tmp_path, range(1, 6))
        requests = server.count()
    assert done.returncode == 1, done.stderr
    failed = errors(out)
    assert sorted(failed) == ["1", "2", "3", "4", "5"]
    assert {row["error_key"] for row in failed.values()} == {"bulkopens.page_loop"}
    assert all(not row["retryable"] for row in failed.values())
    written = lines(out)
    assert len(written) == len(set(written))  # nothing twice
    # loop-back: pages 1 and 2 written, then page 1 again under another URL (not written);
    # cycle: pages 1, 3 and 2, then a link back to page 3's URL (not followed).
    pages = 2 if mode == "loop-back" else 3
    assert len(written) == 5 * pages
    assert requests == 5 * 3
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"


def test_a_loop_resumed_with_retry_failed_against_a_fixed_server_is_exact(tmp_path: Path) -> None:
    with Hostile("loop-back") as server:
        done, out = fetch(server, tmp_path, range(1, 3))
        assert done.returncode == 1
        before = lines(out)
        server.handler = fixed
        again, out = fetch(server, tmp_path, range(1, 3), "--retry-failed")
    assert again.returncode == 0, again.stderr
    after = lines(out)
    assert len(after) == len(set(after)) == 6
    assert set(before) <= set(after)


# The server, fixed: page 2 now ends the report, with one more, older record.
async def fixed(request: Any, server: Hostile) -> Any:
    cid, n = contact_of(request), int(request.query.get("next", "1"))
    if n == 1:
        return json_response(
            page_body([record(cid, 9)], f"/v2/contacts/{cid}/tracking/opens?next=2")
        )
    return json_response(page_body([record(cid, 8), record(cid, 7)]))


def test_more_records_than_the_limit_fail_the_contact_and_write_nothing(tmp_path: Path) -> None:
    with Hostile("flood") as server:
        done, out = fetch(server, tmp_path, range(1, 4), "--page-size", "10")
    assert done.returncode == 1
    assert {row["error_key"] for row in errors(out).values()} == {"bulkopens.too_many_records"}
    assert lines(out) == []


def test_a_next_link_that_leaves_the_api_fails_one_contact_never_the_run(tmp_path: Path) -> None:
    n = len(BAD_LINKS)
    with Hostile("bad-link") as server:
        done, out = fetch(server, tmp_path, range(1, 2 * n + 1))
        paths = [seen.path_qs for seen in server.requests]
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    failed = errors(out)
    assert len(failed) == 2 * n
    assert {row["error_key"] for row in failed.values()} == {"bulkopens.foreign_next_link"}
    assert len(lines(out)) == 2 * n  # each contact's first page, once
    assert len(paths) == 2 * n  # not one link was followed
    assert not any("admin" in p for p in paths)
    for name in ("summary.json", "manifest.json"):
        assert (out / name).exists()


def test_credentials_echoed_into_a_link_are_never_followed_stored_or_shown(
    tmp_path: Path,
) -> None:
    with Hostile("echo-secret") as server:
        done, out = fetch(server, tmp_path, range(1, 4))
        requests = server.count()
    assert done.returncode == 1
    assert requests == 3
    for path in [*out.rglob("*"), *out.glob(".bulkopens/*")]:
        if path.is_file():
            data = path.read_bytes()
            assert KEY.encode() not in data, path
            assert TOKEN.encode() not in data, path
    assert KEY not in done.stderr + done.stdout
    assert TOKEN not in done.stderr + done.stdout


def test_records_are_written_byte_for_byte_as_sent(tmp_path: Path) -> None:
    with Hostile("exact") as server:
        done, out = fetch(server, tmp_path, range(1, 3))
    assert done.returncode == 0, done.stderr
    written = sorted(lines(out))
    assert len(written) == 4
    assert b'"big":123456789012345678901234567890,"k":1,"k":2,"f":1.50}' in written[0]
    assert b"[" * 300 in written[2] + written[3]
    assert EXACT_BODY.count(b"9999-12-31T23:59:59-10:00") == 1
    assert sum(b"9999-12-31T23:59:59-10:00" in line for line in written) == 2


def test_a_campaign_list_that_loops_stops_at_once(tmp_path: Path) -> None:
    with Hostile("campaign-list-cycle") as server:
        out = tmp_path / "out"
        done = bulkopens(
            "fetch", "--campaigns", "sent", "--out", str(out), "--rate", "0", "--quiet",
            env=env(server), timeout=60,
        )  # fmt: skip
        requests = server.count()
    assert done.returncode == 2
    assert "loop" in done.stderr
    assert requests <= 3
