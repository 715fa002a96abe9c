"""The command line: ``bulkopens fetch``, ``check``, ``status``, ``quota``, ``demo`` and
``simulate``.

A client of the library's public API, in its own package: :mod:`._parser` (commands, options,
exit codes), :mod:`._run` (fetch, check, status), :mod:`._input` (reading ids once, streaming),
:mod:`._output` (progress, logs, the summary), :mod:`._demo`. ``main`` parses with the parser
alone and imports a command's modules only once that command is chosen, so ``--version`` and
``--help`` need neither the HTTP stack nor the simulator.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

from bulkopens.cli._parser import EXIT_INTERRUPTED, EXIT_USAGE, build_parser

_COMMANDS = ("fetch", "check", "status", "quota", "auth", "demo", "simulate")


def _command(argv: Sequence[str]) -> str:
    """The command named in ``argv`` ("" when there is none, as for ``--version``)."""
    return next((a for a in argv if not a.startswith("-")), "") if argv else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    if sys.platform == "win32":
        print(
            "bulkopens: error: bulkopens runs on POSIX systems (Linux, macOS): it needs fcntl "
            "and POSIX signals",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from bulkopens.cli._output import guard_stderr

    guard_stderr()  # a closed stderr (| head, a hung-up terminal) never stops the work
    given = list(sys.argv[1:] if argv is None else argv)
    command = _command(given)
    try:
        args = build_parser(command if command in _COMMANDS else "").parse_args(given)
        if args.command == "simulate":
            from bulkopens.simulator import _cli as simulator_cli

            return simulator_cli.run(args)
        if args.command == "demo":
            from bulkopens.cli._demo import run_demo

            code: int = run_demo(args)
            return code
        if args.command == "auth":
            from bulkopens.cli._auth import run_auth

            return run_auth(args)
        if args.command == "quota":
            from bulkopens.cli._quota import run_quota

            return run_quota(args)
        from bulkopens.cli._run import run_check, run_fetch, run_status

        if args.command == "status":
            return run_status(args)
        if args.command == "check":
            return run_check(args)
        return run_fetch(args)
    except KeyboardInterrupt:
        print("bulkopens: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Our output went to a pipe that closed (| head). Nothing is lost: exit quietly.
        with contextlib.suppress(OSError):
            sys.stderr.close()
        return EXIT_INTERRUPTED


def console() -> None:
    """The ``bulkopens`` command (the console script, and ``python -m bulkopens``): ``main``,
    then what Python buffers (stdout, stderr, log handlers) is flushed and the process ends
    with ``os._exit``, skipping the interpreter's teardown (50-60 ms of freeing modules and
    objects). Every file bulkopens writes is closed, fsynced and committed before ``main``
    returns. A library caller of ``main`` gets a normal return; an exception (or argparse's
    exit for ``--help``) leaves the normal way."""
    code = main()
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.shutdown()  # flushes and closes the handlers (--log-file)
    try:
        sys.stdout.flush()
    except (OSError, ValueError):  # a pipe gone, or closed: as Python's own exit does, a
        code = code or 120  # lost write to stdout is not a success
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()  # progress and messages: never worth an exit code
    os._exit(code)
