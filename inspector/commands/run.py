"""The daemon: watch the configured sources, inspect every frame, record every verdict.

Start-up checks (each failure is one line and a non-zero exit, never a traceback): the config
validates, the bundle exists and matches the config's preprocessing, every inbox is a readable
folder, every output folder takes a file, no other daemon watches the same inbox or uses the
same SQLite database (a lock on each), the database opens, its schema is current and it takes a
write, the engine loads and warms up. Then the inbox backlog is queued, READY=1 goes to systemd,
and frames flow until SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

from inspector.errors import ConfigError, DatabaseError

log = logging.getLogger("inspector.run")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="YAML config (see config/inspector.example.yaml)")


def _check_folders(settings) -> None:
    for src in settings.sources:
        if src.type != "folder":
            continue
        inbox = Path(src.inbox)
        if not inbox.is_dir():
            raise ConfigError(f"source {src.name}: inbox {inbox} is not a folder; create it or fix sources[].inbox")
        if not os.access(inbox, os.R_OK | os.W_OK | os.X_OK):
            raise ConfigError(f"source {src.name}: inbox {inbox} is not readable and writable by this user "
                              f"(frames are moved out after recording)")
    out = settings.output
    for d in (out.done_dir, out.quarantine_dir, out.heatmap_dir):
        try:
            Path(d).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"output folder {d}: cannot create ({exc.strerror})") from None
        _check_writable_folder(d)


def _check_writable_folder(folder) -> None:
    """Create and remove a file: os.access would say yes to root on a read-only mount or an
    immutable folder, and a daemon that starts anyway holds every frame in the inbox."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".inspector-write-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"output folder {folder}: not writable by this user ({exc.strerror}); "
                          f"frames and heatmaps are written there: fix its permissions or mount, or the "
                          f"output section") from None


def _lock_instance(settings) -> list:
    """One daemon per inbox and per SQLite database: the locks are held until the process ends."""
    from inspector.instance_lock import lock_database, lock_inbox
    from inspector.storage.database import normalise_url, sqlite_path

    locks = [lock_inbox(Path(src.inbox)) for src in settings.sources if src.type == "folder"]
    db_file = sqlite_path(normalise_url(settings.database.url))
    if db_file is not None and db_file.parent.is_dir():  # a missing folder: the database open says so
        locks.append(lock_database(db_file))
    return locks


def _check_database_writable(store) -> None:
    """A database that reads but cannot take a write would let the daemon say READY and then keep
    every frame in the inbox: refuse it now, with one line."""
    from inspector.errors import DatabaseError
    from inspector.storage import StorageUnavailable
    from inspector.storage.database import display_url

    try:
        store.check_writable()
    except StorageUnavailable:
        raise
    except DatabaseError as exc:
        orig = getattr(exc.__cause__, "orig", None) or exc.__cause__ or exc
        raise DatabaseError(f"database {display_url(store.url)} is read-only to this user ({orig}); the daemon "
                            f"records every verdict there: make the file and its folder writable, or point "
                            f"database.url elsewhere") from None


def build_sources(settings):
    sources = []
    for cfg in settings.sources:
        if cfg.type == "folder":
            from inspector.sources.folder import FolderSource

            from inspector.statusfile import status_file_path

            # the state folder keeps the "decoding now" marker that makes a killer file a poison pill
            sources.append(FolderSource(cfg, max_pixels=settings.preprocess.max_pixels,
                                        state_dir=status_file_path(settings).parent))
        else:
            from inspector.sources.stream import StreamSource

            sources.append(StreamSource(cfg))
    return sources


def _start_console(settings, status_path):
    """The operator's console on a thread, when console.listen is set (after the schema is in place)."""
    if not settings.console.listen:
        return None
    from inspector.console.app import create_app
    from inspector.console.server import ConsoleThread, build_console

    console = ConsoleThread(create_app(build_console(settings.database.url, settings.console, settings=settings,
                                                     status_path=status_path), settings.console.listen),
                            settings.console.listen)
    console.start()
    log.info("console on http://%s/", settings.console.listen)
    return console


def run(args: argparse.Namespace) -> int:
    from inspector.pixel_limit import cap_opencv_pixels
    from inspector.settings import load_settings

    settings = load_settings(args.config)
    # first, before anything loads cv2: OpenCV reads its decompression-bomb limit once, at load
    if not cap_opencv_pixels(settings.preprocess.max_pixels):
        log.warning("OpenCV was loaded before its pixel limit could be set; images whose size is not read "
                    "from their header (PNM, JPEG 2000, ...) will be refused")

    from inspector.bundle import load_bundle
    from inspector.statusfile import status_file_path
    from inspector.heatmap import remove_partial_writes
    from inspector.maththreads import limit_blas_threads
    from inspector.metrics import Metrics, MetricsServer
    from inspector.outputs import OutputLayout
    from inspector.runtime import build_pipeline, check_preprocess_matches
    from inspector.service import InspectionService
    from inspector.storage import ResultStore, StorageUnavailable
    from inspector.storage.database import display_url
    from inspector.systemd import SystemdNotifier

    logging.getLogger().setLevel(settings.logging.level)
    if not settings.sources:
        raise ConfigError(f"config {args.config}: no sources; add at least one under `sources:`")
    if settings.bundle is None:
        raise ConfigError(f"config {args.config}: `bundle:` is not set; point it at a folder made by "
                          f"`inspector calibrate`")
    _check_folders(settings)
    # before anything is touched: a second daemon must not, e.g., remove the first one's partial heatmaps
    locks = _lock_instance(settings)  # noqa: F841 - held while this process lives
    stale = remove_partial_writes(settings.output.heatmap_dir)
    if stale:
        log.info("removed %d partly written heatmap file(s) left by an earlier crash", stale)
    bundle = load_bundle(settings.bundle)
    check_preprocess_matches(bundle, settings)
    store = ResultStore(settings.database.url, busy_timeout_s=settings.database.busy_timeout_s)
    try:
        store.ensure_schema()
        store.register_bundle(bundle.id, str(bundle.path), bundle.manifest.as_dict())
        _check_database_writable(store)
    except StorageUnavailable as exc:
        # "will retry" is true for a frame, not at start-up: say what to fix and exit
        orig = getattr(exc.__cause__, "orig", None) or exc.__cause__ or exc
        fix = ("another process holds its write lock (a second daemon on the same database?)" if "locked" in
               str(orig) else "check database.url and that its folder is writable by this user")
        raise DatabaseError(f"database {display_url(store.url)}: cannot write to it at start-up ({orig}); "
                            f"{fix}") from None
    metrics = Metrics()
    sinks = None
    if settings.sinks:
        from inspector.sinks.manager import SinkContext, SinkManager

        # a missing package or unreadable secret refuses the start here; a receiver that is down does not
        sinks = SinkManager(settings.sinks, store, SinkContext([s.name for s in settings.sources], bundle.id,
                                                               stats=lambda: service.status()), metrics=metrics)
    notifier = SystemdNotifier()
    notifier.status("loading engine")
    roi = {s.name: tuple(s.roi) for s in settings.sources if getattr(s, "roi", None)}
    limit_blas_threads(settings.runtime.blas_threads)
    pipeline = build_pipeline(bundle, settings.engine, roi, maps_for_passes=settings.output.heatmaps_for_passes)
    pipeline.engine.warmup()
    metrics.set_engine_info(pipeline.engine.kind, pipeline.engine.precision)
    server = None
    if settings.metrics.listen:
        listen = settings.metrics.listen
        if settings.metrics.interface:
            from inspector.metrics import parse_listen
            from inspector.sinks.base import SinkError
            from inspector.sinks.listen import interface_address

            try:
                listen = f"{interface_address(settings.metrics.interface)}:{parse_listen(listen)[1]}"
            except SinkError as exc:
                raise ConfigError(f"metrics: {exc}") from None
        server = MetricsServer(metrics, listen)
        server.start()
        log.info("metrics on http://%s/metrics", listen)
    console = _start_console(settings, status_file_path(settings))
    sources = build_sources(settings)
    periodic = []
    retention = settings.retention
    if retention.has_limits:
        from inspector.retention import prune

        periodic.append((retention.interval_minutes * 60.0, lambda: log.info("retention: %s",
                         prune(store, retention, dry_run=False).summary())))
    service = InspectionService(
        pipeline, store, sources, OutputLayout(settings.output), max_batch=settings.engine.max_batch,
        batch_wait_ms=settings.runtime.batch_wait_ms, queue_size=settings.runtime.queue_size,
        status_path=status_file_path(settings), notifier=notifier, metrics=metrics, periodic=periodic,
        stall_seconds=settings.runtime.stall_seconds, sinks=sinks,
    )
    for s in sources:
        if hasattr(s, "stats"):
            metrics.add_collector(lambda s=s: metrics.update_stream_stats(s.name, s.stats()))
    service.install_signal_handlers()
    try:
        if sinks is not None:
            sinks.start()  # returns at once; each sink connects on its own thread
        return service.run()
    finally:
        if sinks is not None:
            sinks.stop()  # after the drain: what the last verdicts produced gets a few seconds to go out
        if server is not None:
            server.stop()
        if console is not None:
            console.stop()
        pipeline.engine.close()
        store.close()
