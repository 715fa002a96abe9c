"""Processes and measurements: the simulator process, one contender run, machine facts.

Every contender runs as its own subprocess, pinned to the client CPU; the simulator runs in
another process pinned to the server CPU. A run's client CPU seconds and peak RSS come from
``os.wait4`` (``ru_utime + ru_stime``, ``ru_maxrss``); requests, their start times and the
answers by status come from the simulator's ``/_sim/stats``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
CONTENDER_DIR = BENCH_DIR / "contenders"
REPO_DIR = BENCH_DIR.parent
KEY = "bench-key-3f9a1c"
TOKEN = "bench-token-7d2e4b"

# Where the simulator and the contenders run, and with which environment: the working tree by
# default; with ``use_snapshot`` a copy of bulkopens as committed at some revision, put first
# on PYTHONPATH, so that edits made to the working tree during a long run do not leak into it.
_RUN_DIR = REPO_DIR
_EXTRA_ENV: dict[str, str] = {}
_REF: str | None = None


def compile_bytecode(root: Path) -> None:
    """Compile every module of ``root/bulkopens`` to bytecode, as an install does (pip
    compiles at install time). Without it, an environment with PYTHONDONTWRITEBYTECODE (or a
    fresh snapshot, or a file edited since its last import) makes every measured process
    compile bulkopens from source again: about 50 ms of start-up that no user pays."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(root / "bulkopens")],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def use_snapshot(ref: str, into: Path) -> None:
    """Benchmark ``bulkopens`` as committed at ``ref`` (git archive into ``into``)."""
    global _RUN_DIR, _REF
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", ref, "bulkopens"], cwd=REPO_DIR, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    compile_bytecode(into)
    _RUN_DIR, _REF = into, _git("rev-parse", "--short=12", ref) or ref  # fixed, even if ref moves
    _EXTRA_ENV["PYTHONPATH"] = str(into)


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    merged = dict(os.environ if env is None else env)
    merged.update(_EXTRA_ENV)
    return merged


# Server on CPU 1, clients (and this harness) on CPU 0, when there are two CPUs to split.
_CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPUS: set[int] | None = {_CPUS[1]} if len(_CPUS) >= 2 else None
CLIENT_CPUS: set[int] | None = {_CPUS[0]} if len(_CPUS) >= 2 else None


def pin_self_to_client_cpu() -> None:
    if CLIENT_CPUS is not None:
        os.sched_setaffinity(0, CLIENT_CPUS)


def _pin(pid: int, cpus: set[int] | None) -> None:
    """Pin every thread of ``pid`` to ``cpus`` (threads it starts later inherit that)."""
    if cpus is None:
        return
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task.name), cpus)


# -- the simulator ----------------------------------------------------------------------------


class Simulator:
    """``python -m bulkopens simulate --port 0 ARGS`` in its own process, on the server CPU."""

    def __init__(self, args: Sequence[str], log_dir: Path) -> None:
        self.args = list(args)
        self._log_dir = log_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.state_dir: Path | None = None

    def __enter__(self) -> Simulator:
        cmd = [
            sys.executable, "-m", "bulkopens", "simulate", "--port", "0",
            "--api-key", KEY, "--token", TOKEN, *self.args,
        ]  # fmt: skip
        self._log_dir.mkdir(parents=True, exist_ok=True)
        # The key's budget of this simulator alone: the user's own ledger is keyed by host and
        # port, and a port used again by a later simulator would find an earlier one's spend.
        self.state_dir = Path(tempfile.mkdtemp(prefix="budget-", dir=self._log_dir))
        stderr = (self._log_dir / "simulator.stderr").open("ab")
        self._proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=_RUN_DIR,
            env=child_env(),
        )
        _pin(self._proc.pid, SERVER_CPUS)
        stderr.close()
        assert self._proc.stdout is not None
        first = self._proc.stdout.readline().decode().strip()
        if not first.startswith("serving "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"the simulator did not start ({' '.join(self.args)}): {first!r}")
        self.url = first.removeprefix("serving ")
        _pin(self._proc.pid, SERVER_CPUS)  # again, for any thread started meanwhile
        # The second line describes the limits; keep reading stdout so the pipe never fills.
        threading.Thread(target=self._proc.stdout.read, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _call(self, path: str, method: str = "GET") -> bytes:
        data = b"" if method == "POST" else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=120) as response:
            body: bytes = response.read()
        return body

    def stats(self) -> SimStats:
        data = json.loads(self._call("/_sim/stats"))
        counts = {int(k): v for k, v in data["status_counts"].items()}
        return SimStats(counts, sorted(data["request_times"]))

    def reset_stats(self) -> None:
        self._call("/_sim/reset-stats", "POST")

    def cpu_seconds(self) -> float:
        """CPU seconds the simulator process has used so far (from /proc)."""
        assert self._proc is not None
        try:
            fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def truth_count(self, contact_ids: Sequence[str], report: str = "opens") -> int:
        """How many records the contacts have in all: the ground truth of a complete export."""
        total = 0
        for start in range(0, len(contact_ids), 200):
            query = "&".join(f"contact_id={cid}" for cid in contact_ids[start : start + 200])
            body = self._call(f"/_sim/truth?report={report}&{query}")
            total += body.count(b"\n")
        return total

    def env(self) -> dict[str, str]:
        """The environment for ``bulkopens fetch`` against this simulator."""
        env = dict(os.environ)
        env.update(CTCT_API_KEY=KEY, CTCT_ACCESS_TOKEN=TOKEN, CTCT_BASE_URL=self.url)
        if self.state_dir is not None:
            env["BULKOPENS_STATE_DIR"] = str(self.state_dir)
        return env


@dataclass(slots=True)
class SimStats:
    status_counts: dict[int, int]
    request_times: list[float]  # simulator clock (CLOCK_MONOTONIC) at each request's arrival

    @property
    def requests(self) -> int:
        return len(self.request_times)

    @property
    def throttles(self) -> int:
        return self.status_counts.get(429, 0) + self.status_counts.get(403, 0)

    @property
    def ok(self) -> int:
        return self.status_counts.get(200, 0)

    @property
    def server_errors(self) -> int:
        return sum(v for k, v in self.status_counts.items() if k >= 500)

    @property
    def resets(self) -> int:
        return self.status_counts.get(0, 0)

    @property
    def span(self) -> float:
        """Seconds from the first request's arrival to the last one's."""
        if len(self.request_times) < 2:
            return 0.0
        return self.request_times[-1] - self.request_times[0]


# -- one contender run ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contender:
    """How to start one contender: a script under contenders/, or the CLI."""

    key: str  # short name used in tables: a-lib, a-cli, b, c, d
    label: str
    script: str | None  # file under contenders/; None = ``python -m bulkopens fetch``
    writes: bool = True  # writes NDJSON that can be counted
    extra: tuple[str, ...] = ()  # more arguments for the script (or the CLI)
    launcher: tuple[str, ...] = ()  # the CLI: how it is started; () = python -m bulkopens

    def command(self, url: str, contacts: Path, out: Path, opts: RunOptions) -> list[str]:
        common = [
            "--contacts", str(contacts), "--out", str(out), "--rate", f"{opts.rate:g}",
            "--concurrency", str(opts.concurrency), "--page-size", str(opts.page_size),
        ]  # fmt: skip
        if self.script is None:  # the CLI takes its secrets from the environment
            launcher = self.launcher or (sys.executable, "-m", "bulkopens")
            return [*launcher, "fetch", *common, "--quiet", *self.extra]
        script = str(CONTENDER_DIR / self.script)
        return [
            sys.executable, script, "--base-url", url, "--api-key", KEY, "--token", TOKEN,
            *common, *self.extra,
        ]  # fmt: skip


#: The installed ``bulkopens`` command beside this interpreter (what a user runs; with
#: ``--ref``, PYTHONPATH makes it import the snapshot).
CONSOLE_SCRIPT = Path(sys.executable).parent / "bulkopens"

#: Whether uvloop is installed (the ``uvloop`` extra; the bench extra has it): the CLI then
#: runs on it (``--event-loop auto``), and the library is measured on both loops.
HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


CONTENDERS = {
    c.key: c
    for c in (
        Contender("a-lib", "bulkopens library (durable)", "bulkopens_lib.py"),
        Contender(
            "a-uv",
            "bulkopens library on uvloop (durable)",
            "bulkopens_lib.py",
            extra=("--loop", "uvloop"),
        ),
        Contender(
            "a-cli", f"bulkopens CLI (durable, {'uvloop' if HAS_UVLOOP else 'asyncio'})", None
        ),
        Contender(
            "a-cmd",
            "bulkopens command (console script, as installed: uvloop)",
            None,
            launcher=(str(CONSOLE_SCRIPT),),
        ),
        Contender(
            "a-cmd-asyncio",
            "bulkopens command on asyncio's own loop (--event-loop asyncio)",
            None,
            extra=("--event-loop", "asyncio"),
            launcher=(str(CONSOLE_SCRIPT),),
        ),
        Contender("b", "SDK loop (sequential)", "sdk_loop.py"),
        Contender("c", "hand-written asyncio", "handwritten.py"),
        Contender("d", "raw aiohttp loop (ceiling)", "raw_loop.py", writes=False),
    )
}


@dataclass(frozen=True, slots=True)
class RunOptions:
    rate: float
    concurrency: int
    page_size: int = 500
    deadline: float | None = None  # stop the contender (SIGINT) after this many seconds
    sample_rss: bool = False


@dataclass(slots=True)
class ProcessResult:
    exit_code: int
    wall: float  # seconds from spawn to exit
    cpu: float  # ru_utime + ru_stime
    maxrss_mb: float  # ru_maxrss
    stopped: bool  # stopped at the deadline
    stdout: str
    stderr: str
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MB)
    started: float = 0.0  # time.monotonic() at spawn (CLOCK_MONOTONIC, as the simulator's)
    switches: int = 0  # voluntary context switches (ru_nvcsw)


@dataclass(slots=True)
class Run:
    """Everything measured about one contender run."""

    contender: str
    proc: ProcessResult
    sim: SimStats
    counts: dict[str, Any]  # what the contender says it did (pages, records, ...)
    lines: int | None  # NDJSON record lines found in --out (None: writes nothing)
    unique_lines: int | None
    server_cpu: float = float("nan")  # CPU seconds of the simulator during the run


class _Spawner:
    """The harness's end of ``_spawn.py``: every measured process is started from there."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", str(BENCH_DIR / "_spawn.py"), str(_RUN_DIR)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            assert self._proc.stdin is not None
            assert self._proc.stdout is not None
            self._proc.stdin.write(json.dumps(job) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the spawner died")
        result: dict[str, Any] = json.loads(line)
        if "error" in result:
            raise RuntimeError(f"cannot run {job['argv'][:3]}: {result['error']}")
        return result


_SPAWNER = _Spawner()


def run_process(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None,
    log_dir: Path,
    deadline: float | None = None,
    sample_rss: bool = False,
) -> ProcessResult:
    """Run ``cmd`` on the client CPU; measure wall time, CPU time and peak RSS via wait4.

    ``deadline``: stop it with SIGINT after that many seconds (SIGKILL 30 s later).
    ``sample_rss``: also sample its RSS every 0.25 s.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / "stdout", log_dir / "stderr"
    argv = list(cmd)
    argv[0] = shutil.which(argv[0]) or argv[0]
    result = _SPAWNER.run(
        {
            "argv": argv,
            "env": child_env(env),
            "stdout": str(out_path),
            "stderr": str(err_path),
            "deadline": deadline,
            "sample": sample_rss,
        }
    )
    return ProcessResult(
        exit_code=result["exit_code"],
        wall=result["wall"],
        cpu=result["cpu"],
        maxrss_mb=result["maxrss_kb"] / 1024.0,
        stopped=result["stopped"],
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
        rss_samples=[(t, mb) for t, mb in result["samples"]],
        started=result["start"],
        switches=result.get("switches", 0),
    )


def run_contender(
    sim: Simulator,
    contender: Contender,
    contacts: Path,
    opts: RunOptions,
    work_dir: Path,
    *,
    count_lines: bool = True,
) -> Run:
    """One measured run: reset the simulator's stats, run the contender, collect everything."""
    out = Path(tempfile.mkdtemp(prefix=f"{contender.key}-", dir=work_dir))
    try:
        sim.reset_stats()
        server_before = sim.cpu_seconds()
        proc = run_process(
            contender.command(sim.url, contacts, out, opts),
            env=sim.env(),
            log_dir=out.with_name(out.name + ".log"),
            deadline=opts.deadline,
            sample_rss=opts.sample_rss,
        )
        server_cpu = sim.cpu_seconds() - server_before
        stats = sim.stats()
        # Only requests of this process (CLOCK_MONOTONIC is one clock for every process).
        stats.request_times = [t for t in stats.request_times if t >= proc.started]
        counts = _counts(contender, proc, out)
        lines = unique = None
        if contender.writes and count_lines:
            lines, unique = count_records(out)
        if proc.exit_code not in (0, 130) and not proc.stopped:
            tail = proc.stderr.strip().splitlines()[-3:]
            print(f"    ! {contender.key} exited {proc.exit_code}: {' | '.join(tail)}", flush=True)
        return Run(contender.key, proc, stats, counts, lines, unique, server_cpu)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _counts(contender: Contender, proc: ProcessResult, out: Path) -> dict[str, Any]:
    if contender.script is None:
        with contextlib.suppress(OSError, ValueError):
            summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
            return summary
        return {}
    for line in reversed(proc.stdout.strip().splitlines()):
        with contextlib.suppress(ValueError):
            data: dict[str, Any] = json.loads(line)
            return data
    return {}


def count_records(out: Path) -> tuple[int, int]:
    """(record lines, distinct record lines) in the NDJSON files of ``out`` (not errors)."""
    lines = 0
    distinct: set[int] = set()
    for path in sorted(out.glob("*.ndjson")):
        if path.name == "errors.ndjson":
            continue
        with path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    lines += 1
                    distinct.add(hash(line.strip()))
    return lines, len(distinct)


def write_contacts(path: Path, ids: range) -> Path:
    if not path.exists() or path.stat().st_size == 0:
        with path.open("w") as handle:
            handle.writelines(f"{i}\n" for i in ids)
    return path


# -- the machine ------------------------------------------------------------------------------


def machine_facts() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in (
        "bulkopens", "aiohttp", "orjson", "anyio", "aiolimiter", "yarl", "tenacity", "uvloop",
    ):  # fmt: skip
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    commit = _git("rev-parse", "--short=12", _REF or "HEAD") or "unknown"
    if _REF is not None:
        commit += " (a snapshot of it: edits to the working tree are not measured)"
    elif _git("status", "--porcelain", "--", "bulkopens"):
        commit += " (the working tree, with uncommitted changes under bulkopens/)"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": f"{os.cpu_count()} (server pinned to CPU {_fmt(SERVER_CPUS)}, "
        f"clients to CPU {_fmt(CLIENT_CPUS)})",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "load": load,
        "commit": commit,
        **{f"v:{k}": v for k, v in versions.items()},
    }


def _fmt(cpus: set[int] | None) -> str:
    return ",".join(map(str, sorted(cpus))) if cpus else "(not pinned)"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO_DIR, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


@contextlib.contextmanager
def work_directory(base: Path) -> Iterator[Path]:
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="run-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
