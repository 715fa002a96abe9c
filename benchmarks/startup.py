"""Start-up and shut-down of the command, as ratios against baselines run side by side.

    .venv/bin/python -m benchmarks.startup [--rounds 15]

Three measures, each over alternating rounds (the contenders of a round run back to back, so
drift on a shared machine cancels), reported as the median of the per-round ratios:

* ``--version`` and ``--help`` wall time against ``python -c "import aiohttp"`` (target: at
  most 0.5: they need no HTTP stack);
* time to the first request of a one-contact ``bulkopens fetch`` (process start to the
  request's arrival at a loopback server, on the system-wide monotonic clock) against a bare,
  hand-written aiohttp client that sends the same request (target: at most 1.5);
* time from the last answer to process exit (the final commit, the artifacts, interpreter
  teardown), against the same bare client (target: a few tens of milliseconds more).

bulkopens is compiled to bytecode first, as an install has it (aiohttp's was compiled by pip).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BARE_CLIENT = """
import asyncio, sys, aiohttp
async def main():
    async with aiohttp.ClientSession() as s:
        async with s.get(sys.argv[1] + "/v2/contacts/1/tracking/opens?limit=500&api_key=k",
                         headers={"Authorization": "Bearer t"}) as r:
            await r.read()
asyncio.run(main())
"""
PAGE = (
    b'{"meta":{"pagination":{}},"results":[{"activity_type":"EMAIL_OPEN","campaign_id":"1",'
    b'"contact_id":"1","email_address":"a@example.com","open_date":"2024-01-01T00:00:00.000Z"}]}'
)


class Server:
    """A loopback HTTP server (stdlib, in a thread) that notes when each request arrives."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        arrivals = self.arrivals = []  # type: list[float]

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                arrivals.append(time.monotonic())
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(PAGE)))
                self.end_headers()
                self.wfile.write(PAGE)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(start, end) on the monotonic clock of running ``argv`` to its exit."""
    start = time.monotonic()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return start, time.monotonic()


def rounds(n: int, contenders: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(n):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            out[name].append(contenders[name]())
    return out


def ratio(results: dict[str, list[float]], ours: str, base: str) -> float:
    return statistics.median(a / b for a, b in zip(results[ours], results[base], strict=True))


def show(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return f"  {name:<34} median {statistics.median(ms):7.1f} ms  ({ms[0]:.1f}-{ms[-1]:.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    bulkopens = str(Path(PYTHON).parent / "bulkopens")
    # Bytecode, as an install has it (aiohttp's was compiled by pip): never measure compiling.
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(ROOT / "bulkopens")], check=True)
    server = Server()
    work = Path(tempfile.mkdtemp(prefix="bulkopens-startup-"))
    contacts = work / "contacts.txt"
    contacts.write_text("1\n")
    env = {**os.environ, "CTCT_API_KEY": "k" * 12, "CTCT_ACCESS_TOKEN": "t" * 12}
    runs = [0]

    def wall(argv: list[str]) -> Callable[[], float]:
        def run() -> float:
            start, end = timed(argv)
            return end - start

        return run

    def fetch() -> tuple[float, float, float]:
        runs[0] += 1
        before = len(server.arrivals)
        start, end = timed(
            [bulkopens, "fetch", "--contacts", str(contacts), "--out", str(work / f"o{runs[0]}"),
             "--base-url", server.url, "--rate", "0", "--quiet"],
            env,
        )  # fmt: skip
        first = server.arrivals[before]
        return first - start, end - server.arrivals[-1], end - start

    def bare() -> tuple[float, float, float]:
        before = len(server.arrivals)
        start, end = timed([PYTHON, "-c", BARE_CLIENT, server.url])
        first = server.arrivals[before]
        return first - start, end - server.arrivals[-1], end - start

    walls = rounds(
        args.rounds,
        {
            "python -c 'import aiohttp'": wall([PYTHON, "-c", "import aiohttp"]),
            "bulkopens --version": wall([bulkopens, "--version"]),
            "bulkopens --help": wall([bulkopens, "--help"]),
        },
    )
    pairs: dict[str, list[tuple[float, float, float]]] = {"bulkopens fetch": [], "bare": []}
    for r in range(args.rounds):
        order = ["bulkopens fetch", "bare"] if r % 2 == 0 else ["bare", "bulkopens fetch"]
        for name in order:
            pairs[name].append(fetch() if name == "bulkopens fetch" else bare())
    firsts = {name: [p[0] for p in values] for name, values in pairs.items()}
    ends = {name: [p[1] for p in values] for name, values in pairs.items()}

    print(f"start-up, {args.rounds} alternating rounds (wall time of the whole process):")
    for name, values in walls.items():
        print(show(name, values))
    base = "python -c 'import aiohttp'"
    version, helped = (
        ratio(walls, "bulkopens --version", base),
        ratio(walls, "bulkopens --help", base),
    )
    print(f"  ratio --version / import aiohttp: {version:.2f} (target <= 0.5)")
    print(f"  ratio --help / import aiohttp:    {helped:.2f} (target <= 0.5)")
    print("time to the first request (process start to its arrival at the server):")
    for name, values in firsts.items():
        print(show(name, values))
    first = ratio(firsts, "bulkopens fetch", "bare")
    print(f"  ratio bulkopens / bare aiohttp client: {first:.2f} (target <= 1.5)")
    print("time from the last request to the process's exit:")
    for name, values in ends.items():
        print(show(name, values))
    extra = statistics.median(
        a - b for a, b in zip(ends["bulkopens fetch"], ends["bare"], strict=True)
    )
    print(f"  bulkopens takes {extra * 1000:.0f} ms more to end (target: a few tens of ms)")
    server.httpd.shutdown()
    ok = version <= 0.5 and helped <= 0.5 and first <= 1.5
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
