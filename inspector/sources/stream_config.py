"""Config of a video stream source (RTSP/HTTP camera, USB camera, video file).

Kept apart from stream.py so that validating a config never imports OpenCV.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StreamSampling(_Strict):
    """Which of the frames read become inspections. At most one key may be set; none set
    (or the YAML string ``every_frame``) takes every frame.

    - ``every_nth: N``     the 1st, (N+1)th, (2N+1)th ... frame read
    - ``max_fps: F``       at most F frames per second (wall clock), the first one at once
    - ``trigger_file: P``  one frame each time file P appears (the next frame read after it
      appears); the source then deletes P. For a PLC or light barrier that can touch a file.
    """

    every_nth: Optional[int] = Field(None, ge=1, le=100_000)
    max_fps: Optional[float] = Field(None, gt=0.0, le=1000.0)
    trigger_file: Optional[Path] = None

    @model_validator(mode="before")
    @classmethod
    def _accept_every_frame_string(cls, value):
        if value == "every_frame" or value is None:
            return {}
        if isinstance(value, str):
            raise ValueError(f"{value!r} is not allowed; expected 'every_frame' or a mapping with one of "
                             "every_nth, max_fps, trigger_file")
        return value

    @model_validator(mode="after")
    def _at_most_one(self):
        given = [k for k in ("every_nth", "max_fps", "trigger_file") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"set only one sampling rule; got {given}")
        return self

    @property
    def mode(self) -> str:
        """"every_frame", "every_nth", "max_fps" or "trigger_file"."""
        for k in ("every_nth", "max_fps", "trigger_file"):
            if getattr(self, k) is not None:
                return k
        return "every_frame"


class StreamSourceConfig(_Strict):
    """A stream read with OpenCV on the source's own threads.

    ``url``: ``rtsp://...``, ``http(s)://...`` (MJPEG, MPEG-TS, HLS ...), a video file path, a
    V4L2 device path (``/dev/video0``) or a USB camera index (int). Credentials in the URL are
    masked in logs and stats.
    """

    type: Literal["stream"] = "stream"
    name: str = "stream"
    url: Union[int, str]
    sampling: StreamSampling = StreamSampling()
    # A lost stream (read error) or a silent one (no frame for stall_seconds) is released and
    # reopened, waiting reconnect_min_s, then doubling up to reconnect_max_s between attempts.
    stall_seconds: float = Field(10.0, gt=0.0, le=600.0)
    reconnect_min_s: float = Field(0.5, gt=0.0, le=600.0)
    reconnect_max_s: float = Field(30.0, gt=0.0, le=3600.0)
    # Video files only: start again at the end (else the source finishes, logged once).
    loop: bool = False
    # Video files only: deliver frames at the file's own frame rate, as a camera would
    # (false: as fast as decoding allows; the 1-frame buffer then drops what the pipeline
    # cannot take).
    realtime: bool = True
    # RTSP only: TCP survives lossy networks and firewalls; UDP has lower latency.
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    roi: Optional[tuple[int, int, int, int]] = None  # x, y, w, h in original pixels (preprocessor)

    @field_validator("url")
    @classmethod
    def _url_not_empty(cls, v):
        if isinstance(v, bool):
            raise ValueError("expected a URL, a file path or a camera index")
        if isinstance(v, int) and v < 0:
            raise ValueError(f"{v}: a camera index must be >= 0")
        if isinstance(v, str) and not v.strip():
            raise ValueError("the URL must not be empty")
        return v

    @model_validator(mode="after")
    def _backoff_order(self):
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(f"reconnect_max_s ({self.reconnect_max_s}) must be >= reconnect_min_s "
                             f"({self.reconnect_min_s})")
        return self
