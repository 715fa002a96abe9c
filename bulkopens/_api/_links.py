"""Following a next-page link safely: the one check every walk (reports, the campaign list)
makes before it sends a request a server told it to send."""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import unquote

from yarl import URL

from bulkopens._exceptions import ForeignNextLink

_CREDENTIAL_PARAMS = ("api_key", "access_token")
# What no honest next_link holds, once percent-decoded: control characters and backslashes
# (a path or a host could be read two ways), and dot segments (they climb out of the API).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")
_SEGMENTS = re.compile(r"[/\\]")


def resolve_next(base: URL, next_link: str, secrets: Sequence[str] = (), root: str = "/v2/") -> URL:
    """Join a next_link to the API base; ForeignNextLink unless it stays inside the API.

    The link is used as given (its ``next`` token is opaque); ``limit`` and ``created_since``
    are not sent again, and any credential parameter the link carried is dropped (ours is added
    later). A link is followed only when it is a valid URL on the base's scheme, host and port,
    with no user info, under the base's path, with no dot segment or backslash (after
    percent-decoding, so ``%2e%2e`` counts), and without any of ``secrets`` in it (a server
    that echoes the credentials into a link would have them stored in the state). ``root``
    is the API's own path (``/v2/``, ``/v3/``): a link must stay under it.
    """
    plain = _decoded(next_link)
    if any(secret and secret in plain for secret in secrets):
        raise ForeignNextLink("next_link carries a credential; not followed")
    if _UNSAFE.search(plain) or {".", ".."} & set(_SEGMENTS.split(plain.split("?")[0])):
        raise ForeignNextLink(
            "next_link has a control character, a dot segment or a backslash; not followed"
        )
    try:
        link = URL(next_link)
        prefix = base.path.rstrip("/")
        if (
            not link.scheme
            and link.host is None
            and prefix
            and not link.path.startswith(prefix + "/")
        ):
            query = f"?{link.raw_query_string}" if link.raw_query_string else ""
            link = URL(prefix + "/" + link.raw_path.lstrip("/") + query, encoded=True)
        url = base.join(link)
        where = (url.scheme, url.host, url.port)
    except (ValueError, TypeError, UnicodeError):
        raise ForeignNextLink("next_link is not a valid URL; not followed") from None
    if where != (base.scheme, base.host, base.port):
        raise ForeignNextLink(
            f"next_link points at another host ({_shown(url.host)}); not followed"
        )
    if url.raw_user is not None or url.raw_password is not None:
        raise ForeignNextLink("next_link carries user info; not followed")
    if not _decoded(url.raw_path).startswith(prefix + root):
        raise ForeignNextLink("next_link leaves the API's base path; not followed")
    if any(p in url.query for p in _CREDENTIAL_PARAMS):
        url = url.without_query_params(*_CREDENTIAL_PARAMS)
    return url


def _decoded(text: str) -> str:
    """``text`` percent-decoded until it no longer changes (``%252e`` is a dot, too)."""
    for _ in range(4):
        plain = unquote(text)
        if plain == text:
            break
        text = plain
    return text


def _shown(text: str | None, limit: int = 60) -> str:
    """Server-provided text as it may appear in a message: quoted, escaped, shortened."""
    return ascii((text or "")[:limit])
