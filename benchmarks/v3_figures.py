"""The v3 figures of issue 15, measured with the installed command against the simulator.

On one simulated account (10,000 contacts, 30 sent campaigns, seed 1): the requests of the
opens of every contact by contact and by campaign on v3, what ``--strategy auto`` chose, the
requests of an ``--incremental`` run with no news, and the token renewals of a run whose
access token lives 60 s (a device login's token file, renewed by the run itself).

    python -m benchmarks.v3_figures [--contacts 10000] [--renewal-rate 40]

The renewal run is paced (``--renewal-rate`` requests a second) so that it outlives several
tokens: at 40/s, 10,000 requests take about four minutes. ``--no-renewal`` skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CLIENT_ID, CLIENT_SECRET, TOKEN = "bench-client", "bench-secret", "bench-token"


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bulkopens", *args]


class Sim:
    def __init__(self, contacts: int, token_seconds: int) -> None:
        self.proc = subprocess.Popen(
            _cmd(
                "simulate", "--port", "0", "--contacts", str(contacts), "--campaigns", "30",
                "--seed", "1", "--rate", "0", "--daily-quota", "0", "--token", TOKEN,
                "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET,
                "--access-token-seconds", str(token_seconds), "--device-interval", "1",
                "--token-rate", "1",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip().removeprefix("serving ")

    def get(self, path: str, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(self.url + path, headers=headers)
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())

    def post(self, path: str) -> Any:
        request = urllib.request.Request(self.url + path, data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _uuids(sim: Sim, count: int) -> list[str]:
    found: list[str] = []
    for start in range(1, count + 1, 500):
        ids = ",".join(str(n) for n in range(start, min(start + 500, count + 1)))
        answer = sim.get(f"/v3/contacts/contact_id_xrefs?sequence_ids={ids}", TOKEN)
        found += [x["contact_id"] for x in answer["xrefs"]]
    return found


def _fetch(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run(
        _cmd("fetch", "--api", "v3", "--quiet", *args), env=env, capture_output=True, text=True
    )
    if done.returncode not in (0, 1):
        raise SystemExit(f"fetch failed ({done.returncode}): {done.stderr.strip()}")
    out = Path(args[args.index("--out") + 1])
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--renewal-rate", type=float, default=40.0)
    parser.add_argument("--no-renewal", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bulkopens-v3-figures-"))
    sim = Sim(args.contacts, token_seconds=60)
    try:
        ids = work / "contacts.txt"
        ids.write_text("\n".join(_uuids(sim, args.contacts)) + "\n")
        env = dict(os.environ)
        for name in ("CTCT_API_KEY", "CTCT_TOKEN_FILE", "CTCT_CLIENT_ID", "CTCT_CLIENT_SECRET"):
            env.pop(name, None)
        env.update(
            CTCT_BASE_URL=sim.url,
            CTCT_ACCESS_TOKEN=TOKEN,
            BULKOPENS_STATE_DIR=str(work / "state"),
            BULKOPENS_RATE="0",
            BULKOPENS_BUDGET="process",  # these runs spend more than one key's day
        )
        rows: list[tuple[str, Any]] = []
        for strategy in ("contact", "campaign", "auto"):
            out = work / f"by-{strategy}"
            started = time.monotonic()
            summary = _fetch(env, "--contacts", str(ids), "--out", str(out), "--strategy", strategy)
            seconds = time.monotonic() - started
            chose = (summary.get("plan") or {}).get("path", "contact")
            rows.append(
                (
                    f"--strategy {strategy}",
                    f"{summary['requests']:,} requests, {summary['records']:,} records, "
                    f"path {chose}, {seconds:.1f} s unthrottled",
                )
            )
            if strategy == "auto":
                plan = summary["plan"]
                rows.append(
                    (
                        "  auto's estimate",
                        f"contact >= {plan['contact_cost']:,}, campaign >= "
                        f"{plan['campaign_cost']:,} ({plan['campaign_cost_parts']}), "
                        f"{plan['planning_requests']} requests planning",
                    )
                )
        for strategy in ("contact", "campaign"):
            out = work / f"by-{strategy}"
            summary = _fetch(
                env, "--contacts", str(ids), "--out", str(out), "--strategy", strategy,
                "--incremental",
            )  # fmt: skip
            rows.append(
                (
                    f"--incremental, no news ({strategy} path)",
                    f"{summary['requests']:,} requests, {summary['records']:,} records",
                )
            )
        if not args.no_renewal:
            rows.append(("token renewals", _renewals(sim, env, ids, work, args.renewal_rate)))
    finally:
        sim.close()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def _renewals(sim: Sim, env: dict[str, str], ids: Path, work: Path, rate: float) -> str:
    token_file = work / "token.json"
    auth_env = {
        **env,
        "CTCT_CLIENT_ID": CLIENT_ID,
        "CTCT_CLIENT_SECRET": CLIENT_SECRET,
        "CTCT_TOKEN_FILE": str(token_file),
        "CTCT_AUTH_URL": sim.url + "/oauth2/default/v1",
    }
    auth_env.pop("CTCT_ACCESS_TOKEN", None)
    login = subprocess.Popen(
        _cmd("auth", "login"), env=auth_env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    assert login.stderr is not None
    code = None
    for line in login.stderr:
        found = re.search(r"code ([A-Z0-9]{4}-[A-Z0-9]{4})", line)
        if found:
            code = found.group(1)
            break
    assert code is not None, "auth login printed no user code"
    sim.post(f"/_sim/approve?user_code={code}")
    login.wait(timeout=60)
    before = sim.get("/_sim/stats").get("token_requests", {}).get("refresh_token 200", 0)
    started = time.monotonic()
    summary = _fetch(
        {**auth_env, "BULKOPENS_RATE": str(rate)}, "--contacts", str(ids), "--out",
        str(work / "renewed"),
    )  # fmt: skip
    seconds = time.monotonic() - started
    stats = sim.get("/_sim/stats")
    after = stats.get("token_requests", {}).get("refresh_token 200", 0)
    return (
        f"{after - before} renewals in a {seconds:.0f} s run of {summary['requests']:,} "
        f"requests at {rate:g}/s with 60 s access tokens; statuses {summary['responses']}"
    )


if __name__ == "__main__":
    main()
