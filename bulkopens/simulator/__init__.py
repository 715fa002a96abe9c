"""A faithful local stand-in for the Constant Contact v2 email-tracking API, with a v3 face
(Bearer-only reports, v2-id cross references and an OAuth2 server) over the same data set
(docs/simulator-v3.md).

Used by the demo, the integration tests and the benchmarks. Public names:

* :class:`SimConfig` -- the dataset, access limits and injected faults (frozen, validated);
* :class:`Simulator` -- serves it on a real loopback socket (async context manager) and
  exposes the ground truth, ``add_activity`` and answer statistics;
* :class:`RequestRecord` -- one entry of :attr:`Simulator.request_log`;
* :func:`make_app` -- the same aiohttp application, for embedding.

The CLI lives in ``bulkopens.simulator._cli`` (``add_arguments`` and ``run``).
"""

from __future__ import annotations

from bulkopens.simulator._app import make_app
from bulkopens.simulator._config import SimConfig
from bulkopens.simulator._server import Simulator
from bulkopens.simulator._stats import RequestRecord

__all__ = ["RequestRecord", "SimConfig", "Simulator", "make_app"]
