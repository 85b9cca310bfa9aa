"""Files we write are created with the mode the umask allows (0644 under umask 022), as any
other program's: an operator or a web server must be able to open the heatmap path that
`inspector show` prints. (tempfile.mkstemp alone makes them 0600.)"""
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from engines.atomicfile import atomic_write_bytes
from tests.conftest import write_png


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    old = os.umask(0o022)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_write_follows_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    p = atomic_write_bytes(tmp_path / "sub" / "f.json", b"{}")
    assert mode(p) == expected
    assert p.read_bytes() == b"{}"
    assert os.listdir(tmp_path / "sub") == ["f.json"]  # no temporary left behind


def test_heatmap_png_is_readable_by_others_under_umask_022(tmp_path, umask):
    from inspector.heatmap import write_png_atomic

    umask(0o022)
    p = write_png_atomic(tmp_path / "h.png", np.zeros((8, 8, 3), np.uint8))
    assert mode(p) == 0o644


def test_exported_files_follow_the_umask_not_the_source_mode(tmp_path, umask, monkeypatch):
    """An export is a new copy for someone else: a heatmap kept 0600 (written before this fix)
    is exported 0644 under umask 022."""
    from inspector.commands import export

    umask(0o022)
    src = write_png(tmp_path / "heat.png", np.zeros((8, 8, 3), np.uint8))
    os.chmod(src, 0o600)
    old = os.stat(src).st_mtime_ns - 10**9
    os.utime(src, ns=(old, old))
    dst = tmp_path / "out" / "1-heat.png"
    dst.parent.mkdir()
    export.copy_for_export(src, dst)
    assert mode(dst) == 0o644
    assert dst.read_bytes() == src.read_bytes()
    assert os.stat(dst).st_mtime_ns == old  # the file's own time is kept


def test_onnx_export_follows_the_umask(tmp_path, umask):
    torch = pytest.importorskip("torch")
    from engines.backbones.export import export_onnx

    umask(0o022)
    p = export_onnx(torch.nn.Conv2d(3, 2, 1), tmp_path / "net.onnx", (3, 8, 8), output_names=("features",))
    assert mode(p) == 0o644
