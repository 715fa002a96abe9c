"""The library's loggers: ``bulkopens`` and its children, silent until the app configures logging.

=====================  ========================================================================
``bulkopens.run``      a call starts and ends (INFO, with its counts); a run stops (ERROR: auth,
                       quota, configuration); a caller's hook or id source fails (ERROR)
``bulkopens.http``     every request (DEBUG: path, status, milliseconds); an attempt that failed
                       and is retried (INFO); a contact or campaign not found, 404 (INFO)
``bulkopens.ratelimit``  a throttle answer: every request pauses and the rate slows (WARNING)
=====================  ========================================================================

Messages carry URL paths only, never a query string, an API key or a token; the server's own
text is redacted before it gets into an error message.
"""

from __future__ import annotations

import logging

LOGGER_NAME = "bulkopens"

log = logging.getLogger(LOGGER_NAME)
log.addHandler(logging.NullHandler())  # no "last resort" output unless the app configures logging
run_log = logging.getLogger(f"{LOGGER_NAME}.run")
http_log = logging.getLogger(f"{LOGGER_NAME}.http")
ratelimit_log = logging.getLogger(f"{LOGGER_NAME}.ratelimit")
