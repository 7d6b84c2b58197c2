"""Fixtures for the step tests."""

import pytest
from step_helpers import ADMIN


@pytest.fixture
def admin_env(monkeypatch):
    """Credentials through the environment, as a workflow job gets them."""
    monkeypatch.setenv("XNAT_USER", ADMIN.user)
    monkeypatch.setenv("XNAT_PASS", ADMIN.password)
