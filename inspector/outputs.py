"""Where a frame file and its heatmap go once the verdict is known.

Names are made safe (no path separators, control characters or newlines survive) and unique
(a short hash of the frame key is added on collision), so a hostile or odd inbox file name
can never write outside the output folders.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import unicodedata
from pathlib import Path
from typing import Optional

from inspector.settings import OutputConfig
from inspector.types import Verdict, VerdictKind


def _keep(c: str) -> bool:
    # letters, combining marks and digits of any script, and a few plain punctuation marks;
    # never separators, controls, or invisible/direction-changing format characters (Cf)
    return c in "._+-" or unicodedata.category(c)[0] in "LMN"


def _clean(part: str) -> str:
    return re.sub("_+", "_", "".join(c if _keep(c) else "_" for c in part)).strip("._")


def safe_name(name: str, max_len: int = 120) -> str:
    """A file name safe to create anywhere, still recognisable: letters of any script (NFC) and
    digits are kept, anything else becomes '_'; the extension is always kept; at most
    ``max_len`` bytes of UTF-8, cut from the front so a camera's counter survives."""
    base = unicodedata.normalize("NFC", os.path.basename(name))
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    stem, ext = _clean(stem), _clean(ext)[:16]  # an "extension" longer than that is not one
    suffix = f".{ext}" if ext else ""
    room = max_len - len(suffix.encode("utf-8"))
    while len(stem.encode("utf-8")) > room:
        stem = stem[1:]
    return (stem.lstrip("._") or "frame") + suffix


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:10]


class OutputLayout:
    def __init__(self, config: OutputConfig):
        self.config = config

    def frame_destination(self, verdict: Verdict) -> Optional[Path]:
        """Folder-mode frames: done/[pass|fail]/DATE/name or quarantine/DATE/name; None for stream frames."""
        f = verdict.frame
        if f.origin_path is None or self.config.keep_in_inbox and verdict.kind is not VerdictKind.ERROR:
            return None
        day = verdict.frame.captured_at.strftime("%Y-%m-%d")
        if verdict.kind is VerdictKind.ERROR:
            folder = Path(self.config.quarantine_dir) / day
        elif self.config.layout == "per_verdict":
            folder = Path(self.config.done_dir) / verdict.kind.value / day
        else:
            folder = Path(self.config.done_dir) / day
        name = safe_name(f.origin_path)
        dest = folder / name
        # lexists: a quarantined dangling symlink must not be replaced; the same inode there is
        # this very frame, linked before a crash and not yet unlinked from the inbox
        if os.path.lexists(dest) and not _same_file(f.origin_path, dest):
            stem, dot, ext = name.rpartition(".")
            dest = folder / (f"{stem}-{short_hash(f.key or f.id)}.{ext}" if dot else f"{name}-{short_hash(f.key or f.id)}")
        return dest

    def heatmap_path(self, verdict: Verdict) -> Path:
        f = verdict.frame
        day = f.captured_at.strftime("%Y-%m-%d")
        stem = safe_name(os.path.splitext(os.path.basename(f.origin_path))[0] if f.origin_path else f.id)
        return Path(self.config.heatmap_dir) / day / f"{safe_name(f.source)}-{stem}-{short_hash(f.key or f.id)}.png"

    def wants_heatmap(self, verdict: Verdict) -> bool:
        if verdict.pixel_map is None or verdict.frame.image is None:
            return False
        return verdict.kind is VerdictKind.FAIL or (verdict.kind is VerdictKind.PASS and self.config.heatmaps_for_passes)


def move_file(src: str, dest: Path) -> Path:
    """Move a frame out of the inbox. Never follows a symlink.

    Same filesystem: hard link into place, then unlink the inbox entry. Unlike a rename this
    gives the inbox watcher a plain delete event: watchdog holds every event queued behind an
    unmatched rename-out for 0.5 s, which would delay picking up the next frame. If we crash
    between link and unlink, the restart finds the same inode already at ``dest`` and only
    unlinks. Filesystems without hard links: rename. Across filesystems: copy to a ``.part`` file +
    fsync + rename + unlink; a failed copy (disk full) removes its ``.part`` and raises, the caller retries.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest, follow_symlinks=False)
    except FileExistsError:
        if not _same_file(src, dest):
            raise
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            tmp = dest.with_name(f".{dest.name}.part")
            try:
                shutil.copyfile(src, tmp, follow_symlinks=False)
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, dest)
            except BaseException:
                # a full disk must not keep a partial copy per frame (more space gone, and litter)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        elif exc.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            os.replace(src, dest)
            return dest
        else:
            raise
    os.unlink(src)
    return dest


def _same_file(a: str, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except FileNotFoundError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
