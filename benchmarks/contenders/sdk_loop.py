"""Contender b: the SDK way. A sequential loop, one contact and one page at a time.

What a script on top of a v2 SDK does: for each contact, GET the first page, write its
records, follow ``next_link`` (re-adding ``api_key``, which the API leaves out of it), next
contact. ``requests`` is not in this environment, so the client is ``http.client`` with one
keep-alive connection (what a ``requests.Session`` gives), reconnecting after an error.
Simple retry on 5xx and connection errors (up to 6, with a growing sleep); on a 429 it waits
a second and tries again; with ``--rate`` it sleeps so that request starts are at least
``1/rate`` apart. Records go to ``OUT/opens.ndjson`` with ``json.dumps``.

Prints one JSON line on stdout: pages, records, requests, retries, failed contacts.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import sys
import time
import urllib.parse
from typing import IO, Any

MAX_RETRIES = 6


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--contacts", required=True, help="one contact id per line")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--rate", type=float, default=4.0, help="requests/s; 0 = no limit")
    parser.add_argument("--concurrency", type=int, default=1, help="ignored: one at a time")
    parser.add_argument("--page-size", type=int, default=500)
    return parser.parse_args(argv)


class ApiError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status


class TrackingApi:
    """The slice of a v2 SDK this needs: one GET of one page, on a keep-alive connection."""

    def __init__(self, base_url: str, api_key: str, token: str, rate: float) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.host, self.port = parts.hostname or "localhost", parts.port
        self.prefix = parts.path.rstrip("/")
        self.api_key = api_key
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.last_start = 0.0
        self.conn: http.client.HTTPConnection | None = None
        self.counts = {"pages": 0, "records": 0, "requests": 0, "retries": 0, "failed": 0}

    def _send(self, path_and_query: str) -> tuple[int, bytes]:
        if self.interval:
            wait = self.last_start + self.interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.last_start = time.monotonic()
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        self.counts["requests"] += 1
        try:
            self.conn.request("GET", path_and_query, headers=self.headers)
            response = self.conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise

    def get(self, path_and_query: str) -> dict[str, Any]:
        """GET with retries; raises ApiError for an answer that retrying will not fix."""
        sep = "&" if "?" in path_and_query else "?"
        target = f"{self.prefix}{path_and_query}{sep}api_key={self.api_key}"
        failures = 0
        while True:
            try:
                status, body = self._send(target)
            except (OSError, http.client.HTTPException):
                status, body = 0, b""
            if status == 200:
                try:
                    data: dict[str, Any] = json.loads(body)
                    return data
                except ValueError:  # a body cut short
                    status = 0
            if status == 429:
                time.sleep(1.0)
                continue
            if status == 0 or status >= 500:
                failures += 1
                if failures > MAX_RETRIES:
                    raise ApiError(status, body)
                self.counts["retries"] += 1
                time.sleep(min(30.0, 0.5 * failures))
                continue
            raise ApiError(status, body)

    def contact_opens(self, contact_id: str, limit: int) -> dict[str, Any]:
        return self.get(f"/v2/contacts/{contact_id}/tracking/opens?limit={limit}")


def export(api: TrackingApi, contact_ids: list[str], page_size: int, out: IO[str]) -> None:
    for contact_id in contact_ids:
        try:
            page = api.contact_opens(contact_id, page_size)
            while True:
                results = page.get("results", [])
                api.counts["pages"] += 1
                api.counts["records"] += len(results)
                for record in results:
                    out.write(json.dumps(record) + "\n")
                next_link = page.get("meta", {}).get("pagination", {}).get("next_link")
                if not next_link or not results:
                    break
                page = api.get(next_link.removeprefix(api.prefix))
        except ApiError:
            api.counts["failed"] += 1


def main() -> None:
    args = parse_args()
    with open(args.contacts, encoding="utf-8") as handle:
        contact_ids = [s for s in (line.strip() for line in handle) if s and s[0] != "#"]
    os.makedirs(args.out, exist_ok=True)
    api = TrackingApi(args.base_url, args.api_key, args.token, args.rate)
    path = os.path.join(args.out, "opens.ndjson")
    # Stopped early (SIGINT): keep what was written and report what was done.
    with open(path, "w", encoding="utf-8") as out, contextlib.suppress(KeyboardInterrupt):
        export(api, contact_ids, args.page_size, out)
    sys.stdout.write(json.dumps(api.counts) + "\n")


if __name__ == "__main__":
    main()
