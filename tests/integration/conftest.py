"""Fixtures shared by the integration tests."""
import pytest

from tests.integration.notify_listener import NotifyListener


@pytest.fixture
def listener():
    """A started NotifyListener, closed after the test."""
    li = NotifyListener()
    li.start()
    yield li
    li.close()
