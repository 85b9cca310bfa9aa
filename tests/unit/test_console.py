"""The operator's console through Starlette's TestClient, on SQLite and PostgreSQL: pages render,
keyset paging, CSV, pictures only from the configured folders, read-only without a login,
reviews need a session and the page's CSRF token, names and notes are escaped."""
from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from inspector.console.app import create_app  # noqa: E402
from inspector.console.auth import hash_password  # noqa: E402
from inspector.console.config import ConsoleConfig  # noqa: E402
from inspector.console.server import build_console  # noqa: E402
from tests.db_fixtures import (T0, fill_dataset, fill_many, make_verdict, minutes,  # noqa: E402
                               read_transactions_open)

PASSWORD = "correct horse"
XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


@pytest.fixture
def folders(tmp_path):
    out = {k: tmp_path / k for k in ("done", "quarantine", "heatmaps")}
    for p in out.values():
        p.mkdir()
    return out


@pytest.fixture
def filled(store, folders):
    ids = fill_dataset(store)
    frame = folders["done"] / "p2.png"
    heat = folders["heatmaps"] / "p2-heat.png"
    cv2.imwrite(str(frame), np.full((48, 64, 3), 120, np.uint8))
    cv2.imwrite(str(heat), np.full((48, 64, 3), 200, np.uint8))
    from sqlalchemy import update

    from inspector.storage.models import Inspection

    with store.engine.begin() as conn:
        conn.execute(update(Inspection).where(Inspection.id == ids[2]).values(stored_path=str(frame),
                                                                             heatmap_path=str(heat)))
    return ids


def client_for(db_url, folders, *, users=True, **cfg) -> TestClient:
    config = ConsoleConfig(users=[{"name": "ann", "password_hash": hash_password(PASSWORD)}] if users else [],
                           **cfg)
    console = build_console(db_url, config, media_roots=list(folders.values()))
    return TestClient(create_app(console), base_url="http://localhost")


def login(client: TestClient, name="ann", password=PASSWORD):
    return client.post("/login", data={"name": name, "password": password, "next": "/"}, follow_redirects=False)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def test_live_history_detail_yield_render(db_url, filled, folders):
    with client_for(db_url, folders) as c:
        live = c.get("/")
        assert live.status_code == 200
        assert 'data-source="cam2"' in live.text and 'data-source="cam1"' in live.text
        # newest first: cam2's newest (140 min) is newer than cam1's (80 min)
        assert live.text.index('data-source="cam2"') < live.text.index('data-source="cam1"')
        assert "content-security-policy" in live.headers
        h = c.get("/history", params={"verdict": "fail"})
        assert h.status_code == 200
        assert [int(i) for i in re.findall(r'<tr class="fail" data-id="(\d+)"', h.text)] == \
            [filled[7], filled[6], filled[2]]
        d = c.get(f"/inspection/{filled[2]}")
        assert d.status_code == 200 and 'id="frame"' in d.text and 'id="heatmap"' in d.text
        assert '<rect x="10" y="10" width="10" height="10">' in d.text  # the region, boxed
        assert f"/inspection/{filled[1]}" in d.text and f"/inspection/{filled[3]}" in d.text  # neighbours
        y = c.get("/yield", params={"since": "2024-05-01T00:00", "until": "2024-05-02T00:00"})
        assert y.status_code == 200 and "<svg" in y.text and "fails per source" in y.text
        assert c.get("/yield/density.png", params={"since": "2024-05-01"}).content[:4] == b"\x89PNG"
        assert c.get("/history", params={"min_score": "lots"}).status_code == 400


def test_the_fail_density_picture_is_drawn_once_per_cache_window(db_url, filled, folders, monkeypatch):
    """Every yield page view also fetches density.png: it reads every failed region, so it is
    cached like the page it belongs to."""
    import inspector.commands.stats as stats

    drawn = []
    real = stats.density_picture
    monkeypatch.setattr(stats, "density_picture", lambda *a, **k: drawn.append(1) or real(*a, **k))
    with client_for(db_url, folders) as c:
        first = c.get("/yield/density.png", params={"since": "2024-05-01", "source": "cam1"}).content
        again = c.get("/yield/density.png", params={"since": "2024-05-01", "source": "cam1"}).content
        other = c.get("/yield/density.png", params={"since": "2024-05-01", "source": "cam2"}).content
    assert first == again and first[:4] == other[:4] == b"\x89PNG"
    assert len(drawn) == 2  # cam1 once, cam2 once


def test_keyset_paging_walks_every_row_once_both_ways(db_url, store, folders, monkeypatch):
    import inspector.console.pages as pages

    store.register_bundle("b", "/b", {"scorer": {"type": "memory_bank"}})
    # 23 rows, several sharing a timestamp (the id breaks the tie)
    for i in range(23):
        store.record(make_verdict(at=T0 + minutes(i // 3), name=f"n{i}.png", bundle_id="b"),
                     frame_key=f"k{i}", heatmap_path=None)
    monkeypatch.setattr(pages, "PAGE_SIZE", 5)
    with client_for(db_url, folders) as c:
        seen, url, pages_seen = [], "/history", []
        while url:
            html = c.get(url).text
            ids = [int(i) for i in re.findall(r'data-id="(\d+)"', html)]
            pages_seen.append(ids)
            seen += ids
            m = re.search(r'href="([^"]+)" id="older"', html)
            url = m.group(1).replace("&amp;", "&") if m else None
        assert seen == sorted(seen, reverse=True) and len(seen) == 23 == len(set(seen))
        # and back: "newer" from the last page gives the page before it
        m = re.search(r'href="([^"]+)" id="newer"', html)
        back = [int(i) for i in re.findall(r'data-id="(\d+)"', c.get(m.group(1).replace("&amp;", "&")).text)]
        assert back == pages_seen[-2]


def test_csv_export_streams_the_filtered_rows(db_url, filled, folders):
    with client_for(db_url, folders) as c:
        r = c.get("/history.csv", params={"source": "cam2"})
    lines = r.text.strip().splitlines()
    assert r.headers["content-type"].startswith("text/csv")
    assert lines[0].startswith("id,captured_at,source")
    assert [ln.split(",")[0] for ln in lines[1:]] == [str(filled[7]), str(filled[6]), str(filled[5])]


def test_pictures_only_from_the_configured_folders(db_url, store, filled, folders, tmp_path):
    from sqlalchemy import update

    from inspector.storage.models import Inspection

    outside = tmp_path / "secret.png"
    cv2.imwrite(str(outside), np.zeros((4, 4, 3), np.uint8))
    link = folders["heatmaps"] / "link.png"
    link.symlink_to(outside)
    sneaky = {filled[0]: str(folders["done"] / ".." / "secret.png"), filled[1]: str(outside),
              filled[3]: str(link), filled[5]: "/etc/passwd"}
    with store.engine.begin() as conn:
        for iid, path in sneaky.items():
            conn.execute(update(Inspection).where(Inspection.id == iid).values(stored_path=path, heatmap_path=path))
    with client_for(db_url, folders) as c:
        ok = c.get(f"/media/frame/{filled[2]}")
        assert ok.status_code == 200 and ok.headers["content-type"] == "image/png"
        assert c.get(f"/media/heatmap/{filled[2]}?thumb=1").content[:4] == b"\x89PNG"
        for iid in sneaky:
            for kind in ("frame", "heatmap"):
                assert c.get(f"/media/{kind}/{iid}").status_code == 404, (iid, kind)
        assert c.get("/media/..%2f..%2fetc%2fpasswd/1").status_code == 404
        assert c.get("/static/..%2f..%2fapp.py").status_code == 404
        assert c.get("/media/frame/..%2F..%2Fsecret.png").status_code == 404


def test_read_only_without_login_and_review_needs_session_and_csrf(db_url, filled, folders):
    fail_id = filled[2]
    with client_for(db_url, folders, users=False) as c:
        assert "review-form" not in c.get(f"/inspection/{fail_id}").text
        r = c.post(f"/inspection/{fail_id}/review", data={"kind": "false_reject"})
        assert r.status_code == 403
    with client_for(db_url, folders) as c:
        assert c.post(f"/inspection/{fail_id}/review", data={"kind": "false_reject"}).status_code == 403
        assert login(c, password="wrong").status_code == 401
        assert login(c).status_code == 303
        page = c.get(f"/inspection/{fail_id}").text
        assert "review-form" in page
        token = csrf_of(page)
        assert c.post(f"/inspection/{fail_id}/review", data={"kind": "false_reject"}).status_code == 403
        assert c.post(f"/inspection/{fail_id}/review", data={"kind": "false_reject", "csrf": "0" * 64}).status_code == 403
        assert c.post(f"/inspection/{fail_id}/review", data={"kind": "false_reject", "csrf": token},
                      headers={"Origin": "http://evil.example"}).status_code == 403
        r = c.post(f"/inspection/{fail_id}/review", data={"kind": "false_reject", "csrf": token,
                                                          "defect_type": "scratch", "note": XSS},
                   follow_redirects=False)
        assert r.status_code == 303
        # a kind that does not fit the verdict is refused
        assert c.post(f"/inspection/{fail_id}/review",
                      data={"kind": "missed_defect", "csrf": token}).status_code == 400
        page = c.get(f"/inspection/{fail_id}").text
        assert XSS not in page and "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page
        hist = c.get("/history").text
        assert re.search(rf'data-id="{fail_id}">.*?false reject \(scratch\) by ann', hist, re.S)
        y = c.get("/yield", params={"since": "2024-05-01T00:00", "until": "2024-05-02T00:00"}).text
        assert "1 false rejects" in y


def test_reverse_proxy_header_only_from_trusted_proxies(db_url, filled, folders):
    with client_for(db_url, folders, users=False, auth_header="X-Remote-User", trusted_proxies=["10.9.9.9"]) as c:
        # the TestClient's peer is "testclient", not a trusted proxy: the header is ignored
        page = c.get(f"/inspection/{filled[2]}", headers={"X-Remote-User": "mallory"}).text
        assert "review-form" not in page
    with client_for(db_url, folders, users=False, auth_header="X-Remote-User",
                    trusted_proxies=["testclient"]) as c:
        page = c.get(f"/inspection/{filled[2]}", headers={"X-Remote-User": "bob"}).text
        assert "review-form" in page
        r = c.post(f"/inspection/{filled[2]}/review", headers={"X-Remote-User": "bob"},
                   data={"kind": "confirmed_defect", "csrf": csrf_of(page)}, follow_redirects=False)
        assert r.status_code == 303


def test_xss_source_name_renders_as_text(db_url, store, folders):
    store.record(make_verdict(kind="fail", source=XSS, name=XSS, regions=((1, 1, 2, 2, 4, 0.9),)),
                 frame_key="x", heatmap_path=None)
    with client_for(db_url, folders) as c:
        for url in ("/", "/live/cards", "/history", "/inspection/1", "/yield?since=2024-01-01"):
            html = c.get(url).text
            assert "<script>window.pwned" not in html and 'onerror="window' not in html, url
            assert "&lt;script&gt;" in html, url


def test_event_stream_reports_a_new_verdict(db_url, store, folders):
    store.record(make_verdict(), frame_key="a", heatmap_path=None)
    with client_for(db_url, folders, poll_seconds=0.1) as c:
        c.app.state.console.events_max_s = 0.35
        body = c.get("/events").text
    updates = [json.loads(line[len("data: "):]) for line in body.splitlines() if line.startswith("data: ")]
    assert updates and updates[0]["max_id"] == 1


def test_many_open_live_pages_share_one_query_per_poll(db_url, store, folders, monkeypatch):
    """Eight browsers on the live page must not mean eight database queries every poll."""
    from concurrent.futures import ThreadPoolExecutor

    from inspector.console import queries

    calls = []
    real_max_id = queries.max_id
    monkeypatch.setattr(queries, "max_id", lambda reader: calls.append(1) or real_max_id(reader))
    store.record(make_verdict(), frame_key="a", heatmap_path=None)
    with client_for(db_url, folders, poll_seconds=0.1) as c:
        c.app.state.console.events_max_s = 0.6
        with ThreadPoolExecutor(8) as pool:
            bodies = list(pool.map(lambda _: c.get("/events").text, range(8)))
    assert all('"max_id": 1' in b for b in bodies)
    polls_per_stream = 0.6 / 0.1
    assert len(calls) <= 2 * (polls_per_stream + 1), len(calls)  # one stream's worth, not eight


def test_banner_when_the_daemon_is_stalled_or_a_source_is_down(db_url, store, folders, tmp_path):
    import os

    store.record(make_verdict(), frame_key="a", heatmap_path=None)
    status = tmp_path / "status.json"
    status.write_text(json.dumps({"pid": os.getpid(), "stalled": "no commit for 90 s while 3 frames wait",
                                  "streams": {"line2": {"state": "reconnecting"}, "cam1": {"state": "watching"}}}))
    console = build_console(db_url, ConsoleConfig(), media_roots=list(folders.values()), status_path=status)
    with TestClient(create_app(console), base_url="http://127.0.0.1:8321") as c:
        html = c.get("/").text
    banners = re.findall(r'<p class="banner">([^<]*)</p>', html)
    assert any("stalled" in b for b in banners) and any("line2 is down" in b for b in banners)
    assert not any("cam1" in b for b in banners)
    status.unlink()
    console = build_console(db_url, ConsoleConfig(), media_roots=list(folders.values()), status_path=status)
    with TestClient(create_app(console), base_url="http://127.0.0.1:8321") as c:
        assert "daemon: no status file" in c.get("/").text


def test_password_hashes_and_sessions():
    from inspector.console.auth import Auth, verify_password

    h = hash_password("s3cret-pass")
    assert h.startswith("scrypt$") and verify_password("s3cret-pass", h) and not verify_password("x", h)
    import hashlib

    pb = f"pbkdf2_sha256$1000${'00' * 16}${hashlib.pbkdf2_hmac('sha256', b'pw', bytes(16), 1000).hex()}"
    assert verify_password("pw", pb) and not verify_password("pW", pb)
    auth = Auth(ConsoleConfig(users=[{"name": "ann", "password_hash": h}]), b"k" * 32)
    cookie = auth.session_cookie("ann", now=1000.0)
    assert auth.session_user(cookie, now=1001.0) == "ann"
    assert auth.session_user(cookie, now=1000.0 + 13 * 3600) is None  # expired
    assert auth.session_user(cookie.replace("|", "|9", 1), now=1001.0) is None  # tampered
    other = Auth(ConsoleConfig(users=[{"name": "ann", "password_hash": h}]), b"j" * 32)
    assert other.session_user(cookie, now=1001.0) is None  # another key
    with pytest.raises(ValueError):
        ConsoleConfig(users=[{"name": "ann", "password_hash": "plain-text-password"}])


def test_listen_defaults_to_loopback():
    assert ConsoleConfig(listen="8321").listen == "127.0.0.1:8321"
    from inspector.console.config import DEFAULT_LISTEN

    assert DEFAULT_LISTEN.startswith("127.0.0.1:")


def test_yield_counts_without_percentiles_match_stats(store, filled):
    from inspector.console.queries import source_counts
    from inspector.storage.queries import HistoryFilter
    from inspector.storage.stats import compute_stats

    def counts(rows):
        return [(r.key, r.total, r.passed, r.failed, r.errors, r.yield_pct) for r in rows]

    for by in ("hour", "source"):
        full = compute_stats(store, by, HistoryFilter())
        fast = compute_stats(store, by, HistoryFilter(), percentiles=False)
        assert counts(fast) == counts(full) and all(r.p50 is None for r in fast)
    by_source = [r for r in compute_stats(store, "source", HistoryFilter()) if r.key != "TOTAL"]
    assert counts(source_counts(store, HistoryFilter())) == counts(by_source)
    flt = HistoryFilter(since=T0 + minutes(15), source="cam1")
    assert counts(source_counts(store, flt)) == [("cam1", 3, 1, 1, 1, 50.0)]


def test_stats_command_prints_the_review_summary(db_url, store, filled):
    from inspector.commands import stats
    from inspector.storage.reviews import record_review
    from tests.db_fixtures import run_command

    rc, text = run_command(stats, ["--db", db_url, "--by", "source"])
    assert rc == 0 and "reviews:" not in text
    record_review(store, filled[2], "false_reject", reviewer="ann")
    record_review(store, filled[6], "confirmed_defect", reviewer="ann")
    record_review(store, filled[0], "missed_defect", reviewer="ann")
    rc, text = run_command(stats, ["--db", db_url, "--by", "source"])
    # 4 pass, 3 fail; good = 4 + 1 false reject - 1 escape = 4 of 7
    assert ("reviews: 1 confirmed defects, 1 false rejects, 1 missed defects; confirmed yield 57.14%, "
            "false rejects 50.00% of reviewed fails") in text
    with pytest.raises(Exception, match="judges a pass"):
        record_review(store, filled[2], "missed_defect", reviewer="ann")


def test_sign_ins_are_throttled_and_sign_out_needs_the_token(db_url, filled, folders):
    with client_for(db_url, folders) as c:
        for _ in range(5):
            assert login(c, password="guess").status_code == 401
        # the right password too, until the window has passed
        assert login(c).status_code == 429
    with client_for(db_url, folders) as c:
        assert login(c).status_code == 303
        assert c.post("/logout", follow_redirects=False).status_code == 403
        token = csrf_of(c.get("/").text)
        assert c.post("/logout", data={"csrf": token}, follow_redirects=False).status_code == 303


def test_console_section_of_the_config(tmp_path):
    from inspector.errors import ConfigError
    from inspector.settings import settings_from_dict

    s = settings_from_dict({"console": {"listen": ":8400", "secret_file": "console.key",
                                        "users": [{"name": "ann", "password_hash": hash_password("pw-123456")}]}},
                           base_dir=tmp_path)
    assert s.console.listen == "127.0.0.1:8400" and s.console.secret_file == tmp_path / "console.key"
    assert s.console.login_configured and not settings_from_dict({}, base_dir=tmp_path).console.login_configured
    with pytest.raises(ConfigError, match="console"):
        settings_from_dict({"console": {"listen": "127.0.0.1:99999"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="console"):
        settings_from_dict({"console": {"lisen": ":8400"}}, base_dir=tmp_path)


def test_history_review_filter_and_csv(db_url, store, filled, folders):
    from inspector.storage.reviews import record_review

    record_review(store, filled[2], "confirmed_defect", reviewer="ann")
    record_review(store, filled[2], "false_reject", reviewer="bob")  # newest: a false reject now
    record_review(store, filled[6], "confirmed_defect", reviewer="ann")
    record_review(store, filled[0], "missed_defect", reviewer="ann")
    with client_for(db_url, folders) as c:
        def ids(review):
            return [int(i) for i in re.findall(r'<tr class="\w+" data-id="(\d+)"',
                                               c.get("/history", params={"review": review}).text)]

        assert ids("false_reject") == [filled[2]]
        assert ids("confirmed_defect") == [filled[6]]
        assert ids("reviewed") == [filled[6], filled[2], filled[0]]
        assert sorted(ids("unreviewed")) == sorted(set(filled) - {filled[0], filled[2], filled[6]})
        assert c.get("/history", params={"review": "maybe"}).status_code == 400
        csv_text = c.get("/history.csv", params={"review": "reviewed"}).text
        assert [ln.split(",")[0] for ln in csv_text.strip().splitlines()[1:]] == [str(filled[6]), str(filled[2]),
                                                                                 str(filled[0])]


def test_only_its_own_host_names_are_answered(db_url, store, folders):
    """A page on a DNS name rebound to 127.0.0.1 reaches the port, but not the console."""
    store.record(make_verdict(), frame_key="a", heatmap_path=None)
    console = build_console(db_url, ConsoleConfig(), media_roots=list(folders.values()))
    with TestClient(create_app(console, "127.0.0.1:8321"), base_url="http://127.0.0.1:8321") as c:
        assert c.get("/").status_code == 200
        assert c.get("/", headers={"Host": "localhost:8321"}).status_code == 200
        assert c.get("/", headers={"Host": "[::1]:8321"}).status_code == 200
        r = c.get("/", headers={"Host": "evil.example:8321"})
        assert r.status_code == 400
    on_lan = ConsoleConfig(allowed_hosts=["inspect.plant.local"])
    with TestClient(create_app(build_console(db_url, on_lan, media_roots=[]), "0.0.0.0:8321"),
                    base_url="http://inspect.plant.local") as c:
        assert c.get("/").status_code == 200
        assert c.get("/", headers={"Host": "10.0.0.5"}).status_code == 400
    assert ConsoleConfig().host_allowlist("0.0.0.0:8321") is None  # exposed on purpose: any name
    # with a proxy's user header, exposed without named hosts is refused (DNS rebinding would let a
    # page on the machine post reviews as anyone)
    from inspector.errors import ConfigError

    with pytest.raises(ConfigError, match="auth_header .*needs console.allowed_hosts"):
        ConsoleConfig(auth_header="X-Remote-User").host_allowlist("0.0.0.0:8321")
    named = ConsoleConfig(auth_header="X-Remote-User", allowed_hosts=["inspect.plant.local"])
    assert named.host_allowlist("0.0.0.0:8321") == {"inspect.plant.local"}


def test_report_states_the_reviews(db_url, store, filled, tmp_path):
    from inspector.commands import report
    from inspector.storage.reviews import record_review
    from tests.db_fixtures import run_command

    record_review(store, filled[2], "false_reject", reviewer="ann")
    out = tmp_path / "r.html"
    rc, _ = run_command(report, ["--db", db_url, "--since", "2024-05-01", "--until", "2024-05-02", "--out", str(out)])
    html = out.read_text()
    assert rc == 0 and '<p id="reviews">Reviews: 0 confirmed defects, 1 false rejects, 0 missed defects' in html


def test_a_stalled_csv_download_holds_no_read_transaction(db_url, store, folders):
    """The export is read a keyset page at a time, each page on its own short connection: while
    the client takes no more bytes (its ``send`` does not return), a write and a full WAL checkpoint
    go through on SQLite (busy 0), and on PostgreSQL no session of the console sits in a
    transaction or holds a snapshot. The download then finishes with every row once, newest first."""
    import asyncio

    fill_many(store, 2100)
    console = build_console(db_url, ConsoleConfig(), media_roots=list(folders.values()))
    app = create_app(console)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/history.csv", "raw_path": b"/history.csv", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"localhost")], "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8321)}

    async def download():
        body, first, resume, done = [], asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def send(message):
            if message["type"] == "http.response.body":
                body.append(message.get("body", b""))
                if not first.is_set():
                    first.set()
                    await resume.wait()  # a client that stops reading: the server's send waits
                if not message.get("more_body", False):
                    done.set()

        async def receive():
            await done.wait()
            return {"type": "http.disconnect"}

        task = asyncio.create_task(app(scope, receive, send))
        await asyncio.wait_for(first.wait(), 30)
        try:
            stalled = await asyncio.to_thread(write_while_stalled)
        finally:
            resume.set()
            await asyncio.wait_for(task, 30)
        return stalled, b"".join(body).decode()

    def write_while_stalled():
        store.record(make_verdict(at=T0 + minutes(999), name="during.png"), frame_key="during", heatmap_path=None)
        return read_transactions_open(db_url)

    try:
        stalled, text_ = asyncio.run(download())
    finally:
        console.close()
        console.reader.close()
    assert stalled == 0, "the export held a read transaction open while the client was not reading"
    ids = [int(line.split(",")[0]) for line in text_.strip().splitlines()[1:]]
    assert len(ids) == 2100 == len(set(ids)) and ids == sorted(ids, reverse=True)
