"""Timestamps on the wire: epoch milliseconds <-> the API's ISO-8601 strings.

Output is always ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC, milliseconds). Input (``created_since``)
accepts ``Z`` or a ``±hh:mm`` offset, with or without 1-6 fractional digits.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, timedelta, timezone

# Rendering dates is the hot spot of big pages, so they are assembled from lookup tables:
# "YYYY-MM-DDT" per day (a bounded memo) + "HH:MM:SS." per second of the day + "mmmZ".
_DAY_PREFIXES: dict[int, str] = {}
_CLOCK = [f"{h:02d}:{m:02d}:{s:02d}." for h in range(24) for m in range(60) for s in range(60)]
_MILLIS = [f"{ms:03d}Z" for ms in range(1000)]
_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}:\d{2})\Z"
)


def format_ms(ms: int) -> str:
    """Format epoch milliseconds as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    day, rest = divmod(ms, 86_400_000)
    prefix = _DAY_PREFIXES.get(day)
    if prefix is None:
        if len(_DAY_PREFIXES) >= 100_000:
            _DAY_PREFIXES.clear()
        prefix = _DAY_PREFIXES[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86_400))
    second, millis = divmod(rest, 1000)
    return prefix + _CLOCK[second] + _MILLIS[millis]


def ms_from_datetime(moment: datetime) -> int:
    """Epoch milliseconds of an aware datetime (rounded down)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def parse_since_ms(text: str) -> int:
    """Parse an inclusive lower bound (``created_since``) into epoch milliseconds.

    Returns the smallest whole millisecond at or after the instant, so that
    ``record_ms >= result`` is exactly "the record is on or after ``text``".
    Raises ``ValueError`` on anything but the accepted ISO-8601 forms.
    """
    match = _ISO.match(text)
    if match is None:
        raise ValueError("not an ISO-8601 timestamp with Z or ±hh:mm")
    year, month, day, hour, minute, second, frac, zone = match.groups()
    micros = int(frac.ljust(6, "0")) if frac else 0
    if zone == "Z":
        tz = UTC
    else:
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError("bad UTC offset")
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    moment = datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second), 0, tzinfo=tz
    )
    return ms_from_datetime(moment) + math.ceil(micros / 1000)
