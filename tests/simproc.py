"""A simulator in its own process, driven through its ``/_sim/`` admin endpoints.

Used by the tests that run the real ``bulkopens`` command in a subprocess.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

KEY = "sim-key-8c1f0e"
TOKEN = "sim-token-5b7d2a"


class SimProcess:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            body: bytes = response.read()
            return body

    def _post(self, path: str) -> bytes:
        request = urllib.request.Request(self.url + path, data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            body: bytes = response.read()
            return body

    def truth(self, report: str = "opens", since: str | None = None) -> list[dict[str, Any]]:
        query = f"?report={report}" + (f"&since={since}" if since else "")
        return [json.loads(line) for line in self._get("/_sim/truth" + query).splitlines() if line]

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self._get("/_sim/stats"))
        return data

    def reset_stats(self) -> None:
        self._post("/_sim/reset-stats")

    def add_activity(self, contact_id: str, report: str = "opens", count: int = 1) -> list[Any]:
        body = self._post(f"/_sim/activity?contact_id={contact_id}&report={report}&count={count}")
        data: list[Any] = json.loads(body)
        return data

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for ``bulkopens fetch`` against this simulator."""
        env = dict(os.environ)
        env.update(CTCT_API_KEY=KEY, CTCT_ACCESS_TOKEN=TOKEN, CTCT_BASE_URL=self.url)
        env.update(extra)
        return env


@contextmanager
def simulator(*args: str) -> Iterator[SimProcess]:
    """Start ``bulkopens simulate --port 0 ARGS``; stop it at the end."""
    cmd = [
        sys.executable, "-m", "bulkopens", "simulate", "--port", "0",
        "--api-key", KEY, "--token", TOKEN, *args,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        if not first.startswith("serving "):
            proc.kill()
            error = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"simulator did not start: {first!r} {error!r}")
        yield SimProcess(proc, first.removeprefix("serving "))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def bulkopens(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
              stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run the real command and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "bulkopens", *args],
        env=env, input=stdin, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def read_ndjson(paths: list[str] | Any) -> list[dict[str, Any]]:
    out = []
    for path in sorted(paths):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                out.append(json.loads(line))
    return out


def lines_in(out: Path, report: str = "opens") -> int:
    """Lines in ``out``'s record files of ``report`` right now (files may come and go)."""
    total = 0
    for path in out.glob(f"{report}-*.ndjson"):
        try:
            total += path.read_bytes().count(b"\n")
        except FileNotFoundError:
            continue
    return total


def kill_once_it_writes(args: list[str], sim: SimProcess, rng: random.Random, err: Path) -> bool:
    """Run ``bulkopens ARGS``; SIGKILL it a moment after it has written records (of the
    ``--report`` in ARGS). Returns whether the kill landed (False: it finished first)."""
    out = Path(args[args.index("--out") + 1])
    report = args[args.index("--report") + 1] if "--report" in args else "opens"
    before = lines_in(out, report)
    with open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bulkopens", *args],
            env=sim.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        deadline = time.monotonic() + 20
        while (
            proc.poll() is None and lines_in(out, report) <= before and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=30)
    assert code in (-signal.SIGKILL, 0, 1), err.read_text()
    return killed
