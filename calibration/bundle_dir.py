"""Where `calibrate --out BUNDLE` may write, and how a new bundle replaces an old one.

Calibration replaces its output folder, so it must never be handed something else to delete:
the golden folder or a folder holding it is always refused, and a non-empty folder that is not a
bundle (no manifest.json) is refused unless the user says --force. A new bundle is written into a
temporary sibling and swapped in by renames on the same filesystem; the folder it replaces is
kept as ``BUNDLE.previous`` (replacing an older one), so even --force deletes nothing at once.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from inspector.bundle import MANIFEST
from inspector.errors import InspectorError

PREVIOUS_SUFFIX = ".previous"


def previous_path(out: Path) -> Path:
    return out.with_name(out.name + PREVIOUS_SUFFIX)


def is_bundle(folder: Path) -> bool:
    """A folder is a bundle when it holds a manifest.json (valid or not: it is ours to replace)."""
    return (folder / MANIFEST).is_file()


def _holds(folder: Path, inner: Path) -> bool:
    """``folder`` is ``inner`` or one of its parents (symlinks resolved)."""
    f, i = folder.resolve(), inner.resolve()
    return f == i or f in i.parents


def check_out_dir(out: str | Path, golden_dir: str | Path | None, *, force: bool = False) -> None:
    """Refuse (InspectorError, one line) an --out that calibration must not replace."""
    out = Path(out)
    previous = previous_path(out)
    if golden_dir is not None and Path(golden_dir).exists():
        for victim in (out, previous):
            if _holds(victim, Path(golden_dir)):
                what = "is" if victim.resolve() == Path(golden_dir).resolve() else "contains"
                raise InspectorError(f"--out {out}: {victim} {what} the golden folder {golden_dir} and calibration "
                                     f"replaces it; write the bundle to another folder (--force does not apply)")
    if out.exists() and not out.is_dir():
        raise InspectorError(f"--out {out}: is a file, not a folder; give a new or empty folder for the bundle")
    if force:
        return
    if out.is_dir() and not is_bundle(out) and any(out.iterdir()):
        raise InspectorError(f"--out {out}: the folder is not empty and is not a bundle (no {MANIFEST}); calibration "
                             f"would replace it: give a new or empty folder, or pass --force (its files are then "
                             f"kept in {previous} until the next calibration)")
    if previous.is_dir() and not is_bundle(previous) and any(previous.iterdir()):
        raise InspectorError(f"--out {out}: {previous} is not empty and is not a bundle, and calibration keeps the "
                             f"replaced bundle there; move it away, or pass --force to replace it")


def new_temporary_sibling(out: Path) -> Path:
    """An empty hidden folder next to ``out`` (same filesystem, so the swap is a rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


def swap_in(new: Path, out: Path) -> None:
    """Put the finished folder ``new`` at ``out``; the folder that was there becomes
    ``out.previous`` (an older .previous is deleted). If the final rename fails, the old
    bundle is put back."""
    previous = previous_path(out)
    if not (out.exists() or out.is_symlink()):
        os.replace(new, out)
        return
    trash = None
    if previous.exists() or previous.is_symlink():
        trash = Path(tempfile.mkdtemp(prefix=f".{previous.name}.old-", dir=out.parent))
        os.replace(previous, trash / previous.name)
    os.replace(out, previous)
    try:
        os.replace(new, out)
    except OSError:
        os.replace(previous, out)
        if trash is not None:
            os.replace(trash / previous.name, previous)
            shutil.rmtree(trash, ignore_errors=True)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
