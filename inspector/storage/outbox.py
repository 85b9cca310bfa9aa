"""The sinks' outbox: one event per recorded verdict, inserted in the verdict's own transaction.

A verdict and its event commit together or not at all, so a crash (SIGKILL included) can never
leave a recorded verdict without its event, nor an event for a verdict that was not recorded.
Each sink reads the events after its own cursor (``sink_cursors``) and moves the cursor once the
receiver has them: at-least-once delivery. Every event carries a stable ``event_id`` and a
per-source ``seq`` (1, 2, 3, ...), so a receiver drops a redelivered duplicate by either.

The daemon is the only writer (one writer per results database), so outbox ids are committed in
increasing order and "id > cursor" never skips an event.
"""
from __future__ import annotations

import bisect
import json
import math
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Iterable, Optional

from sqlalchemy import Connection, delete, func, insert, select, update

from inspector.storage.fields import iso_utc
from inspector.storage.models import OutboxEvent, OutboxSequence, SinkCursor

if TYPE_CHECKING:
    from inspector.storage.database import ResultStore
    from inspector.types import Verdict

_INSERT_EVENT = insert(OutboxEvent.__table__)
_COUNT_COLUMN = {"pass": "passed", "fail": "failed", "error": "errors"}


def _finite(v) -> Optional[float]:
    return None if v is None or not math.isfinite(v) else float(v)


@dataclass(frozen=True)
class Event:
    """One outbox event as a sink sends it: ``body`` is the JSON text, ``data`` the same parsed."""

    id: int  # position in the outbox (delivery order)
    event_id: str
    source: str
    seq: int
    body: str
    data: dict


class OutboxWriter:
    """Writes events inside ResultStore.record_many's transaction and tells listeners (the sink
    workers) after the commit. It remembers when recent commits happened (monotonic time), for the
    commit-to-delivery latency."""

    KEEP_COMMIT_TIMES = 4096

    def __init__(self) -> None:
        self._listeners: list[Callable[[int], None]] = []
        self._lock = threading.Lock()
        self._commits: list[tuple[int, int, float]] = []  # (last id, first id, monotonic time) per commit, ascending

    def add_listener(self, listener: Callable[[int], None]) -> None:
        """``listener(last_outbox_id)`` runs on the writer thread after each commit: keep it cheap."""
        self._listeners.append(listener)

    def append(self, conn: Connection, items: "list[tuple[Verdict, dict, list[dict], int]]") -> tuple[int, int]:
        """Insert one event per (verdict, inspection row, region rows, inspection id); returns the
        first and last outbox id. Runs inside the caller's transaction."""
        sources = sorted({row["source"] for _, row, _, _ in items})
        t = OutboxSequence
        state = {r[0]: [int(r[1]), int(r[2]), int(r[3]), int(r[4])] for r in conn.execute(
            select(t.source, t.last_seq, t.passed, t.failed, t.errors).where(t.source.in_(sources)))}
        fresh = [s for s in sources if s not in state]
        for s in fresh:
            state[s] = [0, 0, 0, 0]
        ids = []
        for verdict, row, regions, inspection_id in items:
            st = state[row["source"]]
            st[0] += 1
            kind = row["verdict"]
            if kind in _COUNT_COLUMN:
                st[1 + list(_COUNT_COLUMN).index(kind)] += 1
            event_id = str(uuid.uuid4())
            data = _event_data(verdict, row, regions, inspection_id, event_id, st)
            res = conn.execute(_INSERT_EVENT.returning(OutboxEvent.__table__.c.id),
                               dict(event_id=event_id, source=row["source"], seq=st[0], inspection_id=inspection_id,
                                    created_at=row["recorded_at"], payload=json.dumps(data, allow_nan=False)))
            ids.append(int(res.scalar_one()))
        for s, (seq, p, f, e) in state.items():
            values = dict(last_seq=seq, passed=p, failed=f, errors=e)
            if s in fresh:
                conn.execute(insert(OutboxSequence).values(source=s, **values))
            else:
                conn.execute(update(OutboxSequence).where(OutboxSequence.source == s).values(**values))
        return ids[0], ids[-1]

    def committed(self, first_id: int, last_id: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._commits.append((last_id, first_id, now))
            if len(self._commits) > 2 * self.KEEP_COMMIT_TIMES:
                del self._commits[:self.KEEP_COMMIT_TIMES]
        for listener in self._listeners:
            listener(last_id)

    def commit_time(self, outbox_id: int) -> Optional[float]:
        """Monotonic commit time of the group holding ``outbox_id`` (this process's commits only)."""
        with self._lock:
            i = bisect.bisect_left(self._commits, (outbox_id,))
            if i == len(self._commits) or self._commits[i][1] > outbox_id:
                return None
            return self._commits[i][2]


def _event_data(verdict: "Verdict", row: dict, regions: list[dict], inspection_id: int, event_id: str,
                state: list[int]) -> dict:
    timings = {k: round(float(v), 3) for k, v in (verdict.timings_ms or {}).items() if _finite(v) is not None}
    return {
        "event_id": event_id,
        "seq": state[0],
        "source": row["source"],
        "inspection_id": inspection_id,
        "frame_id": verdict.frame.id,
        "frame_key": row["frame_key"],
        "origin_name": row["origin_name"],
        "captured_at": iso_utc(row["captured_at"]),
        "recorded_at": iso_utc(row["recorded_at"]),
        "verdict": row["verdict"],
        "score": _finite(row["score"]),
        "threshold": _finite(row["threshold"]),
        "regions": [dict(r, peak_score=_finite(r["peak_score"])) for r in regions],
        "heatmap_path": row["heatmap_path"],
        "stored_path": row["stored_path"],
        "bundle_id": row["bundle_id"],
        "error": row["error_reason"],
        "timings_ms": timings,
        "counts": {"pass": state[1], "fail": state[2], "error": state[3]},
    }


class OutboxReader:
    """What the sink workers ask of the outbox, each call its own short transaction. Errors are
    translated as the store's (StorageUnavailable: transient, retry)."""

    def __init__(self, store: "ResultStore"):
        self.store = store

    def _tx(self, what: str):
        from inspector.storage.database import translate_errors

        return translate_errors(what, self.store.url)

    def read_after(self, last_id: int, limit: int) -> list[Event]:
        with self._tx("reading the outbox"), self.store.engine.connect() as conn:
            rows = conn.execute(select(OutboxEvent.id, OutboxEvent.event_id, OutboxEvent.source, OutboxEvent.seq,
                                       OutboxEvent.payload).where(OutboxEvent.id > last_id)
                                .order_by(OutboxEvent.id).limit(limit)).all()
        return [Event(int(r[0]), r[1], r[2], int(r[3]), r[4], json.loads(r[4])) for r in rows]

    def latest_per_source(self, upto_id: int) -> list[Event]:
        """The newest event of each source at or before ``upto_id`` (what a server sink shows at start)."""
        newest = (select(func.max(OutboxEvent.id)).where(OutboxEvent.id <= upto_id)
                  .group_by(OutboxEvent.source).scalar_subquery())
        with self._tx("reading the outbox"), self.store.engine.connect() as conn:
            rows = conn.execute(select(OutboxEvent.id, OutboxEvent.event_id, OutboxEvent.source, OutboxEvent.seq,
                                       OutboxEvent.payload).where(OutboxEvent.id.in_(newest))
                                .order_by(OutboxEvent.id)).all()
        return [Event(int(r[0]), r[1], r[2], int(r[3]), r[4], json.loads(r[4])) for r in rows]

    def max_id(self) -> int:
        with self._tx("reading the outbox"), self.store.engine.connect() as conn:
            return int(conn.execute(select(func.max(OutboxEvent.id))).scalar() or 0)

    def cursors(self) -> dict[str, int]:
        with self._tx("reading the sink cursors"), self.store.engine.connect() as conn:
            return {r[0]: int(r[1]) for r in conn.execute(select(SinkCursor.sink, SinkCursor.last_id))}

    def set_cursor(self, sink: str, last_id: int) -> None:
        now = datetime.now(timezone.utc)
        with self._tx(f"saving sink {sink}'s cursor"), self.store.engine.begin() as conn:
            n = conn.execute(update(SinkCursor).where(SinkCursor.sink == sink)
                             .values(last_id=last_id, updated_at=now)).rowcount
            if n == 0:
                conn.execute(insert(SinkCursor).values(sink=sink, last_id=last_id, updated_at=now))

    def drop_cursors(self, sinks: Iterable[str]) -> None:
        names = list(sinks)
        if names:
            with self._tx("removing sink cursors"), self.store.engine.begin() as conn:
                conn.execute(delete(SinkCursor).where(SinkCursor.sink.in_(names)))

    def prune(self, upto_id: int) -> int:
        """Delete events every sink has delivered (id <= ``upto_id``), but each source's newest,
        which a server sink (OPC UA, Modbus) shows again after a restart. Returns how many."""
        newest = select(func.max(OutboxEvent.id)).group_by(OutboxEvent.source)
        with self._tx("pruning the outbox"), self.store.engine.begin() as conn:
            return int(conn.execute(delete(OutboxEvent).where(OutboxEvent.id <= upto_id)
                                    .where(OutboxEvent.id.not_in(newest))).rowcount or 0)
