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


def _reviewed_store(tmp_path, plan) -> tuple[str, dict]:
    """A SQLite results database with one reviewed frame on disk per (name, source, verdict, kind)."""
    from calibration.synthetic import make_part

    db = f"sqlite:///{tmp_path / 'r.db'}"
    frames = tmp_path / "done"
    frames.mkdir(exist_ok=True)
    rng = np.random.default_rng(5)
    store = ResultStore(db)
    store.ensure_schema()
    ids = {}
    for name, source, verdict, kind in plan:
        path = write_png(frames / f"{name}.png", make_part(rng, size=TEST_SIZE,
                                                           defect="scratch" if kind != "false_reject" else None))
        ids[name] = store.record(make_verdict(kind=verdict, score=1.0, name=f"{name}.png", source=source),
                                 frame_key=name, heatmap_path=None, stored_path=str(path))
        record_review(store, ids[name], kind, reviewer="ann", now=datetime.now(timezone.utc) - timedelta(hours=1))
    store.close()
    return db, ids


def test_source_restricts_the_reviews_and_says_what_it_left_out(tmp_path, golden_dir):
    import pytest

    from inspector.errors import InspectorError

    db, _ = _reviewed_store(tmp_path, [("a1", "cam1", "fail", "false_reject"), ("a2", "cam1", "fail", "false_reject"),
                                       ("b1", "cam2", "fail", "false_reject")])
    with pytest.raises(InspectorError) as err:
        run_command(calibrate_cmd, ["--golden", str(golden_dir), "--out", str(tmp_path / "b"), "--db", db,
                                    "--from-reviews", "--source", "cam9", "--source", "cam8", "--quiet"])
    msg = str(err.value)
    assert "no reviewed frames to learn from" in msg and "\n" not in msg
    assert "reviews from  cam8: 0, cam9: 0 (--source); left out: cam1: 2, cam2: 1" in msg
    with pytest.raises(InspectorError, match="--source picks the reviews of --from-reviews"):
        run_command(calibrate_cmd, ["--golden", str(golden_dir), "--out", str(tmp_path / "b"), "--source", "cam1"])


def test_default_sources_are_the_configs_when_it_feeds_this_bundle(tmp_path):
    from calibration.from_reviews import choose_sources
    from inspector.settings import settings_from_dict

    out = tmp_path / "bundle"
    line = {"sources": [{"name": "cam1", "inbox": str(tmp_path / "in1")},
                        {"name": "cam3", "inbox": str(tmp_path / "in3")}]}
    feeds = settings_from_dict({**line, "bundle": str(out)}, base_dir=tmp_path)
    assert choose_sources(None, feeds, True, out).names == ("cam1", "cam3")
    assert choose_sources(None, settings_from_dict(line, base_dir=tmp_path), True, out).names == ("cam1", "cam3")
    other = settings_from_dict({**line, "bundle": str(tmp_path / "other")}, base_dir=tmp_path)
    assert choose_sources(None, other, True, out).names is None  # that config's sources feed another bundle
    assert choose_sources(None, settings_from_dict({}, base_dir=tmp_path), True, out).names is None
    assert choose_sources(["cam2", "cam2"], feeds, True, out).names == ("cam2",)  # --source wins


def test_from_reviews_takes_the_configs_sources_by_default(tmp_path, golden_dir):
    """A config whose daemon feeds cam1 into this bundle: cam2's reviewed frames stay out, and the
    printed line and from_reviews.json say which sources were used and how many reviews each had."""
    db, ids = _reviewed_store(tmp_path, [("a1", "cam1", "fail", "false_reject"), ("b1", "cam2", "fail", "false_reject"),
                                         ("b2", "cam2", "fail", "confirmed_defect")])
    out = tmp_path / "bundle"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"preprocess": {"size": [TEST_SIZE, TEST_SIZE]},
                                   "calibration": {"holdout": 0.25, "min_images": 4, "synthetic_defects": 0},
                                   "scorer": {"coreset": {"ratio": 0.05}}, "database": {"url": db},
                                   "bundle": str(out), "sources": [{"name": "cam1", "inbox": str(tmp_path / "in")}]}))
    rc, text = run_command(calibrate_cmd, ["--golden", str(golden_dir), "--out", str(out), "--config", str(cfg),
                                           "--from-reviews", "--quiet"])
    assert rc == 0
    assert "reviews from  cam1: 1 (the config's sources); left out: cam2: 2" in text
    cmp = json.loads((out / "from_reviews.json").read_text())
    assert cmp["false_rejects_added"] == [ids["a1"]] and cmp["defects_added"] == []
    assert cmp["sources"] == {"chosen_by": "the config's sources", "used": {"cam1": 1}, "left_out": {"cam2": 2}}
