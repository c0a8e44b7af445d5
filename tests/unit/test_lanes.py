"""A fetch's items in lanes by partition (``streams.services.ingest.lanes_of``): a patient's
items stay in one lane in arrival order, ticks go with their partition, and recording the
lanes side by side gives what one transaction gives."""

from __future__ import annotations

import datetime as dt

import orjson

from alerts.batch import AckItem, EventItem, Item, TickItem
from schemas.events import parse_event_json
from streams.services.ingest import lanes_of
from tests.conftest import EventFactory


def test_a_patients_items_stay_in_one_lane_in_arrival_order(factory: EventFactory) -> None:
    def partition_of(key: tuple[str, str]) -> int:
        return int(key[1][-1])  # patient ids end in their partition here

    items: list[Item] = []
    for n in range(12):
        p = f"p-{n % 4}"
        ev = parse_event_json(
            orjson.dumps(factory.pain(p, n % 10, f"2026-11-03T1{n % 10}:00:00-06:00"))
        )
        items.append(EventItem(ev))
    now = dt.datetime(2026, 11, 4, tzinfo=dt.UTC)
    items.append(TickItem(now, 3))
    items.append(AckItem("p-2", "a-1", now, "c-1"))

    (whole,) = lanes_of(items, partition_of, 1)
    assert whole == items
    lanes = lanes_of(items, partition_of, 2)
    assert len(lanes) == 2
    assert sorted(map(id, (i for lane in lanes for i in lane))) == sorted(map(id, items))
    for lane in lanes:
        parts = {i.partition if isinstance(i, TickItem) else partition_of(i.key) for i in lane}
        assert len({p % 2 for p in parts}) == 1  # one lane: partitions of one parity
        assert lane == [i for i in items if i in lane]  # arrival order kept
