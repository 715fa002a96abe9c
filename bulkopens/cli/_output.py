"""Progress for people: a live line on a terminal, a log line every few seconds elsewhere."""

from __future__ import annotations

import math
import os
import sys
import time
from collections import deque
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO, cast

import orjson

from bulkopens._exceptions import ConfigurationError
from bulkopens._stats import Progress

if TYPE_CHECKING:
    from bulkopens import Summary

_WINDOW = 15.0  # seconds of history behind the request rate and the ETA


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 retry``, ``2 retries``: a count and its noun, with thousands separators."""
    if n == 1:
        return f"1 {word}"
    return f"{n:,} {many or word + 's'}"


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Console:
    """Where the command's words go, and in which form: text on stderr (the default), or one
    JSON object per line (``--log-format json``: ``time``, ``level``, ``event``, ``message``
    and the event's own fields), to stderr or appended to a log file (``--log-file``). With a
    log file, errors and warnings also reach stderr, as text, so that cron still mails them.
    """

    def __init__(self, *, fmt: str = "text", path: str | None = None) -> None:
        self.json = fmt == "json"
        self._file: TextIO | None = None
        if path is not None:
            try:
                self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot open --log-file {path}: {exc.strerror or exc}"
                ) from None

    @property
    def stream(self) -> TextIO:
        return self._file if self._file is not None else sys.stderr

    @property
    def live(self) -> bool:
        """Whether a live, redrawn line fits: text on a terminal, no log file."""
        return not self.json and self._file is None and sys.stderr.isatty()

    def emit(self, event: str, text: str, *, level: str = "info", **fields: Any) -> None:
        if self.json:
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            head = {"time": stamp, "level": level, "event": event, "message": text}
            line = orjson.dumps({**head, **fields}, default=str).decode()
        else:
            line = text
        print(line, file=self.stream, flush=True)
        if self._file is not None and level in ("error", "warning"):
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ProgressReporter:
    """Turns progress snapshots into a live status line (``live``) or periodic log lines.

    The ETA assumes each remaining contact costs as many requests as the finished ones did on
    average, at the request rate of the last few seconds, never above the pacer's rate.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        live: bool,
        log_every: float = 10.0,
        console: Console | None = None,
    ):
        self._out = stream if stream is not None else sys.stderr  # the guarded one, once set
        self._console = console
        self._live = live
        self._log_every = log_every
        self._last_log = time.monotonic()
        self._history: deque[tuple[float, int]] = deque()
        self._width = 0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        self._history.append((now, p.requests))
        while len(self._history) > 2 and now - self._history[0][0] > _WINDOW:
            self._history.popleft()
        if self._live:
            self._draw(self.line(p, width=_columns(self._out) - 1))
            if p.finished:
                self._draw("")
        elif now - self._last_log >= self._log_every and not p.finished:
            self._last_log = now
            if self._console is not None and self._console.json:
                eta = self.eta(p)
                self._console.emit(
                    "progress",
                    self.line(p),
                    **asdict(p),
                    requests_per_second=round(self.request_rate(), 3),
                    eta_seconds=round(eta, 1) if math.isfinite(eta) else None,
                )
                return
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            out = self._console.stream if self._console is not None else self._out
            print(f"{stamp} bulkopens: {self.line(p)}", file=out, flush=True)

    def _draw(self, text: str) -> None:
        pad = max(0, self._width - len(text))
        self._out.write("\r" + text + " " * pad + ("\r" if not text else ""))
        self._out.flush()
        self._width = len(text)

    def request_rate(self) -> float:
        if len(self._history) < 2:
            return 0.0
        (t0, r0), (t1, r1) = self._history[0], self._history[-1]
        return (r1 - r0) / (t1 - t0) if t1 > t0 else 0.0

    def eta(self, p: Progress) -> float:
        if p.contacts_total is None:
            return math.nan
        finished = p.contacts_finished
        remaining = max(0, p.contacts_total - finished - p.contacts_invalid - p.duplicates)
        if remaining == 0:
            return 0.0
        per_contact = max(1.0, p.requests / finished) if finished else 1.0
        rate = min(self.request_rate() or p.rate, p.rate)
        return remaining * per_contact / rate if rate > 0 else math.nan

    def line(self, p: Progress, width: int | None = None) -> str:
        """The progress line; with ``width``, only the parts that fit, most telling first
        (a live line that wraps would scroll the terminal at every redraw)."""
        done = f"{p.contacts_finished:,}"
        if p.contacts_total:
            pct = 100.0 * min(1.0, (p.contacts_finished + p.contacts_invalid) / p.contacts_total)
            done += f"/{p.contacts_total:,} {p.unit} ({pct:.1f}%)"
        else:
            done += f" {p.unit}"
        parts = [done]
        if p.paused > 0:
            parts.append(f"paused {duration(p.paused)} (throttled)")
        elif p.contacts_total:
            parts.append(f"ETA {duration(self.eta(p))}")
        parts += [plural(p.records, "record"), f"{self.request_rate():.1f} req/s"]
        if p.contacts_failed:
            parts.append(f"{p.contacts_failed:,} failed")
        if p.contacts_skipped:
            parts.append(f"{p.contacts_skipped:,} done earlier")
        parts += [plural(p.retries, "retry", "retries"), plural(p.throttles, "throttle")]
        if width is None:
            return " | ".join(parts)
        line = parts[0][: max(width, 1)]
        for part in parts[1:]:
            if len(line) + 3 + len(part) > width:
                break
            line += " | " + part
        return line


def _columns(stream: TextIO) -> int:
    """The width of the terminal behind ``stream`` (80 if it cannot tell)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (OSError, ValueError, AttributeError):
        return 80


def describe(summary: Summary) -> str:
    """A short, human-readable account of a finished (or stopped) run."""
    totals = summary.totals
    failed = totals.get("failed", 0) + totals.get("failed_for_good", 0)
    invalid = totals.get("invalid", 0)
    unit = summary.unit
    lines = [
        f"bulkopens: {summary.status.replace('_', ' ')} after {duration(summary.elapsed_seconds)}"
        f" (run {summary.run}, attempt {summary.attempt})",
        f"  {unit + ':':<9} {summary.contacts_done:,} fetched now, {summary.contacts_skipped:,}"
        f" already done or skipped, {failed:,} failed, {invalid:,} invalid ids skipped",
        f"  records:  {summary.records:,} written now, {plural(summary.requests, 'request')},"
        f" {plural(summary.retries, 'retry', 'retries')}, {plural(summary.throttles, 'throttle')}",
    ]
    if summary.files:
        lines.append(f"  files:    {', '.join(summary.files)} in {summary.out_dir}")
    if failed or invalid:
        lines.append(
            f"  errors:   one line per failed {unit.removesuffix('s')} or invalid id in "
            f"{summary.out_dir}/errors.ndjson"
        )
    return "\n".join(lines)


class _GuardedStream:
    """A text stream whose failures never stop the work: the first write or flush that fails
    (EPIPE from ``2>&1 | head -1``, EIO from a terminal that hung up, a closed stream) points
    its file descriptor at /dev/null, and everything after is quietly dropped, so neither a
    later print nor the interpreter's last flush fails (which would end the process with
    exit 120). Anything else (``isatty``, ``fileno``, ``encoding``) is the stream's own."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.lost = False

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                return self._stream.write(text)
            except (OSError, ValueError):
                self._lose()
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._lose()

    def _lose(self) -> None:
        self.lost = True
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, self._stream.fileno())
            finally:
                os.close(null)
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_stderr() -> None:
    """Make ``sys.stderr`` a stream whose failures never stop the work (see _GuardedStream):
    progress, log lines and messages are for people, and a reader that went away must not
    cost the run. Idempotent."""
    if sys.stderr is not None and not isinstance(sys.stderr, _GuardedStream):
        sys.stderr = cast(TextIO, _GuardedStream(sys.stderr))
