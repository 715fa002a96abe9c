"""``python tests/hostile_server.py MODE STATE_JSON``: serve a hostile mode until stdin closes.

Prints the server's URL as its first line; when stdin is closed, prints one JSON object: the
arrival time of every request (``arrivals``) and the mode's counters (``state``). Used by
:class:`hostile.HostileProcess`.
"""

from __future__ import annotations

import sys

import orjson
from hostile import Hostile


def main(mode_name: str, state_json: str) -> None:
    state = {k: tuple(v) if isinstance(v, list) else v for k, v in orjson.loads(state_json).items()}
    with Hostile(mode_name) as server:
        server.state.update(state)
        print(server.url, flush=True)
        sys.stdin.read()
        arrivals = [seen.at for seen in list(server.requests)]
        counters = {
            k: v for k, v in server.state.items() if isinstance(v, int | float | str | bool)
        }
    sys.stdout.write(orjson.dumps({"arrivals": arrivals, "state": counters}).decode())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
