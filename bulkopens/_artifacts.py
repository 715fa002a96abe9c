"""The files a run leaves beside the records: summary.json, errors.ndjson and manifest.json.

All three are views of the committed state, rewritten whole and atomically (temp file, fsync,
rename) at the end of every attempt, so a reader never sees half of one. The temp file is made
with ``O_EXCL | O_NOFOLLOW`` and a link at either name is refused, never written through or
replaced. On a full disk each artifact that fits is still written, and OutputError is raised.

:func:`prepare_outputs` makes ``--out`` ready for an attempt: ``--fresh`` removes what the
forgotten state says bulkopens wrote (its record files, of any report, and the artifacts when
one of its attempts finished), never anything else; artifacts that no finished attempt of the
state wrote are refused; and the record files are recovered (:meth:`RecordFiles.recover`).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

import orjson

from bulkopens._disk import open_new, refuse_link, write_error
from bulkopens._exceptions import ConfigurationError, RunStopped
from bulkopens._files import RecordFiles
from bulkopens._state import Store
from bulkopens._stats import Summary

SUMMARY = "summary.json"
ERRORS = "errors.ndjson"
MANIFEST = "manifest.json"
ID_MAP = "id-map.ndjson"  # v3 runs given v2 ids: how each was mapped (xref)


ARTIFACTS = (ERRORS, MANIFEST, SUMMARY, ID_MAP)


def _atomic_write(path: Path, chunks: Iterable[bytes]) -> None:
    """Write ``path`` whole through ``PATH.tmp`` (made new, never through a link), fsynced and
    renamed over ``path``. A leftover regular ``PATH.tmp`` (a killed write) is ours to replace;
    a link at either name is refused. On an error the temp file is removed (freeing space)."""
    tmp = path.with_name(path.name + ".tmp")
    refuse_link(path)
    try:
        fd = open_new(tmp)
    except FileExistsError:
        if not stat.S_ISREG(os.lstat(tmp).st_mode):
            raise ConfigurationError(f"{tmp} is not a regular file; move it elsewhere") from None
        tmp.unlink()
        fd = open_new(tmp)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_artifacts(
    out: Path,
    store: Store,
    summary: Summary,
    id_form: str = "a v2 {noun} id (a positive integer)",
) -> None:
    """Rewrite errors.ndjson, manifest.json and summary.json (and id-map.ndjson, when v2 ids
    were mapped to v3 ones) from the committed state. ``id_form`` says what an id of the run's
    API looks like, for the invalid input lines.

    Each is written even when another one fails (a full disk may have room for the small
    ones); the first failure is then raised, as OutputError for a full disk.
    """
    key_column = "campaign_id" if summary.unit == "campaigns" else "contact_id"
    invalid_noun = "campaign" if summary.mode == "campaign" else "contact"
    rows = store.failures(key_column, invalid_noun, id_form)
    manifest = {"report": summary.report, "mode": summary.mode, "runs": store.runs()}
    writes: list[tuple[str, Iterable[bytes]]] = [
        (ERRORS, (orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE) for row in rows)),
        (MANIFEST, [orjson.dumps(manifest, option=orjson.OPT_INDENT_2)]),
        (SUMMARY, [orjson.dumps(summary.to_json(), option=orjson.OPT_INDENT_2)]),
    ]
    if next(store.id_map(), None) is not None:  # v3 run that mapped v2 ids (xref)
        writes.append((ID_MAP, (_id_map_line(*row) for row in store.id_map())))
    failed: RunStopped | None = None
    for name, chunks in writes:
        try:
            _atomic_write(out / name, chunks)
        except OSError as exc:
            failed = failed or write_error(exc, out / name)
        except RunStopped as exc:
            failed = failed or exc
    if failed is not None:
        raise failed


def _id_map_line(scope: str, v2: str, v3: str | None) -> bytes:
    """One mapping as a line: ``{"scope": "contact", "v2_id": "42", "v3_id": "..."}``."""
    return orjson.dumps(
        {"scope": scope, "v2_id": v2, "v3_id": v3}, option=orjson.OPT_APPEND_NEWLINE
    )


def prepare_outputs(out: Path, store: Store, files: RecordFiles, fresh: bool) -> None:
    """Make ``out`` ready for an attempt (see the module docstring); before any request.

    Raises ConfigurationError, changing nothing, when ``out`` holds record files or artifacts
    that the state does not account for; OutputError when the disk fails.
    """
    try:
        for name in ARTIFACTS:  # before any request, not when the artifacts are written
            refuse_link(out / name)
            refuse_link(out / (name + ".tmp"))
        if fresh:
            remove_outputs(out, store)
        foreign: list[str] = []
        if not store.has_finished():  # artifacts in --out, yet no attempt here wrote them
            foreign = [name for name in ARTIFACTS if (out / name).exists()]
        files.recover(store.committed_files(), store.committed_tails(), foreign)
    except OSError as exc:
        raise write_error(exc, out) from None


def remove_outputs(out: Path, store: Store) -> None:
    """``--fresh``: delete what the forgotten state says bulkopens wrote in ``out``: the
    record files it names (whatever their report), and the artifacts if one of its attempts
    finished. Nothing else, and never a link (a link left at a record file's name is then
    refused by the recovery as a file no state accounts for).

    The state in ``.bulkopens/`` is the store's to reset, under its lock.
    """
    names = list(store.forgotten)
    if store.forgotten_finished:
        names += [*ARTIFACTS, *(name + ".tmp" for name in ARTIFACTS)]
    for name in names:
        if "/" in name or name.startswith("."):
            continue  # not a name bulkopens writes
        path = out / name
        try:
            if not os.path.islink(path) and path.is_file():
                path.unlink()
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
