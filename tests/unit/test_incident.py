"""One "log once per incident" class for the daemon's writer and the line sinks
(inspector/retry.py): a problem that repeats is one ERROR when it starts and one INFO when it
clears, and keeps the last error, when it happened and how many failures so far for status
and metrics."""
from __future__ import annotations

import logging

from inspector.errors import InspectorError
from inspector.retry import Incident
from inspector.service_health import Progress


def test_repeats_are_one_error_and_one_recovery(caplog):
    incident = Incident("results database unavailable")
    with caplog.at_level(logging.INFO):
        for _ in range(5):
            incident.hit("database is locked")
        incident.clear()
        incident.clear()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "results database unavailable: database is locked; frames stay in the inbox and are retried"]
    assert sum("recovered after" in r.getMessage() for r in caplog.records) == 1


def test_keeps_last_error_time_and_count_for_status():
    incident = Incident("sink mqtt", consequence="events wait in the outbox and are retried")
    assert incident.since is None and incident.last_error is None and incident.count == 0
    incident.hit("cannot connect: refused")
    incident.hit("cannot connect: timed out")
    assert incident.count == 2 and incident.since is not None
    assert incident.last_error == "cannot connect: timed out"
    assert incident.last_error_at.endswith("+00:00")
    incident.clear()
    assert incident.since is None and incident.count == 2  # the count is a total (metrics)


def test_progress_shows_the_current_error():
    progress = Progress()
    incident = Incident("cannot write output files", progress)
    incident.hit("No space left on device (/done)")
    assert progress.last_error == "cannot write output files: No space left on device (/done)"


def test_an_unexpected_exception_logs_its_traceback_once(caplog):
    incident = Incident("sink webhook", consequence="events wait in the outbox and are retried")
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            incident.hit("delivery failed: KeyError: 'x'", exc=KeyError("x"))
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is not None
    caplog.clear()
    other = Incident("sink webhook", consequence="events wait in the outbox and are retried")
    with caplog.at_level(logging.ERROR):
        other.hit("delivery failed: refused", exc=InspectorError("refused"))
    assert caplog.records[0].exc_info is None  # an expected failure: one line, no traceback
