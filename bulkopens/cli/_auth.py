"""``bulkopens auth login``, ``auth status`` and ``auth logout``: the v3 API's OAuth2 tokens.

``login`` gets tokens interactively and saves them to the token file (see
:mod:`bulkopens._tokens`): by the device flow (a URL and a code to enter, default) or by the
authorization-code flow with PKCE and a redirect to 127.0.0.1. ``status`` says what the file
holds (client, scopes, expiry, whether a refresh token is held), never a token. ``logout``
deletes the file it wrote.

:func:`add_token_arguments` and :func:`token_provider_from_args` give another command (fetch,
check) the same options and the provider they make.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import webbrowser
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from bulkopens._config import DEFAULT_AUTH_URL
from bulkopens._exceptions import (
    AuthenticationError,
    ConfigurationError,
    OutputError,
    RunStopped,
    ServiceUnavailable,
)
from bulkopens._oauth import (
    AuthServer,
    OAuthClient,
    Pkce,
    RedirectServer,
    normalise_scope,
)
from bulkopens._redact import Redactor, printable
from bulkopens._tokens import (
    TokenFile,
    TokenProvider,
    TokenSet,
    default_token_path,
    file_lock,
    read_tokens,
    remove_tokens,
    token_provider_from_options,
    write_tokens,
)
from bulkopens.cli._parser import (
    EXIT_AUTH,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)

LOGIN_SECONDS = 600.0  # how long the PKCE flow waits for the browser to come back


def _setting(flag: str | None, env: str) -> str:
    value = flag if flag is not None else os.environ.get(env, "")
    return value.strip()


def token_path(args: argparse.Namespace) -> Path:
    """``--token-file``, ``$CTCT_TOKEN_FILE``, or the default in the user's config dir."""
    given = _setting(getattr(args, "token_file", None), "CTCT_TOKEN_FILE")
    return Path(given).expanduser() if given else default_token_path()


def token_provider_from_args(args: argparse.Namespace) -> TokenProvider:
    """The provider of a v3 command from its options and the environment: ``--token`` (a
    static token) wins; then ``--token-file`` or ``$CTCT_TOKEN_FILE``; then
    ``$CTCT_ACCESS_TOKEN``; then the default token file. ConfigurationError for a bad
    ``--auth-url``."""
    token_flag = getattr(args, "token", None)
    explicit_file = _setting(getattr(args, "token_file", None), "CTCT_TOKEN_FILE")
    token = token_flag if token_flag is not None else None
    if token is None and not explicit_file:
        token = os.environ.get("CTCT_ACCESS_TOKEN") or None
    return token_provider_from_options(
        token=token,
        token_file=token_path(args),
        client_id=_setting(getattr(args, "client_id", None), "CTCT_CLIENT_ID") or None,
        client_secret=_setting(getattr(args, "client_secret", None), "CTCT_CLIENT_SECRET") or None,
        auth_url=_setting(getattr(args, "auth_url", None), "CTCT_AUTH_URL") or None,
    )


# -- the commands ---------------------------------------------------------------------------


def run_auth(args: argparse.Namespace) -> int:
    if args.auth_command == "login":
        return run_login(args)
    if args.auth_command == "status":
        return run_status(args)
    return run_logout(args)


def run_login(args: argparse.Namespace) -> int:
    """``bulkopens auth login``: exit 0, 2 (settings), 3 (refused), 69, 74, 130."""
    client_id = _setting(args.client_id, "CTCT_CLIENT_ID")
    secret = _setting(args.client_secret, "CTCT_CLIENT_SECRET") or None
    redact = Redactor(client_id, secret)
    if not client_id:
        return _fail(
            EXIT_USAGE,
            "a client id is required (--client-id or CTCT_CLIENT_ID): the API key of your "
            "app in Constant Contact's developer portal",
        )
    try:
        server = AuthServer.parse(_setting(args.auth_url, "CTCT_AUTH_URL") or DEFAULT_AUTH_URL)
        scope = normalise_scope(args.scope)
        path = token_path(args)
        oauth = OAuthClient(server, client_id, secret)
    except ConfigurationError as exc:
        return _fail(EXIT_USAGE, redact(str(exc)))

    async def login() -> TokenSet:
        try:
            if args.flow == "pkce":
                answer = await _pkce_login(oauth, scope, args.redirect_port, args.no_browser)
            else:
                answer = await _device_login(oauth, scope)
        finally:
            await oauth.aclose()
        tokens = TokenSet.from_answer(
            answer,
            client_id=client_id,
            token_url=str(server.token_url),
            now=time.time(),
            flow=args.flow,
        )
        async with file_lock(path):
            write_tokens(path, tokens)
        return tokens

    try:
        tokens = anyio.run(login)
    except KeyboardInterrupt:
        print("bulkopens: interrupted: no tokens saved", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RunStopped as exc:
        return _fail(_exit_code(exc), redact(str(exc)))
    print(f"bulkopens: logged in; the tokens are saved in {path}")
    print(_describe(tokens, path, time.time()))
    if tokens.refresh_token is None:
        advice = (
            "; try --flow pkce, which brings one"
            if args.flow == "device"
            else "; ask for the offline_access scope"
        )
        _say(
            "warning: the authorization server issued no refresh token: runs cannot renew the "
            f"access token, and need a new login when it expires{advice}"
        )
    return EXIT_OK


async def _device_login(oauth: OAuthClient, scope: str) -> dict[str, Any]:
    start = await oauth.device_start(scope)
    _say(f"to log in, open {start.verification_uri} and enter the code {start.user_code}")
    if start.verification_uri_complete:
        _say(f"(or open {start.verification_uri_complete})")
    _say(f"waiting for the approval (the code expires in {_span(start.expires_in)}) ...")
    return await oauth.device_poll(start)


async def _pkce_login(
    oauth: OAuthClient, scope: str, port: int, no_browser: bool
) -> dict[str, Any]:
    pkce = Pkce.new()
    redirect = RedirectServer(pkce.state)
    redirect_uri = await redirect.start(port)
    try:
        url = str(oauth.authorize_url(redirect_uri, scope, pkce))
        _say("to log in, open this URL in a browser on this machine:")
        print(url, file=sys.stderr, flush=True)
        if not no_browser:
            _open_browser(url)
        _say(f"waiting for the browser to come back to {redirect_uri} ...")
        code = await redirect.code(LOGIN_SECONDS)
    finally:
        await redirect.aclose()
    return await oauth.exchange_code(code, redirect_uri, pkce)


def _open_browser(url: str) -> None:
    """Open ``url`` in a graphical browser, if there is one: never a text browser that would
    take over this terminal."""
    graphical = sys.platform == "darwin" or any(
        os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY")
    )
    if not graphical:
        return
    with contextlib.suppress(webbrowser.Error, OSError):
        webbrowser.open(url, new=2)


def run_status(args: argparse.Namespace) -> int:
    """``bulkopens auth status``: exit 0 usable, 2 a bad setting or file, 3 no usable token."""
    path = token_path(args)
    client_id = _setting(args.client_id, "CTCT_CLIENT_ID") or None
    secret = _setting(args.client_secret, "CTCT_CLIENT_SECRET") or None
    redact = Redactor(client_id, secret)
    try:
        auth_url = _setting(args.auth_url, "CTCT_AUTH_URL")
        token_url = str(AuthServer.parse(auth_url).token_url) if auth_url else None
        tokens = read_tokens(path)
    except ConfigurationError as exc:
        return _fail(EXIT_USAGE, redact(str(exc)))
    if tokens is None:
        return _fail(EXIT_AUTH, f"no tokens in {path}: run bulkopens auth login")
    redact = Redactor(client_id, secret, tokens.client_id, *tokens.secrets())
    if args.check and tokens.expiring(time.time()):
        provider = TokenFile(path, client_id=client_id, client_secret=secret, token_url=token_url)

        async def renew() -> None:
            try:
                await provider.access_token()
            finally:
                await provider.aclose()

        try:
            anyio.run(renew)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except RunStopped as exc:
            return _fail(_exit_code(exc), redact(Redactor(*provider.secrets())(str(exc))))
        tokens = provider.tokens or tokens
        _say("renewed the access token")
    now = time.time()
    usable = not tokens.expired(now) or tokens.refresh_token is not None
    if args.json:
        print(json.dumps(_status_json(tokens, path, now, usable), sort_keys=True))
    else:
        print(_describe(tokens, path, now))
    if not usable:
        return _fail(
            EXIT_AUTH,
            "the access token has expired and no refresh token is held: run bulkopens auth login",
        )
    return EXIT_OK


def run_logout(args: argparse.Namespace) -> int:
    """``bulkopens auth logout``: deletes the token file; exit 0, or 2 for another file."""
    path = token_path(args)

    async def logout() -> bool:
        async with file_lock(path):
            return remove_tokens(path)

    try:
        removed = anyio.run(logout)
    except RunStopped as exc:
        return _fail(_exit_code(exc), str(exc))
    if removed:
        print(
            f"bulkopens: logged out: deleted {path} (the tokens stay valid at the authorization "
            "server until they expire)"
        )
    else:
        print(f"bulkopens: no tokens in {path}: nothing to do")
    return EXIT_OK


# -- what status shows ----------------------------------------------------------------------


def short_client_id(client_id: str) -> str:
    """The client id shortened, so that a terminal or a log never holds it whole."""
    if len(client_id) >= 16:
        return f"{client_id[:4]}…{client_id[-4:]}"
    return f"{client_id[:2]}…({len(client_id)} characters)"


def _describe(tokens: TokenSet, path: Path, now: float) -> str:
    if tokens.expires_at is None:
        access = "valid (no expiry given)"
    elif tokens.expired(now):
        access = f"expired at {_utc(tokens.expires_at)} ({_span(now - tokens.expires_at)} ago)"
    else:
        access = f"valid until {_utc(tokens.expires_at)} (in {_span(tokens.expires_at - now)})"
    if tokens.refresh_token is None:
        refresh = "none: a new login is needed when the access token expires"
    elif tokens.refresh_kind == "rotating":
        refresh = "held (rotating: each renewal brings a new one)"
    elif tokens.refresh_kind == "long-lived":
        refresh = "held (long-lived: renewals keep it)"
    else:
        refresh = "held (rotating or long-lived: shown after its first use)"
    renewed = {0: "not renewed since"}.get(tokens.refreshes, f"renewed {tokens.refreshes}x since")
    rows = [
        ("token file", str(path)),
        ("client id", short_client_id(tokens.client_id)),
        ("account", tokens.account or "not named by the token"),
        ("scopes", tokens.scope or "(none given)"),
        ("access token", access),
        ("refresh token", refresh),
        ("obtained", f"{_utc(tokens.obtained_at)} ({tokens.flow} login, {renewed})"),
        ("token endpoint", tokens.token_url),
    ]
    return "\n".join(f"{name + ':':<16}{printable(value)}" for name, value in rows)


def _status_json(tokens: TokenSet, path: Path, now: float, usable: bool) -> dict[str, Any]:
    return {
        "token_file": str(path),
        "client_id": short_client_id(tokens.client_id),
        "account": tokens.account,
        "scopes": tokens.scope.split(),
        "expires_at": None if tokens.expires_at is None else _utc(tokens.expires_at, iso=True),
        "expires_in": None if tokens.expires_at is None else round(tokens.expires_at - now),
        "expired": tokens.expired(now),
        "refresh_token": tokens.refresh_token is not None,
        "refresh_kind": tokens.refresh_kind,
        "flow": tokens.flow,
        "refreshes": tokens.refreshes,
        "token_url": tokens.token_url,
        "usable": usable,
    }


def _utc(moment: float, *, iso: bool = False) -> str:
    when = datetime.fromtimestamp(moment, UTC).replace(microsecond=0)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ" if iso else "%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: float) -> str:
    """A duration as people say it: ``45 s``, ``12 min``, ``23 h``, ``179 days``."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def _exit_code(exc: RunStopped) -> int:
    """The exit code of an error of the token side (as fetch's: 3, 69, 74, else 2)."""
    codes: tuple[tuple[type[RunStopped], int], ...] = (
        (AuthenticationError, EXIT_AUTH),
        (ServiceUnavailable, EXIT_UNAVAILABLE),
        (OutputError, EXIT_OUTPUT),
    )
    return next((code for kind, code in codes if isinstance(exc, kind)), EXIT_USAGE)


def _fail(code: int, message: str) -> int:
    """One line on stderr, as every command's errors (``bulkopens: error: ...``)."""
    print(f"bulkopens: error: {printable(message)}", file=sys.stderr, flush=True)
    return code


def _say(message: str) -> None:
    """A line for the person at the terminal, on stderr (stdout stays for results)."""
    print(f"bulkopens: {printable(message)}", file=sys.stderr, flush=True)
