"""The error tree, named after what happens next.

::

    BulkOpensError
    ├── RetryableError ............ retried inside the engine, never raised to a caller
    │   │                           (not public: what outlives its retries is RetriesExhausted)
    │   ├── TransientError ........ 5xx, reset, timeout, a body that is not a valid page
    │   └── ThrottledError ........ 429 ``throttled`` / 403 ``mashery.not.authorized.over.qps``
    ├── ContactError .............. this contact fails; the run goes on
    │   ├── ContactNotFound ....... 404
    │   ├── InvalidContactId ...... not an id of the run's API; no request is made
    │   ├── ForeignNextLink ....... a next_link to another host; never followed
    │   ├── BadAnswer ............. too many records, a page loop, past the page budget
    │   ├── AnswerTooLarge ........ an answer past --max-page-bytes; not read further
    │   └── RetriesExhausted ...... transient failures outlived the retry budget
    └── RunStopped ................ the whole run stops; it can be resumed
        ├── AuthenticationError ... 401 (v3: after one renewal), a 403 that is not a rate
        │                           limit, or a refresh token that is no longer valid
        ├── QuotaExhausted ........ the daily quota is spent; resets at 00:00 UTC
        │   └── RequestLimitReached  this run's --max-requests is spent; run it again
        ├── ServiceUnavailable .... the host cannot be reached, is not the API, fails or
        │                           throttles every request: stop fast, resume later
        ├── OutputError ........... the disk is full or failing; free space, run it again
        └── ConfigurationError .... 400/406, bad settings, or an --out that does not fit
            └── BadRequest ........ 400

Messages never carry a URL's query string or a secret: they are built from the URL path only,
and text the server sent is passed through :func:`bulkopens._redact.Redactor` first.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bulkopens._stats import Summary


class BulkOpensError(Exception):
    """Base class of every error bulkopens raises on purpose."""


class RetryableError(BulkOpensError):
    """A failure the engine retries by itself."""


class TransientError(RetryableError):
    """The answer was lost or broken (5xx, reset, timeout, bad body); try the request again."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ThrottledError(RetryableError):
    """The per-second limit was hit: the whole pool pauses, then the request is sent again."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ContactError(BulkOpensError):
    """This contact cannot be fetched now; it is reported and the run goes on.

    ``permanent`` errors are not retried by a later run unless asked (``retry_failed``);
    the others are retried by the next run of the same command.
    """

    permanent = True
    error_key = "contact.failed"

    def __init__(
        self,
        message: str,
        *,
        contact_id: str | None = None,
        status: int | None = None,
        error_key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.contact_id = contact_id
        self.status = status
        if error_key is not None:
            self.error_key = error_key

    def for_contact(self, contact_id: str) -> ContactError:
        """Return this error bound to ``contact_id``."""
        self.contact_id = contact_id
        return self


class ContactNotFound(ContactError):
    """404: the API does not know this contact."""

    error_key = "http.status.not_found"


class InvalidContactId(ContactError):
    """The input line is not a v2 contact id (a positive integer); no request was made."""

    error_key = "bulkopens.invalid_contact_id"


class ForeignNextLink(ContactError):
    """The API's next_link points at another host; credentials never go there."""

    error_key = "bulkopens.foreign_next_link"


class BadAnswer(ContactError):
    """The API's answer breaks the protocol for this contact: more records than asked for,
    pages that link back to a page already read, more pages than any honest contact has, or a
    page whose records cannot be read exactly. Nothing is written twice. ``error_key`` says
    which; answers that would only repeat (a loop, the page budget) fail it for good, the
    others are retried by the next run."""

    error_key = "bulkopens.bad_answer"

    def __init__(self, message: str, *, error_key: str, permanent: bool) -> None:
        super().__init__(message, error_key=error_key)
        self.permanent = permanent


class AnswerTooLarge(ContactError):
    """An answer grew past ``max_page_bytes`` (after decompression): reading stopped there.

    Not retried within the run (the same answer would be downloaded again), but not permanent
    either: the next run tries the contact again.
    """

    permanent = False
    error_key = "bulkopens.answer_too_large"


class RetriesExhausted(ContactError):
    """Transient failures went on past the retry budget; the next run tries again."""

    permanent = False
    error_key = "bulkopens.retries_exhausted"


class RunStopped(BulkOpensError):
    """The run stops: committed work is kept and the same command resumes it.

    ``summary`` is the stopped call's summary (its counts, and what it wrote) when it comes
    from ``Client.export``/``export_campaigns`` or a record stream; None otherwise.
    """

    summary: Summary | None = None


class AuthenticationError(RunStopped):
    """401, or a 403 that is not a rate limit: the key or token is wrong or revoked."""


class QuotaExhausted(RunStopped):
    """The API key's daily quota is spent; it resets at ``resets_at`` (00:00 UTC).

    ``by_api`` tells the API's own answer from the key's ledger refusing first (see
    ``bulkopens.Budget``): only the API's answer teaches the ledger that the day is spent.
    """

    def __init__(self, message: str, *, resets_at: datetime, by_api: bool = True) -> None:
        super().__init__(message)
        self.resets_at = resets_at
        self.by_api = by_api


class RequestLimitReached(QuotaExhausted):
    """The run has sent the requests its budget allows (``--max-requests``,
    ``Budget(max_requests=...)``); the same command goes on from there, with a new budget."""

    def __init__(self, message: str) -> None:
        super().__init__(message, resets_at=datetime.now(UTC), by_api=False)


class ServiceUnavailable(RunStopped):
    """The API cannot be used right now: its host cannot be reached (refused, DNS, unreachable),
    what answers is not the API (an HTML page, a 404 without the API's error body), or it fails
    or throttles every request for longer than one request's retries would wait. The run stops
    within seconds instead of spending a request per contact; every contact stays pending or
    retryable, and the same command resumes the run."""


class OutputError(RunStopped):
    """Writing the output failed (a full disk or quota, an I/O error): what was committed
    before it is kept, and the same command resumes once the disk is fixed.

    ``errno`` is the OS error number (``ENOSPC``, ``EDQUOT``, ``EIO``, ...) when there is one.
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class ConfigurationError(RunStopped):
    """The settings, the output directory or the request itself are wrong (400/406)."""


class BadRequest(ConfigurationError):
    """400. For a resumed cursor the contact restarts from page one instead (see walk)."""


# A raised error says where to find it (``bulkopens.QuotaExhausted`` in a traceback), not the
# private module that defines it.
for _error in list(globals().values()):
    if isinstance(_error, type) and issubclass(_error, BulkOpensError):
        _error.__module__ = "bulkopens"
del _error
