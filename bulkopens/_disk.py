"""The disk rules every file bulkopens writes follows, and its disk errors, named.

- **No links.** Every file is opened with ``O_NOFOLLOW`` (``O_EXCL`` as well when it is
  made new), and a name that bulkopens is about to replace or cut is checked with ``lstat``
  first: a symbolic link planted at one of its names is refused (:class:`ConfigurationError`,
  exit 2) and its target is never opened, written, cut or replaced.
- **Errors named after what happens next.** A full disk or quota (``ENOSPC``, ``EDQUOT``,
  SQLite's ``database or disk is full``), a file too large (``EFBIG``) or an I/O error
  (``EIO``, ``SQLITE_IOERR``) is an :class:`OutputError` (exit 74): committed work is kept
  and the same command resumes. Anything else that stops bulkopens from writing ``--out``
  (read-only, permissions, a file where a directory belongs) is a
  :class:`ConfigurationError`. Only a state that SQLite finds corrupt is called unreadable,
  and only then is ``--fresh`` suggested.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
from pathlib import Path

from bulkopens._exceptions import ConfigurationError, OutputError, RunStopped

#: os.open flags for every file bulkopens opens in --out: never through a link, never
#: inherited by a child process, and never blocking on a FIFO planted at one of its names.
NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_OUTPUT = _FULL | {errno.EIO, errno.EFBIG}

# SQLite primary result codes (the low byte of an extended code).
_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT = 3, 8, 10, 11
_SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 13, 14, 26

RESUME = "committed work is kept"
_NEARLY_FULL = 64 * 1024  # bytes free under which an I/O error is taken for a full disk


def link_refused(path: Path) -> ConfigurationError:
    return ConfigurationError(
        f"{path} is a symbolic link; bulkopens never writes through one: remove the link "
        "(its target is left untouched) and run the same command again"
    )


def refuse_link(path: Path) -> bool:
    """Whether ``path`` exists (without following it); ConfigurationError if it is a link."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(mode):
        raise link_refused(path)
    return True


def open_new(path: Path, mode: int = 0o644) -> int:
    """Create ``path`` for writing; it must not exist (a link there is refused). Returns the fd.

    Raises FileExistsError when a regular file (or anything but a link) is already there.
    """
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(path, flags, mode)
    except FileExistsError:
        refuse_link(path)
        raise


def open_regular(path: Path, flags: int) -> int:
    """Open an existing regular file (``flags``: O_RDONLY, O_RDWR, ...) without following a
    link; ConfigurationError for a link or anything that is not a regular file."""
    try:
        fd = os.open(path, flags | NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_refused(path) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigurationError(f"{path} is not a regular file; move it out of the way")
    os.set_blocking(fd, True)
    return fd


def is_output_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the disk failing (full, over quota, too large, I/O), not a setting."""
    if isinstance(exc, OSError):
        return exc.errno in _OUTPUT
    if isinstance(exc, sqlite3.Error):
        return _sqlite_code(exc) in (_SQLITE_FULL, _SQLITE_IOERR)
    return False


def write_error(exc: OSError, what: str | os.PathLike[str]) -> RunStopped:
    """The run-stopping error for an OSError met while writing ``what``."""
    reason = exc.strerror or str(exc)
    if exc.errno in _FULL:
        return OutputError(
            f"cannot write {what}: {reason}; {RESUME}: free space and run the same command again",
            errno=exc.errno,
        )
    if exc.errno in _OUTPUT:
        return OutputError(
            f"cannot write {what}: {reason}; {RESUME}: check the disk and run the same command "
            "again",
            errno=exc.errno,
        )
    if exc.errno == errno.ELOOP:
        return link_refused(Path(what))
    return ConfigurationError(f"cannot write {what}: {reason}")


def state_error(exc: sqlite3.Error, state_dir: Path) -> RunStopped:
    """The run-stopping error for an SQLite error on the state in ``state_dir``.

    Only a state SQLite calls corrupt is "unreadable" and only then is ``--fresh`` offered:
    a full disk or a read-only directory never is (``--fresh`` would delete every file).
    """
    code = _sqlite_code(exc)
    if code == _SQLITE_IOERR and _full(state_dir):
        code = _SQLITE_FULL  # SQLite says "disk I/O error" when a full tmpfs refuses its shm
    if code == _SQLITE_FULL:
        return OutputError(
            f"cannot write the state in {state_dir}: no space left on device; {RESUME}: "
            "free space and run the same command again",
            errno=errno.ENOSPC,
        )
    if code == _SQLITE_IOERR:
        return OutputError(
            f"cannot write the state in {state_dir}: {exc}; {RESUME}: check the disk (is it "
            "full?) and run the same command again",
            errno=errno.EIO,
        )
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return ConfigurationError(
            f"the state in {state_dir} is unreadable ({exc}); use --fresh to start over (it "
            "cannot tell which record files it wrote: move them out of --out first)"
        )
    if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_PERM):
        return ConfigurationError(
            f"cannot write the state in {state_dir} ({exc}); make it writable or use another --out"
        )
    return ConfigurationError(f"cannot use the state in {state_dir} ({exc})")


def _full(path: Path) -> bool:
    """Whether the filesystem of ``path`` has (next to) no space left for us."""
    try:
        info = os.statvfs(path)
    except OSError:
        return False
    return info.f_bavail * info.f_frsize < _NEARLY_FULL


def _sqlite_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF
