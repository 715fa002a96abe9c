"""Run the benchmark suite and write benchmarks/RESULTS.md.

    .venv/bin/python -m benchmarks.run            # the full suite (~20 minutes)
    .venv/bin/python -m benchmarks.run --quick    # a smoke version (< 2 minutes)
    .venv/bin/python -m benchmarks.run --profile  # pyinstrument report of the library contender

See benchmarks/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import _report, _scenarios
from benchmarks._harness import (
    BENCH_DIR,
    CONTENDER_DIR,
    KEY,
    REPO_DIR,
    TOKEN,
    Simulator,
    compile_bytecode,
    machine_facts,
    pin_self_to_client_cpu,
    run_process,
    use_snapshot,
    work_directory,
    write_contacts,
)

SCENARIOS = ("rate", "speed", "memory", "faults", "whole", "paced")


#: The plan's field of each scenario's rounds (memory has none: one run of each size).
ROUNDS = {
    "rate": "rate_rounds",
    "speed": "speed_rounds",
    "faults": "fault_rounds",
    "whole": "whole_rounds",
    "paced": "paced_rounds",
}


def _rounds(text: str) -> dict[str, int]:
    """``N`` (every scenario) or ``SCENARIO=N,...``: the plan's rounds fields to override."""
    try:
        if "=" not in text:
            return dict.fromkeys(ROUNDS.values(), int(text))
        pairs = (item.split("=", 1) for item in text.split(",") if item.strip())
        return {ROUNDS[name.strip()]: int(n) for name, n in pairs}
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give N, or SCENARIO=N,... with SCENARIO one of {', '.join(ROUNDS)}"
        ) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="bulkopens against an SDK loop, a hand-written asyncio client and a raw "
        "aiohttp loop, on the built-in simulator; writes benchmarks/RESULTS.md.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke version, under 2 minutes")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios to run (default: all of {','.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--rounds",
        type=_rounds,
        metavar="N|SCENARIO=N,...",
        help="override the rounds of every scenario (N), or of some (e.g. rate=2,speed=4)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        help="where to write the results (default: benchmarks/RESULTS.md, "
        "or benchmarks/RESULTS-quick.md with --quick)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=BENCH_DIR / ".work",
        help="scratch space for contacts files and output (default: benchmarks/.work)",
    )
    parser.add_argument(
        "--ref",
        metavar="REV",
        help="benchmark bulkopens as committed at REV (e.g. HEAD), from a snapshot, instead of "
        "the working tree: a long run then measures one version even while files change",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead: profile the bulkopens library contender on the unthrottled 1-record "
        "case with pyinstrument; reports go to benchmarks/profile/",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Killed with SIGTERM: unwind, so the simulators are stopped and the scratch space removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    pin_self_to_client_cpu()  # children inherit it; the simulator is moved to the other CPU
    if args.profile:
        return profile(args)
    plan = _scenarios.QUICK if args.quick else _scenarios.FULL
    if args.rounds:
        plan = dataclasses.replace(plan, **args.rounds)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SCENARIOS)
    if unknown:
        print(f"unknown scenario(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    results = args.results or BENCH_DIR / ("RESULTS-quick.md" if args.quick else "RESULTS.md")
    command = "python -m benchmarks.run" + (" " + shlex.join(argv or sys.argv[1:])).rstrip()
    started = time.monotonic()
    print(f"bulkopens benchmarks, {plan.name} plan: {', '.join(sorted(only))}", flush=True)
    with work_directory(args.work_dir.resolve()) as work:
        if args.ref:
            use_snapshot(args.ref, work / "snapshot")
        else:
            compile_bytecode(REPO_DIR)
        facts = machine_facts()
        logs = work / "logs"
        rate = _scenarios.rate_limited(plan, work, logs) if "rate" in only else None
        speed = _scenarios.unthrottled(plan, work, logs) if "speed" in only else None
        mem = _scenarios.memory(plan, work, logs) if "memory" in only else None
        fault = _scenarios.faults(plan, work, logs) if "faults" in only else None
        whole = _scenarios.whole(plan, work, logs) if "whole" in only else None
        paced = _scenarios.paced(plan, work, logs) if "paced" in only else None
        commit_at_end = machine_facts()["commit"]
    text = _report.render(
        plan,
        facts,
        commit_at_end,
        started,
        time.monotonic(),
        rate,
        speed,
        mem,
        fault,
        command,
        whole,
        paced,
    )
    results.write_text(text, encoding="utf-8")
    print(f"\nwrote {results} in {(time.monotonic() - started) / 60:.1f} min", flush=True)
    return 0


def profile(args: argparse.Namespace) -> int:
    """The unthrottled cases of the library contender, under pyinstrument.

    The 1-record case shows the per-request overhead, the 500-record case the per-record one.
    """
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        print("pyinstrument is missing: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    target = BENCH_DIR / "profile"
    target.mkdir(exist_ok=True)
    plan = _scenarios.QUICK if args.quick else _scenarios.FULL
    cases = [
        ("1record", 1, "0", plan.one_record_contacts),
        ("500record", 500, "1", plan.full_page_contacts),
    ]
    with work_directory(args.work_dir.resolve()) as work:
        if args.ref:
            use_snapshot(args.ref, work / "snapshot")
        for name, page_size, heavy, contacts_n in cases:
            contacts = write_contacts(work / f"contacts-{contacts_n}.txt", range(1, contacts_n + 1))
            session = target / f"bulkopens_lib-{name}.pyisession"
            sim_args = [
                "--contacts", "100000", "--heavy-fraction", heavy, "--rate", "0",
                "--daily-quota", "0",
            ]  # fmt: skip
            with Simulator(sim_args, work / "logs") as sim:
                cmd = [
                    sys.executable, "-m", "pyinstrument", "-r", "pyisession", "-o", str(session),
                    str(CONTENDER_DIR / "bulkopens_lib.py"), "--base-url", sim.url,
                    "--api-key", KEY, "--token", TOKEN, "--contacts", str(contacts),
                    "--out", str(work / f"out-{name}"), "--rate", "0",
                    "--concurrency", str(plan.concurrency), "--page-size", str(page_size),
                ]  # fmt: skip
                result = run_process(cmd, env=None, log_dir=work / f"profile-{name}")
                pages = sim.stats().ok
            if result.exit_code != 0:
                print(result.stderr, file=sys.stderr)
                return 1
            for renderer, suffix in (("text", "txt"), ("html", "html")):
                report = target / f"bulkopens_lib-{name}.{suffix}"
                load = ["--load", str(session), "-r", renderer, "-o", str(report)]
                subprocess.run(
                    [sys.executable, "-m", "pyinstrument", *load], check=True, cwd=REPO_DIR
                )
            print(
                f"{name}: profiled {pages:,} pages of {contacts_n} contacts at --page-size "
                f"{page_size} ({result.wall:.1f} s wall, {result.cpu:.1f} s CPU under the "
                f"profiler): {target}/bulkopens_lib-{name}.txt and .html",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
