"""The deterministic dataset: every tracking record, generated lazily from seeded hashes.

A record is a plain tuple ``(ts_ms, contact, kind, campaign_index, extra)`` (see
:data:`Record`); it becomes JSON only in ``_render``. The records of one (contact, campaign)
pair depend only on (seed, contact, campaign), so a contact's view (all its campaigns) and a
campaign's view (all its contacts) are built independently and always agree.

Invariants:
* every timestamp is unique within a contact: pair timestamps are ``unit * K + campaign``
  (K = number of SENT campaigns), distinct units within a pair, distinct residues across
  pairs; added records are newer than everything the contact had;
* views are lists sorted ascending by the whole tuple, i.e. by (ts_ms, contact), which is
  unique within any view; pages walk them from the end (newest first);
* seeded timestamps lie in the catalogue's fixed window, independent of the wall clock.
"""

from __future__ import annotations

from bisect import insort
from collections import defaultdict

from bulkopens.simulator._catalog import ACTIVITY_MS, SEND_SPREAD_MS, Catalog
from bulkopens.simulator._config import SimConfig
from bulkopens.simulator._hashing import Stream, mix, splitmix64
from bulkopens.simulator._lru import WeightedLRU

#: (ts_ms, contact id, kind, campaign index, extra); extra is the link index (clicks),
#: bounce code index (bounces), source * 10 + reason index (unsubscribes), else 0.
Record = tuple[int, int, int, int, int]

SEND, OPEN, CLICK, FORWARD, BOUNCE, UNSUBSCRIBE = range(6)
#: Report name -> record kind; "all" (None) means every kind.
REPORT_KINDS: dict[str, int | None] = {
    "sends": SEND,
    "opens": OPEN,
    "clicks": CLICK,
    "forwards": FORWARD,
    "bounces": BOUNCE,
    "unsubscribes": UNSUBSCRIBE,
    "all": None,
}

_ALL_CAMPAIGNS = (1 << 64) - 1  # heavy contacts receive every campaign
_BOUNCE_1024 = 20  # about 2% of a normal contact's sends bounce ...
_OPEN_1024 = 461  # ... and about 45% of the others are opened


class View:
    """The records of one contact or one campaign, ascending, with per-kind subsets."""

    __slots__ = ("_by_kind", "all")

    def __init__(self, records: list[Record]) -> None:
        self.all = records
        self._by_kind: dict[int, list[Record]] = {}

    def records(self, kind: int | None) -> list[Record]:
        """All records (kind None) or those of one kind; ascending. Do not mutate."""
        if kind is None:
            return self.all
        subset = self._by_kind.get(kind)
        if subset is None:
            subset = self._by_kind[kind] = [r for r in self.all if r[2] == kind]
        return subset

    def insert(self, record: Record) -> None:
        """Add one record, keeping every list sorted."""
        insort(self.all, record)
        subset = self._by_kind.get(record[2])
        if subset is not None:
            insort(subset, record)


class Dataset:
    """Lazily generated records for ``config.contacts`` contacts and the catalogue's campaigns.

    Contact views are cached in an LRU bounded by ``contact_budget`` records, campaign views
    (built on first use by scanning every contact) in one bounded by ``campaign_budget``.
    """

    __slots__ = (
        "_added",
        "_added_by_campaign",
        "_campaigns",
        "_contacts",
        "_empty_fraction",
        "_heavy_fraction",
        "_k",
        "_rng",
        "_seed_hash",
        "catalog",
        "contact_count",
    )

    def __init__(
        self,
        config: SimConfig,
        *,
        contact_budget: int = 500_000,
        campaign_budget: int = 4_000_000,
    ) -> None:
        self.catalog = Catalog(config.seed, config.campaigns)
        self.contact_count = config.contacts
        self._k = max(1, config.campaigns)
        self._seed_hash = mix(config.seed, 0xC0FFEE)
        self._empty_fraction = config.empty_fraction
        self._heavy_fraction = config.heavy_fraction
        self._rng = Stream()
        self._contacts: WeightedLRU[int, View] = WeightedLRU(contact_budget)
        self._campaigns: WeightedLRU[int, View] = WeightedLRU(campaign_budget)
        self._added: defaultdict[int, list[Record]] = defaultdict(list)
        self._added_by_campaign: defaultdict[int, list[Record]] = defaultdict(list)

    def has_contact(self, contact: int) -> bool:
        """True for the ids 1..contacts."""
        return 1 <= contact <= self.contact_count

    def contact_view(self, contact: int) -> View:
        """Every record of one existing contact (cached)."""
        view = self._contacts.get(contact)
        if view is None:
            records: list[Record] = []
            profile = self._profile(contact)
            if profile is not None:
                contact_hash, heavy_total = profile
                members = 0
                for k in range(self.catalog.sent_count):
                    if k % 64 == 0:
                        members = _ALL_CAMPAIGNS if heavy_total else _members(contact_hash, k)
                    if members >> (k % 64) & 1:
                        records.extend(self._pair(contact, contact_hash, heavy_total, k))
                records.sort()
            records.extend(self._added.get(contact, ()))  # all newer than the seeded ones
            view = View(records)
            self._contacts.put(contact, view, len(records) + 1)
        return view

    def campaign_view(self, index: int) -> View:
        """Every record of one campaign (by catalogue index); empty unless SENT (cached)."""
        view = self._campaigns.get(index)
        if view is None:
            records: list[Record] = []
            if index < self.catalog.sent_count:
                for contact in range(1, self.contact_count + 1):
                    profile = self._profile(contact)
                    if profile is None:
                        continue
                    contact_hash, heavy_total = profile
                    if heavy_total or _members(contact_hash, index) >> (index % 64) & 1:
                        records.extend(self._pair(contact, contact_hash, heavy_total, index))
                records.extend(self._added_by_campaign.get(index, ()))
                records.sort()
            view = View(records)
            self._campaigns.put(index, view, len(records) + 1)
        return view

    def add_activity(self, contact: int, kind: int, count: int, now_ms: int) -> list[Record]:
        """Append ``count`` records of ``kind`` for an existing contact, newest of all.

        Timestamps start at max(now_ms, the contact's newest + 1) and step by 1 ms. The
        campaign is the newest one the contact was sent (else the newest SENT campaign).
        Raises ValueError when there is no SENT campaign at all.
        """
        if self.catalog.sent_count == 0:
            raise ValueError("the simulated account has no SENT campaign")
        view = self.contact_view(contact)
        start = max(now_ms, view.all[-1][0] + 1) if view.all else now_ms
        sends = view.records(SEND)
        k = max(r[3] for r in sends) if sends else self.catalog.sent_count - 1
        n_links = len(self.catalog.campaigns[k].links)
        added = [
            (start + i, contact, kind, k, i % n_links if kind == CLICK else 0) for i in range(count)
        ]
        self._added[contact].extend(added)
        self._added_by_campaign[k].extend(added)
        for record in added:
            view.insert(record)
        self._contacts.reweigh(contact, len(view.all) + 1)
        campaign = self._campaigns.peek(k)
        if campaign is not None:
            for record in added:
                campaign.insert(record)
            self._campaigns.reweigh(k, len(campaign.all) + 1)
        return added

    # -- generation -------------------------------------------------------------------------

    def _profile(self, contact: int) -> tuple[int, int] | None:
        """(contact hash, heavy activity total or 0), or None for a contact with no activity."""
        contact_hash = splitmix64(self._seed_hash ^ contact)
        if self._empty_fraction and splitmix64(contact_hash ^ 1) < self._empty_fraction * 2.0**64:
            return None
        if self._heavy_fraction and splitmix64(contact_hash ^ 2) < self._heavy_fraction * 2.0**64:
            return contact_hash, 1100 + splitmix64(contact_hash ^ 3) % 1901
        return contact_hash, 0

    def _pair(self, contact: int, contact_hash: int, heavy_total: int, k: int) -> list[Record]:
        """The records of one (contact, SENT campaign k) pair that received campaign k."""
        run_ms = self.catalog.campaigns[k].run_ms
        assert run_ms is not None
        rng = self._rng
        rng.reseed(contact_hash ^ (k + 1) * 0xD1B54A32D192ED03)
        K = self._k
        draw = rng.next64()
        send_u = (run_ms + (draw & 0xFFFFFFFF) % SEND_SPREAD_MS) // K
        records: list[Record] = [(send_u * K + k, contact, SEND, k, 0)]
        low, high = send_u + 1, send_u + ACTIVITY_MS // K
        n_links = len(self.catalog.campaigns[k].links)
        if heavy_total:
            # Evenly spread activity: one unit per stratum (so distinct and ascending); every
            # 25th is a click and every 200th a forward, the rest are opens.
            sent = self.catalog.sent_count
            total = heavy_total // sent + (k < heavy_total % sent)
            width = (high - low) // max(1, total)
            for i in range(total):
                ts = (low + i * width + rng.below(width)) * K + k
                if i % 200 == 199:
                    records.append((ts, contact, FORWARD, k, 0))
                elif i % 25 == 24:
                    records.append((ts, contact, CLICK, k, i % n_links))
                else:
                    records.append((ts, contact, OPEN, k, 0))
            return records
        # Ten bits of a draw per yes/no decision (probabilities in 1/1024ths).
        if (draw >> 32) & 1023 < _BOUNCE_1024:
            bounce_u = send_u + 1 + rng.below(max(1, 600_000 // K))
            records.append((bounce_u * K + k, contact, BOUNCE, k, (draw >> 42) % 7))
            return records
        if (draw >> 52) & 1023 >= _OPEN_1024:
            return records
        bits = rng.next64()
        n_open = 1 + ((bits & 1023) < 358) + ((bits >> 10 & 1023) < 154)
        n_click = ((bits >> 20 & 1023) < 307) * (1 + ((bits >> 30 & 1023) < 307))
        n_forward = int((bits >> 40 & 1023) < 51)
        n_unsub = int((bits >> 50 & 1023) < 10)
        units = rng.distinct_sorted(low, high, n_open + n_click + n_forward + n_unsub)
        # The first activity is an open and an unsubscribe comes last; the rest interleave.
        middle = [OPEN] * (n_open - 1) + [CLICK] * n_click + [FORWARD] * n_forward
        if len(middle) > 1:
            rng.shuffle(middle)
        kinds = [OPEN, *middle] + [UNSUBSCRIBE] * n_unsub
        for unit_, kind in zip(units, kinds, strict=True):
            extra = 0
            if kind == CLICK:
                extra = rng.below(n_links)
            elif kind == UNSUBSCRIBE:
                extra = rng.chance(0.2) * 10 + rng.below(3)
            records.append((unit_ * K + k, contact, kind, k, extra))
        return records


def _members(contact_hash: int, k: int) -> int:
    """Bit ``k % 64`` is set when a normal contact received campaign ``k`` (p = 1/2)."""
    return splitmix64(contact_hash ^ (0x100 + k // 64))
