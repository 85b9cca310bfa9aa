"""SQLAlchemy 2.0 typed models of the results database.

All datetimes are stored as naive UTC (``UtcDateTime`` converts on the way in and out), so
SQLite and PostgreSQL hold the same values and comparisons never mix offsets.

The schema is *built by the migrations* (``inspector.storage.migrations``); these models must
describe the result of applying all of them. ``tests/unit/test_storage_migrations.py`` checks
that a fresh database and the models agree column by column.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from sqlalchemy import BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator):
    """Timezone-aware datetimes in Python, naive UTC in the database.

    A naive datetime handed in is taken as UTC already (documented in docs/STORAGE.md)."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    pass


class ModelBundle(Base):
    __tablename__ = "model_bundles"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[Optional[datetime]] = mapped_column(UtcDateTime)
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime)
    scorer_type: Mapped[Optional[str]] = mapped_column(String(64))
    image_threshold: Mapped[Optional[float]] = mapped_column(Float)
    pixel_threshold: Mapped[Optional[float]] = mapped_column(Float)
    manifest: Mapped[str] = mapped_column(Text)  # the manifest as JSON text


class Inspection(Base):
    __tablename__ = "inspections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # exactly-once key of the frame (folder sources: name+size+mtime); NULL for streams
    frame_key: Mapped[Optional[str]] = mapped_column(String(512))
    source: Mapped[str] = mapped_column(String(128))
    origin_name: Mapped[Optional[str]] = mapped_column(String(512))
    captured_at: Mapped[datetime] = mapped_column(UtcDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    verdict: Mapped[str] = mapped_column(String(8))  # "pass" | "fail" | "error"
    score: Mapped[Optional[float]] = mapped_column(Float)
    threshold: Mapped[Optional[float]] = mapped_column(Float)
    error_reason: Mapped[Optional[str]] = mapped_column(Text)
    decode_ms: Mapped[Optional[float]] = mapped_column(Float)
    preprocess_ms: Mapped[Optional[float]] = mapped_column(Float)
    inference_ms: Mapped[Optional[float]] = mapped_column(Float)
    scoring_ms: Mapped[Optional[float]] = mapped_column(Float)
    judge_ms: Mapped[Optional[float]] = mapped_column(Float)
    total_ms: Mapped[Optional[float]] = mapped_column(Float)
    heatmap_path: Mapped[Optional[str]] = mapped_column(Text)
    stored_path: Mapped[Optional[str]] = mapped_column(Text)
    bundle_id: Mapped[Optional[str]] = mapped_column(String(128), ForeignKey("model_bundles.id"))
    # added by migration 2
    image_w: Mapped[Optional[int]] = mapped_column(Integer)
    image_h: Mapped[Optional[int]] = mapped_column(Integer)
    region_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    regions: Mapped[list["DefectRegion"]] = relationship(
        back_populates="inspection", cascade="all, delete-orphan", passive_deletes=True,
        order_by="DefectRegion.id",
    )

    __table_args__ = (
        Index("ix_inspections_frame_key", "frame_key", unique=True),
        Index("ix_inspections_captured_at", "captured_at"),
        Index("ix_inspections_verdict", "verdict"),
        Index("ix_inspections_source", "source"),
        Index("ix_inspections_bundle_id", "bundle_id"),
        # history/stats/report: "fails of one source in a period", "newest fails" (prune)
        Index("ix_inspections_verdict_captured_at", "verdict", "captured_at"),
        Index("ix_inspections_source_captured_at", "source", "captured_at"),
    )


class DefectRegion(Base):
    """A connected defect region in ORIGINAL image pixel coordinates."""

    __tablename__ = "defect_regions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(Integer, ForeignKey("inspections.id", ondelete="CASCADE"))
    x: Mapped[int] = mapped_column(Integer)
    y: Mapped[int] = mapped_column(Integer)
    w: Mapped[int] = mapped_column(Integer)
    h: Mapped[int] = mapped_column(Integer)
    area: Mapped[int] = mapped_column(Integer)
    peak_score: Mapped[float] = mapped_column(Float)

    inspection: Mapped[Inspection] = relationship(back_populates="regions")

    __table_args__ = (
        Index("ix_defect_regions_inspection_id", "inspection_id"),
        Index("ix_defect_regions_area", "area"),
    )


class OutboxEvent(Base):
    """An event for the sinks (MQTT, OPC UA, Modbus, webhook), inserted in the same transaction
    as its inspection (migration 3). ``id`` is the delivery order; each sink keeps its own cursor
    (SinkCursor) and rows every sink has passed are deleted."""

    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36))  # stable across redeliveries: receivers de-duplicate on it
    source: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(BigInteger)  # per source, 1, 2, 3, ... (OutboxSequence)
    inspection_id: Mapped[Optional[int]] = mapped_column(Integer)  # no FK: pruning an inspection keeps its event
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    payload: Mapped[str] = mapped_column(Text)  # the event as JSON, exactly as sinks send it

    __table_args__ = (Index("ix_outbox_events_event_id", "event_id", unique=True),)


class OutboxSequence(Base):
    """Per source: the last sequence number handed out and the verdict counts so far, updated in
    the verdict transaction (events carry them, so a PLC's counters survive restarts and replays)."""

    __tablename__ = "outbox_sequences"

    source: Mapped[str] = mapped_column(String(128), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    passed: Mapped[int] = mapped_column(BigInteger)
    failed: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)


class SinkCursor(Base):
    """Per sink: the id of the last outbox event it delivered."""

    __tablename__ = "sink_cursors"

    sink: Mapped[str] = mapped_column(String(128), primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Review(Base):
    """An operator's review of one inspection (migration 4). Appended, never updated: the newest
    review of an inspection is the one that counts (inspector/storage/reviews.py)."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(Integer, ForeignKey("inspections.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # REVIEW_KINDS
    defect_type: Mapped[Optional[str]] = mapped_column(String(64))
    note: Mapped[Optional[str]] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_reviews_inspection_id", "inspection_id"),
        Index("ix_reviews_created_at", "created_at"),
    )


class YieldHour(Base):
    """Verdict counts per source and UTC hour (migration 5), kept by the writer in each verdict's
    transaction (inspector/storage/rollup.py): the yield page reads whole hours from here instead
    of counting rows. Retention pruning keeps these rows (yield history outlives the frames)."""

    __tablename__ = "yield_hours"

    hour: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)  # start of the UTC hour
    source: Mapped[str] = mapped_column(String(128), primary_key=True)
    verdict: Mapped[str] = mapped_column(String(8), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class SchemaMigration(Base):
    """One row per applied migration (see migrations.MIGRATIONS)."""

    __tablename__ = "schema_migrations"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(128))
    applied_at: Mapped[datetime] = mapped_column(UtcDateTime)
