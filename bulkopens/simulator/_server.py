"""``Simulator``: the app served on a real loopback socket, plus in-process controls."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import date
from types import TracebackType
from typing import Any

from aiohttp import web

from bulkopens.simulator._app import SIM_STATE, SimState, make_app
from bulkopens.simulator._config import SimConfig
from bulkopens.simulator._limits import utc_today
from bulkopens.simulator._stats import RequestRecord

_DEFAULT_CONFIG = SimConfig()  # frozen, so sharing one default instance is safe


class Simulator:
    """A running simulated Constant Contact v2 API; an async context manager.

    ``start()`` binds ``host:port`` (port 0 = a free port); :attr:`url` is valid from then on
    until ``close()``. The controls (``truth``, ``add_activity``, stats) work on the same
    state the HTTP handlers use and must be called from the event loop's thread.
    """

    def __init__(
        self,
        config: SimConfig = _DEFAULT_CONFIG,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], date] = utc_today,
    ) -> None:
        self.config = config
        self._host = host
        self._port = port
        self._app = make_app(config, clock=clock, today=today)
        self._state: SimState = self._app[SIM_STATE]
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    @property
    def api_key(self) -> str:
        """The first configured api_key."""
        return self.config.api_keys[0]

    @property
    def token(self) -> str:
        """The first configured access token."""
        return self.config.tokens[0]

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` without a trailing slash. Raises RuntimeError if not started."""
        if self._url is None:
            raise RuntimeError("the simulator is not running")
        return self._url

    async def start(self) -> None:
        """Bind the socket and start serving. Raises RuntimeError if already started."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._url = f"http://{_host_for_url(host)}:{port}"

    async def close(self) -> None:
        """Stop serving and release the socket; safe to call twice."""
        runner, self._runner, self._url = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def status_counts(self) -> dict[int, int]:
        """Answers by HTTP status so far (a reset connection counts as 0)."""
        return dict(self._state.stats.status_counts)

    @property
    def request_log(self) -> list[RequestRecord]:
        """Every answered API request, in answer order (a copy)."""
        return list(self._state.stats.log)

    def reset_stats(self) -> None:
        """Forget the status counts and the request log (limits and fault draws continue)."""
        self._state.stats.reset()

    def truth(
        self,
        report: str = "opens",
        contact_ids: Iterable[str] | None = None,
        since: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every record the contact endpoint for ``report`` returns over all its pages.

        ``report`` is one of opens, clicks, forwards, bounces, unsubscribes, sends or all;
        contacts come in the given order (all, by id, when None), each newest first;
        ``since`` filters like ``created_since`` (inclusive). Raises ValueError for an
        unknown report or contact, or a malformed ``since``.
        """
        return list(self._state.api.truth(report, contact_ids, since))

    def add_activity(
        self, contact_id: str, report: str = "opens", count: int = 1
    ) -> list[dict[str, Any]]:
        """Add ``count`` new records for a contact, newer than all it has; return them.

        Timestamps are max(now, the contact's newest + 1 ms), one ms apart. Cached pages
        are dropped. Raises ValueError for an unknown contact or report, or count < 1.
        """
        return self._state.api.add_activity(contact_id, report, count)

    def __repr__(self) -> str:
        where = self._url or "not running"
        return f"<Simulator {where} {self._state.stats!r}>"


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host
