"""Mistakes ``mypy --strict`` must find in an app on bulkopens: one on each line marked
``# error`` (tests/test_library_app.py checks the lines, and that no other line is reported)."""

from __future__ import annotations

from bulkopens import Client, QuotaExhausted


async def misuse(client: Client) -> None:
    client.records(["1"], report="open")  # error
    async with client.records(["1"]) as stream:
        async for record in stream:
            _ = record["click_date"]  # error
            _ = record["open_date"].missing  # error
    client.campaign_records(["1"], report="all")  # error
    for failure in stream.failures:
        _ = failure.work  # error
    try:
        await client.export(["1"], "out/")
    except QuotaExhausted as exc:
        _ = exc.summary.records  # error
