"""Per-patient rule states (``alert_state``): loaded and saved by the ingest batch, with
optimistic concurrency (a state is written only over the revision it was read at)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

import asyncpg

from alerts.state import PatientState, decode_state, encode_state, new_state
from schemas.events import PatientKey

# a state as cached: the revision and partition it is stored at, and the decoded state
Cached = tuple[int, int, PatientState]


class StateCache:
    """Decoded states by patient, each with the revision and partition it is stored at; the
    least recently used first. With a ``limit`` (patients; 0: none) the oldest are dropped
    beyond it: a patient dropped is read from the table at their next batch, so a worker's
    memory stops growing with the patients of its partitions (docs/scaling.md)."""

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit
        self.dropped = 0  # states dropped for the limit, since start
        self.reads = 0  # states a batch decoded from the table: not held at their revision
        self._states: OrderedDict[PatientKey, Cached] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key: object) -> bool:
        return key in self._states

    def __getitem__(self, key: PatientKey) -> Cached:
        return self._states[key]

    def __iter__(self) -> Iterator[PatientKey]:
        return iter(self._states)

    def get(self, key: PatientKey) -> Cached | None:
        return self._states.get(key)

    def of_partitions(self, parts: set[int]) -> list[PatientKey]:
        if not parts:  # a batch without ticks: no walk over the cache
            return []
        return [k for k, (_, p, _) in self._states.items() if p in parts]

    def put(self, key: PatientKey, cached: Cached) -> None:
        """Keep ``cached`` as the most recently used; drop the least recently used beyond
        the limit."""
        self._states[key] = cached
        self._states.move_to_end(key)
        if self.limit:
            while len(self._states) > self.limit:
                self._states.popitem(last=False)
                self.dropped += 1

    def pop(self, key: PatientKey) -> None:
        self._states.pop(key, None)


class StateConflict(Exception):
    """Another worker wrote a state this batch read: roll back and redo the batch."""


# An advisory lock (PostgreSQL) between the two writers of rule states. Each ingest batch
# holds it shared from its first read to its commit (``ingest_batch``); the worker's refresh
# takes it exclusively, in its transaction, before it writes the pathway's alerts and their
# states (``refresh_writes_states``). So the refresh never writes a state while a batch that
# read it is in flight: a tick's batch over every patient of its partitions (seconds long)
# was otherwise refused (StateConflict) again and again while the refresh wrote a few states
# a second, and the time-driven alerts waited (`rtm bench --pages`: over 600 s). A batch
# waits at most one refresh write; the refresh, which reads its states before it waits,
# is the one refused (its claim goes back) if a batch wrote one of them meanwhile.
STATE_WRITERS_LOCK = 0x52544D01


async def ingest_batch(conn: asyncpg.Connection) -> None:
    """Hold the state writers' lock shared on this connection (until ``ingest_batch_done``)."""
    await conn.execute("SELECT pg_advisory_lock_shared($1)", STATE_WRITERS_LOCK)


async def ingest_batch_done(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_unlock_shared($1)", STATE_WRITERS_LOCK)


async def refresh_writes_states(conn: asyncpg.Connection) -> None:
    """Take the state writers' lock exclusively until the end of this transaction: every
    batch in flight has finished; the next ones wait for this commit."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", STATE_WRITERS_LOCK)


_LOAD = """
WITH k AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) AS k(o, p, rev)
), wanted AS (
    SELECT o, p FROM k
    UNION
    SELECT org_id, patient_id FROM alert_state WHERE part = ANY($4::int[])
)
SELECT s.org_id, s.patient_id, s.rev, s.part,
       CASE WHEN k.rev IS DISTINCT FROM s.rev THEN s.state END AS state
FROM wanted w
JOIN alert_state s ON s.org_id = w.o AND s.patient_id = w.p
LEFT JOIN k ON k.o = w.o AND k.p = w.p
"""


class StateStore:
    """Per-patient rule states, by (organisation, patient_id), with decoded copies kept in
    memory.

    A cached state is used only while its revision equals the stored one, so a patient
    whose partition moved to another worker and back is re-read, never stale.
    """

    def __init__(self, cache: StateCache | None = None) -> None:
        # shared by the stores given the same cache (the PostgreSQL store's sessions)
        self._cache = cache if cache is not None else StateCache()
        # written, not yet committed
        self._saved: dict[PatientKey, Cached] = {}
        self._loaded: dict[PatientKey, int] = {}  # rev of each state handed out (0: new)

    def revision(self, key: PatientKey) -> int:
        """The stored revision of the state handed out for ``key`` (0: none stored)."""
        return self._loaded.get(key, 0)

    async def load(
        self,
        conn: asyncpg.Connection,
        keys: Sequence[PatientKey],
        partitions: Sequence[int] = (),
    ) -> dict[PatientKey, PatientState]:
        """The states of ``keys`` (a new one for a patient not stored) and every stored
        state of ``partitions`` (a tick's), in one query; a state's body is read only when
        the cache does not hold its revision."""
        if not keys and not partitions:
            return {}
        parts = set(partitions)
        asked = dict.fromkeys(keys)
        asked.update(dict.fromkeys(self._cache.of_partitions(parts)))
        held = {k: c for k in asked if (c := self._cache.get(k)) is not None}
        rows = await conn.fetch(
            _LOAD,
            [k[0] for k in asked],
            [k[1] for k in asked],
            [held[k][0] if k in held else None for k in asked],
            sorted(parts),
        )
        revs: dict[PatientKey, int] = {}
        read: dict[PatientKey, PatientState] = {}
        for r in rows:
            key, rev, part = (r["org_id"], r["patient_id"]), int(r["rev"]), int(r["part"])
            revs[key] = rev
            if r["state"] is not None:
                state = decode_state(r["state"])
                self._cache.reads += 1
            else:
                state = held[key][2]
            read[key] = state
            self._cache.put(key, (rev, part, state))  # may drop another beyond the limit
        out = {}
        self._loaded = {k: revs.get(k, 0) for k in [*keys, *revs]}
        for k in [*keys, *revs]:
            if k in revs:
                out[k] = read[k]
            else:
                self._cache.pop(k)
                out[k] = new_state(k[1], k[0])
        return out

    async def warm(self, conn: asyncpg.Connection, keys: Sequence[PatientKey]) -> int:
        """Read into the cache the stored states of ``keys`` that it holds at an older
        revision: those another process wrote (the refresh), so that the next batch of
        these patients does not read them; how many. A patient the cache does not hold is
        left to its next batch (this worker may never see it). Not a batch's read: nothing
        is handed out, and a state a batch committed meanwhile (a newer revision) stays."""
        asked = [k for k in dict.fromkeys(keys) if k in self._cache]
        if not asked:
            return 0
        rows = await conn.fetch(
            _LOAD,
            [k[0] for k in asked],
            [k[1] for k in asked],
            [self._cache[k][0] for k in asked],
            [],
        )
        warmed = 0
        for r in rows:
            key, rev = (r["org_id"], r["patient_id"]), int(r["rev"])
            held = self._cache.get(key)
            if r["state"] is None or (held is not None and held[0] >= rev):
                continue
            self._cache.put(key, (rev, int(r["part"]), decode_state(r["state"])))
            warmed += 1
        return warmed

    async def assign_partitions(
        self, conn: asyncpg.Connection, partition_of: Callable[[PatientKey], int]
    ) -> int:
        """Give states stored without a partition (``part`` -1: infra/migrations/013, when
        the Kafka key became ``<org>/<patient>``) the partition of their key, so that the
        ticks of that partition reach them; returns how many."""
        rows = await conn.fetch("SELECT org_id, patient_id FROM alert_state WHERE part < 0")
        if not rows:
            return 0
        keys = [(r["org_id"], r["patient_id"]) for r in rows]
        status = await conn.execute(
            "UPDATE alert_state s SET part = k.part"
            " FROM unnest($1::text[], $2::text[], $3::int[]) AS k(o, p, part)"
            " WHERE s.org_id = k.o AND s.patient_id = k.p AND s.part < 0",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [partition_of(k) for k in keys],
        )
        return int(status.rsplit(" ", 1)[-1])

    async def save(
        self,
        conn: asyncpg.Connection,
        states: dict[PatientKey, PatientState],
        partitions: dict[PatientKey, int],
    ) -> None:
        """Write the given (touched) states; the cache learns them only after the commit
        (``commit_saved``), so a rolled-back batch cannot leave a state the table lacks."""
        self._saved = {}
        if not states:
            return
        keys = list(states)
        # Optimistic concurrency: a state is written only over the revision it was read
        # at. During a rebalance the old owner of a partition may still be committing
        # while the new one starts; without this, one of them would overwrite the other.
        rows = await conn.fetch(
            "INSERT INTO alert_state (org_id, patient_id, part, rev, state)"
            " SELECT o, p, part, r + 1, st"
            " FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::bigint[])"
            "   AS t(o, p, part, st, r)"
            " ON CONFLICT (org_id, patient_id) DO UPDATE SET rev = EXCLUDED.rev,"
            " state = EXCLUDED.state, part = EXCLUDED.part, updated_at = now()"
            " WHERE alert_state.rev = EXCLUDED.rev - 1"
            " RETURNING org_id, patient_id, rev",
            [k[0] for k in keys],
            [k[1] for k in keys],
            [partitions[k] for k in keys],
            [encode_state(states[k]).decode() for k in keys],
            [self._loaded.get(k, 0) for k in keys],
        )
        if len(rows) != len(keys):
            raise StateConflict(f"{len(keys) - len(rows)} states changed since read")
        self._saved = {}
        for r in rows:
            key = (r["org_id"], r["patient_id"])
            self._saved[key] = (int(r["rev"]), partitions[key], states[key])

    def commit_saved(self) -> None:
        for key, cached in self._saved.items():
            self._cache.put(key, cached)
        self._saved = {}

    def forget(self) -> None:
        """After a failed batch: its patients' states are read from the table next time
        (the cache learns only committed states, and a cached one is used only at the
        stored revision, so the rest of the cache stays)."""
        for key in [*self._loaded, *self._saved]:
            self._cache.pop(key)
        self._saved = {}


async def state_sizes(conn: asyncpg.Connection, patient_like: str) -> list[int]:
    """The stored size in bytes of each rule state whose patient id matches the LIKE
    pattern (``rtm bench``'s per-patient state figures; any encoding counts the same)."""
    rows = await conn.fetch(
        "SELECT octet_length(state) AS n FROM alert_state WHERE patient_id LIKE $1",
        patient_like,
    )
    return [int(r["n"]) for r in rows if r["n"] is not None]


async def count_states(conn: asyncpg.Connection) -> int:
    """How many rule states are stored, of every organisation (a tick loads every state of
    its partition, whoever's it is)."""
    return int(await conn.fetchval("SELECT count(*) FROM alert_state"))
