"""Settings: one frozen dataclass, validated once, secrets hidden from its repr."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

from bulkopens._exceptions import ConfigurationError
from bulkopens._reports import REPORTS, Report
from bulkopens._timefmt import format_instant, parse_instant

DEFAULT_BASE_URL = "https://api.constantcontact.com"
#: Each API's default base URL (docs/ctct-api.md §1, §5): v2 is the default API.
DEFAULT_BASE_URLS = {"v2": DEFAULT_BASE_URL, "v3": "https://api.cc.email"}
#: v3's authorization server (an Okta one: /token, /device/authorize, /authorize) and the
#: scopes a login asks for (docs/ctct-api.md §5; offline_access brings a refresh token).
DEFAULT_AUTH_URL = "https://authz.constantcontact.com/oauth2/default/v1"
DEFAULT_SCOPE = "contact_data campaign_data offline_access"
DEFAULT_RATE = 4.0
# The API key's requests a day (UTC), as the shared ledger counts them (bulkopens._budget): a
# standard key has 10,000; a partner key 250,000 (on request).
DEFAULT_DAILY_QUOTA = 10_000
PARTNER_DAILY_QUOTA = 250_000
MAX_PAGE_SIZE = 500
# Pages one contact's (or campaign's) walk may read: 5 million records at 500 a page, far past
# any honest report, yet a bound on a server that hands out fresh next_links for ever.
DEFAULT_MAX_PAGES = 10_000
# The most bytes one answer may take, after decompression. A real 500-record opens page is
# about 79 KB (the simulator's heaviest contact: 79,146 bytes); even 500 records with 254-byte
# email addresses and 2,000-byte link URLs stay under 1.5 MB. 8 MiB is ~100x a real page and
# bounds memory to about this times the concurrency, whatever a server sends.
DEFAULT_MAX_PAGE_BYTES = 8 * 1024 * 1024
# The whole of one request, connect to last byte: three times the default read timeout, so a
# server that drips a byte at a time cannot hold a worker for longer than this.
DEFAULT_REQUEST_TIMEOUT = 180.0
MIN_PAGE_BYTES = 1024

_CONTACT_ID = re.compile(r"0*([1-9][0-9]{0,17})")


def parse_contact_id(raw: str) -> str | None:
    """The canonical v2 contact id (a positive integer as a string), or None if ``raw`` is not one.

    Surrounding whitespace and leading zeros are dropped; only ASCII digits count.
    """
    match = _CONTACT_ID.fullmatch(raw.strip())
    return match.group(1) if match else None


def default_concurrency(rate: float) -> int:
    """Enough requests in flight to keep ``rate`` busy through answers of up to ~4 s, and a
    few spare. A slot is taken before the pacer's grant, so more slots never mean more than
    ``rate`` starts a second: only more connections, kept open."""
    if rate <= 0:
        return 16
    return max(4, min(64, math.ceil(rate * 4) + 2))


def normalise_since(text: str | None) -> str | None:
    """``--since`` in the API's UTC form, or ConfigurationError."""
    if text is None:
        return None
    try:
        return format_instant(parse_instant(text))
    except ValueError:
        raise ConfigurationError(
            "--since must be an ISO-8601 date or date-time, like 2024-01-31T00:00:00Z; "
            f"got {text[:40]!r}"
        ) from None


def normalise_base_url(text: str) -> URL:
    """The API origin (plus any proxy prefix), without a trailing ``/``, ``/v2`` or ``/v3``."""
    try:
        url = URL(text.strip())
    except (ValueError, TypeError):
        raise ConfigurationError("--base-url is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError("--base-url must be an http:// or https:// URL with a host")
    if url.user or url.password or url.query_string or url.fragment:
        raise ConfigurationError("--base-url must not carry credentials, a query or a fragment")
    path = url.path.rstrip("/")
    if path.endswith(("/v2", "/v3")):
        path = path[:-3]
    return url.with_path(path or "/")


def api_url(base: URL, path: str) -> URL:
    """The URL of an API ``path`` (``/v2/...``) under ``base`` (the origin plus any proxy
    prefix): the one place the base URL and an endpoint are joined. No query, no credential."""
    return base.with_path(base.path.rstrip("/") + path)


def budget_key(api: str, api_key: str, token: str, client_id: str = "", tokens: Any = None) -> str:
    """What a key's shared budget is kept under: the v2 API key; on v3 the app's client id
    (v3's "API key": given, else the token provider's), else the token itself."""
    if api == "v2":
        return api_key
    found = client_id or getattr(tokens, "client_id", None)
    return found if isinstance(found, str) and found else token


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything one run needs. Build it once; it validates itself.

    ``api`` is ``v2`` (``api_key`` and ``token`` both required) or ``v3`` (Bearer only: a
    ``token``, or ``tokens``, a provider that renews it; ``api_key`` unused). ``base_url``
    defaults to the API's own. ``api_key``, ``token`` and ``tokens`` never appear in the repr.
    """

    api_key: str = field(repr=False, default="")
    token: str = field(repr=False, default="")
    base_url: str = ""  # "" = the API's default
    report: str = "opens"
    rate: float = DEFAULT_RATE  # request starts per second for the whole run; 0 = no limit
    concurrency: int | None = None  # requests in flight; None = derived from rate
    page_size: int = MAX_PAGE_SIZE
    since: str | None = None  # created_since, any ISO-8601; normalised to UTC ``Z``
    max_retries: int = 6  # per request, for transient failures (throttles do not count)
    max_pages: int = DEFAULT_MAX_PAGES  # pages one contact's (or campaign's) walk may read
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT  # one whole request, connect to last byte
    max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES  # one answer, after decompression
    max_file_bytes: int = 256 * 1024 * 1024
    commit_records: int = 20_000  # commit at least every N records ...
    commit_seconds: float = 1.0  # ... or every T seconds
    durable: bool = True  # fsync files before each commit
    api: str = "v2"  # which Constant Contact API: v2 or v3
    # v3: a token provider (bulkopens.TokenFile, or an app's own) in place of ``token``.
    tokens: Any = field(default=None, repr=False, compare=False)
    # v3: the app's client id, its "API key": what the key's shared budget is kept under
    # ("" = the token provider's, else the token's).
    client_id: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.api not in DEFAULT_BASE_URLS:
            raise ConfigurationError(f"--api must be v2 or v3; got {str(self.api)[:20]!r}")
        if self.api == "v2" and (not self.api_key or not self.api_key.strip()):
            raise ConfigurationError(
                "an API key is required (--api-key or CTCT_API_KEY); for the v3 API, --api v3"
            )
        if self.tokens is None and (not self.token or not self.token.strip()):
            raise ConfigurationError(
                "an access token is required (--token or CTCT_ACCESS_TOKEN)"
                if self.api == "v2"
                else "v3 needs an access token: run bulkopens auth login (a token file), or "
                "give --token / CTCT_ACCESS_TOKEN"
            )
        if any(c.isspace() for c in self.api_key + self.token):
            raise ConfigurationError("the API key and access token must not contain whitespace")
        if self.report not in REPORTS:
            raise ConfigurationError(f"unknown report {self.report!r}; one of {', '.join(REPORTS)}")
        if not (math.isfinite(self.rate) and self.rate >= 0):
            raise ConfigurationError("--rate must be a number >= 0 (0 = no limit)")
        if self.concurrency is not None and not 1 <= self.concurrency <= 1000:
            raise ConfigurationError("--concurrency must be between 1 and 1000")
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ConfigurationError(f"--page-size must be between 1 and {MAX_PAGE_SIZE}")
        if self.max_pages < 1:
            raise ConfigurationError("--max-pages must be at least 1")
        if self.max_retries < 0:
            raise ConfigurationError("max_retries must be >= 0")
        if not all(t > 0 for t in (self.connect_timeout, self.read_timeout, self.request_timeout)):
            raise ConfigurationError("timeouts must be > 0")
        if self.max_page_bytes < MIN_PAGE_BYTES:
            raise ConfigurationError(f"--max-page-bytes must be at least {MIN_PAGE_BYTES}")
        if self.max_file_bytes < 1024:
            raise ConfigurationError("max_file_bytes must be at least 1024")
        object.__setattr__(self, "since", normalise_since(self.since))
        if self.since is not None and not REPORTS[self.report].paged:
            raise ConfigurationError(
                f"--since does not apply to the {self.report} report: the summary reports "
                "have no date filter"
            )
        base_url = self.base_url or DEFAULT_BASE_URLS[self.api]
        object.__setattr__(self, "base_url", str(normalise_base_url(base_url)))

    @property
    def workers(self) -> int:
        return self.concurrency or default_concurrency(self.rate)

    @property
    def report_spec(self) -> Report:
        return REPORTS[self.report]

    @property
    def base(self) -> URL:
        return URL(self.base_url)
