"""`inspector calibrate --from-reviews`: reviewed false rejects join the golden set, reviewed
defects the defect examples; the before/after comparison is printed, stored in the bundle and
added to report.html. Old reviews (before --since), superseded ones and frames gone from disk
are left out."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import yaml

from inspector.commands import calibrate as calibrate_cmd
from inspector.storage import ResultStore
from inspector.storage.reviews import record_review
from tests.conftest import TEST_SIZE, write_png
from tests.db_fixtures import make_verdict, run_command


def test_from_reviews_adds_frames_and_reports_before_after(tmp_path, golden_dir):
    from calibration.synthetic import make_part

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"preprocess": {"size": [TEST_SIZE, TEST_SIZE]},
                                   "calibration": {"holdout": 0.25, "min_images": 4},
                                   "scorer": {"coreset": {"ratio": 0.05}},
                                   "database": {"url": f"sqlite:///{tmp_path / 'r.db'}"}}))
    rng = np.random.default_rng(5)
    frames = tmp_path / "done"
    frames.mkdir()
    now = datetime.now(timezone.utc)
    store = ResultStore(f"sqlite:///{tmp_path / 'r.db'}")
    store.ensure_schema()
    ids = {}
    plan = [("fr1", "fail", None, "false_reject"), ("fr2", "fail", None, "false_reject"),
            ("def1", "fail", "scratch", "confirmed_defect"), ("esc1", "pass", "missing_hole", "missed_defect"),
            ("old", "fail", None, "false_reject"), ("changed", "fail", None, "false_reject"),
            ("gone", "fail", None, "false_reject")]
    for name, verdict, defect, _kind in plan:
        path = write_png(frames / f"{name}.png", make_part(rng, size=TEST_SIZE, defect=defect))
        ids[name] = store.record(make_verdict(kind=verdict, score=1.0, name=f"{name}.png"), frame_key=name,
                                 heatmap_path=None, stored_path=str(path))
    for name, _v, _d, kind in plan:
        at = now - timedelta(days=30) if name == "old" else now - timedelta(hours=1)
        record_review(store, ids[name], kind, reviewer="ann", now=at)
    record_review(store, ids["changed"], "confirmed_defect", reviewer="bob", now=now)  # the newest counts
    (frames / "gone.png").unlink()
    store.close()

    out = tmp_path / "bundle"
    rc, text = run_command(calibrate_cmd, ["--golden", str(golden_dir), "--out", str(out), "--config", str(cfg),
                                           "--from-reviews", "--since", "7d", "--quiet"])
    assert rc == 0
    n_golden = len(list(golden_dir.glob("*.png")))
    assert (f"from reviews  2 false rejects joined the golden set ({n_golden} -> {n_golden + 2} images), "
            "3 reviewed defects joined the defect examples; 1 reviewed frames are no longer on disk") in text
    cmp = json.loads((out / "from_reviews.json").read_text())
    assert sorted(cmp["false_rejects_added"]) == sorted([ids["fr1"], ids["fr2"]])
    assert sorted(cmp["defects_added"]) == sorted([ids["def1"], ids["esc1"], ids["changed"]])
    assert cmp["missing_frames"] == [ids["gone"]]
    # before and after are measured on the same three defect examples
    assert cmp["before"]["defect_examples"] == cmp["after"]["defect_examples"] == 3
    assert cmp["before"]["threshold"] > 0 and cmp["after"]["threshold"] > 0
    assert "threshold" in text and "escapes" in text and " of 3" in text
    assert 'id="from-reviews"' in (out / "report.html").read_text()
    # the golden folder itself is untouched
    assert len(list(golden_dir.glob("*.png"))) == n_golden and not list(golden_dir.glob("review-*"))


def test_from_reviews_without_reviews_says_so(tmp_path, golden_dir):
    import pytest

    from inspector.errors import InspectorError

    db = tmp_path / "r.db"
    ResultStore(f"sqlite:///{db}").ensure_schema()
    with pytest.raises(InspectorError, match="no reviewed frames"):
        run_command(calibrate_cmd, ["--golden", str(golden_dir), "--out", str(tmp_path / "b"), "--db", str(db),
                                    "--from-reviews", "--quiet"])


def test_from_reviews_refuses_an_out_that_would_replace_the_golden_folder(tmp_path, golden_dir):
    # the reviewed golden set is a temporary copy: --out must still be checked against --golden
    import pytest

    from inspector.errors import InspectorError

    db = tmp_path / "r.db"
    ResultStore(f"sqlite:///{db}").ensure_schema()
    with pytest.raises(InspectorError, match="golden"):
        run_command(calibrate_cmd, ["--golden", str(golden_dir), "--out", str(golden_dir.parent), "--db", str(db),
                                    "--from-reviews", "--force", "--quiet"])
    assert golden_dir.is_dir() and list(golden_dir.glob("*.png"))
