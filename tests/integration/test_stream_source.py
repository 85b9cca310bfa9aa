"""StreamSource on a real video file and on a real HTTP MJPEG stream served by ffmpeg on
127.0.0.1 (killed, paused and restarted under the source). CI needs: apt-get install ffmpeg.
"""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.sources.stream import StreamSource, redact_url
from inspector.sources.stream_config import StreamSourceConfig
from inspector.types import Frame

FFMPEG_IN_OPENCV = "FFMPEG:                      YES" in cv2.getBuildInformation()
needs_opencv_ffmpeg = pytest.mark.skipif(not FFMPEG_IN_OPENCV, reason="this OpenCV build has no FFmpeg backend")
needs_ffmpeg_cli = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                      reason="ffmpeg not installed (apt-get install ffmpeg) to serve a test stream")


class Collector:
    """An emit() whose pipeline accepts a frame only when ``accept`` says so."""

    def __init__(self, accept=None):
        self.frames: list[Frame] = []
        self.calls = 0
        self.accept = accept or (lambda n: True)
        self.lock = threading.Lock()

    def __call__(self, frame: Frame) -> bool:
        with self.lock:
            self.calls += 1
            if not self.accept(self.calls):
                return False
            self.frames.append(frame)
            return True

    def count(self) -> int:
        with self.lock:
            return len(self.frames)


def wait_for(predicate, timeout: float, what: str, source: StreamSource | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                         + (f"; stats={source.stats()}" if source else ""))


def write_video(path: Path, n: int, fps: float = 30.0, size=(64, 48)) -> Path:
    """Frame i (< 64) is a flat grey of value 4*i (recoverable through MJPEG)."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert w.isOpened(), "cv2.VideoWriter cannot write MJPG .avi"
    for i in range(n):
        w.write(np.full((size[1], size[0], 3), 4 * i, np.uint8))
    w.release()
    return path


def index_of(frame: Frame) -> int:
    return int(round(float(frame.image.mean()) / 4))


def run_file(cfg: StreamSourceConfig, emit, timeout=10.0) -> StreamSource:
    src = StreamSource(cfg)
    src.start(emit)
    try:
        wait_for(lambda: src.finished, timeout, "the file to finish", src)
    finally:
        src.stop()
    return src


# ------------------------------------------------------------------ video files
@needs_opencv_ffmpeg
def test_file_every_frame_arrives_in_order(tmp_path):
    video = write_video(tmp_path / "clip.avi", 30)
    got = Collector()
    src = run_file(StreamSourceConfig(name="cam", url=str(video)), got)
    s = src.stats()
    assert s["frames_read"] == 30 and s["frames_emitted"] == 30 and s["drops"] == 0
    assert s["state"] == "stopped" and s["reconnects"] == 0
    assert [index_of(f) for f in got.frames] == list(range(30))
    f = got.frames[0]
    assert f.source == "cam" and f.image.dtype == np.uint8 and f.image.shape == (48, 64, 3)
    assert f.captured_at.tzinfo is not None and f.origin_path is None and f.key is None and len(f.id) == 32
    assert len({f.id for f in got.frames}) == 30


@needs_opencv_ffmpeg
def test_file_every_nth(tmp_path):
    video = write_video(tmp_path / "clip.avi", 30)
    got = Collector()
    cfg = StreamSourceConfig(name="cam", url=str(video), sampling={"every_nth": 7})
    src = run_file(cfg, got)
    s = src.stats()
    assert s["frames_read"] == 30 and s["frames_sampled"] == 5
    assert [index_of(f) for f in got.frames] == [0, 7, 14, 21, 28]

    # decoding as fast as possible: sampling is the same, the 1-frame buffer may drop some
    got = Collector()
    src = run_file(StreamSourceConfig(name="cam", url=str(video), sampling={"every_nth": 7}, realtime=False), got)
    s = src.stats()
    assert s["frames_sampled"] == 5 and s["frames_emitted"] + s["drops"] == 5
    assert {index_of(f) for f in got.frames} <= {0, 7, 14, 21, 28} and index_of(got.frames[-1]) == 28


@needs_opencv_ffmpeg
def test_file_max_fps_at_real_time(tmp_path):
    video = write_video(tmp_path / "clip.avi", 60, fps=30.0)  # 2 s played at its own rate
    got = Collector()
    t0 = time.monotonic()
    run_file(StreamSourceConfig(name="cam", url=str(video), sampling={"max_fps": 5}), got)
    elapsed = time.monotonic() - t0
    assert 1.8 <= elapsed < 5.0, "realtime playback should take about the clip's duration"
    assert 9 <= got.count() <= 11  # 5 fps over 2 s
    gaps = np.diff([index_of(f) for f in got.frames])
    assert gaps.min() >= 5  # never more than one frame per 1/5 s = 6 frames at 30 fps (+ jitter)


@needs_opencv_ffmpeg
def test_drops_counted_when_pipeline_full(tmp_path):
    video = write_video(tmp_path / "clip.avi", 40)
    # a pipeline with no room at all: every frame but the newest waiting one is dropped
    refuse = Collector(accept=lambda n: False)
    src = StreamSource(StreamSourceConfig(name="cam", url=str(video), realtime=False))
    src.start(refuse)
    wait_for(lambda: src.stats()["state"] == "finished", 10, "end of file", src)
    s = src.stats()
    src.stop()
    assert s["frames_emitted"] == 0 and s["drops"] == 39 and s["frames_sampled"] == 40

    # a slow pipeline (room for one frame every 0.1 s, the camera gives one every 1/30 s):
    # frames are either delivered or counted as dropped, never lost silently
    last = [0.0]

    def room(_n):
        if time.monotonic() - last[0] < 0.1:
            return False
        last[0] = time.monotonic()
        return True

    slow = Collector(accept=room)
    src = run_file(StreamSourceConfig(name="cam", url=str(video)), slow)
    s = src.stats()
    assert s["drops"] > 0 and s["frames_emitted"] > 0
    assert s["frames_emitted"] + s["drops"] == s["frames_sampled"] == 40
    idx = [index_of(f) for f in slow.frames]
    assert idx == sorted(idx) and idx[-1] == 39  # newest kept, order preserved


@needs_opencv_ffmpeg
def test_file_loop(tmp_path):
    video = write_video(tmp_path / "clip.avi", 10)
    got = Collector()
    src = StreamSource(StreamSourceConfig(name="cam", url=str(video), loop=True, realtime=False))
    src.start(got)
    try:
        wait_for(lambda: src.stats()["frames_read"] >= 25, 10, "three passes", src)
    finally:
        src.stop()
    assert src.stats()["reconnects"] == 0


@needs_opencv_ffmpeg
def test_trigger_file(tmp_path):
    video = write_video(tmp_path / "clip.avi", 30, fps=30.0)
    trigger = tmp_path / "take"
    got = Collector()
    src = StreamSource(StreamSourceConfig(name="cam", url=str(video), loop=True,
                                          sampling={"trigger_file": str(trigger)}))
    src.start(got)
    try:
        time.sleep(0.3)
        assert got.count() == 0
        for expected in (1, 2):
            trigger.write_text("")
            wait_for(lambda n=expected: got.count() == n, 3, f"triggered frame {expected}", src)
            wait_for(lambda: not trigger.exists(), 3, "the trigger file to be deleted", src)
        time.sleep(0.3)
        assert got.count() == 2
    finally:
        src.stop()


def test_missing_file_retries_with_backoff(tmp_path):
    src = StreamSource(StreamSourceConfig(name="cam", url=str(tmp_path / "nope.avi"),
                                          reconnect_min_s=0.05, reconnect_max_s=0.2))
    src.start(Collector())
    try:
        wait_for(lambda: src.stats()["reconnects"] >= 3, 5, "reconnect attempts", src)
        assert src.stats()["state"] == "reconnecting"
    finally:
        src.stop()
    assert src.stats()["state"] == "stopped"


def test_redact_url():
    assert redact_url("rtsp://admin:secret@10.0.0.5:554/stream1") == "rtsp://***@10.0.0.5:554/stream1"
    assert redact_url("http://cam/mjpg") == "http://cam/mjpg"
    assert redact_url(0) == "0"


# ------------------------------------------------------------------ a real network stream
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MjpegServer:
    """ffmpeg serving a live test pattern as multipart MJPEG over HTTP (one client at a time)."""

    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/cam.mjpg"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re",
             "-f", "lavfi", "-i", "testsrc=size=160x120:rate=20",
             "-c:v", "mjpeg", "-q:v", "5", "-f", "mpjpeg", "-listen", "1", self.url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def signal(self, sig) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
def mjpeg_server():
    servers: list[MjpegServer] = []

    def make(port: int) -> MjpegServer:
        s = MjpegServer(port)
        servers.append(s)
        s.start()
        return s

    yield make
    for s in servers:
        s.kill()


@needs_opencv_ffmpeg
@needs_ffmpeg_cli
def test_http_stream_survives_server_restart(mjpeg_server):
    port = free_port()
    server = mjpeg_server(port)
    got = Collector()
    cfg = StreamSourceConfig(name="line1", url=f"http://127.0.0.1:{port}/cam.mjpg", stall_seconds=3,
                             reconnect_min_s=0.2, reconnect_max_s=0.8)
    src = StreamSource(cfg)
    src.start(got)
    try:
        wait_for(lambda: got.count() >= 10, 8, "frames from the live stream", src)
        assert src.stats()["state"] == "connected"
        assert got.frames[0].image.shape == (120, 160, 3)

        server.kill()
        wait_for(lambda: src.stats()["state"] == "reconnecting" and src.stats()["reconnects"] >= 2, 5,
                 "reconnecting after the server died", src)
        before = got.count()

        mjpeg_server(port)  # same port, fresh server
        wait_for(lambda: got.count() >= before + 10, 8, "frames after the server came back", src)
        s = src.stats()
        assert s["state"] == "connected" and s["reconnects"] >= 2
    finally:
        src.stop()


@needs_opencv_ffmpeg
@needs_ffmpeg_cli
def test_http_stream_stall_detected(mjpeg_server):
    port = free_port()
    server = mjpeg_server(port)
    got = Collector()
    cfg = StreamSourceConfig(name="line1", url=f"http://127.0.0.1:{port}/cam.mjpg", stall_seconds=1.5,
                             reconnect_min_s=0.2, reconnect_max_s=0.5)
    src = StreamSource(cfg)
    src.start(got)
    try:
        wait_for(lambda: got.count() >= 5, 8, "frames from the live stream", src)
        server.signal(signal.SIGSTOP)  # connection stays open, no more data: a stall
        wait_for(lambda: src.stats()["stalls"] >= 1 and src.stats()["state"] == "reconnecting", 6,
                 "the stall to be detected", src)
        server.kill()
        before = got.count()
        mjpeg_server(port)
        wait_for(lambda: got.count() >= before + 5, 8, "frames after the stall", src)
        assert src.stats()["state"] == "connected"
    finally:
        src.stop()


@needs_opencv_ffmpeg
def test_rtsp_unreachable_reconnects_without_blocking(monkeypatch):
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    port = free_port()  # nothing listens there
    src = StreamSource(StreamSourceConfig(name="rtsp", url=f"rtsp://user:pw@127.0.0.1:{port}/cam", stall_seconds=2,
                                          reconnect_min_s=0.05, reconnect_max_s=0.1))
    t0 = time.monotonic()
    src.start(Collector())
    assert time.monotonic() - t0 < 0.5  # start() never waits for the camera
    try:
        wait_for(lambda: src.stats()["reconnects"] >= 2, 8, "reconnect attempts", src)
        s = src.stats()
        assert s["state"] == "reconnecting" and "pw" not in s["url"] and "pw" not in s["last_error"]
    finally:
        src.stop()
    import os
    assert "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ  # the transport option is not left behind


def test_config_paths_resolve_against_the_config_folder(tmp_path):
    from inspector.settings import settings_from_dict

    s = settings_from_dict({"sources": [
        {"type": "stream", "name": "file", "url": "clips/a.avi", "sampling": {"trigger_file": "trig/take"}},
        {"type": "stream", "name": "rtsp", "url": "rtsp://cam/1"},
        {"type": "stream", "name": "usb", "url": 0},
        {"type": "stream", "name": "v4l", "url": "/dev/video2"},
    ]}, base_dir=tmp_path)
    urls = {src.name: src.url for src in s.sources}
    assert urls == {"file": str(tmp_path / "clips/a.avi"), "rtsp": "rtsp://cam/1", "usb": 0, "v4l": "/dev/video2"}
    assert s.sources[0].sampling.trigger_file == tmp_path / "trig/take"
    assert s.sources[0].sampling.mode == "trigger_file" and s.sources[1].sampling.mode == "every_frame"
