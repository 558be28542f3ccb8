"""Fixtures several unit-test modules share."""

import pytest

from harness import util


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache folder of the test's own, with no file hashes remembered from another test."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(util, "_HASHED", {})
    return tmp_path / "cache"
