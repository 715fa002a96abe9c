"""The files a run leaves beside the records: summary.json, errors.ndjson and manifest.json.

All three are views of the committed state, rewritten whole and atomically (temp file, fsync,
rename) at the end of every attempt, so a reader never sees half of one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bulkopens._reports import REPORTS
from bulkopens._state import Store

SUMMARY = "summary.json"
ERRORS = "errors.ndjson"
MANIFEST = "manifest.json"


@dataclass(frozen=True, slots=True)
class Summary:
    """What one run (one call of export, or one iteration) did."""

    status: (
        str  # complete | incomplete | interrupted | quota_exhausted | auth_failed | config_error
    )
    report: str
    contacts_done: int
    contacts_failed: int
    contacts_skipped: int
    contacts_invalid: int
    duplicates: int
    records: int
    pages: int
    requests: int
    retries: int
    throttles: int
    responses: dict[int, int]
    elapsed_seconds: float
    out_dir: str | None = None
    run: int | None = None
    attempt: int | None = None
    files: list[str] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)  # the whole run, across attempts
    error: str | None = None
    quota_resets_at: str | None = None
    mode: str = "contact"  # contact: reports of --contacts; campaign: reports of --campaigns
    strategy: str | None = None  # contact mode: auto | contact | campaign
    plan: dict[str, Any] | None = None  # the planner's estimate and choice (Plan.to_json)

    @property
    def unit(self) -> str:
        """What the ``contacts_*`` counts count: ``contacts``, or ``campaigns`` when the work
        items were campaigns (campaign mode, or the planner's campaign path)."""
        via = (self.plan or {}).get("path", self.mode)
        return "campaigns" if "campaign" in (self.mode, via) else "contacts"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["responses"] = {str(k): v for k, v in sorted(self.responses.items())}
        return data


def _atomic_write(path: Path, chunks: Iterable[bytes]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_artifacts(out: Path, store: Store, summary: Summary) -> None:
    """Rewrite errors.ndjson, manifest.json and summary.json from the committed state."""
    key_column = "campaign_id" if summary.unit == "campaigns" else "contact_id"
    invalid_noun = "campaign" if summary.mode == "campaign" else "contact"
    rows = store.failures(key_column, invalid_noun)
    _atomic_write(
        out / ERRORS, (orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE) for row in rows)
    )
    manifest = {"report": summary.report, "mode": summary.mode, "runs": store.runs()}
    _atomic_write(out / MANIFEST, [orjson.dumps(manifest, option=orjson.OPT_INDENT_2)])
    _atomic_write(out / SUMMARY, [orjson.dumps(summary.to_json(), option=orjson.OPT_INDENT_2)])


def remove_outputs(out: Path) -> None:
    """``--fresh``: delete the files earlier runs left in ``out`` (only bulkopens' own).

    The state in ``.bulkopens/`` is the store's to reset, under its lock.
    """
    ours = re.compile(rf"(?:{'|'.join(REPORTS)})-\d{{5,}}\.ndjson")
    for path in out.glob("*.ndjson"):
        if path.name == ERRORS or ours.fullmatch(path.name):
            path.unlink()
    for name in (SUMMARY, MANIFEST):
        (out / name).unlink(missing_ok=True)
