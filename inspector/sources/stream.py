"""A video stream source: RTSP/HTTP cameras, USB/V4L2 cameras and video files via OpenCV.

Two threads per source, so that a slow or dead stream never holds up anything else:

- the **reader** owns the ``cv2.VideoCapture``: it opens, reads continuously (a live stream
  must be drained or its frames go stale), applies the sampling rule and puts the sampled
  frame in a one-slot buffer. A newer frame replaces a waiting one, and that counts as a drop:
  on a line the latest picture matters, an old one is worthless.
- the **sender** hands the buffered frame to ``emit``; when the pipeline is full (``emit``
  returns False) it retries shortly, with whatever frame is newest by then. It also watches the
  reader: one stuck in a blocking open/read longer than FFmpeg's own timeouts allow is
  abandoned and a fresh reader (with a fresh capture) takes over.

A lost stream (read error) or a silent one (no frame for ``stall_seconds``) is released and
reopened with exponential backoff between ``reconnect_min_s`` and ``reconnect_max_s``.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Callable, Optional, Union

import cv2
import numpy as np

from inspector.sources.stream_config import StreamSourceConfig
from inspector.types import Frame

log = logging.getLogger(__name__)

Emit = Callable[[Frame], bool]

# OPENCV_FFMPEG_CAPTURE_OPTIONS is process-global and read when a capture opens.
_FFMPEG_ENV_LOCK = threading.Lock()
_SEND_RETRY_S = 0.01  # pipeline full: retry this often (a newer frame wakes the sender sooner)


def redact_url(url: Union[int, str]) -> str:
    """The URL with any ``user:password@`` replaced by ``***@`` (for logs and stats)."""
    return re.sub(r"//[^/@\s]*@", "//***@", str(url))


def is_video_file(url: Union[int, str]) -> bool:
    if isinstance(url, int):
        return False
    if url.startswith("file://"):
        return True
    return "://" not in url and not url.startswith("/dev/")


class StreamSource:
    """Implements the ``inspector.sources.base.Source`` protocol for OpenCV-readable streams.

    Frames carry a BGR uint8 HxWx3 image (grey HxW if the device delivers grey), a UTC
    ``captured_at`` taken when the frame was read, no origin path and no key (a stream
    frame is not a file and is never moved or de-duplicated).
    """

    def __init__(self, config: StreamSourceConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.name = config.name
        self._clock = clock
        self._url_text = redact_url(config.url)
        self._is_file = is_video_file(config.url)
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._pending: Optional[Frame] = None
        self._emit: Optional[Emit] = None
        self._reader: Optional[threading.Thread] = None
        self._sender: Optional[threading.Thread] = None
        # the reader generation allowed to deliver; a stuck reader is abandoned by bumping it
        self._generation = 0
        self._reader_done = False
        self._last_progress = clock()  # last time the reader returned from open/read
        self._in_blocking_call = False
        # counters (guarded by _cond)
        self._frames_read = 0
        self._frames_sampled = 0
        self._frames_emitted = 0
        self._drops = 0
        self._reconnects = 0
        self._stalls = 0
        self._state = "idle"
        self._last_error = ""
        self._last_frame_at: Optional[float] = None
        # sampling state (reader thread only)
        self._next_due: Optional[float] = None
        self._trigger_armed = False
        self._trigger_ignored: Optional[tuple[int, int]] = None

    # ------------------------------------------------------------------ Source protocol
    def start(self, emit: Emit) -> None:
        if self._sender is not None:
            raise RuntimeError(f"stream source {self.name!r} already started")
        self._emit = emit
        self._stop.clear()
        self._set_state("connecting")
        self._start_reader()
        self._sender = threading.Thread(target=self._send_loop, name=f"stream-send-{self.name}", daemon=True)
        self._sender.start()
        log.info("stream source %r: reading %s (sampling: %s)", self.name, self._url_text, self._sampling_text())

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        deadline = time.monotonic() + 5.0
        for t in (self._sender, self._reader):
            if t is not None:
                t.join(timeout=max(0.1, deadline - time.monotonic()))
                if t.is_alive():
                    # only possible inside a blocking OpenCV call; the thread is a daemon and
                    # releases its capture when the call returns
                    log.warning("stream source %r: thread %s still in a blocking call; abandoned", self.name, t.name)
        self._sender = None
        self._reader = None
        self._set_state("stopped")

    def stats(self) -> dict[str, Union[int, float, str]]:
        with self._cond:
            age = -1.0 if self._last_frame_at is None else round(self._clock() - self._last_frame_at, 3)
            return {
                "type": "stream",
                "url": self._url_text,
                "state": self._state,
                "frames_read": self._frames_read,
                "frames_sampled": self._frames_sampled,
                "frames_emitted": self._frames_emitted,
                "drops": self._drops,
                "reconnects": self._reconnects,
                "stalls": self._stalls,
                "last_frame_age_s": age,
                "last_error": self._last_error,
            }

    @property
    def finished(self) -> bool:
        """True once a video file (without ``loop``) has been read to the end and delivered."""
        with self._cond:
            return self._state == "finished" and self._pending is None

    # ------------------------------------------------------------------ reader
    def _start_reader(self) -> None:
        with self._cond:
            self._spawn_reader_locked()

    def _spawn_reader_locked(self) -> None:
        """Start a fresh reader thread (a new generation: an abandoned one stops emitting).
        Called with _cond held."""
        self._generation += 1
        gen = self._generation
        self._reader_done = False
        self._last_progress = self._clock()
        self._reader = threading.Thread(target=self._read_loop, args=(gen,), name=f"stream-read-{self.name}-{gen}",
                                        daemon=True)
        self._reader.start()

    def _current(self, gen: int) -> bool:
        return not self._stop.is_set() and gen == self._generation

    def _read_loop(self, gen: int) -> None:
        cfg = self.config
        backoff = cfg.reconnect_min_s
        attempt = 0  # failed attempts since the last frame
        try:
            while self._current(gen):
                if attempt > 0:
                    if attempt == 1:
                        backoff = cfg.reconnect_min_s
                    self._set_state("reconnecting")
                    if self._stop.wait(backoff) or not self._current(gen):
                        break
                    backoff = min(backoff * 2, cfg.reconnect_max_s)
                    with self._cond:
                        self._reconnects += 1
                cap = self._blocking(gen, self._open)
                if not self._current(gen):
                    if cap is not None:
                        cap.release()
                    break
                if cap is None:
                    self._note_failure(attempt, f"cannot open {self._url_text}")
                    attempt += 1
                    continue
                try:
                    outcome, n = self._read_frames(cap, gen)
                finally:
                    cap.release()
                if outcome == "stopped":
                    break
                if outcome == "eof" and n > 0:
                    if cfg.loop:
                        log.debug("stream source %r: end of file, looping", self.name)
                        attempt = 0
                        continue
                    log.info("stream source %r: end of video file %s after %d frames read; source finished "
                             "(set loop: true to repeat it)", self.name, self._url_text, self._frames_read)
                    self._set_state("finished")
                    return
                if n > 0:
                    attempt = 0  # it was working: start the backoff again from the minimum
                if outcome == "stalled":
                    with self._cond:
                        self._stalls += 1
                message = {
                    "stalled": f"no frame for {cfg.stall_seconds:g} s (stalled)",
                    "lost": "stream lost (read failed)",
                    "eof": "video file has no readable frames",
                }[outcome]
                self._note_failure(attempt, message)
                attempt += 1
        finally:
            with self._cond:
                if gen == self._generation:
                    self._reader_done = True
                    self._cond.notify_all()

    def _note_failure(self, attempt: int, message: str) -> None:
        with self._cond:
            self._last_error = message
        nxt = min(self.config.reconnect_min_s * 2 ** attempt, self.config.reconnect_max_s)
        # first failure loud, repeats quiet: a dead camera must not flood the journal
        log.log(logging.WARNING if attempt == 0 else logging.DEBUG,
                "stream source %r: %s; reconnecting in %.1f s (attempt %d)", self.name, message, nxt, attempt + 1)

    def _blocking(self, gen: int, call: Callable):
        """Run an OpenCV call that may block, recording progress for the stall monitor."""
        with self._cond:
            self._in_blocking_call = True
        try:
            return call()
        finally:
            with self._cond:
                if gen == self._generation:
                    self._in_blocking_call = False
                    self._last_progress = self._clock()

    def _open(self) -> Optional["cv2.VideoCapture"]:
        url = self.config.url
        timeout_ms = int(self.config.stall_seconds * 1000)
        if isinstance(url, int):
            # USB camera index: FFmpeg cannot open indexes; OpenCV picks V4L2 on Linux.
            cap = cv2.VideoCapture(url, cv2.CAP_ANY)
        elif url.startswith("/dev/"):
            cap = cv2.VideoCapture(url, cv2.CAP_V4L2)
        else:
            path = url[len("file://"):] if url.startswith("file://") else url
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
            if path.startswith(("rtsp://", "rtsps://")):
                with _FFMPEG_ENV_LOCK:
                    before = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
                    opts = before or ""
                    if "rtsp_transport" not in opts:
                        opts = "|".join(filter(None, [opts, f"rtsp_transport;{self.config.rtsp_transport}"]))
                    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = opts
                    try:
                        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, params)
                    finally:
                        if before is None:
                            os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
                        else:
                            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = before
            else:
                cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            return None
        log.debug("stream source %r: opened %s with backend %s", self.name, self._url_text, cap.getBackendName())
        return cap

    def _read_frames(self, cap: "cv2.VideoCapture", gen: int) -> tuple[str, int]:
        """Read until the stream ends/fails or we are stopped: ("eof"|"lost"|"stopped", frames read)."""
        pace = 0.0
        if self._is_file and self.config.realtime:
            fps = cap.get(cv2.CAP_PROP_FPS)
            pace = 1.0 / fps if 0.0 < fps <= 1000.0 else 0.0
        next_read = self._clock()
        n = 0
        while True:
            if pace:
                delay = next_read - self._clock()
                if delay > 0 and self._stop.wait(delay):
                    return "stopped", n
                next_read = max(next_read + pace, self._clock() - 1.0)  # do not burst after a hiccup
            t0 = self._clock()
            ok, image = self._blocking(gen, cap.read)
            if not self._current(gen):
                return "stopped", n
            if not ok or image is None:
                if self._is_file:
                    return "eof", n
                # FFmpeg's read timeout (= stall_seconds) fired: the stream went silent
                return ("stalled" if self._clock() - t0 >= 0.8 * self.config.stall_seconds else "lost"), n
            n += 1
            now = self._clock()
            with self._cond:
                index = self._frames_read
                self._frames_read += 1
                self._last_frame_at = now
                if self._state != "connected":
                    if self._state == "reconnecting":
                        log.info("stream source %r: reconnected to %s", self.name, self._url_text)
                    self._state = "connected"
            if self._sample(index, now):
                self._offer(Frame(id=uuid.uuid4().hex, source=self.name, captured_at=datetime.now(timezone.utc),
                                  image=np.ascontiguousarray(image), origin_path=None, key=None))

    def _sample(self, index: int, now: float) -> bool:
        s = self.config.sampling
        if s.every_nth is not None:
            return index % s.every_nth == 0
        if s.max_fps is not None:
            # a schedule rather than "1/F since the last one", so that jitter in the camera's
            # frame times does not lower the rate; never more than one frame per period
            period = 1.0 / s.max_fps
            if self._next_due is None or now >= self._next_due:
                self._next_due = (self._next_due or now) + period
                if self._next_due <= now:
                    self._next_due = now + period
                return True
            return False
        if s.trigger_file is not None:
            return self._check_trigger(str(s.trigger_file))
        return True

    def _check_trigger(self, path: str) -> bool:
        """Take the first frame read after the trigger file appeared, then delete the file."""
        if self._trigger_armed:
            self._trigger_armed = False
            try:
                os.unlink(path)
                self._trigger_ignored = None
            except FileNotFoundError:
                pass
            except OSError as exc:
                # cannot delete: do not fire again until the file changes
                try:
                    st = os.stat(path)
                    self._trigger_ignored = (st.st_ino, st.st_mtime_ns)
                except OSError:
                    pass
                log.error("stream source %r: cannot delete trigger file %s (%s); it fires again only when "
                          "rewritten", self.name, path, exc.strerror)
            return True
        try:
            st = os.stat(path)
        except OSError:
            self._trigger_ignored = None
            return False
        if self._trigger_ignored != (st.st_ino, st.st_mtime_ns):
            self._trigger_armed = True
        return False

    def _offer(self, frame: Frame) -> None:
        with self._cond:
            self._frames_sampled += 1
            if self._pending is not None:
                self._drops += 1
            self._pending = frame
            self._cond.notify_all()

    # ------------------------------------------------------------------ sender
    def _send_loop(self) -> None:
        assert self._emit is not None
        emit = self._emit
        while True:
            with self._cond:
                while self._pending is None and not self._stop.is_set() and not self._reader_done:
                    self._cond.wait(0.5)
                    self._check_stuck_reader()
                if self._stop.is_set() or (self._pending is None and self._reader_done):
                    return
                frame = self._pending
            try:
                taken = bool(emit(frame))
            except Exception:
                log.exception("stream source %r: emit failed; frame dropped", self.name)
                with self._cond:
                    if self._pending is frame:
                        self._pending = None
                        self._drops += 1
                continue
            with self._cond:
                if taken:
                    self._frames_emitted += 1
                    if self._pending is frame:
                        self._pending = None
                elif self._pending is frame:
                    self._cond.wait(_SEND_RETRY_S)  # a newer frame (notify) or a short pause
                    self._check_stuck_reader()

    def _check_stuck_reader(self) -> None:
        """Called with _cond held. FFmpeg's own open/read timeouts normally fire first; this
        catches backends without them (V4L2, some protocols) blocking past the stall limit."""
        if self._reader_done or not self._in_blocking_call or self._stop.is_set():
            return
        limit = 2.0 * self.config.stall_seconds + 2.0
        if self._clock() - self._last_progress < limit:
            return
        self._stalls += 1
        self._reconnects += 1
        self._last_error = f"no progress for {limit:.0f} s inside OpenCV; capture abandoned"
        log.warning("stream source %r: %s; starting a fresh capture", self.name, self._last_error)
        self._state = "reconnecting"
        self._in_blocking_call = False
        self._spawn_reader_locked()

    # ------------------------------------------------------------------ helpers
    def _set_state(self, state: str) -> None:
        with self._cond:
            self._state = state

    def _sampling_text(self) -> str:
        s = self.config.sampling
        mode = s.mode
        return mode if mode == "every_frame" else f"{mode}={getattr(s, mode)}"
