"""The writer: the daemon's only database writer, one thread. For each group of verdicts already
waiting: heatmaps (atomic), then the group's rows in one transaction, then the file moves. A file
leaves the inbox only after its row is committed. ``_committed`` is the one place where verdicts
are known committed (counting, metrics, the log; a hook for anything that must follow a commit).
A database file deleted or replaced under the daemon stops it before anything more is committed."""
from __future__ import annotations

import logging
import os
import queue
import threading
import traceback
from datetime import datetime, timezone
from typing import Optional

from inspector.heatmap import render_overlay, write_png_atomic
from inspector.names import printable_name
from inspector.outputs import OutputLayout, move_file
from inspector.pipeline import InspectionPipeline
from inspector.retry import Incident, RetryPolicy
from inspector.service_health import Heartbeat, Progress, Tally
from inspector.stages import STOP
from inspector.storage import ResultStore
from inspector.types import Frame, Verdict, VerdictKind

log = logging.getLogger("inspector.service")

GROUP_COMMIT_MAX = 16  # verdicts already waiting are committed in one transaction


class VerdictWriter:
    def __init__(self, pipeline: InspectionPipeline, store: ResultStore, layout: OutputLayout,
                 verdicts: "queue.Queue[object]", *, sources: dict, stop_event: threading.Event, heartbeat: Heartbeat,
                 progress: Progress, tally: Tally, db_incident: Incident, metrics):
        self.pipeline, self.store, self.layout, self.verdicts = pipeline, store, layout, verdicts
        self.sources = sources  # name -> source, to hand finished files back
        self.stop_event, self.heartbeat, self.progress, self.tally = stop_event, heartbeat, progress, tally
        self.metrics = metrics
        self.retry = RetryPolicy(stop_event, heartbeat)
        self.db_incident = db_incident
        self.disk_incident = Incident("cannot write output files", progress)
        self.move_incident = Incident("cannot move frames to the output folders", progress)
        self.fatal: Optional[str] = None  # why the daemon must exit non-zero (the database file is gone)

    def run(self) -> None:
        while True:
            item = self.verdicts.get()
            if item is STOP:
                return
            group = [item]
            # group commit: what is already waiting goes into the same transaction
            stop_after = False
            while len(group) < GROUP_COMMIT_MAX:
                try:
                    nxt = self.verdicts.get_nowait()
                except queue.Empty:
                    break
                if nxt is STOP:
                    stop_after = True
                    break
                group.append(nxt)
            try:
                self.write(group)
            except Exception:
                # A bug must not stop the only writer (every later frame would pile up in the
                # queues). The files stay in the inbox and stay "in flight", so they are not
                # retried in a loop; the next start tries them again.
                names = [printable_name(os.path.basename(v.frame.origin_path)) if v.frame.origin_path else v.frame.id
                         for v in group]
                log.exception("%s: cannot record; left in the inbox until the next start", ", ".join(names))
                self.progress.set_error(f"cannot record: {traceback.format_exc(limit=0).strip()}")
            if stop_after:
                return

    def write(self, group: list[Verdict]) -> None:
        """Heatmaps, then one transaction for the group's rows, then the file moves."""
        if self.fatal is None and (why := self.store.replaced_file()):
            # Commits would go on into the unlinked (or replaced) file and be gone at the next
            # start, with their frames already moved out of the inbox: stop before that.
            self.fatal = why
            self.progress.set_error(why)
            log.error("%s; restarting: exiting with status 1 so that systemd starts the daemon again on the "
                      "database now at that path (frames not recorded yet stay in the inbox)", why)
            self.stop_event.set()
        if self.fatal is not None:
            return self._abandon(group, quiet=True)
        dests = [self.layout.frame_destination(v) for v in group]
        fresh = [i for i, v in enumerate(group) if not v.already_recorded]
        items = []
        for i in fresh:
            v = group[i]
            heatmap = self.retry.run(lambda: self._heatmap(v), self.disk_incident)
            if heatmap is False:
                return self._abandon(group)
            items.append((v, v.frame.key, heatmap, str(dests[i]) if dests[i] else None))
        if items:
            if self.retry.run(lambda: self.store.record_many(items), self.db_incident) is False:
                return self._abandon(group)
            self._committed([group[i] for i in fresh])
        for v, dest in zip(group, dests):
            f = v.frame
            stays = dest is None  # output.keep_in_inbox
            if f.origin_path and dest is not None:
                try:
                    # a full disk (or an unwritable folder) is waited out here, logged once, and
                    # the frame moves as soon as it can; only a stop gives up (the next start moves it)
                    if self.retry.run(lambda: move_file(f.origin_path, dest), self.move_incident) is False:
                        stays = True
                except FileNotFoundError:
                    log.warning("%s: vanished from the inbox before it could be moved",
                                os.path.basename(f.origin_path))
                except OSError as exc:
                    stays = True  # the next start retries the move
                    log.error("%s: recorded, but cannot move to %s (%s)", os.path.basename(f.origin_path), dest,
                              exc.strerror)
            self.progress.through()
            self._finished(f, recorded_and_kept=stays)

    def _committed(self, verdicts: list[Verdict]) -> None:
        """These verdicts' rows are committed (their files not moved yet): count and log them."""
        for v in verdicts:
            f = v.frame
            self.heartbeat.beat()
            name = os.path.basename(f.origin_path) if f.origin_path else f.id
            self.tally.add(v, name)
            self.metrics.count_frame(f.source, v.kind.value)
            self.metrics.observe_timings_ms(v.timings_ms)
            if v.kind is VerdictKind.ERROR:
                log.info("%s %r error: %s", f.source, name, v.error)
            else:
                latency_ms = (datetime.now(timezone.utc) - f.captured_at).total_seconds() * 1000.0
                log.info("%s %r %s score=%.4f thr=%.4f regions=%d %.1fms (file to row %.1fms)", f.source, name,
                         v.kind.value, v.score, v.threshold, len(v.regions), v.timings_ms.get("total") or 0.0,
                         latency_ms)

    def _heatmap(self, v: Verdict) -> Optional[str]:
        if not self.layout.wants_heatmap(v):
            return None
        path = self.layout.heatmap_path(v)
        label = f"{v.kind.value.upper()}  {v.score:.3f} / {v.threshold:.3f}"
        img = render_overlay(v.frame.image, v.pixel_map, v.transform, self.pipeline.judge.pixel_threshold or 1.0,
                             v.regions, label)
        write_png_atomic(path, img)
        return str(path)

    def _abandon(self, group: list[Verdict], quiet: bool = False) -> None:
        for v in group:
            if not quiet:
                log.warning("%s: left in the inbox for the next start", v.frame.origin_path or v.frame.id)
            self._finished(v.frame)

    def _finished(self, f: Frame, recorded_and_kept: bool = False) -> None:
        """Hand the file back to its source; a recorded file that stays in the inbox is passed
        with its key, so the source does not take it again while it is the same file."""
        src = self.sources.get(f.source)
        if f.origin_path and hasattr(src, "finished"):
            src.finished(f.origin_path, recorded_key=f.key if recorded_and_kept else None)
