"""One daemon per inbox and per SQLite database (issue 11, item 12): an exclusive flock on a
lock file that holds the PID; a second holder is refused with one line naming it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from inspector.errors import InspectorError
from inspector.instance_lock import INBOX_LOCK_NAME, lock_database, lock_inbox


def test_second_lock_on_an_inbox_is_refused_naming_the_holder(tmp_path):
    first = lock_inbox(tmp_path)
    try:
        assert (tmp_path / INBOX_LOCK_NAME).read_text().strip() == str(os.getpid())
        with pytest.raises(InspectorError) as exc:
            lock_inbox(tmp_path)
        assert str(exc.value).startswith(f"inbox {tmp_path} is already watched by inspector PID {os.getpid()}")
        assert "\n" not in str(exc.value)
    finally:
        first.close()
    lock_inbox(tmp_path).close()  # released: the next one gets it


def test_lock_held_by_another_process_names_its_pid(tmp_path):
    db = tmp_path / "inspector.db"
    code = ("import sys, time; from pathlib import Path; from inspector.instance_lock import lock_database; "
            "lock = lock_database(Path(sys.argv[1])); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InspectorError, match=f"database {db} is already used by inspector PID {holder.pid}"):
            lock_database(db)
    finally:
        holder.kill()
        holder.wait()
    lock_database(db).close()  # the kernel dropped the lock with the process (even on SIGKILL)


def test_unwritable_lock_folder_is_one_clear_line(tmp_path):
    with pytest.raises(InspectorError) as exc:
        lock_inbox(tmp_path / "no-such-folder")
    msg = str(exc.value)
    assert f"inbox {tmp_path / 'no-such-folder'}" in msg and INBOX_LOCK_NAME in msg and "\n" not in msg
