"""Fixtures for the import-direction tests."""

import pytest
from import_helpers import ADMIN


@pytest.fixture
def admin_env(monkeypatch):
    """Credentials through the environment, as a workflow job gets them."""
    monkeypatch.setenv("XNAT_USER", ADMIN.user)
    monkeypatch.setenv("XNAT_PASS", ADMIN.password)
