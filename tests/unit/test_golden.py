"""Reading the golden folder: file order, unreadable files listed, the set's hash, on threads."""
import hashlib
import threading

import cv2
import numpy as np

import calibration.golden as golden_module
from calibration.golden import read_golden
from tests.conftest import write_png


def _folder(tmp_path, part_images):
    parts = {f"g{i:02d}.png": part_images() for i in range(6)}
    parts["g03.png"] = cv2.cvtColor(parts["g03.png"], cv2.COLOR_BGR2GRAY)  # grey is fine
    for name, im in parts.items():
        write_png(tmp_path / name, im)
    (tmp_path / "g02b.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (tmp_path / "notes.txt").write_text("not an image suffix")
    return parts


def test_images_in_file_order_unreadable_listed_and_hashed(tmp_path, part_images):
    parts = _folder(tmp_path, part_images)
    seen = []
    g = read_golden(tmp_path, max_pixels=10**7, progress=seen.append)
    assert g.names == sorted(parts)
    for name, im in zip(g.names, g.images):
        np.testing.assert_array_equal(im, parts[name])
    assert [n for n, _ in g.skipped] == ["g02b.png"] and "g02b.png" in g.skipped[0][1]
    assert sum(seen) == 7  # every image file, read or skipped
    want = hashlib.sha256()
    for name in sorted(parts):
        want.update(name.encode())
        want.update(parts[name].tobytes())
    assert g.sha256 == want.hexdigest()


def test_files_are_decoded_on_more_than_one_thread(tmp_path, part_images, monkeypatch):
    """Decoding is most of the reading time (bottle: 900x900 PNGs); OpenCV decodes without the GIL."""
    _folder(tmp_path, part_images)
    both_reading = threading.Barrier(2, timeout=10)  # broken (an error) unless two reads overlap
    real = golden_module.read_image_file
    threads = set()

    def read_image_file(path, **kw):
        first_on_this_thread = threading.get_ident() not in threads
        threads.add(threading.get_ident())
        if first_on_this_thread and len(threads) <= 2:
            both_reading.wait()  # the first read of each of two threads waits for the other
        return real(path, **kw)

    monkeypatch.setattr(golden_module, "read_image_file", read_image_file)
    g = read_golden(tmp_path, max_pixels=10**7)
    assert len(g.names) == 6 and len(threads) >= 2
