"""Schema migrations: an ordered list of small functions, each recorded in ``schema_migrations``.

Rules: never edit a migration that has shipped; append a new one. Each migration runs in its
own transaction together with the row that records it (PostgreSQL and SQLite both have
transactional DDL), so a crash leaves the database at a whole version. Migration 1 spells out
its tables itself instead of using the models, because the models describe the *latest* schema.

``upgrade(url)`` backs up a SQLite file first (``<db>.bak-<UTC timestamp>``, made with SQLite's
online backup API so a running daemon's WAL is included consistently).
"""
from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from sqlalchemy import (BigInteger, Column, Connection, DateTime, Engine, Float, ForeignKey, Index, Integer, MetaData, String,
                        Table, Text, inspect, text)

from inspector.errors import DatabaseError

log = logging.getLogger(__name__)


def _m001_initial(conn: Connection) -> None:
    md = MetaData()
    Table("model_bundles", md,
          Column("id", String(128), primary_key=True),
          Column("path", Text, nullable=False),
          Column("created_at", DateTime),
          Column("registered_at", DateTime, nullable=False),
          Column("scorer_type", String(64)),
          Column("image_threshold", Float),
          Column("pixel_threshold", Float),
          Column("manifest", Text, nullable=False))
    Table("inspections", md,
          Column("id", Integer, primary_key=True, autoincrement=True),
          Column("frame_key", String(512)),
          Column("source", String(128), nullable=False),
          Column("origin_name", String(512)),
          Column("captured_at", DateTime, nullable=False),
          Column("recorded_at", DateTime, nullable=False),
          Column("verdict", String(8), nullable=False),
          Column("score", Float),
          Column("threshold", Float),
          Column("error_reason", Text),
          Column("decode_ms", Float),
          Column("preprocess_ms", Float),
          Column("inference_ms", Float),
          Column("scoring_ms", Float),
          Column("judge_ms", Float),
          Column("total_ms", Float),
          Column("heatmap_path", Text),
          Column("stored_path", Text),
          Column("bundle_id", String(128), ForeignKey("model_bundles.id")),
          Index("ix_inspections_frame_key", "frame_key", unique=True),
          Index("ix_inspections_captured_at", "captured_at"),
          Index("ix_inspections_verdict", "verdict"),
          Index("ix_inspections_source", "source"),
          Index("ix_inspections_bundle_id", "bundle_id"))
    Table("defect_regions", md,
          Column("id", Integer, primary_key=True, autoincrement=True),
          Column("inspection_id", Integer, ForeignKey("inspections.id", ondelete="CASCADE"), nullable=False),
          Column("x", Integer, nullable=False),
          Column("y", Integer, nullable=False),
          Column("w", Integer, nullable=False),
          Column("h", Integer, nullable=False),
          Column("area", Integer, nullable=False),
          Column("peak_score", Float, nullable=False),
          Index("ix_defect_regions_inspection_id", "inspection_id"))
    md.create_all(conn)


def _m002_frame_size_and_stats_indexes(conn: Connection) -> None:
    """Frame size (to normalise regions for the defect-density heatmap), a region count for
    listings, and composite indexes for the stats/report/prune queries."""
    conn.execute(text("ALTER TABLE inspections ADD COLUMN image_w INTEGER"))
    conn.execute(text("ALTER TABLE inspections ADD COLUMN image_h INTEGER"))
    conn.execute(text("ALTER TABLE inspections ADD COLUMN region_count INTEGER DEFAULT 0 NOT NULL"))
    conn.execute(text("UPDATE inspections SET region_count = (SELECT COUNT(*) FROM defect_regions "
                      "WHERE defect_regions.inspection_id = inspections.id)"))
    conn.execute(text("CREATE INDEX ix_inspections_verdict_captured_at ON inspections (verdict, captured_at)"))
    conn.execute(text("CREATE INDEX ix_inspections_source_captured_at ON inspections (source, captured_at)"))
    conn.execute(text("CREATE INDEX ix_defect_regions_area ON defect_regions (area)"))


def _m003_outbox(conn: Connection) -> None:
    """The sinks' outbox: events written with their verdict, a sequence per source, a cursor per sink."""
    md = MetaData()
    Table("outbox_events", md,
          Column("id", Integer, primary_key=True, autoincrement=True),
          Column("event_id", String(36), nullable=False),
          Column("source", String(128), nullable=False),
          Column("seq", BigInteger, nullable=False),
          Column("inspection_id", Integer),
          Column("created_at", DateTime, nullable=False),
          Column("payload", Text, nullable=False),
          Index("ix_outbox_events_event_id", "event_id", unique=True))
    Table("outbox_sequences", md,
          Column("source", String(128), primary_key=True),
          Column("last_seq", BigInteger, nullable=False),
          Column("passed", BigInteger, nullable=False),
          Column("failed", BigInteger, nullable=False),
          Column("errors", BigInteger, nullable=False))
    Table("sink_cursors", md,
          Column("sink", String(128), primary_key=True),
          Column("last_id", Integer, nullable=False),
          Column("updated_at", DateTime, nullable=False))
    md.create_all(conn)


def _m004_reviews(conn: Connection) -> None:
    """Operators' reviews of inspections (the console): confirmed defect / false reject / missed
    defect, with who and when. Appended, never updated: the newest review of an inspection counts."""
    md = MetaData()
    Table("inspections", md, Column("id", Integer, primary_key=True))  # only for the foreign key
    Table("reviews", md,
          Column("id", Integer, primary_key=True, autoincrement=True),
          Column("inspection_id", Integer, ForeignKey("inspections.id", ondelete="CASCADE"), nullable=False),
          Column("kind", String(16), nullable=False),
          Column("defect_type", String(64)),
          Column("note", Text),
          Column("reviewer", String(128), nullable=False),
          Column("created_at", DateTime, nullable=False),
          Index("ix_reviews_inspection_id", "inspection_id"),
          Index("ix_reviews_created_at", "created_at"))
    md.tables["reviews"].create(conn)


def _m005_yield_hours(conn: Connection) -> None:
    """Verdict counts per (UTC hour, source, verdict), kept by the writer from now on and
    backfilled here from the rows already recorded (one GROUP BY over the table)."""
    md = MetaData()
    Table("yield_hours", md,
          Column("hour", DateTime, primary_key=True),
          Column("source", String(128), primary_key=True),
          Column("verdict", String(8), primary_key=True),
          Column("count", BigInteger, nullable=False))
    md.tables["yield_hours"].create(conn)
    if conn.dialect.name == "sqlite":
        # captured_at is stored as 'YYYY-MM-DD HH:MM:SS.ffffff' text (SQLAlchemy's SQLite DateTime)
        hour = "substr(captured_at, 1, 13) || ':00:00.000000'"
    else:
        hour = "date_trunc('hour', captured_at)"
    conn.execute(text(f"INSERT INTO yield_hours (hour, source, verdict, count) SELECT {hour}, source, verdict, "
                      f"COUNT(*) FROM inspections GROUP BY {hour}, source, verdict"))


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial", _m001_initial),
    Migration(2, "frame_size_and_stats_indexes", _m002_frame_size_and_stats_indexes),
    Migration(3, "outbox", _m003_outbox),
    Migration(4, "reviews", _m004_reviews),
    Migration(5, "yield_hours", _m005_yield_hours),
)
SCHEMA_VERSION = MIGRATIONS[-1].version

_MIGRATIONS_TABLE = Table(
    "schema_migrations", MetaData(),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(128), nullable=False),
    Column("applied_at", DateTime, nullable=False),
)


def current_version(conn: Connection) -> Optional[int]:
    """The database's schema version; 0 for an empty database; None when it has tables but no
    ``schema_migrations`` (not an inspector database)."""
    names = set(inspect(conn).get_table_names())
    if "schema_migrations" not in names:
        return 0 if not (names & {"inspections", "model_bundles", "defect_regions"}) else None
    v = conn.execute(text("SELECT MAX(version) FROM schema_migrations")).scalar()
    return int(v or 0)


def apply_pending(engine: Engine, *, target: int = SCHEMA_VERSION) -> list[Migration]:
    """Apply the migrations above the database's version up to ``target``, in order.
    Returns what was applied. No backup here (see ``upgrade``)."""
    with engine.connect() as conn:
        version = current_version(conn)
    if version is None:
        raise DatabaseError(f"database {_safe_url(engine)} has tables but no schema_migrations table: "
                            "not an inspector database (or a damaged one); point --db at another file")
    if version > SCHEMA_VERSION:
        raise DatabaseError(newer_message(engine, version))
    applied = []
    for m in MIGRATIONS:
        if m.version <= version or m.version > target:
            continue
        with engine.begin() as conn:
            if m.version == 1:
                _MIGRATIONS_TABLE.create(conn, checkfirst=True)
            m.apply(conn)
            conn.execute(_MIGRATIONS_TABLE.insert().values(
                version=m.version, name=m.name, applied_at=datetime.now(timezone.utc).replace(tzinfo=None)))
        log.info("schema migration %d (%s) applied", m.version, m.name)
        applied.append(m)
    return applied


def newer_message(engine: Engine, version: int) -> str:
    return (f"database {_safe_url(engine)} has schema version {version}, newer than this inspector "
            f"({SCHEMA_VERSION}); upgrade inspector, or point --db at a database this version wrote")


def older_message(engine: Engine, version: int) -> str:
    return (f"database {_safe_url(engine)} has schema version {version}, older than this inspector "
            f"({SCHEMA_VERSION}); run `inspector db upgrade --db ...` (it backs up a SQLite file first)")


def _safe_url(engine: Engine) -> str:
    if engine.url.get_backend_name() == "sqlite":
        return str(engine.url.database)
    return engine.url.render_as_string(hide_password=True)


def backup_sqlite(db_path: Path, *, now: Optional[datetime] = None) -> Path:
    """Copy a SQLite database to ``<db>.bak-<YYYYmmddTHHMMSSZ>`` with the online backup API."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    dest = db_path.with_name(f"{db_path.name}.bak-{stamp}")
    n = 1
    while dest.exists():
        dest = db_path.with_name(f"{db_path.name}.bak-{stamp}-{n}")
        n += 1
    src = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    return dest


@dataclass(frozen=True)
class UpgradeReport:
    from_version: int
    to_version: int
    applied: tuple[str, ...]
    backup: Optional[Path]


def upgrade(url: str) -> UpgradeReport:
    """Bring a database to SCHEMA_VERSION; back up a SQLite file first when anything is pending."""
    from inspector.storage.database import make_engine, normalise_url, sqlite_path

    url = normalise_url(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            version = current_version(conn)
        if version is None:
            raise DatabaseError(f"database {_safe_url(engine)} has tables but no schema_migrations table: "
                                "not an inspector database")
        if version > SCHEMA_VERSION:
            raise DatabaseError(newer_message(engine, version))
        backup = None
        path = sqlite_path(url)
        if version < SCHEMA_VERSION and version > 0 and path is not None:
            backup = backup_sqlite(path)
            log.info("backed up %s to %s", path, backup)
        applied = apply_pending(engine)
        return UpgradeReport(version, SCHEMA_VERSION, tuple(f"{m.version}:{m.name}" for m in applied), backup)
    finally:
        engine.dispose()
