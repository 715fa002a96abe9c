"""``bulkopens demo``: the real fetch, with live progress, against an in-process simulator.

The demo starts ``--out`` afresh each time (``--fresh``: the files its own earlier runs wrote
there), and writes its contact list to ``OUT/contacts.txt``. That file is replaced only when
it is the demo's own (its first line is :data:`HEADER`); any other file at that name (or a
link) is refused with exit 2, as are record files that no earlier run there wrote.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from bulkopens._disk import open_new, open_regular, refuse_link
from bulkopens._exceptions import ConfigurationError
from bulkopens.simulator import SimConfig, Simulator

DEMO_KEY = "demo-key"
DEMO_TOKEN = "demo-token"
UNKNOWN_IDS = 12  # ids past the simulated account: they answer 404 and land in errors.ndjson
JUNK_LINES = ("not-a-contact", "12e4", "../../etc/passwd")
HEADER = "# bulkopens demo: one contact id per line"


def demo_config(contacts: int, seed: int) -> SimConfig:
    """~2,000 contacts, a few with thousands of opens, a sprinkling of faults; fast limits."""
    return SimConfig(
        seed=seed,
        contacts=contacts,
        heavy_fraction=0.004,
        api_keys=(DEMO_KEY,),
        tokens=(DEMO_TOKEN,),
        rate_per_second=100.0,
        daily_quota=0,
        latency_ms=8.0,
        jitter_ms=6.0,
        error_rate=0.01,
        reset_rate=0.004,
        truncate_rate=0.004,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_contacts(path: Path, contacts: int) -> None:
    """All simulated ids, a duplicate, some unknown ids and some junk lines.

    Raises ConfigurationError when ``path`` exists and is not a contact list the demo wrote.
    """
    lines = [HEADER, ""]
    lines += [str(i) for i in range(1, contacts + 1)]
    lines += [str(contacts + i) for i in range(1, UNKNOWN_IDS + 1)]
    lines += ["1", *JUNK_LINES]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if refuse_link(path):
        fd = open_regular(path, os.O_RDWR)
        if os.pread(fd, len(HEADER) + 1, 0) != HEADER.encode() + b"\n":
            os.close(fd)
            raise ConfigurationError(
                f"{path} is not a contact list the demo wrote; it is left as it is: move it "
                "elsewhere or give the demo another --out"
            )
        os.ftruncate(fd, 0)
    else:
        fd = open_new(path)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def run_demo(args: argparse.Namespace) -> int:
    from bulkopens.cli._parser import EXIT_USAGE, build_fetch_namespace
    from bulkopens.cli._run import _fail, run_fetch

    out = Path(args.out)
    contacts_file = out / "contacts.txt"
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_contacts(contacts_file, args.contacts)
    except ConfigurationError as exc:
        return _fail(EXIT_USAGE, str(exc))
    except OSError as exc:
        return _fail(EXIT_USAGE, f"cannot write {contacts_file}: {exc.strerror or exc}")
    port = _free_port()
    config = demo_config(args.contacts, args.seed)

    @contextlib.asynccontextmanager
    async def simulator() -> AsyncIterator[Simulator]:
        async with Simulator(config, port=port) as sim:
            yield sim

    # The client asks for a little more than the simulator allows, so the demo shows the
    # engine absorbing throttles (the pool slows down) besides 5xx, resets and bad bodies.
    fetch_args = build_fetch_namespace(
        contacts=str(contacts_file),
        out=str(out),
        api_key=DEMO_KEY,
        token=DEMO_TOKEN,
        base_url=f"http://127.0.0.1:{port}",
        api=args.api,
        rate=115.0,
        fresh=True,
        quiet=args.quiet,
    )
    lines = args.contacts + UNKNOWN_IDS + 1 + len(JUNK_LINES)
    v3 = args.api == "v3"
    mapped = "on v3 the list's v2 ids are first mapped to v3 ones (id-map.ndjson)\n"
    banner = (
        f"bulkopens demo: a simulated account of {args.contacts:,} contacts at "
        f"http://127.0.0.1:{port}, the {args.api} API (100 requests/s allowed; faults "
        f"injected)\n{mapped if v3 else ''}"
        f"its list {contacts_file} has {lines:,} lines: the {args.contacts:,} contacts, "
        f"{UNKNOWN_IDS} unknown ids, a duplicate and {len(JUNK_LINES)} junk lines\n"
        f"fetching their opens into {out}/ ..."
    )
    code = run_fetch(fetch_args, banner=banner, around=simulator)
    if code in (0, 1):
        print(
            f"\nlook at the records:\n"
            f"  jq -c . {out}/opens-*.ndjson | head -3\n"
            f"  jq -r '.{'campaign_activity_id' if v3 else 'campaign_id'}' {out}/opens-*.ndjson"
            " | sort | uniq -c | sort -rn | head\n"
            f"  jq -c . {out}/errors.ndjson       # the {UNKNOWN_IDS} unknown ids "
            f"({'no v3 counterpart' if v3 else '404'}) and "
            f"{len(JUNK_LINES)} junk lines\n"
            f"  cat {out}/summary.json {out}/manifest.json",
        )
        return 0  # the failed contacts are planted: the demo itself succeeded
    return code
