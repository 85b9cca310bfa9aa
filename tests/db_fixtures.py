"""Database fixtures for the storage/history tests: a fresh SQLite file or a fresh database on a
real PostgreSQL server that the tests start themselves (initdb + pg_ctl on a free loopback port
in a temp dir, as a non-root user), plus helpers to build Verdicts.

Registered once in tests/conftest.py (``pytest_plugins = ["tests.db_fixtures"]``), so every test
module gets the fixtures; modules import only the helpers they call.

The PostgreSQL parameter is skipped only when the server binaries are missing.
"""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pytest

from inspector.types import Frame, Region, Verdict, VerdictKind

T0 = datetime(2024, 5, 1, 6, 0, 0, tzinfo=timezone.utc)


def _pg_bindir() -> Optional[Path]:
    env = os.environ.get("INSPECTOR_PG_BINDIR")
    if env and (Path(env) / "initdb").exists():
        return Path(env)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
                   if p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    return Path(which).parent if which else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A throwaway PostgreSQL cluster. As root, runs the server as the ``postgres`` user
    (initdb refuses root)."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.tmp = Path(tempfile.mkdtemp(prefix="inspector-pg-"))
        self.data = self.tmp / "data"
        self.port = _free_port()
        self.user = "inspector"
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no 'postgres' user to run the test server")
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self._counter = itertools.count()

    def _run(self, *cmd: str) -> None:
        subprocess.run(self.prefix + list(cmd), check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust",
                  "--no-sync", "-E", "UTF8", "--locale=C")
        opts = f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off " \
               "-c synchronous_commit=off -c full_page_writes=off"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.tmp / "log"),
                  "-o", opts, "-w", "-t", "30", "start")

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except Exception:
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def admin_url(self) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/postgres"

    def new_database(self) -> str:
        import psycopg

        name = f"t{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: "
                    "apt-get install -y postgresql")
    pytest.importorskip("psycopg", reason="psycopg 3 missing: pip install 'inspector[postgres]'")
    server = PostgresServer(bindir)
    try:
        server.start()
    except subprocess.CalledProcessError as exc:
        server.stop()
        raise RuntimeError(f"could not start the test PostgreSQL: {exc.stderr.decode(errors='replace')}") from exc
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    """A URL of an empty database: a SQLite file in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    server = request.getfixturevalue("postgres_server")
    return server.new_database()


@pytest.fixture
def store(db_url):
    from inspector.storage import ResultStore

    s = ResultStore(db_url)
    s.ensure_schema()
    yield s
    s.close()


def make_verdict(*, kind: str = "pass", score: Optional[float] = 0.1, source: str = "cam1",
                 at: datetime = T0, name: str = "part.png", regions=(), bundle_id: Optional[str] = None,
                 size: Optional[tuple[int, int]] = (64, 48), error: Optional[str] = None,
                 timings: Optional[dict] = None, threshold: Optional[float] = 0.5) -> Verdict:
    """A Verdict as the judge would make it; ``size`` = (w, h) of a real (small) image."""
    image = None if size is None else np.zeros((size[1], size[0], 3), np.uint8)
    frame = Frame(id=f"{source}:{name}", source=source, captured_at=at, image=image,
                  origin_path=f"/inbox/{source}/{name}", key=None)
    regs = tuple(Region(*r) if not isinstance(r, Region) else r for r in regions)
    return Verdict(frame=frame, kind=VerdictKind(kind), score=score, threshold=threshold, regions=regs,
                   bundle_id=bundle_id, timings_ms=dict(timings or {"total": 12.5, "inference": 8.0}),
                   error=error)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def run_command(module, argv: list[str]) -> tuple[int, str]:
    """Run one command module as the CLI would (its own parser), capturing stdout."""
    import argparse
    import contextlib
    import io

    parser = argparse.ArgumentParser(prog=f"inspector {module.__name__.rsplit('.', 1)[-1]}")
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = module.run(args)
    return int(rc or 0), buf.getvalue()


# The standard data set of the history/stats tests: (minutes after T0, source, verdict, score,
# regions, bundle). Hand-computed expectations live next to the tests that use them.
DATASET = (
    (0, "cam1", "pass", 0.10, (), "b1"),
    (10, "cam1", "pass", 0.20, (), "b1"),
    (20, "cam1", "fail", 0.80, ((10, 10, 10, 10, 100, 0.95),), "b1"),
    (70, "cam1", "pass", 0.30, (), "b1"),
    (80, "cam1", "error", None, (), "b1"),
    (90, "cam2", "pass", 0.40, (), "b2"),
    (130, "cam2", "fail", 0.90, ((0, 0, 4, 3, 10, 0.7), (30, 20, 5, 5, 25, 0.8)), "b2"),
    (140, "cam2", "fail", 0.60, (), None),
)


def fill_dataset(store) -> list[int]:
    store.register_bundle("b1", "/bundles/b1", {"scorer": {"type": "memory_bank"}, "thresholds": {"image": 0.5}})
    store.register_bundle("b2", "/bundles/b2", {"scorer": {"type": "memory_bank"}})
    ids = []
    for i, (m, src, kind, score, regions, bundle) in enumerate(DATASET):
        v = make_verdict(kind=kind, score=score, source=src, at=T0 + minutes(m), name=f"p{i}.png",
                         regions=regions, bundle_id=bundle, error="decode failed" if kind == "error" else None)
        ids.append(store.record(v, frame_key=f"key-{i}", heatmap_path=None))
    return ids


def fill_many(store, n: int) -> None:
    """``n`` inspections in one bulk insert, a second apart (more than one page of an export)."""
    from sqlalchemy import insert

    from inspector.storage.models import Inspection

    rows = [{"source": "cam1", "captured_at": T0 + minutes(i / 60), "recorded_at": T0 + minutes(i / 60),
             "verdict": "pass", "score": 0.1, "origin_name": f"m{i}.png", "frame_key": f"m{i}"} for i in range(n)]
    with store.engine.begin() as conn:
        conn.execute(insert(Inspection), rows)


def read_transactions_open(db_url: str) -> int:
    """Whether a reader holds the database: SQLite, 1 when a full WAL checkpoint is blocked (busy);
    PostgreSQL, the other sessions of this database inside a transaction or holding a snapshot."""
    from sqlalchemy import create_engine, text

    if db_url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(db_url[len("sqlite:///"):], timeout=0.5)
        try:
            return int(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
        finally:
            conn.close()
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND (state LIKE 'idle in transaction%' OR backend_xmin IS NOT NULL)")).scalar())
    finally:
        engine.dispose()
