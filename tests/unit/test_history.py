"""history/show/stats/export/report/prune over a known data set, on SQLite and PostgreSQL.
Expected numbers are computed by hand from tests.db_fixtures.DATASET."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from inspector.commands import export as export_cmd
from inspector.commands import history as history_cmd
from inspector.commands import report as report_cmd
from inspector.commands import show as show_cmd
from inspector.commands import stats as stats_cmd
from inspector.errors import InspectorError
from inspector.retention import prune
from inspector.settings import RetentionConfig
from inspector.storage.queries import HistoryFilter, get_inspection, iter_history, parse_when
from inspector.storage.stats import Shift, compute_stats
from tests.db_fixtures import (T0, fill_dataset, fill_many, make_verdict, minutes,  # fixtures: conftest's plugin
                               read_transactions_open, run_command)


@pytest.fixture
def filled(store):
    ids = fill_dataset(store)
    return store, ids


def _ids(store, argv):
    rc, out = run_command(history_cmd, ["--db", store.url, "--format", "jsonl"] + argv)
    assert rc == 0
    return [json.loads(line)["id"] for line in out.splitlines()]


def test_history_filters(filled):
    store, ids = filled
    iso = lambda m: (T0 + minutes(m)).isoformat()  # noqa: E731
    assert _ids(store, []) == ids[::-1]  # newest first
    assert _ids(store, ["--since", iso(60)]) == ids[3:][::-1]
    assert _ids(store, ["--until", iso(60)]) == ids[:3][::-1]
    assert _ids(store, ["--since", "2024-05-01T07:00", "--until", "2024-05-01T08:00"]) == ids[3:6][::-1]
    assert _ids(store, ["--verdict", "fail"]) == [ids[7], ids[6], ids[2]]
    assert _ids(store, ["--verdict", "error"]) == [ids[4]]
    assert _ids(store, ["--source", "cam2"]) == [ids[7], ids[6], ids[5]]
    assert _ids(store, ["--bundle", "b2"]) == [ids[6], ids[5]]
    assert _ids(store, ["--min-score", "0.65"]) == [ids[6], ids[2]]
    assert _ids(store, ["--region-area-min", "20"]) == [ids[6], ids[2]]
    assert _ids(store, ["--region-area-min", "50"]) == [ids[2]]
    assert _ids(store, ["--source", "cam2", "--verdict", "fail", "--min-score", "0.7"]) == [ids[6]]
    assert _ids(store, ["--oldest-first", "--limit", "2"]) == ids[:2]


def test_history_relative_times(store):
    now = datetime.now(timezone.utc)
    a = store.record(make_verdict(at=now - timedelta(minutes=30)), frame_key=None, heatmap_path=None)
    b = store.record(make_verdict(at=now - timedelta(hours=3)), frame_key=None, heatmap_path=None)
    c = store.record(make_verdict(at=now - timedelta(days=8)), frame_key=None, heatmap_path=None)
    assert _ids(store, ["--since", "1h"]) == [a]
    assert _ids(store, ["--since", "7d"]) == [a, b]
    assert _ids(store, ["--until", "2h"]) == [b, c]


def test_parse_when_forms():
    now = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert parse_when("30m", now=now) == now - timedelta(minutes=30)
    assert parse_when("2h", now=now) == now - timedelta(hours=2)
    assert parse_when("7d", now=now) == now - timedelta(days=7)
    assert parse_when("2024-05-01T08:00", now=now) == datetime(2024, 5, 1, 8, tzinfo=timezone.utc)
    assert parse_when("2024-05-01T10:00+02:00", now=now) == datetime(2024, 5, 1, 8, tzinfo=timezone.utc)
    with pytest.raises(InspectorError, match="30m, 2h, 7d"):
        parse_when("yesterday-ish")


def test_history_paging(filled):
    store, ids = filled
    newest = ids[::-1]
    assert _ids(store, ["--limit", "3"]) == newest[:3]
    assert _ids(store, ["--limit", "3", "--page", "2"]) == newest[3:6]
    assert _ids(store, ["--limit", "3", "--page", "3"]) == newest[6:]
    assert _ids(store, ["--limit", "3", "--offset", "1"]) == newest[1:4]
    rc, out = run_command(history_cmd, ["--db", store.url])
    assert rc == 0 and len(out.splitlines()) == 1 + 8  # header + rows (default table limit 50)
    rc, out = run_command(history_cmd, ["--db", store.url, "--limit", "2"])
    assert len(out.splitlines()) == 3


def test_history_csv_and_json_parse_back(filled):
    store, ids = filled
    rc, out = run_command(history_cmd, ["--db", store.url, "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [int(r["id"]) for r in rows] == ids[::-1]
    assert [r["verdict"] for r in rows].count("fail") == 3
    row6 = next(r for r in rows if int(r["id"]) == ids[6])
    assert row6["source"] == "cam2" and float(row6["score"]) == pytest.approx(0.9) and row6["region_count"] == "2"
    assert row6["captured_at"] == "2024-05-01T08:10:00.000Z"
    err = next(r for r in rows if r["verdict"] == "error")
    assert err["score"] == "" and err["error_reason"] == "decode failed"
    rc, out = run_command(history_cmd, ["--db", store.url, "--format", "json", "--verdict", "fail"])
    arr = json.loads(out)
    assert [o["id"] for o in arr] == [ids[7], ids[6], ids[2]] and arr[0]["bundle_id"] is None
    rc, out = run_command(history_cmd, ["--db", store.url, "--format", "json", "--source", "nobody"])
    assert json.loads(out) == []


def test_history_streams_from_the_database(filled):
    store, ids = filled
    it = iter_history(store, HistoryFilter(), chunk=2)
    assert next(it)["id"] == ids[-1]  # a generator: rows come as they are read
    assert len(list(it)) == 7


def test_history_needs_a_database(tmp_path):
    with pytest.raises(InspectorError, match="--db"):
        run_command(history_cmd, [])
    with pytest.raises(InspectorError, match="does not exist"):
        run_command(history_cmd, ["--db", str(tmp_path / "missing.db")])


def test_history_from_config(filled, tmp_path):
    store, ids = filled
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"database:\n  url: {store.url}\n")
    rc, out = run_command(history_cmd, ["--config", str(cfg), "--format", "jsonl", "--verdict", "error"])
    assert [json.loads(x)["id"] for x in out.splitlines()] == [ids[4]]


def test_show(filled):
    store, ids = filled
    rc, out = run_command(show_cmd, [str(ids[6]), "--db", store.url])
    assert rc == 0 and "2 defect region(s)" in out and "cam2" in out and "p6.png" in out
    rc, out = run_command(show_cmd, [str(ids[6]), "--db", store.url, "--format", "json"])
    rec = json.loads(out)
    assert [r["area"] for r in rec["regions"]] == [10, 25] and rec["bundle_path"] == "/bundles/b2"
    with pytest.raises(InspectorError, match="no inspection with id"):
        run_command(show_cmd, ["99999", "--db", store.url])


def _by_key(rows):
    return {r.key: r for r in rows}


def test_stats_by_hour_matches_hand_counts(filled):
    store, _ = filled
    rows = _by_key(compute_stats(store, "hour"))
    assert list(rows) == ["2024-05-01 06:00", "2024-05-01 07:00", "2024-05-01 08:00", "TOTAL"]
    h6, h7, h8, tot = rows.values()
    assert (h6.total, h6.passed, h6.failed, h6.errors) == (3, 2, 1, 0)
    assert h6.yield_pct == pytest.approx(200 / 3)
    assert (h6.p50, h6.p95, h6.p99) == pytest.approx((0.2, 0.74, 0.788))
    assert (h7.total, h7.passed, h7.failed, h7.errors, h7.yield_pct) == (3, 2, 0, 1, 100.0)
    assert h7.p50 == pytest.approx(0.35)
    assert (h8.failed, h8.yield_pct, h8.p50) == (2, 0.0, pytest.approx(0.75))
    assert (tot.total, tot.passed, tot.failed, tot.errors) == (8, 4, 3, 1)
    assert tot.yield_pct == pytest.approx(400 / 7)
    assert tot.p50 == pytest.approx(0.4)
    assert tot.p99 == pytest.approx(np.percentile([.1, .2, .3, .4, .6, .8, .9], 99))


def test_stats_by_source_bundle_day(filled):
    store, _ = filled
    src = _by_key(compute_stats(store, "source"))
    assert (src["cam1"].total, src["cam1"].passed, src["cam1"].failed, src["cam1"].errors) == (5, 3, 1, 1)
    assert src["cam1"].yield_pct == pytest.approx(75.0)
    assert src["cam2"].yield_pct == pytest.approx(100 / 3)
    b = _by_key(compute_stats(store, "bundle"))
    assert (b["(none)"].total, b["b1"].total, b["b2"].total) == (1, 5, 2)
    assert b["b2"].p50 == pytest.approx(0.65)
    d = _by_key(compute_stats(store, "day", HistoryFilter(source="cam1")))
    assert d["2024-05-01"].total == 5 and d["TOTAL"].total == 5


def test_stats_timezone_and_shifts(filled):
    from zoneinfo import ZoneInfo

    store, _ = filled
    berlin = list(_by_key(compute_stats(store, "hour", tz=ZoneInfo("Europe/Berlin"))))
    assert berlin[:3] == ["2024-05-01 08:00", "2024-05-01 09:00", "2024-05-01 10:00"]  # CEST = UTC+2
    # a frame at 01:00 the next day belongs to the night shift that started on the 1st
    store.record(make_verdict(at=datetime(2024, 5, 2, 1, 0, tzinfo=timezone.utc)), frame_key=None, heatmap_path=None)
    shifts = (Shift("A", *(datetime.strptime(t, "%H:%M").time() for t in ("06:00", "07:30"))),
              Shift("B", *(datetime.strptime(t, "%H:%M").time() for t in ("07:30", "06:00"))))
    rows = _by_key(compute_stats(store, "shift", shifts=shifts))
    assert list(rows) == ["2024-05-01 A", "2024-05-01 B", "TOTAL"]
    assert (rows["2024-05-01 A"].total, rows["2024-05-01 B"].total) == (5, 4)
    assert rows["2024-05-01 B"].start == datetime(2024, 5, 1, 7, 30, tzinfo=timezone.utc)
    overlap = (shifts[0], Shift("C", shifts[0].start, shifts[0].end))
    with pytest.raises(InspectorError, match="overlap"):
        compute_stats(store, "shift", shifts=overlap)


def test_stats_command_csv_and_shifts_from_config(filled, tmp_path):
    store, _ = filled
    rc, out = run_command(stats_cmd, ["--db", store.url, "--by", "source", "--format", "csv"])
    rows = {r["key"]: r for r in csv.DictReader(io.StringIO(out))}
    assert rows["cam2"]["failed"] == "2" and rows["TOTAL"]["total"] == "8"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"database:\n  url: {store.url}\nshifts:\n  - {{name: day, start: '06:00', end: '18:00'}}\n"
                   "  - {name: night, start: '18:00', end: '06:00'}\n")
    rc, out = run_command(stats_cmd, ["--config", str(cfg), "--by", "shift", "--format", "json"])
    data = json.loads(out)
    assert [(r["key"], r["total"]) for r in data] == [("2024-05-01 day", 8), ("TOTAL", 8)]
    with pytest.raises(InspectorError, match="needs shifts"):
        run_command(stats_cmd, ["--db", store.url, "--by", "shift"])


def test_stats_empty_period(filled):
    store, _ = filled
    rows = compute_stats(store, "hour", HistoryFilter(since=T0 + timedelta(days=30)))
    assert len(rows) == 1 and rows[0].total == 0 and rows[0].yield_pct is None and rows[0].p50 is None


def test_fail_region_density_png(filled, tmp_path):
    import cv2

    store, _ = filled
    outline = tmp_path / "golden.png"
    cv2.imwrite(str(outline), np.full((48, 64, 3), 128, np.uint8))
    png = tmp_path / "density.png"
    rc, _ = run_command(stats_cmd, ["--db", store.url, "--heatmap", str(png), "--outline", str(outline)])
    img = cv2.imread(str(png))
    assert rc == 0 and img.shape == (48, 64, 3)
    # regions (frame 64x48): (10,10,10,10), (0,0,4,3), (30,20,5,5): hot there, untouched far away
    assert not np.array_equal(img[14, 14], img[45, 60])
    assert np.array_equal(img[45, 60], [128, 128, 128])
    acc, n = stats_cmd.region_density([{"x": 32, "y": 24, "w": 32, "h": 24, "image_w": 64, "image_h": 48}],
                                      size=(8, 8))
    assert n == 1 and acc[4:, 4:].sum() == 16 and acc[:4].sum() == 0 and acc[:, :4].sum() == 0


def _with_files(store, tmp_path, n_fail=6, n_pass=4, days_old=10.0, size=1000):
    import cv2

    now = datetime.now(timezone.utc)
    made = []
    for i in range(n_fail + n_pass):
        kind = "fail" if i < n_fail else "pass"
        frame = tmp_path / f"f{i}.png"
        frame.write_bytes(b"x" * size)
        heat = tmp_path / f"h{i}.png"
        cv2.imwrite(str(heat), np.full((8, 8, 3), 40 * (i % 6), np.uint8))
        at = now - timedelta(days=days_old) + timedelta(minutes=i)
        iid = store.record(make_verdict(kind=kind, score=0.5 + i / 100, at=at, name=f"f{i}.png"),
                           frame_key=f"k{i}", heatmap_path=str(heat), stored_path=str(frame))
        made.append((iid, frame, heat, kind))
    return made


def test_prune_by_age_keeps_newest_fails(store, tmp_path):
    made = _with_files(store, tmp_path)
    newest_fails = [m for m in made if m[3] == "fail"][-2:]
    cfg = RetentionConfig(max_age_days=5, keep_newest_fails=2)
    dry = prune(store, cfg, dry_run=True)
    assert (dry.rows_deleted, dry.frames_deleted, dry.heatmaps_deleted) == (8, 8, 8)
    assert all(m[1].exists() for m in made) and len(list(iter_history(store, HistoryFilter()))) == 10
    rep = prune(store, cfg)
    assert rep.rows_deleted == 8 and rep.protected_fails == 2
    left = {r["id"] for r in iter_history(store, HistoryFilter())}
    assert left == {m[0] for m in newest_fails}
    for iid, frame, heat, _ in made:
        assert frame.exists() == (iid in left) and heat.exists() == (iid in left)


def test_prune_frame_budget_deletes_oldest_files_first(store, tmp_path):
    made = _with_files(store, tmp_path, n_fail=2, n_pass=3, days_old=1)
    rep = prune(store, RetentionConfig(max_frame_bytes=2500, keep_newest_fails=1))
    # newest first: p4, p3 fit (2000 B); p2 would exceed; f1 is protected (counts, kept); f0 goes
    kept = {m[0] for m in made if m[1].exists()}
    assert kept == {made[4][0], made[3][0], made[1][0]}
    assert rep.frames_deleted == 2 and rep.rows_deleted == 0
    assert get_inspection(store, made[0][0])["stored_path"] is None
    assert get_inspection(store, made[4][0])["stored_path"] == str(made[4][1])
    assert all(m[2].exists() for m in made)  # heatmaps untouched: no heatmap limit


def test_export(store, tmp_path):
    (tmp_path / "src").mkdir()
    made = _with_files(store, tmp_path / "src", n_fail=2, n_pass=1)
    store.record(make_verdict(kind="fail", regions=[(1, 2, 3, 4, 12, 0.9)]), frame_key=None, heatmap_path=None)
    out = tmp_path / "exp"
    rc, text = run_command(export_cmd, ["--db", store.url, "--since", "30d", "--to", str(out)])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "inspections.csv")))
    assert len(rows) == 3  # the T0 (2024) row is outside --since 30d
    regs = list(csv.DictReader(open(out / "regions.csv")))
    assert regs == []
    copied = sorted(p.name for p in (out / "fails").iterdir())
    assert copied == sorted(f"{iid}-{p.name}" for iid, fr, h, k in made if k == "fail" for p in (fr, h))
    with pytest.raises(InspectorError, match="not empty"):
        run_command(export_cmd, ["--db", store.url, "--to", str(out)])


def test_report_html_is_self_contained(store, tmp_path):
    made = _with_files(store, tmp_path, n_fail=3, n_pass=5, days_old=0.1)
    out = tmp_path / "r.html"
    rc, _ = run_command(report_cmd, ["--db", store.url, "--out", str(out), "--top", "2"])
    html = out.read_text()
    assert rc == 0 and html.count("<svg") == 2
    assert html.count('src="data:image/png;base64,') == 2
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<b>8</b> inspections: 5 pass, 3 fail" in html
    assert f"#{made[2][0]} " in html and f"#{made[0][0]} " not in html  # top 2 by score


def test_calibration_report(tmp_path):
    import cv2

    from calibration.report import CalibrationReportData, write_calibration_report

    heat = tmp_path / "near.png"
    cv2.imwrite(str(heat), np.zeros((16, 16, 3), np.uint8))
    data = CalibrationReportData(heldout_scores=[0.1, 0.2, 0.25, 0.3, 0.31], threshold=0.35, pixel_threshold=0.5,
                                 expected_false_reject_rate=0.01, defect_scores=[0.6, 0.9, 0.3],
                                 near_threshold=[("g7.png", 0.31, str(heat)), ("g2.png", 0.3, None)],
                                 stage_times={"features": 1.25, "coreset": 0.5}, bundle_id="bundle-x",
                                 summary={"golden images": "25"})
    out = write_calibration_report(tmp_path / "cal" / "report.html", data)
    html = out.read_text()
    assert "<svg" in html and 'class="mark"' in html and "threshold 0.35" in html
    assert html.count("data:image/png;base64,") == 1 and "(no heatmap)" in html
    assert "2 of 3" in html and "1.00 %" in html and "golden images" in html and "1.25 s" in html


def test_a_stalled_history_reader_holds_no_read_transaction(db_url, store):
    """`inspector history --format csv | less`, left open: the rows are read in keyset pages, each
    on its own short connection, so a write and a WAL checkpoint (SQLite) go through and no
    session holds a snapshot (PostgreSQL) while the reader waits; every row still comes once."""
    fill_many(store, 2100)
    rows = iter_history(store, HistoryFilter(), chunk=500)
    first = [next(rows) for _ in range(10)]  # then the pipe stops taking rows
    store.record(make_verdict(at=T0 + minutes(999), name="during.png"), frame_key="during", heatmap_path=None)
    assert read_transactions_open(db_url) == 0
    ids = [r["id"] for r in first + list(rows)]
    assert len(ids) == 2100 == len(set(ids)) and ids == sorted(ids, reverse=True)


def test_paged_history_keeps_order_offset_and_limit_across_pages(store):
    fill_many(store, 1300)
    every = [r["id"] for r in iter_history(store, HistoryFilter(), oldest_first=True, chunk=5000)]
    got = [r["id"] for r in iter_history(store, HistoryFilter(), oldest_first=True, offset=3, limit=1201, chunk=500)]
    assert got == every[3:1204]
    newest = [r["id"] for r in iter_history(store, HistoryFilter(), limit=7, chunk=3)]
    assert newest == every[::-1][:7]

