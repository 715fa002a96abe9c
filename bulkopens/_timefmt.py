"""ISO-8601 parsing and the API's canonical UTC form ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def parse_instant(text: str) -> datetime:
    """Parse an ISO-8601 date or date-time into an aware UTC datetime.

    A date alone means midnight UTC; a time without an offset is taken as UTC.
    Raises ValueError on anything else.
    """
    value = text.strip()
    if not value or len(value) > 64:
        raise ValueError(f"not an ISO-8601 date-time: {text[:64]!r}")
    if value[-1] in "zZ":
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO-8601 date-time: {text[:64]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_instant(moment: datetime) -> str:
    """Format as the API does: UTC, milliseconds, ``Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def canonical(text: str) -> str:
    """The canonical form of an API timestamp, so that timestamps compare as strings.

    The API's own form passes through untouched (the fast path); others are normalised.
    """
    if len(text) == 24 and text[-1] == "Z" and text[10] == "T" and text[19] == ".":
        return text
    return format_instant(parse_instant(text))


def next_utc_midnight(now: datetime) -> datetime:
    """The next 00:00:00 UTC after ``now``: when the daily quota resets."""
    day = now.astimezone(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
