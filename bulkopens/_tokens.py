"""The v3 API's access tokens: where they come from, where they are kept, how they are renewed.

A run asks a :class:`TokenProvider` for the access token to send as ``Authorization: Bearer``
(:meth:`~TokenProvider.access_token`) and, after a 401, for a renewed one
(:meth:`~TokenProvider.refreshed`). Two providers:

* :class:`StaticToken`: one token, as given; a 401 cannot be cured;
* :class:`TokenFile`: the tokens ``bulkopens auth login`` saved, renewed with the refresh
  token when the access token nears its expiry or is refused.

**The token file** is JSON, mode 0600, by default ``$XDG_CONFIG_HOME/bulkopens/token.json``
(``~/.config/bulkopens/token.json``). It is written atomically (a temporary file in the same
directory, fsync, rename, fsync of the directory), never through a symbolic link, and one that
other users may read or write is refused. It holds the tokens, their expiry, the scopes, the
client id and the token endpoint they came from; never the client secret.

**Renewal is single-flight.** In one process, every caller that needs a renewal waits for the
same one request. Across processes sharing the file, an exclusive ``flock`` on ``FILE.lock``
is held around it, and the file is read again under the lock: when another process has renewed
the token already, its token is taken and no request is sent, so a rotating (single-use)
refresh token is never spent twice. The answer, with the rotated refresh token, is saved
(fsynced) before the new access token is handed out: a crash cannot lose the only valid
refresh token. Renewals are paced at one a second, the token endpoint's limit.

Secrets never reach a repr, a message or a log line; :meth:`~TokenProvider.secrets` lists what
to scrub from output.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import logging
import math
import os
import secrets as _random
import stat
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anyio
import orjson

from bulkopens._disk import open_new, open_regular, refuse_link, write_error
from bulkopens._exceptions import AuthenticationError, ConfigurationError, ServiceUnavailable
from bulkopens._oauth import (
    DEFAULT_TOKEN_URL,
    TOKEN_INTERVAL,
    AuthServer,
    OAuthClient,
)

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "DEFAULT_TOKEN_URL",
    "StaticToken",
    "TokenFile",
    "TokenProvider",
    "TokenSet",
    "default_token_path",
    "read_tokens",
    "token_provider_from_options",
    "write_tokens",
]

auth_log = logging.getLogger("bulkopens.auth")

FILE_FORMAT = 1
MAX_FILE_BYTES = 64 * 1024
# Renew this long before the expiry: 5 minutes, or a tenth of a short lifetime (tests).
REFRESH_MARGIN = 300.0
REFRESH_FRACTION = 0.1
_KEEP_RETIRED = 8  # retired tokens still scrubbed from output (the last few renewals)
_LOCK_POLL = 0.02
SPEND_SECONDS = 120.0  # the most a renewal may hold off a cancellation


@runtime_checkable
class TokenProvider(Protocol):
    """Where a v3 run gets its access token."""

    async def access_token(self) -> str:
        """A valid access token; renewed first (once, for every caller) when it expires
        within a margin."""
        ...

    async def refreshed(self, rejected: str) -> str:
        """A token to use after the API refused ``rejected`` (401): the current one when it
        is another (someone renewed it), else a renewed one (one request for every caller)."""
        ...

    def secrets(self) -> tuple[str, ...]:
        """Every secret to scrub from output now: client id and secret, access and refresh
        tokens, current and recent."""
        ...

    async def aclose(self) -> None: ...


class StaticToken:
    """One access token, as given (``--token``, ``CTCT_ACCESS_TOKEN``): never renewed."""

    __slots__ = ("_token",)

    def __init__(self, token: str) -> None:
        token = token.strip()
        if not token or any(c.isspace() for c in token):
            raise ConfigurationError(
                "the access token must be one word (--token or CTCT_ACCESS_TOKEN)"
            )
        self._token = token

    async def access_token(self) -> str:
        return self._token

    async def refreshed(self, rejected: str) -> str:
        raise AuthenticationError(
            "the access token was refused (401) and cannot be renewed: it was given as a "
            "static token (--token, CTCT_ACCESS_TOKEN); give a new one, or use bulkopens auth "
            "login for tokens that renew themselves"
        )

    def secrets(self) -> tuple[str, ...]:
        return (self._token,)

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return "StaticToken(<hidden>)"


@dataclass(frozen=True, slots=True)
class TokenSet:
    """What the token file holds. Times are Unix seconds (``expires_at`` None: the server
    gave no ``expires_in``); ``refresh_kind`` is "rotating" or "long-lived" once a renewal
    has shown which, else None; ``account`` is the access token's subject when it is a JWT."""

    access_token: str = field(repr=False)
    client_id: str = field(repr=False)
    token_url: str
    obtained_at: float
    expires_at: float | None
    scope: str = ""
    token_type: str = "Bearer"
    refresh_token: str | None = field(default=None, repr=False)
    refresh_kind: str | None = None
    flow: str = "refresh"
    account: str | None = None
    refreshes: int = 0

    @classmethod
    def from_answer(
        cls,
        answer: dict[str, Any],
        *,
        client_id: str,
        token_url: str,
        now: float,
        flow: str,
        previous: TokenSet | None = None,
    ) -> TokenSet:
        """The tokens of a token endpoint's answer (``access_token`` already checked); a
        renewal that brings no refresh token keeps the previous one (RFC 6749 §6)."""
        expires_in = answer.get("expires_in")
        expires_at = (
            now + float(expires_in)
            if isinstance(expires_in, int | float) and math.isfinite(expires_in)
            else None
        )
        refresh = answer.get("refresh_token")
        refresh = refresh if isinstance(refresh, str) and refresh else None
        kind = None
        if previous is not None:
            kind = previous.refresh_kind
            if refresh is None:
                refresh = previous.refresh_token
                kind = kind or "long-lived"
            elif previous.refresh_token is not None:
                kind = "long-lived" if refresh == previous.refresh_token else "rotating"
        scope = answer.get("scope")
        access = str(answer["access_token"])
        return cls(
            access_token=access,
            client_id=client_id,
            token_url=token_url,
            obtained_at=now,
            expires_at=expires_at,
            scope=scope if isinstance(scope, str) else (previous.scope if previous else ""),
            token_type="Bearer",
            refresh_token=refresh,
            refresh_kind=kind,
            flow=flow if previous is None else previous.flow,
            account=_jwt_subject(access) or (previous.account if previous else None),
            refreshes=0 if previous is None else previous.refreshes + 1,
        )

    def to_json(self) -> dict[str, Any]:
        return {"format": FILE_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: Any, where: Path) -> TokenSet:
        def bad(what: str) -> ConfigurationError:
            return ConfigurationError(
                f"{where} is not a bulkopens token file ({what}): run bulkopens auth login "
                "(or choose another --token-file)"
            )

        if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
            raise bad("no format 1")
        fields: dict[str, Any] = {}
        for name, kinds, required in (
            ("access_token", (str,), True),
            ("client_id", (str,), True),
            ("token_url", (str,), True),
            ("obtained_at", (int, float), True),
            ("expires_at", (int, float, type(None)), True),
            ("scope", (str,), False),
            ("token_type", (str,), False),
            ("refresh_token", (str, type(None)), False),
            ("refresh_kind", (str, type(None)), False),
            ("flow", (str,), False),
            ("account", (str, type(None)), False),
            ("refreshes", (int,), False),
        ):
            if name not in data:
                if required:
                    raise bad(f"no {name}")
                continue
            value = data[name]
            if not isinstance(value, kinds) or isinstance(value, bool):
                raise bad(f"{name} has the wrong type")
            fields[name] = value
        if not fields["access_token"] or not fields["client_id"]:
            raise bad("an empty token or client id")
        return cls(**fields)

    def lifetime(self) -> float | None:
        return None if self.expires_at is None else max(0.0, self.expires_at - self.obtained_at)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def expiring(self, now: float) -> bool:
        """Whether the access token expires within the renewal margin."""
        lifetime = self.lifetime()
        if lifetime is None or self.expires_at is None:
            return False
        margin = min(REFRESH_MARGIN, REFRESH_FRACTION * lifetime)
        return now >= self.expires_at - margin

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.access_token, self.refresh_token) if s)


def default_token_path() -> Path:
    """``$XDG_CONFIG_HOME/bulkopens/token.json``, or ``~/.config/bulkopens/token.json``."""
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "bulkopens" / "token.json"


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def read_tokens(path: Path) -> TokenSet | None:
    """The tokens in ``path``; None when there is no such file. ConfigurationError for a
    link, a file other users may read or write, or one that is not a token file."""
    try:
        fd = open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            raise ConfigurationError(
                f"{path} can be read or written by other users (mode {mode:04o}): refusing to "
                f"use it; run chmod 600 {path} (and bulkopens auth login, if others may have "
                "read it)"
            )
        raw = b""
        while len(raw) <= MAX_FILE_BYTES:
            chunk = os.read(fd, MAX_FILE_BYTES + 1 - len(raw))
            if not chunk:
                break
            raw += chunk
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigurationError(f"{path} is too large to be a bulkopens token file")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    return TokenSet.from_json(data, path)


def write_tokens(path: Path, tokens: TokenSet) -> None:
    """Save ``tokens`` to ``path`` atomically and durably, mode 0600: a temporary file next to
    it, fsync, rename over it (which replaces a link planted there, never follows it), fsync
    of the directory. OutputError or ConfigurationError when it cannot be written."""
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        refuse_link(path)
        temporary = directory / f".{path.name}.{_random.token_hex(6)}.tmp"
        fd = open_new(temporary, 0o600)
        try:
            try:
                os.fchmod(fd, 0o600)
                data = memoryview(orjson.dumps(tokens.to_json(), option=orjson.OPT_INDENT_2))
                while data:
                    data = data[os.write(fd, data) :]
                os.write(fd, b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _fsync_directory(directory)
    except OSError as exc:
        raise write_error(exc, path) from None


def remove_tokens(path: Path) -> bool:
    """Delete the token file at ``path`` if it is one (never a link, never another file);
    False when there is none. ConfigurationError for anything else there."""
    if read_tokens(path) is None:
        return False
    refuse_link(path)
    try:
        os.unlink(path)
        _fsync_directory(path.parent)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise write_error(exc, path) from None
    return True


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def file_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive ``flock`` on ``FILE.lock`` next to the token file, for every process that
    renews or writes its tokens. Waits (cancellably) while another process holds it."""
    where = lock_path(path)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(where, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_link(where)
        raise write_error(exc, where) from None
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await anyio.sleep(_LOCK_POLL)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.asynccontextmanager
async def _no_lock() -> AsyncIterator[None]:
    yield


class TokenFile:
    """The tokens of ``bulkopens auth login`` in ``path``, renewed as needed.

    ``client_id`` None takes the file's; one that differs from the file's is refused (the
    tokens belong to another app). ``client_secret`` is needed for a confidential client's
    renewals (it is never saved). ``token_url`` None is the endpoint the file's tokens came
    from (``auth login --auth-url``), else :data:`DEFAULT_TOKEN_URL`. ``session``: the
    caller's aiohttp session for the token endpoint (kept open), or None for one of its own;
    ``clock`` gives Unix seconds (the file's times).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        client_id: str | None,
        client_secret: str | None = None,
        token_url: str | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._client_id = client_id.strip() if client_id else None
        self._secret = client_secret.strip() if client_secret else None
        self._token_url = token_url
        if token_url is not None:
            AuthServer.parse(token_url)  # a bad URL fails now, as a setting
        self._session = session
        self._clock = clock
        self._current: TokenSet | None = None
        self._retired: list[str] = []
        self._lock = anyio.Lock()
        self._oauth: OAuthClient | None = None
        self.refreshes = 0  # renewal requests this provider made (answered 200)
        # A lock held around each renewal besides the token file's, for processes on other
        # hosts that share the file (set by a client whose budget is shared through Redis).
        self.shared_lock: Callable[[], contextlib.AbstractAsyncContextManager[None]] | None = None

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r})"

    # -- the provider -------------------------------------------------------------------------

    async def access_token(self) -> str:
        current = self._current or self._load()
        if not current.expiring(self._clock()):
            return current.access_token
        return await self._renew(current.access_token)

    async def refreshed(self, rejected: str) -> str:
        current = self._current or self._load()
        if current.access_token != rejected:
            return await self.access_token()  # renewed meanwhile (renewed again if expiring)
        return await self._renew(rejected)

    def secrets(self) -> tuple[str, ...]:
        found = [self._client_id, self._secret]
        if self._current is not None:
            found += [self._current.client_id, *self._current.secrets()]
        return tuple(dict.fromkeys(s for s in [*found, *self._retired] if s))

    async def aclose(self) -> None:
        if self._oauth is not None:
            await self._oauth.aclose()
            self._oauth = None

    @property
    def client_id(self) -> str | None:
        """The app's client id (v3's "API key", what its budget is kept under): the one
        given, else the token file's (read now if it was not yet), or None without one."""
        if self._client_id is not None:
            return self._client_id
        if self._current is None:
            try:
                found = read_tokens(self.path)
            except (AuthenticationError, ConfigurationError, OSError):
                return None
            return found.client_id if found is not None else None
        return self._current.client_id

    # -- for auth status --------------------------------------------------------------------

    @property
    def tokens(self) -> TokenSet | None:
        """The tokens last read or saved (None before the first use)."""
        return self._current

    # -- inside -----------------------------------------------------------------------------

    def _load(self) -> TokenSet:
        found = read_tokens(self.path)
        if found is None:
            raise AuthenticationError(f"no tokens in {self.path}: run bulkopens auth login")
        self._adopt(found)
        return found

    def _adopt(self, tokens: TokenSet) -> None:
        if self._client_id is not None and tokens.client_id != self._client_id:
            raise AuthenticationError(
                f"the tokens in {self.path} belong to another client id than --client-id "
                "(CTCT_CLIENT_ID): run bulkopens auth login with this one, or choose another "
                "--token-file"
            )
        old = self._current
        if old is not None and old.access_token != tokens.access_token:
            self._retired = [*self._retired, *old.secrets()][-2 * _KEEP_RETIRED :]
        self._current = tokens

    async def _renew(self, stale: str) -> str:
        """One renewal for every caller holding ``stale``; the new access token."""
        async with self._lock:
            current = self._current
            if current is not None and current.access_token != stale:
                if not current.expiring(self._clock()):
                    return current.access_token  # renewed while this caller waited
                stale = current.access_token
            shared = self.shared_lock() if self.shared_lock is not None else _no_lock()
            async with shared, file_lock(self.path):
                found = self._load()  # another process may have renewed it
                if found.access_token != stale and not found.expiring(self._clock()):
                    auth_log.info("took the access token another process renewed")
                    return found.access_token
                if not found.refresh_token:
                    raise AuthenticationError(
                        "the access token expired (or was refused) and there is no refresh token "
                        "to renew it: run bulkopens auth login"
                    )
                oauth = self._client(found)
                # One request a second across processes too: the last renewal's time is saved.
                wait = found.obtained_at + TOKEN_INTERVAL - self._clock()
                if 0 < wait <= TOKEN_INTERVAL:
                    await anyio.sleep(wait)
                renewed = await self._spend(oauth, found)
                self._adopt(renewed)
                self.refreshes += 1
            lifetime = renewed.lifetime()
            auth_log.info(
                "renewed the access token%s",
                "" if lifetime is None else f" (valid {lifetime:.0f} s)",
            )
            return renewed.access_token

    async def _spend(self, oauth: OAuthClient, found: TokenSet) -> TokenSet:
        """Spend ``found``'s refresh token and save the answer before anything uses it.
        Shielded from cancellation (up to ``SPEND_SECONDS``): a Ctrl-C between the request
        and the save would lose a rotated refresh token that the server has already spent."""
        assert found.refresh_token is not None
        try:
            with anyio.fail_after(SPEND_SECONDS, shield=True):
                answer = await oauth.refresh(found.refresh_token)
                renewed = TokenSet.from_answer(
                    answer,
                    client_id=found.client_id,
                    token_url=str(oauth.server.token_url),
                    now=self._clock(),
                    flow=found.flow,
                    previous=found,
                )
                self._retired = [*self._retired, *found.secrets()][-2 * _KEEP_RETIRED :]
                write_tokens(self.path, renewed)  # saved before the new token is used
        except TimeoutError:
            raise ServiceUnavailable(
                f"the authorization server did not renew the access token within "
                f"{SPEND_SECONDS:g} seconds: try again later"
            ) from None
        return renewed

    def _client(self, tokens: TokenSet) -> OAuthClient:
        url = self._token_url or tokens.token_url or DEFAULT_TOKEN_URL
        server = AuthServer.parse(url)
        if self._oauth is None or self._oauth.server != server:
            self._oauth = OAuthClient(server, tokens.client_id, self._secret, session=self._session)
        return self._oauth


def token_provider_from_options(
    *,
    token: str | None = None,
    token_file: str | os.PathLike[str] | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    auth_url: str | None = None,
    session: aiohttp.ClientSession | None = None,
) -> TokenProvider:
    """The provider for resolved settings: a :class:`StaticToken` when ``token`` is given,
    else a :class:`TokenFile` at ``token_file`` (default :func:`default_token_path`);
    ``auth_url`` is the authorization server's base (or its token endpoint)."""
    if token and token.strip():
        return StaticToken(token)
    path = Path(token_file) if token_file else default_token_path()
    token_url = str(AuthServer.parse(auth_url).token_url) if auth_url else None
    return TokenFile(
        path,
        client_id=client_id or None,
        client_secret=client_secret or None,
        token_url=token_url,
        session=session,
    )


def _jwt_subject(token: str) -> str | None:
    """The ``sub`` claim of a JWT access token (not verified: it is shown, never trusted)."""
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > 8192:
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    subject = claims.get("sub") if isinstance(claims, dict) else None
    return subject if isinstance(subject, str) and subject else None
