"""sd_notify from the real daemon process, received on a datagram socket the test owns (as
systemd's $NOTIFY_SOCKET): STATUS while loading, READY=1, WATCHDOG=1 pings at about half of
$WATCHDOG_USEC, STATUS updates, and STOPPING=1 after SIGTERM, in that order."""
from __future__ import annotations

import time

from tests.integration.daemon_helpers import (Daemon, drop_bytes, drop_image, encode, hold_write_lock, make_workspace,
                                              row_count, wait_for, wait_rows)
from tests.integration.notify_listener import notify_env


def test_ready_watchdog_status_stopping_in_order(tmp_path, bundle_dir, part_images, listener):
    ws = make_workspace(tmp_path, bundle_dir)
    daemon = Daemon(ws, env=notify_env(listener)).start()
    try:
        wait_for(lambda: "READY=1" in listener.lines(), 60, "READY=1", daemon)
        t_ready = time.monotonic()
        drop_image(ws.inbox, "one.png", part_images())
        wait_rows(ws, 1, daemon=daemon)
        # at 2 s WATCHDOG_USEC a ping is due every <= 1 s: expect several within 3.5 s of READY
        wait_for(lambda: sum(1 for _, a in listener.assignments() if a == "WATCHDOG=1") >= 3, 10,
                 "three WATCHDOG=1 pings", daemon)
        wait_for(lambda: any(a.startswith("STATUS=1 frames") for _, a in listener.assignments()), 10,
                 "a STATUS line counting the frame", daemon)
        assert daemon.terminate() == 0, daemon.tail()
    finally:
        daemon.stop()
    time.sleep(0.3)  # let the listener take the last datagram

    seq = listener.assignments()
    lines = [a for _, a in seq]
    assert lines.count("READY=1") == 1, lines
    assert lines.count("STOPPING=1") == 1, lines
    i_ready, i_stop = lines.index("READY=1"), lines.index("STOPPING=1")
    pings = [i for i, a in enumerate(lines) if a == "WATCHDOG=1"]
    assert pings and i_ready < pings[0] and pings[-1] < i_stop, lines
    assert i_ready < i_stop

    statuses = [a for a in lines if a.startswith("STATUS=")]
    assert lines[0] == "STATUS=loading engine", "status is shown while the engine loads"
    assert any("1 frames (pass" in s for s in statuses), statuses
    assert all("\n" not in s for s in statuses)

    # pings spaced at about half the watchdog interval (never close to the 2 s limit)
    times = [t for t, a in seq if a == "WATCHDOG=1"]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps and max(gaps) < 1.8, gaps
    assert times[0] - t_ready < 1.8


def test_watchdog_keeps_pinging_while_the_database_is_locked(tmp_path, bundle_dir, part_images, listener):
    """A locked database (a backup, `inspector prune` in another process) is waited out with the
    frames in the inbox; a systemd restart would not unlock it, so the watchdog must not fire."""
    n = 40  # more than the queues hold, so the inference worker blocks behind the writer
    ws = make_workspace(tmp_path, bundle_dir, database={"busy_timeout_s": 0.5})
    daemon = Daemon(ws, env=notify_env(listener)).start().wait_ready(60)
    try:
        with hold_write_lock(ws.db):
            frames = [encode(part_images()) for _ in range(n)]
            for i, data in enumerate(frames):
                drop_bytes(ws.inbox, f"p{i:02d}.png", data)
            t_lock = time.monotonic()
            time.sleep(8.0)
            t_unlock = time.monotonic()
            assert row_count(ws.db) == 0
        wait_rows(ws, n, timeout=60, daemon=daemon)
        assert daemon.terminate() == 0, daemon.tail()
    finally:
        daemon.stop()
    pings = [t for t, a in listener.assignments() if a == "WATCHDOG=1" and t_lock <= t <= t_unlock]
    gaps = [b - a for a, b in zip([t_lock] + pings, pings + [t_unlock])]
    assert max(gaps) < 1.8, f"watchdog pings stopped while the database was locked: gaps {gaps}"
