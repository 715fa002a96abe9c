"""The spawner: a tiny process that starts each measured contender and waits for it.

Why a separate process: on Linux a child's ``ru_maxrss`` starts at the resident size of the
process that spawned it (the spawner's memory counts as the child's until ``execve``), so a
harness that has grown to 50 MB would report every contender at 50 MB at least. This process
runs as ``python -I -S`` with the standard library only (about 10 MB), so the floor it leaves
is below any contender's real peak.

Protocol: one JSON job per line on stdin (``argv``, ``env``, ``stdout``, ``stderr``,
``deadline``, ``sample``), one JSON result per line on stdout (``exit_code``, ``wall``,
``cpu``, ``maxrss_kb``, ``switches``, ``stopped``, ``samples``). The working directory is
``argv[1]``.
"""

import json
import os
import select
import signal
import sys
import time

GRACE = 30.0  # seconds between SIGINT at the deadline and SIGKILL


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return None


def run(job: dict) -> dict:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, job["stdout"], flags, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, job["stderr"], flags, 0o644),
    ]
    deadline, sample = job.get("deadline"), job.get("sample", False)
    start = time.monotonic()
    # Default SIGINT/SIGTERM in the child even when they are ignored here (a harness started
    # in the background by a non-interactive shell ignores SIGINT, and children inherit that).
    pid = os.posix_spawn(
        job["argv"][0],
        job["argv"],
        job["env"],
        file_actions=actions,
        setsigdef=(signal.SIGINT, signal.SIGTERM),
    )
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(sys.stdin.fileno(), select.POLLIN)  # only EOF can come while a job runs
    samples: list[tuple[float, float]] = []
    stopped_at = None
    while True:
        ready = {fd for fd, _ in poller.poll(250 if (sample or deadline is not None) else None)}
        if pidfd in ready:
            break
        if ready:  # the harness is gone: take the child with us
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            sys.exit(1)
        now = time.monotonic() - start
        if sample:
            mb = rss_mb(pid)
            if mb is not None:
                samples.append((round(now, 3), mb))
        if deadline is not None and stopped_at is None and now >= deadline:
            stopped_at = now
            os.kill(pid, signal.SIGINT)  # bulkopens commits and exits 130
        if stopped_at is not None and now - stopped_at > GRACE:
            os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - start
    os.close(pidfd)
    return {
        "exit_code": os.waitstatus_to_exitcode(status),
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "maxrss_kb": usage.ru_maxrss,
        "switches": usage.ru_nvcsw,  # voluntary context switches (waits: futex, epoll, I/O)
        "stopped": stopped_at is not None,
        "samples": samples,
        "start": start,  # CLOCK_MONOTONIC: comparable with the simulator's request times
    }


def main() -> None:
    os.chdir(sys.argv[1])
    for line in sys.stdin:
        try:
            result = run(json.loads(line))
        except Exception as exc:  # report it; the harness raises
            result = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
