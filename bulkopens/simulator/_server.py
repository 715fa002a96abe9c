"""``Simulator``: the app served on a real loopback socket, plus in-process controls."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import date
from types import TracebackType
from typing import Any

from aiohttp import web

from bulkopens.simulator._app import SIM_STATE, SimState, make_app, v3_kinds
from bulkopens.simulator._config import SimConfig
from bulkopens.simulator._limits import utc_today
from bulkopens.simulator._oauth import SCOPES
from bulkopens.simulator._stats import RequestRecord

_DEFAULT_CONFIG = SimConfig()  # frozen, so sharing one default instance is safe


class Simulator:
    """A running simulated Constant Contact API (v2, and the v3 face); an async context manager.

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

    # -- the v3 face (docs/simulator-v3.md) --------------------------------------------------

    def contact_uuid(self, contact_id: str) -> str:
        """The v3 contact_id of a v2 contact id. Raises ValueError for an unknown contact."""
        number = int(contact_id) if contact_id.isdigit() else 0
        if not self._state.api.dataset.has_contact(number) or str(number) != contact_id:
            raise ValueError(f"no contact {contact_id!r}")
        return self._state.api3.ids.contact_uuid(number)

    def v3_truth(
        self,
        types: str | None = None,
        contact_ids: Iterable[str] | None = None,
        *,
        names: bool = True,
    ) -> list[dict[str, Any]]:
        """Every record v3 activity_details returns over all its pages.

        ``types`` is a CSV of em_sends, em_opens, em_clicks, em_forwards, em_bounces,
        em_optouts (None = all six); ``contact_ids`` are v3 ids, in the given order (None =
        every contact by v2 id); each contact newest first; ``names`` adds
        campaign_activity_name. Raises ValueError for an unknown type or contact.
        """
        api3 = self._state.api3
        kinds = v3_kinds(types)
        if contact_ids is None:
            numbers: Iterable[int] = range(1, api3.dataset.contact_count + 1)
        else:
            numbers = [api3.contact_number(c) for c in contact_ids]
        return list(api3.truth(kinds, numbers, names=names))

    def mint_tokens(
        self, scopes: Iterable[str] | None = None, *, expires_in: float | None = None
    ) -> dict[str, Any]:
        """A token response (access_token, expires_in, refresh_token with offline_access,
        scope) for the configured client, without a flow; ``scopes`` default to all."""
        chosen = frozenset(SCOPES if scopes is None else scopes)
        if not chosen <= SCOPES:
            raise ValueError(f"scopes must be among {sorted(SCOPES)}")
        return self._state.oauth.mint(chosen, expires_in=expires_in)

    def approve_device(self, user_code: str, *, approve: bool = True) -> bool:
        """Approve (or deny) a pending device authorization; False if there is none."""
        return self._state.oauth.decide_device(user_code, approve=approve)

    def token_counts(self) -> dict[str, int]:
        """Token-endpoint answers so far, by "grant_type outcome" (e.g. "refresh_token 200",
        "refresh_token invalid_grant", "rate_limited")."""
        return dict(self._state.oauth.counts)

    def __repr__(self) -> str:
        where = self._url or "not running"
        return f"<Simulator {where} {self._state.stats!r}>"


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host
