"""Before and after: the whole-process scenario for two versions of bulkopens, alternating.

    .venv/bin/python -m benchmarks.compare HEAD~1            # HEAD~1 against the working tree
    .venv/bin/python -m benchmarks.compare HEAD~3 HEAD --rounds 8 --with c
    .venv/bin/python -m benchmarks.compare HEAD --in-flight  # requests in flight, sampled

The scenario is the suite's *whole process, many small contacts* (``_scenarios.whole``): a
simulator without limits, 3,000 contacts of 0-20 opens each (one page each), the command at
``--rate 0 --concurrency 32 --event-loop asyncio --quiet`` (``--rate R`` paces every request:
``--rate 100000`` measures the pacer's own cost; ``--budget process`` leaves the key's shared
ledger out), from process start to exit. Each
version is a ``git archive`` snapshot (the working tree: a copy made at the start) put first on
``PYTHONPATH``, started as the console script starts it. Rounds alternate the order; the table
shows wall, CPU and voluntary context switches (``median (min-max)``) and the median of the
per-round ratios. ``--with c d`` adds the suite's contenders to every round.

``--in-flight`` instead runs the version once in-process with every request's start and end
noted (at the client's gate), and prints the time-weighted mean of the requests in flight, its
quartiles and the event loop's turns: a probe, not a timed run.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._harness import (
    CONTENDERS,
    REPO_DIR,
    ProcessResult,
    RunOptions,
    Simulator,
    child_env,
    compile_bytecode,
    pin_self_to_client_cpu,
    run_process,
    write_contacts,
)
from benchmarks._scenarios import WHOLE_CONCURRENCY, WHOLE_SIM_ARGS

#: Runs the command as the console script does, with whichever entry point the version has.
SHIM = (
    "import sys; import bulkopens.cli as cli; "
    "sys.argv[0] = 'bulkopens'; sys.exit(getattr(cli, 'console', cli.main)())"
)

#: The in-flight probe: notes every request's start and end at the gate, and the loop's turns.
PROBE = r"""
import sys, time, asyncio
from bulkopens import _ratelimit
marks, turns = [], [0]
enter, leave = _ratelimit.Gate.enter, _ratelimit.Gate.leave
async def noted_enter(self):
    await enter(self)
    marks.append((time.perf_counter(), 1))
def noted_leave(self):
    marks.append((time.perf_counter(), -1))
    leave(self)
_ratelimit.Gate.enter, _ratelimit.Gate.leave = noted_enter, noted_leave
from asyncio import base_events
once = base_events.BaseEventLoop._run_once
def counted(self):
    turns[0] += 1
    return once(self)
base_events.BaseEventLoop._run_once = counted
import bulkopens.cli as cli
code = cli.main(sys.argv[1:])
marks.sort()
level, last, weighted, hist = 0, marks[0][0], 0.0, {}
for t, d in marks:
    hist[level] = hist.get(level, 0.0) + (t - last)
    weighted += level * (t - last)
    level, last = level + d, t
span = marks[-1][0] - marks[0][0]
cum, quart = 0.0, {}
for level in sorted(hist):
    cum += hist[level] / span
    for q in (0.25, 0.5, 0.75):
        if q not in quart and cum >= q:
            quart[q] = level
print(f"requests {len(marks) // 2}, in flight: mean {weighted / span:.1f}, quartiles "
      f"{quart[0.25]}/{quart[0.5]}/{quart[0.75]}, event-loop turns {turns[0]}, exit {code}")
"""


def snapshot(ref: str | None, into: Path, overlay: list[str] | None = None) -> Path:
    """bulkopens at ``ref`` (None: the working tree as it is now) under ``into``, with the
    files ``overlay`` names (paths from the repository root) as they are in the working tree."""
    into.mkdir(parents=True)
    if ref is None or ref == "worktree":
        shutil.copytree(REPO_DIR / "bulkopens", into / "bulkopens")
    else:
        archive = subprocess.run(
            ["git", "archive", ref, "bulkopens"], cwd=REPO_DIR, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    for path in overlay or []:
        shutil.copy2(REPO_DIR / path, into / path)
    compile_bytecode(into)
    return into


def show(values: list[float], fmt: str) -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return f"{fmt.format(mid)} ({fmt.format(lo)}-{fmt.format(hi)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", help="a git revision, or worktree")
    parser.add_argument("after", nargs="?", help="a git revision (default: the working tree)")
    parser.add_argument(
        "--overlay",
        nargs="*",
        metavar="PATH",
        help="after = AFTER (default HEAD) with these files from the working tree: your own "
        "edits, measured without others' edits in progress",
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--contacts", type=int, default=3000)
    parser.add_argument("--with", dest="others", nargs="*", default=[], choices=("c", "d"))
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="every contender's --rate (default 0: no pacing; e.g. 100000 paces every request "
        "without the rate being the limit); bulkopens then runs with --daily-quota 0, so "
        "the rounds are not stopped by the ledger",
    )
    parser.add_argument(
        "--budget",
        default=None,
        help="bulkopens' --budget (default: local, the key's SQLite ledger, in a scratch "
        "state directory; process: the in-process pacer alone)",
    )
    parser.add_argument(
        "--in-flight", action="store_true", help="the probe, of AFTER (or --overlay) if given"
    )
    args = parser.parse_args()
    pin_self_to_client_cpu()
    work = Path(tempfile.mkdtemp(prefix="bulkopens-compare-"))
    try:
        contacts = write_contacts(work / "contacts.txt", range(1, args.contacts + 1))
        after = args.after or ("HEAD" if args.overlay else None)
        if args.in_flight:  # the probe: of `after` when one is named, else of `before`
            probed = args.after is not None or bool(args.overlay)
            ref, overlay = (after, args.overlay) if probed else (args.before, None)
            versions = {"probe": snapshot(ref, work / "probe", overlay)}
        else:
            versions = {"before": snapshot(args.before, work / "before")}
            versions["after"] = snapshot(after, work / "after", args.overlay)
        names = [*versions, *args.others]
        results: dict[str, list[ProcessResult]] = {name: [] for name in names}
        with Simulator(WHOLE_SIM_ARGS, work / "logs") as sim:
            opts = RunOptions(rate=args.rate, concurrency=WHOLE_CONCURRENCY)
            extra = ("--daily-quota", "0") if args.rate else ()
            if args.budget:
                extra += ("--budget", args.budget)
            n = 0
            for r in range(1 if args.in_flight else args.rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    n += 1
                    out = work / f"out-{n}"
                    if name in versions:
                        code = PROBE if args.in_flight else SHIM
                        cli = dataclasses.replace(
                            CONTENDERS["a-cmd"], launcher=(sys.executable, "-P", "-c", code)
                        )
                        cli = dataclasses.replace(cli, extra=(*cli.extra, *extra))
                        cmd = cli.command(sim.url, contacts, out, opts)
                        env = child_env(sim.env()) | {
                            "PYTHONPATH": str(versions[name]),
                            "BULKOPENS_STATE_DIR": str(work / "state"),
                        }
                    else:
                        cmd = CONTENDERS[name].command(sim.url, contacts, out, opts)
                        env = sim.env()
                    proc = run_process(cmd, env=env, log_dir=work / f"log-{n}")
                    if args.in_flight:
                        print(proc.stdout.strip() or proc.stderr.strip())
                        return proc.exit_code
                    if proc.exit_code != 0:
                        print(f"{name} exited {proc.exit_code}: {proc.stderr[-500:]}")
                    results[name].append(proc)
                    shutil.rmtree(out, ignore_errors=True)
                print(f"round {r + 1}: " + ", ".join(
                    f"{k} {v[-1].wall:.2f}s/{v[-1].cpu:.2f}s" for k, v in results.items()
                ), flush=True)  # fmt: skip
        labels = {"before": args.before, "after": args.after or "working tree"}
        if args.overlay:
            labels["after"] = f"{args.after or 'HEAD'} + {len(args.overlay)} files"
        paced = f", --rate {args.rate:g}" if args.rate else ""
        paced += f", --budget {args.budget}" if args.budget else ""
        print(f"\n{args.contacts} contacts, {args.rounds} alternating rounds{paced}")
        print(f"{'':24} {'wall s':>20} {'CPU s':>20} {'vol. switches':>22}")
        for name, procs in results.items():
            print(
                f"{labels.get(name, name):24} {show([p.wall for p in procs], '{:.2f}'):>20} "
                f"{show([p.cpu for p in procs], '{:.2f}'):>20} "
                f"{show([float(p.switches) for p in procs], '{:.0f}'):>22}"
            )
        for other in ("before", *args.others):
            for what in ("wall", "cpu"):
                ratios = [
                    getattr(a, what) / getattr(b, what)
                    for a, b in zip(results["after"], results[other], strict=True)
                ]
                print(f"after / {labels.get(other, other)} {what}: {show(ratios, '{:.3f}')}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
