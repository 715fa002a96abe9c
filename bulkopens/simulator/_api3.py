"""The v3 face's answers (docs/ctct-api.md §5, docs/simulator-v3.md), over the v2 dataset.

Contract of :meth:`ApiV3.route`: the endpoint serving a ``/v3/`` path and the OAuth2 scope it
needs, or None. Contract of :meth:`ApiV3.answer`: the 200 body bytes, or :class:`ApiError`
-- 400 for a malformed id, parameter or ``next`` token, 404 for an unknown contact, campaign
or campaign activity (and for the cross-reference endpoints when they are configured as
removed: 404 or 410). Paged answers carry ``_links.next.href`` (a relative ``/v3/`` path
with an opaque ``next`` token that holds every paging parameter) except on the last page,
where ``_links`` is left out. Records are the v2 dataset's, with v3 ids and field names, so
both faces always hold the same activities.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson
from multidict import MultiMapping

from bulkopens.simulator._api import ApiError
from bulkopens.simulator._catalog import Catalog
from bulkopens.simulator._data import (
    BOUNCE,
    CLICK,
    FORWARD,
    OPEN,
    SEND,
    UNSUBSCRIBE,
    Dataset,
    Record,
)
from bulkopens.simulator._hashing import digest, mix
from bulkopens.simulator._paging import Cursor, TokenCodec, TokenError, take_page
from bulkopens.simulator._render import BOUNCE_CODES
from bulkopens.simulator._timefmt import format_ms, parse_since_ms
from bulkopens.simulator._v3ids import V3Campaign, V3Ids, is_uuid

#: v3 tracking_activity_type of each record kind (SEND .. UNSUBSCRIBE).
V3_TYPES = ("em_sends", "em_opens", "em_clicks", "em_forwards", "em_bounces", "em_optouts")
KIND_OF_TYPE = {name: kind for kind, name in enumerate(V3_TYPES)}
ALL_KINDS = (1 << len(V3_TYPES)) - 1
#: Landing-page types the endpoint accepts; the simulated account has no landing pages.
LANDING_TYPES = frozenset(
    {"p_contact_open", "p_contact_click", "p_contact_add", "p_contact_update"}
)
#: Email-report name -> record kind (GET /v3/reports/email_reports/{id}/tracking/{report}).
REPORT_KIND = {
    "sends": SEND,
    "opens": OPEN,
    "clicks": CLICK,
    "forwards": FORWARD,
    "bounces": BOUNCE,
    "optouts": UNSUBSCRIBE,
}
CONTACT_XREF_MAX = 500
CAMPAIGN_XREF_MAX = 50
ACTIVITY_SUMMARY_PAGE = 200

_R = "/v3/reports"
_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (name, re.compile(pattern + "/?"), scope)
    for name, pattern, scope in (
        ("details", rf"{_R}/contact_reports/(?P<id>[^/]*)/activity_details", "contact_data"),
        ("contact_summary", rf"{_R}/contact_reports/(?P<id>[^/]*)/activity_summary",
         "contact_data"),
        ("report", rf"{_R}/email_reports/(?P<id>[^/]*)/tracking/(?P<report>[^/]*)",
         "campaign_data"),
        ("summaries", rf"{_R}/summary_reports/email_campaign_summaries", "campaign_data"),
        ("contact_xrefs", r"/v3/contacts/contact_id_xrefs", "contact_data"),
        ("campaign_xrefs", r"/v3/emails/campaign_id_xrefs", "campaign_data"),
        ("emails", r"/v3/emails", "campaign_data"),
        ("email", r"/v3/emails/(?P<id>[^/]*)", "campaign_data"),
    )
)  # fmt: skip
_LIMIT = re.compile(r"[0-9]{1,6}")
_V2_ID = re.compile(r"[0-9]{1,18}")
_FIRST = ("Ada", "Ben", "Chloe", "Dev", "Elena", "Femi", "Grace", "Hiro", "Ines", "Jon")
_LAST = ("Okafor", "Lindqvist", "Moreau", "Tanaka", "Silva", "Byrne", "Novak", "Haddad")
_DEVICES = ("computer",) * 5 + ("mobile",) * 3 + ("tablet", "other")
_OPT_OUT_REASONS = ("", "Too many emails", "No longer interested")

#: A request's query: aiohttp's ``request.query`` (repeated parameters kept).
Query = MultiMapping[str]


class ApiV3:
    """Serves the v3 face of one simulated account (its dataset is shared with the v2 face)."""

    __slots__ = ("_codec", "_xref", "dataset", "ids")

    def __init__(self, seed: int, dataset: Dataset, *, xref: str = "ok") -> None:
        self.dataset = dataset
        self.ids = V3Ids(seed, dataset.catalog)
        self._codec = TokenCodec(digest(b"bulkopens-simulator-v3-token", str(seed).encode()))
        self._xref = xref

    @staticmethod
    def route(path: str) -> tuple[str, dict[str, str], str] | None:
        """(endpoint name, path groups, required scope) for a /v3/ path, or None."""
        for name, regex, scope in _ROUTES:
            m = regex.fullmatch(path)
            if m is not None:
                return name, m.groupdict(), scope
        return None

    def answer(self, name: str, groups: dict[str, str], path: str, query: Query) -> bytes:
        """The 200 body of endpoint ``name``; raises ApiError (see module docstring)."""
        path = path.rstrip("/")
        if name == "details":
            return self._details(groups["id"], path, query)
        if name == "report":
            return self._report(groups["id"], groups["report"], path, query)
        if name == "emails":
            return self._emails(path, query)
        if name == "email":
            return self._email(groups["id"])
        if name == "summaries":
            return self._summaries(path, query)
        if name == "contact_summary":
            return self._contact_summary(groups["id"], path, query)
        if name == "contact_xrefs":
            return self._contact_xrefs(query)
        return self._campaign_xrefs(query)

    # -- ground truth -----------------------------------------------------------------------

    def truth(
        self, kinds: int, contacts: Iterable[int], *, names: bool = True
    ) -> Iterator[dict[str, Any]]:
        """Every record activity_details returns for ``contacts`` (v2 numbers, in the given
        order) and the kinds in the bit mask ``kinds``, each contact newest first."""
        for contact in contacts:
            for record in reversed(_select(self.dataset.contact_view(contact).all, kinds)):
                yield self._contact_record(record, names)

    def contact_number(self, contact_id: str) -> int:
        """The v2 number of an existing contact's v3 id; raises ValueError otherwise."""
        try:
            number = self.ids.contact_number(contact_id)
        except ValueError:
            number = None
        if number is None or not self.dataset.has_contact(number):
            raise ValueError(f"no contact {contact_id!r}")
        return number

    # -- endpoints ----------------------------------------------------------------------------

    def _details(self, raw_id: str, path: str, query: Query) -> bytes:
        number = self._contact(raw_id)
        token = query.get("next")
        if token is not None:
            cursor = self._decode(path, token)
        else:
            kinds = _kinds(query)
            names = _bool(query.get("include_campaign_activity_names"), default=True)
            limit = _limit(query.get("limit"), 100, 100)
            cursor = Cursor(limit=limit, kinds=kinds, names=names)
        kinds = ALL_KINDS if cursor.kinds is None else cursor.kinds
        rows = _select(self.dataset.contact_view(number).all, kinds)
        page, after = take_page(rows, cursor)
        names = cursor.names is not False
        body: dict[str, Any] = {
            "tracking_activities": [self._contact_record(r, names) for r in page]
        }
        return self._paged(body, path, cursor, after)

    def _report(self, raw_id: str, report: str, path: str, query: Query) -> bytes:
        if not is_uuid(raw_id):
            raise _bad("The campaign_activity_id is not a valid UUID.")
        activity = self.ids.activities.get(raw_id)
        if activity is None:
            raise _not_found("The campaign activity was not found.")
        kind = REPORT_KIND.get(report)
        if kind is None:
            raise _not_found(f"No tracking report {report!r} is simulated.")
        if activity.v2_index is None:
            raise _not_found("Reports exist only for primary_email and resend activities.")
        cursor = self._cursor(path, query, default=500, maximum=500)
        rows = self.dataset.campaign_view(activity.v2_index).records(kind)
        page, after = take_page(rows, cursor)
        catalog = self.dataset.catalog
        body: dict[str, Any] = {
            "tracking_activities": [self._report_record(r, catalog) for r in page]
        }
        return self._paged(body, path, cursor, after)

    def _emails(self, path: str, query: Query) -> bytes:
        cursor = self._cursor(path, query, default=50, maximum=500)
        rows = sorted((c.updated_ms, c.index) for c in self.ids.campaigns)
        page, after = take_page(rows, cursor)
        campaigns = [_campaign_row(self.ids.campaigns[i]) for _, i in page]
        return self._paged({"campaigns": campaigns}, path, cursor, after)

    def _email(self, raw_id: str) -> bytes:
        if not is_uuid(raw_id):
            raise _bad("The campaign_id is not a valid UUID.")
        campaign = self.ids.campaigns_by_id.get(raw_id)
        if campaign is None:
            raise _not_found("The email campaign was not found.")
        row = _campaign_row(campaign)
        activities = [{"campaign_activity_id": a.id, "role": a.role} for a in campaign.activities]
        return orjson.dumps({"campaign_activities": activities, **row})

    def _summaries(self, path: str, query: Query) -> bytes:
        cursor = self._cursor(path, query, default=50, maximum=500)
        rows = sorted((c.sent_ms, c.index) for c in self.ids.campaigns if c.sent_ms is not None)
        page, after = take_page(rows, cursor)
        summaries = [self._campaign_summary(i) for _, i in page]
        # The page's aggregate rates, in whole percent of its unique sends.
        total = {
            name: sum(s["unique_counts"][name] for s in summaries)
            for name in ("sends", "opens", "clicks", "bounces", "optouts", "not_opened")
        }
        sends = total["sends"] or 1
        percents = {
            rate: round(100 * total[name] / sends)
            for rate, name in (("click", "clicks"), ("open", "opens"),
                               ("did_not_open", "not_opened"), ("bounce", "bounces"),
                               ("unsubscribe", "optouts"))
        }  # fmt: skip
        body = {"bulk_email_campaign_summaries": summaries, "aggregate_percents": percents}
        return self._paged(body, path, cursor, after)

    def _contact_summary(self, raw_id: str, path: str, query: Query) -> bytes:
        number = self._contact(raw_id)
        start, end = query.get("start"), query.get("end")
        if start is None or end is None:
            raise _bad("The start and end query parameters are required.")
        try:
            start_ms, end_ms = parse_since_ms(start), parse_since_ms(end)
        except ValueError as exc:
            raise _bad("The start and end must be ISO-8601 date-times.") from exc
        scope = f"{path}?{start_ms}&{end_ms}"
        token = query.get("next")
        cursor = (
            self._decode(scope, token) if token is not None else Cursor(limit=ACTIVITY_SUMMARY_PAGE)
        )
        per: dict[int, list[int]] = {}
        for ts, _, kind, k, _ in self.dataset.contact_view(number).all:
            row = per.setdefault(k, [0, 0, 0, 0, 0, 0, 0])
            if kind == SEND:
                row[6] = ts
            if start_ms <= ts <= end_ms:
                row[kind] += 1
        rows = sorted((row[6], k) for k, row in per.items() if any(row[:6]))
        page, after = take_page(rows, cursor)
        activities = []
        for _, k in page:
            counts = per[k]
            activities.append(
                {
                    "campaign_activity_id": self.ids.by_v2_index[k].id,
                    "start_on": format_ms(counts[6]),
                    "em_bounces": counts[BOUNCE],
                    "em_clicks": counts[CLICK],
                    "em_forwards": counts[FORWARD],
                    "em_opens": counts[OPEN],
                    "em_sends": counts[SEND],
                    "em_unsubscribes": counts[UNSUBSCRIBE],
                }
            )
        body: dict[str, Any] = {"contact_id": raw_id, "campaign_activities": activities}
        if after is not None:
            nxt = self._codec.encode(scope, Cursor(limit=cursor.limit, after=after))
            href = f"{path}?start={start}&end={end}&next={nxt}"
            body["_links"] = {"next": {"href": href}}
        return orjson.dumps(body)

    def _contact_xrefs(self, query: Query) -> bytes:
        self._xref_available()
        ids = _csv_ids(query.get("sequence_ids"), "sequence_ids", CONTACT_XREF_MAX)
        xrefs = [
            {"sequence_id": str(n), "contact_id": self.ids.contact_uuid(n)}
            for n in ids
            if self.dataset.has_contact(n)
        ]
        return orjson.dumps({"xrefs": xrefs})

    def _campaign_xrefs(self, query: Query) -> bytes:
        self._xref_available()
        ids = _csv_ids(query.get("v2_email_campaign_ids"), "v2_email_campaign_ids",
                       CAMPAIGN_XREF_MAX)  # fmt: skip
        xrefs = []
        by_id = self.dataset.catalog.by_id
        for n in ids:
            campaign = by_id.get(str(n))
            if campaign is None:
                continue
            activity = self.ids.by_v2_index[campaign.index]
            xrefs.append(
                {
                    "v2_email_campaign_id": campaign.id,
                    "campaign_id": self.ids.campaigns[activity.campaign].id,
                    "campaign_activity_id": activity.id,
                }
            )
        return orjson.dumps({"xrefs": xrefs})

    # -- helpers ------------------------------------------------------------------------------

    def _xref_available(self) -> None:
        if self._xref == "404":
            raise ApiError(404, "http.status.not_found", "This resource no longer exists.")
        if self._xref == "410":
            raise ApiError(410, "http.status.gone", "This resource is gone.")

    def _contact(self, raw_id: str) -> int:
        if not is_uuid(raw_id):
            raise _bad("The contact_id is not a valid UUID.")
        try:
            return self.contact_number(raw_id)
        except ValueError:
            raise ApiError(404, "contacts.api.not_found", "The contact was not found.") from None

    def _cursor(self, path: str, query: Query, *, default: int, maximum: int) -> Cursor:
        token = query.get("next")
        if token is not None:
            return self._decode(path, token)
        return Cursor(limit=_limit(query.get("limit"), default, maximum))

    def _decode(self, scope: str, token: str) -> Cursor:
        try:
            return self._codec.decode(scope, token)
        except TokenError as exc:
            raise _bad("The next token is invalid.") from exc

    def _paged(
        self, body: dict[str, Any], path: str, cursor: Cursor, after: tuple[int, int] | None
    ) -> bytes:
        if after is not None:
            following = Cursor(
                limit=cursor.limit, after=after, kinds=cursor.kinds, names=cursor.names
            )
            token = self._codec.encode(path, following)
            body["_links"] = {"next": {"href": f"{path}?next={token}"}}
        return orjson.dumps(body)

    def _contact_record(self, record: Record, names: bool) -> dict[str, Any]:
        ts, contact, kind, k, _ = record
        out = {
            "contact_id": self.ids.contact_uuid(contact),
            "campaign_activity_id": self.ids.by_v2_index[k].id,
            "created_time": format_ms(ts),
            "tracking_activity_type": V3_TYPES[kind],
        }
        if names:
            out["campaign_activity_name"] = self.dataset.catalog.campaigns[k].name
        return out

    def _report_record(self, record: Record, catalog: Catalog) -> dict[str, Any]:
        ts, contact, kind, k, extra = record
        email = f"contact{contact}@example.com"
        names = mix(contact, 0x4E)
        out: dict[str, Any] = {
            "contact_id": self.ids.contact_uuid(contact),
            "campaign_activity_id": self.ids.by_v2_index[k].id,
            "tracking_activity_type": V3_TYPES[kind],
            "email_address": email,
            "first_name": _FIRST[names % len(_FIRST)],
            "last_name": _LAST[names // len(_FIRST) % len(_LAST)],
        }
        if kind in (OPEN, CLICK):
            out["device_type"] = _DEVICES[mix(ts, contact) % len(_DEVICES)]
        if kind == CLICK:
            link_id, link_uri = catalog.campaigns[k].links[extra]
            out["url_id"] = link_id
            out["link_url"] = link_uri
        elif kind == BOUNCE:
            out["bounce_code"] = BOUNCE_CODES[extra][0]
            out["current_email_address"] = email
        elif kind == UNSUBSCRIBE and _OPT_OUT_REASONS[extra % 10]:
            out["opt_out_reason"] = _OPT_OUT_REASONS[extra % 10]
        out["created_time"] = format_ms(ts)
        return out

    def _campaign_summary(self, index: int) -> dict[str, Any]:
        campaign = self.ids.campaigns[index]
        people: list[set[int]] = [set() for _ in V3_TYPES]
        for activity in campaign.activities:
            if activity.v2_index is not None:
                for record in self.dataset.campaign_view(activity.v2_index).all:
                    people[record[2]].add(record[1])
        assert campaign.sent_ms is not None
        return {
            "campaign_id": campaign.id,
            "campaign_type": "NEWSLETTER",
            "last_sent_date": format_ms(campaign.sent_ms),
            "unique_counts": {
                "sends": len(people[SEND]),
                "opens": len(people[OPEN]),
                "clicks": len(people[CLICK]),
                "forwards": len(people[FORWARD]),
                "optouts": len(people[UNSUBSCRIBE]),
                "abuse": 0,
                "bounces": len(people[BOUNCE]),
                "not_opened": len(people[SEND] - people[OPEN]),
            },
        }


def _campaign_row(campaign: V3Campaign) -> dict[str, Any]:
    return {
        "campaign_id": campaign.id,
        "created_at": format_ms(campaign.created_ms),
        "current_status": campaign.status,
        "name": campaign.name,
        "type": "Newsletter",
        "type_code": 10,
        "updated_at": format_ms(campaign.updated_ms),
    }


def _select(records: list[Record], kinds: int) -> Sequence[Record]:
    if kinds == ALL_KINDS:
        return records
    return [r for r in records if kinds >> r[2] & 1]


def _kinds(query: Query) -> int:
    """The bit mask of tracking_activity_type (repeated) or tracking_activities_list (CSV)."""
    repeated = query.getall("tracking_activity_type", [])
    listed = query.get("tracking_activities_list")
    if repeated and listed is not None:
        raise _bad("Use tracking_activity_type or tracking_activities_list, not both.")
    names = repeated if repeated else (listed.split(",") if listed is not None else [])
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise _bad("tracking_activity_type or tracking_activities_list is required.")
    mask = 0
    for name in names:
        kind = KIND_OF_TYPE.get(name)
        if kind is not None:
            mask |= 1 << kind
        elif name not in LANDING_TYPES:
            raise _bad(f"{name!r} is not a tracking activity type.")
    return mask


def _limit(raw: str | None, default: int, maximum: int) -> int:
    if raw is None:
        return default
    if _LIMIT.fullmatch(raw) is None or not 1 <= int(raw) <= maximum:
        raise _bad(f"The limit must be an integer from 1 to {maximum}.")
    return int(raw)


def _bool(raw: str | None, *, default: bool) -> bool:
    if raw is None:
        return default
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise _bad("A boolean parameter must be true or false.")


def _csv_ids(raw: str | None, name: str, maximum: int) -> list[int]:
    """Distinct integer ids of a CSV parameter, ascending; 400 when missing, malformed or
    more than ``maximum``."""
    if raw is None or not raw.strip():
        raise _bad(f"The {name} parameter is required.")
    parts = [p.strip() for p in raw.split(",")]
    if any(_V2_ID.fullmatch(p) is None for p in parts):
        raise _bad(f"The {name} must be integers.")
    if len(parts) > maximum:
        raise _bad(f"At most {maximum} {name} per request.")
    return sorted({int(p) for p in parts})


def _bad(message: str) -> ApiError:
    return ApiError(400, "query.param.invalid", message)


def _not_found(message: str) -> ApiError:
    return ApiError(404, "emails.api.not_found", message)
