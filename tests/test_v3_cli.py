"""``bulkopens fetch --api v3``: the documented command in a subprocess against the simulator in
another (``simproc``), for every guarantee the v2 batch job is tested for (issue 15, "Tests"):
exact output under faults and kill -9, Ctrl-C, the campaign path, incremental and --since,
throttles and the quota, a token file renewed during a run and by two processes at once,
invalid_grant, secrets in no file or stream, and bad input.

Contact ids are the simulator's v3 UUIDs (from its xref endpoint); records are compared with
``/_sim/v3/truth`` byte for byte (activity_details as the API sent them, without names).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from simproc import TOKEN, SimProcess, bulkopens, simulator
from v3kit import activities, assert_exact, max_in_window, record_lines

from bulkopens._tokens import TokenSet, read_tokens, write_tokens

CLIENT_ID = "v3cli-client-8d2k4q"
CLIENT_SECRET = "v3cli-secret-5r7t1w"
SIM_LIMITS = ("--rate", "0", "--daily-quota", "0")
APP = ("--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET, "--token-rate", "0")
FAULTS = ("--error-rate", "0.05", "--reset-rate", "0.02", "--truncate-rate", "0.02")
UNKNOWN_UUID = "6f1c2b7e-0d3a-4b5c-8e9f-a0b1c2d3e4f5"


# -- helpers --------------------------------------------------------------------------------


def v3_get(sim: SimProcess, path: str, token: str = TOKEN) -> Any:
    request = urllib.request.Request(sim.url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def contact_uuids(sim: SimProcess, numbers: Iterable[int]) -> list[str]:
    """The v3 ids of v2 contacts, from the API's own xref endpoint."""
    wanted = [str(n) for n in numbers]
    found: dict[str, str] = {}
    for start in range(0, len(wanted), 500):
        chunk = ",".join(wanted[start : start + 500])
        data = v3_get(sim, f"/v3/contacts/contact_id_xrefs?sequence_ids={chunk}")
        found.update({str(x["sequence_id"]): x["contact_id"] for x in data["xrefs"]})
    return [found[n] for n in wanted]


def truth_lines(sim: SimProcess, contacts: Iterable[str], types: str = "em_opens") -> list[bytes]:
    """Every activity_details record of these contacts, as the API writes it (no names)."""
    wanted = set(contacts)
    body = sim._get(f"/_sim/v3/truth?types={types}&names=false")
    return [ln for ln in body.splitlines() if ln and json.loads(ln)["contact_id"] in wanted]


def write_ids(path: Path, ids: Iterable[str]) -> Path:
    path.write_text("# v3 contacts\n" + "".join(f"{i}\n" for i in ids))
    return path


def base_env(sim: SimProcess, tmp_path: Path, **extra: str) -> dict[str, str]:
    """No credential of the caller's; this simulator; a config dir of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTCT_", "BULKOPENS_"))}
    env.update(
        CTCT_API="v3",
        CTCT_BASE_URL=sim.url,
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        BULKOPENS_STATE_DIR=os.environ["BULKOPENS_STATE_DIR"],
        XDG_STATE_HOME=os.environ["XDG_STATE_HOME"],
    )
    env.update(extra)
    return env


def token_env(sim: SimProcess, tmp_path: Path) -> dict[str, str]:
    """The static token (the simulator's never-expiring ``--token``)."""
    return base_env(sim, tmp_path, CTCT_ACCESS_TOKEN=TOKEN)


def file_env(sim: SimProcess, tmp_path: Path, token_file: Path) -> dict[str, str]:
    """The token file of ``auth login``, renewed by the run (a confidential app)."""
    return base_env(
        sim,
        tmp_path,
        CTCT_TOKEN_FILE=str(token_file),
        CTCT_CLIENT_ID=CLIENT_ID,
        CTCT_CLIENT_SECRET=CLIENT_SECRET,
        CTCT_AUTH_URL=sim.url + "/oauth2/default/v1",
    )


def mint(sim: SimProcess, path: Path, *, expires_in: float, age: float = 0.0) -> dict[str, Any]:
    """A token file at ``path`` (as ``auth login`` leaves it), obtained ``age`` seconds ago."""
    answer: dict[str, Any] = json.loads(sim._post(f"/_sim/tokens?expires_in={expires_in}"))
    tokens = TokenSet.from_answer(
        answer,
        client_id=CLIENT_ID,
        token_url=sim.url + "/oauth2/default/v1/token",
        now=time.time() - age,
        flow="device",
    )
    write_tokens(path, tokens)
    return answer


def token_requests(sim: SimProcess) -> dict[str, int]:
    found: dict[str, int] = sim.stats()["token_requests"]
    return found


def fetch_args(contacts: Path, out: Path, *extra: str) -> list[str]:
    return ["fetch", "--contacts", str(contacts), "--out", str(out), "--quiet", *extra]


def run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return bulkopens(*args, env=env, timeout=timeout)


def start(args: list[str], env: dict[str, str], stderr: Path) -> subprocess.Popen[bytes]:
    with open(stderr, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "bulkopens", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def summary_of(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return data


def errors_of(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "errors.ndjson").read_text().splitlines()]


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def clean_sim() -> Iterator[SimProcess]:
    """Fault-free and unlimited, shared by the tests that do not change its data."""
    with simulator("--contacts", "120", "--campaigns", "10", "--heavy-fraction", "0.03",
                   "--seed", "21", *SIM_LIMITS, *APP) as sim:  # fmt: skip
        yield sim


# -- 1 and 3. kill -9 at random moments under faults, then the same command: byte-exact -------


@pytest.mark.timeout(90)
def test_kill9_under_faults_then_rerun_writes_every_record_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(15)
    sim_args = ("--contacts", "300", "--heavy-fraction", "0.02", "--latency-ms", "5",
                "--jitter-ms", "5", "--seed", "15", *SIM_LIMITS, *APP, *FAULTS)  # fmt: skip
    with simulator(*sim_args) as sim:
        contacts = contact_uuids(sim, range(1, 301))
        rng.shuffle(contacts)
        path = write_ids(
            tmp_path / "contacts.txt", [*contacts, contacts[0].upper(), UNKNOWN_UUID, "junk"]
        )
        out = tmp_path / "out"
        env = token_env(sim, tmp_path)
        args = fetch_args(path, out, "--rate", "300", "--page-size", "20")
        kills = 0
        for attempt in range(4):
            proc = start(args, env, tmp_path / f"stderr-{attempt}.txt")
            time.sleep(rng.uniform(0.3, 1.2))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            code = proc.wait(timeout=30)
            assert code in (-signal.SIGKILL, 0, 1), (tmp_path / f"stderr-{attempt}.txt").read_text()

        final = run(args, env)
        assert final.returncode == 1, final.stderr  # the unknown UUID and the junk line
        assert "Traceback" not in final.stderr
        want = truth_lines(sim, contacts)
        assert_exact(record_lines(out), want)
        assert sorted((e["contact_id"], e["status"], e["retryable"]) for e in errors_of(out)) == [
            (UNKNOWN_UUID, 404, False),
            ("junk", None, False),
        ]
        summary = summary_of(out)
        assert summary["status"] == "complete"
        assert summary["totals"] == {
            "pending": 0, "done": 300, "failed": 0, "failed_for_good": 1, "invalid": 1,
        }  # fmt: skip
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["runs"][0]["records"] == len(want)
        assert kills >= 2
        assert manifest["runs"][0]["attempts"] >= 2, "no kill landed after the run started"
        assert summary["records"] < len(want)  # earlier attempts' work was kept
        assert sim.stats()["status_counts"].get("200", 0) > 0


@pytest.mark.timeout(60)
def test_sigint_exits_130_commits_and_the_same_command_resumes(tmp_path: Path) -> None:
    with simulator("--contacts", "150", "--heavy-fraction", "0.02", "--seed", "4",
                   "--latency-ms", "100", *SIM_LIMITS, *APP) as sim:  # fmt: skip
        contacts = contact_uuids(sim, range(1, 151))
        path = write_ids(tmp_path / "contacts.txt", contacts)
        out = tmp_path / "out"
        env = token_env(sim, tmp_path)
        proc = start(fetch_args(path, out, "--rate", "5"), env, tmp_path / "stderr.txt")
        try:
            wait_until(lambda: list(out.glob("opens-*")) or proc.poll() is not None, 20, "a file")
            time.sleep(1.5)
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr = (tmp_path / "stderr.txt").read_text()
        assert code == 130, stderr
        assert "Traceback" not in stderr
        summary = summary_of(out)
        assert summary["status"] == "interrupted"
        assert summary["totals"]["pending"] > 0
        want = truth_lines(sim, contacts)
        partial = record_lines(out)
        assert not Counter(partial) - Counter(want)  # a subset, nothing twice
        assert len(partial) < len(want)

        again = run(fetch_args(path, out, "--rate", "0", "--concurrency", "32"), env)
        assert again.returncode == 0, again.stderr
        assert_exact(record_lines(out), want)
        assert summary_of(out)["status"] == "complete"


# -- 2. the campaign path: --strategy campaign|auto, --campaigns sent|FILE -------------------


def test_the_campaign_path_gives_the_contact_paths_records(
    tmp_path: Path, clean_sim: SimProcess
) -> None:
    sim = clean_sim
    contacts = contact_uuids(sim, range(1, 121))
    path = write_ids(tmp_path / "contacts.txt", contacts)
    env = token_env(sim, tmp_path)
    want = truth_lines(sim, contacts)

    planned = run(fetch_args(path, tmp_path / "plan", "--rate", "0", "--plan"), env)
    assert planned.returncode == 0, planned.stderr
    assert "chosen: the campaign path" in planned.stdout, planned.stdout
    assert not (tmp_path / "plan").exists()

    for strategy in ("campaign", "auto"):
        out = tmp_path / strategy
        done = run(fetch_args(path, out, "--rate", "0", "--strategy", strategy), env)
        assert done.returncode == 0, done.stderr
        assert activities(record_lines(out)) == activities(want)
        summary = summary_of(out)
        assert summary["strategy"] == strategy
        assert summary["plan"]["path"] == "campaign"

    sent = run(["fetch", "--campaigns", "sent", "--out", str(tmp_path / "sent"), "--quiet",
                "--rate", "0"], env)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert activities(record_lines(tmp_path / "sent")) == activities(want)  # all 120 contacts

    # Two v3 campaigns by id, one with a resend: exactly their activities' records.
    listed = v3_get(sim, "/v3/emails?limit=500")["campaigns"]
    reported: dict[str, set[str]] = {}
    for row in listed:
        if row["current_status"] == "Done":
            detail = v3_get(sim, f"/v3/emails/{row['campaign_id']}")
            reported[row["campaign_id"]] = {
                a["campaign_activity_id"]
                for a in detail["campaign_activities"]
                if a["role"] in ("primary_email", "resend")
            }
    chosen = [next(c for c, a in reported.items() if len(a) > 1)]
    chosen.append(next(c for c, a in reported.items() if len(a) == 1))
    wanted = set().union(*(reported[c] for c in chosen))
    campaigns = write_ids(tmp_path / "campaigns.txt", chosen)
    two = tmp_path / "two"
    done = run(["fetch", "--campaigns", str(campaigns), "--out", str(two), "--quiet",
                "--rate", "0"], env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = [ln for ln in want if json.loads(ln)["campaign_activity_id"] in wanted]
    assert expected
    assert activities(record_lines(two)) == activities(expected)


# -- 4. incremental and --since: client-side, one request per contact without news ---------


@pytest.mark.timeout(60)
def test_incremental_writes_exactly_the_new_records_and_no_news_costs_one_request_each(
    tmp_path: Path,
) -> None:
    with simulator("--contacts", "50", "--heavy-fraction", "0.04", "--empty-fraction", "0.1",
                   "--seed", "9", *SIM_LIMITS, *APP) as sim:  # fmt: skip
        contacts = contact_uuids(sim, range(1, 51))
        path = write_ids(tmp_path / "contacts.txt", contacts)
        out = tmp_path / "out"
        env = token_env(sim, tmp_path)
        args = fetch_args(path, out, "--rate", "0")
        first = run(args, env)
        assert first.returncode == 0, first.stderr
        before = truth_lines(sim, contacts)
        assert_exact(record_lines(out), before)

        per_contact = Counter(json.loads(ln)["contact_id"] for ln in before)
        heavy = max(range(1, 51), key=lambda n: per_contact[contacts[n - 1]])
        empty = next(n for n in range(1, 51) if per_contact[contacts[n - 1]] == 0)
        for number, count in ((heavy, 3), (empty, 2), (7, 1), (50, 4)):
            sim.add_activity(str(number), "opens", count)  # v2 ids: shown on both faces
        after = truth_lines(sim, contacts)
        added = list((Counter(after) - Counter(before)).elements())
        assert len(added) == 10

        sim.reset_stats()
        second = run([*args, "--incremental"], env)
        assert second.returncode == 0, second.stderr
        summary = summary_of(out)
        assert (summary["run"], summary["records"]) == (2, 10)
        assert_exact(record_lines(out, names=summary["files"]), added)
        assert_exact(record_lines(out), after)
        assert summary["requests"] == len(contacts) == sim.stats()["requests"]

        sim.reset_stats()
        third = run([*args, "--incremental"], env)
        assert third.returncode == 0, third.stderr
        summary = summary_of(out)
        assert (summary["run"], summary["records"], summary["files"]) == (3, 0, [])
        assert summary["requests"] == len(contacts) == sim.stats()["requests"]
        assert_exact(record_lines(out), after)
        manifest = json.loads((out / "manifest.json").read_text())
        assert [(r["run"], r["incremental"], r["records"]) for r in manifest["runs"]] == [
            (1, False, len(before)), (2, True, 10), (3, True, 0),
        ]  # fmt: skip


def test_since_writes_exactly_the_records_at_or_after_it(
    tmp_path: Path, clean_sim: SimProcess
) -> None:
    sim = clean_sim
    contacts = contact_uuids(sim, range(1, 61))
    everything = truth_lines(sim, contacts)
    stamps = sorted(json.loads(ln)["created_time"] for ln in everything)
    since = stamps[len(stamps) * 2 // 3]
    want = [ln for ln in everything if json.loads(ln)["created_time"] >= since]
    assert any(json.loads(ln)["created_time"] == since for ln in want)  # inclusive
    path = write_ids(tmp_path / "contacts.txt", contacts)
    # The same instant with an offset: normalised to UTC.
    local = since[:10] + "T" + since[11:23]
    done = run(fetch_args(path, tmp_path / "out", "--rate", "0", "--since", local + "+00:00"),
               token_env(sim, tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert_exact(record_lines(tmp_path / "out"), want)


# -- 5. throttles, the client's rate, the quota ---------------------------------------------


@pytest.mark.timeout(60)
def test_throttles_are_waited_out_and_the_clients_rate_is_never_exceeded(tmp_path: Path) -> None:
    with simulator("--contacts", "20", "--heavy-fraction", "0", "--seed", "3", "--rate", "10",
                   "--daily-quota", "0", *APP) as sim:  # fmt: skip
        contacts = contact_uuids(sim, range(1, 21))
        path = write_ids(tmp_path / "contacts.txt", contacts)
        env = token_env(sim, tmp_path)
        want = truth_lines(sim, contacts)

        sim.reset_stats()  # over the simulator's limit: 429 throttled, waited out
        over = run(fetch_args(path, tmp_path / "over", "--rate", "40", "--budget", "process"), env)
        assert over.returncode == 0, over.stderr
        assert_exact(record_lines(tmp_path / "over"), want)
        throttled = sim.stats()["status_counts"].get("429", 0)
        assert throttled > 0
        assert summary_of(tmp_path / "over")["throttles"] == throttled

        time.sleep(1.1)  # the simulator's window forgets the first run
        sim.reset_stats()
        paced = run(fetch_args(path, tmp_path / "paced", "--rate", "10"), env)
        assert paced.returncode == 0, paced.stderr
        assert_exact(record_lines(tmp_path / "paced"), want)
        stats = sim.stats()
        assert stats["status_counts"] == {"200": len(contacts)}
        assert max_in_window(stats["request_times"]) <= 10


def test_the_quota_answer_stops_the_run_with_exit_4(tmp_path: Path) -> None:
    with simulator("--contacts", "40", "--seed", "3", "--rate", "0", "--daily-quota", "12",
                   *APP) as sim:  # fmt: skip
        contacts = contact_uuids(sim, range(1, 41))  # one request of the quota
        path = write_ids(tmp_path / "contacts.txt", contacts)
        out = tmp_path / "out"
        done = run(fetch_args(path, out, "--rate", "0", "--concurrency", "4"),
                   token_env(sim, tmp_path))  # fmt: skip
        assert done.returncode == 4, done.stderr
        assert "quota" in done.stderr
        assert "Traceback" not in done.stderr
        assert summary_of(out)["status"] == "quota_exhausted"
        assert 1 <= sim.stats()["status_counts"].get("429", 0) <= 4
        assert not Counter(record_lines(out)) - Counter(truth_lines(sim, contacts))


# -- 6 and 7. a token file: renewed in a run, by two processes at once; invalid_grant; secrets


def scan_for_secrets(secrets: Iterable[str], out: Path, *texts: str) -> None:
    """None of ``secrets`` in any file under ``out`` (the state too) nor in ``texts``."""
    wanted = [s for s in secrets if s]
    assert wanted
    for file in out.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            for secret in wanted:
                assert secret.encode() not in data, f"a secret in {file.relative_to(out)}"
    for text in texts:
        for secret in wanted:
            assert secret not in text, "a secret in an output stream"


def token_secrets(path: Path, *answers: dict[str, Any]) -> list[str]:
    saved = read_tokens(path)
    assert saved is not None
    found = [CLIENT_ID, CLIENT_SECRET, *saved.secrets()]
    for answer in answers:
        found += [answer["access_token"], answer.get("refresh_token", "")]
    return found


@pytest.mark.timeout(60)
def test_a_run_longer_than_its_access_token_renews_it_and_says_no_secret(tmp_path: Path) -> None:
    with simulator("--contacts", "40", "--heavy-fraction", "0", "--seed", "6",
                   "--access-token-seconds", "1", *SIM_LIMITS, *APP) as sim:  # fmt: skip
        contacts = contact_uuids(sim, range(1, 41))
        path = write_ids(tmp_path / "contacts.txt", contacts)
        token_file = tmp_path / "config" / "token.json"
        token_file.parent.mkdir()
        first = mint(sim, token_file, expires_in=1)
        out, log = tmp_path / "out", tmp_path / "fetch.log"
        args = [
            "fetch",
            "--contacts",
            str(path),
            "--out",
            str(out),
            "--rate",
            "12",
            "--log-file",
            str(log),
            "--log-interval",
            "0.5",
        ]  # fmt: skip  (~3.5 s)
        done = run(args, file_env(sim, tmp_path, token_file))
        assert done.returncode == 0, done.stderr
        assert_exact(record_lines(out), truth_lines(sim, contacts))
        counts = token_requests(sim)
        assert counts.get("refresh_token 200", 0) >= 2, counts
        assert set(counts) == {"refresh_token 200"}, counts  # no invalid_grant, no 429
        assert set(sim.stats()["status_counts"]) <= {"200", "401"}  # no request failed
        assert summary_of(out)["totals"]["done"] == len(contacts)
        assert log.read_text().strip()
        scan_for_secrets(
            token_secrets(token_file, first), out, done.stdout, done.stderr, log.read_text()
        )


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("lifetime", "expires_in", "age", "rate"),
    [
        # Renewed tokens live a day: the one expiry is the minted token's, past (by the
        # file's clock) when both start: exactly one renewal may reach the endpoint.
        ("86400", 600, 900, "0"),
        # Tokens live 2 s (renewed 0.2 s before) through a ~4 s run of each: renewals 1.8 s
        # apart, each one request for both processes.
        ("2", 2, 0, "10"),
    ],
    ids=["expired-at-start", "expiring-all-run-long"],
)
def test_two_processes_sharing_a_rotating_token_renew_it_once_per_expiry(
    tmp_path: Path, lifetime: str, expires_in: float, age: float, rate: str
) -> None:
    # A rotating refresh token spent twice is invalid_grant; two renewals within a second
    # are the token endpoint's 429 (--token-rate 1): neither may happen.
    with simulator("--contacts", "40", "--heavy-fraction", "0", "--seed", "8",
                   "--access-token-seconds", lifetime, "--refresh-tokens", "rotating",
                   "--token-rate", "1", "--client-id", CLIENT_ID, "--client-secret",
                   CLIENT_SECRET, *SIM_LIMITS) as sim:  # fmt: skip
        contacts = contact_uuids(sim, range(1, 41))
        path = write_ids(tmp_path / "contacts.txt", contacts)
        token_file = tmp_path / "config" / "token.json"
        token_file.parent.mkdir()
        first = mint(sim, token_file, expires_in=expires_in, age=age)
        env = file_env(sim, tmp_path, token_file)
        outs = [tmp_path / "out1", tmp_path / "out2"]
        procs = [
            start(
                fetch_args(path, out, "--rate", rate, "--budget", "process"),
                env,
                out.with_suffix(".stderr"),
            )
            for out in outs
        ]
        codes = [p.wait(timeout=60) for p in procs]
        errs = [out.with_suffix(".stderr").read_text() for out in outs]
        assert codes == [0, 0], errs
        counts = token_requests(sim)
        assert set(counts) == {"refresh_token 200"}, counts
        if age:
            assert counts == {"refresh_token 200": 1}
        want = truth_lines(sim, contacts)
        for out in outs:
            assert_exact(record_lines(out), want)
            scan_for_secrets(token_secrets(token_file, first), out, *errs)
        saved = read_tokens(token_file)
        assert saved is not None
        assert saved.refresh_token != first["refresh_token"]


def test_a_spent_refresh_token_stops_the_run_with_exit_3_and_auth_login(
    tmp_path: Path, clean_sim: SimProcess
) -> None:
    sim = clean_sim
    contacts = contact_uuids(sim, range(1, 11))
    path = write_ids(tmp_path / "contacts.txt", contacts)
    token_file = tmp_path / "config" / "token.json"
    token_file.parent.mkdir()
    first = mint(sim, token_file, expires_in=600, age=900)
    form = urllib.parse.urlencode(
        {
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "client_id": CLIENT_ID,
        }
    ).encode()
    with urllib.request.urlopen(sim.url + "/oauth2/default/v1/token", data=form, timeout=30) as r:
        assert r.status == 200  # spent: the file's refresh token is now invalid_grant
    before = token_requests(sim).get("refresh_token invalid_grant", 0)
    out = tmp_path / "out"
    done = run(fetch_args(path, out, "--rate", "0"), file_env(sim, tmp_path, token_file))
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "bulkopens auth login" in lines[0]
    assert "Traceback" not in done.stderr
    assert token_requests(sim).get("refresh_token invalid_grant", 0) == before + 1
    scan_for_secrets(token_secrets(token_file, first), out, done.stdout, done.stderr)


# -- 8. bad input on v3 --------------------------------------------------------------------


def test_v2_ids_on_v3_are_mapped_and_an_unknown_one_is_in_errors(
    tmp_path: Path, clean_sim: SimProcess
) -> None:
    sim = clean_sim
    contacts = contact_uuids(sim, range(1, 6))
    path = write_ids(tmp_path / "contacts.txt", [*contacts, "3", "17", "999999", "x1"])
    out = tmp_path / "out"
    done = run(fetch_args(path, out, "--rate", "0"), token_env(sim, tmp_path))
    assert done.returncode == 1, done.stderr
    assert_exact(record_lines(out), truth_lines(sim, [*contacts, *contact_uuids(sim, [17])]))
    assert sorted((e["contact_id"], e["status"], e["error_key"]) for e in errors_of(out)) == [
        ("999999", None, "bulkopens.no_v3_id"),
        ("x1", None, "bulkopens.invalid_contact_id"),
    ]
    mapped = [json.loads(x) for x in (out / "id-map.ndjson").read_text().splitlines()]
    assert {(m["v2_id"], m["v3_id"]) for m in mapped} == {
        ("3", contacts[2]), ("17", contact_uuids(sim, [17])[0]), ("999999", None),
    }  # fmt: skip


def test_a_summary_report_and_an_unknown_api_are_one_line_and_exit_2(
    tmp_path: Path, clean_sim: SimProcess
) -> None:
    sim = clean_sim
    path = write_ids(tmp_path / "contacts.txt", contact_uuids(sim, range(1, 4)))
    env = token_env(sim, tmp_path)
    sim.reset_stats()
    for report in ("summary", "summary-by-campaign"):
        out = tmp_path / report
        done = run(fetch_args(path, out, "--rate", "0", "--report", report), env)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "not offered on --api v3" in lines[0]
    for args, extra in ((["--api", "v4"], {}), ([], {"CTCT_API": "v4"})):
        done = run([*fetch_args(path, tmp_path / "v4", "--rate", "0"), *args], {**env, **extra})
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "v4" in lines[0]
        assert not (tmp_path / "v4").exists()
    assert sim.stats()["requests"] == 0


def test_a_refused_summary_report_leaves_the_out_as_it_was(
    tmp_path: Path, clean_sim: SimProcess
) -> None:
    sim = clean_sim
    contacts = contact_uuids(sim, range(1, 4))
    path = write_ids(tmp_path / "contacts.txt", contacts)
    env = token_env(sim, tmp_path)
    out = tmp_path / "out"
    refused = run(fetch_args(path, out, "--rate", "0", "--report", "summary"), env)
    assert refused.returncode == 2, refused.stderr
    corrected = run(fetch_args(path, out, "--rate", "0"), env)
    assert corrected.returncode == 0, corrected.stderr
    assert_exact(record_lines(out), truth_lines(sim, contacts))


def test_the_budget_of_a_v3_run_is_kept_under_the_apps_client_id(
    tmp_path: Path, clean_sim: SimProcess
) -> None:
    """The local ledger counts a v3 run's requests under the app's client id (v3's "API
    key"), and ``quota`` reads them there: with a static token as with the token file."""
    sim = clean_sim
    path = write_ids(tmp_path / "contacts.txt", contact_uuids(sim, range(1, 6)))
    env = {**token_env(sim, tmp_path), "CTCT_CLIENT_ID": "app-one"}
    env.pop("CTCT_API_KEY", None)
    done = run(fetch_args(path, tmp_path / "out", "--rate", "50", "--api", "v3"), env)
    assert done.returncode == 0, done.stderr
    requests = json.loads((tmp_path / "out" / "summary.json").read_text())["requests"]
    quota = run(["quota", "--api", "v3", "--json"], env)
    assert quota.returncode == 0, quota.stderr
    assert json.loads(quota.stdout)["spent"] == requests
    other = run(["quota", "--api", "v3", "--json"], {**env, "CTCT_CLIENT_ID": "app-two"})
    assert json.loads(other.stdout)["spent"] == 0
    assert "app-one" not in quota.stdout + quota.stderr + done.stderr


def test_v3_without_tokens_says_to_log_in_and_leaves_out_untouched(
    tmp_path: Path, clean_sim: SimProcess
) -> None:
    sim = clean_sim
    path = write_ids(tmp_path / "contacts.txt", contact_uuids(sim, range(1, 3)))
    env = base_env(sim, tmp_path, CTCT_TOKEN_FILE=str(tmp_path / "none" / "token.json"))
    for name in ("CTCT_ACCESS_TOKEN", "CTCT_API_KEY"):
        env.pop(name, None)
    sim.reset_stats()
    for command in (fetch_args(path, tmp_path / "out", "--api", "v3"), ["check", "--api", "v3"]):
        done = run(command, env)
        assert done.returncode == 3, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "bulkopens auth login" in lines[0]
    assert not (tmp_path / "out").exists()
    assert sim.stats()["requests"] == 0
